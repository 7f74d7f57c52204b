/* FunctionBar: the key bar on the bottom line ("Enter Launch  s Stop  ? Help  q Quit"). */
#ifndef TOKENREC_UI_FUNCTIONBAR_H
#define TOKENREC_UI_FUNCTIONBAR_H
typedef struct { const char *key, *label; } FunctionKey;
/* keys ends with {NULL, NULL}. Fills the line y in w columns. */
void FunctionBar_draw(const FunctionKey *keys, int y, int w);
#endif
