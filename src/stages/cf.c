/* cf.c: the `tokenrec cf` stage: trains LightGCN (or MF) with BPR on the train split,
 * validates every few epochs, keeps the best checkpoint, and writes its vectors and
 * metrics. Resumable: every checkpoint holds everything the next step depends on, so a
 * stopped and resumed run ends with the same bits as an uninterrupted one. */
#include "cf.h"
#include "cli.h"
#include "db.h"
#include "nn.h"
#include "stage.h"
#include "unseen.h"
#include "util.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CF_CKPT_MAGIC 0x31464354u   /* "TCF1" */
#define CF_CKPT_SECONDS 120.0       /* checkpoint at least this often between evaluations */

/* Everything besides the float tables that a resumed run needs. Plain fixed-width fields. */
typedef struct {
    uint32_t   magic, dim;
    int64_t    n_nodes, n_train;
    int64_t    epoch;           /* completed epochs */
    int64_t    pos;             /* next triple of the current epoch (0: epoch not started) */
    int64_t    step;            /* Adam steps taken */
    rng_t      rng;
    double     loss_sum;        /* of the current epoch's batches */
    int64_t    loss_batches;
    double     best_score;      /* selection metric of the best evaluation, -1 before any */
    int64_t    best_epoch;
    int64_t    bad_evals;       /* evaluations since the best one */
    double     best[4];         /* valid hr10, hr20, ndcg10, ndcg20 of the best */
    double     last_hr20;       /* of the latest evaluation */
    double     last_loss;       /* of the latest completed epoch */
} cf_state;

typedef struct {
    const char *dbpath, *dataset, *model, *sampler, *select;
    int dim, layers, batch, epochs, eval_every, patience, seed, threads, force, quiet;
    int stop_after;
    double lr, decay, init_std, holdout_users;
} cf_opts;

/* The model's buffers, all (n, C): parameters, Adam moments, gradient, final
 * representation, two propagation scratch tables, and the best parameters so far. */
typedef struct {
    cf_graph g;
    int      C, L;
    size_t   m;                 /* n * C */
    float   *e0, *adam_m, *adam_v, *grad, *mean, *t0, *t1, *best;
} cf_model;

static void model_free(cf_model *M) {
    cf_graph_free(&M->g);
    free(M->e0); free(M->adam_m); free(M->adam_v); free(M->grad);
    free(M->mean); free(M->t0); free(M->t1); free(M->best);
}

/* Evaluate the parameters e0 on split (1 valid, 2 test): propagate into M->mean, rank. */
static void model_eval(cf_model *M, const cf_data *d, const float *e0, int split, cf_metrics *out) {
    cf_propagate_forward(M->mean, &M->g, e0, M->C, M->L, M->t0, M->t1);
    cf_evaluate(d, M->mean, M->mean + (size_t)d->n_users * M->C, M->C, split, out);
}

/* One checkpoint: the state, the float tables, and the epoch's triple order. */
static int save_ckpt(stage_run *run, const cf_state *s, const cf_model *M, const uint32_t *order,
                     int64_t n_order) {
    size_t fb = M->m * sizeof(float);
    const stage_blob b[] = {{"state", s, sizeof *s}, {"e0", M->e0, fb}, {"adam_m", M->adam_m, fb},
                            {"adam_v", M->adam_v, fb}, {"best", M->best, fb},
                            {"order", order, (size_t)n_order * sizeof *order}};
    return stage_ckpt_save(run, s->step, b, 6);
}

/* Restore a checkpoint: 0, 1 when the run has none yet, -1 when it does not fit. */
static int load_ckpt(stage_run *run, cf_state *s, cf_model *M, uint32_t *order, int64_t n_order) {
    cf_state t;
    int g = stage_ckpt_read(run, "state", &t, sizeof t);
    if (g > 0) tr_error_clear();
    if (g != 0) return g;
    if (t.magic != CF_CKPT_MAGIC || t.dim != (uint32_t)M->C || t.n_nodes != M->g.n ||
        t.n_train != n_order)
        return tr_error("cf: the checkpoint of run %lld does not match this dataset and settings; "
                        "start over with --force", (long long)run->id);
    size_t fb = M->m * sizeof(float);
    if (stage_ckpt_read(run, "e0", M->e0, fb) != 0 || stage_ckpt_read(run, "adam_m", M->adam_m, fb) != 0 ||
        stage_ckpt_read(run, "adam_v", M->adam_v, fb) != 0 || stage_ckpt_read(run, "best", M->best, fb) != 0 ||
        stage_ckpt_read(run, "order", order, (size_t)n_order * sizeof *order) != 0)
        return -1;
    *s = t;
    return 0;
}

