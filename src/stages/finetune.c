/* finetune.c: `tokenrec finetune`, resumable training of the TokenRec model. */
#include "finetune.h"
#include "finetune_opts.h"
#include "cli.h"
#include "db.h"
#include "dist_stage.h"
#include "genrec.h"
#include "recmodel.h"
#include "retrieval.h"
#include "spm.h"
#include "stage.h"
#include "util.h"
#include <cblas.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>


/* What a checkpoint holds besides the weights and moments. */
typedef struct {
    int32_t epoch, batch, bad, best_epoch;
    int64_t step;
    double  best, best_hr, best_ndcg, loss_sum;
    int64_t loss_n;
} ft_state;

/* The model shape: a preset, then the explicit overrides. "mini" is the CPU default. */
static int make_config(const ft_opts *o, int vocab, int D, t5_config *c) {
    const char *p = o->preset;
    int mini = !strcmp(p, "mini");
    if (t5_preset(mini ? "small" : p, c) != 0)
        return tr_error("--preset: unknown preset '%s'; expected mini, tiny, small or t5-small", p);
    if (mini) {
        c->d_model = 128; c->n_heads = 4; c->d_kv = 32; c->d_ff = 512;
        c->n_enc_layers = 2; c->n_dec_layers = 1; c->dec_len = 11; c->head_hidden = 256;
    }
    if (o->d_model > 0) c->d_model = o->d_model;
    if (o->n_heads > 0) c->n_heads = o->n_heads;
    if (o->d_model > 0 || o->n_heads > 0) c->d_kv = c->d_model / c->n_heads;
    if (o->d_ff > 0) c->d_ff = o->d_ff;
    if (o->enc_layers > 0) c->n_enc_layers = o->enc_layers;
    if (o->dec_layers >= 0) c->n_dec_layers = o->dec_layers;
    if (o->dec_len > 0) c->dec_len = o->dec_len;
    if (o->dropout >= 0) c->dropout = (float)o->dropout;
    c->vocab = vocab;
    c->head_out = D;
    if (c->n_dec_layers < 1) return tr_error("finetune needs at least one decoder layer");
    return 0;
}

/* The batches of an epoch: a seeded shuffle, then length buckets (chunks of 50 batches sorted
 * by history length, so a batch pads little), then a shuffle of the batch order. */
static const rec_sample *g_samples;
static int cmp_len(const void *a, const void *b) {
    const rec_sample *x = g_samples + *(const int64_t *)a, *y = g_samples + *(const int64_t *)b;
    return (x->hist > y->hist) - (x->hist < y->hist);
}

static void epoch_order(const rec_sample *s, int64_t n, int B, uint64_t seed, int epoch,
                        int64_t *order, int32_t *batch_order, int64_t nb) {
    rng_t r;
    rng_seed(&r, seed ^ (0x5851F42D4C957F2Dull * (uint64_t)(epoch + 1)));
    for (int64_t i = 0; i < n; i++) order[i] = i;
    for (int64_t i = n; i > 1; i--) {
        int64_t j = (int64_t)(rng_u64(&r) % (uint64_t)i);
        int64_t t = order[i - 1]; order[i - 1] = order[j]; order[j] = t;
    }
    g_samples = s;
    int64_t chunk = (int64_t)B * 50;
    for (int64_t i = 0; i < n; i += chunk)
        qsort(order + i, (size_t)(n - i < chunk ? n - i : chunk), sizeof *order, cmp_len);
    for (int64_t b = 0; b < nb; b++) batch_order[b] = (int32_t)b;
    rng_shuffle_i32(&r, batch_order, (size_t)nb);
}

/* Softmax over all items of z . v (or cosine / temperature): loss and dz (B,D). */
static float softmax_loss(const float *z, const int32_t *target, int B, const rec_data *d,
                          int cosine, float temperature, float *logits, float *dz) {
    int NI = d->n_items, D = d->D;
    retr_scores(logits, z, B, d->pool, d->pool_inv, NI, D, cosine);
    float scale = cosine ? 1.0f / temperature : 1.0f;
    double loss = 0;
    for (int b = 0; b < B; b++) {
        float *row = logits + (size_t)b * NI;
        float mx = -INFINITY;
        for (int i = 0; i < NI; i++) { row[i] *= scale; if (row[i] > mx) mx = row[i]; }
        float lt = row[target[b]];
        double sum = 0;
        for (int i = 0; i < NI; i++) { row[i] = expf(row[i] - mx); sum += row[i]; }
        loss += mx - lt + log(sum);            /* log-sum-exp: no underflow of p(target) */
        float inv = (float)(1.0 / sum);
        for (int i = 0; i < NI; i++) row[i] *= inv / (float)B;       /* dlogits = (p - 1[t]) / B */
        row[target[b]] -= 1.0f / (float)B;
    }
    if (!cosine) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, D, NI, 1.0f, logits, NI, d->pool, D,
                    0.0f, dz, D);
    } else {
        /* s = <z, v> |z|^-1 |v|^-1 scale: dz = scale/|z| (g - <g, zhat> zhat), g = sum_i dl_i vhat_i */
        for (int b = 0; b < B; b++) {
            float *row = logits + (size_t)b * NI;
            for (int i = 0; i < NI; i++) row[i] *= d->pool_inv[i] * scale;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, D, NI, 1.0f, logits, NI, d->pool, D,
                    0.0f, dz, D);
        for (int b = 0; b < B; b++) {
            const float *zb = z + (size_t)b * D;
            float *g = dz + (size_t)b * D;
            double nz = 0, gz = 0;
            for (int k = 0; k < D; k++) nz += (double)zb[k] * zb[k];
            nz = sqrt(nz) + 1e-12;
            for (int k = 0; k < D; k++) gz += g[k] * zb[k] / nz;
            for (int k = 0; k < D; k++) g[k] = (float)((g[k] - gz * zb[k] / nz) / nz);
        }
    }
    return (float)(loss / B);
}

/* A uniform negative that is neither the target nor in the history (TokenRec's loss). */
static int32_t sample_negative(const rec_data *d, const rec_sample *s, rng_t *r) {
    const int32_t *seq = d->seq + d->off[s->user];
    for (int tries = 0; tries < 1000; tries++) {
        int32_t c = (int32_t)rng_below(r, (uint32_t)d->n_items);
        int bad = 0;
        for (int k = s->pos - s->hist; k <= s->pos && !bad; k++) bad = seq[k] == c;
        if (!bad) return c;
    }
    return (int32_t)rng_below(r, (uint32_t)d->n_items);
}

/* The training loss summed over the current epoch's batches so far, and their count: its
 * own checkpoint blob, so that checkpoints saved before it existed still resume. */
typedef struct { double sum; int64_t n; } ft_epoch_loss;

/* One checkpoint: the parameters, the Adam moments, the state, the epoch's loss so far and
 * the best parameters. */
static int save_ckpt(stage_run *run, t5_model *m, const ft_state *st, const float *best,
                     const ft_epoch_loss *el) {
    size_t np = t5_n_params(m) * sizeof(float);
    const stage_blob b[] = {{"params", t5_params(m), np}, {"adam_m", t5_adam_m(m), np},
                            {"adam_v", t5_adam_v(m), np}, {"state", st, sizeof *st},
                            {"epoch_loss", el, sizeof *el}, {"best", best, np}};
    return stage_ckpt_save(run, st->step, b, best ? 6 : 5);
}

