/* e2e_reliability.c: what an analyst does to a database, through the real binary.
 *  - SIGKILL each long stage (cf, tokenize, finetune) at seeded random moments, resume it each
 *    time: the database stays intact, an unfinished run has no output rows, and the final
 *    outputs equal, bit for bit, those of an uninterrupted run with the same seed;
 *  - a dashboard-like reader polls the database while a stage writes: no SQLITE_BUSY anywhere;
 *    a second process on the same stage is refused with a message naming the first's pid;
 *  - bad databases (unwritable path, not SQLite, somebody else's SQLite, a newer schema, a full
 *    disk) give a clear error and leave the file as it was. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "db.h"
#include "rng.h"
#include "stage.h"
#include "util.h"
#include "testutil.h"

#define N_USERS 200
#define N_ITEMS 120
/* Settings like e2e_pipeline's, a little longer so that a kill lands mid-stage. */
static const char *const stage_args[3] = {
    "cf --epochs 600 --eval-every 5 --patience 0 --dim 32 --batch 512 --quiet",
    "tokenize --L 32 --dc 64 --h1 64 --h2 64 --epochs 40 --ckpt-every 1 --quiet",
    "finetune --preset tiny --epochs 1 --hist 20 --batch 32 --lr 3e-3 --warmup 20 --ckpt-every 5 --quiet",
};
static const char *const stage_of[3] = {"cf", "tokenize", "finetune"};

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Start `tokenrec ARGS --db DBP` (ARGS split on spaces) as a child; its output goes to a log. */
static pid_t spawn(const char *dbp, const char *args) {
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", args);
    char *argv[64];
    int n = 0;
    argv[n++] = (char *)tu_bin();
    for (char *s = strtok(buf, " "); s && n < 60; s = strtok(NULL, " ")) argv[n++] = s;
    argv[n++] = "--db";
    argv[n++] = (char *)dbp;
    argv[n] = NULL;
    char *log = tu_path("children.log");
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) { dup2(fd, 1); dup2(fd, 2); }
        execv(argv[0], argv);
        _exit(127);
    }
    free(log);
    assert_true(pid > 0);
    return pid;
}

/* Exit status of a child; 128 + signal when a signal ended it. */
static int wait_child(pid_t pid) {
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* A plain read-write connection (no migration), as after a crash. */
static sqlite3 *open_raw(const char *path) {
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    sqlite3_busy_timeout(db, 10000);
    return db;
}

static void assert_integrity_ok(sqlite3 *db) {
    sqlite3_stmt *st = db_prep(db, "PRAGMA integrity_check");
    assert_non_null(st);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "ok");
    sqlite3_finalize(st);
}

/* Output rows of the stage's runs that are not done: there must be none. */
static int64_t unfinished_output_rows(sqlite3 *db, int stage) {
    static const char *const table[3] = {"cf_vectors", "tokens", "models"};
    return db_query_i64(db, -1, "SELECT count(*) FROM %s WHERE run_id IN (SELECT id FROM stage_runs "
                        "WHERE stage=%Q AND status <> 'done')", table[stage], stage_of[stage]);
}

static void ingest(const char *dbp, const char *file) {
    assert_int_equal(tu_run("%s ingest --quiet --db %s --dataset synth --file %s --format sequence",
                            tu_bin(), dbp, file), 0);
}

