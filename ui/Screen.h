/* Screen: what every screen of the dashboard offers to the main loop (ui.c), and App, the
 * state they share: the database, the dataset, the status line. Each screen is a struct
 * whose first member is a Screen, with its own panels and data. */
#ifndef TOKENREC_UI_SCREEN_H
#define TOKENREC_UI_SCREEN_H
#include <sqlite3.h>
#include <stdint.h>
#include <sys/types.h>
#include "FunctionBar.h"
#include "util.h"

#define APP_MAX_DATASETS 32
#define APP_MAX_CHILDREN 16

typedef struct App App;
typedef struct Screen Screen;

struct Screen {
    const char *name;
    const FunctionKey *keys;            /* the bottom bar */
    const char *const *help;            /* lines for the help overlay, NULL-terminated */
    void (*load)(Screen *s, App *a);    /* (re)read after the dataset or database changed */
    void (*tick)(Screen *s, App *a);    /* about once a second while shown; may be NULL */
    void (*draw)(Screen *s, App *a, int y, int x, int h, int w);
    int  (*onKey)(Screen *s, App *a, int ch);           /* 1 when handled */
    void (*search)(Screen *s, App *a, const char *q);   /* NULL: nothing to search */
    void (*destroy)(Screen *s);
    int stale;                          /* load before the next draw */
};

struct App {
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
};

void App_status(App *a, int error, const char *fmt, ...) TR_PRINTF(3, 4);
/* Draw what to do when there is no database or no dataset; 1 if it did (nothing to show). */
int  App_drawMissing(App *a, int y, int x, int h, int w);

Screen *PipelineScreen_new(void);
Screen *DatasetScreen_new(void);
Screen *UsersScreen_new(void);
Screen *ItemsScreen_new(void);
Screen *TrainingScreen_new(void);

#endif
