/* CRT.c: ncurses setup, colours and clipped UTF-8 printing. */
#include "CRT.h"
#include "Format.h"
#include <langinfo.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int CRT_colors[C_COUNT];
int CRT_utf8;

/* A colour pair per element where the terminal has colours; bold/reverse/dim otherwise. */
void CRT_init(void) {
    CRT_utf8 = strcmp(nl_langinfo(CODESET), "UTF-8") == 0;
    initscr();
    raw();                      /* Ctrl-C arrives as a key: the dashboard quits cleanly */
    noecho();
    nonl();
    keypad(stdscr, TRUE);
    curs_set(0);
    set_escdelay(25);
    timeout(250);
    static const struct { int fg, bg, attr, mono; } scheme[C_COUNT] = {
        [C_DEFAULT] = {-1, -1, 0, 0},
        [C_TITLE] = {COLOR_CYAN, -1, A_BOLD, A_BOLD},
        [C_TAB] = {-1, -1, 0, 0},
        [C_TAB_ACTIVE] = {COLOR_BLACK, COLOR_CYAN, 0, A_REVERSE},
        [C_PANEL_HEADER] = {COLOR_BLACK, COLOR_GREEN, 0, A_REVERSE},
        [C_SELECTED] = {COLOR_BLACK, COLOR_CYAN, 0, A_REVERSE},
        [C_SELECTED_DIM] = {COLOR_BLACK, COLOR_WHITE, 0, A_BOLD},
        [C_KEY] = {-1, -1, A_BOLD, A_BOLD},
        [C_KEY_LABEL] = {COLOR_BLACK, COLOR_CYAN, 0, A_REVERSE},
        [C_BAR] = {COLOR_GREEN, -1, A_BOLD, A_BOLD},
        [C_BAR_EMPTY] = {-1, -1, A_DIM, A_DIM},
        [C_DIM] = {-1, -1, A_DIM, A_DIM},
        [C_ERROR] = {COLOR_RED, -1, A_BOLD, A_BOLD},
        [C_OK] = {COLOR_GREEN, -1, 0, 0},
        [C_WARN] = {COLOR_YELLOW, -1, 0, A_BOLD},
        [C_INFO] = {COLOR_CYAN, -1, 0, 0},
        [C_CHART] = {COLOR_CYAN, -1, A_BOLD, A_BOLD},
        [C_CHART_AXIS] = {-1, -1, A_DIM, A_DIM},
        [C_MARK_VALID] = {COLOR_YELLOW, -1, A_BOLD, A_BOLD},
        [C_MARK_TEST] = {COLOR_GREEN, -1, A_BOLD, A_BOLD},
        [C_ST_NOTRUN] = {-1, -1, A_DIM, A_DIM},
        [C_ST_RUNNING] = {COLOR_YELLOW, -1, A_BOLD, A_BOLD},
        [C_ST_STOPPED] = {COLOR_YELLOW, -1, 0, 0},
        [C_ST_FAILED] = {COLOR_RED, -1, A_BOLD, A_BOLD},
        [C_ST_DONE] = {COLOR_GREEN, -1, A_BOLD, A_BOLD},
        [C_ST_STALE] = {COLOR_MAGENTA, -1, 0, A_UNDERLINE},
    };
    int color = has_colors();
    if (color) {
        start_color();
        use_default_colors();
    }
    for (int i = 0; i < C_COUNT; i++) {
        if (color && i < COLOR_PAIRS - 1) {
            init_pair((short)(i + 1), (short)scheme[i].fg, (short)scheme[i].bg);
            CRT_colors[i] = (int)COLOR_PAIR(i + 1) | scheme[i].attr;
        } else {
            CRT_colors[i] = scheme[i].mono;
        }
    }
}

void CRT_done(void) {
    curs_set(1);
    endwin();
}

int CRT_stateColor(stage_state s) {
    switch (s) {
    case ST_RUNNING: return CRT_colors[C_ST_RUNNING];
    case ST_STOPPED: return CRT_colors[C_ST_STOPPED];
    case ST_FAILED: return CRT_colors[C_ST_FAILED];
    case ST_DONE: return CRT_colors[C_ST_DONE];
    case ST_STALE: return CRT_colors[C_ST_STALE];
    default: return CRT_colors[C_ST_NOTRUN];
    }
}

int CRT_print(int y, int x, int cols, int attr, const char *s) {
    if (cols <= 0 || y < 0 || y >= LINES || x >= COLS) return 0;
    if (x + cols > COLS) cols = COLS - x;
    int w;
    size_t n = Format_fit(s, cols, &w);
    attrset(attr);
    mvaddnstr(y, x, s, (int)n);
    attrset(A_NORMAL);
    return w;
}

int CRT_printf(int y, int x, int cols, int attr, const char *fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return CRT_print(y, x, cols, attr, buf);
}

void CRT_fill(int y, int x, int cols, int attr) {
    if (y < 0 || y >= LINES || cols <= 0) return;
    if (x + cols > COLS) cols = COLS - x;
    attrset(attr);
    mvhline(y, x, ' ', cols);
    attrset(A_NORMAL);
}

int CRT_wrap(int y, int x, int h, int w, int attr, const char *s) {
    int row = 0;
    while (*s && row < h && w > 0) {
        int used;
        size_t n = Format_fit(s, w, &used);
        if (n == 0) n = 1;
        if (s[n]) {                     /* break at the last space that fits, if any */
            size_t b = n;
            while (b > 0 && s[b] != ' ') b--;
            if (b > 0) n = b;
        }
        char line[1024];
        size_t m = n < sizeof line - 1 ? n : sizeof line - 1;
        memcpy(line, s, m);
        line[m] = 0;
        CRT_print(y + row, x, w, attr, line);
        row++;
        s += n;
        while (*s == ' ') s++;
        if (*s == '\n') s++;
    }
    return row;
}
