/* test_ui.c: the dashboard's non-drawing code: formatting (durations, ETA, progress,
 * tokens, prompt, UTF-8 widths), histogram binning and chart resampling, list selection,
 * every query on a small database (with and without the tables later stages create), and
 * launching a stage as a separate process. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <curses.h>
#include <locale.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include "../ui/Bins.h"
#include "../ui/Format.h"
#include "../ui/Launch.h"
#include "../ui/Panel.h"
#include "../ui/Queries.h"
#include "axis.h"
#include "db.h"
#include "stage.h"
#include "testutil.h"
#include "util.h"

static void durations_and_progress(void **state) {
    (void)state;
    char b[64];
    assert_string_equal(Format_duration(12.34, b, sizeof b), "12.3s");
    assert_string_equal(Format_duration(185, b, sizeof b), "3m05s");
    assert_string_equal(Format_duration(3720, b, sizeof b), "1h02m");
    assert_string_equal(Format_duration(-1, b, sizeof b), "-");
    assert_string_equal(Format_duration(NAN, b, sizeof b), "-");
    assert_string_equal(Format_progress(0.42, b, sizeof b), "42.0%");
    assert_string_equal(Format_progress(1.7, b, sizeof b), "100.0%");
    assert_string_equal(Format_progress(-3, b, sizeof b), "0.0%");
    assert_int_equal(Format_barCells(0.5, 20), 10);
    assert_int_equal(Format_barCells(0.999, 20), 19);
    assert_int_equal(Format_barCells(1.0, 20), 20);
    assert_int_equal(Format_barCells(0, 20), 0);
    assert_int_equal(Format_barCells(2, 20), 20);
    assert_string_equal(Format_count(1234567, b, sizeof b), "1,234,567");
    assert_string_equal(Format_count(-1234, b, sizeof b), "-1,234");
    assert_string_equal(Format_count(999, b, sizeof b), "999");
    assert_string_equal(Format_count(0, b, sizeof b), "0");
}

static void eta(void **state) {
    (void)state;
    /* Half done after 10 s: 10 s more from the report, less the time since it. */
    assert_true(fabs(Format_etaSeconds(0.5, 100, 110, 110) - 10) < 1e-9);
    assert_true(fabs(Format_etaSeconds(0.5, 100, 110, 114) - 6) < 1e-9);
    assert_true(fabs(Format_etaSeconds(0.25, 0, 60, 60) - 180) < 1e-9);
    assert_true(Format_etaSeconds(0.5, 100, 110, 500) == 0);        /* overdue: not negative */
    assert_true(Format_etaSeconds(0, 100, 110, 110) < 0);           /* no progress: unknown */
    assert_true(Format_etaSeconds(1, 100, 110, 110) < 0);           /* finished */
    char b[64];
    assert_string_equal(Format_eta(0.25, 0, 60, 60, b, sizeof b), "ETA 3m00s");
    assert_string_equal(Format_eta(0, 0, 60, 60, b, sizeof b), "");
}

static void tokens_and_prompt(void **state) {
    (void)state;
    char b[128];
    int u[3] = {12, 7, 200}, it[3] = {5, 9, 77}, part[3] = {1, -1, 3};
    assert_string_equal(Format_userTokens(u, 3, b, sizeof b), "user_<a-12><b-7><c-200>");
    assert_string_equal(Format_itemTokens(it, 3, b, sizeof b), "item_<0-5><1-9><2-77>");
    assert_string_equal(Format_itemTokens(part, 3, b, sizeof b), "item_<0-1><1-?><2-3>");
    char *p = Format_prompt("user_<a-1><b-2><c-3>", "item_<0-1><1-2><2-3> item_<0-4><1-5><2-6>");
    assert_string_equal(p, "Given the user_<a-1><b-2><c-3>'s previous interactions with the "
                           "item_<0-1><1-2><2-3> item_<0-4><1-5><2-6>, what are the user preferences?");
    free(p);
}

