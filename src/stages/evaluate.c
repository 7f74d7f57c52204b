/* evaluate.c: `tokenrec evaluate` (methods tokenrec, lightgcn, popularity, generate, sasrec). */
#include "evaluate.h"
#include "causalrec.h"
#include "cli.h"
#include "db.h"
#include "dist_stage.h"
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

/* One evaluate run of one method: what the method loads, what it measures, and what
 * eval_method writes and prints from it. */
typedef struct {
    sqlite3       *db;
    const ev_opts *o;
    const char    *method;
    stage_run      run;
    int            do_valid;
    rec_data       d;
    rec_loaded     lm;                 /* tokenrec, generate: the finetuned model */
    causal_loaded  cl;                 /* tokenrec of finetune --arch causal: the model (cl.m) */
    sasrec_model  *sm;                 /* sasrec */
    float         *uvec, *ivec, *pop;  /* lightgcn: cf vectors (D wide); popularity: counts */
    int            D;
    uint8_t       *held;               /* users cf held out (held[u] == 1), n_unseen of them */
    int            n_unseen;
    uint8_t       *frozen;             /* tokenrec --unseen: users the frozen tokenizer tokenized */
    int            n_frozen;
    retr_metrics   valid, test, test_u;
    rec_sink       sink;
    gen_eval_out   gout;               /* generate: latency rows */
    double         secs;               /* scoring seconds of the test split */
} ev_ctx;

/* The held-out users of cf run hrun (none when hrun is 0) into c->held and c->n_unseen. */
static int load_held(ev_ctx *c, int64_t hrun) {
    if (!hrun) return 0;
    c->held = tr_malloc((size_t)c->d.n_users + 1);
    c->n_unseen = unseen_cf_load(c->db, hrun, c->held, c->d.n_users);
    return c->n_unseen < 0 ? -1 : 0;
}

/* tokenrec, generate: the finetune run's model and the data of its tokenize run. */
static int load_finetuned(ev_ctx *c) {
    int causal = causal_is_stored(c->db, c->run.upstream_run);
    if (causal < 0) return -1;
    if (causal) {
        if (strcmp(c->method, "tokenrec"))
            return tr_error("the finetune run %lld is --arch causal: evaluate it with --method tokenrec",
                            (long long)c->run.upstream_run);
        return causal_load(c->db, c->o->dataset, c->run.upstream_run, c->o->batch, &c->d, &c->cl);
    }
    if (rec_model_load(c->db, c->run.upstream_run, &c->lm) != 0) return -1;
    return rec_data_load(c->db, c->o->dataset, c->lm.tokenize_run, c->lm.pool_kind, &c->d);
}

/* The users the frozen tokenizer tokenized (evaluate --unseen) into c->frozen; -1 with
 * an actionable error when there are none. */
static int load_frozen(ev_ctx *c, int64_t tokenize_run) {
    c->frozen = tr_malloc((size_t)c->d.n_users + 1);
    c->n_frozen = unseen_tok_frozen(c->db, tokenize_run, c->frozen, c->d.n_users);
    if (c->n_frozen < 0) return -1;
    if (c->n_frozen == 0)
        return tr_error("evaluate --unseen: tokenize run %lld has no unseen users; hold users out with "
                        "'tokenrec cf --holdout-users 0.1' and run tokenize and finetune again (or "
                        "'tokenrec run --unseen')", (long long)tokenize_run);
    return 0;
}

/* One split of the tokenrec model into met: the causal LLM (finetune --arch causal), or the
 * T5 model with template tmpl; keep: the top-K lists go to the sink. */
static int rank_tokenrec(ev_ctx *c, int split, int tmpl, retr_metrics *met, int keep) {
    const ev_opts *o = c->o;
    int topk = keep ? o->topk : 0;
    rec_topk_fn fn = keep ? sink_topk : NULL;
    void *ctx = keep ? &c->sink : NULL;
    if (c->cl.m)        /* rank 0 alone (tokenrec is not shared out under mpirun) */
        return sasrec_rank(c->cl.m, &c->d, c->cl.rows.user_rows, &c->cl.blend, split, o->batch, 0, met, topk, fn,
                           ctx);
    return rec_evaluate(c->lm.model, &c->lm.vocab, &c->d, split, c->lm.hist_cap, tmpl, c->lm.cosine, o->batch,
                        met, topk, fn, ctx);
}

