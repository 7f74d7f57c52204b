/* stage_cmd.c: the command skeleton of stage.h, the opening every stage command shares. */
#include "stage.h"
#include "db.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int stage_cmd_open(stage_cmd *c, const char *dbpath, const char *dataset) {
    memset(c, 0, sizeof *c);
    if (!(c->db = db_open(dbpath, 0))) return -1;
    c->dataset = dataset ? dataset : db_default_dataset(c->db, c->dsbuf, sizeof c->dsbuf);
    if (!c->dataset) {
        db_close(c->db);
        c->db = NULL;
        return -1;
    }
    return 0;
}

int stage_cmd_begin(stage_cmd *c, const char *stage, char *params, const char *upstream, int force,
                    int quiet, const char *what) {
    const stage_def *def = stage_def_of(stage);
    if (!upstream && def) upstream = def->upstream;
    int b = stage_begin(&c->run, c->db, stage, c->dataset, params, upstream, force);
    free(params);
    if (b == STAGE_UP_TO_DATE && !quiet)
        fprintf(stderr, "[%s] %s is up to date (run %lld); --force runs it again\n", stage,
                what ? what : c->dataset, (long long)c->run.id);
    c->run.quiet = quiet;
    if (b == 0) stage_log_start(&c->run, quiet);   /* the run, and the kernels it computes with */
    return b;
}

int stage_cmd_close(stage_cmd *c, int rc) {
    db_close(c->db);
    c->db = NULL;
    return rc;
}