static void utf8_widths(void **state) {
    (void)state;
    if (!setlocale(LC_ALL, "C.UTF-8")) skip();
    int w;
    assert_int_equal(Format_fit("hello", 3, &w), 3);
    assert_int_equal(w, 3);
    assert_int_equal(Format_fit("h\xc3\xa9llo", 3, &w), 4);      /* é is 2 bytes, 1 column */
    assert_int_equal(w, 3);
    assert_int_equal(Format_width("\xe6\x97\xa5\xe6\x9c\xac"), 4);   /* 日本: 2 columns each */
    assert_int_equal(Format_fit("\xe6\x97\xa5\xe6\x9c\xac", 3, &w), 3); /* never half a character */
    assert_int_equal(w, 2);
    assert_int_equal(Format_fit("ab", 10, &w), 2);
    assert_int_equal(w, 2);
    setlocale(LC_ALL, "C");
}

static void linear_bins(void **state) {
    (void)state;
    int64_t v[10] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    Bins b;
    Bins_linear(&b, v, 10, 5);
    assert_int_equal(b.n, 5);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(b.count[i], 2);
        assert_int_equal(b.lo[i], 1 + 2 * i);
        assert_int_equal(b.hi[i], 2 + 2 * i);
    }
    assert_int_equal(b.max, 2);
    assert_int_equal(b.total, 10);
    char l[32];
    assert_string_equal(Bins_label(&b, 1, l, sizeof l), "3-4");
    /* A range narrower than the bins: one value per bin. */
    int64_t w[3] = {3, 4, 3};
    Bins_linear(&b, w, 3, 10);
    assert_int_equal(b.n, 2);
    assert_int_equal(b.count[0], 2);
    assert_int_equal(b.count[1], 1);
    assert_string_equal(Bins_label(&b, 0, l, sizeof l), "3");
    /* Uneven: 7 bins over 1..20 are 3 wide, the last one ends at the maximum. */
    int64_t x[20];
    for (int i = 0; i < 20; i++) x[i] = i + 1;
    Bins_linear(&b, x, 20, 7);
    assert_int_equal(b.n, 7);
    assert_int_equal(b.hi[6], 20);
    int64_t sum = 0;
    for (int i = 0; i < b.n; i++) sum += b.count[i];
    assert_int_equal(sum, 20);
    Bins_linear(&b, x, 0, 7);
    assert_int_equal(b.n, 0);
}

static void log2_bins(void **state) {
    (void)state;
    int64_t v[6] = {1, 2, 3, 4, 8, 100};
    Bins b;
    Bins_log2(&b, v, 6, 10);
    assert_int_equal(b.n, 7);           /* 1, 2-3, 4-7, 8-15, 16-31, 32-63, 64-100 */
    int64_t want[7] = {1, 2, 1, 1, 0, 0, 1};
    for (int i = 0; i < 7; i++) assert_int_equal(b.count[i], want[i]);
    char l[32];
    assert_string_equal(Bins_label(&b, 1, l, sizeof l), "2-3");
    assert_string_equal(Bins_label(&b, 6, l, sizeof l), "64-100");
    Bins_log2(&b, v, 6, 3);             /* the last bin takes the rest */
    assert_int_equal(b.n, 3);
    assert_int_equal(b.count[2], 3);
    assert_string_equal(Bins_label(&b, 2, l, sizeof l), "4-100");
    int64_t z[3] = {0, 0, 5};           /* zeros get their own bin */
    Bins_log2(&b, z, 3, 10);
    assert_int_equal(b.n, 4);
    assert_int_equal(b.count[0], 2);
    assert_int_equal(b.count[3], 1);
    assert_string_equal(Bins_label(&b, 0, l, sizeof l), "0");
    int64_t big[3] = {9, 12, 15};       /* starts at the minimum's class, no empty bins below */
    Bins_log2(&b, big, 3, 10);
    assert_int_equal(b.n, 1);
    assert_string_equal(Bins_label(&b, 0, l, sizeof l), "9-15");
}

