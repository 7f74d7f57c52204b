/* results: reads of what the stages stored that both the dashboard (ui/) and the report
 * (src/stages/report*.c) show: a metric's per-step series (metrics_log) and the usage of one
 * codebook (tokens). Each statement is finalized before returning; a missing table gives
 * an empty result, never an error. */
#ifndef TOKENREC_RESULTS_H
#define TOKENREC_RESULTS_H
#include <sqlite3.h>
#include <stdint.h>

/* The (step, value) series of a metric of a run, in step order, NULL values left out
 * (malloc'd arrays; both NULL when empty). Returns the number of points. */
int results_series(sqlite3 *db, int64_t run, const char *name, double **steps, double **values);

/* Usage of the codes of one codebook: (*counts)[code] = how many entities of the type
 * use it (malloc'd). Returns the codebook size seen (max code + 1), 0 when none. */
int results_code_usage(sqlite3 *db, int64_t run, const char *entity, int book, int64_t **counts);

#endif
