/* sasrec.c: SASRec on the nn.h layers (model, loss, training loop, ranking). See sasrec.h. */
#include "sasrec.h"
#include "nn.h"
#include "util.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LN_EPS 1e-6f
#define LOSS_CHUNK 512          /* softmax-loss rows per logits block */

/* Offsets of one block's parameters in the contiguous buffers. */
typedef struct {
    size_t ln1_w, ln1_b, qkv_w, qkv_b, o_w, o_b, ln2_w, ln2_b, f1_w, f1_b, f2_w, f2_b;
} blk_off;

/* One block's saved activations; N = B*T rows. */
typedef struct {
    float   *x;                 /* (N,d) block input */
    float   *ln1, *ln1_m, *ln1_r;
    float   *qkv;               /* (N,3d), q columns already scaled by 1/sqrt(d_head) */
    float   *att, *attd;        /* (B,H,T,T) */
    uint8_t *attm;
    float   *ao;                /* (N,d) attention output */
    float   *a;                 /* (N,d) out projection after dropout */
    uint8_t *am;
    float   *xm;                /* (N,d) x + a */
    float   *ln2, *ln2_m, *ln2_r;
    float   *f1, *f1d;          /* (N,d) relu output, after dropout */
    uint8_t *f1m;
    float   *f2;                /* (N,d) second linear after dropout */
    uint8_t *f2m;
} blk_act;

struct sasrec_model {
    sasrec_config c;
    size_t   n_params, item, posn, lnf_w, lnf_b;
    blk_off *bo;
    float   *params, *grads, *adam_m, *adam_v;
    /* arena */
    blk_act *ba;
    float   *e, *xL, *out, *lnf_m, *lnf_r;
    uint8_t *m0;
    float   *G, *dG, *logits, *dlogits;
    int32_t *gidx, *gtgt, *gneg;
    float   *dx, *dout, *t1, *t2, *t3, *dqkv, *scr;
    int      M;                 /* targets of the last forward */
    int      B, T;              /* shape of the last forward */
    float    p;                 /* dropout of the last forward (0 in evaluation) */
};

const sasrec_config *sasrec_cfg(const sasrec_model *m) { return &m->c; }
size_t sasrec_n_params(const sasrec_model *m) { return m->n_params; }
float *sasrec_params(sasrec_model *m) { return m->params; }
float *sasrec_grads(sasrec_model *m) { return m->grads; }
float *sasrec_adam_m(sasrec_model *m) { return m->adam_m; }
float *sasrec_adam_v(sasrec_model *m) { return m->adam_v; }
const float *sasrec_hidden(const sasrec_model *m) { return m->out; }

/* Lay out the parameters: items, positions, the blocks, the final norm. */
static void layout(sasrec_model *m) {
    int d = m->c.d;
    size_t o = 0;
    m->item = o; o += (size_t)m->c.n_items * d;
    m->posn = o; o += (size_t)m->c.max_len * d;
    m->bo = tr_calloc((size_t)m->c.n_blocks, sizeof *m->bo);
    for (int l = 0; l < m->c.n_blocks; l++) {
        blk_off *b = &m->bo[l];
        b->ln1_w = o; o += d;  b->ln1_b = o; o += d;
        b->qkv_w = o; o += (size_t)3 * d * d;  b->qkv_b = o; o += 3 * (size_t)d;
        b->o_w = o; o += (size_t)d * d;  b->o_b = o; o += d;
        b->ln2_w = o; o += d;  b->ln2_b = o; o += d;
        b->f1_w = o; o += (size_t)d * d;  b->f1_b = o; o += d;
        b->f2_w = o; o += (size_t)d * d;  b->f2_b = o; o += d;
    }
    m->lnf_w = o; o += d;  m->lnf_b = o; o += d;
    m->n_params = o;
}

static void fill_uniform(float *p, size_t n, float bound, rng_t *rng) {
    for (size_t i = 0; i < n; i++) p[i] = bound * (2.0f * rng_uniform(rng) - 1.0f);
}
static void fill_normal(float *p, size_t n, float std, rng_t *rng) {
    for (size_t i = 0; i < n; i++) p[i] = std * rng_normal(rng);
}
static void fill_const(float *p, size_t n, float v) {
    for (size_t i = 0; i < n; i++) p[i] = v;
}