static void resample(void **state) {
    (void)state;
    double xs[10], ys[10], out[20];
    for (int i = 0; i < 10; i++) { xs[i] = i; ys[i] = i; }
    assert_int_equal(Bins_resample(xs, ys, 10, 5, out), 5);
    double want[5] = {0.5, 2.5, 4.5, 6.5, 8.5};
    for (int c = 0; c < 5; c++) assert_true(fabs(out[c] - want[c]) < 1e-9);
    assert_int_equal(Bins_resample(xs, ys, 3, 20, out), 3);     /* sparse: gaps are NaN */
    assert_true(out[0] == 0 && isnan(out[1]) && out[19] == 2);
    double mn, mx;              /* the chart's range of the sparse columns (tests/test_axis.c) */
    axis_range(out, 20, 0, &mn, &mx);
    assert_true(mn == 0 && mx > 2 && mx < 2.2);
    assert_int_equal(Bins_resample(xs, ys, 0, 5, out), 0);
}

static void panel_keys(void **state) {
    (void)state;
    Panel p;
    Panel_init(&p, "header", NULL, NULL);
    Panel_resize(&p, 0, 0, 40, 11);             /* 10 rows under the header */
    Panel_setCount(&p, 100);
    assert_int_equal(Panel_rows(&p), 10);
    assert_true(Panel_onKey(&p, 'k'));
    assert_int_equal(p.selected, 0);
    assert_true(Panel_onKey(&p, 'j') && Panel_onKey(&p, KEY_DOWN));
    assert_int_equal(p.selected, 2);
    assert_true(Panel_onKey(&p, KEY_NPAGE));
    assert_int_equal(p.selected, 11);
    assert_int_equal(p.scroll, 2);              /* the selection stays on screen */
    assert_true(Panel_onKey(&p, 'G'));
    assert_int_equal(p.selected, 99);
    assert_int_equal(p.scroll, 90);
    assert_true(Panel_onKey(&p, 'g'));
    assert_int_equal(p.selected, 0);
    assert_int_equal(p.scroll, 0);
    assert_false(Panel_onKey(&p, 'x'));
    Panel_setSelected(&p, 50);
    Panel_setCount(&p, 5);                      /* the list shrank */
    assert_int_equal(p.selected, 4);
    assert_int_equal(p.scroll, 0);
    Panel_setCount(&p, 0);
    assert_int_equal(p.selected, 0);
}

/* A small dataset, 30 users over 40 items in 4 clusters. */
static sqlite3 *dataset_db(const char *name, int64_t *dsid) {
    sqlite3 *db = tu_db(name);
    assert_non_null(db);
    assert_int_equal(tu_synthetic(db, "syn", 30, 40, 4, 5, 9, 7), 0);
    *dsid = db_dataset_id(db, "syn");
    assert_true(*dsid > 0);
    return db;
}