/* tokenrec: one forward pass per user (T5: its prompt; causal: its tokens, where the model
 * has a user position, and last hist-cap items), top-K by the score against the item side;
 * with --unseen, the users the frozen tokenizer tokenized alone (T5: with the template never
 * seen in training; a causal model without the user position reads their history alone). */
static int score_tokenrec(ev_ctx *c) {
    const ev_opts *o = c->o;
    rec_data *d = &c->d;
    rec_loaded *lm = &c->lm;
    if (o->unseen && load_frozen(c, c->cl.m ? c->cl.tokenize_run : lm->tokenize_run) != 0) return -1;
    if (!c->cl.m) t5_reserve(lm->model, o->batch, prompt_max_len(&lm->vocab, d->cpi, lm->hist_cap));
    if (c->do_valid && rank_tokenrec(c, 1, PROMPT_TEST, &c->valid, 0) != 0) return -1;
    stage_progress(&c->run, 0.5, "%s: test", c->method);
    double t0 = tr_monotonic();
    if (rank_tokenrec(c, 2, PROMPT_TEST, &c->test, 1) != 0) return -1;
    if (o->unseen) {
        /* the unseen users alone (those the frozen tokenizer tokenized; users with no
         * tokens are in neither group) */
        uint8_t *seen_skip = d->skip, *inv = tr_malloc((size_t)d->n_users);
        for (int32_t u = 0; u < d->n_users; u++) inv[u] = !c->frozen[u];
        d->skip = inv;
        stage_progress(&c->run, 0.75, "%s: unseen users", c->method);
        int erc = rank_tokenrec(c, 2, PROMPT_UNSEEN, &c->test_u, 1);
        d->skip = seen_skip;
        free(inv);
        if (erc != 0) return -1;
        c->n_unseen = c->n_frozen;
    }
    c->secs = tr_monotonic() - t0;
    return 0;
}

/* generate: the autoregressive baseline, constrained beam search (and both latencies). */
static int score_generate(ev_ctx *c) {
    const ev_opts *o = c->o;
    if (gen_eval(c->db, o->dataset, &c->lm, &c->d, o->beam, o->batch, c->do_valid ? &c->valid : NULL,
                 &c->test, o->topk, sink_topk, &c->sink, o->latency_users, o->quiet, &c->gout) != 0)
        return -1;
    c->secs = c->gout.test_secs;
    return 0;
}

/* sasrec: the sequences, the sasrec stage's model, and the users cf held out (left out of
 * 'test' as for the other methods; SASRec trains on every user's sequence, so it has no
 * unseen-user test). */
static int load_sasrec(ev_ctx *c) {
    if (rec_sequences_load(c->db, c->o->dataset, &c->d) != 0) return -1;
    if (!(c->sm = sasrec_model_load(c->db, c->run.upstream_run, c->o->batch))) return -1;
    return load_held(c, stage_current_run(c->db, c->o->dataset, "cf"));
}

/* sasrec: rank the valid and test items with the model. */
static int score_sasrec(ev_ctx *c) {
    if (c->n_unseen > 0) c->d.skip = c->held;
    double t0 = tr_monotonic();
    int erc = (c->do_valid && sasrec_rank(c->sm, &c->d, NULL, NULL, 1, c->o->batch, 1, &c->valid, 0, NULL, NULL) != 0) ||
              sasrec_rank(c->sm, &c->d, NULL, NULL, 2, c->o->batch, 1, &c->test, c->o->topk, sink_topk, &c->sink) != 0;
    c->d.skip = NULL;                  /* held is freed on its own */
    if (erc) return -1;
    c->secs = tr_monotonic() - t0;
    return 0;
}

/* lightgcn, popularity: the sequences, the cf run's vectors (lightgcn) or the train counts
 * (popularity), and the users held out: 'test' is the seen users whenever the cf run
 * (lightgcn: its upstream; popularity: the current one) has them, as tokenrec's. */
