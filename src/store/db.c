/* db.c: opening, migrating and small helpers over SQLite. */
#include "db.h"
#include "dist.h"
#include "util.h"
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

extern const int tr_schema_count;
extern const char *const tr_schema_names[];
extern const char *const tr_schema_sql[];

int db_schema_latest(void) { return tr_schema_count; }

int db_exec(sqlite3 *db, const char *sql) {
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        tr_error("database: %s", msg ? msg : sqlite3_errmsg(db));
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

/* IMMEDIATE takes the write lock now, so a writer never fails half-way on SQLITE_BUSY. */
int db_begin(sqlite3 *db) { return db_exec(db, "BEGIN IMMEDIATE"); }
int db_commit(sqlite3 *db) { return db_exec(db, "COMMIT"); }

void db_rollback(sqlite3 *db) {
    if (!sqlite3_get_autocommit(db)) sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
}

sqlite3_stmt *db_prep(sqlite3 *db, const char *sql) {
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        tr_error("database: %s (in: %.80s)", sqlite3_errmsg(db), sql);
        return NULL;
    }
    return st;
}

int db_step_done(sqlite3 *db, sqlite3_stmt *st) {
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW)
        return tr_error("database: %s", sqlite3_errmsg(db));
    return 0;
}

int64_t db_query_i64(sqlite3 *db, int64_t def, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *sql = sqlite3_vmprintf(fmt, ap);
    va_end(ap);
    sqlite3_stmt *st = sql ? db_prep(db, sql) : NULL;
    sqlite3_free(sql);
    if (!st) return def;
    int64_t v = def;
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

int db_table_exists(sqlite3 *db, const char *name) {
    return db_query_i64(db, 0, "SELECT count(*) FROM sqlite_master WHERE type='table' AND name=%Q",
                        name) > 0;
}

int db_put_metric(sqlite3 *db, int64_t run, const char *method, const char *split,
                  const char *metric, int k, double value) {
    sqlite3_stmt *st = db_prep(db, "INSERT OR REPLACE INTO run_metrics (run_id, method, split, metric, k, value) "
                                   "VALUES (?,?,?,?,?,?)");
    if (!st) return -1;
    sqlite3_bind_int64(st, 1, run);
    sqlite3_bind_text(st, 2, method, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, split, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, metric, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 5, k);
    sqlite3_bind_double(st, 6, value);
    int rc = db_step_done(db, st);
    sqlite3_finalize(st);
    return rc;
}

/* Refuse a newer tokenrec's database or somebody else's SQLite database before anything
 * is written to it (journal_mode = WAL alone rewrites the file header). */
static int check_ours(sqlite3 *db, const char *path) {
    int64_t v = db_query_i64(db, -1, "PRAGMA user_version");
    if (v < 0) return tr_error("%s: cannot read the schema version: %s", path, tr_errmsg());
    if (v > tr_schema_count)
        return tr_error("%s: the database has schema version %lld but this tokenrec knows only "
                        "up to %d; use a newer tokenrec", path, (long long)v, tr_schema_count);
    if (v == 0) {
        /* A non-empty database without our version is somebody else's file. */
        int64_t n = db_query_i64(db, 0, "SELECT count(*) FROM sqlite_master");
        if (n > 0)
            return tr_error("%s: this is an SQLite database but not a tokenrec database "
                            "(it has %lld schema objects and no tokenrec version)", path,
                            (long long)n);
    }
    return 0;
}

/* Apply each migration newer than user_version in its own transaction, bumping the
 * version inside the same transaction, so a crash leaves a whole migration or none. */
static int migrate(sqlite3 *db, const char *path) {
    if (check_ours(db, path) != 0) return -1;
    int64_t v = db_query_i64(db, -1, "PRAGMA user_version");
    for (int i = (int)v; i < tr_schema_count; i++) {
        if (db_begin(db) != 0) return tr_error("%s: %s", path, tr_errmsg());
        char pragma[64];
        snprintf(pragma, sizeof pragma, "PRAGMA user_version = %d", i + 1);
        if (db_exec(db, tr_schema_sql[i]) != 0 || db_exec(db, pragma) != 0) {
            char msg[512];
            snprintf(msg, sizeof msg, "%s", tr_errmsg());
            db_rollback(db);
            return tr_error("%s: migration %s failed: %s", path, tr_schema_names[i], msg);
        }
        if (db_commit(db) != 0) return tr_error("%s: %s", path, tr_errmsg());
    }
    return 0;
}

sqlite3 *db_open(const char *path, int readonly) {
    sqlite3 *db = NULL;
    if (dist_rank() != 0) {     /* under mpirun, rank 0 alone touches the database */
        tr_error("rank %d of %d tried to open the database %s: only rank 0 may", dist_rank(), dist_size(),
                 path && *path ? path : DB_DEFAULT_PATH);
        return NULL;
    }
    int flags = readonly ? SQLITE_OPEN_READONLY : (SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
    if (!path || !*path) path = DB_DEFAULT_PATH;
    if (readonly && !tr_file_exists(path)) {
        tr_error("%s: no such database (run 'tokenrec ingest' first)", path);
        return NULL;
    }
    int rc = sqlite3_open_v2(path, &db, flags, NULL);
    if (rc != SQLITE_OK) {
        tr_error("%s: cannot open database: %s", path, db ? sqlite3_errmsg(db) : "out of memory");
        sqlite3_close(db);
        return NULL;
    }
    sqlite3_busy_timeout(db, 10000);
    sqlite3_extended_result_codes(db, 1);
    /* The first read tells a non-database file apart (SQLITE_NOTADB). */
    char *msg = NULL;
    rc = sqlite3_exec(db, "SELECT count(*) FROM sqlite_master", NULL, NULL, &msg);
    if (rc != SQLITE_OK) {
        if ((rc & 0xff) == SQLITE_NOTADB)
            tr_error("%s: not an SQLite database (is it the right file?)", path);
        else
            tr_error("%s: %s", path, msg ? msg : sqlite3_errmsg(db));
        sqlite3_free(msg);
        sqlite3_close(db);
        return NULL;
    }
    if (!readonly) {
        if (check_ours(db, path) != 0) {
            sqlite3_close(db);
            return NULL;
        }
        if (db_exec(db, "PRAGMA journal_mode = WAL") != 0 ||
            db_exec(db, "PRAGMA synchronous = NORMAL") != 0) {
            tr_error("%s: %s", path, tr_errmsg());
            sqlite3_close(db);
            return NULL;
        }
    }
    if (db_exec(db, "PRAGMA foreign_keys = ON") != 0) {
        sqlite3_close(db);
        return NULL;
    }
    if (readonly) {
        int64_t v = db_query_i64(db, -1, "PRAGMA user_version");
        if (v > tr_schema_count || v <= 0) {
            tr_error(v <= 0 ? "%s: not a tokenrec database" :
                     "%s: the database is from a newer tokenrec (schema %lld)", path, (long long)v);
            sqlite3_close(db);
            return NULL;
        }
    } else if (migrate(db, path) != 0) {
        sqlite3_close(db);
        return NULL;
    }
    return db;
}

void db_close(sqlite3 *db) {
    if (db) sqlite3_close_v2(db);
}

int db_bind_floats(sqlite3_stmt *st, int idx, const float *v, int n) {
    return sqlite3_bind_blob(st, idx, v, n * (int)sizeof(float), SQLITE_TRANSIENT) == SQLITE_OK ? 0
           : tr_error("database: cannot bind a vector");
}

int db_column_floats(sqlite3_stmt *st, int col, float *out, int n) {
    int bytes = sqlite3_column_bytes(st, col);
    const void *p = sqlite3_column_blob(st, col);
    if (bytes != n * (int)sizeof(float) || (!p && n > 0))
        return tr_error("database: vector of %d bytes where %d floats were expected", bytes, n);
    memcpy(out, p, (size_t)bytes);
    return 0;
}

int64_t db_dataset_id(sqlite3 *db, const char *name) {
    int64_t id = db_query_i64(db, -1, "SELECT id FROM datasets WHERE name = %Q", name);
    if (id < 0) tr_error("dataset '%s' is not in the database (run 'tokenrec ingest --dataset %s')",
                         name, name);
    return id;
}

int64_t db_dataset_sizes(sqlite3 *db, const char *name, int32_t *n_users, int32_t *n_items) {
    int64_t id = db_dataset_id(db, name);
    if (id < 0) return -1;
    *n_users = (int32_t)db_query_i64(db, 0, "SELECT n_users FROM datasets WHERE id=%lld", (long long)id);
    *n_items = (int32_t)db_query_i64(db, 0, "SELECT n_items FROM datasets WHERE id=%lld", (long long)id);
    return id;
}

const char *db_default_dataset(sqlite3 *db, char *buf, int len) {
    sqlite3_stmt *st = db_prep(db, "SELECT name FROM datasets ORDER BY ingested_at DESC LIMIT 1");
    const char *res = NULL;
    if (st && sqlite3_step(st) == SQLITE_ROW) {
        snprintf(buf, (size_t)len, "%s", (const char *)sqlite3_column_text(st, 0));
        res = buf;
    }
    sqlite3_finalize(st);
    if (!res) tr_error("the database holds no dataset yet (run 'tokenrec ingest --dataset lastfm')");
    return res;
}
