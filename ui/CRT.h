/* CRT: the terminal (htop's name for it): ncurses setup, the colour scheme, and UTF-8 aware
 * printing clipped to a number of columns. */
#ifndef TOKENREC_UI_CRT_H
#define TOKENREC_UI_CRT_H
#include <curses.h>
#include "stage.h"

typedef enum {
    C_DEFAULT, C_TITLE, C_TAB, C_TAB_ACTIVE, C_PANEL_HEADER, C_SELECTED, C_SELECTED_DIM,
    C_KEY, C_KEY_LABEL, C_BAR, C_BAR_EMPTY, C_DIM, C_ERROR, C_OK, C_WARN, C_INFO,
    C_CHART, C_CHART_AXIS, C_MARK_VALID, C_MARK_TEST,
    C_ST_NOTRUN, C_ST_RUNNING, C_ST_STOPPED, C_ST_FAILED, C_ST_DONE, C_ST_STALE,
    C_COUNT
} ColorElement;

extern int CRT_colors[C_COUNT];
extern int CRT_utf8;            /* the terminal takes UTF-8: block characters are used */

void CRT_init(void);
void CRT_done(void);
/* The colour of a stage state. */
int  CRT_stateColor(stage_state s);

/* Print s at (y, x) in at most cols columns (whole characters), in attr; returns the columns
 * used. CRT_printf formats first. CRT_fill writes cols spaces in attr. */
int  CRT_print(int y, int x, int cols, int attr, const char *s);
int  CRT_printf(int y, int x, int cols, int attr, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 5, 6)))
#endif
    ;
void CRT_fill(int y, int x, int cols, int attr);
/* Word-wrap s into the box (y, x, h, w); returns the rows used. */
int  CRT_wrap(int y, int x, int h, int w, int attr, const char *s);

#endif