/* HR and NDCG at 10 and 20 of a split into run_metrics, and the users they are over
 * (metric 'users', k 0). */
static int put_metrics(stage_run *run, const char *method, const char *split, const cf_metrics *m) {
    return stage_result(run, method, split, "hr", 10, m->hr10) ||
           stage_result(run, method, split, "hr", 20, m->hr20) ||
           stage_result(run, method, split, "ndcg", 10, m->ndcg10) ||
           stage_result(run, method, split, "ndcg", 20, m->ndcg20) ||
           stage_result(run, method, split, "users", 0, m->n_users) ? -1 : 0;
}

/* Write the vectors (user/item x ego/mean) and the metrics rows of the best parameters,
 * with the chosen epoch (split 'train', metric 'best_epoch'). */
static int write_outputs(stage_run *run, const cf_data *d, cf_model *M, const char *method,
                         const cf_metrics *valid, const cf_metrics *test, int64_t best_epoch) {
    sqlite3 *db = run->db;
    sqlite3_stmt *st = db_prep(db, "INSERT INTO cf_vectors (run_id, entity, kind, idx, vec) "
                                   "VALUES (?,?,?,?,?)");
    if (!st) return -1;
    const char *entity[2] = {"user", "item"}, *kind[2] = {"ego", "mean"};
    int32_t count[2] = {d->n_users, d->n_items};
    const float *table[2] = {M->best, M->mean};
    for (int e = 0; e < 2; e++)
        for (int k = 0; k < 2; k++)
            for (int32_t i = 0; i < count[e]; i++) {
                const float *v = table[k] + ((size_t)(e ? d->n_users : 0) + i) * M->C;
                sqlite3_bind_int64(st, 1, run->id);
                sqlite3_bind_text(st, 2, entity[e], -1, SQLITE_STATIC);
                sqlite3_bind_text(st, 3, kind[k], -1, SQLITE_STATIC);
                sqlite3_bind_int(st, 4, i);
                if (db_bind_floats(st, 5, v, M->C) != 0 || db_step_done(db, st) != 0) {
                    sqlite3_finalize(st);
                    return -1;
                }
            }
    sqlite3_finalize(st);
    return put_metrics(run, method, "valid", valid) || put_metrics(run, method, "test", test) ||
           stage_result(run, method, "train", "best_epoch", 0, (double)best_epoch) ? -1 : 0;
}

/* Fill a batch of triples (node ids) from the epoch's order (pairs sampler) or by drawing
 * a user uniformly among those with train items and one of its items (users sampler);
 * then one negative per triple. All draws come from s->rng, in batch order. */
static void make_batch(const cf_data *d, const cf_opts *o, cf_state *s, const uint32_t *order,
                       const int32_t *active, int32_t n_active, int B, int32_t *bu, int32_t *bp,
                       int32_t *bn) {
    int32_t U = d->n_users;
    for (int b = 0; b < B; b++) {
        int32_t u, i;
        if (o->sampler[0] == 'p') {
            int64_t k = order[s->pos + b];
            u = d->pair_user[k];
            i = d->pair_item[k];
        } else {
            u = active[rng_below(&s->rng, (uint32_t)n_active)];
            int64_t a = d->off[u], c = d->off[u + 1] - a;
            i = d->item[a + rng_below(&s->rng, (uint32_t)c)];
        }
        bu[b] = u;
        bp[b] = U + i;
        bn[b] = U + cf_sample_negative(d, u, &s->rng);
    }
}

/* "0.1234", or "-" before the first validation. buf holds 32 bytes. */
static const char *fmt_hr(char *buf, double hr) {
    if (hr < 0) return "-";
    snprintf(buf, 32, "%.4f", hr);
    return buf;
}

