/* t5.c: the T5 encoder-decoder and TokenRec head (see t5.h). */
#include "t5.h"
#include "t5_internal.h"
#include "safetensors.h"
#include "util.h"
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The model struct and its arena are in t5_internal.h (shared with t5_gen.c). */

/* ------------------------------------------------------------------------------------
 * Config and presets
 * ------------------------------------------------------------------------------------ */

int t5_preset(const char *name, t5_config *c) {
    memset(c, 0, sizeof *c);
    c->rel_buckets = 32; c->rel_max_distance = 128;
    c->dropout = 0.1f; c->head_dropout = 0.2f; c->ln_eps = 1e-6f;
    c->head_hidden = 256; c->head_out = 64; c->dec_len = 20;
    if (!strcmp(name, "tiny")) {
        c->vocab = 64; c->d_model = 32; c->d_kv = 8; c->n_heads = 4; c->d_ff = 64;
        c->n_enc_layers = 2; c->n_dec_layers = 2;
        c->head_hidden = 48; c->head_out = 16; c->dec_len = 6;
    } else if (!strcmp(name, "small")) {
        c->vocab = 32128; c->d_model = 256; c->d_kv = 64; c->n_heads = 4; c->d_ff = 1024;
        c->n_enc_layers = 4; c->n_dec_layers = 2;
    } else if (!strcmp(name, "t5-small")) {
        c->vocab = 32128; c->d_model = 512; c->d_kv = 64; c->n_heads = 8; c->d_ff = 2048;
        c->n_enc_layers = 6; c->n_dec_layers = 6;
    } else {
        return tr_error("unknown T5 preset '%s' (expected tiny, small or t5-small)", name);
    }
    return 0;
}

static int cfg_check(const t5_config *c) {
    if (c->vocab <= 0 || c->d_model <= 0 || c->d_kv <= 0 || c->n_heads <= 0 || c->d_ff <= 0 ||
        c->n_enc_layers <= 0 || c->n_dec_layers < 0 || c->rel_buckets <= 1 ||
        c->rel_max_distance <= 0 || c->head_out <= 0 || c->head_hidden < 0 ||
        (c->n_dec_layers > 0 && c->dec_len <= 0) || c->dropout < 0 || c->dropout >= 1 ||
        c->head_dropout < 0 || c->head_dropout >= 1)
        return tr_error("invalid T5 config (vocab %d, d_model %d, d_kv %d, heads %d, d_ff %d, "
                        "layers %d+%d, head %d->%d, dec_len %d)", c->vocab, c->d_model, c->d_kv,
                        c->n_heads, c->d_ff, c->n_enc_layers, c->n_dec_layers, c->head_hidden,
                        c->head_out, c->dec_len);
    return 0;
}

/* ------------------------------------------------------------------------------------
 * Parameter layout
 * ------------------------------------------------------------------------------------ */

static size_t add_param(t5_model *m, const char *name, int rows, int cols) {
    if (m->n_tab == m->cap_tab) {
        m->cap_tab = m->cap_tab ? 2 * m->cap_tab : 128;
        m->tab = tr_realloc(m->tab, sizeof(t5_param) * (size_t)m->cap_tab);
    }
    t5_param *p = &m->tab[m->n_tab++];
    p->name = tr_strdup(name);
    p->off = m->n_params;
    p->rows = rows; p->cols = cols;
    p->n = (size_t)rows * (cols ? cols : 1);
    m->n_params += p->n;
    return p->off;
}

/* Hugging Face names in HF order; shared.weight goes last in the buffer so that growing the
 * vocabulary only appends. The q, k, v weights of a block (and the cross-attention k, v)
 * must stay consecutive: the forward pass uses them as one fused (3HD, C) or (2HD, C)
 * matrix. */
static void build_layout(t5_model *m) {
    const t5_config *c = &m->cfg;
    int C = c->d_model, HD = c->n_heads * c->d_kv, F = c->d_ff;
    char nm[160];
    m->enc = tr_calloc((size_t)c->n_enc_layers, sizeof(t5_block_off));
    m->dec = tr_calloc(c->n_dec_layers ? (size_t)c->n_dec_layers : 1, sizeof(t5_block_off));
    for (int s = 0; s < 2; s++) {
        const char *st = s ? "decoder" : "encoder";
        int L = s ? c->n_dec_layers : c->n_enc_layers;
        for (int l = 0; l < L; l++) {
            t5_block_off *b = s ? &m->dec[l] : &m->enc[l];
#define P(field, suffix, r, cc) do { snprintf(nm, sizeof nm, "%s.block.%d.%s", st, l, suffix); \
                                     b->field = add_param(m, nm, r, cc); } while (0)
            P(ln0, "layer.0.layer_norm.weight", C, 0);
            P(q, "layer.0.SelfAttention.q.weight", HD, C);
            P(k, "layer.0.SelfAttention.k.weight", HD, C);
            P(v, "layer.0.SelfAttention.v.weight", HD, C);
            P(o, "layer.0.SelfAttention.o.weight", C, HD);
            if (l == 0) {
                snprintf(nm, sizeof nm, "%s.block.0.layer.0.SelfAttention.relative_attention_bias.weight", st);
                size_t off = add_param(m, nm, c->rel_buckets, c->n_heads);
                if (s) m->dec_rel = off; else m->enc_rel = off;
            }
            if (s) {
                P(lnc, "layer.1.layer_norm.weight", C, 0);
                P(cq, "layer.1.EncDecAttention.q.weight", HD, C);
                P(ck, "layer.1.EncDecAttention.k.weight", HD, C);
                P(cv, "layer.1.EncDecAttention.v.weight", HD, C);
                P(co, "layer.1.EncDecAttention.o.weight", C, HD);
                P(ff_ln, "layer.2.layer_norm.weight", C, 0);
                P(wi, "layer.2.DenseReluDense.wi.weight", F, C);
                P(wo, "layer.2.DenseReluDense.wo.weight", C, F);
            } else {
                P(ff_ln, "layer.1.layer_norm.weight", C, 0);
                P(wi, "layer.1.DenseReluDense.wi.weight", F, C);
                P(wo, "layer.1.DenseReluDense.wo.weight", C, F);
            }
#undef P
        }
        if (L > 0) {
            snprintf(nm, sizeof nm, "%s.final_layer_norm.weight", st);
            size_t off = add_param(m, nm, C, 0);
            if (s) m->dec_lnf = off; else m->enc_lnf = off;
        }
    }
    int in = c->n_dec_layers > 0 ? c->dec_len * C : C;
    if (c->head_hidden > 0) {
        m->fc1_w = add_param(m, "head.fc1.weight", c->head_hidden, in);
        m->fc1_b = add_param(m, "head.fc1.bias", c->head_hidden, 0);
        m->fc2_w = add_param(m, "head.fc2.weight", c->head_out, c->head_hidden);
    } else {
        m->fc2_w = add_param(m, "head.fc2.weight", c->head_out, in);
    }
    m->fc2_b = add_param(m, "head.fc2.bias", c->head_out, 0);
    m->shared = add_param(m, "shared.weight", c->vocab, C);
}

