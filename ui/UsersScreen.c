/* UsersScreen: the users of the dataset; for the selected one its history (with item names),
 * its tokens, the prompt the model sees at test time, and its top-20 recommendations with
 * the held-out valid and test items marked. */
#include "CRT.h"
#include "Format.h"
#include "Panel.h"
#include "Queries.h"
#include "Screen.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { V_HISTORY, V_RECS, V_PROMPT, V_COUNT };
static const char *const view_names[V_COUNT] = {"History", "Recommendations", "Prompt"};

typedef struct {
    Screen super;
    Panel list, hist, recs;
    EntityRow *users;
    int nusers;
    int focus;                  /* 0 the list, 1 the detail */
    int view;
    int shown;                  /* the uid the detail was loaded for, -1 none */
    HistRow *h;
    int nh;
    RecRow *r;
    int nr;
    int64_t token_run, rec_run;
    int codes[Q_MAX_BOOKS], k;
    char *prompt;
} UsersScreen;

static const FunctionKey keys[] = {
    {"/", "Find"}, {"v", "View"}, {"←→", "Focus"}, {"d", "Dataset"}, {"Tab", "Screen"},
    {"?", "Help"}, {"q", "Quit"}, {NULL, NULL}};

static const char *const help[] = {
    "Users: history, tokens, prompt and recommendations of a user",
    "  /           find a user by original id, or #N for uid N",
    "  v           switch the detail: history, recommendations, prompt",
    "  Left/Right, h/l, Enter   move between the list and the detail",
    "  In recommendations, VALID and TEST mark the user's held-out items.",
    NULL};

static void UsersScreen_listRow(Panel *p, int row, int y, int x, int w, int sel) {
    UsersScreen *us = p->data;
    const EntityRow *e = &us->users[row];
    int a = sel ? CRT_colors[sel == 1 ? C_SELECTED : C_SELECTED_DIM] : CRT_colors[C_DEFAULT];
    CRT_printf(y, x, w, a, "%5d %-*.*s %4d", e->id, w - 12 > 0 ? w - 12 : 0, w - 12 > 0 ? w - 12 : 0,
               e->orig, e->len);
}

static void UsersScreen_histRow(Panel *p, int row, int y, int x, int w, int sel) {
    UsersScreen *us = p->data;
    const HistRow *h = &us->h[row];
    int a = sel ? CRT_colors[sel == 1 ? C_SELECTED : C_SELECTED_DIM] : CRT_colors[C_DEFAULT];
    static const char *const split[] = {"train", "VALID", "TEST "};
    int sa = sel ? a : CRT_colors[h->split == 2 ? C_MARK_TEST : h->split == 1 ? C_MARK_VALID : C_DIM];
    int c = CRT_printf(y, x, w, a, "%4d %6d ", h->pos, h->iid);
    c += CRT_print(y, x + c, w - c, sa, split[h->split > 2 ? 0 : h->split]);
    c += CRT_print(y, x + c, w - c, a, " ");
    CRT_print(y, x + c, w - c, a, h->name ? h->name : h->orig ? h->orig : "");
}

static void UsersScreen_recRow(Panel *p, int row, int y, int x, int w, int sel) {
    UsersScreen *us = p->data;
    const RecRow *r = &us->r[row];
    int a = sel ? CRT_colors[sel == 1 ? C_SELECTED : C_SELECTED_DIM] : CRT_colors[C_DEFAULT];
    int c = CRT_printf(y, x, w, a, "%3d %6d %9.4f ", r->rank, r->iid, r->score);
    int ma = sel ? a : CRT_colors[r->mark == 2 ? C_MARK_TEST : C_MARK_VALID];
    c += CRT_print(y, x + c, w - c, ma, r->mark == 2 ? "TEST  " : r->mark == 1 ? "VALID " : "      ");
    CRT_print(y, x + c, w - c, a, r->name ? r->name : "");
}

static void UsersScreen_clearDetail(UsersScreen *us) {
    HistRow_free(us->h, us->nh);
    RecRow_free(us->r, us->nr);
    free(us->prompt);
    us->h = NULL; us->r = NULL; us->prompt = NULL;
    us->nh = us->nr = us->k = 0;
    us->shown = -1;
}

/* Read the detail of the selected user, if it is not the one already shown. */
static void UsersScreen_loadDetail(UsersScreen *us, App *a) {
    if (!us->nusers || !a->db) { UsersScreen_clearDetail(us); return; }
    int uid = us->users[us->list.selected].id;
    if (uid == us->shown) return;
    UsersScreen_clearDetail(us);
    us->shown = uid;
    us->nh = Queries_history(a->db, a->dsid, uid, &us->h);
    us->k = Queries_tokens(a->db, us->token_run, "user", uid, us->codes);
    us->prompt = Queries_prompt(a->db, a->dsid, us->token_run, uid, 50);
    us->nr = Queries_recs(a->db, a->dsid, us->rec_run, uid, 20, &us->r);
    Panel_setCount(&us->hist, us->nh);
    Panel_setSelected(&us->hist, 0);
    Panel_setCount(&us->recs, us->nr);
    Panel_setSelected(&us->recs, 0);
    tr_error_clear();
}

static void UsersScreen_load(Screen *s, App *a) {
    UsersScreen *us = (UsersScreen *)s;
    UsersScreen_clearDetail(us);
    EntityRow_free(us->users, us->nusers);
    us->users = NULL;
    us->nusers = 0;
    if (a->db && a->dataset[0]) {
        us->nusers = Queries_users(a->db, a->dsid, &us->users);
        us->token_run = Queries_tokenRun(a->db, a->dataset);
        us->rec_run = Queries_recRun(a->db, a->dataset);
    }
    Panel_setCount(&us->list, us->nusers);
    UsersScreen_loadDetail(us, a);
    tr_error_clear();
}