/* Weights as documented in sasrec.h; biases stay 0 (calloc). */
static void init_weights(sasrec_model *m, rng_t *rng) {
    int d = m->c.d;
    float *P = m->params;
    float sd = 1.0f / sqrtf((float)d);
    fill_normal(P + m->item, (size_t)m->c.n_items * d, sd, rng);
    fill_normal(P + m->posn, (size_t)m->c.max_len * d, sd, rng);
    for (int l = 0; l < m->c.n_blocks; l++) {
        blk_off *b = &m->bo[l];
        fill_const(P + b->ln1_w, d, 1);
        fill_const(P + b->ln2_w, d, 1);
        fill_uniform(P + b->qkv_w, (size_t)3 * d * d, sqrtf(6.0f / (4 * d)), rng);
        fill_uniform(P + b->o_w, (size_t)d * d, sqrtf(6.0f / (2 * d)), rng);
        fill_uniform(P + b->f1_w, (size_t)d * d, sqrtf(6.0f / (2 * d)), rng);
        fill_uniform(P + b->f2_w, (size_t)d * d, sqrtf(6.0f / (2 * d)), rng);
    }
    fill_const(P + m->lnf_w, d, 1);
}

/* Allocate the activation arena for (max_B, max_len). */
static void arena(sasrec_model *m) {
    size_t d = m->c.d, N = (size_t)m->c.max_B * m->c.max_len;
    size_t TT = (size_t)m->c.max_B * m->c.n_heads * m->c.max_len * m->c.max_len;
    size_t V = m->c.n_items;
#define F(n) tr_calloc((size_t)(n) + 1, sizeof(float))
#define U(n) tr_calloc((size_t)(n) + 1, 1)
    m->ba = tr_calloc((size_t)m->c.n_blocks, sizeof *m->ba);
    for (int l = 0; l < m->c.n_blocks; l++) {
        blk_act *s = &m->ba[l];
        s->x = F(N * d); s->ln1 = F(N * d); s->ln1_m = F(N); s->ln1_r = F(N);
        s->qkv = F(N * 3 * d); s->att = F(TT); s->attd = F(TT); s->attm = U(TT);
        s->ao = F(N * d); s->a = F(N * d); s->am = U(N * d); s->xm = F(N * d);
        s->ln2 = F(N * d); s->ln2_m = F(N); s->ln2_r = F(N);
        s->f1 = F(N * d); s->f1d = F(N * d); s->f1m = U(N * d); s->f2 = F(N * d); s->f2m = U(N * d);
    }
    m->e = F(N * d); m->m0 = U(N * d); m->xL = F(N * d); m->out = F(N * d);
    m->lnf_m = F(N); m->lnf_r = F(N);
    m->G = F(N * d); m->dG = F(N * d);
    m->logits = F((size_t)LOSS_CHUNK * V); m->dlogits = F((size_t)LOSS_CHUNK * V);
    m->gidx = tr_calloc(N, sizeof(int32_t)); m->gtgt = tr_calloc(N, sizeof(int32_t));
    m->gneg = tr_calloc(N, sizeof(int32_t));
    m->dx = F(N * d); m->dout = F(N * d); m->t1 = F(N * d); m->t2 = F(N * d); m->t3 = F(N * d);
    m->dqkv = F(N * 3 * d); m->scr = F(TT);
#undef F
#undef U
}

