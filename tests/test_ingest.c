/* test_ingest.c: readers, dedup, ordering, the k-core filter on a hand-worked example, the
 * split, names and encodings, and every kind of bad input (clear error, database unchanged). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "csvread.h"
#include "db.h"
#include "ingest.h"
#include "stage.h"
#include "util.h"
#include "testutil.h"

/* The items of user u as orig ids joined by spaces. */
static void seq_str(const ingest_data *d, int u, char *buf, size_t len) {
    buf[0] = 0;
    for (int64_t k = d->off[u]; k < d->off[u + 1]; k++) {
        size_t l = strlen(buf);
        snprintf(buf + l, len - l, "%s%s", k > d->off[u] ? " " : "", d->item_orig[d->item[k]]);
    }
}

/* Call cmd_ingest in this process with the given arguments (NULL-terminated). */
static int run_ingest_v(const char *first, ...) {
    char *argv[24] = {"ingest"};
    int argc = 1;
    va_list ap;
    va_start(ap, first);
    for (const char *a = first; a && argc < 23; a = va_arg(ap, const char *)) argv[argc++] = (char *)a;
    va_end(ap);
    argv[argc] = NULL;
    return cmd_ingest(argc, argv);
}
#define run_ingest(...) run_ingest_v(__VA_ARGS__, NULL)

static void sequence_reader_numbers_and_splits(void **state) {
    (void)state;
    char *p = tu_path("seq.txt");
    tu_write_file(p, "7 a b c d e\n3 c b a\n9 e d c b a f\n");
    ingest_raw r;
    ingest_raw_init(&r);
    assert_int_equal(ingest_read_sequence(&r, p), 0);
    assert_int_equal(r.n, 5 + 3 + 6);
    ingest_data d;
    assert_int_equal(ingest_build(&r, 1, 1, &d), 0);
    assert_int_equal(d.n_users, 3);
    assert_int_equal(d.n_items, 6);
    assert_string_equal(d.user_orig[0], "7");          /* users in file order */
    assert_string_equal(d.user_orig[2], "9");
    assert_string_equal(d.item_orig[5], "f");          /* items by first appearance */
    char s[128];
    seq_str(&d, 1, s, sizeof s);
    assert_string_equal(s, "c b a");                   /* order kept */
    assert_int_equal(ingest_split_of(0, 5), 0);
    assert_int_equal(ingest_split_of(3, 5), 1);
    assert_int_equal(ingest_split_of(4, 5), 2);
    assert_null(d.ts);
    ingest_raw_free(&r);
    ingest_data_free(&d);
    free(p);
}

/* Hand-worked 2-core: u1 {A,B,C}, u2 {A,B}, u3 {C,D}, u4 {D}.
 * Round 1: u4 (deg 1) goes; D keeps u3 only -> D (deg 1) goes in round 2 with it,
 * then u3 has {C} (deg 1) -> goes; C has u1 only -> goes; u1 {A,B}, u2 {A,B} remain. */
static void kcore_hand_worked(void **state) {
    (void)state;
    ingest_raw r;
    ingest_raw_init(&r);
    const char *pairs[][2] = {{"u1", "A"}, {"u1", "B"}, {"u1", "C"}, {"u2", "A"}, {"u2", "B"},
                              {"u3", "C"}, {"u3", "D"}, {"u4", "D"}};
    for (int i = 0; i < 8; i++) ingest_raw_add(&r, pairs[i][0], pairs[i][1], i);
    ingest_data d;
    assert_int_equal(ingest_build(&r, 2, 1, &d), 0);
    assert_int_equal(d.n_users, 2);
    assert_int_equal(d.n_items, 2);
    assert_int_equal(d.n, 4);
    assert_string_equal(d.user_orig[0], "u1");
    assert_string_equal(d.user_orig[1], "u2");
    ingest_data_free(&d);
    /* with k = 3 nothing survives: a clear error */
    assert_int_equal(ingest_build(&r, 3, 1, &d), -1);
    assert_non_null(strstr(tr_errmsg(), "3-core"));
    ingest_raw_free(&r);
}