static void fill_normal(float *p, size_t n, float std, rng_t *rng) {
    for (size_t i = 0; i < n; i++) p[i] = std * rng_normal(rng);
}
static void fill_uniform(float *p, size_t n, float bound, rng_t *rng) {
    for (size_t i = 0; i < n; i++) p[i] = bound * (2.0f * rng_uniform(rng) - 1.0f);
}
static void fill_const(float *p, size_t n, float v) {
    for (size_t i = 0; i < n; i++) p[i] = v;
}

/* Hugging Face T5PreTrainedModel._init_weights with factor 1: q ~ N(0, (C*d_kv)^-1/2),
 * k, v ~ N(0, C^-1/2), o ~ N(0, (H*d_kv)^-1/2), relative bias ~ N(0, C^-1/2),
 * wi ~ N(0, C^-1/2), wo ~ N(0, d_ff^-1/2), norms 1, shared ~ N(0, 1). The head is
 * PyTorch nn.Linear: U(+-1/sqrt(in)) for weight and bias. */
static void init_head(t5_model *m, rng_t *rng) {
    const t5_config *c = &m->cfg;
    int in = c->n_dec_layers > 0 ? c->dec_len * c->d_model : c->d_model;
    float *P = m->params;
    if (c->head_hidden > 0) {
        float b1 = 1.0f / sqrtf((float)in), b2 = 1.0f / sqrtf((float)c->head_hidden);
        fill_uniform(P + m->fc1_w, (size_t)c->head_hidden * in, b1, rng);
        fill_uniform(P + m->fc1_b, (size_t)c->head_hidden, b1, rng);
        fill_uniform(P + m->fc2_w, (size_t)c->head_out * c->head_hidden, b2, rng);
        fill_uniform(P + m->fc2_b, (size_t)c->head_out, b2, rng);
    } else {
        float b = 1.0f / sqrtf((float)in);
        fill_uniform(P + m->fc2_w, (size_t)c->head_out * in, b, rng);
        fill_uniform(P + m->fc2_b, (size_t)c->head_out, b, rng);
    }
}

static void init_weights(t5_model *m, rng_t *rng) {
    const t5_config *c = &m->cfg;
    float *P = m->params;
    int C = c->d_model, HD = c->n_heads * c->d_kv, F = c->d_ff;
    float sC = 1.0f / sqrtf((float)C), sQ = 1.0f / sqrtf((float)C * c->d_kv);
    float sO = 1.0f / sqrtf((float)HD), sF = 1.0f / sqrtf((float)F);
    size_t nCH = (size_t)C * HD;
    for (int s = 0; s < 2; s++) {
        int L = s ? c->n_dec_layers : c->n_enc_layers;
        for (int l = 0; l < L; l++) {
            t5_block_off *b = s ? &m->dec[l] : &m->enc[l];
            fill_const(P + b->ln0, (size_t)C, 1.0f);
            fill_normal(P + b->q, nCH, sQ, rng);
            fill_normal(P + b->k, nCH, sC, rng);
            fill_normal(P + b->v, nCH, sC, rng);
            fill_normal(P + b->o, nCH, sO, rng);
            if (s) {
                fill_const(P + b->lnc, (size_t)C, 1.0f);
                fill_normal(P + b->cq, nCH, sQ, rng);
                fill_normal(P + b->ck, nCH, sC, rng);
                fill_normal(P + b->cv, nCH, sC, rng);
                fill_normal(P + b->co, nCH, sO, rng);
            }
            fill_const(P + b->ff_ln, (size_t)C, 1.0f);
            fill_normal(P + b->wi, (size_t)F * C, sC, rng);
            fill_normal(P + b->wo, (size_t)F * C, sF, rng);
        }
    }
    fill_normal(P + m->enc_rel, (size_t)c->rel_buckets * c->n_heads, sC, rng);
    fill_const(P + m->enc_lnf, (size_t)C, 1.0f);
    if (c->n_dec_layers > 0) {
        fill_normal(P + m->dec_rel, (size_t)c->rel_buckets * c->n_heads, sC, rng);
        fill_const(P + m->dec_lnf, (size_t)C, 1.0f);
    }
    init_head(m, rng);
    fill_normal(P + m->shared, (size_t)c->vocab * C, 1.0f, rng);
}

t5_model *t5_new(const t5_config *cfg, rng_t *rng) {
    if (cfg_check(cfg)) return NULL;
    t5_model *m = tr_calloc(1, sizeof *m);
    m->cfg = *cfg;
    build_layout(m);
    m->params = tr_calloc(m->n_params, sizeof(float));
    m->grads = tr_calloc(m->n_params, sizeof(float));
    m->adam_m = tr_calloc(m->n_params, sizeof(float));
    m->adam_v = tr_calloc(m->n_params, sizeof(float));
    init_weights(m, rng);
    return m;
}

void t5_free(t5_model *m) {
    if (!m) return;
    for (int i = 0; i < m->n_tab; i++) free(m->tab[i].name);
    free(m->tab); free(m->enc); free(m->dec);
    free(m->params); free(m->grads); free(m->adam_m); free(m->adam_v);
    free(m->a.mem); free(m->a.enc); free(m->a.dec);
    free(m);
}