/* Each dataset's learning rate, batch and epoch cap where --lr, --batch and --epochs are
 * left at 0. LastFM keeps LightGCN's own setting (lr 1e-3, batch 2048, up to 1,000 epochs
 * with patience). The others are a time budget (the full preset on all four datasets in
 * under 2 hours on 2 cores), chosen on valid curves (README, "LightGCN"): a larger rate
 * reaches in tens of epochs what 1e-3 reaches in hundreds (Beauty valid HR@10 0.0694 at
 * epoch 100 with 5e-3; Clothing 0.0290 at 20 with 5e-3 against 0.0297 at 70 with 1e-3); on
 * ML-1M a batch of 8,192 costs a quarter of the propagations per epoch and with 1e-2 rises
 * faster per second than 2,048 at any rate tried (0.0884 at epoch 55). */
typedef struct { const char *dataset; double lr; int batch, epochs; } cf_preset;
static const cf_preset cf_presets[] = {
    /* dataset    lr     batch  epochs */
    {"other",     1e-3,  2048,  1000},
    {"beauty",    5e-3,  2048,  100},
    {"clothing",  5e-3,  2048,  40},
    {"ml-1m",     1e-2,  8192,  80},
};

/* The preset of a dataset (the first row when it has none). */
static const cf_preset *preset_for(const char *dataset) {
    for (size_t i = 1; i < sizeof cf_presets / sizeof *cf_presets; i++)
        if (!strcmp(cf_presets[i].dataset, dataset)) return &cf_presets[i];
    return &cf_presets[0];
}

int cf_default_epochs(const char *dataset) { return preset_for(dataset)->epochs; }

/* Options left at 0 take the dataset's preset. */
static void fill_defaults(cf_opts *o, const char *dataset) {
    const cf_preset *p = preset_for(dataset);
    if (o->lr == 0) o->lr = p->lr;
    if (o->batch == 0) o->batch = p->batch;
    if (o->epochs == 0) o->epochs = p->epochs;
}

/* Refuse bad options; before the dataset is known (!resolved) --lr, --batch and --epochs
 * may still be 0, the dataset's default. */
static int check_opts(const cf_opts *o, int resolved) {
    int z = !resolved;
    if (strcmp(o->model, "lightgcn") && strcmp(o->model, "mf"))
        return tr_error("--model: expected lightgcn or mf, got '%s'", o->model);
    if (strcmp(o->sampler, "pairs") && strcmp(o->sampler, "users"))
        return tr_error("--sampler: expected pairs or users, got '%s'", o->sampler);
    if (strcmp(o->select, "ndcg20") && strcmp(o->select, "hr20"))
        return tr_error("--select: expected ndcg20 or hr20, got '%s'", o->select);
    if (o->dim < 1 || o->dim > 4096) return tr_error("--dim: expected 1..4096, got %d", o->dim);
    if (o->layers < 0 || o->layers > 16) return tr_error("--layers: expected 0..16, got %d", o->layers);
    if (o->batch < 1 && !(z && o->batch == 0))
        return tr_error("--batch: expected at least 1 (0: the dataset's default), got %d", o->batch);
    if (o->epochs < 1 && !(z && o->epochs == 0))
        return tr_error("--epochs: expected at least 1 (0: the dataset's default), got %d", o->epochs);
    if (o->eval_every < 1) return tr_error("--eval-every: expected at least 1, got %d", o->eval_every);
    if (!(o->lr > 0) && !(z && o->lr == 0))
        return tr_error("--lr: expected a positive rate (0: the dataset's default), got %g", o->lr);
    if (!(o->decay >= 0)) return tr_error("--decay: expected 0 or more, got %g", o->decay);
    if (!(o->init_std > 0)) return tr_error("--init-std: expected a positive value, got %g", o->init_std);
    if (!(o->holdout_users >= 0 && o->holdout_users < 1))
        return tr_error("--holdout-users: expected a fraction in [0,1), got %g", o->holdout_users);
    return 0;
}

static const char usage_cf[] = "tokenrec cf [--dataset NAME] [--model lightgcn|mf] [options]";
static const char summary_cf[] =
    "Train LightGCN (or MF) with BPR on the train split, select the checkpoint on the valid\n"
    "items, and store the ego and propagated vectors of users and items (cf_vectors) and\n"
    "the valid/test HR and NDCG at 10 and 20 (run_metrics). An epoch is #train-pairs BPR\n"
    "triples: a uniform user and one of its train items (--sampler users, the default, as\n"
    "LightGCN-PyTorch), or every train pair once in a seeded shuffled order (--sampler\n"
    "pairs); each triple gets one uniform negative that is not a train item of the user.\n"
    "Validation every --eval-every epochs ranks all items for each user's valid item (train\n"
    "items excluded); the best by --select is kept; --patience validations without a better\n"
    "one stop training. Test (the last item, train and valid items excluded) is computed only\n"
    "for the kept checkpoint. Ctrl-C saves a checkpoint; the same command resumes it.";