/* Size and 64-bit FNV-1a hash of a file's bytes: a changed --init-from checkpoint or
 * tokenizer makes the run stale. */
static int file_digest(const char *path, uint64_t *hash, int64_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return tr_error("cannot open %s", path);
    char *buf = tr_malloc(1 << 20);
    uint64_t h = 0xcbf29ce484222325ull;
    int64_t n = 0;
    size_t got;
    while ((got = fread(buf, 1, 1 << 20, f)) > 0) { h = tr_hash64(buf, got, h); n += (int64_t)got; }
    int err = ferror(f);
    fclose(f);
    free(buf);
    if (err) return tr_error("cannot read %s", path);
    *hash = h;
    *size = n;
    return 0;
}

/* The params JSON with the pretrained files added (only with --init-from, so the
 * fingerprints of runs without it are unchanged): their paths, sizes and hashes. */
static char *params_with_files(char *pj, const char *ckpt, const char *tok) {
    uint64_t h1, h2;
    int64_t s1, s2;
    if (file_digest(ckpt, &h1, &s1) || file_digest(tok, &h2, &s2)) { free(pj); return NULL; }
    cJSON *p1 = cJSON_CreateString(ckpt), *p2 = cJSON_CreateString(tok);   /* JSON-escaped paths */
    char *e1 = cJSON_PrintUnformatted(p1), *e2 = cJSON_PrintUnformatted(p2);
    pj = cli_json_append(pj, "\"init-from\":%s,\"init-from-size\":%lld,\"init-from-fnv\":\"%016llx\","
                             "\"tokenizer\":%s,\"tokenizer-size\":%lld,\"tokenizer-fnv\":\"%016llx\"",
                         e1, (long long)s1, (unsigned long long)h1, e2, (long long)s2, (unsigned long long)h2);
    cJSON_free(e1); cJSON_free(e2);
    cJSON_Delete(p1); cJSON_Delete(p2);
    return pj;
}

/* The model and vocabulary of --init-from: the checkpoint's weights (config from the tensor
 * shapes; head and dec_len from the preset when the file has no head), the template text
 * tokenized with its SentencePiece tokenizer, and the ID tokens as new embedding rows
 * after the checkpoint's (drawn N(0, 1) as Hugging Face T5 initialises embeddings). */
static int init_pretrained(const ft_opts *o, const char *tok_path, const rec_data *d, rng_t *init,
                           prompt_vocab *v, t5_model **out) {
    t5_config fb;
    if (make_config(o, 1, d->D, &fb) != 0) return -1;
    spm_model *s = spm_load(tok_path);
    if (!s) return -1;
    t5_model *m = t5_load(o->init_from, &fb, init);
    if (!m) { spm_free(s); return tr_error("--init-from: %s", tr_errmsg()); }
    const t5_config *c = t5_cfg(m);
    int rc = 0;
    if (c->head_out != d->D)
        rc = tr_error("--init-from %s: its head gives %d-d vectors but the CF item vectors are %d-d "
                      "(use a checkpoint without head.* tensors, or one trained on this cf run)",
                      o->init_from, c->head_out, d->D);
    else if ((o->d_model > 0 && o->d_model != c->d_model) || (o->n_heads > 0 && o->n_heads != c->n_heads) ||
             (o->d_ff > 0 && o->d_ff != c->d_ff) || (o->enc_layers > 0 && o->enc_layers != c->n_enc_layers) ||
             (o->dec_layers >= 0 && o->dec_layers != c->n_dec_layers))
        rc = tr_error("--init-from %s: the checkpoint has d_model %d, %d heads, d_ff %d, %d+%d layers; "
                      "--d-model/--heads/--d-ff/--layers/--dec-layers must match or be left out",
                      o->init_from, c->d_model, c->n_heads, c->d_ff, c->n_enc_layers, c->n_dec_layers);
    else if (c->n_dec_layers < 1)
        rc = tr_error("--init-from %s: the checkpoint has no decoder layers", o->init_from);
    else if (prompt_vocab_init_spm(v, s, c->vocab, d->K, d->L, d->extra) != 0)
        rc = tr_error("--tokenizer %s: %s", tok_path, tr_errmsg());
    else if (t5_resize_vocab(m, v->vocab, init, 0.0f) != 0)
        rc = -1;
    spm_free(s);
    if (rc) { t5_free(m); return -1; }
    *out = m;
    return 0;
}

/* What a run works with: its settings, the data, vocabulary and model, the samples and
 * their order, the best parameters, the objective's buffers and the state a checkpoint
 * holds. One step function per objective (step_softmax, step_cosine, step_generate). */
typedef struct ft_trainer ft_trainer;
typedef int (*ft_step_fn)(ft_trainer *t, const rec_sample *bs, int nbs, t5_batch *tb, rng_t *br,
                          float *loss);

struct ft_trainer {
    stage_run     *run;
    const ft_opts *o;
    int            gen, cosine_loss, cosine;
    ft_step_fn     step;
    rec_data       d;
    int            have_data;
    prompt_vocab   v;
    t5_model      *m;
    t5_config      cfg;
    size_t         np;
    rec_sample    *samples;
    int64_t        n, nb;           /* samples, batches per epoch */
    int64_t       *order;
    int32_t       *batch_order;
    float         *best;
    rec_batch      bt;
    adamw_cfg      opt;
    ft_state       st;
    float         *logits, *dz;     /* softmax: item logits (B, n_items), dL/dz (B, D) */
    float         *pos, *neg;       /* cosine: the target's and the negative's vectors (B, D) */
    int32_t       *gdec, *gcodes;   /* generate: decoder ids and target codes */
    t5_gen_ws      gws;
    gen_search     gs;
    int            P;               /* generate: the decoder prompt's length */
    t5_gen_book    books[T5_GEN_MAX_STEPS];
    double         t_start;
    double         train_secs;      /* this process's time in training batches (no validation) */
    int64_t        samples_here;    /* trained on in this process */
    ft_epoch_loss  eloss;           /* the current epoch's training loss so far */
    int            no_step;         /* --shards: the step functions leave the optimizer step */
    dist_accum     acc;             /* --shards: the shards' gradients over the ranks */
    float         *shard_loss;      /* --shards: each shard's share of the batch's loss */
};

static void trainer_free(ft_trainer *t) {
    if (t->have_data) rec_data_free(&t->d);
    rec_batch_free(&t->bt);
    prompt_vocab_free(&t->v);
    if (t->m) t5_free(t->m);
    free(t->samples); free(t->order); free(t->batch_order); free(t->best);
    free(t->logits); free(t->dz); free(t->pos); free(t->neg); free(t->gdec); free(t->gcodes);
    t5_gen_ws_free(&t->gws);
    gen_search_free(&t->gs);
    if (t->acc.lev) dist_accum_free(&t->acc);
    free(t->shard_loss);
}

