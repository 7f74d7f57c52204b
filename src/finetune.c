/* finetune.c: `tokenrec finetune`, resumable training of the TokenRec model. */
#include "finetune.h"
#include "cli.h"
#include "db.h"
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

/* The settings of a run (all from the command line). */
typedef struct {
    const char *dbpath, *dataset, *preset, *loss, *pool, *score, *init_from, *tokenizer, *objective, *hist_order;
    int seed, threads, epochs, batch, warmup, hist, min_hist, max_pos, patience, ckpt_every, beam;
    int eval_batch, d_model, n_heads, d_ff, enc_layers, dec_layers, dec_len, faithful, force, quiet;
    double lr, wd, clip, dropout, temperature;
} ft_opts;

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

static int save_ckpt(stage_run *run, t5_model *m, const ft_state *st, const float *best) {
    size_t np = t5_n_params(m) * sizeof(float);
    if (stage_ckpt_begin(run) != 0) return -1;
    int rc = stage_ckpt_put(run, "params", st->step, t5_params(m), np);
    if (!rc) rc = stage_ckpt_put(run, "adam_m", st->step, t5_adam_m(m), np);
    if (!rc) rc = stage_ckpt_put(run, "adam_v", st->step, t5_adam_v(m), np);
    if (!rc && best) rc = stage_ckpt_put(run, "best", st->step, best, np);
    if (!rc) rc = stage_ckpt_put(run, "state", st->step, st, sizeof *st);
    if (rc) { db_rollback(run->db); return -1; }
    return stage_ckpt_commit(run);
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

static const char *usage_ft = "tokenrec finetune [--dataset NAME] [options]";
static const char *summary_ft =
    "Fine-tune TokenRec's T5 recommender on prompts of user and item tokens (needs a finished\n"
    "tokenize run). Default: softmax over all items against the propagated CF item vectors\n"
    "(the setting that reaches the targets); --faithful: TokenRec's cosine-embedding loss with\n"
    "one negative against the ego vectors. Resumable: run the same command again after a kill\n"
    "or Ctrl-C. The best epoch on the valid items is kept. --init-from starts from a pretrained\n"
    "T5 checkpoint (e.g. Hugging Face t5-small's model.safetensors with its tokenizer.json).\n"
    "--objective generate: the autoregressive baseline (its own stage, finetune-gen): the decoder\n"
    "generates the target item's tokens through an LM head tied to the item-token embeddings,\n"
    "cross-entropy with teacher forcing; validation by constrained beam search (--beam).";

int cmd_finetune(int argc, char **argv) {
    ft_opts o = {0};
    o.dbpath = DB_DEFAULT_PATH; o.preset = "mini"; o.loss = "softmax"; o.pool = "mean"; o.score = "dot";
    o.seed = 42; o.epochs = 6; o.batch = 32; o.warmup = 200; o.hist = 50; o.min_hist = 2;
    o.max_pos = -1; o.patience = 3; o.ckpt_every = 200; o.eval_batch = 128; o.dec_layers = -1;
    o.lr = 3e-4; o.wd = 0.01; o.clip = 1.0; o.dropout = -1; o.temperature = 0.1;
    o.objective = "retrieval"; o.beam = 20; o.hist_order = "shuffled";
    cli_opt opts[] = {
        {"db", CLI_STR, &o.dbpath, "database file", 0},
        {"dataset", CLI_STR, &o.dataset, "dataset (default: the last ingested)", 0},
        {"preset", CLI_STR, &o.preset, "model size: mini (d128, 2+1 layers), tiny, small, t5-small", 1},
        {"d-model", CLI_INT, &o.d_model, "override d_model (0: preset)", 1},
        {"heads", CLI_INT, &o.n_heads, "override attention heads (0: preset)", 1},
        {"d-ff", CLI_INT, &o.d_ff, "override feed-forward width (0: preset)", 1},
        {"layers", CLI_INT, &o.enc_layers, "override encoder layers (0: preset)", 1},
        {"dec-layers", CLI_INT, &o.dec_layers, "override decoder layers (-1: preset)", 1},
        {"dec-len", CLI_INT, &o.dec_len, "decoder input length (0: preset)", 1},
        {"dropout", CLI_FLOAT, &o.dropout, "T5 dropout (-1: preset, 0.1)", 1},
        {"loss", CLI_STR, &o.loss, "softmax (all items) or cosine (TokenRec's, one negative)", 1},
        {"pool", CLI_STR, &o.pool, "item vectors z is trained against and scored on: mean or ego", 1},
        {"score", CLI_STR, &o.score, "dot or cos", 1},
        {"temperature", CLI_FLOAT, &o.temperature, "softmax temperature with --score cos", 1},
        /* not params: added to the params JSON only for generate, so retrieval runs keep their fingerprints */
        {"objective", CLI_STR, &o.objective, "retrieval (the head into CF space) or generate (the decoder writes the "
                                             "target's tokens; the beam-search baseline, stage finetune-gen)", 0},
        {"beam", CLI_INT, &o.beam, "generate: beam size of the validation beam search", 0},
        {"faithful", CLI_FLAG, &o.faithful, "TokenRec's choices: cosine loss, ego pool, cos, targets <= 49", 1},
        {"epochs", CLI_INT, &o.epochs, "maximum epochs", 1},
        {"batch", CLI_INT, &o.batch, "samples per step", 1},
        {"lr", CLI_FLOAT, &o.lr, "AdamW learning rate (3e-4 from scratch: 1e-3 and 3e-3 stalled; 5e-5 suits a pretrained t5-small)", 1},
        {"warmup", CLI_INT, &o.warmup, "linear warm-up steps", 1},
        {"wd", CLI_FLOAT, &o.wd, "AdamW weight decay", 1},
        {"clip", CLI_FLOAT, &o.clip, "gradient clipping (global norm, 0: none)", 1},
        {"hist", CLI_INT, &o.hist, "most recent history items in a prompt", 1},
        {"history-order", CLI_STR, &o.hist_order, "training prompts list the history shuffled (TokenRec's) or kept "
         "(chronological, as evaluation lists it)", 0},
        {"min-hist", CLI_INT, &o.min_hist, "shortest history of a training sample", 1},
        {"max-pos", CLI_INT, &o.max_pos, "last target position of a sample (-1: all)", 1},
        {"patience", CLI_INT, &o.patience, "stop after this many epochs without a better valid score", 1},
        {"seed", CLI_INT, &o.seed, "random seed", 1},
        {"ckpt-every", CLI_INT, &o.ckpt_every, "steps between checkpoints", 0},
        {"eval-batch", CLI_INT, &o.eval_batch, "users per batch in evaluation", 0},
        {"threads", CLI_INT, &o.threads, "threads (0: all cores)", 0},
        {"force", CLI_FLAG, &o.force, "train again even if an identical run is done", 0},
        {"quiet", CLI_FLAG, &o.quiet, "no progress lines", 0},
        /* param 0: added to the params JSON by hand, with the files' sizes and hashes, only
         * when given (params_with_files) */
        {"init-from", CLI_STR, &o.init_from, "pretrained T5 checkpoint (.safetensors, Hugging Face names); "
         "--preset then gives only the head size and dec_len", 0},
        {"tokenizer", CLI_STR, &o.tokenizer, "its tokenizer.json (default: beside the checkpoint)", 0},
        CLI_OPT_END};
    int rc = cli_parse(argc, argv, opts, usage_ft, summary_ft);
    if (rc) return rc > 0 ? 0 : -1;
    if (o.faithful) { o.loss = "cosine"; o.pool = "ego"; o.score = "cos"; if (o.max_pos < 0) o.max_pos = 49; }
    int cosine_loss = !strcmp(o.loss, "cosine");
    if (!cosine_loss && strcmp(o.loss, "softmax")) return tr_error("--loss: expected softmax or cosine, got '%s'", o.loss);
    if (strcmp(o.pool, "mean") && strcmp(o.pool, "ego")) return tr_error("--pool: expected mean or ego, got '%s'", o.pool);
    int cosine = !strcmp(o.score, "cos");
    if (!cosine && strcmp(o.score, "dot")) return tr_error("--score: expected dot or cos, got '%s'", o.score);
    if (o.batch < 1 || o.batch > 4096 || o.epochs < 1 || o.hist < 1 || o.min_hist < 1 || o.eval_batch < 1)
        return tr_error("finetune: --batch (1..4096), --epochs, --hist, --min-hist and --eval-batch must be positive");
    if (o.temperature <= 0) return tr_error("--temperature must be positive");
    int gen = !strcmp(o.objective, "generate");
    if (!gen && strcmp(o.objective, "retrieval")) return tr_error("--objective: expected retrieval or generate, got '%s'", o.objective);
    if (o.beam < 1 || o.beam > 1024) return tr_error("--beam must be in 1..1024");
    int keep_order = !strcmp(o.hist_order, "kept");
    if (!keep_order && strcmp(o.hist_order, "shuffled"))
        return tr_error("--history-order: expected shuffled or kept, got '%s'", o.hist_order);
    if (gen && (o.faithful || cosine_loss))
        return tr_error("--objective generate trains with cross-entropy over the item tokens; --faithful and --loss cosine do not apply");
    if (gen && o.init_from)
        return tr_error("--objective generate does not take --init-from (its decoder length depends on the codes per item)");
    char tokbuf[4096];
    if (o.init_from) {
        if (!tr_file_exists(o.init_from)) return tr_error("--init-from: no file %s", o.init_from);
        if (!o.tokenizer) {
            const char *sl = strrchr(o.init_from, '/');
            snprintf(tokbuf, sizeof tokbuf, "%.*stokenizer.json", sl ? (int)(sl - o.init_from + 1) : 0, o.init_from);
            if (!tr_file_exists(tokbuf))
                return tr_error("--init-from: no tokenizer.json beside %s; give --tokenizer FILE (the "
                                "checkpoint's Hugging Face tokenizer.json)", o.init_from);
            o.tokenizer = tokbuf;
        } else if (!tr_file_exists(o.tokenizer)) {
            return tr_error("--tokenizer: no file %s", o.tokenizer);
        }
    } else if (o.tokenizer) {
        return tr_error("--tokenizer needs --init-from (the word-level vocabulary needs no tokenizer)");
    }
    t5_set_threads(o.threads);

    stage_cmd c;
    if (stage_cmd_open(&c, o.dbpath, o.dataset) != 0) return -1;
    sqlite3 *db = c.db;
    o.dataset = c.dataset;
    char *pj = cli_params_json(opts);
    /* only when kept, so the fingerprints of shuffled runs stay as they were */
    if (keep_order) pj = cli_json_append(pj, "\"history-order\":\"kept\"");
    if (o.init_from && !(pj = params_with_files(pj, o.init_from, o.tokenizer))) { db_close(db); return -1; }
    /* generate runs are their own stage: the current "finetune" run stays the retrieval model
     * that evaluate --method tokenrec and the stage freshness checks see */
    const char *stage_name = gen ? "finetune-gen" : "finetune";
    if (gen) {
        char *pg = tr_malloc(strlen(pj) + 64);
        snprintf(pg, strlen(pj) + 64, "{\"objective\":\"generate\",\"beam\":%d,%s", o.beam, pj + 1);
        free(pj);
        pj = pg;
    }
    int b = stage_cmd_begin(&c, stage_name, pj, NULL, o.force, o.quiet, NULL);
    if (b != 0) return stage_cmd_close(&c, b == STAGE_UP_TO_DATE ? 0 : -1);
    stage_run run = c.run;

    rec_data d;
    prompt_vocab v;
    memset(&v, 0, sizeof v);
    t5_model *m = NULL;
    rec_sample *samples = NULL;
    int64_t *order = NULL;
    int32_t *batch_order = NULL;
    float *best = NULL, *logits = NULL, *dz = NULL, *pos = NULL, *neg = NULL;
    rec_batch bt;
    memset(&bt, 0, sizeof bt);
    int32_t *gdec = NULL, *gcodes = NULL;      /* generate: decoder ids and target codes */
    t5_gen_ws gws;
    memset(&gws, 0, sizeof gws);
    gen_search gs;
    memset(&gs, 0, sizeof gs);
    int P = 0;
    t5_gen_book books[T5_GEN_MAX_STEPS];
    int status = -1;
    if (rec_data_load(db, o.dataset, run.upstream_run, o.pool, &d) != 0) goto fail_nodata;
    t5_config cfg;
    rng_t init;
    rng_seed(&init, (uint64_t)o.seed);
    if (o.init_from) {
        if (init_pretrained(&o, o.tokenizer, &d, &init, &v, &m) != 0) goto fail;
        cfg = *t5_cfg(m);
        if (!o.quiet && !run.resumed)
            fprintf(stderr, "[finetune] from %s: d_model %d, %d+%d layers; tokenizer %s: %d tokens, ID tokens "
                    "from id %d\n", o.init_from, cfg.d_model, cfg.n_enc_layers, cfg.n_dec_layers, o.tokenizer,
                    v.n_words, v.base_item);
    } else {
        if (prompt_vocab_init(&v, d.K, d.L, d.extra) != 0) goto fail;
        if (make_config(&o, v.vocab, d.D, &cfg) != 0) goto fail;
        if (gen) {   /* the prompt then the target's first cpi-1 codes; the head is unused */
            if (d.cpi > T5_GEN_MAX_STEPS) { tr_error("generate: %d codes per item (at most %d)", d.cpi, T5_GEN_MAX_STEPS); goto fail; }
            P = cfg.dec_len;
            cfg.dec_len = P + d.cpi - 1;
            cfg.head_hidden = 0;
        }
        m = t5_new(&cfg, &init);
        if (!m) goto fail;
    }
    int64_t n;
    samples = rec_samples(&d, o.hist, o.min_hist, o.max_pos, &n);
    if (n == 0) { tr_error("finetune: no training samples (sequences too short for --min-hist %d)", o.min_hist); goto fail; }
    int64_t nb = (n + o.batch - 1) / o.batch;
    order = tr_malloc((size_t)n * sizeof *order);
    batch_order = tr_malloc((size_t)nb * sizeof *batch_order);
    size_t np = t5_n_params(m);
    best = tr_malloc(np * sizeof *best);
    memcpy(best, t5_params(m), np * sizeof *best);
    logits = tr_malloc((size_t)o.batch * d.n_items * sizeof *logits);
    dz = tr_malloc((size_t)o.batch * d.D * sizeof *dz);
    pos = tr_malloc((size_t)o.batch * d.D * sizeof *pos);
    neg = tr_malloc((size_t)o.batch * d.D * sizeof *neg);
    rec_batch_init(&bt, &d, &v, o.batch, o.hist, cfg.dec_len);
    bt.keep_order = keep_order;
    t5_reserve(m, o.batch > o.eval_batch ? o.batch : o.eval_batch, bt.cap_T);
    if (gen) {
        int max_n = 0;
        for (int s = 0; s < d.cpi; s++) { books[s] = gen_book(&v, &d, s); if (books[s].n > max_n) max_n = books[s].n; }
        gdec = tr_malloc((size_t)o.batch * cfg.dec_len * sizeof *gdec);
        gcodes = tr_malloc((size_t)o.batch * d.cpi * sizeof *gcodes);
        t5_gen_ws_init(&gws, m, o.batch, max_n);
        if (gen_search_init(&gs, m, &v, &d, o.beam, o.eval_batch, o.hist) != 0) goto fail;
    }

    ft_state st = {0};
    st.best = -1;
    if (run.resumed) {
        if (stage_ckpt_read(&run, "state", &st, sizeof st) == 0) {
            if (stage_ckpt_read(&run, "params", t5_params(m), np * sizeof(float)) != 0 ||
                stage_ckpt_read(&run, "adam_m", t5_adam_m(m), np * sizeof(float)) != 0 ||
                stage_ckpt_read(&run, "adam_v", t5_adam_v(m), np * sizeof(float)) != 0 ||
                stage_ckpt_read(&run, "best", best, np * sizeof(float)) != 0) {
                tr_error("finetune: the checkpoint of run %lld is incomplete: %s", (long long)run.id, tr_errmsg());
                goto fail;
            }
            t5_set_step(m, (long)st.step);
            if (!o.quiet) fprintf(stderr, "[finetune] resuming run %lld at epoch %d, batch %d (step %lld)\n",
                                  (long long)run.id, st.epoch + 1, st.batch, (long long)st.step);
        }
    }
    if (!o.quiet && !run.resumed)
        fprintf(stderr, "[finetune] %s: %lld samples, %lld batches/epoch, vocab %d, %zu parameters, "
                "loss %s, pool %s, score %s\n", o.dataset, (long long)n, (long long)nb, v.vocab, np,
                o.loss, o.pool, o.score);
    adamw_cfg opt = adamw_default((float)o.lr);
    opt.weight_decay = (float)o.wd;
    double t_start = tr_monotonic();
    int64_t steps_here = 0, samples_here = 0;
    int stopped = 0;
    /* a checkpoint taken after the early stop must not train further epochs on resume */
    for (; st.epoch < o.epochs && !(o.patience > 0 && st.bad >= o.patience) && !stopped;
         st.epoch++, st.batch = 0) {
        epoch_order(samples, n, o.batch, (uint64_t)o.seed, st.epoch, order, batch_order, nb);
        for (; st.batch < nb; st.batch++) {
            int64_t first = (int64_t)batch_order[st.batch] * o.batch;
            int nbs = (int)(n - first < o.batch ? n - first : o.batch);
            rec_sample bs[4096];
            for (int r = 0; r < nbs; r++) bs[r] = samples[order[first + r]];
            rng_t br;
            rng_seed(&br, (uint64_t)o.seed * 0x9E3779B97F4A7C15ull ^ ((uint64_t)st.epoch << 32) ^ (uint64_t)st.batch);
            rec_batch_fill(&bt, &d, &v, bs, nbs, 1, 0, &br);
            t5_batch tb = rec_batch_t5(&bt);
            opt.lr = (float)(o.lr * (o.warmup > 0 && st.step < o.warmup ? (st.step + 1.0) / o.warmup : 1.0));
            float loss;
            if (gen) {
                gen_train_dec(&v, &d, bt.target, nbs, P, gdec, gcodes);
                tb.dec_ids = gdec;
                tb.dec_per_row = 1;
                if (t5_forward(m, &tb, 1, &br, NULL) != 0) goto fail;
                tr_error_clear();
                loss = t5_gen_loss(m, &tb, P, d.cpi, books, gcodes, &gws, 1);
                if (isnan(loss) && tr_errmsg()[0]) goto fail;
                t5_adamw_step(m, &opt, (float)o.clip);
            } else if (cosine_loss) {
                for (int r = 0; r < nbs; r++) {
                    memcpy(pos + (size_t)r * d.D, d.pool + (size_t)bt.target[r] * d.D, (size_t)d.D * sizeof *pos);
                    memcpy(neg + (size_t)r * d.D, d.pool + (size_t)sample_negative(&d, &bs[r], &br) * d.D,
                           (size_t)d.D * sizeof *neg);
                }
                tb.pos = pos;
                tb.neg = neg;
                if (t5_train_step(m, &tb, &opt, (float)o.clip, &br, &loss) != 0) goto fail;
            } else {
                if (t5_forward(m, &tb, 1, &br, NULL) != 0) goto fail;
                loss = softmax_loss(t5_z(m), bt.target, nbs, &d, cosine, (float)o.temperature, logits, dz);
                if (t5_backward_dz(m, &tb, dz) != 0) goto fail;
                t5_adamw_step(m, &opt, (float)o.clip);
            }
            if (!isfinite(loss)) { tr_error("finetune: the loss diverged at step %lld (try a lower --lr)", (long long)st.step); goto fail; }
            st.step++;
            steps_here++;
            samples_here += nbs;
            st.loss_sum += loss;
            st.loss_n++;
            if (st.step % 50 == 0) {
                stage_metric(&run, st.step, "train_loss", st.loss_sum / st.loss_n);
                st.loss_sum = 0;
                st.loss_n = 0;
            }
            double el = tr_monotonic() - t_start;
            double frac = ((double)st.epoch * nb + st.batch + 1) / ((double)o.epochs * nb);
            stage_progress(&run, frac, "epoch %d/%d batch %d/%lld loss %.4f, %.0f samples/s, best valid HR@10 %.4f",
                           st.epoch + 1, o.epochs, st.batch + 1, (long long)nb, loss,
                           samples_here / (el > 0 ? el : 1), st.best_hr);
            int stop = stage_should_stop();
            if (stop || (o.ckpt_every > 0 && st.step % o.ckpt_every == 0)) {
                st.batch++;                       /* the checkpoint resumes after this batch */
                int crc = save_ckpt(&run, m, &st, best);
                st.batch--;
                if (crc != 0) goto fail;
            }
            if (stop) { stopped = 1; break; }
        }
        if (stopped) break;
        /* end of epoch: valid HR@10 / NDCG@10 with the test template, history excluded */
        retr_metrics met;
        int ks[2] = {10, 20};
        retr_metrics_init(&met, 2, ks);
        if (gen ? gen_evaluate(&gs, m, &v, &d, 1, PROMPT_TEST, o.eval_batch, &met, 0, NULL, NULL) != 0
                : rec_evaluate(m, &v, &d, 1, o.hist, PROMPT_TEST, cosine, o.eval_batch, &met, 0, NULL, NULL) != 0) goto fail;
        double hr = retr_hr(&met, 10), nd = retr_ndcg(&met, 10);
        stage_metric(&run, st.epoch + 1, "valid_hr@10", hr);
        stage_metric(&run, st.epoch + 1, "valid_ndcg@10", nd);
        if (!o.quiet) fprintf(stderr, "\n[finetune] epoch %d: valid HR@10 %.4f NDCG@10 %.4f%s\n", st.epoch + 1,
                              hr, nd, hr + nd > st.best ? " (best)" : "");
        if (hr + nd > st.best) {
            st.best = hr + nd; st.best_hr = hr; st.best_ndcg = nd; st.best_epoch = st.epoch + 1; st.bad = 0;
            memcpy(best, t5_params(m), np * sizeof *best);
        } else {
            st.bad++;
        }
        ft_state next = st;
        next.epoch++;
        next.batch = 0;
        if (save_ckpt(&run, m, &next, best) != 0) goto fail;
        if (st.bad >= o.patience) {
            if (!o.quiet) fprintf(stderr, "[finetune] no better valid score for %d epochs: stopping\n", o.patience);
            st.epoch++;
            break;
        }
    }
    if (stopped) {
        stage_stopped(&run);
        status = 130;
        goto out;
    }
    /* the best epoch: test metrics, then the model and the metrics in one transaction */
    memcpy(t5_params(m), best, np * sizeof *best);
    retr_metrics vm, tm;
    int ks[3] = {10, 20, 30};
    retr_metrics_init(&vm, 3, ks);
    retr_metrics_init(&tm, 3, ks);
    if (gen) {
        if (gen_evaluate(&gs, m, &v, &d, 1, PROMPT_TEST, o.eval_batch, &vm, 0, NULL, NULL) != 0 ||
            gen_evaluate(&gs, m, &v, &d, 2, PROMPT_TEST, o.eval_batch, &tm, 0, NULL, NULL) != 0)
            goto fail;
    } else if (rec_evaluate(m, &v, &d, 1, o.hist, PROMPT_TEST, cosine, o.eval_batch, &vm, 0, NULL, NULL) != 0 ||
               rec_evaluate(m, &v, &d, 2, o.hist, PROMPT_TEST, cosine, o.eval_batch, &tm, 0, NULL, NULL) != 0)
        goto fail;
    if (stage_finish_begin(&run) != 0 || rec_model_save(db, run.id, m, &v, o.pool, cosine, o.hist) != 0)
        goto fail;
    if (gen) {
        char *sql = sqlite3_mprintf("UPDATE models SET objective='generate' WHERE run_id=%lld", (long long)run.id);
        int urc = db_exec(db, sql);
        sqlite3_free(sql);
        if (urc != 0) goto fail;
    }
    sqlite3_stmt *ins = db_prep(db, "INSERT OR REPLACE INTO run_metrics (run_id, method, split, metric, k, value) VALUES (?,?,?,?,?,?)");
    if (!ins) goto fail;
    const char *method = gen ? "generate" : o.faithful ? "tokenrec-faithful" : "tokenrec";
    for (int s = 0; s < 2; s++)
        for (int k = 0; k < 3; k++)
            for (int mt = 0; mt < 2; mt++) {
                const retr_metrics *M = s ? &tm : &vm;
                sqlite3_bind_int64(ins, 1, run.id);
                sqlite3_bind_text(ins, 2, method, -1, SQLITE_STATIC);
                sqlite3_bind_text(ins, 3, s ? "test" : "valid", -1, SQLITE_STATIC);
                sqlite3_bind_text(ins, 4, mt ? "ndcg" : "hr", -1, SQLITE_STATIC);
                sqlite3_bind_int(ins, 5, ks[k]);
                sqlite3_bind_double(ins, 6, mt ? retr_ndcg(M, ks[k]) : retr_hr(M, ks[k]));
                if (db_step_done(db, ins) != 0) { sqlite3_finalize(ins); goto fail; }
            }
    sqlite3_finalize(ins);
    if (stage_finish_commit(&run) != 0) goto fail;
    double el = tr_monotonic() - t_start;
    if (!o.quiet)
        fprintf(stderr, "[finetune] %s done in %.0fs (%.0f samples/s): best epoch %d, valid HR@10 %.4f "
                "NDCG@10 %.4f; test HR@10 %.4f NDCG@10 %.4f HR@20 %.4f NDCG@20 %.4f\n", o.dataset, el,
                samples_here / (el > 0 ? el : 1), st.best_epoch, retr_hr(&vm, 10), retr_ndcg(&vm, 10),
                retr_hr(&tm, 10), retr_ndcg(&tm, 10), retr_hr(&tm, 20), retr_ndcg(&tm, 20));
    status = 0;
    goto out;
fail:
    rec_data_free(&d);
fail_nodata:
    status = stage_fail_err(&run);
    goto cleanup;
out:
    rec_data_free(&d);
cleanup:
    rec_batch_free(&bt);
    prompt_vocab_free(&v);
    if (m) t5_free(m);
    free(samples); free(order); free(batch_order); free(best); free(logits); free(dz); free(pos); free(neg);
    free(gdec); free(gcodes);
    t5_gen_ws_free(&gws);
    gen_search_free(&gs);
    db_close(db);
    return status;
}