/* The unseen-user outputs (inside the output transaction): the held-out users in
 * cf_holdout, and the test metrics of LightGCN retrieval for them with their folded-in
 * vectors (split 'test_unseen'): each held user's train items excluded, as for any user. */
static int write_holdout(stage_run *run, const cf_data *full, const uint8_t *held, const cf_model *M,
                         const char *method, cf_metrics *out) {
    int32_t U = full->n_users;
    cf_data h = *full;                  /* shallow: the full train lists, held users' targets */
    h.valid = tr_malloc((size_t)U * sizeof *h.valid);
    h.test = tr_malloc((size_t)U * sizeof *h.test);
    for (int32_t u = 0; u < U; u++) {
        h.valid[u] = held[u] ? full->valid[u] : -1;
        h.test[u] = held[u] ? full->test[u] : -1;
    }
    cf_evaluate(&h, M->mean, M->mean + (size_t)U * M->C, M->C, 2, out);
    free(h.valid);
    free(h.test);
    sqlite3 *db = run->db;
    sqlite3_stmt *st = db_prep(db, "INSERT INTO cf_holdout (run_id, uid) VALUES (?,?)");
    if (!st) return -1;
    for (int32_t u = 0; u < U; u++) {
        if (!held[u]) continue;
        sqlite3_bind_int64(st, 1, run->id);
        sqlite3_bind_int(st, 2, u);
        if (db_step_done(db, st) != 0) { sqlite3_finalize(st); return -1; }
    }
    sqlite3_finalize(st);
    return put_metrics(run, method, "test_unseen", out);
}

/* What training works with: the options and data, the model, the state a checkpoint holds,
 * the epoch's triple order, the users with train items, and one batch's buffers. */
typedef struct {
    stage_run     *run;
    const cf_opts *o;
    const cf_data *d;
    cf_model       M;
    cf_state       s;
    uint32_t      *order;
    int64_t        n_order;
    int32_t       *active, n_active;
    int32_t       *bu, *bp, *bn;
    float         *scratch;
    adamw_cfg      adam;
    double         t_train, t_eval, last_ckpt;
} cf_trainer;

static void trainer_free(cf_trainer *t) {
    model_free(&t->M);
    free(t->order); free(t->active); free(t->bu); free(t->bp); free(t->bn); free(t->scratch);
}

/* The graph, the model's buffers, the users with train items, and the batch buffers. */
static int trainer_init(cf_trainer *t, stage_run *run, const cf_opts *o, const cf_data *d) {
    memset(t, 0, sizeof *t);
    t->run = run;
    t->o = o;
    t->d = d;
    cf_model *M = &t->M;
    if (cf_graph_build(&M->g, d) != 0) return -1;
    M->C = o->dim;
    M->L = !strcmp(o->model, "mf") ? 0 : o->layers;
    M->m = (size_t)M->g.n * M->C;
    size_t fb = M->m * sizeof(float);
    M->e0 = tr_malloc(fb); M->adam_m = tr_calloc(M->m, sizeof(float));
    M->adam_v = tr_calloc(M->m, sizeof(float)); M->grad = tr_malloc(fb);
    M->mean = tr_malloc(fb); M->t0 = tr_malloc(fb); M->t1 = tr_malloc(fb); M->best = tr_malloc(fb);
    t->n_order = d->n_train;
    t->order = tr_malloc(((size_t)t->n_order + 1) * sizeof *t->order);
    t->active = tr_malloc(((size_t)d->n_users + 1) * sizeof *t->active);
    for (int32_t u = 0; u < d->n_users; u++)
        if (d->off[u + 1] > d->off[u]) t->active[t->n_active++] = u;
    if (t->n_order == 0 || t->n_active == 0)
        return tr_error("cf: %s has no train interactions; expected users with at least 3 interactions",
                        run->dataset);
    int B = o->batch;
    t->bu = tr_malloc((size_t)B * sizeof *t->bu); t->bp = tr_malloc((size_t)B * sizeof *t->bp);
    t->bn = tr_malloc((size_t)B * sizeof *t->bn);
    t->scratch = tr_malloc((size_t)3 * B * sizeof *t->scratch);
    t->adam = adamw_default((float)o->lr);
    t->adam.weight_decay = 0;   /* plain Adam: the L2 term is part of the loss */
    return 0;
}