sasrec_model *sasrec_new(const sasrec_config *c, rng_t *rng) {
    if (c->n_items < 1 || c->d < 1 || c->n_blocks < 0 || c->n_heads < 1 || c->d % c->n_heads ||
        c->max_len < 1 || c->max_B < 1 || c->dropout < 0 || c->dropout >= 1 ||
        (c->loss != SASREC_LOSS_SOFTMAX && c->loss != SASREC_LOSS_BCE)) {
        tr_error("sasrec: expected items >= 1, d divisible by heads, max_len >= 1, dropout in [0,1), "
                 "got items %d d %d heads %d max_len %d dropout %g", c->n_items, c->d, c->n_heads,
                 c->max_len, c->dropout);
        return NULL;
    }
    sasrec_model *m = tr_calloc(1, sizeof *m);
    m->c = *c;
    layout(m);
    m->params = tr_calloc(m->n_params, sizeof(float));
    m->grads = tr_calloc(m->n_params, sizeof(float));
    m->adam_m = tr_calloc(m->n_params, sizeof(float));
    m->adam_v = tr_calloc(m->n_params, sizeof(float));
    init_weights(m, rng);
    arena(m);
    return m;
}

void sasrec_free(sasrec_model *m) {
    if (!m) return;
    for (int l = 0; m->ba && l < m->c.n_blocks; l++) {
        blk_act *s = &m->ba[l];
        free(s->x); free(s->ln1); free(s->ln1_m); free(s->ln1_r); free(s->qkv); free(s->att);
        free(s->attd); free(s->attm); free(s->ao); free(s->a); free(s->am); free(s->xm);
        free(s->ln2); free(s->ln2_m); free(s->ln2_r); free(s->f1); free(s->f1d); free(s->f1m);
        free(s->f2); free(s->f2m);
    }
    free(m->ba); free(m->bo);
    free(m->e); free(m->m0); free(m->xL); free(m->out); free(m->lnf_m); free(m->lnf_r);
    free(m->G); free(m->dG); free(m->logits); free(m->dlogits);
    free(m->gidx); free(m->gtgt); free(m->gneg);
    free(m->dx); free(m->dout); free(m->t1); free(m->t2); free(m->t3); free(m->dqkv); free(m->scr);
    free(m->params); free(m->grads); free(m->adam_m); free(m->adam_v);
    free(m);
}

/* Scale the q columns (first d of each 3d row) of qkv (N,3d) by s. */
static void scale_q(float *qkv, int N, int d, float s) {
    for (int n = 0; n < N; n++)
        for (int c = 0; c < d; c++) qkv[(size_t)n * 3 * d + c] *= s;
}

static float softplus(float x) { return x > 0 ? x + log1pf(expf(-x)) : log1pf(expf(x)); }
static float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

/* Loss over the gathered targets G (M,d): softmax cross-entropy against every item in
 * blocks of LOSS_CHUNK rows (logits = G E^T, one sgemm each), or BCE with one negative.
 * With grad: dG (M,d) and the item table's gradient from the output side. */
static float loss_fwd(sasrec_model *m, int M, int grad) {
    int d = m->c.d, V = m->c.n_items;
    const float *E = m->params + m->item;
    float *gE = m->grads + m->item;
    double sum = 0;
    if (m->c.loss == SASREC_LOSS_SOFTMAX) {
        for (int r0 = 0; r0 < M; r0 += LOSS_CHUNK) {
            int rows = M - r0 < LOSS_CHUNK ? M - r0 : LOSS_CHUNK;
            const float *G = m->G + (size_t)r0 * d;
            nn_sgemm(0, 1, rows, V, d, 1.0f, G, d, E, d, 0.0f, m->logits, V);
            sum += (double)softmax_xent_forward(m->logits, m->logits, m->gtgt + r0, rows, V) * rows;
            if (!grad) continue;
            memset(m->dlogits, 0, (size_t)rows * V * sizeof(float));
            softmax_xent_backward(m->dlogits, m->logits, m->gtgt + r0, rows, V, (float)rows / M);
            nn_sgemm(0, 0, rows, d, V, 1.0f, m->dlogits, V, E, d, 0.0f, m->dG + (size_t)r0 * d, d);
            nn_sgemm(1, 0, V, d, rows, 1.0f, m->dlogits, V, G, d, 1.0f, gE, d);
        }
    } else {
        for (int r = 0; r < M; r++) {
            const float *g = m->G + (size_t)r * d;
            const float *ep = E + (size_t)m->gtgt[r] * d, *en = E + (size_t)m->gneg[r] * d;
            float sp = 0, sn = 0;
            for (int c = 0; c < d; c++) { sp += g[c] * ep[c]; sn += g[c] * en[c]; }
            sum += softplus(-sp) + softplus(sn);
            if (!grad) continue;
            float kp = (sigmoid(sp) - 1.0f) / M, kn = sigmoid(sn) / M;
            float *dg = m->dG + (size_t)r * d;
            float *gp = gE + (size_t)m->gtgt[r] * d, *gn = gE + (size_t)m->gneg[r] * d;
            for (int c = 0; c < d; c++) {
                dg[c] = kp * ep[c] + kn * en[c];
                gp[c] += kp * g[c];
                gn[c] += kn * g[c];
            }
        }
    }
    return M ? (float)(sum / M) : 0.0f;
}

