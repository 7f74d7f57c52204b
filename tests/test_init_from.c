/* test_init_from.c: `tokenrec finetune --init-from` on a small synthetic dataset, from a
 * checkpoint written here (the tiny preset, Hugging Face names, no head: as a t5-small file)
 * with the SentencePiece fixture tests/data/tokenizer.json (42 tokens; the checkpoint has 48
 * rows). Checks: the loaded weights equal the file's (a run with --lr 0 stores them
 * unchanged), the vocabulary grew by exactly the ID tokens, a short finetune stores a model
 * that evaluate loads and scores with, a changed checkpoint makes the run stale, a run killed
 * after a checkpoint resumes to the same model, and bad inputs give clear errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include "db.h"
#include "recmodel.h"
#include "safetensors.h"
#include "t5.h"
#include "util.h"
#include "testutil.h"

#define CKPT_VOCAB 48
#define DIM 16
#define K_ 3
#define L_ 8

static char *tok_fixture(void) {
    const char *d = getenv("TOKENREC_TESTDATA");
    char *p = tr_malloc(4096);
    snprintf(p, 4096, "%s/tokenizer.json", d ? d : "../tests/data");
    return p;
}

/* A tiny T5 saved under Hugging Face names; with_head 0 leaves head.* out (as t5-small). */
static void write_ckpt(const char *path, uint64_t seed, int head_out, int with_head) {
    t5_config c;
    assert_int_equal(t5_preset("tiny", &c), 0);
    c.vocab = CKPT_VOCAB;
    c.head_out = head_out;
    rng_t r;
    rng_seed(&r, seed);
    t5_model *m = t5_new(&c, &r);
    assert_non_null(m);
    if (with_head) {
        assert_int_equal(t5_save(m, path), 0);
    } else {
        st_writer *w = st_writer_new();
        st_writer_meta(w, "format", "pt");
        for (int i = 0; i < t5_n_tensors(m); i++) {
            const t5_param *p = t5_tensor(m, i);
            if (!strncmp(p->name, "head.", 5)) continue;
            int64_t sh[2] = {p->rows, p->cols};
            st_writer_add_f32(w, p->name, t5_params(m) + p->off, p->cols ? 2 : 1, sh);
        }
        assert_int_equal(st_writer_save(w, path), 0);
        st_writer_free(w);
    }
    t5_free(m);
}

/* Run a command with stderr to a file; returns the exit status and the text in *err. */
static int run_err(char **err, const char *cmd) {
    char *ef = tu_path("stderr.txt");
    int rc = tu_run("%s 2> %s", cmd, ef);
    size_t n;
    if (tr_read_file(ef, err, &n) != 0) *err = tr_strdup("");
    free(ef);
    return rc;
}

static int64_t n_finetune_runs(const char *dbp) {
    sqlite3 *db = db_open(dbp, 1);
    int64_t n = db_query_i64(db, -1, "SELECT count(*) FROM stage_runs WHERE stage='finetune' AND status='done'");
    db_close(db);
    return n;
}