/* The state to start from: the checkpoint of a resumed run, else a fresh initialisation. */
static int trainer_start(cf_trainer *t) {
    cf_state *s = &t->s;
    cf_model *M = &t->M;
    memset(s, 0, sizeof *s);
    if (t->run->resumed) {
        int g = load_ckpt(t->run, s, M, t->order, t->n_order);
        if (g <= 0) return g;
    }
    s->magic = CF_CKPT_MAGIC;
    s->dim = (uint32_t)M->C;
    s->n_nodes = M->g.n;
    s->n_train = t->n_order;
    s->best_score = -1;
    s->last_hr20 = -1;
    s->last_loss = NAN;
    rng_seed(&s->rng, rng_stream((uint64_t)(int64_t)t->o->seed, "cf"));
    for (size_t k = 0; k < M->m; k++) M->e0[k] = (float)t->o->init_std * rng_normal(&s->rng);
    memcpy(M->best, M->e0, M->m * sizeof(float));
    for (int64_t k = 0; k < t->n_order; k++) t->order[k] = (uint32_t)k;
    return 0;
}

/* A stop was asked for: Ctrl-C, or --stop-after-steps reached. */
static int stop_asked(const cf_trainer *t) {
    return stage_should_stop() || (t->o->stop_after > 0 && t->s.step >= t->o->stop_after);
}

/* One Adam step on a batch of nb triples: propagate, BPR loss, back-propagate. */
static float train_step(cf_trainer *t, int nb) {
    cf_model *M = &t->M;
    size_t fb = M->m * sizeof(float);
    make_batch(t->d, t->o, &t->s, t->order, t->active, t->n_active, nb, t->bu, t->bp, t->bn);
    /* forward: mean = propagate(e0); loss on the batch rows */
    cf_propagate_forward(M->mean, &M->g, M->e0, M->C, M->L, M->t0, M->t1);
    memset(M->grad, 0, fb);
    memset(M->t0, 0, fb);
    float loss = cf_bpr_forward_backward(M->mean, M->e0, t->bu, t->bp, t->bn, nb, M->C,
                                         (float)t->o->decay, M->t0, M->grad, t->scratch, NULL);
    /* backward: grad += propagateᵀ(dmean), then one Adam step on every row */
    cf_propagate_backward(M->grad, &M->g, M->t0, M->C, M->L, M->t1);
    t->s.step++;
    adamw_update(&t->adam, M->e0, M->grad, M->adam_m, M->adam_v, M->m, (long)t->s.step);
    return loss;
}

/* The rest of the current epoch, checkpointing every CF_CKPT_SECONDS and on a stop.
 * Returns 0 at the epoch's end, 130 when stopped, -1 on error. */
static int train_epoch(cf_trainer *t) {
    const cf_opts *o = t->o;
    cf_state *s = &t->s;
    double tb = tr_monotonic(), frac_per_triple = 1.0 / ((double)o->epochs * (double)t->n_order);
    char hrbuf[32];
    if (s->pos == 0 && o->sampler[0] == 'p') rng_shuffle_u32(&s->rng, t->order, (size_t)t->n_order);
    while (s->pos < t->n_order) {
        int nb = (int)(t->n_order - s->pos < o->batch ? t->n_order - s->pos : o->batch);
        float loss = train_step(t, nb);
        s->loss_sum += loss;
        s->loss_batches++;
        s->pos += nb;
        stage_progress(t->run, (double)(s->epoch * t->n_order + s->pos) * frac_per_triple,
                       "epoch %lld/%d loss %.4f valid HR@20 %s", (long long)s->epoch + 1,
                       o->epochs, s->loss_sum / s->loss_batches, fmt_hr(hrbuf, s->last_hr20));
        int stop = stop_asked(t);
        if (stop || tr_monotonic() - t->last_ckpt > CF_CKPT_SECONDS) {
            if (s->pos >= t->n_order) break;        /* the epoch's end checkpoints */
            if (save_ckpt(t->run, s, &t->M, t->order, t->n_order) != 0) return -1;
            t->last_ckpt = tr_monotonic();
            if (stop) { stage_stopped(t->run); return 130; }
        }
    }
    t->t_train += tr_monotonic() - tb;
    return 0;
}