/* ids (B,T) -> out (B,T,d); see sasrec.h for the model. */
int sasrec_forward(sasrec_model *m, const sasrec_batch *b, int train, rng_t *rng, int grad,
                   float *loss) {
    const sasrec_config *c = &m->c;
    int B = b->B, T = b->T, d = c->d, H = c->n_heads, Dh = d / H, N = B * T;
    if (B < 1 || B > c->max_B || T < 1 || T > c->max_len)
        return tr_error("sasrec: batch %dx%d outside the arena's %dx%d", B, T, c->max_B, c->max_len);
    float p = train ? c->dropout : 0.0f;
    rng_t *r = train ? rng : NULL;
    m->B = B; m->T = T; m->p = p;
    const float *P = m->params;
    float sq = sqrtf((float)d), qs = 1.0f / sqrtf((float)Dh);
    for (int n = 0; n < N; n++) {
        int32_t id = b->ids[n];
        if (id < 0 || id >= c->n_items) return tr_error("sasrec: item id %d outside 0..%d", id, c->n_items - 1);
        const float *ev = P + m->item + (size_t)id * d, *pv = P + m->posn + (size_t)(n % T) * d;
        float *er = m->e + (size_t)n * d;
        for (int k = 0; k < d; k++) er[k] = ev[k] * sq + pv[k];
    }
    size_t Nd = (size_t)N * d;
    dropout_forward(c->n_blocks ? m->ba[0].x : m->xL, m->m0, m->e, Nd, p, r);
    for (int l = 0; l < c->n_blocks; l++) {
        blk_act *s = &m->ba[l];
        const blk_off *w = &m->bo[l];
        float *next = l + 1 < c->n_blocks ? m->ba[l + 1].x : m->xL;
        layernorm_forward(s->ln1, s->ln1_m, s->ln1_r, s->x, P + w->ln1_w, P + w->ln1_b, N, d, LN_EPS);
        linear_forward(s->qkv, s->ln1, P + w->qkv_w, P + w->qkv_b, N, d, 3 * d);
        scale_q(s->qkv, N, d, qs);
        attention_forward(s->ao, s->att, s->attd, s->attm, s->qkv, s->qkv + d, s->qkv + 2 * d,
                          3 * d, 3 * d, NULL, NULL, 1, B, T, T, H, Dh, p, r);
        linear_forward(s->a, s->ao, P + w->o_w, P + w->o_b, N, d, d);
        dropout_forward(s->a, s->am, s->a, Nd, p, r);
        for (size_t i = 0; i < Nd; i++) s->xm[i] = s->x[i] + s->a[i];
        layernorm_forward(s->ln2, s->ln2_m, s->ln2_r, s->xm, P + w->ln2_w, P + w->ln2_b, N, d, LN_EPS);
        linear_forward(s->f1, s->ln2, P + w->f1_w, P + w->f1_b, N, d, d);
        relu_forward(s->f1, s->f1, Nd);
        dropout_forward(s->f1d, s->f1m, s->f1, Nd, p, r);
        linear_forward(s->f2, s->f1d, P + w->f2_w, P + w->f2_b, N, d, d);
        dropout_forward(s->f2, s->f2m, s->f2, Nd, p, r);
        for (size_t i = 0; i < Nd; i++) next[i] = s->xm[i] + s->f2[i];
    }
    layernorm_forward(m->out, m->lnf_m, m->lnf_r, m->xL, P + m->lnf_w, P + m->lnf_b, N, d, LN_EPS);
    m->M = 0;
    if (!b->pos) return 0;
    int M = 0;
    for (int bi = 0; bi < B; bi++)
        for (int t = 0; t < b->len[bi] && t < T; t++) {
            int n = bi * T + t;
            if (b->pos[n] < 0) continue;
            if (b->pos[n] >= c->n_items || (c->loss == SASREC_LOSS_BCE && (!b->neg || b->neg[n] < 0 || b->neg[n] >= c->n_items)))
                return tr_error("sasrec: target or negative outside 0..%d", c->n_items - 1);
            m->gidx[M] = n;
            m->gtgt[M] = b->pos[n];
            m->gneg[M] = b->neg ? b->neg[n] : 0;
            memcpy(m->G + (size_t)M * d, m->out + (size_t)n * d, (size_t)d * sizeof(float));
            M++;
        }
    m->M = M;
    if (grad) memset(m->grads, 0, m->n_params * sizeof(float));
    float L = loss_fwd(m, M, grad);
    if (loss) *loss = L;
    return M;
}