const t5_config *t5_cfg(const t5_model *m) { return &m->cfg; }
size_t t5_n_params(const t5_model *m) { return m->n_params; }
float *t5_params(t5_model *m) { return m->params; }
float *t5_grads(t5_model *m) { return m->grads; }
int t5_n_tensors(const t5_model *m) { return m->n_tab; }
const t5_param *t5_tensor(const t5_model *m, int i) { return &m->tab[i]; }
long t5_step(const t5_model *m) { return m->step; }

const t5_param *t5_param_find(const t5_model *m, const char *name) {
    for (int i = 0; i < m->n_tab; i++) if (!strcmp(m->tab[i].name, name)) return &m->tab[i];
    return NULL;
}

/* shared.weight is the last tensor of the buffers, so new rows are appended. */
int t5_resize_vocab(t5_model *m, int new_vocab, rng_t *rng, float std) {
    int old = m->cfg.vocab, C = m->cfg.d_model;
    if (new_vocab < old)
        return tr_error("t5_resize_vocab: cannot shrink the vocabulary from %d to %d", old, new_vocab);
    if (new_vocab == old) return 0;
    size_t extra = (size_t)(new_vocab - old) * C, n = m->n_params + extra;
    m->params = tr_realloc(m->params, n * sizeof(float));
    m->grads = tr_realloc(m->grads, n * sizeof(float));
    m->adam_m = tr_realloc(m->adam_m, n * sizeof(float));
    m->adam_v = tr_realloc(m->adam_v, n * sizeof(float));
    fill_normal(m->params + m->n_params, extra, std > 0 ? std : 1.0f, rng);
    memset(m->grads + m->n_params, 0, extra * sizeof(float));
    memset(m->adam_m + m->n_params, 0, extra * sizeof(float));
    memset(m->adam_v + m->n_params, 0, extra * sizeof(float));
    m->n_params = n;
    m->cfg.vocab = new_vocab;
    t5_param *p = &m->tab[m->n_tab - 1];
    p->rows = new_vocab;
    p->n += extra;
    return 0;
}

/* ------------------------------------------------------------------------------------
 * Activation arena
 * ------------------------------------------------------------------------------------ */

/* Bump allocator over the arena: in the sizing pass (base NULL) it only counts. */
typedef struct { char *base; size_t used; } bump;
static void *take(bump *b, size_t bytes) {
    size_t off = b->used;
    b->used += (bytes + 63) & ~(size_t)63;
    return b->base ? b->base + off : NULL;
}
#define TF(n) ((float *)take(&bp, sizeof(float) * (size_t)(n)))
#define TB(n) ((uint8_t *)take(&bp, (size_t)(n)))
#define TI(n) ((int32_t *)take(&bp, sizeof(int32_t) * (size_t)(n)))

static void arena_layout(t5_model *m, t5_arena *a, char *base) {
    const t5_config *c = &m->cfg;
    bump bp = { base, 0 };
    int B = a->B, T = a->T, Td = c->n_dec_layers > 0 ? c->dec_len : 0, H = c->n_heads;
    size_t C = (size_t)c->d_model, HD = (size_t)H * c->d_kv, F = (size_t)c->d_ff;
    size_t Ne = (size_t)B * T, Nd = (size_t)B * Td;
    for (int l = 0; l < c->n_enc_layers; l++) {
        t5_block_act *e = &a->enc[l];
        e->x = TF(Ne * C); e->ln0 = TF(Ne * C); e->r0 = TF(Ne);
        e->qkv = TF(Ne * 3 * HD);
        e->att = TF((size_t)B * H * T * T); e->attd = TF((size_t)B * H * T * T);
        e->adm = TB((size_t)B * H * T * T); e->ao = TF(Ne * HD); e->m0 = TB(Ne * C);
        e->x1 = TF(Ne * C); e->lnf = TF(Ne * C); e->rf = TF(Ne);
        e->h = TF(Ne * F); e->hd = TF(Ne * F); e->mh = TB(Ne * F); e->mf = TB(Ne * C);
    }
    for (int l = 0; l < c->n_dec_layers; l++) {
        t5_block_act *d = &a->dec[l];
        d->x = TF(Nd * C); d->ln0 = TF(Nd * C); d->r0 = TF(Nd);
        d->qkv = TF(Nd * 3 * HD);
        d->att = TF((size_t)B * H * Td * Td); d->attd = TF((size_t)B * H * Td * Td);
        d->adm = TB((size_t)B * H * Td * Td); d->ao = TF(Nd * HD); d->m0 = TB(Nd * C);
        d->x1 = TF(Nd * C); d->lnc = TF(Nd * C); d->rc = TF(Nd);
        d->cq = TF(Nd * HD); d->ckv = TF(Ne * 2 * HD);
        d->catt = TF((size_t)B * H * Td * T); d->cattd = TF((size_t)B * H * Td * T);
        d->cadm = TB((size_t)B * H * Td * T); d->cao = TF(Nd * HD); d->mc = TB(Nd * C);
        d->x2 = TF(Nd * C); d->lnf = TF(Nd * C); d->rf = TF(Nd);
        d->h = TF(Nd * F); d->hd = TF(Nd * F); d->mh = TB(Nd * F); d->mf = TB(Nd * C);
    }
    a->enc_me = TB(Ne * C);
    a->enc_xL = TF(Ne * C); a->enc_lnf = TF(Ne * C); a->enc_rf = TF(Ne);
    a->enc_out = TF(Ne * C); a->enc_mo = TB(Ne * C);
    a->enc_bias = TF((size_t)H * T * T); a->enc_bucket = TI((size_t)T * T);
    size_t Nmax = Ne > Nd ? Ne : Nd;
    if (Td > 0) {
        a->dec_ids = TI(Nd); a->dec_me = TB(Nd * C);
        a->dec_xL = TF(Nd * C); a->dec_lnf = TF(Nd * C); a->dec_rf = TF(Nd);
        a->dec_out = TF(Nd * C); a->dec_mo = TB(Nd * C);
        a->dec_bias = TF((size_t)H * Td * Td); a->dec_bucket = TI((size_t)Td * Td);
        a->d_dec = TF(Nd * C); a->d_encout = TF(Ne * C); a->d_kv = TF(Ne * 2 * HD);
        a->d_dbias = TF((size_t)H * Td * Td);
    } else {
        a->pooled = TF((size_t)B * C);
    }
    size_t hin = Td > 0 ? (size_t)Td * C : C;
    size_t hh = c->head_hidden > 0 ? (size_t)c->head_hidden : 1;
    a->h1 = TF((size_t)B * hh); a->h1d = TF((size_t)B * hh); a->mh1 = TB((size_t)B * hh);
    a->z = TF((size_t)B * c->head_out);
    a->d_enc = TF(Ne * C); a->d_tmp = TF(Nmax * C); a->d_ln = TF(Nmax * C);
    a->d_qkv = TF(Nmax * 3 * HD);
    a->d_ao = TF(Nmax * HD);
    size_t att = (size_t)B * H * T * T;
    if ((size_t)B * H * Td * T > att) att = (size_t)B * H * Td * T;
    if ((size_t)B * H * Td * Td > att) att = (size_t)B * H * Td * Td;
    a->d_att = TF(att); a->d_h = TF(Nmax * F);
    a->d_ebias = TF((size_t)H * T * T);
    a->d_flat = TF((size_t)B * hin); a->d_h1 = TF((size_t)B * hh);
    a->d_z = TF((size_t)B * c->head_out);
    a->bytes = bp.used;
}