/* Every stage's outputs in db (main) equal those of the reference database attached as r. */
static void assert_same_outputs(sqlite3 *db, int upto) {
    int64_t cf = stage_current_run(db, "synth", "cf");
    int64_t rcf = db_query_i64(db, -1, "SELECT max(id) FROM r.stage_runs WHERE stage='cf' AND status='done'");
    assert_true(cf > 0 && rcf > 0);
    int64_t n = db_query_i64(db, -1, "SELECT count(*) FROM cf_vectors WHERE run_id=%lld", (long long)cf);
    assert_int_equal(n, (N_USERS + N_ITEMS) * 2);          /* ego + mean for every user and item */
    assert_int_equal(db_query_i64(db, -1, "SELECT count(*) FROM cf_vectors a JOIN r.cf_vectors b ON "
                                  "a.entity=b.entity AND a.kind=b.kind AND a.idx=b.idx WHERE a.run_id=%lld "
                                  "AND b.run_id=%lld AND a.vec=b.vec", (long long)cf, (long long)rcf), n);
    if (upto < 1) return;
    int64_t tk = stage_current_run(db, "synth", "tokenize");
    int64_t rtk = db_query_i64(db, -1, "SELECT max(id) FROM r.stage_runs WHERE stage='tokenize' AND status='done'");
    assert_true(tk > 0 && rtk > 0);
    /* whole: every entity has every book, and there are exactly the dataset's users and items */
    const char *ent[2] = {"user", "item"};
    int64_t want[2] = {N_USERS, N_ITEMS};
    for (int e = 0; e < 2; e++) {
        int64_t rows = db_query_i64(db, -1, "SELECT count(*) FROM tokens WHERE run_id=%lld AND entity=%Q", (long long)tk, ent[e]);
        int64_t ids = db_query_i64(db, -1, "SELECT count(DISTINCT idx) FROM tokens WHERE run_id=%lld AND entity=%Q", (long long)tk, ent[e]);
        int64_t books = db_query_i64(db, -1, "SELECT count(DISTINCT book) FROM tokens WHERE run_id=%lld AND entity=%Q", (long long)tk, ent[e]);
        assert_int_equal(ids, want[e]);
        assert_true(books >= 1);
        assert_int_equal(rows, ids * books);
    }
    n = db_query_i64(db, -1, "SELECT count(*) FROM tokens WHERE run_id=%lld", (long long)tk);
    assert_int_equal(n, db_query_i64(db, -1, "SELECT count(*) FROM r.tokens WHERE run_id=%lld", (long long)rtk));
    assert_int_equal(db_query_i64(db, -1, "SELECT count(*) FROM tokens a JOIN r.tokens b ON a.entity=b.entity "
                                  "AND a.idx=b.idx AND a.book=b.book WHERE a.run_id=%lld AND b.run_id=%lld "
                                  "AND a.code=b.code", (long long)tk, (long long)rtk), n);
    assert_int_equal(db_query_i64(db, -1, "SELECT count(*) FROM tokenizers a JOIN r.tokenizers b USING (entity) "
                                  "WHERE a.run_id=%lld AND b.run_id=%lld AND a.weights=b.weights AND "
                                  "a.codebooks=b.codebooks AND a.bn_stats=b.bn_stats", (long long)tk, (long long)rtk), 2);
    if (upto < 2) return;
    int64_t ft = stage_current_run(db, "synth", "finetune");
    int64_t rft = db_query_i64(db, -1, "SELECT max(id) FROM r.stage_runs WHERE stage='finetune' AND status='done'");
    assert_true(ft > 0 && rft > 0);
    assert_int_equal(db_query_i64(db, -1, "SELECT count(*) FROM models a, r.models b WHERE a.run_id=%lld AND "
                                  "b.run_id=%lld AND a.params=b.params AND a.config=b.config AND "
                                  "length(a.params) = 4 * a.n_params", (long long)ft, (long long)rft), 1);
}

/* ---- crash consistency ---- */

