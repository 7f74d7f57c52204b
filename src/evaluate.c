/* evaluate.c: `tokenrec evaluate` (methods tokenrec, lightgcn, popularity, generate, sasrec). */
#include "evaluate.h"
#include "cli.h"
#include "db.h"
#include "genrec.h"
#include "recmodel.h"
#include "retrieval.h"
#include "sasrec_fit.h"
#include "sasrec_stage.h"
#include "stage.h"
#include "unseen.h"
#include "util.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Each user's top list, kept in memory until the output transaction. */
typedef struct {
    int      topk;
    int32_t *items;      /* n_users x topk */
    float   *scores;
    int     *n;          /* per user */
} rec_sink;

static void sink_topk(void *ctx, int32_t user, const int32_t *items, const float *scores, int n) {
    rec_sink *s = ctx;
    memcpy(s->items + (size_t)user * s->topk, items, (size_t)n * sizeof *items);
    memcpy(s->scores + (size_t)user * s->topk, scores, (size_t)n * sizeof *scores);
    s->n[user] = n;
}

static void sink_alloc(rec_sink *s, int n_users) {
    s->items = tr_calloc((size_t)n_users * s->topk, sizeof *s->items);
    s->scores = tr_calloc((size_t)n_users * s->topk, sizeof *s->scores);
    s->n = tr_calloc((size_t)n_users, sizeof *s->n);
}

/* Write the buffered lists into recommendations (inside the caller's transaction). */
static int sink_write(sqlite3 *db, int64_t run, const rec_sink *s, int n_users) {
    sqlite3_stmt *ins = db_prep(db, "INSERT INTO recommendations (run_id, uid, rank, iid, score) VALUES (?,?,?,?,?)");
    if (!ins) return -1;
    int rc = 0;
    for (int32_t u = 0; u < n_users && !rc; u++)
        for (int r = 0; r < s->n[u] && !rc; r++) {
            sqlite3_bind_int64(ins, 1, run);
            sqlite3_bind_int(ins, 2, u);
            sqlite3_bind_int(ins, 3, r + 1);
            sqlite3_bind_int(ins, 4, s->items[(size_t)u * s->topk + r]);
            sqlite3_bind_double(ins, 5, s->scores[(size_t)u * s->topk + r]);
            rc = db_step_done(db, ins);
        }
    sqlite3_finalize(ins);
    return rc;
}

/* HR@k and NDCG@k of a split, and the number of users they are over (metric 'users', k 0:
 * the report's binomial intervals need it). */
static int put_metrics(sqlite3 *db, int64_t run, const char *method, const char *split, const retr_metrics *m) {
    if (db_put_metric(db, run, method, split, "users", 0, (double)m->n)) return -1;
    for (int i = 0; i < m->nk; i++)
        if (db_put_metric(db, run, method, split, "hr", m->ks[i], retr_hr(m, m->ks[i])) ||
            db_put_metric(db, run, method, split, "ndcg", m->ks[i], retr_ndcg(m, m->ks[i])))
            return -1;
    return 0;
}

/* Load cf vectors (entity, kind) of a cf run into out (n x D); returns D or -1. */
static int load_cf(sqlite3 *db, int64_t run, const char *entity, int n, float **out) {
    sqlite3_stmt *st = db_prep(db, "SELECT idx, vec FROM cf_vectors WHERE run_id=? AND entity=? AND kind='mean'");
    if (!st) return -1;
    sqlite3_bind_int64(st, 1, run);
    sqlite3_bind_text(st, 2, entity, -1, SQLITE_STATIC);
    int D = 0, got = 0;
    *out = NULL;
    while (sqlite3_step(st) == SQLITE_ROW) {
        int idx = sqlite3_column_int(st, 0);
        if (!*out) { D = sqlite3_column_bytes(st, 1) / 4; *out = tr_calloc((size_t)n * D, sizeof(float)); }
        if (idx >= 0 && idx < n && db_column_floats(st, 1, *out + (size_t)idx * D, D) == 0) got++;
    }
    sqlite3_finalize(st);
    if (got != n) { free(*out); *out = NULL; return tr_error("cf run %lld: %d of %d %s vectors", (long long)run, got, n, entity); }
    return D;
}

typedef struct {
    const char *dbpath, *dataset, *methods, *split;
    int batch, topk, threads, force, quiet, unseen;
    int beam, latency_users;             /* --method generate */
} ev_opts;