int t5_reserve(t5_model *m, int max_B, int max_T) {
    t5_arena *a = &m->a;
    if (max_B <= 0 || max_T <= 0) return tr_error("t5_reserve: bad batch %d x %d", max_B, max_T);
    if (a->mem && max_B <= a->B && max_T <= a->T) return 0;
    if (max_B < a->B) max_B = a->B;
    if (max_T < a->T) max_T = a->T;
    free(a->mem); free(a->enc); free(a->dec);
    memset(a, 0, sizeof *a);
    a->B = max_B; a->T = max_T; a->Td = m->cfg.dec_len;
    a->enc = tr_calloc((size_t)m->cfg.n_enc_layers, sizeof(t5_block_act));
    a->dec = tr_calloc(m->cfg.n_dec_layers ? (size_t)m->cfg.n_dec_layers : 1, sizeof(t5_block_act));
    arena_layout(m, a, NULL);
    if (posix_memalign((void **)&a->mem, 64, a->bytes))
        return tr_error("t5_reserve: out of memory for %zu bytes of activations", a->bytes);
    arena_layout(m, a, a->mem);
    return 0;
}

/* The arena is laid out for capacity (a->B, a->T); a smaller batch uses the leading part of
 * each buffer with its own (B, T) strides, which is fine because every buffer is only
 * ever addressed as a dense (B, T, ...) array of the current batch. */

/* ------------------------------------------------------------------------------------
 * Forward
 * ------------------------------------------------------------------------------------ */

#define PW(off) (m->params + (off))
#define GW(off) (m->grads + (off))

/* One pre-norm self-attention sublayer: x1 = x + dropout(o(attn(norm(x)))). */
static void self_attn_fwd(t5_model *m, t5_block_act *s, const t5_block_off *w, int B, int T,
                          const float *bias, const int32_t *kmask, int causal, float p, rng_t *rng) {
    const t5_config *c = &m->cfg;
    int N = B * T, C = c->d_model, H = c->n_heads, D = c->d_kv, HD = H * D;
    rmsnorm_forward(s->ln0, s->r0, s->x, PW(w->ln0), N, C, c->ln_eps);
    /* q, k, v weights are consecutive in the buffer: one (3HD, C) projection */
    linear_forward(s->qkv, s->ln0, PW(w->q), NULL, N, C, 3 * HD);
    attention_forward(s->ao, s->att, s->attd, s->adm, s->qkv, s->qkv + HD, s->qkv + 2 * HD,
                      3 * HD, 3 * HD, bias, kmask, causal, B, T, T, H, D, p, rng);
    float *o = m->a.d_tmp;                       /* free during the forward pass */
    linear_forward(o, s->ao, PW(w->o), NULL, N, HD, C);
    dropout_forward(o, s->m0, o, (size_t)N * C, p, rng);
    #pragma omp parallel for if((size_t)N * C > ((size_t)1 << 15))
    for (size_t i = 0; i < (size_t)N * C; i++) s->x1[i] = s->x[i] + o[i];
}

/* Pre-norm FFN sublayer: out = x + dropout(ffn(norm(x))). */
static void ffn_fwd(t5_model *m, t5_block_act *s, const t5_block_off *w, const float *x,
                    float *out, int N, float p, rng_t *rng) {
    const t5_config *c = &m->cfg;
    int C = c->d_model, F = c->d_ff;
    rmsnorm_forward(s->lnf, s->rf, x, PW(w->ff_ln), N, C, c->ln_eps);
    float *y = m->a.d_tmp;
    ffn_forward(y, s->h, s->hd, s->mh, s->lnf, PW(w->wi), PW(w->wo), N, C, F, p, rng);
    dropout_forward(y, s->mf, y, (size_t)N * C, p, rng);
    #pragma omp parallel for if((size_t)N * C > ((size_t)1 << 15))
    for (size_t i = 0; i < (size_t)N * C; i++) out[i] = x[i] + y[i];
}