/* The default objective: a softmax over all items of z . v (or cosine / temperature). */
static int step_softmax(ft_trainer *t, const rec_sample *bs, int nbs, t5_batch *tb, rng_t *br,
                        float *loss) {
    (void)bs;
    if (t5_forward(t->m, tb, 1, br, NULL) != 0) return -1;
    *loss = softmax_loss(t5_z(t->m), t->bt.target, nbs, &t->d, t->cosine, (float)t->o->temperature,
                         t->logits, t->dz);
    if (t5_backward_dz(t->m, tb, t->dz) != 0) return -1;
    if (!t->no_step) t5_adamw_step(t->m, &t->opt, (float)t->o->clip);
    return 0;
}

/* --loss cosine (TokenRec's): the cosine-embedding loss against the target's vector and
 * one sampled negative's. */
static int step_cosine(ft_trainer *t, const rec_sample *bs, int nbs, t5_batch *tb, rng_t *br,
                       float *loss) {
    size_t D = (size_t)t->d.D;
    for (int r = 0; r < nbs; r++) {
        memcpy(t->pos + r * D, t->d.pool + (size_t)t->bt.target[r] * D, D * sizeof *t->pos);
        memcpy(t->neg + r * D, t->d.pool + (size_t)sample_negative(&t->d, &bs[r], br) * D, D * sizeof *t->neg);
    }
    tb->pos = t->pos;
    tb->neg = t->neg;
    if (t->no_step) return t5_forward(t->m, tb, 1, br, loss) || t5_backward(t->m, tb) ? -1 : 0;
    return t5_train_step(t->m, tb, &t->opt, (float)t->o->clip, br, loss);
}

/* --objective generate: cross-entropy over the target's tokens with teacher forcing. */
static int step_generate(ft_trainer *t, const rec_sample *bs, int nbs, t5_batch *tb, rng_t *br,
                         float *loss) {
    (void)bs;
    gen_train_dec(&t->v, &t->d, t->bt.target, nbs, t->P, t->gdec, t->gcodes);
    tb->dec_ids = t->gdec;
    tb->dec_per_row = 1;
    if (t5_forward(t->m, tb, 1, br, NULL) != 0) return -1;
    tr_error_clear();
    *loss = t5_gen_loss(t->m, tb, t->P, t->d.cpi, t->books, t->gcodes, &t->gws, 1);
    if (isnan(*loss) && tr_errmsg()[0]) return -1;
    if (!t->no_step) t5_adamw_step(t->m, &t->opt, (float)t->o->clip);
    return 0;
}

/* Valid (split 1) or test (2) metrics of the current parameters, retrieved the objective's
 * way: generative retrieval, or constrained beam search for generate. */
static int evaluate_split(ft_trainer *t, int split, retr_metrics *met) {
    const ft_opts *o = t->o;
    if (t->gen) return gen_evaluate(&t->gs, t->m, &t->v, &t->d, split, PROMPT_TEST, o->eval_batch, met, 0, NULL, NULL);
    return rec_evaluate(t->m, &t->v, &t->d, split, o->hist, PROMPT_TEST, t->cosine, o->eval_batch, met, 0,
                        NULL, NULL);
}

/* The vocabulary and the model: from --init-from, or new (for generate, the decoder input
 * grows by the target's first codes and there is no head). */
static int make_model(ft_trainer *t) {
    const ft_opts *o = t->o;
    rng_t init;
    rng_seed(&init, (uint64_t)o->seed);
    if (o->init_from) {
        if (init_pretrained(o, o->tokenizer, &t->d, &init, &t->v, &t->m) != 0) return -1;
        t->cfg = *t5_cfg(t->m);
        if (!o->quiet && t->run && !t->run->resumed)
            fprintf(stderr, "[finetune] from %s: d_model %d, %d+%d layers; tokenizer %s: %d tokens, ID tokens "
                    "from id %d\n", o->init_from, t->cfg.d_model, t->cfg.n_enc_layers, t->cfg.n_dec_layers,
                    o->tokenizer, t->v.n_words, t->v.base_item);
        return 0;
    }
    if (prompt_vocab_init(&t->v, t->d.K, t->d.L, t->d.extra) != 0) return -1;
    if (make_config(o, t->v.vocab, t->d.D, &t->cfg) != 0) return -1;
    if (t->gen) {   /* the prompt then the target's first cpi-1 codes; the head is unused */
        if (t->d.cpi > T5_GEN_MAX_STEPS)
            return tr_error("generate: %d codes per item (at most %d)", t->d.cpi, T5_GEN_MAX_STEPS);
        t->P = t->cfg.dec_len;
        t->cfg.dec_len = t->P + t->d.cpi - 1;
        t->cfg.head_hidden = 0;
    }
    t->m = t5_new(&t->cfg, &init);
    return t->m ? 0 : -1;
}

/* The objective's buffers (generate: the tuples' books, the decoder ids, the beam search). */
static int objective_buffers(ft_trainer *t) {
    const ft_opts *o = t->o;
    size_t B = (size_t)o->batch;
    if (!t->gen) {
        t->logits = tr_malloc(B * t->d.n_items * sizeof *t->logits);
        t->dz = tr_malloc(B * t->d.D * sizeof *t->dz);
        t->pos = tr_malloc(B * t->d.D * sizeof *t->pos);
        t->neg = tr_malloc(B * t->d.D * sizeof *t->neg);
        return 0;
    }
    int max_n = 0;
    for (int s = 0; s < t->d.cpi; s++) {
        t->books[s] = gen_book(&t->v, &t->d, s);
        if (t->books[s].n > max_n) max_n = t->books[s].n;
    }
    t->gdec = tr_malloc(B * t->cfg.dec_len * sizeof *t->gdec);
    t->gcodes = tr_malloc(B * t->d.cpi * sizeof *t->gcodes);
    t5_gen_ws_init(&t->gws, t->m, o->batch, max_n);
    return gen_search_init(&t->gs, t->m, &t->v, &t->d, o->beam, o->eval_batch, o->hist);
}

/* Data, model, samples and buffers of a run. */
static int trainer_setup(ft_trainer *t) {
    const ft_opts *o = t->o;
    if (t->run && rec_data_load(t->run->db, t->run->dataset, t->run->upstream_run, o->pool, &t->d) != 0) return -1;
    dist_bcast_rec_data(&t->d);         /* under mpirun: rank 0's data on every rank */
    t->have_data = 1;
    if (make_model(t) != 0) return -1;
    t->samples = rec_samples(&t->d, o->hist, o->min_hist, o->max_pos, &t->n);
    if (t->n == 0)
        return tr_error("finetune: no training samples (sequences too short for --min-hist %d)", o->min_hist);
    t->nb = (t->n + o->batch - 1) / o->batch;
    t->order = tr_malloc((size_t)t->n * sizeof *t->order);
    t->batch_order = tr_malloc((size_t)t->nb * sizeof *t->batch_order);
    t->np = t5_n_params(t->m);
    t->best = tr_malloc(t->np * sizeof *t->best);
    memcpy(t->best, t5_params(t->m), t->np * sizeof *t->best);
    rec_batch_init(&t->bt, &t->d, &t->v, o->batch, o->hist, t->cfg.dec_len);
    t->bt.keep_order = !strcmp(o->hist_order, "kept");
    t5_reserve(t->m, o->batch > o->eval_batch ? o->batch : o->eval_batch, t->bt.cap_T);
    if (o->shards > 1) {
        dist_accum_init(&t->acc, t->np, (size_t)o->shards, o->shards);
        t->shard_loss = tr_malloc((size_t)o->shards * sizeof *t->shard_loss);
    }
    return objective_buffers(t);
}

