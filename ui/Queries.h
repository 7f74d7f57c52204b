/* Queries: every read the dashboard makes, without ncurses, so each can be tested on a
 * small database. Each function runs its statements to the end and finalizes them before
 * returning, so no read transaction stays open while the dashboard waits for a key and a
 * running stage is never blocked (the database is in WAL mode). Tables that a later stage
 * creates (tokens, recommendations, cf_vectors) may be missing: the functions then return
 * empty results, never an error. */
#ifndef TOKENREC_UI_QUERIES_H
#define TOKENREC_UI_QUERIES_H
#include <sqlite3.h>
#include <stdint.h>
#include "stage.h"

#define Q_MAX_BOOKS 8

/* One stage on one dataset, for the pipeline screen. */
typedef struct {
    int         stage;                  /* STAGE_INGEST.. */
    stage_state state;
    int64_t     run;                    /* 0 when never run */
    double      progress;
    int64_t     pid;
    double      started_at, updated_at, ended_at;   /* ended_at 0 while unfinished */
    char        message[256];
    char        error[512];
    char        params[512];
    int64_t     upstream_run;
} StageInfo;

int Queries_stage(sqlite3 *db, const char *dataset, int stage, StageInfo *si);

/* Names of the datasets (most recently ingested first); returns how many (<= max). */
int Queries_datasets(sqlite3 *db, char (*names)[128], int max);

typedef struct {
    int64_t id;
    int     n_users, n_items;
    int64_t n, n_train, n_valid, n_test;
    double  density;
    int     len_min, len_median, len_max;
    double  len_mean;
    int     has_ts;
    double  ingested_at;
    char    source[256], format[64];
    int64_t *seq_len;                   /* n_users: interactions per user */
    int64_t *popularity;                /* n_items: interactions per item */
} DatasetInfo;

/* Statistics, sequence lengths and item popularity; -1 with tr_error if no such dataset. */
int  Queries_dataset(sqlite3 *db, const char *dataset, DatasetInfo *di);
void DatasetInfo_free(DatasetInfo *di);

/* Users and items for the list panels. */
typedef struct { int id; int len; char *orig; char *name; } EntityRow;
int  Queries_users(sqlite3 *db, int64_t dsid, EntityRow **rows);     /* count; len = interactions */
int  Queries_items(sqlite3 *db, int64_t dsid, EntityRow **rows);     /* count; len = popularity */
void EntityRow_free(EntityRow *rows, int n);

/* Look a user up: "#N" is uid N; otherwise an exact orig_id, then (for a number) a uid.
 * Returns the uid or -1. */
int Queries_findUser(sqlite3 *db, int64_t dsid, const char *q);
/* Items: "#N" is iid N; otherwise an exact orig_id, a number as iid, then the first item
 * whose name contains q (case-insensitive). -1 when none. */
int Queries_findItem(sqlite3 *db, int64_t dsid, const char *q);

/* A user's history, in order. */
typedef struct { int pos; int iid; int split; int64_t ts; char *name; char *orig; } HistRow;
int  Queries_history(sqlite3 *db, int64_t dsid, int uid, HistRow **rows);
void HistRow_free(HistRow *rows, int n);

/* The current tokenize run of a dataset (0 when none or when there is no tokens table). */
int64_t Queries_tokenRun(sqlite3 *db, const char *dataset);
/* The codes of entity ('user' or 'item') idx in run: fills codes[0..K) by book, returns K
 * (0 when it has none). */
int Queries_tokens(sqlite3 *db, int64_t run, const char *entity, int idx, int *codes);

/* The test prompt of a user: its token string and the token strings of its history before
 * the test item (the last `limit`), or NULL when the user or the items have no tokens. */
char *Queries_prompt(sqlite3 *db, int64_t dsid, int64_t run, int uid, int limit);

/* The top recommendations of a user by the current evaluate run. mark: 1 if the item is
 * the user's held-out valid item, 2 if the test item, else 0. */
typedef struct { int rank; int iid; double score; int mark; char *name; } RecRow;
int64_t Queries_recRun(sqlite3 *db, const char *dataset);   /* 0 when none */
int  Queries_recs(sqlite3 *db, int64_t dsid, int64_t run, int uid, int limit, RecRow **rows);
void RecRow_free(RecRow *rows, int n);

/* Items sharing tokens with iid in run: shared = how many of its codes they share (books in
 * the same position), most first, then by iid. */
typedef struct { int iid; int shared; char *name; } ShareRow;
int  Queries_sharing(sqlite3 *db, int64_t dsid, int64_t run, int iid, int limit, ShareRow **rows);
void ShareRow_free(ShareRow *rows, int n);

/* Usage of the codes of one codebook: counts[code] = how many entities use it; returns the
 * codebook size seen (max code + 1), 0 when none. Books: Queries_books. */
int Queries_books(sqlite3 *db, int64_t run, const char *entity);
int Queries_codeUsage(sqlite3 *db, int64_t run, const char *entity, int book, int64_t **counts);

/* Groups of entities with identical codes: key is the code string "a-b-c", members the ids. */
typedef struct { char key[64]; int n; int *members; } Collision;
int  Queries_collisions(sqlite3 *db, int64_t run, const char *entity, Collision **rows);
void Collision_free(Collision *rows, int n);

/* Runs of a dataset that logged metrics, latest first. */
typedef struct { int64_t id; char stage[32]; char status[16]; int64_t points; } RunRow;
int Queries_metricRuns(sqlite3 *db, const char *dataset, RunRow **rows);
/* Names of the metrics of a run (sorted; 'loss' first); caller frees each and the array. */
int Queries_metricNames(sqlite3 *db, int64_t run, char ***names);
/* The (step, value) series of a metric, in step order. */
int Queries_series(sqlite3 *db, int64_t run, const char *name, double **steps, double **values);

/* The argv (NULL-terminated, malloc'd strings) that launches stage on dataset:
 * exe STAGE --db DB --dataset NAME [--force], and for ingest of a dataset read from the
 * user's own file, the --file and settings of its last ingest run. */
char **Queries_launchArgv(sqlite3 *db, const char *exe, const char *dbpath, const char *dataset,
                          int stage, int force);
void   Queries_freeArgv(char **argv);

#endif