int t5_forward(t5_model *m, const t5_batch *bt, int train, rng_t *rng, float *loss) {
    const t5_config *c = &m->cfg;
    int B = bt->B, T = bt->T, C = c->d_model, H = c->n_heads, D = c->d_kv, HD = H * D;
    int Td = c->n_dec_layers > 0 ? c->dec_len : 0;
    if (B <= 0 || T <= 0) return tr_error("t5_forward: empty batch (%d x %d)", B, T);
    if (t5_reserve(m, B, T)) return -1;
    t5_arena *a = &m->a;
    float p = train && rng ? c->dropout : 0.0f, hp = train && rng ? c->head_dropout : 0.0f;
    rng_t *r = train ? rng : NULL;
    int Ne = B * T, Nd = B * Td;
    for (int i = 0; i < Ne; i++)
        if (bt->enc_ids[i] < 0 || bt->enc_ids[i] >= c->vocab)
            return tr_error("t5_forward: encoder token id %d out of range [0, %d)", bt->enc_ids[i], c->vocab);

    /* encoder */
    embedding_forward(a->enc[0].x, bt->enc_ids, PW(m->shared), Ne, C);
    dropout_forward(a->enc[0].x, a->enc_me, a->enc[0].x, (size_t)Ne * C, p, r);
    relbias_forward(a->enc_bias, a->enc_bucket, PW(m->enc_rel), T, T, H, c->rel_buckets,
                    c->rel_max_distance, 1);
    for (int l = 0; l < c->n_enc_layers; l++) {
        t5_block_act *s = &a->enc[l];
        self_attn_fwd(m, s, &m->enc[l], B, T, a->enc_bias, bt->enc_mask, 0, p, r);
        float *out = l + 1 < c->n_enc_layers ? a->enc[l + 1].x : a->enc_xL;
        ffn_fwd(m, s, &m->enc[l], s->x1, out, Ne, p, r);
    }
    rmsnorm_forward(a->enc_lnf, a->enc_rf, a->enc_xL, PW(m->enc_lnf), Ne, C, c->ln_eps);
    dropout_forward(a->enc_out, a->enc_mo, a->enc_lnf, (size_t)Ne * C, p, r);

    const float *head_in;
    if (Td > 0) {
        /* decoder */
        for (int b = 0; b < B; b++)
            memcpy(a->dec_ids + (size_t)b * Td, bt->dec_ids + (bt->dec_per_row ? (size_t)b * Td : 0),
                   sizeof(int32_t) * Td);
        for (int i = 0; i < Nd; i++)
            if (a->dec_ids[i] < 0 || a->dec_ids[i] >= c->vocab)
                return tr_error("t5_forward: decoder token id %d out of range [0, %d)", a->dec_ids[i], c->vocab);
        embedding_forward(a->dec[0].x, a->dec_ids, PW(m->shared), Nd, C);
        dropout_forward(a->dec[0].x, a->dec_me, a->dec[0].x, (size_t)Nd * C, p, r);
        relbias_forward(a->dec_bias, a->dec_bucket, PW(m->dec_rel), Td, Td, H, c->rel_buckets,
                        c->rel_max_distance, 0);
        for (int l = 0; l < c->n_dec_layers; l++) {
            t5_block_act *s = &a->dec[l];
            const t5_block_off *w = &m->dec[l];
            self_attn_fwd(m, s, w, B, Td, a->dec_bias, NULL, 1, p, r);
            /* cross-attention: queries from the decoder, keys/values from the encoder output */
            rmsnorm_forward(s->lnc, s->rc, s->x1, PW(w->lnc), Nd, C, c->ln_eps);
            linear_forward(s->cq, s->lnc, PW(w->cq), NULL, Nd, C, HD);
            linear_forward(s->ckv, a->enc_out, PW(w->ck), NULL, Ne, C, 2 * HD);   /* k|v fused */
            attention_forward(s->cao, s->catt, s->cattd, s->cadm, s->cq, s->ckv, s->ckv + HD, HD,
                              2 * HD, NULL, bt->enc_mask, 0, B, Td, T, H, D, p, r);
            float *o = a->d_tmp;
            linear_forward(o, s->cao, PW(w->co), NULL, Nd, HD, C);
            dropout_forward(o, s->mc, o, (size_t)Nd * C, p, r);
            #pragma omp parallel for if((size_t)Nd * C > ((size_t)1 << 15))
            for (size_t i = 0; i < (size_t)Nd * C; i++) s->x2[i] = s->x1[i] + o[i];
            float *out = l + 1 < c->n_dec_layers ? a->dec[l + 1].x : a->dec_xL;
            ffn_fwd(m, s, w, s->x2, out, Nd, p, r);
        }
        rmsnorm_forward(a->dec_lnf, a->dec_rf, a->dec_xL, PW(m->dec_lnf), Nd, C, c->ln_eps);
        dropout_forward(a->dec_out, a->dec_mo, a->dec_lnf, (size_t)Nd * C, p, r);
        head_in = a->dec_out;
    } else {
        /* encoder only: mean over the real tokens */
        #pragma omp parallel for if((size_t)Ne * C > ((size_t)1 << 15))
        for (int b = 0; b < B; b++) {
            float *pb = a->pooled + (size_t)b * C;
            memset(pb, 0, sizeof(float) * C);
            int cnt = 0;
            for (int t = 0; t < T; t++) {
                if (bt->enc_mask && !bt->enc_mask[b * T + t]) continue;
                const float *e = a->enc_out + ((size_t)b * T + t) * C;
                for (int k = 0; k < C; k++) pb[k] += e[k];
                cnt++;
            }
            float inv = cnt ? 1.0f / cnt : 0.0f;
            for (int k = 0; k < C; k++) pb[k] *= inv;
        }
        head_in = a->pooled;
    }
    int hin = Td > 0 ? Td * C : C;
    if (c->head_hidden > 0)
        head_forward(a->z, a->h1, a->h1d, a->mh1, head_in, PW(m->fc1_w), PW(m->fc1_b),
                     PW(m->fc2_w), PW(m->fc2_b), B, hin, c->head_hidden, c->head_out, hp, r);
    else
        linear_forward(a->z, head_in, PW(m->fc2_w), PW(m->fc2_b), B, hin, c->head_out);

    m->last_B = B; m->last_T = T; m->last_train = train;
    m->last_pdrop = p; m->last_hpdrop = hp;
    m->last_has_loss = bt->pos && bt->neg;
    if (m->last_has_loss) {
        float L = cosine_loss_forward(a->z, bt->pos, bt->neg, B, c->head_out);
        if (loss) *loss = L;
    }
    return 0;
}

/* ------------------------------------------------------------------------------------
 * Backward
 * ------------------------------------------------------------------------------------ */

/* Zero a float buffer, in parallel blocks for the large ones. */
static void zero_floats(float *p, size_t n) {
    if (n < (1u << 16)) { memset(p, 0, sizeof(float) * n); return; }
    size_t blk = 1u << 15, nb = (n + blk - 1) / blk;
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < nb; i++)
        memset(p + i * blk, 0, sizeof(float) * (i * blk + blk <= n ? blk : n - i * blk));
}
#define ZERO(ptr, n) zero_floats((ptr), (size_t)(n))

