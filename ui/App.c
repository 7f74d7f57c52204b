/* App.c: the dashboard's shared state: the status line, the missing-data message, the
 * launched children. */
#include "App.h"
#include "CRT.h"
#include <stdarg.h>
#include <stdio.h>

void App_status(App *a, int error, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(a->status, sizeof a->status, fmt, ap);
    va_end(ap);
    a->status_attr = error ? CRT_colors[C_ERROR] : CRT_colors[C_INFO];
    a->status_at = tr_monotonic();
}

int App_drawMissing(App *a, int y, int x, int h, int w) {
    if (h < 1) return 1;
    if (!a->db) {
        CRT_printf(y + 1, x + 2, w - 4, CRT_colors[C_ERROR], "%s", a->dberror);
        CRT_printf(y + 3, x + 2, w - 4, CRT_colors[C_DEFAULT], "run tokenrec ingest --dataset lastfm --db %s",
                   a->dbpath);
        CRT_print(y + 4, x + 2, w - 4, CRT_colors[C_DIM], "(or press Enter on ingest in the Pipeline screen, key 1)");
        return 1;
    }
    if (!a->dataset[0]) {
        CRT_printf(y + 1, x + 2, w - 4, CRT_colors[C_DEFAULT], "%s holds no dataset yet.", a->dbpath);
        CRT_printf(y + 3, x + 2, w - 4, CRT_colors[C_DEFAULT], "run tokenrec ingest --dataset lastfm --db %s",
                   a->dbpath);
        return 1;
    }
    if (a->dsid < 0) {
        CRT_printf(y + 1, x + 2, w - 4, CRT_colors[C_DEFAULT], "Dataset %s is not in %s yet.", a->dataset, a->dbpath);
        CRT_printf(y + 3, x + 2, w - 4, CRT_colors[C_DEFAULT], "run tokenrec ingest --dataset %s --db %s",
                   a->dataset, a->dbpath);
        return 1;
    }
    return 0;
}

void App_addChild(App *a, pid_t pid, const char *stage) {
    for (int i = 0; i < APP_MAX_CHILDREN; i++) {
        if (a->children[i].pid) continue;
        a->children[i].pid = pid;
        snprintf(a->children[i].stage, sizeof a->children[i].stage, "%s", stage);
        return;
    }
}
