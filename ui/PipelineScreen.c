/* PipelineScreen: every stage with its state, progress, elapsed time, ETA and last message;
 * launch, resume, force or stop the selected one. State comes from stage_runs only, so a
 * stage started by an earlier dashboard (or a shell) shows up the same way. */
#include "CRT.h"
#include "Format.h"
#include "Launch.h"
#include "Meter.h"
#include "Panel.h"
#include "Queries.h"
#include "Screen.h"
#include "db.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    Screen super;
    Panel panel;
    StageInfo st[STAGE_COUNT];
    int has_db;
} PipelineScreen;

static const FunctionKey keys[] = {
    {"Enter", "Launch"}, {"F", "Force"}, {"s", "Stop"}, {"d", "Dataset"}, {"Tab", "Screen"},
    {"?", "Help"}, {"q", "Quit"}, {NULL, NULL}};

static const char *const help[] = {
    "Pipeline: ingest -> cf -> tokenize -> finetune (or finetune-gen) -> evaluate; sasrec on ingest",
    "  Enter, F5   launch the selected stage, or resume it if stopped",
    "  F           force a new run even if an up-to-date one exists",
    "  s, F9       stop the running stage (SIGINT: it saves a checkpoint)",
    "  Stages run as separate processes and keep running after q.",
    NULL};

/* The row of the stage a stage builds on (the stage table's upstream), -1 when none. */
static int PipelineScreen_upstream(int stage) {
    const char *up = stage_defs[stage].upstream;
    return up ? stage_index(up) : -1;
}

/* Elapsed: to the end for a finished run, to now while running, to the last update else. */
static double PipelineScreen_elapsed(const StageInfo *si, double now) {
    if (!si->run) return -1;
    if (si->ended_at > 0) return si->ended_at - si->started_at;
    if (si->state == ST_RUNNING) return now - si->started_at;
    return si->updated_at - si->started_at;
}

static void PipelineScreen_drawRow(Panel *p, int row, int y, int x, int w, int sel) {
    PipelineScreen *ps = p->data;
    const StageInfo *si = &ps->st[row];
    double now = tr_now();
    int base = sel ? CRT_colors[sel == 1 ? C_SELECTED : C_SELECTED_DIM] : CRT_colors[C_DEFAULT];
    CRT_print(y, x + 1, 13, base, stage_defs[row].name);
    CRT_print(y, x + 14, 9, sel ? base : CRT_stateColor(si->state), stage_state_name(si->state));
    if (w < 64) return;
    Meter_draw(y, x + 23, 22, si->run ? si->progress : 0, CRT_colors[C_BAR]);
    char d[32], e[32];
    CRT_print(y, x + 46, 8, base, si->run ? Format_duration(PipelineScreen_elapsed(si, now), d, sizeof d) : "");
    if (si->state == ST_RUNNING) Format_eta(si->progress, si->started_at, si->updated_at, now, e, sizeof e);
    else e[0] = 0;
    CRT_print(y, x + 54, 11, base, e);
    const char *msg = si->state == ST_FAILED && si->error[0] ? si->error : si->message;
    CRT_print(y, x + 65, w - 65, si->state == ST_FAILED && !sel ? CRT_colors[C_ERROR] : base, msg);
}

static void PipelineScreen_load(Screen *s, App *a) {
    PipelineScreen *ps = (PipelineScreen *)s;
    for (int i = 0; i < STAGE_COUNT; i++) {
        if (a->db && a->dataset[0]) Queries_stage(a->db, a->dataset, i, &ps->st[i]);
        else { memset(&ps->st[i], 0, sizeof ps->st[i]); ps->st[i].stage = i; }
    }
    tr_error_clear();
}

static void PipelineScreen_draw(Screen *s, App *a, int y, int x, int h, int w) {
    PipelineScreen *ps = (PipelineScreen *)s;
    Panel_resize(&ps->panel, x, y, w, 1 + STAGE_COUNT);
    Panel_setCount(&ps->panel, STAGE_COUNT);
    Panel_draw(&ps->panel, 1);
    int r = y + 2 + STAGE_COUNT;
    if (!a->db || !a->dataset[0]) {
        App_drawMissing(a, r, x, h - (r - y), w);
        return;
    }
    const StageInfo *si = &ps->st[ps->panel.selected];
    int bottom = y + h;
    const stage_def *def = &stage_defs[si->stage];
    int up = PipelineScreen_upstream(si->stage);
    CRT_printf(r++, x + 1, w - 2, CRT_colors[C_TITLE], "%s on %s: %s", def->name,
               a->dataset, stage_state_name(si->state));
    CRT_printf(r++, x + 1, w - 2, CRT_colors[C_DIM], "%s", def->purpose);
    if (!si->run) {
        if (up >= 0 && ps->st[up].state != ST_DONE && ps->st[up].state != ST_STALE)
            CRT_printf(r++, x + 1, w - 2, CRT_colors[C_DIM], "needs a finished %s run first",
                       stage_defs[up].name);
        CRT_printf(r++, x + 1, w - 2, CRT_colors[C_DEFAULT], "Never run. Press Enter to launch "
                   "'%s --dataset %s'.", def->command, a->dataset);
        return;
    }
    char t0[32], d[32], u[32];
    time_t ts = (time_t)si->started_at;
    strftime(t0, sizeof t0, "%Y-%m-%d %H:%M:%S", localtime(&ts));
    CRT_printf(r++, x + 1, w - 2, CRT_colors[C_DEFAULT], "run %lld  started %s  elapsed %s  updated %s ago",
               (long long)si->run, t0, Format_duration(PipelineScreen_elapsed(si, tr_now()), d, sizeof d),
               Format_duration(tr_now() - si->updated_at, u, sizeof u));
    if (si->state == ST_RUNNING)
        CRT_printf(r++, x + 1, w - 2, CRT_colors[C_ST_RUNNING], "running in process %lld; s stops it",
                   (long long)si->pid);
    if (si->upstream_run)
        CRT_printf(r++, x + 1, w - 2, CRT_colors[C_DIM], "built on %s run %lld%s",
                   stage_defs[up >= 0 ? up : si->stage].name,
                   (long long)si->upstream_run, si->state == ST_STALE ? " (no longer current: stale)" : "");
    if (si->message[0]) {
        CRT_print(r, x + 1, 9, CRT_colors[C_DIM], "message");
        r += CRT_wrap(r, x + 10, 2, w - 11, CRT_colors[C_DEFAULT], si->message);
    }
    if (si->error[0] && r < bottom) {
        CRT_print(r, x + 1, 9, CRT_colors[C_ERROR], "error");
        r += CRT_wrap(r, x + 10, bottom - r - 1 > 4 ? 4 : (bottom - r - 1 > 1 ? bottom - r - 1 : 1), w - 11,
                      CRT_colors[C_ERROR], si->error);
    }
    if (r < bottom) {
        CRT_print(r, x + 1, 9, CRT_colors[C_DIM], "params");
        r += CRT_wrap(r, x + 10, bottom - r, w - 11, CRT_colors[C_DIM], si->params);
    }
}