static void sigkill_at_random_moments_then_resume(void **state) {
    (void)state;
    char *f = tu_path("synth.txt"), *ref = tu_path("ref.db"), *kdb = tu_path("kill.db");
    assert_int_equal(tu_synthetic_file(f, N_USERS, N_ITEMS, 6, 10, 20, 7), 0);
    ingest(ref, f);
    ingest(kdb, f);
    rng_t rng;
    rng_seed(&rng, 20240917);
    int kills = 0, tries = 0;
    for (int s = 0; s < 3; s++) {
        /* the uninterrupted run, timed to place the kills */
        double t0 = now_s();
        assert_int_equal(wait_child(spawn(ref, stage_args[s])), 0);
        double T = now_s() - t0;
        int landed = 0;
        for (int attempt = 0; attempt < 20 && landed < 8; attempt++) {
            pid_t pid = spawn(kdb, stage_args[s]);
            /* a moment in what is left of the run: its progress so far from stage_runs */
            sqlite3 *pdb = open_raw(kdb);
            double p = 0;
            sqlite3_stmt *ps = db_prep(pdb, "SELECT progress FROM stage_runs WHERE stage=? ORDER BY id DESC LIMIT 1");
            sqlite3_bind_text(ps, 1, stage_of[s], -1, SQLITE_STATIC);
            if (sqlite3_step(ps) == SQLITE_ROW) p = sqlite3_column_double(ps, 0);
            sqlite3_finalize(ps);
            db_close(pdb);
            /* well inside what is left: a busy machine can make the reference run slower than
             * this one, and a run that finishes before its kill ends the stage's kills */
            double delay = T * (0.02 + 0.2 * rng_uniform_d(&rng)) * (1 - (p < 1 ? p : 0));
            usleep((useconds_t)(delay * 1e6));
            tries++;
            int st;
            if (waitpid(pid, &st, WNOHANG) == pid) {           /* finished first: a done run */
                assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
                break;
            }
            kill(pid, SIGKILL);
            assert_int_equal(wait_child(pid), 128 + SIGKILL);
            landed++;
            sqlite3 *db = open_raw(kdb);
            assert_integrity_ok(db);
            assert_int_equal(unfinished_output_rows(db, s), 0);
            db_close(db);
        }
        kills += landed;
        /* resume to the end */
        assert_int_equal(wait_child(spawn(kdb, stage_args[s])), 0);
        sqlite3 *db = open_raw(kdb);
        assert_integrity_ok(db);
        assert_int_equal(db_query_i64(db, -1, "SELECT count(*) FROM stage_runs WHERE status='running'"), 0);
        assert_int_equal(db_query_i64(db, -1, "SELECT count(*) FROM stage_runs WHERE stage=%Q AND status='done'",
                                      stage_of[s]), 1);
        assert_int_equal(unfinished_output_rows(db, s), 0);
        char *sql = sqlite3_mprintf("ATTACH %Q AS r", ref);
        assert_int_equal(db_exec(db, sql), 0);
        sqlite3_free(sql);
        assert_same_outputs(db, s);
        db_close(db);
        fprintf(stderr, "%s: %d kills survived (reference run %.2f s)\n", stage_of[s], landed, T);
    }
    fprintf(stderr, "%d SIGKILLs in %d tries across cf, tokenize and finetune\n", kills, tries);
    assert_true(kills >= 12);             /* of at most 24: half, whatever the machine's load */
    free(f); free(ref); free(kdb);
}

/* ---- concurrency ---- */

/* One dashboard-like poll: short SELECTs on stage_runs and metrics_log. 0, or the error. */
static int poll_once(sqlite3 *db, char *err, size_t errn) {
    static const char *const q[] = {
        "SELECT stage, status, progress, message, pid FROM stage_runs ORDER BY id DESC",
        "SELECT name, count(*), max(step) FROM metrics_log GROUP BY name",
        "SELECT step, value FROM metrics_log WHERE name='loss' ORDER BY step DESC LIMIT 200",
    };
    for (size_t i = 0; i < sizeof q / sizeof *q; i++) {
        sqlite3_stmt *st = NULL;
        int rc = sqlite3_prepare_v2(db, q[i], -1, &st, NULL);
        if (rc == SQLITE_OK)
            while ((rc = sqlite3_step(st)) == SQLITE_ROW) {}
        if (rc != SQLITE_DONE) {
            snprintf(err, errn, "%s: %s (%d)", q[i], sqlite3_errmsg(db), rc);
            sqlite3_finalize(st);
            return -1;
        }
        sqlite3_finalize(st);
    }
    return 0;
}