/* The seen / unseen table of evaluate --unseen. */
static void print_unseen(const char *method, const char *dataset, const retr_metrics *seen, int n_seen,
                         const retr_metrics *unseen, int n_unseen, const char *how) {
    printf("%s on %s: seen users (%d) vs held-out unseen users (%d, %s)\n", method, dataset,
           n_seen, n_unseen, how);
    printf("  %-8s %8s %8s %8s\n", "metric", "seen", "unseen", "ratio");
    for (int m = 0; m < 2; m++)
        for (int k = 10; k <= 30; k += 10) {
            double a = m ? retr_ndcg(seen, k) : retr_hr(seen, k);
            double b = m ? retr_ndcg(unseen, k) : retr_hr(unseen, k);
            char name[16];
            snprintf(name, sizeof name, "%s@%d", m ? "NDCG" : "HR", k);
            printf("  %-8s %8.4f %8.4f %8.2f\n", name, a, b, a > 0 ? b / a : 0.0);
        }
}

/* The methods, in the order --method all runs them, and the stage (a row of the stage table)
 * whose current run each scores; 'all' is every method whose stage has a current run. */
static const struct { const char *name; int stage; } methods[] = {
    {"popularity", STAGE_INGEST}, {"lightgcn", STAGE_CF}, {"tokenrec", STAGE_FINETUNE},
    {"generate", STAGE_FINETUNE_GEN}, {"sasrec", STAGE_SASREC}};
enum { N_METHODS = sizeof methods / sizeof *methods };

/* The stage whose run a method scores: evaluate's upstream for it. */
static const char *method_upstream(const char *method) {
    for (int i = 0; i < N_METHODS; i++)
        if (!strcmp(methods[i].name, method)) return stage_defs[methods[i].stage].name;
    return stage_defs[STAGE_FINETUNE].name;
}