static void UsersScreen_draw(Screen *s, App *a, int y, int x, int h, int w) {
    UsersScreen *us = (UsersScreen *)s;
    if (App_drawMissing(a, y, x, h, w)) return;
    int lw = w / 3 < 30 ? w / 3 : 30;
    Panel_resize(&us->list, x, y, lw, h);
    Panel_setCount(&us->list, us->nusers);
    Panel_draw(&us->list, us->focus == 0);
    UsersScreen_loadDetail(us, a);
    int dx = x + lw + 1, dw = w - lw - 1, r = y;
    if (!us->nusers) { CRT_print(r, dx, dw, CRT_colors[C_DIM], "no users"); return; }
    const EntityRow *e = &us->users[us->list.selected];
    int ntrain = 0;
    for (int i = 0; i < us->nh; i++) ntrain += us->h[i].split == 0;
    CRT_printf(r++, dx, dw, CRT_colors[C_TITLE], "user %d  (original id %s)  %d interactions, %d train",
               e->id, e->orig, us->nh, ntrain);
    char tok[256];
    if (us->k) CRT_printf(r++, dx, dw, CRT_colors[C_DEFAULT], "tokens %s", Format_userTokens(us->codes, us->k, tok, sizeof tok));
    else CRT_print(r++, dx, dw, CRT_colors[C_DIM], "tokens: none yet (run tokenize)");
    int c = 0;
    for (int v = 0; v < V_COUNT; v++) {
        char lab[40];
        snprintf(lab, sizeof lab, v == us->view ? "[%s]" : " %s ", view_names[v]);
        c += CRT_print(r, dx + c, dw - c, CRT_colors[v == us->view ? C_TAB_ACTIVE : C_TAB], lab);
        c += CRT_print(r, dx + c, dw - c, 0, " ");
    }
    CRT_print(r, dx + c, dw - c, CRT_colors[C_DIM], "(v)");
    r++;
    int bh = y + h - r;
    if (us->view == V_HISTORY) {
        Panel_resize(&us->hist, dx, r, dw, bh);
        Panel_draw(&us->hist, us->focus == 1);
    } else if (us->view == V_RECS) {
        if (!us->rec_run) {
            char m[256];
            snprintf(m, sizeof m, "No recommendations yet: run tokenrec evaluate --dataset %s.", a->dataset);
            CRT_wrap(r, dx, bh, dw, CRT_colors[C_DIM], m);
            return;
        }
        if (!us->nr) { CRT_print(r, dx, dw, CRT_colors[C_DIM], "no recommendations for this user"); return; }
        Panel_resize(&us->recs, dx, r, dw, bh);
        Panel_draw(&us->recs, us->focus == 1);
    } else {
        if (!us->prompt) {
            char m[256];
            snprintf(m, sizeof m, "No prompt yet: it needs the user's and the items' tokens (run tokenrec "
                     "tokenize --dataset %s).", a->dataset);
            CRT_wrap(r, dx, bh, dw, CRT_colors[C_DIM], m);
            return;
        }
        CRT_wrap(r, dx, bh, dw, CRT_colors[C_DEFAULT], us->prompt);
    }
}

static Panel *UsersScreen_detailPanel(UsersScreen *us) {
    return us->view == V_HISTORY ? &us->hist : us->view == V_RECS ? &us->recs : NULL;
}

static int UsersScreen_onKey(Screen *s, App *a, int ch) {
    UsersScreen *us = (UsersScreen *)s;
    (void)a;
    switch (ch) {
    case 'v': us->view = (us->view + 1) % V_COUNT; return 1;
    case KEY_LEFT: case 'h': us->focus = 0; return 1;
    case KEY_RIGHT: case 'l': case '\n': case '\r': case KEY_ENTER: us->focus = 1; return 1;
    default: break;
    }
    Panel *p = us->focus ? UsersScreen_detailPanel(us) : &us->list;
    return p ? Panel_onKey(p, ch) : 0;
}

static void UsersScreen_search(Screen *s, App *a, const char *q) {
    UsersScreen *us = (UsersScreen *)s;
    int uid = a->db ? Queries_findUser(a->db, a->dsid, q) : -1;
    tr_error_clear();
    for (int i = 0; uid >= 0 && i < us->nusers; i++) {
        if (us->users[i].id != uid) continue;
        Panel_setSelected(&us->list, i);
        us->focus = 0;
        App_status(a, 0, "user %d (original id %s)", uid, us->users[i].orig);
        return;
    }
    App_status(a, 1, "no user '%s' (an original id, or #N for uid N)", q);
}

static void UsersScreen_destroy(Screen *s) {
    UsersScreen *us = (UsersScreen *)s;
    UsersScreen_clearDetail(us);
    EntityRow_free(us->users, us->nusers);
    free(us);
}

/* The handlers the main loop calls (Screen.h). */
static const Screen UsersScreen_class = {
    .name = "Users", .keys = keys, .help = help, .load = UsersScreen_load,
    .draw = UsersScreen_draw, .onKey = UsersScreen_onKey, .search = UsersScreen_search,
    .destroy = UsersScreen_destroy, .stale = 1,
};

Screen *UsersScreen_new(void) {
    UsersScreen *us = Screen_alloc(&UsersScreen_class, sizeof *us);
    Panel_init(&us->list, "  uid orig id        len", UsersScreen_listRow, us);
    Panel_init(&us->hist, " pos    iid split item", UsersScreen_histRow, us);
    Panel_init(&us->recs, "rank    iid     score held  item", UsersScreen_recRow, us);
    us->shown = -1;
    return &us->super;
}