static int trainer_resume_one(ft_trainer *t);
/* A resumed run continues from its checkpoint: the parameters, the moments, the best
 * parameters and the state. A run stopped before its first checkpoint starts over. Under
 * mpirun rank 0 reads it and every rank gets it. */
static int trainer_resume(ft_trainer *t) {
    ft_state *st = &t->st;
    stage_run *run = t->run;
    size_t fb = t->np * sizeof(float);
    if (dist_size() > 1) {              /* rank 0 reads, every rank gets its state */
        int rc = run ? trainer_resume_one(t) : 0;
        dist_bcast(st, sizeof *st);
        dist_bcast(&t->eloss, sizeof t->eloss);
        dist_bcast(t5_params(t->m), fb);
        dist_bcast(t5_adam_m(t->m), fb);
        dist_bcast(t5_adam_v(t->m), fb);
        dist_bcast(t->best, fb);
        t5_set_step(t->m, (long)st->step);
        return rc;
    }
    return trainer_resume_one(t);
}

/* trainer_resume in one process (rank 0). */
static int trainer_resume_one(ft_trainer *t) {
    ft_state *st = &t->st;
    stage_run *run = t->run;
    size_t fb = t->np * sizeof(float);
    if (!run->resumed || stage_ckpt_read(run, "state", st, sizeof *st) != 0) {
        tr_error_clear();
        return 0;
    }
    if (stage_ckpt_read(run, "epoch_loss", &t->eloss, sizeof t->eloss) != 0) {
        tr_error_clear();           /* a checkpoint from before the epoch loss was kept */
        t->eloss = (ft_epoch_loss){0};
    }
    if (stage_ckpt_read(run, "params", t5_params(t->m), fb) != 0 ||
        stage_ckpt_read(run, "adam_m", t5_adam_m(t->m), fb) != 0 ||
        stage_ckpt_read(run, "adam_v", t5_adam_v(t->m), fb) != 0 ||
        stage_ckpt_read(run, "best", t->best, fb) != 0)
        return tr_error("finetune: the checkpoint of run %lld is incomplete: %s", (long long)run->id, tr_errmsg());
    t5_set_step(t->m, (long)st->step);
    if (!t->o->quiet)
        fprintf(stderr, "[finetune] resuming run %lld at epoch %d, batch %d (step %lld)\n",
                (long long)run->id, st->epoch + 1, st->batch, (long long)st->step);
    return 0;
}

/* After a step: the loss into the metrics every 50 steps, and the progress line. */
static void record_step(ft_trainer *t, float loss, int nbs) {
    const ft_opts *o = t->o;
    ft_state *st = &t->st;
    st->step++;
    t->samples_here += nbs;
    st->loss_sum += loss;
    st->loss_n++;
    t->eloss.sum += loss;
    t->eloss.n++;
    if (!t->run) {                      /* a rank other than 0 under mpirun: no output */
        if (st->step % 50 == 0) st->loss_sum = 0, st->loss_n = 0;
        return;
    }
    if (st->step % 50 == 0) {
        stage_metric(t->run, st->step, "train_loss", st->loss_sum / st->loss_n);
        st->loss_sum = 0;
        st->loss_n = 0;
    }
    double el = tr_monotonic() - t->t_start;
    double frac = ((double)st->epoch * t->nb + st->batch + 1) / ((double)o->epochs * t->nb);
    stage_progress(t->run, frac, "epoch %d/%d batch %d/%lld loss %.4f, %.0f samples/s, best valid HR@10 %.4f",
                   st->epoch + 1, o->epochs, st->batch + 1, (long long)t->nb, loss,
                   t->samples_here / (el > 0 ? el : 1), st->best_hr);
}

/* --shards: the batch bs[0..nbs) cut into shards of consecutive rows, each filled and run
 * with its own stream of br (one draw); this rank computes dist_shards' run of them, each
 * shard's gradient weighted by its share of the rows (the loss is a mean over the batch);
 * the shards are summed in dist_accum's fixed tree and over the ranks in one all-reduce;
 * then the optimizer step, the same on every rank. *loss gets the batch's mean loss. */
static int shard_step(ft_trainer *t, const rec_sample *bs, int nbs, rng_t *br, float *loss) {
    int G = t->o->shards < nbs ? t->o->shards : nbs, g0, g1;
    uint64_t seed = rng_u64(br);
    memset(t->shard_loss, 0, (size_t)t->o->shards * sizeof *t->shard_loss);
    dist_shards(G, &g0, &g1);
    t->no_step = 1;
    for (int g = g0; g < g1; g++) {
        int r0 = (int)((int64_t)g * nbs / G), r1 = (int)((int64_t)(g + 1) * nbs / G);
        rng_t sr;
        rng_seed(&sr, seed + (uint64_t)g);
        rec_batch_fill(&t->bt, &t->d, &t->v, bs + r0, r1 - r0, 1, 0, &sr);
        t5_batch tb = rec_batch_t5(&t->bt);
        float l, w = (float)(r1 - r0) / (float)nbs, *gr = t5_grads(t->m);
        if (t->step(t, bs + r0, r1 - r0, &tb, &sr, &l) != 0) { t->no_step = 0; return -1; }
        for (size_t i = 0; i < t->np; i++) gr[i] *= w;
        t->shard_loss[g] = l * w;
        dist_accum_push(&t->acc, gr);
    }
    t->no_step = 0;
    dist_accum_reduce(&t->acc, t5_grads(t->m), t->shard_loss);
    double sum = 0;
    for (int g = 0; g < G; g++) sum += t->shard_loss[g];
    *loss = (float)sum;
    t5_adamw_step(t->m, &t->opt, (float)t->o->clip);
    return 0;
}

/* The rest of the current epoch from batch st.batch, in the epoch's seeded order; a
 * checkpoint every --ckpt-every steps and on a stop. 0 at the epoch's end, 1 when stopped,
 * -1 on error. */