/* The gradient of every parameter, after sasrec_forward(..., grad = 1): back through the
 * final norm, the blocks in reverse (each branch's gradient added to the residual stream),
 * the dropout on the input and the two embeddings. */
void sasrec_backward(sasrec_model *m, const sasrec_batch *b) {
    const sasrec_config *c = &m->c;
    int B = m->B, T = m->T, d = c->d, H = c->n_heads, Dh = d / H, N = B * T;
    size_t Nd = (size_t)N * d, fb = Nd * sizeof(float);
    float p = m->p, *P = m->params, *g = m->grads;
    float sq = sqrtf((float)d), qs = 1.0f / sqrtf((float)Dh);
    memset(m->dout, 0, fb);
    for (int r = 0; r < m->M; r++)
        memcpy(m->dout + (size_t)m->gidx[r] * d, m->dG + (size_t)r * d, (size_t)d * sizeof(float));
    float *dx = m->dx;
    memset(dx, 0, fb);
    layernorm_backward(dx, g + m->lnf_w, g + m->lnf_b, m->dout, m->xL, P + m->lnf_w, m->lnf_m,
                       m->lnf_r, N, d);
    for (int l = c->n_blocks - 1; l >= 0; l--) {
        blk_act *s = &m->ba[l];
        const blk_off *w = &m->bo[l];
        /* FFN branch: next = xm + drop(f2(drop(relu(f1(ln2(xm)))))) */
        memset(m->t1, 0, fb);
        dropout_backward(m->t1, dx, s->f2m, Nd, p);
        memset(m->t2, 0, fb);
        linear_backward(m->t2, g + w->f2_w, g + w->f2_b, m->t1, s->f1d, P + w->f2_w, N, d, d);
        memset(m->t3, 0, fb);
        dropout_backward(m->t3, m->t2, s->f1m, Nd, p);
        memset(m->t1, 0, fb);
        relu_backward(m->t1, m->t3, s->f1, Nd);
        memset(m->t2, 0, fb);
        linear_backward(m->t2, g + w->f1_w, g + w->f1_b, m->t1, s->ln2, P + w->f1_w, N, d, d);
        layernorm_backward(dx, g + w->ln2_w, g + w->ln2_b, m->t2, s->xm, P + w->ln2_w, s->ln2_m,
                           s->ln2_r, N, d);
        /* attention branch: xm = x + drop(o(attn(qkv(ln1(x))))) */
        memset(m->t1, 0, fb);
        dropout_backward(m->t1, dx, s->am, Nd, p);
        memset(m->t2, 0, fb);
        linear_backward(m->t2, g + w->o_w, g + w->o_b, m->t1, s->ao, P + w->o_w, N, d, d);
        memset(m->dqkv, 0, 3 * fb);
        attention_backward(m->dqkv, m->dqkv + d, m->dqkv + 2 * d, NULL, m->scr, m->t2, s->att,
                           s->attd, s->attm, s->qkv, s->qkv + d, s->qkv + 2 * d, 3 * d, 3 * d,
                           B, T, T, H, Dh, p);
        scale_q(m->dqkv, N, d, qs);
        memset(m->t3, 0, fb);
        linear_backward(m->t3, g + w->qkv_w, g + w->qkv_b, m->dqkv, s->ln1, P + w->qkv_w, N, d, 3 * d);
        layernorm_backward(dx, g + w->ln1_w, g + w->ln1_b, m->t3, s->x, P + w->ln1_w, s->ln1_m,
                           s->ln1_r, N, d);
    }
    memset(m->t1, 0, fb);
    dropout_backward(m->t1, dx, m->m0, Nd, p);
    for (int n = 0; n < N; n++) {
        const float *gr = m->t1 + (size_t)n * d;
        float *gp = g + m->posn + (size_t)(n % T) * d;
        for (int k = 0; k < d; k++) gp[k] += gr[k];
    }
    for (size_t i = 0; i < Nd; i++) m->t1[i] *= sq;
    embedding_backward(g + m->item, m->t1, b->ids, N, d);
}