/* Validate the current parameters; keep them as the best when the selection metric rose. */
static int validate(cf_trainer *t) {
    cf_state *s = &t->s;
    double te = tr_monotonic();
    cf_metrics v;
    model_eval(&t->M, t->d, t->M.e0, 1, &v);
    t->t_eval += tr_monotonic() - te;
    s->last_hr20 = v.hr20;
    double score = !strcmp(t->o->select, "hr20") ? v.hr20 : v.ndcg20;
    if (score > s->best_score) {
        s->best_score = score;
        s->best_epoch = s->epoch;
        s->bad_evals = 0;
        s->best[0] = v.hr10; s->best[1] = v.hr20; s->best[2] = v.ndcg10; s->best[3] = v.ndcg20;
        memcpy(t->M.best, t->M.e0, t->M.m * sizeof(float));
    } else {
        s->bad_evals++;
    }
    if (stage_metric(t->run, s->epoch, "valid_hr10", v.hr10) != 0 ||
        stage_metric(t->run, s->epoch, "valid_hr20", v.hr20) != 0 ||
        stage_metric(t->run, s->epoch, "valid_ndcg10", v.ndcg10) != 0 ||
        stage_metric(t->run, s->epoch, "valid_ndcg20", v.ndcg20) != 0)
        return -1;
    if (!t->o->quiet && !isatty(2))
        fprintf(stderr, "[cf] epoch %lld loss %.4f valid HR@10 %.4f HR@20 %.4f NDCG@20 %.4f%s\n",
                (long long)s->epoch, s->last_loss, v.hr10, v.hr20, v.ndcg20, s->bad_evals ? "" : " (best)");
    return 0;
}

/* After an epoch: its loss, a validation with a checkpoint every --eval-every epochs, and a
 * stop when asked (after a checkpoint). Returns 0, 130 when stopped, or -1. */
static int end_epoch(cf_trainer *t) {
    const cf_opts *o = t->o;
    cf_state *s = &t->s;
    s->epoch++;
    s->pos = 0;
    s->last_loss = s->loss_sum / (s->loss_batches ? s->loss_batches : 1);
    s->loss_sum = 0;
    s->loss_batches = 0;
    if (stage_metric(t->run, s->epoch, "loss", s->last_loss) != 0) return -1;
    int evaluated = s->epoch % o->eval_every == 0 || s->epoch == o->epochs;
    if (evaluated) {
        if (validate(t) != 0 || save_ckpt(t->run, s, &t->M, t->order, t->n_order) != 0) return -1;
        t->last_ckpt = tr_monotonic();
    }
    char hrbuf[32];
    stage_progress(t->run, (double)s->epoch / o->epochs, "epoch %lld/%d loss %.4f valid HR@20 %s",
                   (long long)s->epoch, o->epochs, s->last_loss, fmt_hr(hrbuf, s->last_hr20));
    if (!stop_asked(t)) return 0;
    if (!evaluated && save_ckpt(t->run, s, &t->M, t->order, t->n_order) != 0) return -1;
    stage_stopped(t->run);
    return 130;
}

