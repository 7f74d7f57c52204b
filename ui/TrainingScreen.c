/* TrainingScreen: the runs that logged metrics, and for the selected run a chart per metric
 * (loss first) from metrics_log, re-read about once a second so a running stage's curves
 * grow while one watches. */
#include "CRT.h"
#include "Chart.h"
#include "Panel.h"
#include "Queries.h"
#include "Screen.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_CHARTS 16

typedef struct {
    Screen super;
    Panel list;
    RunRow *runs;
    int nruns;
    int64_t shown;              /* run whose series are loaded */
    char **names;
    int nnames;
    double *steps[MAX_CHARTS], *values[MAX_CHARTS];
    int n[MAX_CHARTS];
    int first;                  /* first metric shown (PgDn/PgUp in the detail) */
    int focus;
} TrainingScreen;

static const FunctionKey keys[] = {
    {"↑↓", "Run"}, {"n/p", "Metrics"}, {"d", "Dataset"}, {"Tab", "Screen"}, {"?", "Help"},
    {"q", "Quit"}, {NULL, NULL}};

static const char *const help[] = {
    "Training: loss and metric curves of a run, from metrics_log, updated live",
    "  Up/Down, j/k   choose the run",
    "  n, p          next or previous metrics when they do not all fit",
    "  /             find a run by id or stage",
    NULL};

static void TrainingScreen_listRow(Panel *p, int row, int y, int x, int w, int sel) {
    TrainingScreen *ts = p->data;
    const RunRow *r = &ts->runs[row];
    int a = sel ? CRT_colors[sel == 1 ? C_SELECTED : C_SELECTED_DIM] : CRT_colors[C_DEFAULT];
    int sa = sel ? a : CRT_colors[!strcmp(r->status, "running") ? C_ST_RUNNING : !strcmp(r->status, "done")
                                  ? C_ST_DONE : !strcmp(r->status, "failed") ? C_ST_FAILED : C_ST_STOPPED];
    int c = CRT_printf(y, x, w, a, "%4lld %-9s", (long long)r->id, r->stage);
    CRT_print(y, x + c, w - c, sa, r->status);
}

static void TrainingScreen_freeSeries(TrainingScreen *ts) {
    for (int i = 0; i < MAX_CHARTS; i++) { free(ts->steps[i]); free(ts->values[i]); ts->steps[i] = ts->values[i] = NULL; ts->n[i] = 0; }
    for (int i = 0; i < ts->nnames; i++) free(ts->names[i]);
    free(ts->names);
    ts->names = NULL;
    ts->nnames = 0;
}

/* Re-read the selected run's metric names and series. */
static void TrainingScreen_loadSeries(TrainingScreen *ts, App *a) {
    TrainingScreen_freeSeries(ts);
    ts->shown = 0;
    if (!ts->nruns || !a->db) return;
    ts->shown = ts->runs[ts->list.selected].id;
    ts->nnames = Queries_metricNames(a->db, ts->shown, &ts->names);
    if (ts->first >= ts->nnames) ts->first = 0;
    for (int i = 0; i < MAX_CHARTS && ts->first + i < ts->nnames; i++)
        ts->n[i] = Queries_series(a->db, ts->shown, ts->names[ts->first + i], &ts->steps[i], &ts->values[i]);
}

static void TrainingScreen_load(Screen *s, App *a) {
    TrainingScreen *ts = (TrainingScreen *)s;
    int64_t keep = ts->nruns ? ts->runs[ts->list.selected].id : 0;
    free(ts->runs);
    ts->runs = NULL;
    ts->nruns = 0;
    if (a->db && a->dataset[0]) ts->nruns = Queries_metricRuns(a->db, a->dataset, &ts->runs);
    Panel_setCount(&ts->list, ts->nruns);
    for (int i = 0; i < ts->nruns; i++) if (ts->runs[i].id == keep) Panel_setSelected(&ts->list, i);
    TrainingScreen_loadSeries(ts, a);
    tr_error_clear();
}

static void TrainingScreen_draw(Screen *s, App *a, int y, int x, int h, int w) {
    TrainingScreen *ts = (TrainingScreen *)s;
    if (App_drawMissing(a, y, x, h, w)) return;
    int lw = 24;
    Panel_resize(&ts->list, x, y, lw, h);
    Panel_draw(&ts->list, 1);
    int dx = x + lw + 1, dw = w - lw - 1;
    if (!ts->nruns) {
        CRT_print(y + 1, dx, dw, CRT_colors[C_DIM], "No run has logged metrics yet.");
        CRT_wrap(y + 2, dx, h - 2, dw, CRT_colors[C_DIM], "Curves appear here while cf or finetune "
                 "train (launch them on the Pipeline screen).");
        return;
    }
    if (ts->runs[ts->list.selected].id != ts->shown) TrainingScreen_loadSeries(ts, a);
    int fit = h / 7 > 0 ? h / 7 : 1;
    int shown = ts->nnames - ts->first < fit ? ts->nnames - ts->first : fit;
    if (shown > MAX_CHARTS) shown = MAX_CHARTS;
    if (shown <= 0) return;
    int ch = h / shown;
    for (int i = 0; i < shown; i++) {
        char title[160];
        snprintf(title, sizeof title, "%s (run %lld)", ts->names[ts->first + i], (long long)ts->shown);
        Chart_draw(y + i * ch, dx, ch, dw, title, ts->steps[i], ts->values[i], ts->n[i]);
    }
    if (ts->nnames > shown)
        CRT_printf(y + h - 1, x, lw, CRT_colors[C_DIM], "metrics %d-%d of %d (n/p)", ts->first + 1,
                   ts->first + shown, ts->nnames);
}

static int TrainingScreen_onKey(Screen *s, App *a, int ch) {
    TrainingScreen *ts = (TrainingScreen *)s;
    if (ch == 'n' && ts->first + 1 < ts->nnames) { ts->first++; TrainingScreen_loadSeries(ts, a); return 1; }
    if (ch == 'p' && ts->first > 0) { ts->first--; TrainingScreen_loadSeries(ts, a); return 1; }
    if (Panel_onKey(&ts->list, ch)) { ts->first = 0; TrainingScreen_loadSeries(ts, a); return 1; }
    return 0;
}

static void TrainingScreen_search(Screen *s, App *a, const char *q) {
    TrainingScreen *ts = (TrainingScreen *)s;
    for (int i = 0; i < ts->nruns; i++) {
        char id[32];
        snprintf(id, sizeof id, "%lld", (long long)ts->runs[i].id);
        if (!strcmp(id, q) || strstr(ts->runs[i].stage, q)) {
            Panel_setSelected(&ts->list, i);
            TrainingScreen_loadSeries(ts, a);
            return;
        }
    }
    App_status(a, 1, "no run matches '%s'", q);
}

static void TrainingScreen_destroy(Screen *s) {
    TrainingScreen *ts = (TrainingScreen *)s;
    TrainingScreen_freeSeries(ts);
    free(ts->runs);
    free(ts);
}

/* The handlers the main loop calls (Screen.h). */
static const Screen TrainingScreen_class = {
    .name = "Training", .keys = keys, .help = help, .load = TrainingScreen_load,
    .tick = TrainingScreen_load, .draw = TrainingScreen_draw, .onKey = TrainingScreen_onKey,
    .search = TrainingScreen_search, .destroy = TrainingScreen_destroy, .stale = 1,
};

Screen *TrainingScreen_new(void) {
    TrainingScreen *ts = Screen_alloc(&TrainingScreen_class, sizeof *ts);
    Panel_init(&ts->list, "  run stage    status", TrainingScreen_listRow, ts);
    return &ts->super;
}
