/* db: the one place that opens the SQLite database. It applies the numbered migrations of
 * schema/ through PRAGMA user_version, turns on WAL, foreign keys and a busy timeout, and
 * offers the few helpers every stage needs (transactions, float vectors as BLOBs). */
#ifndef TOKENREC_DB_H
#define TOKENREC_DB_H
#include <sqlite3.h>
#include <stdint.h>

#define DB_DEFAULT_PATH "tokenrec.db"

/* Open (creating if needed, unless readonly) and migrate. NULL on error, with tr_errmsg()
 * naming the file: not a database, not a tokenrec database, from a newer tokenrec, etc. */
sqlite3 *db_open(const char *path, int readonly);
void     db_close(sqlite3 *db);
int      db_schema_latest(void);          /* the version this binary migrates to */

int db_exec(sqlite3 *db, const char *sql);            /* 0 or -1 with tr_error */
int db_begin(sqlite3 *db);                             /* BEGIN IMMEDIATE */
int db_commit(sqlite3 *db);
void db_rollback(sqlite3 *db);                         /* no-op outside a transaction */
sqlite3_stmt *db_prep(sqlite3 *db, const char *sql);  /* NULL with tr_error */
int db_step_done(sqlite3 *db, sqlite3_stmt *st);       /* step expecting SQLITE_DONE; resets */

/* First column of the first row as an integer, or def when there is no row. */
int64_t db_query_i64(sqlite3 *db, int64_t def, const char *sql, ...);
int     db_table_exists(sqlite3 *db, const char *name);

/* One run_metrics row (INSERT OR REPLACE), inside the caller's transaction if one is open. */
int db_put_metric(sqlite3 *db, int64_t run, const char *method, const char *split,
                  const char *metric, int k, double value);

/* Float vectors are stored as little-endian float32 BLOBs. */
int  db_bind_floats(sqlite3_stmt *st, int idx, const float *v, int n);
/* Copy column col (a BLOB of n floats) into out; -1 with tr_error if the size differs. */
int  db_column_floats(sqlite3_stmt *st, int col, float *out, int n);

/* Dataset helpers: the id of a dataset by name (-1 if absent, with tr_error), and the
 * name to use when --dataset is not given (the only or most recently ingested one). */
int64_t     db_dataset_id(sqlite3 *db, const char *name);
/* db_dataset_id, and the dataset's user and item counts into *n_users and *n_items. */
int64_t     db_dataset_sizes(sqlite3 *db, const char *name, int32_t *n_users, int32_t *n_items);
const char *db_default_dataset(sqlite3 *db, char *buf, int len);

#endif