/* The summary of a finished run on stdout. */
static void print_summary(const cf_trainer *t, int64_t epoch0, int64_t steps0, double secs,
                          const cf_metrics *valid, const cf_metrics *test, const cf_metrics *unseen) {
    const cf_opts *o = t->o;
    const cf_state *s = &t->s;
    int64_t ep = s->epoch - epoch0;
    printf("cf %s on %s: %d users, %d items, %lld train pairs, dim %d, layers %d, %d threads\n",
           o->model, t->run->dataset, t->d->n_users, t->d->n_items, (long long)t->d->n_train, t->M.C,
           t->M.L, nn_threads());
    printf("epochs %lld (%lld in this process, %lld steps), best epoch %lld by valid %s, %s\n",
           (long long)s->epoch, (long long)ep, (long long)(s->step - steps0), (long long)s->best_epoch,
           o->select, s->epoch < o->epochs ? "stopped early (patience)" : "ran all epochs");
    printf("time %.2fs: train %.2fs (%.4f s/epoch), eval %.2fs; peak RSS %.1f MiB\n", secs,
           t->t_train, ep ? t->t_train / ep : 0.0, t->t_eval, tr_peak_rss_kib() / 1024.0);
    printf("valid HR@10 %.4f HR@20 %.4f NDCG@10 %.4f NDCG@20 %.4f (%d users)\n", valid->hr10,
           valid->hr20, valid->ndcg10, valid->ndcg20, valid->n_users);
    printf("test  HR@10 %.4f HR@20 %.4f NDCG@10 %.4f NDCG@20 %.4f (%d users)\n", test->hr10,
           test->hr20, test->ndcg10, test->ndcg20, test->n_users);
    if (unseen)
        printf("test  HR@10 %.4f HR@20 %.4f NDCG@10 %.4f NDCG@20 %.4f (%d held-out users, folded in "
               "from their train items)\n", unseen->hr10, unseen->hr20, unseen->ndcg10, unseen->ndcg20,
               unseen->n_users);
    fflush(stdout);
}

/* The best parameters: their propagated vectors, valid and test metrics (and the held-out
 * users' folded-in vectors and metrics), all written in the final transaction. */
static int finish(cf_trainer *t, const cf_data *full, const uint8_t *held, cf_metrics *valid,
                  cf_metrics *test, cf_metrics *unseen) {
    cf_model *M = &t->M;
    double te = tr_monotonic();
    model_eval(M, t->d, M->best, 2, test);
    model_eval(M, t->d, M->best, 1, valid);       /* leaves M->mean = propagate(best) */
    t->t_eval += tr_monotonic() - te;
    if (held) {
        unseen_fold_in(full, t->d, held, M->best, M->C);     /* ego rows */
        unseen_fold_in(full, t->d, held, M->mean, M->C);     /* propagated rows */
    }
    if (stage_finish_begin(t->run) != 0 ||
        write_outputs(t->run, t->d, M, t->o->model, valid, test, t->s.best_epoch) != 0 ||
        (held && write_holdout(t->run, full, held, M, t->o->model, unseen) != 0))
        return -1;
    return stage_finish_commit(t->run);
}

/* Train and write; the part after stage_begin. Returns 0, 130 (stopped) or -1. d is the
 * training data; with held users (held != NULL), full is the data with their train pairs,
 * which they are folded in from after training. */
static int cf_train(stage_run *run, const cf_opts *o, const cf_data *d, const cf_data *full,
                    const uint8_t *held) {
    cf_trainer t;
    int rc = trainer_init(&t, run, o, d);
    if (!rc) rc = trainer_start(&t);
    double t_start = tr_monotonic();
    t.last_ckpt = t_start;
    int64_t epoch0 = t.s.epoch, steps0 = t.s.step;
    while (!rc && t.s.epoch < o->epochs && (o->patience <= 0 || t.s.bad_evals < o->patience)) {
        rc = train_epoch(&t);
        if (!rc) rc = end_epoch(&t);
    }
    cf_metrics valid, test, unseen = {0};
    if (!rc) rc = finish(&t, full, held, &valid, &test, &unseen);
    if (!rc && !o->quiet)
        print_summary(&t, epoch0, steps0, tr_monotonic() - t_start, &valid, &test, held ? &unseen : NULL);
    if (rc < 0) stage_fail_err(run);
    trainer_free(&t);
    return rc;
}

/* cf --holdout-users: pick the held-out users by --seed, train without them, fold them in. */
static int cf_train_holdout(stage_run *run, const cf_opts *o, const cf_data *d) {
    uint8_t *held = tr_malloc((size_t)d->n_users + 1);
    int nh = unseen_pick(d->n_users, o->holdout_users, (uint64_t)(int64_t)o->seed, held);
    cf_data dt;
    int rc;
    if (nh <= 0) tr_error("cf: --holdout-users %g of %d users holds out none; expected at least %g",
                          o->holdout_users, d->n_users, 1.0 / d->n_users);
    if (nh <= 0 || unseen_cf_drop(d, held, &dt) != 0) {
        rc = stage_fail_err(run);
    } else {
        if (!o->quiet)
            fprintf(stderr, "[cf] %d of %d users held out of training (unseen-user test)\n", nh, d->n_users);
        rc = cf_train(run, o, &dt, d, held);
        cf_data_free(&dt);
    }
    free(held);
    return rc;
}