static int train_epoch(ft_trainer *t) {
    const ft_opts *o = t->o;
    ft_state *st = &t->st;
    epoch_order(t->samples, t->n, o->batch, (uint64_t)o->seed, st->epoch, t->order, t->batch_order, t->nb);
    double t0 = tr_monotonic();
    int rc = 0;
    for (; st->batch < t->nb && !rc; st->batch++) {
        int64_t first = (int64_t)t->batch_order[st->batch] * o->batch;
        int nbs = (int)(t->n - first < o->batch ? t->n - first : o->batch);
        rec_sample bs[4096];
        for (int r = 0; r < nbs; r++) bs[r] = t->samples[t->order[first + r]];
        rng_t br;
        rng_seed(&br, (uint64_t)o->seed * 0x9E3779B97F4A7C15ull ^ ((uint64_t)st->epoch << 32) ^ (uint64_t)st->batch);
        t->opt.lr = (float)(o->lr * (o->warmup > 0 && st->step < o->warmup ? (st->step + 1.0) / o->warmup : 1.0));
        float loss;
        if (o->shards > 1) {
            if (shard_step(t, bs, nbs, &br, &loss) != 0) { rc = -1; break; }
        } else {
            rec_batch_fill(&t->bt, &t->d, &t->v, bs, nbs, 1, 0, &br);
            t5_batch tb = rec_batch_t5(&t->bt);
            if (t->step(t, bs, nbs, &tb, &br, &loss) != 0) { rc = -1; break; }
        }
        if (!isfinite(loss)) {
            rc = tr_error("finetune: the loss diverged at step %lld (try a lower --lr)", (long long)st->step);
            break;
        }
        record_step(t, loss, nbs);
        int stop = dist_any(stage_should_stop());    /* a stop on any rank stops all here */
        if (stop || (o->ckpt_every > 0 && st->step % o->ckpt_every == 0)) {
            st->batch++;                       /* the checkpoint resumes after this batch */
            int crc = t->run ? save_ckpt(t->run, t->m, st, t->best, &t->eloss) : 0;
            st->batch--;
            if (crc != 0) { rc = -1; break; }
        }
        if (stop) { rc = 1; break; }
    }
    t->train_secs += tr_monotonic() - t0;
    return rc;
}

/* End of an epoch: valid HR@10 / NDCG@10 with the test template, history excluded; the best
 * parameters so far; a checkpoint that resumes at the next epoch. 1 when --patience epochs
 * passed without a better score, 0 otherwise, -1 on error. */
static int end_epoch(ft_trainer *t) {
    const ft_opts *o = t->o;
    ft_state *st = &t->st;
    retr_metrics met;
    int ks[2] = {10, 20};
    retr_metrics_init(&met, 2, ks);
    /* under mpirun rank 0 validates and every rank takes its scores */
    if (t->run && evaluate_split(t, 1, &met) != 0) return -1;
    double sc[2] = {retr_hr(&met, 10), retr_ndcg(&met, 10)};
    dist_bcast(sc, sizeof sc);
    double hr = sc[0], nd = sc[1];
    if (t->run) {
        stage_metric(t->run, st->epoch + 1, "train_loss_epoch", t->eloss.n ? t->eloss.sum / t->eloss.n : NAN);
        stage_metric(t->run, st->epoch + 1, "valid_hr@10", hr);
        stage_metric(t->run, st->epoch + 1, "valid_ndcg@10", nd);
    }
    t->eloss = (ft_epoch_loss){0};
    if (dist_size() > 1 && !dist_same(t5_params(t->m), t->np * sizeof(float)))
        dist_abort(1, "finetune: the ranks' parameters differ after epoch %d", st->epoch + 1);
    if (!o->quiet) fprintf(stderr, "\n[finetune] epoch %d: valid HR@10 %.4f NDCG@10 %.4f%s\n", st->epoch + 1,
                           hr, nd, hr + nd > st->best ? " (best)" : "");
    if (hr + nd > st->best) {
        st->best = hr + nd; st->best_hr = hr; st->best_ndcg = nd; st->best_epoch = st->epoch + 1; st->bad = 0;
        memcpy(t->best, t5_params(t->m), t->np * sizeof *t->best);
    } else {
        st->bad++;
    }
    ft_state next = *st;
    next.epoch++;
    next.batch = 0;
    if (t->run && save_ckpt(t->run, t->m, &next, t->best, &t->eloss) != 0) return -1;
    if (st->bad < o->patience) return 0;
    if (!o->quiet) fprintf(stderr, "[finetune] no better valid score for %d epochs: stopping\n", o->patience);
    return 1;
}

/* Every epoch left (a checkpoint taken after the early stop trains no further epoch on
 * resume). 0 when done, 130 when stopped, -1 on error. */
static int train_epochs(ft_trainer *t) {
    const ft_opts *o = t->o;
    ft_state *st = &t->st;
    t->opt = adamw_default((float)o->lr);
    t->opt.weight_decay = (float)o->wd;
    t->t_start = tr_monotonic();
    while (st->epoch < o->epochs && !(o->patience > 0 && st->bad >= o->patience)) {
        int r = train_epoch(t);
        if (r) return r < 0 ? -1 : 130;
        r = end_epoch(t);
        if (r < 0) return -1;
        st->epoch++;
        st->batch = 0;
        if (r) break;
    }
    return 0;
}

/* The valid and test metrics of the best epoch (and each split's user count) into
 * run_metrics under the method's name. */
static int write_metrics(stage_run *run, const char *method, const retr_metrics *vm, const retr_metrics *tm) {
    for (int s = 0; s < 2; s++) {
        const retr_metrics *M = s ? tm : vm;
        if (stage_result(run, method, s ? "test" : "valid", "users", 0, (double)M->n)) return -1;
        for (int k = 0; k < M->nk; k++)
            if (stage_result(run, method, s ? "test" : "valid", "hr", M->ks[k], retr_hr(M, M->ks[k])) ||
                stage_result(run, method, s ? "test" : "valid", "ndcg", M->ks[k], retr_ndcg(M, M->ks[k])))
                return -1;
    }
    return 0;
}

/* The best epoch: its test metrics, then the model and the metrics in one transaction. */
static int finish(ft_trainer *t) {
    const ft_opts *o = t->o;
    stage_run *run = t->run;
    memcpy(t5_params(t->m), t->best, t->np * sizeof *t->best);
    retr_metrics vm, tm;
    int ks[3] = {10, 20, 30};
    retr_metrics_init(&vm, 3, ks);
    retr_metrics_init(&tm, 3, ks);
    if (evaluate_split(t, 1, &vm) != 0 || evaluate_split(t, 2, &tm) != 0) return -1;
    if (stage_finish_begin(run) != 0 || rec_model_save(run->db, run->id, t->m, &t->v, o->pool, t->cosine, o->hist) != 0)
        return -1;
    if (t->gen) {
        char *sql = sqlite3_mprintf("UPDATE models SET objective='generate' WHERE run_id=%lld", (long long)run->id);
        int urc = db_exec(run->db, sql);
        sqlite3_free(sql);
        if (urc != 0) return -1;
    }
    const char *method = t->gen ? "generate" : o->faithful ? "tokenrec-faithful" : "tokenrec";
    /* the chosen epoch, and the training rate of this process (per-epoch validation left out) */
    if (write_metrics(run, method, &vm, &tm) != 0 ||
        stage_result(run, method, "train", "best_epoch", 0, t->st.best_epoch) != 0 ||
        (t->train_secs > 0 && t->samples_here > 0 &&
         stage_result(run, method, "train", "targets_per_s", 0, t->samples_here / t->train_secs) != 0) ||
        stage_finish_commit(run) != 0)
        return -1;
    double el = tr_monotonic() - t->t_start;
    if (!o->quiet)
        fprintf(stderr, "[finetune] %s done in %.0fs (%.0f samples/s): best epoch %d, valid HR@10 %.4f "
                "NDCG@10 %.4f; test HR@10 %.4f NDCG@10 %.4f HR@20 %.4f NDCG@20 %.4f\n", run->dataset, el,
                t->samples_here / (el > 0 ? el : 1), t->st.best_epoch, retr_hr(&vm, 10), retr_ndcg(&vm, 10),
                retr_hr(&tm, 10), retr_ndcg(&tm, 10), retr_hr(&tm, 20), retr_ndcg(&tm, 20));
    return 0;
}