static int load_baseline(ev_ctx *c) {
    int lightgcn = !strcmp(c->method, "lightgcn");
    if (rec_sequences_load(c->db, c->o->dataset, &c->d) != 0) return -1;
    if (lightgcn) {
        if ((c->D = load_cf(c->db, c->run.upstream_run, "user", c->d.n_users, &c->uvec)) < 0 ||
            load_cf(c->db, c->run.upstream_run, "item", c->d.n_items, &c->ivec) < 0) return -1;
    } else {
        c->pop = tr_calloc((size_t)c->d.n_items, sizeof *c->pop);      /* train popularity */
        int32_t *cnt = tr_malloc((size_t)c->d.n_items * sizeof *cnt);
        rec_train_counts(&c->d, cnt);
        for (int i = 0; i < c->d.n_items; i++) c->pop[i] = (float)cnt[i];
        free(cnt);
    }
    if (load_held(c, lightgcn ? c->run.upstream_run : stage_current_run(c->db, c->o->dataset, "cf")) != 0)
        return -1;
    if (c->o->unseen && c->n_unseen <= 0)
        return tr_error("evaluate --unseen: the cf run has no held-out users; run 'tokenrec cf "
                        "--holdout-users 0.1' first (or 'tokenrec run --unseen')");
    return 0;
}

/* lightgcn, popularity: score every item for batches of users (user vector . item vectors,
 * or the popularity row); --unseen adds the held-out users' 'test_unseen' (lightgcn:
 * folded-in vectors). */
static int score_baseline(ev_ctx *c) {
    const ev_opts *o = c->o;
    const rec_data *d = &c->d;
    int D = c->D;
    int32_t *users = tr_malloc((size_t)o->batch * sizeof *users);
    float *scores = tr_malloc((size_t)o->batch * d->n_items * sizeof *scores);
    double t0 = tr_monotonic();
    float *urows = D ? tr_malloc((size_t)o->batch * D * sizeof *urows) : NULL;
    for (int g = 0; g < (o->unseen ? 2 : 1); g++)
        for (int split = c->do_valid && !g ? 1 : 2; split <= 2; split++) {
            for (int32_t u0 = 0; u0 < d->n_users;) {
                int n = 0;           /* the next batch of users of group g */
                for (; u0 < d->n_users && n < o->batch; u0++)
                    if (!c->held || c->n_unseen <= 0 || c->held[u0] == g) users[n++] = u0;
                if (!n) break;
                if (c->pop) for (int i = 0; i < n; i++) memcpy(scores + (size_t)i * d->n_items, c->pop, (size_t)d->n_items * sizeof *c->pop);
                else {
                    for (int i = 0; i < n; i++) memcpy(urows + (size_t)i * D, c->uvec + (size_t)users[i] * D, (size_t)D * sizeof *urows);
                    retr_scores(scores, urows, n, c->ivec, NULL, d->n_items, D, 0);
                }
                rec_rank_rows(d, users, n, split, scores, split == 1 ? &c->valid : g ? &c->test_u : &c->test,
                              split == 2 ? o->topk : 0, split == 2 ? sink_topk : NULL, &c->sink);
            }
        }
    free(urows);
    c->secs = tr_monotonic() - t0;
    free(users);
    free(scores);
    return 0;
}

/* The methods, in the order --method all runs them: the stage (a row of the stage table)
 * whose current run each scores ('all' is every method whose stage has a current run), how
 * it loads and scores, whether beam and latency-users are in its settings, and what its
 * unseen users are scored with. */
typedef struct {
    const char *name;
    int         stage;
    int       (*load)(ev_ctx *);
    int       (*score)(ev_ctx *);
    int         beam_params;
    const char *unseen_how;
} ev_method;
static const ev_method methods[] = {
    {"popularity", STAGE_INGEST, load_baseline, score_baseline, 0, "train popularity"},
    {"lightgcn", STAGE_CF, load_baseline, score_baseline, 0, "folded-in vectors"},
    {"tokenrec", STAGE_FINETUNE, load_finetuned, score_tokenrec, 0, "frozen-tokenizer tokens, unseen template"},
    {"generate", STAGE_FINETUNE_GEN, load_finetuned, score_generate, 1, NULL},  /* no unseen-user test */
    {"sasrec", STAGE_SASREC, load_sasrec, score_sasrec, 0, NULL}};
enum { N_METHODS = sizeof methods / sizeof *methods };

/* Does the method run data-parallel under mpirun (its users sharded across the ranks)? The
 * others run on rank 0 alone while the rest wait. */
static int method_dist(const ev_method *m) { return m->score == score_sasrec; }