int sasrec_scores(sasrec_model *m, const sasrec_batch *b, float *scores) {
    sasrec_batch e = *b;
    e.pos = NULL;
    if (sasrec_forward(m, &e, 0, NULL, 0, NULL) < 0) return -1;
    int d = m->c.d;
    for (int i = 0; i < b->B; i++)
        memcpy(m->G + (size_t)i * d, m->out + ((size_t)i * b->T + b->len[i] - 1) * d,
               (size_t)d * sizeof(float));
    nn_sgemm(0, 1, b->B, m->c.n_items, d, 1.0f, m->G, d, m->params + m->item, d, 0.0f, scores,
             m->c.n_items);
    return 0;
}

/* ---- training and evaluation on a dataset ---- */

int sasrec_rank(sasrec_model *m, const rec_data *d, int split, int batch, retr_metrics *met,
                int topk, rec_topk_fn fn, void *ctx) {
    int L = m->c.max_len, V = d->n_items;
    if (batch > m->c.max_B) batch = m->c.max_B;
    int32_t *users = tr_malloc((size_t)batch * sizeof *users);
    int32_t *ids = tr_malloc((size_t)batch * L * sizeof *ids), *len = tr_malloc((size_t)batch * sizeof *len);
    float *scores = tr_malloc((size_t)batch * V * sizeof *scores);
    int rc = 0;
    for (int32_t next = 0; !rc;) {
        int n = 0, T = 1;
        for (; next < d->n_users && n < batch; next++) {
            int tp = rec_target_pos(d, next, split);
            if (tp < 1) continue;
            users[n] = next;
            len[n] = tp < L ? tp : L;
            if (len[n] > T) T = len[n];
            n++;
        }
        if (n == 0) break;
        for (int i = 0; i < n; i++) {
            const int32_t *s = d->seq + d->off[users[i]] + rec_target_pos(d, users[i], split) - len[i];
            for (int t = 0; t < T; t++) ids[(size_t)i * T + t] = t < len[i] ? s[t] : 0;
        }
        sasrec_batch b = {n, T, ids, len, NULL, NULL};
        rc = sasrec_scores(m, &b, scores);
        if (!rc) rec_rank_rows(d, users, n, split, scores, met, topk, fn, ctx);
    }
    free(users); free(ids); free(len); free(scores);
    return rc;
}

/* Is item i among the user's train items? (the negatives are items the user has not had) */
static int in_train(const rec_data *d, int32_t u, int32_t i) {
    const int32_t *s = d->seq + d->off[u];
    for (int k = 0, n = rec_n_train(d, u); k < n; k++) if (s[k] == i) return 1;
    return 0;
}

/* Training state saved in checkpoints besides the parameter buffers. */
typedef struct {
    int32_t epoch, bad, best_epoch, done;
    int64_t step;
    double  best_hr;
    rng_t   rng;
} fit_state;

