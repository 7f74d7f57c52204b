/* ui.c: `tokenrec ui`, the dashboard. The main loop: read a key (or time out after a quarter
 * of a second), about once a second reap finished children, reopen a missing database and
 * let the shown screen re-read what changes while stages run; then draw the header (screen
 * tabs, dataset), the screen, the status line and the key bar.
 *
 * The dashboard only reads the database (a read-only connection, statements finalized
 * before each wait), so it never holds up a running stage. Stages are separate processes
 * (see Launch.h). */
#include "ui.h"
#include "App.h"
#include "CRT.h"
#include "FunctionBar.h"
#include "Launch.h"
#include "Queries.h"
#include "Screen.h"
#include "cli.h"
#include "db.h"
#include "stage.h"
#include "util.h"
#include <limits.h>
#include <locale.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wchar.h>

enum { N_SCREENS = 5 };

typedef struct {
    App app;
    Screen *screens[N_SCREENS];
    int cur;
    char signature[256];        /* what, when it changes, makes every screen re-read */
    int quit;
} UI;

static void mark_stale(UI *ui) {
    for (int i = 0; i < N_SCREENS; i++) ui->screens[i]->stale = 1;
}

/* The dataset to show: the one asked for, else the current one if still there, else the
 * most recently ingested. */
static void pick_dataset(UI *ui, const char *want) {
    App *a = &ui->app;
    a->ndatasets = a->db ? Queries_datasets(a->db, a->datasets, APP_MAX_DATASETS) : 0;
    if (want && *want) snprintf(a->dataset, sizeof a->dataset, "%s", want);
    else if (!a->dataset[0] && a->ndatasets) snprintf(a->dataset, sizeof a->dataset, "%s", a->datasets[0]);
    a->dsid = a->db && a->dataset[0] ? db_dataset_id(a->db, a->dataset) : -1;
    tr_error_clear();
}

/* Open the database read-only if it is not open; remember why not otherwise. */
static void open_db(UI *ui) {
    App *a = &ui->app;
    if (a->db) return;
    if (!tr_file_exists(a->dbpath)) {
        snprintf(a->dberror, sizeof a->dberror, "No database at %s.", a->dbpath);
        return;
    }
    a->db = db_open(a->dbpath, 1);
    if (!a->db) { snprintf(a->dberror, sizeof a->dberror, "%s", tr_errmsg()); tr_error_clear(); return; }
    ui->signature[0] = 0;
}

/* Datasets, re-ingests and finished runs: when any changes, every screen re-reads. */
static void check_signature(UI *ui, const char *want) {
    App *a = &ui->app;
    if (!a->db) return;
    char sig[256];
    snprintf(sig, sizeof sig, "%lld/%lld/%lld",
             (long long)db_query_i64(a->db, 0, "SELECT count(*) FROM datasets"),
             (long long)db_query_i64(a->db, 0, "SELECT CAST(max(ingested_at) * 1000 AS INTEGER) FROM datasets"),
             (long long)stage_last_done(a->db));
    tr_error_clear();
    if (!strcmp(sig, ui->signature)) return;
    snprintf(ui->signature, sizeof ui->signature, "%s", sig);
    pick_dataset(ui, want);
    mark_stale(ui);
}

/* Report children that ended, so that a launch that failed before writing stage_runs
 * (a missing upstream, a command this build lacks) does not go unnoticed. */
static void reap(App *a) {
    int status;
    pid_t pid;
    while ((pid = Launch_reap(&status)) > 0) {
        for (int i = 0; i < APP_MAX_CHILDREN; i++) {
            if (a->children[i].pid != pid) continue;
            const char *st = a->children[i].stage;
            if (status == 0) App_status(a, 0, "%s finished", st);
            else if (status == 130) App_status(a, 0, "%s stopped; Enter resumes it", st);
            else if (status == 127) App_status(a, 1, "%s: cannot run %s", st, a->exe);
            else if (status == 2) App_status(a, 1, "%s: this tokenrec has no '%s' command", st, st);
            else App_status(a, 1, "%s exited with status %d; run 'tokenrec %s --db %s --dataset %s' "
                            "in a shell to see why", st, status, st, a->dbpath, a->dataset);
            a->children[i].pid = 0;
        }
    }
}

