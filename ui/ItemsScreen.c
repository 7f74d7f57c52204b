/* ItemsScreen: the items of the dataset; for the selected one its tokens and the items that
 * share all, two or one of them; the usage of each codebook's codes; the collisions (items
 * with identical tokens). Tokens come from the current tokenize run. */
#include "CRT.h"
#include "Format.h"
#include "Histogram.h"
#include "Panel.h"
#include "Queries.h"
#include "Screen.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { V_SHARING, V_BOOKS, V_COLLISIONS, V_COUNT };
static const char *const view_names[V_COUNT] = {"Sharing", "Codebooks", "Collisions"};

typedef struct {
    Screen super;
    Panel list, share, coll;
    EntityRow *items;
    int nitems;
    int focus, view, shown;
    int64_t run;
    int codes[Q_MAX_BOOKS], k;
    ShareRow *sh;
    int nsh;
    Collision *col;
    int ncol;
    int nbooks;
    int64_t *usage[Q_MAX_BOOKS];
    int L[Q_MAX_BOOKS];
} ItemsScreen;

static const FunctionKey keys[] = {
    {"/", "Find"}, {"v", "View"}, {"←→", "Focus"}, {"Enter", "Go to"}, {"d", "Dataset"},
    {"Tab", "Screen"}, {"?", "Help"}, {"q", "Quit"}, {NULL, NULL}};

static const char *const help[] = {
    "Items & tokens: an item's tokens, the items sharing them, codebook usage, collisions",
    "  /           find an item by original id, #N for iid N, or part of its name",
    "  v           switch the detail: sharing items, codebooks, collisions",
    "  Left/Right, h/l   move between the list and the detail",
    "  Enter       in the detail: select that item in the list",
    NULL};

static const char *ItemsScreen_itemLabel(ItemsScreen *is, int iid) {
    if (iid < 0 || iid >= is->nitems || is->items[iid].id != iid) return "";
    return is->items[iid].name ? is->items[iid].name : is->items[iid].orig;
}

static void ItemsScreen_listRow(Panel *p, int row, int y, int x, int w, int sel) {
    ItemsScreen *is = p->data;
    const EntityRow *e = &is->items[row];
    int a = sel ? CRT_colors[sel == 1 ? C_SELECTED : C_SELECTED_DIM] : CRT_colors[C_DEFAULT];
    int c = CRT_printf(y, x, w, a, "%5d %4d ", e->id, e->len);
    CRT_print(y, x + c, w - c, a, e->name ? e->name : e->orig);
}

static void ItemsScreen_shareRow(Panel *p, int row, int y, int x, int w, int sel) {
    ItemsScreen *is = p->data;
    const ShareRow *r = &is->sh[row];
    int a = sel ? CRT_colors[sel == 1 ? C_SELECTED : C_SELECTED_DIM] : CRT_colors[C_DEFAULT];
    int sa = sel ? a : CRT_colors[r->shared >= is->k ? C_ERROR : r->shared > 1 ? C_WARN : C_DIM];
    char lab[32];
    if (r->shared >= is->k) snprintf(lab, sizeof lab, "all %d ", is->k);
    else snprintf(lab, sizeof lab, "%d of %d", r->shared, is->k);
    int c = CRT_printf(y, x, w, sa, "%-7s", lab);
    c += CRT_printf(y, x + c, w - c, a, " %6d ", r->iid);
    CRT_print(y, x + c, w - c, a, r->name ? r->name : ItemsScreen_itemLabel(is, r->iid));
}

static void ItemsScreen_collRow(Panel *p, int row, int y, int x, int w, int sel) {
    ItemsScreen *is = p->data;
    const Collision *c = &is->col[row];
    int a = sel ? CRT_colors[sel == 1 ? C_SELECTED : C_SELECTED_DIM] : CRT_colors[C_DEFAULT];
    char line[512];
    int o = snprintf(line, sizeof line, "%-12s %d items:", c->key, c->n);
    for (int i = 0; i < c->n && o < (int)sizeof line - 1; i++)
        o += snprintf(line + o, sizeof line - (size_t)o, " %d (%s)", c->members[i], ItemsScreen_itemLabel(is, c->members[i]));
    CRT_print(y, x, w, a, line);
}

static void ItemsScreen_clearDetail(ItemsScreen *is) {
    ShareRow_free(is->sh, is->nsh);
    is->sh = NULL;
    is->nsh = is->k = 0;
    is->shown = -1;
}

