/* DatasetScreen: the statistics of the dataset and histograms of sequence length (users)
 * and item popularity (interactions per item, in powers of two: it has a long tail). */
#include "Bins.h"
#include "CRT.h"
#include "Format.h"
#include "Histogram.h"
#include "Queries.h"
#include "Screen.h"
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

typedef struct {
    Screen super;
    DatasetInfo di;
    int ok;
    int linear_pop;             /* 'l' toggles linear bins for popularity */
} DatasetScreen;

static const FunctionKey keys[] = {
    {"l", "Lin/log"}, {"d", "Dataset"}, {"r", "Reload"}, {"Tab", "Screen"}, {"?", "Help"},
    {"q", "Quit"}, {NULL, NULL}};

static const char *const help[] = {
    "Dataset: statistics, split sizes and histograms",
    "  l           item popularity in linear or power-of-two bins",
    "  r           read the dataset again",
    NULL};

static void DatasetScreen_load(Screen *s, App *a) {
    DatasetScreen *ds = (DatasetScreen *)s;
    DatasetInfo_free(&ds->di);
    ds->ok = a->db && a->dataset[0] && Queries_dataset(a->db, a->dataset, &ds->di) == 0;
    tr_error_clear();
}

static void DatasetScreen_draw(Screen *s, App *a, int y, int x, int h, int w) {
    DatasetScreen *ds = (DatasetScreen *)s;
    if (App_drawMissing(a, y, x, h, w)) return;
    if (!ds->ok) { CRT_print(y + 1, x + 1, w - 2, CRT_colors[C_ERROR], "cannot read the dataset"); return; }
    const DatasetInfo *di = &ds->di;
    char b1[32], b2[32], b3[32], when[32];
    time_t t = (time_t)di->ingested_at;
    strftime(when, sizeof when, "%Y-%m-%d %H:%M", localtime(&t));
    int r = y;
    CRT_printf(r++, x + 1, w - 2, CRT_colors[C_TITLE], "Dataset %s  (%s, ingested %s)", a->dataset,
               di->format, when);
    CRT_printf(r++, x + 1, w - 2, CRT_colors[C_DIM], "source %s", di->source);
    CRT_printf(r++, x + 1, w - 2, CRT_colors[C_DEFAULT], "users %s   items %s   interactions %s   density %.4f%%",
               Format_count(di->n_users, b1, sizeof b1), Format_count(di->n_items, b2, sizeof b2),
               Format_count(di->n, b3, sizeof b3), 100 * di->density);
    CRT_printf(r++, x + 1, w - 2, CRT_colors[C_DEFAULT], "sequence length   min %d   median %d   mean %.1f   max %d",
               di->len_min, di->len_median, di->len_mean, di->len_max);
    CRT_printf(r++, x + 1, w - 2, CRT_colors[C_DEFAULT], "split   train %s   valid %s   test %s   timestamps %s",
               Format_count(di->n_train, b1, sizeof b1), Format_count(di->n_valid, b2, sizeof b2),
               Format_count(di->n_test, b3, sizeof b3), di->has_ts ? "yes" : "no (file order)");
    r++;
    int hh = y + h - r;
    if (hh < 3) return;
    int half = w / 2;
    Bins b;
    Bins_linear(&b, di->seq_len, (size_t)di->n_users, hh - 1);
    Histogram_draw(r, x + 1, hh, half - 2, "Sequence length (users per length)", &b);
    if (ds->linear_pop) Bins_linear(&b, di->popularity, (size_t)di->n_items, hh - 1);
    else Bins_log2(&b, di->popularity, (size_t)di->n_items, hh - 1);
    Histogram_draw(r, x + half + 1, hh, w - half - 2,
                   ds->linear_pop ? "Item popularity (items per count)" : "Item popularity (items, log2 bins)", &b);
}

static int DatasetScreen_onKey(Screen *s, App *a, int ch) {
    DatasetScreen *ds = (DatasetScreen *)s;
    if (ch == 'l') { ds->linear_pop = !ds->linear_pop; return 1; }
    if (ch == 'r') { DatasetScreen_load(s, a); App_status(a, 0, "reloaded %s", a->dataset); return 1; }
    return 0;
}

static void DatasetScreen_destroy(Screen *s) {
    DatasetInfo_free(&((DatasetScreen *)s)->di);
    free(s);
}

/* The handlers the main loop calls (Screen.h). */
static const Screen DatasetScreen_class = {
    .name = "Dataset", .keys = keys, .help = help, .load = DatasetScreen_load,
    .draw = DatasetScreen_draw, .onKey = DatasetScreen_onKey, .destroy = DatasetScreen_destroy,
    .stale = 1,
};

Screen *DatasetScreen_new(void) {
    DatasetScreen *ds = Screen_alloc(&DatasetScreen_class, sizeof *ds);
    return &ds->super;
}