static void reader_beside_writer_sees_no_busy(void **state) {
    (void)state;
    char *f = tu_path("c.txt"), *dbp = tu_path("c.db");
    assert_int_equal(tu_synthetic_file(f, N_USERS, N_ITEMS, 6, 10, 20, 3), 0);
    ingest(dbp, f);
    /* many small write transactions: a checkpoint and metrics every epoch */
    pid_t w = spawn(dbp, "cf --epochs 400 --eval-every 1 --dim 32 --batch 512 --quiet");
    sqlite3 *db = NULL;
    long polls = 0, reopen = 0;
    char err[512] = "";
    int st, failed = 0, done = 0;
    while (!done) {
        done = waitpid(w, &st, WNOHANG) == w;
        if (!db || polls % 25 == 0) {            /* the dashboard opens as well as polls */
            db_close(db);
            db = db_open(dbp, 1);
            if (!db) { snprintf(err, sizeof err, "open: %s", tr_errmsg()); failed = 1; break; }
            reopen++;
        }
        if (poll_once(db, err, sizeof err) != 0) { failed = 1; break; }
        polls++;
        usleep(2000);
    }
    db_close(db);
    if (!done) st = 0, waitpid(w, &st, 0);
    fprintf(stderr, "reader: %ld polls, %ld opens beside the writer%s%s\n", polls, reopen,
            failed ? ": " : "", err);
    assert_false(failed);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);                 /* the writer saw no busy error either */
    assert_true(polls >= 5);
    db = open_raw(dbp);
    assert_integrity_ok(db);
    assert_int_equal(db_query_i64(db, -1, "SELECT count(*) FROM stage_runs WHERE stage='cf' AND status='done'"), 1);
    db_close(db);
    free(f); free(dbp);
}

static void second_process_on_a_stage_is_refused(void **state) {
    (void)state;
    char *f = tu_path("two.txt"), *dbp = tu_path("two.db");
    assert_int_equal(tu_synthetic_file(f, N_USERS, N_ITEMS, 6, 10, 20, 5), 0);
    ingest(dbp, f);
    pid_t first = spawn(dbp, "cf --epochs 1000000 --eval-every 20 --dim 32 --batch 512 --quiet");
    /* wait until the first holds the stage */
    int running = 0;
    for (int i = 0; i < 6000 && !running; i++) {
        sqlite3 *db = db_open(dbp, 1);
        if (db) {
            running = db_query_i64(db, 0, "SELECT count(*) FROM stage_runs WHERE stage='cf' AND "
                                   "status='running' AND pid=%d", (int)first) == 1;
            db_close(db);
        }
        if (!running) usleep(10000);
    }
    assert_true(running);
    char out[4096], pid[32];
    snprintf(pid, sizeof pid, "%d", (int)first);
    /* the same settings, and other settings: the stage is taken either way */
    const char *second[2] = {"--epochs 1000000 --eval-every 20", "--epochs 7 --eval-every 1"};
    for (int k = 0; k < 2; k++) {
        int rc = tu_capture(out, sizeof out, "%s cf --db %s %s --dim 32 --batch 512 --quiet", tu_bin(), dbp, second[k]);
        fprintf(stderr, "second process: exit %d: %s", rc, out);
        assert_int_equal(rc, 1);
        assert_non_null(strstr(out, "tokenrec cf: error:"));
        assert_non_null(strstr(out, "already running"));
        assert_non_null(strstr(out, pid));
    }
    /* Ctrl-C stops the first one cleanly; it is resumable, nothing was damaged */
    kill(first, SIGINT);
    int rc = wait_child(first);
    assert_int_equal(rc, 130);
    sqlite3 *db = open_raw(dbp);
    assert_integrity_ok(db);
    assert_int_equal(db_query_i64(db, -1, "SELECT count(*) FROM stage_runs WHERE stage='cf' AND status='stopped'"), 1);
    assert_int_equal(db_query_i64(db, -1, "SELECT count(*) FROM stage_runs WHERE stage='cf'"), 1);
    db_close(db);
    free(f); free(dbp);
}

/* ---- bad databases ---- */

static char *slurp(const char *path, size_t *n) {
    char *b = NULL;
    assert_int_equal(tr_read_file(path, &b, n), 0);
    return b;
}