static void init_from_checkpoint(void **state) {
    (void)state;
    const char *b = tu_bin();
    char *dbp = tu_path("f.db"), *ck = tu_path("ckpt.safetensors"), *tok = tok_fixture();
    sqlite3 *db = tu_db("f.db");
    assert_non_null(db);
    assert_int_equal(tu_synthetic(db, "synth", 80, 40, 4, 8, 14, 3), 0);
    db_close(db);
    assert_int_equal(tu_run("%s cf --db %s --epochs 4 --eval-every 4 --dim %d --batch 256 --quiet", b, dbp, DIM), 0);
    assert_int_equal(tu_run("%s tokenize --db %s --K %d --L %d --dc 16 --h1 32 --h2 32 --epochs 3 --quiet",
                            b, dbp, K_, L_), 0);
    write_ckpt(ck, 11, DIM, 0);
    char cmd[8192];
#define FT "--preset tiny --batch 16 --hist 10 --eval-batch 64 --quiet"

    /* --lr 0: the stored model is the loaded one */
    snprintf(cmd, sizeof cmd, "%s finetune --db %s --init-from %s --tokenizer %s --epochs 1 --lr 0 " FT,
             b, dbp, ck, tok);
    assert_int_equal(tu_run("%s", cmd), 0);
    db = db_open(dbp, 1);
    int64_t run = db_query_i64(db, -1, "SELECT max(id) FROM stage_runs WHERE stage='finetune' AND status='done'");
    rec_loaded lm;
    assert_int_equal(rec_model_load(db, run, &lm), 0);
    const t5_config *c = t5_cfg(lm.model);
    int extra = (int)db_query_i64(db, 0, "SELECT extra FROM models WHERE run_id=%lld", (long long)run);
    /* the vocabulary's L is the highest code in use + 1 (rec_data_load): L_ when the short
     * tokenizer training used the last codeword somewhere, less otherwise */
    int L = (int)db_query_i64(db, 0, "SELECT L FROM models WHERE run_id=%lld", (long long)run);
    assert_true(L >= 2 && L <= L_);
    assert_int_equal(c->vocab, CKPT_VOCAB + 2 * K_ * L + extra);      /* grew by the ID tokens */
    assert_int_equal(lm.vocab.vocab, c->vocab);
    assert_int_equal(lm.vocab.spm, 1);
    assert_int_equal(lm.vocab.base_item, CKPT_VOCAB);
    assert_int_equal(lm.vocab.n_words, 42);
    assert_int_equal(c->head_out, DIM);
    st_file f;
    assert_int_equal(st_load(&f, ck), 0);
    int compared = 0;
    for (int i = 0; i < f.n; i++) {
        const st_tensor *t = &f.t[i];
        const t5_param *p = t5_param_find(lm.model, t->name);
        assert_non_null(p);
        size_t n = t->numel;
        if (!strcmp(t->name, "shared.weight")) assert_int_equal(p->rows, c->vocab);
        else assert_int_equal(p->n, n);
        assert_memory_equal(t5_params(lm.model) + p->off, t->f, n * sizeof(float));   /* rows 0..47 */
        compared += !strncmp(t->name, "encoder.", 8);
    }
    assert_true(compared >= 10);
    st_free(&f);
    rec_loaded_free(&lm);
    /* the stored config carries the prompt vocabulary; the params the files' hashes */
    assert_int_equal(db_query_i64(db, 0, "SELECT count(*) FROM models WHERE run_id=%lld AND config LIKE "
                                         "'%%\"prompt\":{\"kind\":\"sentencepiece\"%%'", (long long)run), 1);
    assert_int_equal(db_query_i64(db, 0, "SELECT count(*) FROM stage_runs WHERE id=%lld AND params LIKE "
                                         "'%%\"init-from-fnv\":%%' AND params LIKE '%%\"tokenizer-size\":%%'",
                                  (long long)run), 1);
    db_close(db);

    /* the same command is up to date; a changed checkpoint makes it stale */
    int64_t before = n_finetune_runs(dbp);
    assert_int_equal(tu_run("%s", cmd), 0);
    assert_int_equal(n_finetune_runs(dbp), before);
    write_ckpt(ck, 12, DIM, 0);
    assert_int_equal(tu_run("%s", cmd), 0);
    assert_int_equal(n_finetune_runs(dbp), before + 1);

    /* a short real finetune (tokenizer.json found beside the checkpoint), then evaluate */
    char *ck2 = tu_path("tokenizer.json");
    char *txt;
    size_t tn;
    assert_int_equal(tr_read_file(tok, &txt, &tn), 0);
    assert_int_equal(tu_write_file(ck2, txt), 0);
    free(txt);
    free(ck2);
    assert_int_equal(tu_run("%s finetune --db %s --init-from %s --epochs 2 --lr 3e-3 --warmup 10 " FT, b, dbp, ck), 0);
    assert_int_equal(tu_run("%s evaluate --db %s --method tokenrec --quiet", b, dbp), 0);
    db = db_open(dbp, 1);
    run = db_query_i64(db, -1, "SELECT max(id) FROM stage_runs WHERE stage='finetune' AND status='done'");
    assert_int_equal(db_query_i64(db, -1, "SELECT upstream_run FROM stage_runs WHERE stage='evaluate' "
                                          "ORDER BY id DESC LIMIT 1"), run);
    sqlite3_stmt *st = db_prep(db, "SELECT value FROM run_metrics WHERE method='tokenrec' AND split='test' AND "
                                   "metric='hr' AND k=10 ORDER BY run_id DESC LIMIT 1");
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    double hr = sqlite3_column_double(st, 0);
    sqlite3_finalize(st);
    assert_true(hr >= 0 && hr <= 1);
    assert_int_equal(rec_model_load(db, run, &lm), 0);
    assert_int_equal(lm.vocab.spm, 1);
    rec_loaded_free(&lm);
    db_close(db);
    free(dbp); free(ck); free(tok);
}