static void ItemsScreen_clearAll(ItemsScreen *is) {
    ItemsScreen_clearDetail(is);
    Collision_free(is->col, is->ncol);
    is->col = NULL;
    is->ncol = 0;
    for (int b = 0; b < Q_MAX_BOOKS; b++) { free(is->usage[b]); is->usage[b] = NULL; is->L[b] = 0; }
    is->nbooks = 0;
    EntityRow_free(is->items, is->nitems);
    is->items = NULL;
    is->nitems = 0;
}

static void ItemsScreen_loadDetail(ItemsScreen *is, App *a) {
    if (!is->nitems || !a->db) return;
    int iid = is->items[is->list.selected].id;
    if (iid == is->shown) return;
    ItemsScreen_clearDetail(is);
    is->shown = iid;
    is->k = Queries_tokens(a->db, is->run, "item", iid, is->codes);
    is->nsh = Queries_sharing(a->db, a->dsid, is->run, iid, 500, &is->sh);
    Panel_setCount(&is->share, is->nsh);
    Panel_setSelected(&is->share, 0);
    tr_error_clear();
}

static void ItemsScreen_load(Screen *s, App *a) {
    ItemsScreen *is = (ItemsScreen *)s;
    ItemsScreen_clearAll(is);
    if (a->db && a->dataset[0]) {
        is->nitems = Queries_items(a->db, a->dsid, &is->items);
        is->run = Queries_tokenRun(a->db, a->dataset);
        is->nbooks = Queries_books(a->db, is->run, "item");
        if (is->nbooks > Q_MAX_BOOKS) is->nbooks = Q_MAX_BOOKS;
        for (int b = 0; b < is->nbooks; b++) is->L[b] = Queries_codeUsage(a->db, is->run, "item", b, &is->usage[b]);
        is->ncol = Queries_collisions(a->db, is->run, "item", &is->col);
    }
    Panel_setCount(&is->list, is->nitems);
    Panel_setCount(&is->coll, is->ncol);
    ItemsScreen_loadDetail(is, a);
    tr_error_clear();
}

static void ItemsScreen_drawBooks(ItemsScreen *is, int y, int x, int h, int w) {
    int r = y;
    for (int b = 0; b < is->nbooks && r + 1 < y + h; b++) {
        int used = 0;
        int64_t mx = 0;
        for (int c = 0; c < is->L[b]; c++) { used += is->usage[b][c] > 0; if (is->usage[b][c] > mx) mx = is->usage[b][c]; }
        CRT_printf(r++, x, w, CRT_colors[C_TITLE], "codebook %d: %d of %d codes used, at most %lld items per code",
                   b, used, is->L[b], (long long)mx);
        Histogram_spark(r++, x, w, is->usage[b], is->L[b]);
        if (b < is->k && is->codes[b] >= 0 && is->codes[b] < is->L[b] && r < y + h)
            CRT_printf(r++, x, w, CRT_colors[C_DIM], "  this item's code %d is used by %lld items",
                       is->codes[b], (long long)is->usage[b][is->codes[b]]);
    }
}