static void dataset_queries(void **state) {
    (void)state;
    int64_t dsid;
    sqlite3 *db = dataset_db("q.db", &dsid);
    char names[4][128];
    assert_int_equal(Queries_datasets(db, names, 4), 1);
    assert_string_equal(names[0], "syn");
    DatasetInfo di;
    assert_int_equal(Queries_dataset(db, "syn", &di), 0);
    assert_int_equal(di.n_users, 30);
    int64_t n = db_query_i64(db, 0, "SELECT count(*) FROM interactions");
    assert_int_equal(di.n, n);
    assert_int_equal(di.n_valid, 30);
    assert_int_equal(di.n_test, 30);
    assert_int_equal(di.n_train, n - 60);
    int64_t s1 = 0, s2 = 0;
    for (int u = 0; u < di.n_users; u++) {
        s1 += di.seq_len[u];
        assert_true(di.seq_len[u] >= di.len_min && di.seq_len[u] <= di.len_max);
    }
    for (int i = 0; i < di.n_items; i++) s2 += di.popularity[i];
    assert_int_equal(s1, n);
    assert_int_equal(s2, n);
    assert_true(di.len_min >= 5 && di.len_max <= 9 && di.len_median >= di.len_min && di.len_median <= di.len_max);
    assert_true(fabs(di.density - (double)n / (30.0 * di.n_items)) < 1e-12);
    DatasetInfo_free(&di);
    assert_int_equal(Queries_dataset(db, "nope", &di), -1);
    tr_error_clear();

    EntityRow *users, *items;
    int nu = Queries_users(db, dsid, &users), ni = Queries_items(db, dsid, &items);
    assert_int_equal(nu, 30);
    assert_string_equal(users[3].orig, "u3");
    int64_t pop = 0;
    for (int i = 0; i < ni; i++) pop += items[i].len;
    assert_int_equal(pop, n);
    EntityRow_free(users, nu);
    EntityRow_free(items, ni);

    assert_int_equal(Queries_findUser(db, dsid, "u7"), 7);
    assert_int_equal(Queries_findUser(db, dsid, "#12"), 12);
    assert_int_equal(Queries_findUser(db, dsid, "12"), 12);
    assert_int_equal(Queries_findUser(db, dsid, "#999"), -1);
    assert_int_equal(Queries_findUser(db, dsid, "nobody"), -1);
    assert_int_equal(db_exec(db, "UPDATE items SET name='Beyonc\xc3\xa9' WHERE iid=2"), 0);
    assert_int_equal(Queries_findItem(db, dsid, "yonc"), 2);
    assert_int_equal(Queries_findItem(db, dsid, "#5"), 5);
    assert_int_equal(Queries_findItem(db, dsid, "zzz"), -1);
    tr_error_clear();

    HistRow *h;
    int nh = Queries_history(db, dsid, 4, &h);
    assert_int_equal(nh, db_query_i64(db, 0, "SELECT count(*) FROM interactions WHERE uid=4"));
    for (int i = 0; i < nh; i++) assert_int_equal(h[i].pos, i);
    assert_int_equal(h[nh - 1].split, 2);
    assert_int_equal(h[nh - 2].split, 1);
    assert_int_equal(h[0].split, 0);
    HistRow_free(h, nh);

    StageInfo si;
    assert_int_equal(Queries_stage(db, "syn", STAGE_INGEST, &si), 0);
    assert_int_equal(si.state, ST_DONE);
    assert_true(si.run > 0 && si.progress == 1 && si.ended_at >= si.started_at);
    assert_int_equal(Queries_stage(db, "syn", STAGE_CF, &si), 0);
    assert_int_equal(si.state, ST_NOT_RUN);
    assert_int_equal(si.run, 0);
    db_close(db);
}

/* Before tokenize and evaluate ran (their tables may not even exist): empty, never errors. */
static void missing_tables(void **state) {
    (void)state;
    int64_t dsid;
    sqlite3 *db = dataset_db("m.db", &dsid);
    int64_t run = Queries_tokenRun(db, "syn");
    assert_int_equal(run, 0);
    int codes[Q_MAX_BOOKS];
    assert_int_equal(Queries_tokens(db, run, "user", 0, codes), 0);
    assert_null(Queries_prompt(db, dsid, run, 0, 50));
    assert_int_equal(Queries_recRun(db, "syn"), 0);
    RecRow *r;
    ShareRow *s;
    Collision *c;
    int64_t *u;
    assert_int_equal(Queries_recs(db, dsid, 0, 0, 20, &r), 0);
    assert_int_equal(Queries_sharing(db, dsid, 0, 0, 20, &s), 0);
    assert_int_equal(Queries_collisions(db, 0, "item", &c), 0);
    assert_int_equal(Queries_books(db, 0, "item"), 0);
    assert_int_equal(Queries_codeUsage(db, 0, "item", 0, &u), 0);
    RunRow *runs;
    assert_int_equal(Queries_metricRuns(db, "syn", &runs), 0);
    free(runs);
    db_close(db);
}