static void init_from_errors(void **state) {
    (void)state;
    const char *b = tu_bin();
    /* a directory of its own: no tokenizer.json beside the checkpoint */
    char *dbp = tu_path("e.db"), *ck = tu_path("sub/e.safetensors"), *bad = tu_path("bad.safetensors");
    assert_int_equal(tu_run("mkdir -p %s/sub", tu_tmpdir()), 0);
    char *tok = tok_fixture(), *err = NULL, cmd[8192];
    sqlite3 *db = tu_db("e.db");
    assert_int_equal(tu_synthetic(db, "synth", 40, 20, 2, 6, 8, 5), 0);
    db_close(db);
    assert_int_equal(tu_run("%s cf --db %s --epochs 2 --eval-every 2 --dim %d --batch 256 --quiet", b, dbp, DIM), 0);
    assert_int_equal(tu_run("%s tokenize --db %s --K 2 --L 4 --dc 8 --h1 16 --h2 16 --epochs 2 --quiet", b, dbp), 0);

    snprintf(cmd, sizeof cmd, "%s finetune --db %s --init-from %s/none.safetensors --quiet", b, dbp, tu_tmpdir());
    assert_int_not_equal(run_err(&err, cmd), 0);
    assert_non_null(strstr(err, "--init-from: no file"));
    free(err);

    write_ckpt(ck, 1, DIM, 0);            /* no tokenizer.json beside it, none given */
    snprintf(cmd, sizeof cmd, "%s finetune --db %s --init-from %s --quiet", b, dbp, ck);
    assert_int_not_equal(run_err(&err, cmd), 0);
    assert_non_null(strstr(err, "give --tokenizer FILE"));
    free(err);

    assert_int_equal(tu_write_file(bad, "this is not a safetensors file"), 0);
    snprintf(cmd, sizeof cmd, "%s finetune --db %s --init-from %s --tokenizer %s --quiet", b, dbp, bad, tok);
    assert_int_not_equal(run_err(&err, cmd), 0);
    assert_non_null(strstr(err, "--init-from"));
    assert_non_null(strstr(err, "bad.safetensors"));
    free(err);

    snprintf(cmd, sizeof cmd, "%s finetune --db %s --init-from %s --tokenizer %s --quiet", b, dbp, ck, bad);
    assert_int_not_equal(run_err(&err, cmd), 0);
    assert_non_null(strstr(err, "not valid JSON"));
    free(err);

    write_ckpt(ck, 1, 8, 1);              /* a head for 8-d vectors; the cf vectors are 16-d */
    snprintf(cmd, sizeof cmd, "%s finetune --db %s --init-from %s --tokenizer %s --quiet", b, dbp, ck, tok);
    assert_int_not_equal(run_err(&err, cmd), 0);
    assert_non_null(strstr(err, "8-d vectors but the CF item vectors are 16-d"));
    free(err);

    write_ckpt(ck, 1, DIM, 0);
    snprintf(cmd, sizeof cmd, "%s finetune --db %s --init-from %s --tokenizer %s --d-model 64 --quiet", b, dbp, ck, tok);
    assert_int_not_equal(run_err(&err, cmd), 0);
    assert_non_null(strstr(err, "must match or be left out"));
    free(err);

    snprintf(cmd, sizeof cmd, "%s finetune --db %s --tokenizer %s --quiet", b, dbp, tok);
    assert_int_not_equal(run_err(&err, cmd), 0);
    assert_non_null(strstr(err, "--tokenizer needs --init-from"));
    free(err);
    free(dbp); free(ck); free(bad); free(tok);
}