/* The stage's work after stage_begin: set up, resume, train, write. Returns 0, 130 when
 * stopped, or -1 (recorded as the run's failure). */
static int finetune_run(stage_run *run, const ft_opts *o) {
    ft_trainer t;
    memset(&t, 0, sizeof t);
    t.run = run;
    t.o = o;
    t.gen = !strcmp(o->objective, "generate");
    t.cosine_loss = !strcmp(o->loss, "cosine");
    t.cosine = !strcmp(o->score, "cos");
    t.step = t.gen ? step_generate : t.cosine_loss ? step_cosine : step_softmax;
    t.st.best = -1;
    int rc = trainer_setup(&t);
    if (!rc) rc = trainer_resume(&t);
    if (!run) {                         /* a rank other than 0 under mpirun: train, write nothing */
        if (!rc) rc = train_epochs(&t);
        trainer_free(&t);
        return rc;
    }
    if (!rc && !o->quiet && !run->resumed)
        fprintf(stderr, "[finetune] %s: %lld samples, %lld batches/epoch, vocab %d, %zu parameters, "
                "loss %s, pool %s, score %s\n", run->dataset, (long long)t.n, (long long)t.nb, t.v.vocab, t.np,
                o->loss, o->pool, o->score);
    if (!rc) rc = train_epochs(&t);
    if (rc == 130) stage_stopped(run);
    else if (!rc) rc = finish(&t);
    if (rc < 0) stage_fail_err(run);
    trainer_free(&t);
    return rc;
}

/* Check the options (after --faithful set its choices) and find --init-from's tokenizer
 * (tokbuf, beside the checkpoint, when --tokenizer is not given). */
static int check_opts(ft_opts *o, char *tokbuf, size_t n) {
    int cosine_loss = !strcmp(o->loss, "cosine");
    if (!cosine_loss && strcmp(o->loss, "softmax")) return tr_error("--loss: expected softmax or cosine, got '%s'", o->loss);
    if (strcmp(o->pool, "mean") && strcmp(o->pool, "ego")) return tr_error("--pool: expected mean or ego, got '%s'", o->pool);
    if (strcmp(o->score, "cos") && strcmp(o->score, "dot")) return tr_error("--score: expected dot or cos, got '%s'", o->score);
    if (o->batch < 1 || o->batch > 4096 || o->epochs < 1 || o->hist < 1 || o->min_hist < 1 || o->eval_batch < 1)
        return tr_error("finetune: --batch (1..4096), --epochs, --hist, --min-hist and --eval-batch must be positive");
    if (o->temperature <= 0) return tr_error("--temperature must be positive");
    int gen = !strcmp(o->objective, "generate");
    if (!gen && strcmp(o->objective, "retrieval")) return tr_error("--objective: expected retrieval or generate, got '%s'", o->objective);
    if (o->beam < 1 || o->beam > 1024) return tr_error("--beam must be in 1..1024");
    if (strcmp(o->hist_order, "kept") && strcmp(o->hist_order, "shuffled"))
        return tr_error("--history-order: expected shuffled or kept, got '%s'", o->hist_order);
    if (gen && (o->faithful || cosine_loss))
        return tr_error("--objective generate trains with cross-entropy over the item tokens; --faithful and --loss cosine do not apply");
    if (gen && o->init_from)
        return tr_error("--objective generate does not take --init-from (its decoder length depends on the codes per item)");
    if (!o->init_from) {
        if (o->tokenizer) return tr_error("--tokenizer needs --init-from (the word-level vocabulary needs no tokenizer)");
        return 0;
    }
    if (!tr_file_exists(o->init_from)) return tr_error("--init-from: no file %s", o->init_from);
    if (o->tokenizer) return tr_file_exists(o->tokenizer) ? 0 : tr_error("--tokenizer: no file %s", o->tokenizer);
    const char *sl = strrchr(o->init_from, '/');
    snprintf(tokbuf, n, "%.*stokenizer.json", sl ? (int)(sl - o->init_from + 1) : 0, o->init_from);
    if (!tr_file_exists(tokbuf))
        return tr_error("--init-from: no tokenizer.json beside %s; give --tokenizer FILE (the "
                        "checkpoint's Hugging Face tokenizer.json)", o->init_from);
    o->tokenizer = tokbuf;
    return 0;
}

/* The run's params JSON: the options, plus the settings that enter it only when used, so
 * that runs without them keep their fingerprints. NULL on error. */
static char *make_params(const cli_opt *opts, const ft_opts *o) {
    char *pj = cli_params_json(opts);
    if (!strcmp(o->arch, "causal")) {
        pj = cli_json_append(pj, "\"arch\":\"causal\",\"item-input\":\"%s\",\"negatives\":%d,\"eval-every\":%d",
                             o->item_input, o->negatives, o->eval_every);
        int own = !strcmp(o->item_input, "tokens+id") || (o->user_prefix && !strcmp(o->user_input, "tokens+id"));
        if (!strcmp(o->id_init, "cf") && own)              /* no own rows: no effect */
            pj = cli_json_append(pj, "\"id-init\":\"cf\"");
        if (strcmp(o->token_init, "random")) pj = cli_json_append(pj, "\"token-init\":\"%s\"", o->token_init);
        if (o->token_drop > 0) pj = cli_json_append(pj, "\"token-drop\":%.9g", o->token_drop);  /* tokens+id only */
        if (!strcmp(o->lr_schedule, "cosine")) pj = cli_json_append(pj, "\"lr-schedule\":\"cosine\"");
        if (o->user_target == 0 && o->user_prefix) pj = cli_json_append(pj, "\"user-target\":0");
        if (!o->user_prefix) pj = cli_json_append(pj, "\"user-prefix\":0");
        if (o->user_prefix && !strcmp(o->user_input, "tokens+id")) pj = cli_json_append(pj, "\"user-input\":\"tokens+id\"");
        if (!strcmp(o->ties, "shuffle")) pj = cli_json_append(pj, "\"ties\":\"shuffle\"");
        double blend = causal_cf_blend_parse(o->cf_blend);
        if (blend < 0) pj = cli_json_append(pj, "\"cf-blend\":\"auto\"");
        else if (blend > 0) pj = cli_json_append(pj, "\"cf-blend\":%.9g", blend);
    }
    if (!strcmp(o->hist_order, "kept")) pj = cli_json_append(pj, "\"history-order\":\"kept\"");
    if (o->init_from && !(pj = params_with_files(pj, o->init_from, o->tokenizer))) return NULL;
    if (!strcmp(o->objective, "generate")) {
        char *pg = tr_malloc(strlen(pj) + 64);
        snprintf(pg, strlen(pj) + 64, "{\"objective\":\"generate\",\"beam\":%d,%s", o->beam, pj + 1);
        free(pj);
        pj = pg;
    }
    return pj;
}