/* Evaluate one method as its own evaluate run; prints and stores its metrics. */
static int eval_method(sqlite3 *db, const ev_opts *o, const char *method, const char *pj_base) {
    int generate = !strcmp(method, "generate"), is_sasrec = !strcmp(method, "sasrec");
    const char *upstream = method_upstream(method);
    size_t pjn = strlen(pj_base) + 64;
    char *pj = tr_malloc(pjn);
    if (generate) snprintf(pj, pjn, "{\"method\":\"%s\",\"beam\":%d,\"latency-users\":%d,%s", method,
                           o->beam, o->latency_users, pj_base + 1);
    else snprintf(pj, pjn, "{\"method\":\"%s\",%s", method, pj_base + 1);
    stage_run run;
    int b = stage_begin(&run, db, "evaluate", o->dataset, pj, upstream, o->force);
    free(pj);
    if (b == STAGE_UP_TO_DATE) {
        if (!o->quiet) fprintf(stderr, "[evaluate] %s on %s: up to date (run %lld)\n", method, o->dataset, (long long)run.id);
        return 0;
    }
    if (b < 0) return -1;
    stage_log_start(&run, o->quiet);
    int ks[3] = {10, 20, 30};
    retr_metrics valid, test, test_u;
    retr_metrics_init(&valid, 3, ks);
    retr_metrics_init(&test, 3, ks);
    retr_metrics_init(&test_u, 3, ks);
    int n_unseen = 0;
    uint8_t *held = NULL;
    int do_valid = !strcmp(o->split, "valid") || !strcmp(o->split, "both");
    rec_data d;
    memset(&d, 0, sizeof d);
    rec_loaded lm;
    memset(&lm, 0, sizeof lm);
    float *uvec = NULL, *ivec = NULL, *scores = NULL;
    double secs = 0;
    int rc = -1;
    rec_sink sink = {0};
    sink.topk = o->topk;
    gen_eval_out gout;
    memset(&gout, 0, sizeof gout);
    stage_progress(&run, 0, "%s: loading", method);
    if (!strcmp(method, "tokenrec")) {
        if (rec_model_load(db, run.upstream_run, &lm) != 0) goto fail;
        if (rec_data_load(db, o->dataset, lm.tokenize_run, lm.pool_kind, &d) != 0) goto fail;
        sink_alloc(&sink, d.n_users);
        uint8_t *frozen = NULL;
        int n_frozen = 0;
        if (o->unseen) {
            frozen = tr_malloc((size_t)d.n_users + 1);
            n_frozen = unseen_tok_frozen(db, lm.tokenize_run, frozen, d.n_users);
            if (n_frozen < 0) { free(frozen); goto fail; }
        }
        if (o->unseen && n_frozen <= 0) {
            free(frozen);
            tr_error("evaluate --unseen: tokenize run %lld has no unseen users; hold users out with "
                     "'tokenrec cf --holdout-users 0.1' and run tokenize and finetune again (or "
                     "'tokenrec run --unseen')", (long long)lm.tokenize_run);
            goto fail;
        }
        t5_reserve(lm.model, o->batch, prompt_max_len(&lm.vocab, d.cpi, lm.hist_cap));
        if (do_valid && rec_evaluate(lm.model, &lm.vocab, &d, 1, lm.hist_cap, PROMPT_TEST, lm.cosine,
                                     o->batch, &valid, 0, NULL, NULL) != 0) { free(frozen); goto fail; }
        stage_progress(&run, 0.5, "%s: test", method);
        double t0 = tr_monotonic();
        if (rec_evaluate(lm.model, &lm.vocab, &d, 2, lm.hist_cap, PROMPT_TEST, lm.cosine, o->batch,
                         &test, o->topk, sink_topk, &sink) != 0) { free(frozen); goto fail; }
        if (o->unseen) {
            /* the unseen users alone (those the frozen tokenizer tokenized; users with no
             * tokens are in neither group), with the template never seen in training */
            uint8_t *seen_skip = d.skip, *inv = tr_malloc((size_t)d.n_users);
            for (int32_t u = 0; u < d.n_users; u++) inv[u] = !frozen[u];
            free(frozen);
            frozen = NULL;
            d.skip = inv;
            stage_progress(&run, 0.75, "%s: unseen users", method);
            int erc = rec_evaluate(lm.model, &lm.vocab, &d, 2, lm.hist_cap, PROMPT_UNSEEN, lm.cosine,
                                   o->batch, &test_u, o->topk, sink_topk, &sink);
            d.skip = seen_skip;
            free(inv);
            if (erc != 0) goto fail;
            n_unseen = n_frozen;
        }
        secs = tr_monotonic() - t0;
    } else if (generate) {          /* autoregressive baseline: constrained beam search */
        if (rec_model_load(db, run.upstream_run, &lm) != 0) goto fail;
        if (rec_data_load(db, o->dataset, lm.tokenize_run, lm.pool_kind, &d) != 0) goto fail;
        sink_alloc(&sink, d.n_users);
        if (gen_eval(db, o->dataset, &lm, &d, o->beam, o->batch, do_valid ? &valid : NULL, &test, o->topk,
                     sink_topk, &sink, o->latency_users, o->quiet, &gout) != 0) goto fail;
        secs = gout.test_secs;
    } else if (is_sasrec) {         /* the model of the sasrec stage, on the test items */
        if (rec_sequences_load(db, o->dataset, &d) != 0) goto fail;
        sink_alloc(&sink, d.n_users);
        sasrec_model *sm = sasrec_model_load(db, run.upstream_run, o->batch);
        if (!sm) goto fail;
        /* users cf held out (cf --holdout-users) are left out of 'test', as for the other
         * methods; SASRec trains on every user's sequence, so it has no unseen-user test */
        int64_t hrun = stage_current_run(db, o->dataset, "cf");
        if (hrun) {
            held = tr_malloc((size_t)d.n_users + 1);
            n_unseen = unseen_cf_load(db, hrun, held, d.n_users);
            if (n_unseen < 0) { sasrec_free(sm); goto fail; }
        }
        if (n_unseen > 0) d.skip = held;
        double t0 = tr_monotonic();
        int erc = (do_valid && sasrec_rank(sm, &d, 1, o->batch, &valid, 0, NULL, NULL) != 0) ||
                  sasrec_rank(sm, &d, 2, o->batch, &test, o->topk, sink_topk, &sink) != 0;
        d.skip = NULL;                  /* held is freed on its own below */
        if (erc) { sasrec_free(sm); goto fail; }
        secs = tr_monotonic() - t0;
        sasrec_free(sm);
    } else {
        if (rec_sequences_load(db, o->dataset, &d) != 0) goto fail;
        sink_alloc(&sink, d.n_users);
        int32_t *users = tr_malloc((size_t)o->batch * sizeof *users);
        scores = tr_malloc((size_t)o->batch * d.n_items * sizeof *scores);
        int D = 0;
        float *pop = NULL;
        if (!strcmp(method, "lightgcn")) {
            if ((D = load_cf(db, run.upstream_run, "user", d.n_users, &uvec)) < 0 ||
                load_cf(db, run.upstream_run, "item", d.n_items, &ivec) < 0) { free(users); goto fail; }
        } else {
            pop = tr_calloc((size_t)d.n_items, sizeof *pop);      /* train popularity */
            int32_t *cnt = tr_malloc((size_t)d.n_items * sizeof *cnt);
            rec_train_counts(&d, cnt);
            for (int i = 0; i < d.n_items; i++) pop[i] = (float)cnt[i];
            free(cnt);
        }
        /* held-out users (cf --holdout-users): 'test' is the seen users whenever the cf run
         * (lightgcn: its upstream; popularity: the current one) has them, as tokenrec's;
         * --unseen adds the held-out users' 'test_unseen' (lightgcn: folded-in vectors) */
        int64_t hrun = !strcmp(method, "lightgcn") ? run.upstream_run : stage_current_run(db, o->dataset, "cf");
        if (hrun) {
            held = tr_malloc((size_t)d.n_users + 1);
            n_unseen = unseen_cf_load(db, hrun, held, d.n_users);
            if (n_unseen < 0) { free(users); free(pop); goto fail; }
        }
        if (o->unseen && n_unseen <= 0) {
            tr_error("evaluate --unseen: the cf run has no held-out users; run 'tokenrec cf "
                     "--holdout-users 0.1' first (or 'tokenrec run --unseen')");
            free(users); free(pop);
            goto fail;
        }
        double t0 = tr_monotonic();
        float *urows = D ? tr_malloc((size_t)o->batch * D * sizeof *urows) : NULL;
        for (int g = 0; g < (o->unseen ? 2 : 1); g++)
            for (int split = do_valid && !g ? 1 : 2; split <= 2; split++) {
                for (int32_t u0 = 0; u0 < d.n_users;) {
                    int n = 0;           /* the next batch of users of group g */
                    for (; u0 < d.n_users && n < o->batch; u0++)
                        if (!held || n_unseen <= 0 || held[u0] == g) users[n++] = u0;
                    if (!n) break;
                    if (pop) for (int i = 0; i < n; i++) memcpy(scores + (size_t)i * d.n_items, pop, (size_t)d.n_items * sizeof *pop);
                    else {
                        for (int i = 0; i < n; i++) memcpy(urows + (size_t)i * D, uvec + (size_t)users[i] * D, (size_t)D * sizeof *urows);
                        retr_scores(scores, urows, n, ivec, NULL, d.n_items, D, 0);
                    }
                    rec_rank_rows(&d, users, n, split, scores, split == 1 ? &valid : g ? &test_u : &test,
                                  split == 2 ? o->topk : 0, split == 2 ? sink_topk : NULL, &sink);
                }
            }
        free(urows);
        secs = tr_monotonic() - t0;
        free(users);
        free(pop);
    }
    /* everything is computed: only now take the write lock, for the outputs alone */
    if (stage_finish_begin(&run) != 0 || sink_write(db, run.id, &sink, d.n_users) != 0 ||
        put_metrics(db, run.id, method, "test", &test) != 0 ||
        (do_valid && put_metrics(db, run.id, method, "valid", &valid) != 0) ||
        (o->unseen && test_u.n > 0 && put_metrics(db, run.id, method, "test_unseen", &test_u) != 0) ||
        db_put_metric(db, run.id, method, "latency", "ms_per_user", 0, 1000 * secs / d.n_users) != 0 ||
        db_put_metric(db, run.id, method, "latency", "users_per_s", 0, d.n_users / (secs > 0 ? secs : 1e-9)) != 0)
        goto fail;
    for (int i = 0; i < gout.n; i++)
        if (db_put_metric(db, run.id, gout.rows[i].method, gout.rows[i].split, gout.rows[i].metric, gout.rows[i].k,
                       gout.rows[i].value) != 0) goto fail;
    if (stage_finish_commit(&run) != 0) goto fail;
    if (!o->quiet) {
        printf("%-12s %-8s HR@10 %.4f  NDCG@10 %.4f  HR@20 %.4f  NDCG@20 %.4f  HR@30 %.4f  NDCG@30 %.4f",
               method, o->dataset, retr_hr(&test, 10), retr_ndcg(&test, 10), retr_hr(&test, 20),
               retr_ndcg(&test, 20), retr_hr(&test, 30), retr_ndcg(&test, 30));
        if (do_valid) printf("  (valid HR@10 %.4f)", retr_hr(&valid, 10));
        printf("  %.3f ms/user, %.0f users/s\n", 1000 * secs / d.n_users, d.n_users / (secs > 0 ? secs : 1e-9));
        if (o->unseen && test_u.n == 0)
            printf("%s has no unseen-user test (its 'test' above is the seen users)\n", method);
        else if (o->unseen)
            print_unseen(method, o->dataset, &test, (int)test.n, &test_u, (int)test_u.n,
                         !strcmp(method, "tokenrec") ? "frozen-tokenizer tokens, unseen template" :
                         !strcmp(method, "lightgcn") ? "folded-in vectors" : "train popularity");
    }
    rc = 0;
    goto out;
fail: {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", tr_errmsg());
        stage_fail(&run, msg);
        tr_error("%s", msg);
    }
out:
    free(sink.items); free(sink.scores); free(sink.n); free(held);
    rec_data_free(&d);
    rec_loaded_free(&lm);
    free(uvec); free(ivec); free(scores);
    return rc;
}

