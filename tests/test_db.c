/* test_db.c: migrations through user_version, refusing foreign and newer databases,
 * vectors as BLOBs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>
#include "db.h"
#include "util.h"
#include "testutil.h"

static void fresh_database_is_migrated(void **state) {
    (void)state;
    sqlite3 *db = tu_db("m.db");
    assert_non_null(db);
    assert_int_equal(db_query_i64(db, -1, "PRAGMA user_version"), db_schema_latest());
    assert_true(db_table_exists(db, "stage_runs"));
    assert_true(db_table_exists(db, "interactions"));
    char *mode = NULL;
    sqlite3_stmt *st = db_prep(db, "PRAGMA journal_mode");
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    mode = tr_strdup((const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    assert_string_equal(mode, "wal");
    free(mode);
    assert_int_equal(db_query_i64(db, -1, "PRAGMA foreign_keys"), 1);
    db_close(db);
    /* reopening applies nothing new and keeps the version */
    char *p = tu_path("m.db");
    db = db_open(p, 0);
    assert_non_null(db);
    assert_int_equal(db_query_i64(db, -1, "PRAGMA user_version"), db_schema_latest());
    db_close(db);
    free(p);
}

static void newer_database_is_refused_unchanged(void **state) {
    (void)state;
    sqlite3 *db = tu_db("new.db");
    char sql[64];
    snprintf(sql, sizeof sql, "PRAGMA user_version = %d", db_schema_latest() + 1);
    assert_int_equal(db_exec(db, sql), 0);
    db_close(db);
    char *p = tu_path("new.db");
    assert_null(db_open(p, 0));
    assert_non_null(strstr(tr_errmsg(), "newer tokenrec"));
    assert_null(db_open(p, 1));
    free(p);
}

static void foreign_sqlite_and_garbage_are_refused(void **state) {
    (void)state;
    char *p = tu_path("other.db");
    sqlite3 *raw;
    assert_int_equal(sqlite3_open(p, &raw), SQLITE_OK);
    assert_int_equal(sqlite3_exec(raw, "CREATE TABLE t(x); INSERT INTO t VALUES (1);", 0, 0, 0), SQLITE_OK);
    sqlite3_close(raw);
    assert_null(db_open(p, 0));
    assert_non_null(strstr(tr_errmsg(), "not a tokenrec database"));
    /* the foreign table is still there and untouched */
    assert_int_equal(sqlite3_open(p, &raw), SQLITE_OK);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(raw, "SELECT count(*) FROM sqlite_master", -1, &st, 0), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(st, 0), 1);
    sqlite3_finalize(st);
    sqlite3_close(raw);

    char *g = tu_path("garbage.db");
    assert_int_equal(tu_write_file(g, "this is not a database, just text that is long enough to be a header..........................................."), 0);
    assert_null(db_open(g, 0));
    assert_non_null(strstr(tr_errmsg(), "not an SQLite database"));
    free(p); free(g);
}

static void missing_database_readonly(void **state) {
    (void)state;
    char *p = tu_path("absent.db");
    assert_null(db_open(p, 1));
    assert_non_null(strstr(tr_errmsg(), "tokenrec ingest"));
    free(p);
}

static void float_blobs_round_trip_and_size_checked(void **state) {
    (void)state;
    sqlite3 *db = tu_db("v.db");
    assert_int_equal(db_exec(db, "CREATE TEMP TABLE v(x BLOB)"), 0);
    float in[5] = {1.5f, -2.0f, 0.0f, 3.25f, 1e-7f}, out[5] = {0};
    sqlite3_stmt *st = db_prep(db, "INSERT INTO v VALUES (?)");
    assert_int_equal(db_bind_floats(st, 1, in, 5), 0);
    assert_int_equal(db_step_done(db, st), 0);
    sqlite3_finalize(st);
    st = db_prep(db, "SELECT x FROM v");
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_int_equal(db_column_floats(st, 0, out, 5), 0);
    assert_memory_equal(in, out, sizeof in);
    assert_int_equal(db_column_floats(st, 0, out, 4), -1);
    sqlite3_finalize(st);
    db_close(db);
}

static void transactions_roll_back(void **state) {
    (void)state;
    sqlite3 *db = tu_db("tx.db");
    assert_int_equal(db_begin(db), 0);
    assert_int_equal(db_exec(db, "INSERT INTO datasets (name, source, format, kcore, n_users, n_items, "
                                 "n_interactions, has_timestamps, ingested_at) VALUES ('d','s','f',5,1,1,1,0,0)"), 0);
    db_rollback(db);
    assert_int_equal(db_query_i64(db, -1, "SELECT count(*) FROM datasets"), 0);
    assert_int_equal(db_dataset_id(db, "d"), -1);
    assert_non_null(strstr(tr_errmsg(), "tokenrec ingest"));
    char buf[64];
    assert_null(db_default_dataset(db, buf, sizeof buf));
    db_close(db);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(fresh_database_is_migrated),
        cmocka_unit_test(newer_database_is_refused_unchanged),
        cmocka_unit_test(foreign_sqlite_and_garbage_are_refused),
        cmocka_unit_test(missing_database_readonly),
        cmocka_unit_test(float_blobs_round_trip_and_size_checked),
        cmocka_unit_test(transactions_roll_back),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