/* Backward of self_attn_fwd. dres (N,C) holds d x1 on entry and d x on return. */
static void self_attn_bwd(t5_model *m, t5_block_act *s, const t5_block_off *w, float *dres,
                          int B, int T, float *dbias, float p) {
    const t5_config *c = &m->cfg;
    t5_arena *a = &m->a;
    int N = B * T, C = c->d_model, H = c->n_heads, D = c->d_kv, HD = H * D;
    ZERO(a->d_tmp, (size_t)N * C);
    dropout_backward(a->d_tmp, dres, s->m0, (size_t)N * C, p);
    ZERO(a->d_ao, (size_t)N * HD);
    linear_backward(a->d_ao, GW(w->o), NULL, a->d_tmp, s->ao, PW(w->o), N, HD, C);
    float *dqkv = a->d_qkv;
    ZERO(dqkv, (size_t)N * 3 * HD);
    attention_backward(dqkv, dqkv + HD, dqkv + 2 * HD, dbias, a->d_att, a->d_ao, s->att, s->attd,
                       s->adm, s->qkv, s->qkv + HD, s->qkv + 2 * HD, 3 * HD, 3 * HD, B, T, T, H,
                       D, p);
    ZERO(a->d_ln, (size_t)N * C);
    linear_backward(a->d_ln, GW(w->q), NULL, dqkv, s->ln0, PW(w->q), N, C, 3 * HD);
    rmsnorm_backward(dres, GW(w->ln0), a->d_ln, s->x, PW(w->ln0), s->r0, N, C);
}

/* Backward of ffn_fwd. dres holds d out on entry and d x on return. */
static void ffn_bwd(t5_model *m, t5_block_act *s, const t5_block_off *w, const float *x,
                    float *dres, int N, float p) {
    const t5_config *c = &m->cfg;
    t5_arena *a = &m->a;
    int C = c->d_model, F = c->d_ff;
    ZERO(a->d_tmp, (size_t)N * C);
    dropout_backward(a->d_tmp, dres, s->mf, (size_t)N * C, p);
    ZERO(a->d_ln, (size_t)N * C);
    ffn_backward(a->d_ln, GW(w->wi), GW(w->wo), a->d_h, a->d_tmp, s->lnf, s->h, s->hd, s->mh,
                 PW(w->wi), PW(w->wo), N, C, F, p);
    rmsnorm_backward(dres, GW(w->ff_ln), a->d_ln, x, PW(w->ff_ln), s->rf, N, C);
}

/* Backward from dz (B,head_out) = d loss / d z, or from the cosine loss when dz is NULL
 * (its gradient times loss_scale). zero_grads 0 accumulates into the gradients. */
static int backward_from(t5_model *m, const t5_batch *bt, const float *dz, const float *ddec,
                         int zero_grads, float loss_scale) {
    const t5_config *c = &m->cfg;
    t5_arena *a = &m->a;
    if ((!dz && !ddec && !m->last_has_loss) || bt->B != m->last_B || bt->T != m->last_T)
        return tr_error("t5_backward: needs the preceding t5_forward of the same batch%s",
                        dz ? "" : ", with pos/neg");
    int B = bt->B, T = bt->T, C = c->d_model, H = c->n_heads, D = c->d_kv, HD = H * D;
    int Td = c->n_dec_layers > 0 ? c->dec_len : 0;
    int Ne = B * T, Nd = B * Td;
    float p = m->last_pdrop, hp = m->last_hpdrop;
    if (zero_grads) ZERO(m->grads, m->n_params);

    int hin = Td > 0 ? Td * C : C;
    const float *head_in = Td > 0 ? a->dec_out : a->pooled;
    if (ddec && Td > 0) {      /* gradient given at the decoder output: the head is not used */
        memcpy(a->d_flat, ddec, sizeof(float) * (size_t)B * hin);
        goto decoder;
    }
    ZERO(a->d_z, (size_t)B * c->head_out);
    if (dz) memcpy(a->d_z, dz, sizeof(float) * (size_t)B * c->head_out);
    else cosine_loss_backward(a->d_z, a->z, bt->pos, bt->neg, B, c->head_out, loss_scale);
    ZERO(a->d_flat, (size_t)B * hin);
    if (c->head_hidden > 0)
        head_backward(a->d_flat, GW(m->fc1_w), GW(m->fc1_b), GW(m->fc2_w), GW(m->fc2_b), a->d_h1,
                      a->d_z, head_in, a->h1, a->h1d, a->mh1, PW(m->fc1_w), PW(m->fc2_w),
                      B, hin, c->head_hidden, c->head_out, hp);
    else
        linear_backward(a->d_flat, GW(m->fc2_w), GW(m->fc2_b), a->d_z, head_in, PW(m->fc2_w),
                        B, hin, c->head_out);

decoder:;
    float *d_encout;              /* gradient w.r.t. the encoder output (after dropout) */
    if (Td > 0) {
        d_encout = a->d_encout;
        ZERO(d_encout, (size_t)Ne * C);
        /* decoder final norm and dropout */
        ZERO(a->d_tmp, (size_t)Nd * C);
        dropout_backward(a->d_tmp, a->d_flat, a->dec_mo, (size_t)Nd * C, p);
        ZERO(a->d_dec, (size_t)Nd * C);
        rmsnorm_backward(a->d_dec, GW(m->dec_lnf), a->d_tmp, a->dec_xL, PW(m->dec_lnf), a->dec_rf, Nd, C);
        ZERO(a->d_dbias, (size_t)H * Td * Td);
        for (int l = c->n_dec_layers - 1; l >= 0; l--) {
            t5_block_act *s = &a->dec[l];
            const t5_block_off *w = &m->dec[l];
            ffn_bwd(m, s, w, s->x2, a->d_dec, Nd, p);
            /* cross-attention */
            ZERO(a->d_tmp, (size_t)Nd * C);
            dropout_backward(a->d_tmp, a->d_dec, s->mc, (size_t)Nd * C, p);
            ZERO(a->d_ao, (size_t)Nd * HD);
            linear_backward(a->d_ao, GW(w->co), NULL, a->d_tmp, s->cao, PW(w->co), Nd, HD, C);
            ZERO(a->d_qkv, (size_t)Nd * HD); ZERO(a->d_kv, (size_t)Ne * 2 * HD);
            attention_backward(a->d_qkv, a->d_kv, a->d_kv + HD, NULL, a->d_att, a->d_ao, s->catt,
                               s->cattd, s->cadm, s->cq, s->ckv, s->ckv + HD, HD, 2 * HD, B, Td, T,
                               H, D, p);
            linear_backward(d_encout, GW(w->ck), NULL, a->d_kv, a->enc_out, PW(w->ck), Ne, C, 2 * HD);
            ZERO(a->d_ln, (size_t)Nd * C);
            linear_backward(a->d_ln, GW(w->cq), NULL, a->d_qkv, s->lnc, PW(w->cq), Nd, C, HD);
            rmsnorm_backward(a->d_dec, GW(w->lnc), a->d_ln, s->x1, PW(w->lnc), s->rc, Nd, C);
            self_attn_bwd(m, s, w, a->d_dec, B, Td, a->d_dbias, p);
        }
        relbias_backward(GW(m->dec_rel), a->d_dbias, a->dec_bucket, Td, Td, H);
        ZERO(a->d_tmp, (size_t)Nd * C);
        dropout_backward(a->d_tmp, a->d_dec, a->dec_me, (size_t)Nd * C, p);
        embedding_backward(GW(m->shared), a->d_tmp, a->dec_ids, Nd, C);
    } else {
        d_encout = a->d_encout ? a->d_encout : a->d_ln;
        ZERO(d_encout, (size_t)Ne * C);
        for (int b = 0; b < B; b++) {
            int cnt = 0;
            for (int t = 0; t < T; t++) cnt += !bt->enc_mask || bt->enc_mask[b * T + t];
            if (!cnt) continue;
            float inv = 1.0f / cnt;
            const float *g = a->d_flat + (size_t)b * C;
            for (int t = 0; t < T; t++) {
                if (bt->enc_mask && !bt->enc_mask[b * T + t]) continue;
                float *d = d_encout + ((size_t)b * T + t) * C;
                for (int k = 0; k < C; k++) d[k] = g[k] * inv;
            }
        }
    }

    /* encoder final norm and dropout */
    ZERO(a->d_tmp, (size_t)Ne * C);
    dropout_backward(a->d_tmp, d_encout, a->enc_mo, (size_t)Ne * C, p);
    ZERO(a->d_enc, (size_t)Ne * C);
    rmsnorm_backward(a->d_enc, GW(m->enc_lnf), a->d_tmp, a->enc_xL, PW(m->enc_lnf), a->enc_rf, Ne, C);
    ZERO(a->d_ebias, (size_t)H * T * T);
    for (int l = c->n_enc_layers - 1; l >= 0; l--) {
        t5_block_act *s = &a->enc[l];
        ffn_bwd(m, s, &m->enc[l], s->x1, a->d_enc, Ne, p);
        self_attn_bwd(m, s, &m->enc[l], a->d_enc, B, T, a->d_ebias, p);
    }
    relbias_backward(GW(m->enc_rel), a->d_ebias, a->enc_bucket, T, T, H);
    ZERO(a->d_tmp, (size_t)Ne * C);
    dropout_backward(a->d_tmp, a->d_enc, a->enc_me, (size_t)Ne * C, p);
    embedding_backward(GW(m->shared), a->d_tmp, bt->enc_ids, Ne, C);
    return 0;
}