static int save_ckpt(stage_run *run, const fit_state *st, sasrec_model *m, const float *best) {
    size_t fb = m->n_params * sizeof(float);
    if (stage_ckpt_begin(run) != 0 ||
        stage_ckpt_put(run, "sasrec_state", st->step, st, sizeof *st) != 0 ||
        stage_ckpt_put(run, "sasrec_params", st->step, m->params, fb) != 0 ||
        stage_ckpt_put(run, "sasrec_adam_m", st->step, m->adam_m, fb) != 0 ||
        stage_ckpt_put(run, "sasrec_adam_v", st->step, m->adam_v, fb) != 0 ||
        stage_ckpt_put(run, "sasrec_best", st->step, best, fb) != 0 ||
        stage_ckpt_commit(run) != 0)
        return -1;
    return 0;
}

int sasrec_fit(stage_run *run, const rec_data *d, const sasrec_train_cfg *tc,
               sasrec_model **out, double *best_valid) {
    *out = NULL;
    sasrec_config mc = tc->model;
    mc.n_items = d->n_items;
    mc.max_B = tc->batch;
    int L = mc.max_len;
    if (tc->batch < 1 || tc->epochs < 0 || tc->eval_every < 1 || tc->patience < 1)
        return tr_error("sasrec: expected batch, eval-every and patience >= 1 and epochs >= 0");
    fit_state st;
    memset(&st, 0, sizeof st);
    st.best_hr = -1;
    rng_seed(&st.rng, tc->seed);
    sasrec_model *m = sasrec_new(&mc, &st.rng);
    if (!m) return -1;
    size_t np = m->n_params;
    float *best = tr_malloc(np * sizeof(float));
    memcpy(best, m->params, np * sizeof(float));
    if (run && run->resumed) {
        void *probe = NULL;
        if (stage_ckpt_get(run, "sasrec_state", &probe, NULL, NULL) == 0) {
            free(probe);
            if (stage_ckpt_read(run, "sasrec_state", &st, sizeof st) || stage_ckpt_read(run, "sasrec_params", m->params, np * 4) ||
                stage_ckpt_read(run, "sasrec_adam_m", m->adam_m, np * 4) || stage_ckpt_read(run, "sasrec_adam_v", m->adam_v, np * 4) ||
                stage_ckpt_read(run, "sasrec_best", best, np * 4)) { sasrec_free(m); free(best); return -1; }
            if (!tc->quiet) fprintf(stderr, "[sasrec] resuming at epoch %d (best valid HR@10 %.4f)\n", st.epoch, st.best_hr);
        }
    }
    /* the training users: at least two train items (one input, one target) */
    int32_t *users = tr_malloc((size_t)d->n_users * sizeof *users);
    int nu = 0;
    for (int32_t u = 0; u < d->n_users; u++) if (rec_n_train(d, u) >= 2) users[nu++] = u;
    size_t cap = (size_t)tc->batch * L;
    int32_t *ids = tr_malloc(cap * sizeof *ids), *pos = tr_malloc(cap * sizeof *pos);
    int32_t *neg = tr_malloc(cap * sizeof *neg), *len = tr_malloc((size_t)tc->batch * sizeof *len);
    int32_t *order = tr_malloc((size_t)(nu ? nu : 1) * sizeof *order);
    adamw_cfg opt = adamw_default(tc->lr);
    opt.beta2 = 0.98f;
    opt.weight_decay = tc->weight_decay;
    int ks[1] = {10};
    int rc = 0;
    while (!st.done && st.epoch < tc->epochs) {
        for (int i = 0; i < nu; i++) order[i] = users[i];
        rng_shuffle_i32(&st.rng, order, (size_t)nu);
        double lsum = 0;
        int nb = 0;
        for (int i0 = 0; i0 < nu; i0 += tc->batch) {
            int B = nu - i0 < tc->batch ? nu - i0 : tc->batch, T = 1;
            for (int i = 0; i < B; i++) {
                int n = rec_n_train(d, order[i0 + i]) - 1;
                len[i] = n < L ? n : L;
                if (len[i] > T) T = len[i];
            }
            for (int i = 0; i < B; i++) {
                int32_t u = order[i0 + i];
                int n = rec_n_train(d, u);
                const int32_t *s = d->seq + d->off[u] + (n - 1 - len[i]);   /* inputs s[0..len) */
                for (int t = 0; t < T; t++) {
                    size_t k = (size_t)i * T + t;
                    ids[k] = t < len[i] ? s[t] : 0;
                    pos[k] = t < len[i] ? s[t + 1] : -1;
                    neg[k] = 0;
                    if (t < len[i] && mc.loss == SASREC_LOSS_BCE) {
                        int32_t j;
                        int tries = 0;
                        do j = (int32_t)rng_below(&st.rng, (uint32_t)d->n_items);
                        while (in_train(d, u, j) && ++tries < 50);
                        neg[k] = j;
                    }
                }
            }
            sasrec_batch b = {B, T, ids, len, pos, neg};
            float loss = 0;
            if (sasrec_forward(m, &b, 1, &st.rng, 1, &loss) < 0) { rc = -1; goto out; }
            sasrec_backward(m, &b);
            if (tc->clip > 0) grad_clip(m->grads, np, tc->clip);
            st.step++;
            adamw_update(&opt, m->params, m->grads, m->adam_m, m->adam_v, np, st.step);
            lsum += loss;
            nb++;
        }
        st.epoch++;
        double lmean = nb ? lsum / nb : 0;
        if (run) stage_metric(run, st.step, "sasrec_loss", lmean);
        int last = st.epoch >= tc->epochs;
        if (st.epoch % tc->eval_every == 0 || last) {
            retr_metrics vm;
            retr_metrics_init(&vm, 1, ks);
            if (sasrec_rank(m, d, 1, tc->batch, &vm, 0, NULL, NULL) != 0) { rc = -1; goto out; }
            double hr = retr_hr(&vm, 10);
            if (run) stage_metric(run, st.step, "sasrec_valid_hr10", hr);
            if (hr > st.best_hr) {
                st.best_hr = hr; st.best_epoch = st.epoch; st.bad = 0;
                memcpy(best, m->params, np * sizeof(float));
            } else if (++st.bad >= tc->patience) st.done = 1;
            if (run) {
                stage_progress(run, st.done ? 1.0 : (double)st.epoch / tc->epochs,
                               "sasrec epoch %d/%d loss %.4f valid HR@10 %.4f (best %.4f at %d)",
                               st.epoch, tc->epochs, lmean, hr, st.best_hr, st.best_epoch);
                if (save_ckpt(run, &st, m, best) != 0) { rc = -1; goto out; }
            } else if (!tc->quiet) {
                fprintf(stderr, "[sasrec] epoch %d loss %.4f valid HR@10 %.4f (best %.4f at %d)\n",
                        st.epoch, lmean, hr, st.best_hr, st.best_epoch);
            }
        } else if (run) {
            if (st.best_hr < 0)
                stage_progress(run, (double)st.epoch / tc->epochs, "sasrec epoch %d/%d loss %.4f",
                               st.epoch, tc->epochs, lmean);
            else
                stage_progress(run, (double)st.epoch / tc->epochs, "sasrec epoch %d/%d loss %.4f (best valid HR@10 %.4f at %d)",
                               st.epoch, tc->epochs, lmean, st.best_hr, st.best_epoch);
        }
        if (run && stage_should_stop() && !st.done && st.epoch < tc->epochs) {
            if (save_ckpt(run, &st, m, best) != 0) { rc = -1; goto out; }
            stage_stopped(run);
            rc = 130;
            goto out;
        }
    }
    if (st.best_hr >= 0) memcpy(m->params, best, np * sizeof(float));
    if (best_valid) *best_valid = st.best_hr;
out:
    free(users); free(ids); free(pos); free(neg); free(len); free(order); free(best);
    if (rc == 0) *out = m;
    else sasrec_free(m);
    return rc;
}