static const char *usage_ft = "tokenrec finetune [--dataset NAME] [options]";
static const char *summary_ft =
    "Train TokenRec's recommender on the user and item tokens of a finished tokenize run, kept at\n"
    "its best valid epoch; resumable (run the same command again after a kill or Ctrl-C).\n"
    "--arch causal (the default): a decoder-only causal transformer (docs/METHOD.md): one\n"
    "sequence per user (its K tokens unless --user-prefix 0, then each train item as the sum\n"
    "of its token rows, plus its own row with --item-input tokens+id), every train target\n"
    "trained in one pass, scored with a softmax against --pool cf (the CF vectors through a\n"
    "linear head), learned (an item table started from them), tokens (an item's vector from\n"
    "its token rows) or id (its own row alone, its tokens where it has none).\n"
    "--arch t5: TokenRec's encoder-decoder on prompts of the tokens, one prompt per history\n"
    "prefix; a softmax over all items against the propagated CF item vectors, or --faithful:\n"
    "TokenRec's cosine-embedding loss with one negative against the ego vectors. --init-from\n"
    "starts it from a pretrained T5 checkpoint (e.g. Hugging Face t5-small's model.safetensors\n"
    "with its tokenizer.json). --objective generate: the autoregressive baseline (its own stage,\n"
    "finetune-gen): the decoder generates the target item's tokens through an LM head tied to\n"
    "the item-token embeddings, cross-entropy with teacher forcing; validation by constrained\n"
    "beam search (--beam).";

/* Options left unset by the user take T5's defaults (the values they always had). */
static void ft_defaults_t5(ft_opts *o) {
    if (o->lr < 0) o->lr = 3e-4;
    if (o->hist < 0) o->hist = 50;
    if (o->epochs < 0) o->epochs = 6;
    if (o->batch < 0) o->batch = 32;
    if (o->wd < 0) o->wd = 0.01;
    if (!o->pool) o->pool = "mean";
}