static int64_t fake_run(sqlite3 *db, const char *stage) {
    char *sql = sqlite3_mprintf("INSERT INTO stage_runs (stage, dataset, params, fingerprint, status, "
                                "progress, started_at, updated_at, ended_at) VALUES (%Q, 'syn', '{}', "
                                "'f', 'done', 1, 1, 2, 2)", stage);
    assert_int_equal(db_exec(db, sql), 0);
    sqlite3_free(sql);
    return sqlite3_last_insert_rowid(db);
}

static void tokens_recs_metrics(void **state) {
    (void)state;
    int64_t dsid;
    sqlite3 *db = dataset_db("t.db", &dsid);
    assert_int_equal(db_exec(db, "CREATE TABLE IF NOT EXISTS tokens (run_id INTEGER, entity TEXT, idx INTEGER, "
                                 "book INTEGER, code INTEGER)"), 0);
    assert_int_equal(db_exec(db, "CREATE TABLE IF NOT EXISTS recommendations (run_id INTEGER, uid INTEGER, "
                                 "rank INTEGER, iid INTEGER, score REAL)"), 0);
    int64_t tr = fake_run(db, "tokenize");
    int n_items = (int)db_query_i64(db, 0, "SELECT n_items FROM datasets WHERE name='syn'");
    /* Items 0,1 collide (1,2,3); 2 shares two codes with them, 3 one; the rest are unique. */
    static const int planted[5][3] = {{1, 2, 3}, {1, 2, 3}, {1, 2, 4}, {1, 5, 6}, {7, 8, 9}};
    for (int i = 0; i < n_items; i++)
        for (int b = 0; b < 3; b++) {
            int code = i < 5 ? planted[i][b] : 100 * (b + 1) + i;
            char *sql = sqlite3_mprintf("INSERT INTO tokens (run_id, entity, idx, book, code) VALUES "
                                        "(%lld, 'item', %d, %d, %d)", (long long)tr, i, b, code);
            assert_int_equal(db_exec(db, sql), 0);
            sqlite3_free(sql);
        }
    /* A user whose items all have distinct tokens, so that each appears once in the prompt. */
    int pu = (int)db_query_i64(db, -1, "SELECT uid FROM interactions GROUP BY uid HAVING min(iid) >= 5 LIMIT 1");
    assert_true(pu >= 0);
    char *sql = sqlite3_mprintf("INSERT INTO tokens (run_id, entity, idx, book, code) VALUES "
                                "(%lld,'user',%d,0,10), (%lld,'user',%d,1,11), (%lld,'user',%d,2,12)",
                                (long long)tr, pu, (long long)tr, pu, (long long)tr, pu);
    assert_int_equal(db_exec(db, sql), 0);
    sqlite3_free(sql);

    assert_int_equal(Queries_tokenRun(db, "syn"), tr);
    int codes[Q_MAX_BOOKS];
    assert_int_equal(Queries_tokens(db, tr, "item", 2, codes), 3);
    assert_true(codes[0] == 1 && codes[1] == 2 && codes[2] == 4);
    assert_int_equal(Queries_tokens(db, tr, "user", (pu + 1) % 30, codes), 0);   /* has none */

    ShareRow *s;
    int ns = Queries_sharing(db, dsid, tr, 0, 20, &s);
    assert_int_equal(ns, 3);
    assert_true(s[0].iid == 1 && s[0].shared == 3);
    assert_true(s[1].iid == 2 && s[1].shared == 2);
    assert_true(s[2].iid == 3 && s[2].shared == 1);
    ShareRow_free(s, ns);

    Collision *c;
    int nc = Queries_collisions(db, tr, "item", &c);
    assert_int_equal(nc, 1);
    assert_string_equal(c[0].key, "1-2-3");
    assert_int_equal(c[0].n, 2);
    assert_true(c[0].members[0] == 0 && c[0].members[1] == 1);
    Collision_free(c, nc);

    assert_int_equal(Queries_books(db, tr, "item"), 3);
    int64_t *u;
    int L = Queries_codeUsage(db, tr, "item", 0, &u);
    assert_int_equal(L, 100 + n_items);
    assert_int_equal(u[1], 4);
    assert_int_equal(u[7], 1);
    assert_int_equal(u[0], 0);
    free(u);

    /* The prompt: the user's tokens and its items before the test item. */
    HistRow *h;
    int nh = Queries_history(db, dsid, pu, &h);
    char *p = Queries_prompt(db, dsid, tr, pu, 50);
    assert_non_null(p);
    const char *head = "Given the user_<a-10><b-11><c-12>'s previous interactions with the item_<0-";
    assert_true(strncmp(p, head, strlen(head)) == 0);
    assert_non_null(strstr(p, ", what are the user preferences?"));
    int count = 0;
    for (const char *q = p; (q = strstr(q, "item_")); q++) count++;
    assert_int_equal(count, nh - 1);
    char first[64], test[64];
    int fc[Q_MAX_BOOKS], tc[Q_MAX_BOOKS];
    Queries_tokens(db, tr, "item", h[0].iid, fc);
    Queries_tokens(db, tr, "item", h[nh - 1].iid, tc);
    Format_itemTokens(fc, 3, first, sizeof first);
    Format_itemTokens(tc, 3, test, sizeof test);
    assert_non_null(strstr(p, first));
    assert_null(strstr(p, test));
    free(p);
    p = Queries_prompt(db, dsid, tr, pu, 2);            /* the history limit keeps the last items */
    count = 0;
    for (const char *q = p; (q = strstr(q, "item_")); q++) count++;
    assert_int_equal(count, 2);
    assert_null(strstr(p, first));
    free(p);

    /* Recommendations of the current evaluate run, the held-out items marked. */
    int64_t er = fake_run(db, "evaluate");
    int other = -1;
    for (int i = 0; i < n_items && other < 0; i++) {
        int seen = 0;
        for (int k = 0; k < nh; k++) seen |= h[k].iid == i;
        if (!seen) other = i;
    }
    sql = sqlite3_mprintf("INSERT INTO recommendations (run_id, uid, rank, iid, score) VALUES "
                          "(%lld,%d,1,%d,0.9), (%lld,%d,2,%d,0.8), (%lld,%d,3,%d,0.7), (%lld,%d,1,%d,0.5)",
                          (long long)er, pu, h[nh - 1].iid, (long long)er, pu, h[nh - 2].iid,
                          (long long)er, pu, other, (long long)er, (pu + 1) % 30, other);
    assert_int_equal(db_exec(db, sql), 0);
    sqlite3_free(sql);
    assert_int_equal(Queries_recRun(db, "syn"), er);
    RecRow *r;
    int nr = Queries_recs(db, dsid, er, pu, 20, &r);
    assert_int_equal(nr, 3);
    assert_true(r[0].rank == 1 && r[0].iid == h[nh - 1].iid && r[0].mark == 2);
    assert_true(r[1].mark == 1 && fabs(r[1].score - 0.8) < 1e-9);
    assert_true(r[2].iid == other && r[2].mark == 0);
    RecRow_free(r, nr);
    nr = Queries_recs(db, dsid, er, pu, 2, &r);
    assert_int_equal(nr, 2);
    RecRow_free(r, nr);
    HistRow_free(h, nh);

    /* Metrics: loss first, series in step order. */
    sql = sqlite3_mprintf("INSERT INTO metrics_log (run_id, name, step, value) VALUES (%lld,'ndcg',2,0.3), (%lld,'loss',2,0.5), "
                          "(%lld,'loss',1,0.9), (%lld,'loss',3,0.4)", (long long)tr, (long long)tr,
                          (long long)tr, (long long)tr);
    assert_int_equal(db_exec(db, sql), 0);
    sqlite3_free(sql);
    RunRow *runs;
    int nrun = Queries_metricRuns(db, "syn", &runs);
    assert_int_equal(nrun, 1);
    assert_int_equal(runs[0].id, tr);
    assert_string_equal(runs[0].stage, "tokenize");
    assert_int_equal(runs[0].points, 4);
    free(runs);
    char **names;
    int nn = Queries_metricNames(db, tr, &names);
    assert_int_equal(nn, 2);
    assert_string_equal(names[0], "loss");
    assert_string_equal(names[1], "ndcg");
    for (int i = 0; i < nn; i++) free(names[i]);
    free(names);
    double *st, *va;
    int np = Queries_series(db, tr, "loss", &st, &va);
    assert_int_equal(np, 3);
    assert_true(st[0] == 1 && st[2] == 3 && va[0] == 0.9 && va[2] == 0.4);
    free(st);
    free(va);
    db_close(db);
}

