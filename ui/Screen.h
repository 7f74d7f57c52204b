/* Screen: what every screen of the dashboard offers to the main loop (ui.c). Each screen is
 * a struct whose first member is a Screen, with its own panels and data; its handlers are
 * named Type_verb (PipelineScreen_draw, ...). The state they share is App (App.h). */
#ifndef TOKENREC_UI_SCREEN_H
#define TOKENREC_UI_SCREEN_H
#include <stddef.h>
#include "App.h"
#include "FunctionBar.h"

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

/* A new screen: size zeroed bytes (a struct whose first member is a Screen), the Screen a
 * copy of the type's class. */
void *Screen_alloc(const Screen *cls, size_t size);

Screen *PipelineScreen_new(void);
Screen *DatasetScreen_new(void);
Screen *UsersScreen_new(void);
Screen *ItemsScreen_new(void);
Screen *TrainingScreen_new(void);

#endif