/* Under mpirun, after rank 0's load: its inputs on every rank, the top-K lists sized, and
 * the scoring of each rank's share of the users (every rank gets the metrics); then the
 * lists summed on rank 0 (each user's list is nonzero on one rank only). Returns 0 or -1. */
static int score_shared(ev_ctx *c, const ev_method *m) {
    dist_bcast_sequences(&c->d);
    if (dist_bcast_sasrec(&c->sm, c->o->batch) != 0) return -1;
    c->n_unseen = dist_bcast_int(c->n_unseen);
    int has_held = dist_bcast_int(c->held != NULL);
    if (has_held) dist_bcast_alloc((void **)&c->held, (size_t)c->d.n_users + 1);
    if (dist_rank() != 0) sink_alloc(&c->sink, c->d.n_users);
    if (m->score(c) != 0) return -1;
    size_t n = (size_t)c->d.n_users * c->sink.topk;
    dist_reduce_sum(c->sink.items, n, DIST_I32);
    dist_reduce_sum(c->sink.scores, n, DIST_F32);
    dist_reduce_sum(c->sink.n, (size_t)c->d.n_users, DIST_I32);
    return 0;
}

/* A rank other than 0 under mpirun: score its share of each data-parallel method rank 0
 * announces (-1: no more). Returns 0 or -1. */
static int eval_worker(const ev_opts *o) {
    for (int i; (i = dist_bcast_int(0)) >= 0;) {
        if (i >= N_METHODS || !method_dist(&methods[i])) continue;
        int go = dist_bcast_int(0);
        if (go < 0) return tr_error("rank 0 stopped (its error above)");
        if (go == 0) continue;                     /* up to date */
        ev_ctx c;
        memset(&c, 0, sizeof c);
        c.o = o;
        c.method = methods[i].name;
        int ks[3] = {10, 20, 30};
        retr_metrics_init(&c.valid, 3, ks);
        retr_metrics_init(&c.test, 3, ks);
        retr_metrics_init(&c.test_u, 3, ks);
        c.do_valid = !strcmp(o->split, "valid") || !strcmp(o->split, "both");
        c.sink.topk = o->topk;
        int rc = score_shared(&c, &methods[i]);
        free(c.sink.items); free(c.sink.scores); free(c.sink.n); free(c.held);
        rec_data_free(&c.d);
        sasrec_free(c.sm);
        if (rc) return -1;
    }
    return 0;
}

/* Store the run's recommendations and metrics in one write transaction, then commit. */
static int write_outputs(ev_ctx *c) {
    stage_run *run = &c->run;
    const char *method = c->method;
    double secs = c->secs;
    int n_users = c->d.n_users;
    /* everything is computed: only now take the write lock, for the outputs alone */
    if (stage_finish_begin(run) != 0 || sink_write(c->db, run->id, &c->sink, n_users) != 0 ||
        put_metrics(c->db, run->id, method, "test", &c->test) != 0 ||
        (c->do_valid && put_metrics(c->db, run->id, method, "valid", &c->valid) != 0) ||
        (c->o->unseen && c->test_u.n > 0 && put_metrics(c->db, run->id, method, "test_unseen", &c->test_u) != 0) ||
        db_put_metric(c->db, run->id, method, "latency", "ms_per_user", 0, 1000 * secs / n_users) != 0 ||
        db_put_metric(c->db, run->id, method, "latency", "users_per_s", 0, n_users / (secs > 0 ? secs : 1e-9)) != 0)
        return -1;
    for (int i = 0; i < c->gout.n; i++)
        if (db_put_metric(c->db, run->id, c->gout.rows[i].method, c->gout.rows[i].split, c->gout.rows[i].metric,
                          c->gout.rows[i].k, c->gout.rows[i].value) != 0) return -1;
    return stage_finish_commit(run);
}