static void launch_argv_and_spawn(void **state) {
    (void)state;
    char *dbp = tu_path("l.db"), *file = tu_path("own.txt");
    assert_int_equal(tu_synthetic_file(file, 20, 30, 3, 5, 8, 3), 0);
    assert_int_equal(tu_run("%s ingest --file %s --format sequence --dataset own --kcore 2 --db %s --quiet",
                            tu_bin(), file, dbp), 0);
    sqlite3 *db = db_open(dbp, 1);
    assert_non_null(db);

    char **argv = Queries_launchArgv(db, "/bin/tr", dbp, "lastfm", STAGE_CF, 1);
    const char *want[] = {"/bin/tr", "cf", "--db", dbp, "--dataset", "lastfm", "--force", NULL};
    for (int i = 0; want[i] || argv[i]; i++) {
        assert_non_null(argv[i]);
        assert_string_equal(argv[i], want[i]);
    }
    Queries_freeArgv(argv);
    /* a stage whose command has options of its own: the stage table's command, word by word */
    argv = Queries_launchArgv(db, "/bin/tr", dbp, "lastfm", STAGE_FINETUNE_GEN, 0);
    const char *want_gen[] = {"/bin/tr", "finetune", "--objective", "generate", "--db", dbp, "--dataset",
                              "lastfm", NULL};
    for (int i = 0; want_gen[i] || argv[i]; i++) {
        assert_non_null(argv[i]);
        assert_string_equal(argv[i], want_gen[i]);
    }
    Queries_freeArgv(argv);

    /* Re-ingesting the user's own file: its path and the settings of the last ingest. */
    argv = Queries_launchArgv(db, tu_bin(), dbp, "own", STAGE_INGEST, 1);
    int has_file = 0, has_kcore = 0, has_header = 0, has_input = 0, n = 0;
    for (; argv[n]; n++) {
        if (!strcmp(argv[n], "--file") && argv[n + 1] && !strcmp(argv[n + 1], file)) has_file = 1;
        if (!strcmp(argv[n], "--kcore") && argv[n + 1] && !strcmp(argv[n + 1], "2")) has_kcore = 1;
        has_header |= !strcmp(argv[n], "--header");
        has_input |= !strcmp(argv[n], "--input");
    }
    assert_true(has_file && has_kcore && !has_header && !has_input);
    assert_string_equal(argv[n - 1], "--force");
    pid_t pid = Launch_spawn(argv);
    Queries_freeArgv(argv);
    assert_true(pid > 0);
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    assert_int_equal(db_query_i64(db, 0, "SELECT count(*) FROM stage_runs WHERE stage='ingest' AND "
                                         "dataset='own' AND status='done'"), 2);
    assert_int_equal(Launch_stop(0), -1);
    tr_error_clear();
    db_close(db);
    free(dbp);
    free(file);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(durations_and_progress),
        cmocka_unit_test(eta),
        cmocka_unit_test(tokens_and_prompt),
        cmocka_unit_test(utf8_widths),
        cmocka_unit_test(linear_bins),
        cmocka_unit_test(log2_bins),
        cmocka_unit_test(resample),
        cmocka_unit_test(panel_keys),
        cmocka_unit_test(dataset_queries),
        cmocka_unit_test(missing_tables),
        cmocka_unit_test(tokens_recs_metrics),
        cmocka_unit_test(launch_argv_and_spawn),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