static const char *const global_help[] = {
    "tokenrec ui: the dashboard",
    "  1-5, Tab, Shift-Tab   Pipeline, Dataset, Users, Items, Training",
    "  Up/Down, j/k, PgUp/PgDn, g/G   move in a list",
    "  /           search on the current screen (Esc cancels)",
    "  d           next dataset",
    "  r           re-read from the database",
    "  ?, F1       this help",
    "  q, F10      quit (launched stages keep running)",
    NULL};

static void draw_help(UI *ui) {
    const char *const *lists[2] = {global_help, ui->screens[ui->cur]->help};
    int n = 0, w = 40;
    for (int l = 0; l < 2; l++)
        for (int i = 0; lists[l] && lists[l][i]; i++, n++) {
            int lw = (int)strlen(lists[l][i]) + 4;
            if (lw > w) w = lw;
        }
    if (w > COLS - 2) w = COLS - 2;
    int h = n + 4 < LINES - 2 ? n + 4 : LINES - 2;
    int y = (LINES - h) / 2, x = (COLS - w) / 2;
    for (int r = 0; r < h; r++) CRT_fill(y + r, x, w, CRT_colors[C_SELECTED_DIM]);
    int r = y + 1;
    for (int l = 0; l < 2; l++) {
        for (int i = 0; lists[l] && lists[l][i] && r < y + h - 1; i++)
            CRT_print(r++, x + 2, w - 4, CRT_colors[C_SELECTED_DIM] | (i == 0 ? A_BOLD : 0), lists[l][i]);
        r++;
    }
    CRT_print(y + h - 1, x + 2, w - 4, CRT_colors[C_SELECTED_DIM], "press any key");
}

static void draw(UI *ui) {
    App *a = &ui->app;
    erase();
    if (COLS < 40 || LINES < 10) {
        CRT_print(0, 0, COLS, CRT_colors[C_ERROR], "terminal too small (40x10 at least); q quits");
        refresh();
        return;
    }
    /* Header: tabs, then dataset and database. */
    int x = 0;
    for (int i = 0; i < N_SCREENS; i++) {
        x += CRT_printf(0, x, COLS - x, CRT_colors[i == ui->cur ? C_TAB_ACTIVE : C_TAB], " %d %s ", i + 1,
                        ui->screens[i]->name);
    }
    CRT_printf(0, x + 1, COLS - x - 1, CRT_colors[C_TITLE], "%s%s%s", a->dataset[0] ? a->dataset : "(no dataset)",
               a->ndatasets > 1 ? " (d: next)" : "", "");
    Screen *s = ui->screens[ui->cur];
    if (s->stale) { s->load(s, a); s->stale = 0; }
    s->draw(s, a, 1, 0, LINES - 3, COLS);
    if (a->status[0] && tr_monotonic() - a->status_at < 15)
        CRT_print(LINES - 2, 0, COLS, a->status_attr, a->status);
    else
        CRT_printf(LINES - 2, 0, COLS, CRT_colors[C_DIM], "db %s", a->dbpath);
    FunctionBar_draw(s->keys, LINES - 1, COLS);
    refresh();
}

/* A one-line prompt on the status line; the text in buf, 1 if entered, 0 if cancelled. */
static int prompt(UI *ui, const char *label, char *buf, size_t len) {
    size_t n = 0;
    buf[0] = 0;
    curs_set(1);
    timeout(-1);
    int done = -1;
    while (done < 0) {
        draw(ui);
        CRT_fill(LINES - 2, 0, COLS, CRT_colors[C_DEFAULT]);
        int c = CRT_print(LINES - 2, 0, COLS, CRT_colors[C_TITLE], label);
        c += CRT_print(LINES - 2, c, COLS - c, CRT_colors[C_DEFAULT], buf);
        move(LINES - 2, c < COLS ? c : COLS - 1);
        refresh();
        wint_t ch;
        int kind = get_wch(&ch);
        if (kind == ERR) continue;
        if (kind == KEY_CODE_YES) {
            if (ch == KEY_BACKSPACE || ch == KEY_DC) goto backspace;
            if (ch == KEY_ENTER) done = 1;
            continue;
        }
        if (ch == 27 || ch == 3 || ch == 7) done = 0;             /* Esc, Ctrl-C, Ctrl-G */
        else if (ch == '\n' || ch == '\r') done = 1;
        else if (ch == 127 || ch == 8) {
        backspace:
            while (n > 0 && ((unsigned char)buf[n - 1] & 0xC0) == 0x80) n--;   /* UTF-8 continuation */
            if (n > 0) n--;
            buf[n] = 0;
        } else if (ch == 21) { n = 0; buf[0] = 0; }                /* Ctrl-U */
        else if (ch >= 32) {
            char mb[MB_LEN_MAX];
            mbstate_t st;
            memset(&st, 0, sizeof st);
            size_t k = wcrtomb(mb, (wchar_t)ch, &st);
            if (k != (size_t)-1 && n + k < len) { memcpy(buf + n, mb, k); n += k; buf[n] = 0; }
        }
    }
    curs_set(0);
    timeout(250);
    return done == 1 && n > 0;
}