int t5_backward(t5_model *m, const t5_batch *bt) { return backward_from(m, bt, NULL, NULL, 1, 1.0f); }

int t5_backward_ex(t5_model *m, const t5_batch *bt, int zero_grads, float loss_scale) {
    return backward_from(m, bt, NULL, NULL, zero_grads, loss_scale);
}

int t5_backward_dz(t5_model *m, const t5_batch *bt, const float *dz) {
    return backward_from(m, bt, dz, NULL, 1, 1.0f);
}

int t5_backward_ddec(t5_model *m, const t5_batch *bt, const float *ddec) {
    if (m->cfg.n_dec_layers <= 0) return tr_error("t5_backward_ddec: the model has no decoder");
    return backward_from(m, bt, NULL, ddec, 1, 1.0f);
}

float *t5_adam_m(t5_model *m) { return m->adam_m; }
float *t5_adam_v(t5_model *m) { return m->adam_v; }
void   t5_set_step(t5_model *m, long step) { m->step = step; }

void t5_adamw_step(t5_model *m, const adamw_cfg *opt, float clip) {
    if (clip > 0) grad_clip(m->grads, m->n_params, clip);
    m->step++;
    adamw_update(opt, m->params, m->grads, m->adam_m, m->adam_v, m->n_params, m->step);
}

int t5_train_step(t5_model *m, const t5_batch *b, const adamw_cfg *opt, float clip,
                  rng_t *rng, float *loss) {
    if (!b->pos || !b->neg) return tr_error("t5_train_step: the batch has no pos/neg targets");
    if (t5_forward(m, b, 1, rng, loss)) return -1;
    if (t5_backward(m, b)) return -1;
    t5_adamw_step(m, opt, clip);
    return 0;
}

int t5_infer(t5_model *m, const t5_batch *b, float *z) {
    t5_batch nb = *b;
    nb.pos = nb.neg = NULL;
    if (t5_forward(m, &nb, 0, NULL, NULL)) return -1;
    memcpy(z, m->a.z, sizeof(float) * (size_t)b->B * m->cfg.head_out);
    return 0;
}

const float *t5_z(const t5_model *m) { return m->a.z; }
const float *t5_enc_out(const t5_model *m) { return m->a.enc_out; }
const float *t5_dec_out(const t5_model *m) { return m->a.dec_out; }

void t5_set_threads(int n) { nn_set_threads(n); }

/* ------------------------------------------------------------------------------------
 * Load and save
 * ------------------------------------------------------------------------------------ */

static int count_blocks(const st_file *f, const char *stack) {
    int L = 0;
    char nm[160];
    for (;;) {
        snprintf(nm, sizeof nm, "%s.block.%d.layer.0.SelfAttention.q.weight", stack, L);
        if (!st_find(f, nm)) return L;
        L++;
    }
}

static void cfg_from_json(t5_config *c, const char *js) {
    cJSON *j = cJSON_Parse(js);
    if (!j) return;
#define GI(key, field) do { const cJSON *x = cJSON_GetObjectItemCaseSensitive(j, key); \
                            if (cJSON_IsNumber(x)) c->field = x->valueint; } while (0)