int cmd_finetune(int argc, char **argv) {
    ft_opts o = {0};
    o.dbpath = DB_DEFAULT_PATH; o.preset = "mini"; o.loss = "softmax"; o.score = "dot";
    o.seed = CLI_SEED_DEFAULT; o.epochs = -1; o.batch = -1; o.warmup = 200; o.hist = -1; o.min_hist = 2;
    o.max_pos = -1; o.patience = -1; o.ckpt_every = 200; o.eval_batch = 128; o.dec_layers = -1;
    o.lr = -1; o.wd = -1; o.clip = 1.0; o.dropout = -1; o.temperature = 0.1;
    o.objective = "retrieval"; o.beam = 20; o.hist_order = "shuffled";
    o.negatives = -1; o.eval_every = -1; o.token_drop = -1; o.user_target = -1; o.user_prefix = -1;
    cli_opt opts[] = {
        CLI_OPTS_DB(&o.dbpath, &o.dataset),
        /* not params: added to the params JSON only for causal, so T5 runs keep their fingerprints */
        {"arch", CLI_STR, &o.arch, "causal (a decoder trained on every target at once; the default) or t5 (TokenRec's "
                                 "encoder-decoder; the default with --faithful, --init-from, --objective generate, "
                                 "--loss cosine or --score cos)", 0},
        {"item-input", CLI_STR, &o.item_input, "causal: an item's position sums its tokens, or tokens+id (default: the dataset's)", 0},
        {"id-init", CLI_STR, &o.id_init, "causal, --item-input tokens+id: each item's own row starts from its CF vector (cf) or "
         "at random (random) (default: the dataset's)", 0},
        {"token-init", CLI_STR, &o.token_init, "causal: each item token row starts from the mean CF vector of the items "
         "that carry it (cf), each user token row from the mean CF vector of the users that carry it (users), "
         "both (cf+users) or none, all at random (random) (default: the dataset's)", 0},
        {"lr-schedule", CLI_STR, &o.lr_schedule, "causal: the learning rate stays at --lr (constant) or falls along a "
         "half cosine to 0 at the last of --epochs (cosine) (default: the dataset's)", 0},
        {"token-drop", CLI_FLOAT, &o.token_drop, "causal, --item-input tokens+id: in training an item position drops its "
         "token rows (keeping its own row) with this probability (-1: the dataset's)", 0},
        {"user-target", CLI_INT, &o.user_target, "causal, --user-prefix 1: 1 trains the user position (the user's tokens) "
         "to predict the first train item, 0 keeps it as context for the items after it only (-1: the dataset's)", 0},
        {"user-prefix", CLI_INT, &o.user_prefix, "causal: 1 opens each sequence with the user's K tokens (TokenRec's "
         "prompt), 0 leaves the user out: the items alone (-1: the dataset's)", 0},
        {"user-input", CLI_STR, &o.user_input, "causal, --user-prefix 1: the user position sums the user's K token rows "
         "(tokens) or those plus a row of its own (tokens+id; from its CF vector with --id-init cf; an unseen user "
         "by its tokens alone) (default: the dataset's)", 0},
        {"ties", CLI_STR, &o.ties, "causal: training keeps each run of a user's train items with the same timestamp "
         "in its stored (file) order (keep) or permutes it every epoch (shuffle), so that order is no signal; a "
         "dataset without timestamps has no ties (default: the dataset's)", 0},
        {"cf-blend", CLI_STR, &o.cf_blend, "causal: rank by (1 - X) the model's scores + X the user's LightGCN scores "
         "(each standardised over the items), a CF prior, X in [0,1) (0: the model alone); auto: X from 0, 0.1, ..., "
         "0.9 by valid HR@10 after training, one per tie group where the data has timestamps (default: the dataset's)", 0},
        {"negatives", CLI_INT, &o.negatives, "causal: softmax over N shared sampled negatives (0: all items; -1: the dataset's)", 0},
        {"eval-every", CLI_INT, &o.eval_every, "causal: epochs between valid checks (-1: the dataset's)", 0},
        {"preset", CLI_STR, &o.preset, "model size: mini (d128, 2+1 layers), tiny, small, t5-small", 1},
        {"d-model", CLI_INT, &o.d_model, "override d_model (0: preset)", 1},
        {"heads", CLI_INT, &o.n_heads, "override attention heads (0: preset)", 1},
        {"d-ff", CLI_INT, &o.d_ff, "override feed-forward width (0: preset)", 1},
        {"layers", CLI_INT, &o.enc_layers, "override encoder layers (0: preset)", 1},
        {"dec-layers", CLI_INT, &o.dec_layers, "override decoder layers (-1: preset)", 1},
        {"dec-len", CLI_INT, &o.dec_len, "decoder input length (0: preset)", 1},
        {"dropout", CLI_FLOAT, &o.dropout, "T5 dropout (-1: preset, 0.1)", 1},
        {"loss", CLI_STR, &o.loss, "softmax (all items) or cosine (TokenRec's, one negative)", 1},
        {"pool", CLI_STR, &o.pool, "t5: the CF item vectors z is trained against and scored on, mean or ego; causal: "
                                   "cf (the mean CF vectors), learned, tokens or id (default: the dataset's)", 1},
        {"score", CLI_STR, &o.score, "dot or cos", 1},
        {"temperature", CLI_FLOAT, &o.temperature, "softmax temperature with --score cos", 1},
        /* not params: added to the params JSON only for generate, so retrieval runs keep their fingerprints */
        {"objective", CLI_STR, &o.objective, "retrieval (the head into CF space) or generate (the decoder writes the "
                                             "target's tokens; the beam-search baseline, stage finetune-gen)", 0},
        {"beam", CLI_INT, &o.beam, "generate: beam size of the validation beam search", 0},
        {"faithful", CLI_FLAG, &o.faithful, "TokenRec's choices: cosine loss, ego pool, cos, targets <= 49", 1},
        {"epochs", CLI_INT, &o.epochs, "maximum epochs (-1: t5 6, causal the dataset's)", 1},
        {"batch", CLI_INT, &o.batch, "samples per step; causal: sequences per step (-1: t5 32, causal the dataset's)", 1},
        {"lr", CLI_FLOAT, &o.lr, "AdamW learning rate (-1: t5 3e-4: 1e-3 and 3e-3 stalled from scratch, 5e-5 suits a "
                                 "pretrained t5-small; causal the dataset's)", 1},
        {"warmup", CLI_INT, &o.warmup, "linear warm-up steps", 1},
        {"wd", CLI_FLOAT, &o.wd, "AdamW weight decay (-1: t5 0.01, causal 0)", 1},
        {"clip", CLI_FLOAT, &o.clip, "gradient clipping (global norm, 0: none)", 1},
        {"hist", CLI_INT, &o.hist, "most recent history items in a prompt (causal: the window, hist-cap; -1: t5 50, "
                                   "causal the dataset's)", 1},
        {"history-order", CLI_STR, &o.hist_order, "training prompts list the history shuffled (TokenRec's) or kept "
         "(chronological, as evaluation lists it)", 0},
        {"min-hist", CLI_INT, &o.min_hist, "shortest history of a training sample", 1},
        {"max-pos", CLI_INT, &o.max_pos, "last target position of a sample (-1: all)", 1},
        {"patience", CLI_INT, &o.patience, "stop after this many valid checks without a better score (-1: t5 3, causal the dataset's)", 1},
        {"seed", CLI_INT, &o.seed, "random seed", 1},
        {"ckpt-every", CLI_INT, &o.ckpt_every, "steps between checkpoints", 0},
        {"eval-batch", CLI_INT, &o.eval_batch, "users per batch in evaluation", 0},
        {"shards", CLI_INT, &o.shards, "cut each batch into N shards (own random streams, gradients summed in a fixed "
         "tree): what 'mpirun -np P' (P <= N) splits across processes; the model depends on N, not on P "
         "(0: the whole batch at once; in the run's settings when > 1)", 0},
        CLI_OPTS_RUN(&o.threads, &o.force, &o.quiet),
        /* param 0: added to the params JSON by hand, with the files' sizes and hashes, only
         * when given (params_with_files) */
        {"init-from", CLI_STR, &o.init_from, "pretrained T5 checkpoint (.safetensors, Hugging Face names); "
         "--preset then gives only the head size and dec_len", 0},
        {"tokenizer", CLI_STR, &o.tokenizer, "its tokenizer.json (default: beside the checkpoint)", 0},
        CLI_OPT_END};
    char summary[4096];
    size_t sl = (size_t)snprintf(summary, sizeof summary, "%s\n\n", summary_ft);
    causal_defaults_text(summary + sl, sizeof summary - sl);
    int rc = cli_parse(argc, argv, opts, usage_ft, summary);
    if (rc) return rc > 0 ? 0 : -1;
    if (!o.arch)      /* T5's own settings ask for T5 */
        o.arch = o.faithful || o.init_from || o.tokenizer || strcmp(o.objective, "retrieval") || strcmp(o.loss, "softmax") ||
                 strcmp(o.score, "dot") ? "t5" : "causal";
    int causal = !strcmp(o.arch, "causal");
    if (!causal && strcmp(o.arch, "t5")) return tr_error("--arch: expected t5 or causal, got '%s'", o.arch);
    char tokbuf[4096];
    if (!causal) {
        if (o.item_input || o.id_init || o.token_init || o.lr_schedule || o.negatives >= 0 || o.eval_every >= 0 ||
            o.token_drop != -1 || o.user_target != -1 || o.user_prefix != -1 || o.user_input || o.ties || o.cf_blend)
            return tr_error("--item-input, --id-init, --token-init, --lr-schedule, --token-drop, --user-target, "
                            "--user-prefix, --user-input, --ties, --cf-blend, --negatives and --eval-every are settings of --arch causal");
        ft_defaults_t5(&o);
        if (o.patience < 0) o.patience = 3;
        if (o.faithful) { o.loss = "cosine"; o.pool = "ego"; o.score = "cos"; if (o.max_pos < 0) o.max_pos = 49; }
        if (check_opts(&o, tokbuf, sizeof tokbuf) != 0) return -1;
    } else if (o.faithful || o.init_from || strcmp(o.objective, "retrieval") || strcmp(o.loss, "softmax") ||
               strcmp(o.score, "dot")) {
        return tr_error("--arch causal trains with a softmax and scores by dot product; --faithful, --init-from, "
                        "--objective generate, --loss cosine and --score cos are settings of --arch t5");
    }
    if (o.shards < 0 || (!causal && o.shards > o.batch))
        return tr_error("--shards must be in 0..--batch (%d), got %d", o.batch, o.shards);
    if (dist_size() > 1 && o.shards < dist_size())
        return tr_error("finetune under mpirun with %d processes: each batch is cut into --shards pieces, a setting "
                        "of the run (the model depends on it, not on the process count); give --shards %d or more "
                        "(a power of two, e.g. 8, keeps every power-of-two process count bitwise the same), and the "
                        "same value when resuming", dist_size(), dist_size());
    t5_set_threads(o.threads || dist_size() == 1 ? o.threads : dist_default_threads());
    if (dist_rank() != 0) {             /* under mpirun: rank 0 opens the database, the rest follow */
        int go = dist_bcast_int(0);
        if (go != 1) return go == 0 ? 0 : tr_error("rank 0 stopped (its error above)");
        if (causal) causal_opts_bcast(&o);
        o.quiet = 1;
        return causal ? finetune_causal_run(NULL, &o) : finetune_run(NULL, &o);
    }
    stage_cmd c;
    if (stage_cmd_open(&c, o.dbpath, o.dataset) != 0) return -1;
    o.dataset = c.dataset;
    if (causal && causal_defaults(&o, c.dataset) != 0) return stage_cmd_close(&c, -1);
    char *pj = make_params(opts, &o);
    if (!pj) return stage_cmd_close(&c, -1);
    if (o.shards > 1) pj = cli_json_append(pj, "\"shards\":%d", o.shards);
    /* generate runs are their own stage: the current "finetune" run stays the retrieval model
     * that evaluate --method tokenrec and the stage freshness checks see */
    int b = stage_cmd_begin(&c, !strcmp(o.objective, "generate") ? "finetune-gen" : "finetune", pj, NULL,
                            o.force, o.quiet, NULL);
    dist_bcast_int(b == 0 ? 1 : b == STAGE_UP_TO_DATE ? 0 : -1);
    if (b != 0) return stage_cmd_close(&c, b == STAGE_UP_TO_DATE ? 0 : -1);
    if (causal) causal_opts_bcast(&o);  /* the dataset's defaults, which only rank 0 could read */
    return stage_cmd_close(&c, causal ? finetune_causal_run(&c.run, &o) : finetune_run(&c.run, &o));
}
