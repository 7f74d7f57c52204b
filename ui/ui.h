/* ui: the ncurses dashboard (tokenrec ui). */
#ifndef TOKENREC_UI_H
#define TOKENREC_UI_H
int ui_main(int argc, char **argv);
#endif
