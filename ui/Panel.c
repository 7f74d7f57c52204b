/* Panel.c: list selection, scrolling and drawing. */
#include "Panel.h"
#include "CRT.h"

void Panel_init(Panel *p, const char *header, Panel_DrawRow fn, void *data) {
    *p = (Panel){0};
    p->header = header;
    p->drawRow = fn;
    p->data = data;
    p->h = 1;
}

int Panel_rows(const Panel *p) {
    int r = p->h - (p->header ? 1 : 0);
    return r > 0 ? r : 0;
}

/* Keep the selection in range and on screen. */
static void clamp(Panel *p) {
    if (p->selected >= p->count) p->selected = p->count - 1;
    if (p->selected < 0) p->selected = 0;
    int rows = Panel_rows(p);
    if (rows <= 0) { p->scroll = p->selected; return; }
    if (p->selected < p->scroll) p->scroll = p->selected;
    if (p->selected >= p->scroll + rows) p->scroll = p->selected - rows + 1;
    if (p->scroll > p->count - rows) p->scroll = p->count - rows;
    if (p->scroll < 0) p->scroll = 0;
}

void Panel_resize(Panel *p, int x, int y, int w, int h) {
    p->x = x; p->y = y; p->w = w; p->h = h;
    clamp(p);
}

void Panel_setCount(Panel *p, int n) {
    p->count = n;
    clamp(p);
}

void Panel_setSelected(Panel *p, int i) {
    p->selected = i;
    clamp(p);
}

int Panel_onKey(Panel *p, int ch) {
    int page = Panel_rows(p) > 1 ? Panel_rows(p) - 1 : 1;
    int s = p->selected;
    switch (ch) {
    case KEY_UP: case 'k': s--; break;
    case KEY_DOWN: case 'j': s++; break;
    case KEY_PPAGE: case 2: /* Ctrl-B */ s -= page; break;
    case KEY_NPAGE: case 6: /* Ctrl-F */ case ' ': s += page; break;
    case KEY_HOME: case 'g': s = 0; break;
    case KEY_END: case 'G': s = p->count - 1; break;
    default: return 0;
    }
    Panel_setSelected(p, s);
    return 1;
}

void Panel_draw(Panel *p, int focused) {
    int y = p->y;
    clamp(p);
    if (p->header) {
        CRT_fill(y, p->x, p->w, CRT_colors[C_PANEL_HEADER]);
        CRT_print(y, p->x, p->w, CRT_colors[C_PANEL_HEADER], p->header);
        y++;
    }
    int rows = Panel_rows(p);
    for (int r = 0; r < rows; r++) {
        int i = p->scroll + r;
        if (i >= p->count) break;
        int sel = i == p->selected ? (focused ? 1 : 2) : 0;
        if (sel) CRT_fill(y + r, p->x, p->w, CRT_colors[sel == 1 ? C_SELECTED : C_SELECTED_DIM]);
        p->drawRow(p, i, y + r, p->x, p->w, sel);
    }
}