int cmd_cf(int argc, char **argv) {
    cf_opts o = {.dbpath = DB_DEFAULT_PATH, .dataset = NULL, .model = "lightgcn",
                 .sampler = "users", .select = "ndcg20", .dim = 64, .layers = 3, .batch = 0,
                 .epochs = 0, .eval_every = 5, .patience = 20, .seed = CLI_SEED_DEFAULT, .threads = 0,
                 .lr = 0, .decay = 1e-4, .init_std = 0.1};
    cli_opt opts[] = {
        CLI_OPTS_DB(&o.dbpath, &o.dataset),
        {"model", CLI_STR, &o.model, "lightgcn or mf (no propagation)", 1},
        {"dim", CLI_INT, &o.dim, "embedding dimension", 1},
        {"layers", CLI_INT, &o.layers, "LightGCN propagation layers (ignored for mf)", 1},
        {"lr", CLI_FLOAT, &o.lr, "Adam learning rate (0: 1e-3; 5e-3 for beauty and clothing, 1e-2 for ml-1m)", 1},
        {"decay", CLI_FLOAT, &o.decay, "L2 on the batch's ego embeddings, x 1/2 /batch", 1},
        {"batch", CLI_INT, &o.batch, "BPR triples per step (0: 2048; 8192 for ml-1m)", 1},
        {"epochs", CLI_INT, &o.epochs, "maximum epochs, one epoch = #train pairs triples (0: 1000; 100 for beauty, "
         "40 for clothing, 80 for ml-1m)", 1},
        {"init-std", CLI_FLOAT, &o.init_std, "std of the normal initialisation", 1},
        {"sampler", CLI_STR, &o.sampler, "pairs (shuffled train pairs) or users (uniform user)", 1},
        {"eval-every", CLI_INT, &o.eval_every, "validate (and checkpoint) every N epochs", 1},
        {"patience", CLI_INT, &o.patience, "stop after N validations without a better one (0: never)", 1},
        {"select", CLI_STR, &o.select, "keep the checkpoint with the best valid ndcg20 or hr20", 1},
        {"holdout-users", CLI_FLOAT, &o.holdout_users, "fraction of users (by --seed) held out of training for "
         "the unseen-user test (evaluate --unseen); their vectors are folded in from their train items", 0},
        {"seed", CLI_INT, &o.seed, "random seed (initialisation, order, negatives: cf's stream of it; the "
         "held-out users: their own)", 1},
        CLI_OPTS_RUN(&o.threads, &o.force, &o.quiet),
        {"stop-after-steps", CLI_INT, &o.stop_after, "testing: stop as on Ctrl-C after N steps", 0},
        CLI_OPT_END};
    int rc = cli_parse(argc, argv, opts, usage_cf, summary_cf);
    if (rc) return rc > 0 ? 0 : -1;
    if (check_opts(&o, 0) != 0) return -1;
    nn_set_threads(o.threads);

    stage_cmd c;
    if (stage_cmd_open(&c, o.dbpath, o.dataset) != 0) return -1;
    fill_defaults(&o, c.dataset);
    if (check_opts(&o, 1) != 0) return stage_cmd_close(&c, -1);
    char *pj = CLI_SEED_STREAM(cli_params_json(opts), "cf");
    if (o.holdout_users > 0)      /* a param only when set: runs without it keep their fingerprint */
        pj = cli_json_append(pj, "\"holdout-users\":%.9g", o.holdout_users);
    int b = stage_cmd_begin(&c, "cf", pj, NULL, o.force, o.quiet, NULL);
    if (b != 0) return stage_cmd_close(&c, b == STAGE_UP_TO_DATE ? 0 : -1);
    cf_data d;
    memset(&d, 0, sizeof d);
    if (cf_data_load(c.db, c.dataset, &d) != 0) rc = stage_fail_err(&c.run);
    else if (o.holdout_users > 0) rc = cf_train_holdout(&c.run, &o, &d);
    else rc = cf_train(&c.run, &o, &d, &d, NULL);
    cf_data_free(&d);
    return stage_cmd_close(&c, rc);
}