/* The method's line of metrics (and the seen / unseen table of --unseen). */
static void print_result(const ev_ctx *c, const ev_method *m) {
    const ev_opts *o = c->o;
    const retr_metrics *test = &c->test;
    double secs = c->secs;
    int n_users = c->d.n_users;
    printf("%-12s %-8s HR@10 %.4f  NDCG@10 %.4f  HR@20 %.4f  NDCG@20 %.4f  HR@30 %.4f  NDCG@30 %.4f",
           m->name, o->dataset, retr_hr(test, 10), retr_ndcg(test, 10), retr_hr(test, 20),
           retr_ndcg(test, 20), retr_hr(test, 30), retr_ndcg(test, 30));
    if (c->do_valid) printf("  (valid HR@10 %.4f)", retr_hr(&c->valid, 10));
    printf("  %.3f ms/user, %.0f users/s\n", 1000 * secs / n_users, n_users / (secs > 0 ? secs : 1e-9));
    if (o->unseen && (c->test_u.n == 0 || !m->unseen_how))
        printf("%s has no unseen-user test (its 'test' above is the seen users)\n", m->name);
    else if (o->unseen) {   /* a causal model without the user position reads the history alone */
        char how[160];
        snprintf(how, sizeof how, "%s%s",
                 c->cl.rows.user_rows ? "frozen-tokenizer tokens at the user position" : "their history alone, no user position",
                 sasrec_blend_active(&c->cl.blend) ? ", CF blend with folded-in vectors" : "");
        print_unseen(m->name, o->dataset, test, (int)test->n, &c->test_u, (int)c->test_u.n,
                     m->score != score_tokenrec || !c->cl.m ? m->unseen_how : how);
    }
}

/* Evaluate one method as its own evaluate run; prints and stores its metrics. */
static int eval_method(sqlite3 *db, const ev_opts *o, const ev_method *m, const char *pj_base) {
    size_t pjn = strlen(pj_base) + 64;
    char *pj = tr_malloc(pjn);
    if (m->beam_params) snprintf(pj, pjn, "{\"method\":\"%s\",\"beam\":%d,\"latency-users\":%d,%s", m->name,
                                 o->beam, o->latency_users, pj_base + 1);
    else snprintf(pj, pjn, "{\"method\":\"%s\",%s", m->name, pj_base + 1);
    ev_ctx c;
    memset(&c, 0, sizeof c);
    c.db = db;
    c.o = o;
    c.method = m->name;
    int b = stage_begin(&c.run, db, "evaluate", o->dataset, pj, stage_defs[m->stage].name, o->force);
    free(pj);
    int shared = dist_size() > 1 && method_dist(m);
    if (shared) dist_bcast_int(b == 0 ? 1 : b == STAGE_UP_TO_DATE ? 0 : -1);
    if (b == STAGE_UP_TO_DATE) {
        if (!o->quiet) fprintf(stderr, "[evaluate] %s on %s: up to date (run %lld)\n", m->name, o->dataset, (long long)c.run.id);
        return 0;
    }
    if (b < 0) return -1;
    stage_log_start(&c.run, o->quiet);
    int ks[3] = {10, 20, 30};
    retr_metrics_init(&c.valid, 3, ks);
    retr_metrics_init(&c.test, 3, ks);
    retr_metrics_init(&c.test_u, 3, ks);
    c.do_valid = !strcmp(o->split, "valid") || !strcmp(o->split, "both");
    c.sink.topk = o->topk;
    stage_progress(&c.run, 0, "%s: loading", m->name);
    int rc = m->load(&c);
    if (!rc) {
        sink_alloc(&c.sink, c.d.n_users);
        rc = shared ? score_shared(&c, m) : m->score(&c);
    }
    if (!rc) rc = write_outputs(&c);
    if (!rc && !o->quiet) print_result(&c, m);
    if (rc) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", tr_errmsg());
        stage_fail(&c.run, msg);
        tr_error("%s", msg);
        rc = -1;
    }
    free(c.sink.items); free(c.sink.scores); free(c.sink.n); free(c.held); free(c.frozen);
    rec_data_free(&c.d);
    rec_loaded_free(&c.lm);
    sasrec_free(c.sm);
    causal_loaded_free(&c.cl);
    free(c.uvec); free(c.ivec); free(c.pop);
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
    t5_set_threads(o.threads || dist_size() == 1 ? o.threads : dist_default_threads());
    if (dist_rank() != 0) return eval_worker(&o);   /* rank 0 alone opens the database */
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
        if (dist_size() > 1) dist_bcast_int(i);    /* the other ranks join the data-parallel ones */
        rc = eval_method(db, &o, &methods[i], pj);
    }
    if (!rc) dist_bcast_int(-1);
    if (!rc && !ran) rc = tr_error("--method: nothing to evaluate ('%s'; expected all, tokenrec, lightgcn, popularity, generate, sasrec)", o.methods);
    free(pj);
    return stage_cmd_close(&c, rc);
}