/* Checkpoints of the running finetune run of the database at path (read-only peek). */
static int64_t running_checkpoints(const char *path) {
    sqlite3 *db;
    int64_t n = 0;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK) {
        sqlite3_busy_timeout(db, 1000);
        sqlite3_stmt *st;
        if (sqlite3_prepare_v2(db, "SELECT count(*) FROM checkpoints c JOIN stage_runs r ON r.id = c.run_id "
                                   "WHERE r.stage='finetune' AND r.status='running'", -1, &st, NULL) == SQLITE_OK) {
            if (sqlite3_step(st) == SQLITE_ROW) n = sqlite3_column_int64(st, 0);
            sqlite3_finalize(st);
        }
    }
    sqlite3_close(db);
    return n;
}

/* SIGKILL an --init-from run once it has a checkpoint, run it again, and compare the stored
 * model with an uninterrupted run's on a copy of the same upstream. */
static void killed_init_from_run_resumes(void **state) {
    (void)state;
    const char *b = tu_bin();
    char *a = tu_path("ra.db"), *c = tu_path("rc.db"), *ck = tu_path("r.safetensors"), *tok = tok_fixture();
    sqlite3 *db = tu_db("ra.db");
    assert_int_equal(tu_synthetic(db, "synth", 60, 30, 3, 8, 12, 9), 0);
    db_close(db);
    assert_int_equal(tu_run("%s cf --db %s --epochs 2 --eval-every 2 --dim %d --batch 256 --quiet", b, a, DIM), 0);
    assert_int_equal(tu_run("%s tokenize --db %s --K 2 --L 4 --dc 8 --h1 16 --h2 16 --epochs 2 --quiet", b, a), 0);
    assert_int_equal(tu_run("cp %s %s", a, c), 0);
    write_ckpt(ck, 21, DIM, 0);
    char args[4096];
    snprintf(args, sizeof args, "--init-from %s --tokenizer %s --epochs 2 --lr 3e-3 --ckpt-every 4 " FT, ck, tok);
    assert_int_equal(tu_run("%s finetune --db %s %s", b, a, args), 0);
    pid_t pid = fork();
    if (pid == 0) {
        char cmd[8192];
        snprintf(cmd, sizeof cmd, "exec %s finetune --db %s %s", b, c, args);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    int killed = 0, st = 0;
    for (int i = 0; i < 6000; i++) {            /* until the first checkpoint, at most 60 s */
        if (waitpid(pid, &st, WNOHANG) == pid) break;
        if (running_checkpoints(c) > 0) { killed = kill(pid, SIGKILL) == 0; waitpid(pid, &st, 0); break; }
        usleep(10000);
    }
    fprintf(stderr, "%s\n", killed ? "killed after a checkpoint" : "the run ended before a checkpoint was seen");
    assert_int_equal(tu_run("%s finetune --db %s %s", b, c, args), 0);
    db = db_open(a, 1);
    char *q = sqlite3_mprintf("ATTACH %Q AS other", c);
    assert_int_equal(sqlite3_exec(db, q, 0, 0, 0), SQLITE_OK);
    sqlite3_free(q);
    assert_int_equal(db_query_i64(db, 0, "SELECT count(*) FROM other.models"), 1);
    /* the killed run was continued, not replaced by a new one */
    assert_int_equal(db_query_i64(db, 0, "SELECT count(*) FROM other.stage_runs WHERE stage='finetune'"), 1);
    assert_int_equal(db_query_i64(db, 0, "SELECT (SELECT params FROM main.models) = (SELECT params FROM other.models)"), 1);
    db_close(db);
    free(a); free(c); free(ck); free(tok);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(init_from_checkpoint),
        cmocka_unit_test(init_from_errors),
        cmocka_unit_test(killed_init_from_run_resumes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