static const char *usage_ev = "tokenrec evaluate [--dataset NAME] [--method all|tokenrec|lightgcn|popularity|generate|sasrec]";
static const char *summary_ev =
    "Recommend for every user and measure HR@{10,20,30} and NDCG@{10,20,30} over the full item\n"
    "set on the test items (history excluded). tokenrec: one forward pass of the finetuned model\n"
    "per user, then top-K by similarity to every item's CF vector. Baselines in the same harness:\n"
    "lightgcn (user vector . item vectors of the cf stage) and popularity (train counts).\n"
    "The top-50 per user go into the recommendations table.\n"
    "generate: the autoregressive baseline (finetune --objective generate): constrained beam search\n"
    "over the item token tuples, plus the latency of it and of generative retrieval side by side.\n"
    "sasrec: the model of the sasrec stage ('tokenrec sasrec'), a causal transformer over item ids.\n"
    "'all' is every method whose stage has a current run.";

int cmd_evaluate(int argc, char **argv) {
    ev_opts o = {DB_DEFAULT_PATH, NULL, "all", "test", 32, 50, 0, 0, 0, 0, 20, 256};
    cli_opt opts[] = {
        {"db", CLI_STR, &o.dbpath, "database file", 0},
        {"dataset", CLI_STR, &o.dataset, "dataset (default: the last ingested)", 0},
        {"method", CLI_STR, &o.methods, "all, tokenrec, lightgcn, popularity, generate or sasrec (comma list allowed)", 0},
        {"beam", CLI_INT, &o.beam, "generate: beam size (in the run's settings for generate only)", 0},
        {"latency-users", CLI_INT, &o.latency_users, "generate: users timed per method and batch size (0: no latency; in generate's settings)", 0},
        {"split", CLI_STR, &o.split, "test, or both (valid too)", 1},
        {"batch", CLI_INT, &o.batch, "users per forward pass", 0},
        {"topk", CLI_INT, &o.topk, "recommendations stored per user", 1},
        {"threads", CLI_INT, &o.threads, "threads (0: all cores)", 0},
        {"force", CLI_FLAG, &o.force, "evaluate again even if up to date", 0},
        {"quiet", CLI_FLAG, &o.quiet, "print nothing", 0},
        {"unseen", CLI_FLAG, &o.unseen, "also test the users cf held out (cf --holdout-users) with the unseen-user "
         "template (split test_unseen), side by side with the seen users", 0},
        CLI_OPT_END};
    int rc = cli_parse(argc, argv, opts, usage_ev, summary_ev);
    if (rc) return rc > 0 ? 0 : -1;
    if (strcmp(o.split, "test") && strcmp(o.split, "both") && strcmp(o.split, "valid"))
        return tr_error("--split: expected test or both, got '%s'", o.split);
    if (o.batch < 1 || o.topk < 1 || o.topk > 256) return tr_error("--batch must be positive and --topk in 1..256");
    if (o.beam < 1 || o.beam > 1024 || o.latency_users < 0) return tr_error("--beam must be in 1..1024 and --latency-users >= 0");
    t5_set_threads(o.threads);
    stage_cmd c;
    if (stage_cmd_open(&c, o.dbpath, o.dataset) != 0) return -1;
    sqlite3 *db = c.db;
    o.dataset = c.dataset;
    char *pj = cli_params_json(opts);
    if (o.unseen)                 /* a param only when set: runs without it keep their fingerprint */
        pj = cli_json_append(pj, "\"unseen\":1");
    rc = 0;
    int ran = 0;
    for (int i = 0; i < N_METHODS && !rc; i++) {
        int want;
        if (!strcmp(o.methods, "all"))
            want = stage_current_run(db, o.dataset, stage_defs[methods[i].stage].name) != 0;
        else
            want = strstr(o.methods, methods[i].name) != NULL;
        if (!want) continue;
        ran++;
        rc = eval_method(db, &o, methods[i].name, pj);
    }
    if (!rc && !ran) rc = tr_error("--method: nothing to evaluate ('%s'; expected all, tokenrec, lightgcn, popularity, generate, sasrec)", o.methods);
    free(pj);
    return stage_cmd_close(&c, rc);
}