#define GF(key, field) do { const cJSON *x = cJSON_GetObjectItemCaseSensitive(j, key); \
                            if (cJSON_IsNumber(x)) c->field = (float)x->valuedouble; } while (0)
    GI("vocab_size", vocab); GI("d_model", d_model); GI("d_kv", d_kv); GI("num_heads", n_heads);
    GI("d_ff", d_ff); GI("num_layers", n_enc_layers); GI("num_decoder_layers", n_dec_layers);
    GI("relative_attention_num_buckets", rel_buckets);
    GI("relative_attention_max_distance", rel_max_distance);
    GF("layer_norm_epsilon", ln_eps); GF("dropout_rate", dropout); GF("head_dropout", head_dropout);
    GI("head_hidden", head_hidden); GI("cf_dim", head_out); GI("dec_len", dec_len);
#undef GI
#undef GF
    cJSON_Delete(j);
}

t5_model *t5_load(const char *path, const t5_config *fallback, rng_t *rng) {
    st_file f;
    if (st_load(&f, path)) return NULL;
    t5_config c;
    if (fallback) c = *fallback; else t5_preset("small", &c);
    const char *js = st_meta(&f, "config");
    if (js) cfg_from_json(&c, js);
    /* shapes are the final word */
    const st_tensor *t;
    if ((t = st_find(&f, "shared.weight")) && t->ndim == 2) {
        c.vocab = (int)t->shape[0]; c.d_model = (int)t->shape[1];
    } else {
        st_free(&f);
        tr_error("%s: no 2-d tensor shared.weight: not a T5 checkpoint", path);
        return NULL;
    }
    if ((t = st_find(&f, "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight")) &&
        t->ndim == 2) {
        c.rel_buckets = (int)t->shape[0]; c.n_heads = (int)t->shape[1];
    }
    if ((t = st_find(&f, "encoder.block.0.layer.0.SelfAttention.q.weight")) && t->ndim == 2 &&
        c.n_heads > 0)
        c.d_kv = (int)t->shape[0] / c.n_heads;
    if ((t = st_find(&f, "encoder.block.0.layer.1.DenseReluDense.wi.weight")) && t->ndim == 2)
        c.d_ff = (int)t->shape[0];
    c.n_enc_layers = count_blocks(&f, "encoder");
    c.n_dec_layers = count_blocks(&f, "decoder");
    const st_tensor *f1 = st_find(&f, "head.fc1.weight"), *f2 = st_find(&f, "head.fc2.weight");
    if (f1 && f1->ndim == 2) {
        c.head_hidden = (int)f1->shape[0];
        if (c.n_dec_layers > 0 && c.d_model > 0) c.dec_len = (int)(f1->shape[1] / c.d_model);
    } else if (f2 && f2->ndim == 2) {
        c.head_hidden = 0;
        if (c.n_dec_layers > 0 && c.d_model > 0) c.dec_len = (int)(f2->shape[1] / c.d_model);
    }
    if (f2 && f2->ndim == 2) c.head_out = (int)f2->shape[0];

    rng_t local;
    if (!rng) { rng_seed(&local, 0); rng = &local; }
    t5_model *m = t5_new(&c, rng);
    if (!m) {
        tr_error("%s: %s", path, tr_errmsg());
        st_free(&f);
        return NULL;
    }
    for (int i = 0; i < m->n_tab; i++) {
        const t5_param *p = &m->tab[i];
        t = st_find(&f, p->name);
        int is_head = !strncmp(p->name, "head.", 5);
        if (!t) {
            if (is_head) continue;
            tr_error("%s: missing tensor %s", path, p->name);
            goto fail;
        }
        int ok = t->f && t->numel == p->n &&
                 ((p->cols == 0 && t->ndim == 1 && t->shape[0] == p->rows) ||
                  (p->cols > 0 && t->ndim == 2 && t->shape[0] == p->rows && t->shape[1] == p->cols));
        if (!ok) {
            tr_error("%s: tensor %s has the wrong shape or dtype (expected float [%d%s%d])",
                     path, p->name, p->rows, p->cols ? ", " : "", p->cols);
            goto fail;
        }
        memcpy(m->params + p->off, t->f, sizeof(float) * p->n);
    }
    st_free(&f);
    return m;
fail:
    st_free(&f);
    t5_free(m);
    return NULL;
}

int t5_save(const t5_model *m, const char *path) {
    const t5_config *c = &m->cfg;
    st_writer *w = st_writer_new();
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "vocab_size", c->vocab);
    cJSON_AddNumberToObject(j, "d_model", c->d_model);
    cJSON_AddNumberToObject(j, "d_kv", c->d_kv);
    cJSON_AddNumberToObject(j, "num_heads", c->n_heads);
    cJSON_AddNumberToObject(j, "d_ff", c->d_ff);
    cJSON_AddNumberToObject(j, "num_layers", c->n_enc_layers);
    cJSON_AddNumberToObject(j, "num_decoder_layers", c->n_dec_layers);
    cJSON_AddNumberToObject(j, "relative_attention_num_buckets", c->rel_buckets);
    cJSON_AddNumberToObject(j, "relative_attention_max_distance", c->rel_max_distance);
    cJSON_AddNumberToObject(j, "layer_norm_epsilon", c->ln_eps);
    cJSON_AddNumberToObject(j, "dropout_rate", c->dropout);
    cJSON_AddNumberToObject(j, "head_dropout", c->head_dropout);
    cJSON_AddNumberToObject(j, "head_hidden", c->head_hidden);
    cJSON_AddNumberToObject(j, "cf_dim", c->head_out);
    cJSON_AddNumberToObject(j, "dec_len", c->dec_len);
    char *js = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    st_writer_meta(w, "config", js);
    st_writer_meta(w, "format", "pt");
    free(js);
    for (int i = 0; i < m->n_tab; i++) {
        const t5_param *p = &m->tab[i];
        int64_t sh[2] = { p->rows, p->cols };
        st_writer_add_f32(w, p->name, m->params + p->off, p->cols ? 2 : 1, sh);
    }
    int rc = st_writer_save(w, path);
    st_writer_free(w);
    return rc;
}