static void on_key(UI *ui, int ch) {
    App *a = &ui->app;
    Screen *s = ui->screens[ui->cur];
    switch (ch) {
    case 'q': case 'Q': case KEY_F(10): case 3: ui->quit = 1; return;
    case '?': case KEY_F(1):
        draw(ui);
        draw_help(ui);
        refresh();
        timeout(-1);
        getch();
        timeout(250);
        return;
    case '\t': ui->cur = (ui->cur + 1) % N_SCREENS; return;
    case KEY_BTAB: ui->cur = (ui->cur + N_SCREENS - 1) % N_SCREENS; return;
    case '1': case '2': case '3': case '4': case '5': ui->cur = ch - '1'; return;
    case 12: clearok(stdscr, TRUE); return;                       /* Ctrl-L */
    case KEY_RESIZE: return;
    case '/': {
        char q[256];
        if (!s->search) { App_status(a, 1, "nothing to search on the %s screen", s->name); return; }
        if (prompt(ui, "Search: ", q, sizeof q)) s->search(s, a, q);
        return;
    }
    case 'd':
        if (a->ndatasets < 2) { App_status(a, 0, "only one dataset in %s", a->dbpath); return; }
        for (int i = 0; i < a->ndatasets; i++) {
            if (strcmp(a->datasets[i], a->dataset)) continue;
            snprintf(a->dataset, sizeof a->dataset, "%s", a->datasets[(i + 1) % a->ndatasets]);
            break;
        }
        a->dsid = db_dataset_id(a->db, a->dataset);
        tr_error_clear();
        mark_stale(ui);
        App_status(a, 0, "dataset %s", a->dataset);
        return;
    default: break;
    }
    if (s->onKey(s, a, ch)) return;
    if (ch == 'r') { ui->signature[0] = 0; check_signature(ui, NULL); mark_stale(ui); }
}

static const char *usage_ui = "tokenrec ui [--db FILE] [--dataset NAME]";
static const char *summary_ui =
    "The dashboard: launch, stop and watch stages; explore the dataset, users, items and their\n"
    "tokens; follow training curves. Keys: 1-5 or Tab switch screens, ? shows the keys, q quits.";

int ui_main(int argc, char **argv) {
    const char *dbpath = DB_DEFAULT_PATH, *dataset = NULL;
    int rc = cli_parse_db(argc, argv, usage_ui, summary_ui, &dbpath, &dataset,
                          "dataset to show (default: the most recently ingested)");
    if (rc) return rc > 0 ? 0 : -1;
    setlocale(LC_ALL, "");

    UI *ui = tr_calloc(1, sizeof *ui);
    App *a = &ui->app;
    a->dbpath = dbpath;
    a->dsid = -1;
    Launch_self(a->exe, sizeof a->exe);
    ui->screens[0] = PipelineScreen_new();
    ui->screens[1] = DatasetScreen_new();
    ui->screens[2] = UsersScreen_new();
    ui->screens[3] = ItemsScreen_new();
    ui->screens[4] = TrainingScreen_new();
    open_db(ui);
    check_signature(ui, dataset);
    if (dataset) snprintf(a->dataset, sizeof a->dataset, "%s", dataset);

    CRT_init();
    double last_tick = 0;
    while (!ui->quit && !stage_should_stop()) {
        double now = tr_monotonic();
        if (now - last_tick >= 1.0) {
            last_tick = now;
            reap(a);
            open_db(ui);
            check_signature(ui, NULL);
            Screen *s = ui->screens[ui->cur];
            if (s->tick && !s->stale) s->tick(s, a);
        }
        draw(ui);
        int ch = getch();
        if (ch != ERR) on_key(ui, ch);
    }
    CRT_done();
    for (int i = 0; i < N_SCREENS; i++) ui->screens[i]->destroy(ui->screens[i]);
    db_close(a->db);
    free(ui);
    return 0;
}
