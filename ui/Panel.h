/* Panel: a scrolling list with a selection and an optional header line, drawn row by row by
 * its owner's callback. The selection logic (Panel_onKey) does no drawing. */
#ifndef TOKENREC_UI_PANEL_H
#define TOKENREC_UI_PANEL_H

typedef struct Panel Panel;
/* Draw row `row` at (y, x) in w columns; selected is 0, 1 (focused) or 2 (unfocused). */
typedef void (*Panel_DrawRow)(Panel *p, int row, int y, int x, int w, int selected);

struct Panel {
    int x, y, w, h;             /* the box, header included */
    int count, selected, scroll;
    const char *header;         /* NULL: no header line */
    Panel_DrawRow drawRow;
    void *data;                 /* the owner */
};

void Panel_init(Panel *p, const char *header, Panel_DrawRow fn, void *data);
void Panel_resize(Panel *p, int x, int y, int w, int h);
void Panel_setCount(Panel *p, int n);           /* keeps the selection in range */
void Panel_setSelected(Panel *p, int i);        /* clamps and scrolls it into view */
int  Panel_rows(const Panel *p);                /* rows for items */
/* Arrows, vi keys (j k g G), PgUp/PgDn, Ctrl-F/Ctrl-B, Home/End: 1 when handled. */
int  Panel_onKey(Panel *p, int ch);
void Panel_draw(Panel *p, int focused);

#endif
