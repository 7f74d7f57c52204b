/* App: the state every screen of the dashboard shares (the database, the dataset, the
 * status line, the launched stage processes) and the few things a screen asks of it. The
 * screens depend on App, not on the main loop (ui.c). */
#ifndef TOKENREC_UI_APP_H
#define TOKENREC_UI_APP_H
#include <sqlite3.h>
#include <stdint.h>
#include <sys/types.h>
#include "util.h"

#define APP_MAX_DATASETS 32
#define APP_MAX_CHILDREN 16

typedef struct App {
    sqlite3 *db;                        /* NULL while the database is missing or unreadable */
    const char *dbpath;
    char dberror[512];
    char dataset[128];                  /* "" when the database holds none */
    int64_t dsid;
    char datasets[APP_MAX_DATASETS][128];
    int ndatasets;
    char exe[4096];
    char status[512];
    int status_attr;
    double status_at;
    struct { pid_t pid; char stage[32]; } children[APP_MAX_CHILDREN];
} App;

/* A message on the status line (error: in the error colour) for the next 15 seconds. */
void App_status(App *a, int error, const char *fmt, ...) TR_PRINTF(3, 4);
/* Draw what to do when there is no database or no dataset; 1 if it did (nothing to show). */
int  App_drawMissing(App *a, int y, int x, int h, int w);
/* Remember a launched stage process, so that its exit can be reported when it ends. */
void App_addChild(App *a, pid_t pid, const char *stage);

#endif