static void PipelineScreen_launch(PipelineScreen *ps, App *a, int force) {
    int st = ps->panel.selected;
    const StageInfo *si = &ps->st[st];
    const char *ds = a->dataset[0] ? a->dataset : "lastfm";
    if (si->state == ST_RUNNING) {
        App_status(a, 1, "%s is already running (process %lld); s stops it", stage_defs[st].name, (long long)si->pid);
        return;
    }
    if (st != STAGE_INGEST && (!a->db || !a->dataset[0])) {
        App_status(a, 1, "no dataset yet: launch ingest first");
        return;
    }
    int up = PipelineScreen_upstream(st);
    if (up >= 0 && a->db && !stage_current_run(a->db, ds, stage_defs[up].name)) {
        App_status(a, 1, "%s needs a finished %s run on %s first", stage_defs[st].name, stage_defs[up].name, ds);
        return;
    }
    char **argv = Queries_launchArgv(a->db, a->exe, a->dbpath, ds, st, force);
    pid_t pid = Launch_spawn(argv);
    if (pid < 0) App_status(a, 1, "%s", tr_errmsg());
    else {
        App_addChild(a, pid, stage_defs[st].name);
        App_status(a, 0, "%s %s on %s (process %d)", si->state == ST_STOPPED && !force ? "resumed" : "launched",
                   stage_defs[st].name, ds, (int)pid);
    }
    Queries_freeArgv(argv);
}

static void PipelineScreen_stop(PipelineScreen *ps, App *a) {
    const StageInfo *si = &ps->st[ps->panel.selected];
    if (si->state != ST_RUNNING) {
        App_status(a, 1, "%s is not running", stage_defs[si->stage].name);
        return;
    }
    if (Launch_stop(si->pid) != 0) App_status(a, 1, "%s", tr_errmsg());
    else App_status(a, 0, "asked %s (process %lld) to stop: it stops at its next checkpoint",
                    stage_defs[si->stage].name, (long long)si->pid);
}

static int PipelineScreen_onKey(Screen *s, App *a, int ch) {
    PipelineScreen *ps = (PipelineScreen *)s;
    if (Panel_onKey(&ps->panel, ch)) return 1;
    switch (ch) {
    case '\n': case '\r': case KEY_ENTER: case KEY_F(5): PipelineScreen_launch(ps, a, 0); break;
    case 'F': PipelineScreen_launch(ps, a, 1); break;
    case 's': case KEY_F(9): PipelineScreen_stop(ps, a); break;
    default: return 0;
    }
    PipelineScreen_load(s, a);
    return 1;
}

static void PipelineScreen_search(Screen *s, App *a, const char *q) {
    PipelineScreen *ps = (PipelineScreen *)s;
    for (int i = 0; i < STAGE_COUNT; i++)
        if (strstr(stage_defs[i].name, q)) { Panel_setSelected(&ps->panel, i); return; }
    App_status(a, 1, "no stage matches '%s'", q);
}

static void PipelineScreen_destroy(Screen *s) { free(s); }

/* The handlers the main loop calls (Screen.h). */
static const Screen PipelineScreen_class = {
    .name = "Pipeline", .keys = keys, .help = help, .load = PipelineScreen_load,
    .tick = PipelineScreen_load, .draw = PipelineScreen_draw, .onKey = PipelineScreen_onKey,
    .search = PipelineScreen_search, .destroy = PipelineScreen_destroy, .stale = 1,
};

Screen *PipelineScreen_new(void) {
    PipelineScreen *ps = Screen_alloc(&PipelineScreen_class, sizeof *ps);
    static char header[96];
    snprintf(header, sizeof header, " %-13s%-9s%-23s%-8s%-11s%s", "Stage", "State", "Progress",
             "Elapsed", "ETA", "Message");
    Panel_init(&ps->panel, header, PipelineScreen_drawRow, ps);
    return &ps->super;
}