static void bad_database_paths_fail_cleanly(void **state) {
    (void)state;
    char out[4096];
    const char *b = tu_bin();
    char *f = tu_path("bad.txt");
    assert_int_equal(tu_synthetic_file(f, 60, 40, 4, 6, 10, 1), 0);
    int tried = 0;

    /* 1. a path whose directory is a regular file (unwritable whoever runs the test) */
    assert_int_equal(tu_capture(out, sizeof out, "%s ingest --quiet --db %s/x.db --dataset synth --file %s "
                                 "--format sequence", b, f, f), 1);
    assert_non_null(strstr(out, "tokenrec ingest: error:"));
    assert_non_null(strstr(out, "cannot open database"));
    tried++;
    /* 2. a missing database for a reading command: an error, and no file made */
    char *missing = tu_path("missing.db");
    assert_int_equal(tu_capture(out, sizeof out, "%s info --db %s", b, missing), 1);
    assert_non_null(strstr(out, "no such database"));
    assert_int_equal(access(missing, F_OK), -1);
    tried++;

    /* 3. not SQLite at all; 4. somebody else's SQLite database: refused, byte for byte unchanged */
    char *text = tu_path("notes.db"), *foreign = tu_path("foreign.db");
    char junk[8192];
    for (size_t i = 0; i < sizeof junk; i++) junk[i] = (char)('a' + i * 7 % 26);
    junk[sizeof junk - 1] = 0;
    assert_int_equal(tu_write_file(text, junk), 0);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(foreign, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "CREATE TABLE notes(x); INSERT INTO notes VALUES ('keep me');", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    const char *cmds[4] = {"ingest --quiet --dataset synth --format sequence --file", "cf --quiet", "info", "run --quiet --dataset synth"};
    const char *paths[2] = {text, foreign};
    const char *expect[2] = {"not an SQLite database", "not a tokenrec database"};
    for (int p = 0; p < 2; p++) {
        size_t n0, n1;
        char *before = slurp(paths[p], &n0);
        for (int c = 0; c < 4; c++) {
            int rc = tu_capture(out, sizeof out, "%s %s %s --db %s", b, cmds[c], c == 0 ? f : "", paths[p]);
            if (rc != 1 || !strstr(out, expect[p])) fprintf(stderr, "%s on %s: exit %d: %s", cmds[c], paths[p], rc, out);
            assert_int_equal(rc, 1);
            assert_non_null(strstr(out, expect[p]));
            tried++;
        }
        char *after = slurp(paths[p], &n1);
        assert_true(n0 == n1 && memcmp(before, after, n0) == 0);
        free(before); free(after);
    }

    /* 5. a tokenrec database from a newer schema: refused by writers and readers, untouched */
    char *newer = tu_path("newer.db");
    assert_int_equal(tu_run("%s ingest --quiet --db %s --dataset synth --file %s --format sequence", b, newer, f), 0);
    db = open_raw(newer);
    int64_t inter = db_query_i64(db, -1, "SELECT count(*) FROM interactions");
    assert_true(inter > 0);
    assert_int_equal(db_exec(db, "PRAGMA user_version = 999; PRAGMA wal_checkpoint(TRUNCATE);"), 0);
    db_close(db);
    size_t n0, n1;
    char *before = slurp(newer, &n0);
    for (int c = 0; c < 4; c++) {
        int rc = tu_capture(out, sizeof out, "%s %s %s --db %s", b, cmds[c], c == 0 ? f : "", newer);
        if (rc != 1 || !strstr(out, "newer")) fprintf(stderr, "%s on a newer database: exit %d: %s", cmds[c], rc, out);
        assert_int_equal(rc, 1);
        assert_non_null(strstr(out, "newer"));
        tried++;
        char *after = slurp(newer, &n1);
        if (n0 != n1 || memcmp(before, after, n0) != 0) {
            size_t k = 0;
            while (k < n0 && k < n1 && before[k] == after[k]) k++;
            fprintf(stderr, "%s changed the newer database: %zu -> %zu bytes, first at %zu\n", cmds[c], n0, n1, k);
        }
        assert_true(n0 == n1 && memcmp(before, after, n0) == 0);
        free(after);
    }
    free(before);
    db = open_raw(newer);
    assert_int_equal(db_query_i64(db, -1, "PRAGMA user_version"), 999);
    assert_int_equal(db_query_i64(db, -1, "SELECT count(*) FROM interactions"), inter);
    assert_int_equal(db_query_i64(db, -1, "SELECT count(*) FROM stage_runs WHERE stage <> 'ingest'"), 0);
    db_close(db);
    fprintf(stderr, "%d bad database inputs refused cleanly\n", tried);
    free(f); free(missing); free(text); free(foreign); free(newer);
}

/* ---- out of disk: a database on a small tmpfs (needs mount rights; skipped without) ---- */

static char mnt[512];
static int mounted;

static int unmount_teardown(void **state) {
    (void)state;
    if (mounted && umount2(mnt, MNT_DETACH) == 0) mounted = 0;
    return 0;
}

static void full_disk_fails_cleanly_and_resumes(void **state) {
    (void)state;
    snprintf(mnt, sizeof mnt, "%s/small", tu_tmpdir());
    assert_int_equal(mkdir(mnt, 0755), 0);
    if (mount("tmpfs", mnt, "tmpfs", 0, "size=4m") != 0) {
        fprintf(stderr, "cannot mount a tmpfs here (%s): skipped\n", strerror(errno));
        skip();
    }
    mounted = 1;
    char *f = tu_path("full.txt"), dbp[600], filler[600];
    snprintf(dbp, sizeof dbp, "%s/t.db", mnt);
    snprintf(filler, sizeof filler, "%s/filler", mnt);
    assert_int_equal(tu_synthetic_file(f, N_USERS, N_ITEMS, 6, 10, 20, 11), 0);
    ingest(dbp, f);
    sqlite3 *db = open_raw(dbp);
    int64_t inter = db_query_i64(db, -1, "SELECT count(*) FROM interactions");
    assert_int_equal(db_exec(db, "PRAGMA wal_checkpoint(TRUNCATE)"), 0);
    db_close(db);
    /* leave 16 KiB free: less than cf's output */
    struct statvfs vs;
    assert_int_equal(statvfs(mnt, &vs), 0);
    long long fill = (long long)vs.f_bavail * (long long)vs.f_frsize - 16384;
    assert_true(fill > 0);
    FILE *fp = fopen(filler, "wb");
    assert_non_null(fp);
    static char zero[65536];
    for (long long k = 0; k < fill; k += (long long)sizeof zero)
        fwrite(zero, 1, (size_t)(fill - k < (long long)sizeof zero ? fill - k : (long long)sizeof zero), fp);
    fclose(fp);
    char out[4096];
    int rc = tu_capture(out, sizeof out, "%s cf --db %s --epochs 20 --eval-every 5 --dim 32 --batch 512 --quiet", tu_bin(), dbp);
    fprintf(stderr, "cf on a full disk: exit %d: %s", rc, out);
    assert_int_equal(rc, 1);
    assert_non_null(strstr(out, "tokenrec cf: error:"));
    /* SQLite says "disk I/O error" or "database or disk is full", with the path */
    assert_non_null(strstr(out, dbp));
    assert_non_null(strstr(out, "disk"));
    /* room again: the database is whole, the data is all there, and cf runs to the end */
    assert_int_equal(unlink(filler), 0);
    db = open_raw(dbp);
    assert_integrity_ok(db);
    assert_int_equal(db_query_i64(db, -1, "SELECT count(*) FROM interactions"), inter);
    assert_int_equal(unfinished_output_rows(db, 0), 0);
    db_close(db);
    assert_int_equal(tu_run("%s cf --db %s --epochs 20 --eval-every 5 --dim 32 --batch 512 --quiet", tu_bin(), dbp), 0);
    db = open_raw(dbp);
    assert_integrity_ok(db);
    int64_t cf = stage_current_run(db, "synth", "cf");
    assert_int_equal(db_query_i64(db, -1, "SELECT count(*) FROM cf_vectors WHERE run_id=%lld", (long long)cf),
                     (N_USERS + N_ITEMS) * 2);
    db_close(db);
    free(f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(bad_database_paths_fail_cleanly),
        cmocka_unit_test(second_process_on_a_stage_is_refused),
        cmocka_unit_test(reader_beside_writer_sees_no_busy),
        cmocka_unit_test_teardown(full_disk_fails_cleanly_and_resumes, unmount_teardown),
        cmocka_unit_test(sigkill_at_random_moments_then_resume),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