static void ItemsScreen_draw(Screen *s, App *a, int y, int x, int h, int w) {
    ItemsScreen *is = (ItemsScreen *)s;
    if (App_drawMissing(a, y, x, h, w)) return;
    int lw = w / 3 < 30 ? w / 3 : 30;
    Panel_resize(&is->list, x, y, lw, h);
    Panel_setCount(&is->list, is->nitems);
    Panel_draw(&is->list, is->focus == 0);
    ItemsScreen_loadDetail(is, a);
    int dx = x + lw + 1, dw = w - lw - 1, r = y;
    if (!is->nitems) { CRT_print(r, dx, dw, CRT_colors[C_DIM], "no items"); return; }
    const EntityRow *e = &is->items[is->list.selected];
    CRT_printf(r++, dx, dw, CRT_colors[C_TITLE], "item %d  (original id %s)  %d interactions", e->id, e->orig, e->len);
    if (e->name) CRT_print(r++, dx, dw, CRT_colors[C_DEFAULT], e->name);
    if (!is->run) {
        char m[256];
        snprintf(m, sizeof m, "No tokens yet: run tokenrec tokenize --dataset %s (after cf).", a->dataset);
        CRT_wrap(r + 1, dx, y + h - r - 1, dw, CRT_colors[C_DIM], m);
        return;
    }
    char tok[256];
    if (is->k) CRT_printf(r++, dx, dw, CRT_colors[C_DEFAULT], "tokens %s", Format_itemTokens(is->codes, is->k, tok, sizeof tok));
    else CRT_print(r++, dx, dw, CRT_colors[C_DIM], "tokens: none for this item");
    int c = 0;
    for (int v = 0; v < V_COUNT; v++) {
        char lab[40];
        snprintf(lab, sizeof lab, v == is->view ? "[%s]" : " %s ", view_names[v]);
        c += CRT_print(r, dx + c, dw - c, CRT_colors[v == is->view ? C_TAB_ACTIVE : C_TAB], lab);
        c += CRT_print(r, dx + c, dw - c, 0, " ");
    }
    CRT_print(r, dx + c, dw - c, CRT_colors[C_DIM], "(v)");
    r++;
    int bh = y + h - r;
    if (is->view == V_SHARING) {
        if (!is->nsh) { CRT_print(r, dx, dw, CRT_colors[C_DIM], "no other item shares a token with it"); return; }
        Panel_resize(&is->share, dx, r, dw, bh);
        Panel_draw(&is->share, is->focus == 1);
    } else if (is->view == V_BOOKS) {
        ItemsScreen_drawBooks(is, r, dx, bh, dw);
    } else {
        if (!is->ncol) { CRT_print(r, dx, dw, CRT_colors[C_OK], "no collisions: every item has its own tokens"); return; }
        Panel_resize(&is->coll, dx, r, dw, bh);
        Panel_draw(&is->coll, is->focus == 1);
    }
}

static void ItemsScreen_selectItem(ItemsScreen *is, int iid) {
    for (int i = 0; i < is->nitems; i++)
        if (is->items[i].id == iid) { Panel_setSelected(&is->list, i); return; }
}

static int ItemsScreen_onKey(Screen *s, App *a, int ch) {
    ItemsScreen *is = (ItemsScreen *)s;
    (void)a;
    Panel *p = is->focus == 0 ? &is->list : is->view == V_SHARING ? &is->share
             : is->view == V_COLLISIONS ? &is->coll : NULL;
    switch (ch) {
    case 'v': is->view = (is->view + 1) % V_COUNT; return 1;
    case KEY_LEFT: case 'h': is->focus = 0; return 1;
    case KEY_RIGHT: case 'l': is->focus = 1; return 1;
    case '\n': case '\r': case KEY_ENTER:
        if (is->focus == 0) { is->focus = 1; return 1; }
        if (p == &is->share && is->nsh) ItemsScreen_selectItem(is, is->sh[is->share.selected].iid);
        else if (p == &is->coll && is->ncol) {
            const Collision *c = &is->col[is->coll.selected];
            int cur = is->shown, next = c->members[0];
            for (int i = 0; i < c->n; i++) if (c->members[i] == cur) next = c->members[(i + 1) % c->n];
            ItemsScreen_selectItem(is, next);
        }
        return 1;
    default: break;
    }
    return p ? Panel_onKey(p, ch) : 0;
}

static void ItemsScreen_search(Screen *s, App *a, const char *q) {
    ItemsScreen *is = (ItemsScreen *)s;
    int iid = a->db ? Queries_findItem(a->db, a->dsid, q) : -1;
    tr_error_clear();
    if (iid < 0) { App_status(a, 1, "no item '%s' (original id, #N for iid N, or part of a name)", q); return; }
    ItemsScreen_selectItem(is, iid);
    is->focus = 0;
    App_status(a, 0, "item %d", iid);
}

static void ItemsScreen_destroy(Screen *s) {
    ItemsScreen_clearAll((ItemsScreen *)s);
    free(s);
}

/* The handlers the main loop calls (Screen.h). */
static const Screen ItemsScreen_class = {
    .name = "Items", .keys = keys, .help = help, .load = ItemsScreen_load,
    .draw = ItemsScreen_draw, .onKey = ItemsScreen_onKey, .search = ItemsScreen_search,
    .destroy = ItemsScreen_destroy, .stale = 1,
};

Screen *ItemsScreen_new(void) {
    ItemsScreen *is = Screen_alloc(&ItemsScreen_class, sizeof *is);
    Panel_init(&is->list, "  iid  pop item", ItemsScreen_listRow, is);
    Panel_init(&is->share, "shares     iid item", ItemsScreen_shareRow, is);
    Panel_init(&is->coll, "tokens       items", ItemsScreen_collRow, is);
    is->shown = -1;
    return &is->super;
}