static void duplicates_keep_first_and_time_order_is_stable(void **state) {
    (void)state;
    ingest_raw r;
    ingest_raw_init(&r);
    r.has_ts = 1;
    /* user x: b@20, a@10, c@20 (tie with b: file order), b@5 (duplicate: dropped) */
    ingest_raw_add(&r, "x", "b", 20000);
    ingest_raw_add(&r, "x", "a", 10000);
    ingest_raw_add(&r, "x", "c", 20000);
    ingest_raw_add(&r, "x", "b", 5000);
    ingest_data d;
    assert_int_equal(ingest_build(&r, 1, 1000, &d), 0);
    char s[64];
    seq_str(&d, 0, s, sizeof s);
    assert_string_equal(s, "a b c");
    assert_int_equal(d.ts[0], 10);          /* milliseconds to seconds */
    assert_int_equal(d.ts[2], 20);
    ingest_data_free(&d);
    ingest_raw_free(&r);
}

static void hetrec_ratings_and_delimited_readers(void **state) {
    (void)state;
    char *h = tu_path("tags.dat");
    tu_write_file(h, "userID\tartistID\ttagID\ttimestamp\r\n2\t51\t13\t1238536800000\r\n"
                     "2\t52\t15\t1238536700000\r\n2\t51\t14\t1238536900000\r\n");
    ingest_raw r;
    ingest_raw_init(&r);
    assert_int_equal(ingest_read_hetrec_lastfm(&r, h), 0);
    ingest_data d;
    assert_int_equal(ingest_build(&r, 1, 1000, &d), 0);
    char s[64];
    seq_str(&d, 0, s, sizeof s);
    assert_string_equal(s, "52 51");        /* 51's first row is kept, at 1238536800 */
    assert_int_equal(d.ts[1], 1238536800);
    ingest_data_free(&d);
    ingest_raw_free(&r);

    char *m = tu_path("ratings.dat");
    tu_write_file(m, "1::1193::5::978300760\n1::661::3::978302109\n1::914::3::978301968\n");
    ingest_raw_init(&r);
    assert_int_equal(ingest_read_ml1m_ratings(&r, m), 0);
    assert_int_equal(ingest_build(&r, 1, 1, &d), 0);
    seq_str(&d, 0, s, sizeof s);
    assert_string_equal(s, "1193 914 661");
    ingest_data_free(&d);
    ingest_raw_free(&r);

    char *c = tu_path("mine.csv");
    tu_write_file(c, "when,who,what\n300,alice,x\n100,alice,y\n200,bob,x\n");
    ingest_raw_init(&r);
    assert_int_equal(ingest_read_delimited(&r, c, ",", 1, 1, 2, 0), 0);
    assert_int_equal(ingest_build(&r, 1, 1, &d), 0);
    seq_str(&d, 0, s, sizeof s);
    assert_string_equal(s, "y x");
    ingest_data_free(&d);
    ingest_raw_free(&r);
    free(h); free(m); free(c);
}

static void names_utf8_latin1_and_unknown_encoding(void **state) {
    (void)state;
    ingest_raw r;
    ingest_raw_init(&r);
    ingest_raw_add(&r, "u", "1", 0);
    ingest_raw_add(&r, "u", "2", 1);
    ingest_data d;
    assert_int_equal(ingest_build(&r, 1, 1, &d), 0);
    char *n = tu_path("names.dat");
    tu_write_file(n, "1::Caf\xe9 (1995)::Drama\n2::Plain::Comedy\n3::Not kept::X\n");
    assert_int_equal(ingest_load_names(&d, n, "::", 0, 0, 1, "auto"), 0);
    assert_string_equal(d.item_name[0], "Caf\xc3\xa9 (1995)");
    assert_string_equal(d.item_name[1], "Plain");
    assert_int_equal(ingest_load_names(&d, n, "::", 0, 0, 1, "utf-8"), -1);
    assert_non_null(strstr(tr_errmsg(), "names.dat:1"));
    assert_int_equal(ingest_load_names(&d, n, "::", 0, 0, 1, "ebcdic"), -1);
    assert_non_null(strstr(tr_errmsg(), "unknown encoding"));
    assert_true(utf8_valid("Caf\xc3\xa9", 5));
    assert_false(utf8_valid("Caf\xc3", 4));
    assert_false(utf8_valid("\xc0\x80", 2));
    ingest_data_free(&d);
    ingest_raw_free(&r);
    free(n);
}

/* Each bad input: error naming file and line, non-zero status, the database unchanged. */
static void bad_inputs_leave_the_database_unchanged(void **state) {
    (void)state;
    char *dbp = tu_path("bad.db");
    char *good = tu_path("good.txt");
    tu_synthetic_file(good, 30, 40, 2, 6, 12, 1);
    assert_int_equal(run_ingest("--db", dbp, "--dataset", "mine", "--file", good, "--format", "sequence"), 0);
    sqlite3 *db = db_open(dbp, 0);
    int64_t runs = db_query_i64(db, -1, "SELECT count(*) FROM stage_runs");
    int64_t inter = db_query_i64(db, -1, "SELECT count(*) FROM interactions");
    int64_t dv = db_query_i64(db, -1, "SELECT ingested_at * 1000 FROM datasets");
    db_close(db);
    struct { const char *name, *text, *format, *expect; } cases[] = {
        {"empty.txt", "", "sequence", "empty"},
        {"short.txt", "u1 a b c\nu2\n", "sequence", "short.txt:2"},
        {"nonnum.tsv", "u1\ti1\t100\nu2\ti2\tlater\n", "delimited", "nonnum.tsv:2"},
        {"fewcols.tsv", "u1\ti1\t100\nu2\ti2\n", "delimited", "fewcols.tsv:2"},
        {"binary.txt", "u1 a\0b c\n", "sequence", "binary"},
        {"dupuser.txt", "u1 a b\nu1 c d\n", "sequence", "dupuser.txt:2"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char *p = tu_path(cases[i].name);
        FILE *f = fopen(p, "wb");
        size_t len = strlen(cases[i].text);
        if (!strcmp(cases[i].name, "binary.txt")) len = 9;
        fwrite(cases[i].text, 1, len, f);
        fclose(f);
        assert_int_equal(run_ingest("--db", dbp, "--dataset", "mine", "--file", p, "--format",
                                    cases[i].format), -1);
        if (!strstr(tr_errmsg(), cases[i].expect))
            fail_msg("case %s: message '%s' lacks '%s'", cases[i].name, tr_errmsg(), cases[i].expect);
        free(p);
    }
    assert_int_equal(run_ingest("--db", dbp, "--dataset", "mine", "--file", "/no/such/file", NULL, NULL), -1);
    assert_non_null(strstr(tr_errmsg(), "/no/such/file"));
    assert_int_equal(run_ingest("--db", dbp, "--dataset", "nosuch", "--data-dir", tu_tmpdir(), NULL, NULL), -1);
    assert_non_null(strstr(tr_errmsg(), "unknown dataset"));
    assert_int_equal(run_ingest("--db", dbp, "--dataset", "mine", "--file", good, "--format", "xml"), -1);
    assert_int_equal(run_ingest("--db", dbp, "--dataset", "mine", "--file", good, "--encoding", "klingon"), -1);
    db = db_open(dbp, 0);
    assert_int_equal(db_query_i64(db, -1, "SELECT count(*) FROM stage_runs"), runs);
    assert_int_equal(db_query_i64(db, -1, "SELECT count(*) FROM interactions"), inter);
    assert_int_equal(db_query_i64(db, -1, "SELECT ingested_at * 1000 FROM datasets"), dv);
    db_close(db);
    /* a bad input never creates a database that did not exist */
    char *nodb = tu_path("never.db");
    assert_int_equal(run_ingest("--db", nodb, "--dataset", "mine", "--file", "/no/such", NULL, NULL), -1);
    assert_int_equal(access(nodb, F_OK), -1);
    /* and through the binary: a non-zero exit status */
    assert_int_not_equal(tu_run("%s ingest --db %s --dataset mine --file /no/such/file 2>/dev/null", tu_bin(), dbp), 0);
    free(dbp); free(good); free(nodb);
}

static void reingest_replaces_and_marks_later_stages_stale(void **state) {
    (void)state;
    char *dbp = tu_path("re.db");
    char *f1 = tu_path("one.txt"), *f2 = tu_path("two.txt");
    tu_synthetic_file(f1, 30, 40, 2, 6, 12, 1);
    tu_synthetic_file(f2, 20, 40, 2, 6, 12, 2);
    assert_int_equal(run_ingest("--db", dbp, "--dataset", "mine", "--file", f1, "--format", "sequence", "--kcore", "1"), 0);
    sqlite3 *db = db_open(dbp, 0);
    /* a later stage built on this ingest */
    stage_run r;
    assert_int_equal(stage_begin(&r, db, "cf", "mine", "{}", "ingest", 0), 0);
    r.quiet = 1;
    stage_finish_begin(&r);
    stage_finish_commit(&r);
    assert_int_equal(stage_get_state(db, "mine", "cf", NULL), ST_DONE);
    /* same input again: up to date, nothing changes */
    int64_t n_runs = db_query_i64(db, -1, "SELECT count(*) FROM stage_runs");
    assert_int_equal(run_ingest("--db", dbp, "--dataset", "mine", "--file", f1, "--format", "sequence", "--kcore", "1"), 0);
    assert_int_equal(db_query_i64(db, -1, "SELECT count(*) FROM stage_runs"), n_runs);
    assert_int_equal(run_ingest("--db", dbp, "--dataset", "mine", "--file", f2, "--format", "sequence", "--kcore", "1"), 0);
    assert_int_equal(db_query_i64(db, -1, "SELECT n_users FROM datasets WHERE name='mine'"), 20);
    assert_int_equal(db_query_i64(db, -1, "SELECT count(DISTINCT uid) FROM interactions"), 20);
    assert_int_equal(db_query_i64(db, -1, "SELECT count(*) FROM datasets"), 1);
    assert_int_equal(stage_get_state(db, "mine", "cf", NULL), ST_STALE);
    /* every user has exactly one valid and one test item, the last two */
    assert_int_equal(db_query_i64(db, -1, "SELECT count(*) FROM interactions i WHERE split=2 AND pos <> "
                                          "(SELECT max(pos) FROM interactions j WHERE j.uid=i.uid)"), 0);
    assert_int_equal(db_query_i64(db, -1, "SELECT count(*) FROM interactions WHERE split=1"), 20);
    db_close(db);
    free(dbp); free(f1); free(f2);
}

static int fn(void *ctx, const csv_row *row) {
    int *count = ctx;
    if (*count == 0) {
        assert_int_equal(row->line, 1);
        assert_int_equal(row->n, 2);
        assert_string_equal(row->f[1], "b");
    } else {
        assert_int_equal(row->line, 3);                /* the blank line 2 is skipped */
        assert_int_equal(row->n, 3);
        assert_string_equal(row->f[1], "\"q\" d");     /* quotes are data */
    }
    (*count)++;
    return 0;
}

static void csv_reader_line_numbers_and_fields(void **state) {
    (void)state;
    char *p = tu_path("lines.txt");
    tu_write_file(p, "a\tb\n\nc\t\"q\" d\te\n");
    int count = 0;
    assert_int_equal(csvread_file(p, "\t", 0, fn, &count), 0);
    assert_int_equal(count, 2);
    free(p);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(sequence_reader_numbers_and_splits),
        cmocka_unit_test(kcore_hand_worked),
        cmocka_unit_test(duplicates_keep_first_and_time_order_is_stable),
        cmocka_unit_test(hetrec_ratings_and_delimited_readers),
        cmocka_unit_test(names_utf8_latin1_and_unknown_encoding),
        cmocka_unit_test(bad_inputs_leave_the_database_unchanged),
        cmocka_unit_test(reingest_replaces_and_marks_later_stages_stale),
        cmocka_unit_test(csv_reader_line_numbers_and_fields),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
