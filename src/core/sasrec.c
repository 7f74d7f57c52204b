/* sasrec.c: the SASRec model on the nn.h layers: forward, backward, losses, scores, the
 * negative sampler. No database; training on a dataset is sasrec_fit.c. See sasrec.h. */
#include "sasrec.h"
#include "nn.h"
#include "util.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LN_EPS 1e-6f
#define LOSS_CHUNK 128          /* softmax-loss rows per logits block (a few MB: in cache) */

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
    sasrec_config c;            /* n_rows, n_feat filled in; item_rows, fixed: the copies */
    size_t   n_params, item, posn, lnf_w, lnf_b;
    size_t   otab, head_w, head_b;  /* output table (OUT_TABLE), head (OUT_FIXED) */
    int32_t *rows;              /* (n_items, n_feat) copy of item_rows, or NULL */
    float   *fixed;             /* (n_items, out_dim) copy of the fixed vectors, or NULL */
    float   *comp, *gcomp;      /* (n_items, d) composed item vectors (OUT_TIED with rows) */
    float   *Z, *dZ;            /* (N, out_dim) the head's outputs (OUT_FIXED) */
    const float *W;             /* the item side of the last forward: (n_items, Do) */
    float   *gW;                /* its gradient (NULL: fixed) */
    int      Do;                /* its width */
    float   *Q, *dQ;            /* the loss's query rows and their gradient: G/dG or Z/dZ */
    blk_off *bo;
    float   *params, *grads, *adam_m, *adam_v;
    /* arena */
    blk_act *ba;
    float   *e, *xL, *out, *lnf_m, *lnf_r;
    uint8_t *m0;
    float   *G, *dG, *logits;
    double  *rowloss;           /* (LOSS_CHUNK) each loss row's loss */
    float   *En, *gEn;          /* (negatives,d) the shared negatives' rows and their gradient */
    int32_t *gidx, *gtgt, *gneg;
    float    norm;              /* the last forward's loss divisor (b->norm, or its targets) */
    const int32_t *negs;        /* the last forward's shared negatives and corrections */
    const float   *logq;
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
float *sasrec_in_table(sasrec_model *m) { return m->params + m->item; }
float *sasrec_out_table(sasrec_model *m) { return m->c.out == SASREC_OUT_TABLE ? m->params + m->otab : NULL; }

void sasrec_item_rows(const sasrec_model *m, int32_t item, int32_t *rows) {
    int S = m->c.n_feat;
    if (m->rows) memcpy(rows, m->rows + (size_t)item * S, (size_t)S * sizeof *rows);
    else { rows[0] = item; for (int s = 1; s < S; s++) rows[s] = -1; }
}

/* Lay out the parameters: input rows, positions, the blocks, the final norm, the output
 * table or head. */
static void layout(sasrec_model *m) {
    int d = m->c.d;
    size_t o = 0;
    m->item = o; o += (size_t)m->c.n_rows * d;
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
    if (m->c.out == SASREC_OUT_TABLE) { m->otab = o; o += (size_t)m->c.n_items * d; }
    if (m->c.out == SASREC_OUT_FIXED) {
        m->head_w = o; o += (size_t)m->c.out_dim * d;
        m->head_b = o; o += (size_t)m->c.out_dim;
    }
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
    fill_normal(P + m->item, (size_t)m->c.n_rows * d, sd, rng);
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
    if (m->c.out == SASREC_OUT_TABLE) fill_normal(P + m->otab, (size_t)m->c.n_items * d, sd, rng);
    if (m->c.out == SASREC_OUT_FIXED)
        fill_uniform(P + m->head_w, (size_t)m->c.out_dim * d, sqrtf(6.0f / (d + m->c.out_dim)), rng);
}

/* Allocate the activation arena for (max_B, max_len). */
static void arena(sasrec_model *m) {
    size_t d = m->c.d, N = (size_t)m->c.max_B * m->c.max_len;
    size_t TT = (size_t)m->c.max_B * m->c.n_heads * m->c.max_len * m->c.max_len;
    size_t V = m->c.n_items, Dw = m->c.out == SASREC_OUT_FIXED && (size_t)m->c.out_dim > d ? (size_t)m->c.out_dim : d;
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
    size_t W = V > (size_t)m->c.negatives + 1 ? V : (size_t)m->c.negatives + 1;
    m->logits = F((size_t)LOSS_CHUNK * W);
    m->rowloss = tr_calloc(LOSS_CHUNK, sizeof(double));
    m->En = F((size_t)m->c.negatives * Dw); m->gEn = F((size_t)m->c.negatives * Dw);
    if (m->rows) { m->comp = F(V * d); m->gcomp = F(V * d); }
    if (m->c.out == SASREC_OUT_FIXED) { m->Z = F(N * m->c.out_dim); m->dZ = F(N * m->c.out_dim); }
    m->gidx = tr_calloc(N, sizeof(int32_t)); m->gtgt = tr_calloc(N, sizeof(int32_t));
    m->gneg = tr_calloc(N, sizeof(int32_t));
    m->dx = F(N * d); m->dout = F(N * d); m->t1 = F(N * d); m->t2 = F(N * d); m->t3 = F(N * d);
    m->dqkv = F(N * 3 * d); m->scr = F(TT);
#undef F
#undef U
}

/* The input and item-side settings of c (n_rows and n_feat already defaulted) are
 * consistent: 0, or -1 with tr_error. */
static int check_sides(const sasrec_config *c) {
    if (c->n_rows < 1 || c->n_feat < 1 || c->n_feat > 64)
        return tr_error("sasrec: expected an input table and 1..64 rows per position, got %d rows, %d per position",
                        c->n_rows, c->n_feat);
    if (!c->item_rows && (c->n_feat != 1 || c->n_rows < c->n_items))
        return tr_error("sasrec: without item_rows an item is one input row (n_feat 1, n_rows >= n_items)");
    for (size_t i = 0; c->item_rows && i < (size_t)c->n_items * c->n_feat; i++)
        if (c->item_rows[i] < -1 || c->item_rows[i] >= c->n_rows)
            return tr_error("sasrec: item row %d outside -1..%d", c->item_rows[i], c->n_rows - 1);
    if (c->out < SASREC_OUT_TIED || c->out > SASREC_OUT_OWN)
        return tr_error("sasrec: unknown item side %d", c->out);
    if (c->out == SASREC_OUT_FIXED && (!c->fixed || c->out_dim < 1))
        return tr_error("sasrec: a fixed item side needs its vectors and their width");
    return 0;
}

sasrec_model *sasrec_new(const sasrec_config *c, rng_t *rng) {
    if (c->n_items < 1 || c->d < 1 || c->n_blocks < 0 || c->n_heads < 1 || c->d % c->n_heads ||
        c->max_len < 1 || c->max_B < 1 || c->dropout < 0 || c->dropout >= 1 || c->negatives < 0 ||
        (c->loss != SASREC_LOSS_SOFTMAX && c->loss != SASREC_LOSS_BCE)) {
        tr_error("sasrec: expected items >= 1, d divisible by heads, max_len >= 1, dropout in [0,1), "
                 "got items %d d %d heads %d max_len %d dropout %g", c->n_items, c->d, c->n_heads,
                 c->max_len, c->dropout);
        return NULL;
    }
    sasrec_config cc = *c;
    if (cc.n_rows <= 0) cc.n_rows = cc.n_items;
    if (cc.n_feat <= 0) cc.n_feat = 1;
    if (check_sides(&cc) != 0) return NULL;
    sasrec_model *m = tr_calloc(1, sizeof *m);
    m->c = cc;
    if (cc.item_rows) {
        size_t n = (size_t)cc.n_items * cc.n_feat;
        m->rows = tr_malloc(n * sizeof *m->rows);
        memcpy(m->rows, cc.item_rows, n * sizeof *m->rows);
    }
    if (cc.out == SASREC_OUT_FIXED) {
        size_t n = (size_t)cc.n_items * cc.out_dim;
        m->fixed = tr_malloc(n * sizeof *m->fixed);
        memcpy(m->fixed, cc.fixed, n * sizeof *m->fixed);
    }
    m->c.item_rows = m->rows;
    m->c.fixed = m->fixed;
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
    free(m->G); free(m->dG); free(m->logits); free(m->rowloss); free(m->En); free(m->gEn);
    free(m->gidx); free(m->gtgt); free(m->gneg);
    free(m->dx); free(m->dout); free(m->t1); free(m->t2); free(m->t3); free(m->dqkv); free(m->scr);
    free(m->rows); free(m->fixed); free(m->comp); free(m->gcomp); free(m->Z); free(m->dZ);
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

/* Sampled softmax over the gathered query rows Q (M,Do): row r's logits are [Q_r . W[t_r],
 * Q_r . W[n_j] - logq_j for the N shared negatives], a negative equal to t_r masked to
 * -inf; cross-entropy with the target in column 0, in blocks of LOSS_CHUNK rows. With grad:
 * dQ, and (a trained item side) the targets' and the negatives' rows of gW, through gEn. */
static double sampled_loss(sasrec_model *m, int M, int grad) {
    int d = m->Do, Nn = m->c.negatives, W = Nn + 1;
    const float *E = m->W;
    float *gE = m->gW;
    for (int j = 0; j < Nn; j++)
        memcpy(m->En + (size_t)j * d, E + (size_t)m->negs[j] * d, (size_t)d * sizeof(float));
    if (grad) memset(m->gEn, 0, (size_t)Nn * d * sizeof(float));
    static const int32_t zero[LOSS_CHUNK];      /* the target is column 0 of every row */
    double sum = 0;
    for (int r0 = 0; r0 < M; r0 += LOSS_CHUNK) {
        int rows = M - r0 < LOSS_CHUNK ? M - r0 : LOSS_CHUNK;
        const float *G = m->Q + (size_t)r0 * d;
        nn_sgemm(0, 1, rows, Nn, d, 1.0f, G, d, m->En, d, 0.0f, m->logits + 1, W);
        for (int r = 0; r < rows; r++) {
            const float *g = G + (size_t)r * d, *e = E + (size_t)m->gtgt[r0 + r] * d;
            float *row = m->logits + (size_t)r * W, s = 0;
            for (int c = 0; c < d; c++) s += g[c] * e[c];
            row[0] = s;
            for (int j = 0; j < Nn; j++) {
                if (m->negs[j] == m->gtgt[r0 + r]) row[1 + j] = -INFINITY;
                else if (m->logq) row[1 + j] -= m->logq[j];
            }
        }
        sum += softmax_xent_inplace(m->logits, zero, rows, W, 1.0f / m->norm, grad, m->rowloss);
        if (!grad) continue;
        float *dG = m->dQ + (size_t)r0 * d;
        nn_sgemm(0, 0, rows, d, Nn, 1.0f, m->logits + 1, W, m->En, d, 0.0f, dG, d);
        if (gE) nn_sgemm(1, 0, Nn, d, rows, 1.0f, m->logits + 1, W, G, d, 1.0f, m->gEn, d);
        for (int r = 0; r < rows; r++) {
            float k = m->logits[(size_t)r * W];
            const float *g = G + (size_t)r * d, *e = E + (size_t)m->gtgt[r0 + r] * d;
            float *dg = dG + (size_t)r * d;
            for (int c = 0; c < d; c++) dg[c] += k * e[c];
            if (!gE) continue;
            float *ge = gE + (size_t)m->gtgt[r0 + r] * d;
            for (int c = 0; c < d; c++) ge[c] += k * g[c];
        }
    }
    if (grad && gE)
        for (int j = 0; j < Nn; j++) {
            float *ge = gE + (size_t)m->negs[j] * d;
            const float *gn = m->gEn + (size_t)j * d;
            for (int c = 0; c < d; c++) ge[c] += gn[c];
        }
    return sum;
}

/* Loss over the gathered query rows Q (M,Do), summed and divided by m->norm: full softmax
 * against every item in blocks of LOSS_CHUNK rows (logits = Q W^T, one sgemm each),
 * sampled softmax (sampled_loss), or BCE with one negative per target. With grad: dQ (M,Do)
 * and the item side's gradient gW (when it is trained), both scaled by 1/norm. */
static float loss_fwd(sasrec_model *m, int M, int grad) {
    int d = m->Do, V = m->c.n_items;
    const float *E = m->W;
    float *gE = m->gW;
    double sum = 0;
    if (m->c.loss == SASREC_LOSS_SOFTMAX && m->c.negatives > 0) {
        sum = sampled_loss(m, M, grad);
    } else if (m->c.loss == SASREC_LOSS_SOFTMAX) {
        for (int r0 = 0; r0 < M; r0 += LOSS_CHUNK) {
            int rows = M - r0 < LOSS_CHUNK ? M - r0 : LOSS_CHUNK;
            const float *G = m->Q + (size_t)r0 * d;
            nn_sgemm(0, 1, rows, V, d, 1.0f, G, d, E, d, 0.0f, m->logits, V);
            sum += softmax_xent_inplace(m->logits, m->gtgt + r0, rows, V, 1.0f / m->norm, grad, m->rowloss);
            if (!grad) continue;
            nn_sgemm(0, 0, rows, d, V, 1.0f, m->logits, V, E, d, 0.0f, m->dQ + (size_t)r0 * d, d);
            if (gE) nn_sgemm(1, 0, V, d, rows, 1.0f, m->logits, V, G, d, 1.0f, gE, d);
        }
    } else {
        for (int r = 0; r < M; r++) {
            const float *g = m->Q + (size_t)r * d;
            const float *ep = E + (size_t)m->gtgt[r] * d, *en = E + (size_t)m->gneg[r] * d;
            float sp = 0, sn = 0;
            for (int c = 0; c < d; c++) { sp += g[c] * ep[c]; sn += g[c] * en[c]; }
            sum += softplus(-sp) + softplus(sn);
            if (!grad) continue;
            float kp = (sigmoid(sp) - 1.0f) / m->norm, kn = sigmoid(sn) / m->norm;
            float *dg = m->dQ + (size_t)r * d;
            for (int c = 0; c < d; c++) dg[c] = kp * ep[c] + kn * en[c];
            if (!gE) continue;
            float *gp = gE + (size_t)m->gtgt[r] * d, *gn = gE + (size_t)m->gneg[r] * d;
            for (int c = 0; c < d; c++) { gp[c] += kp * g[c]; gn[c] += kn * g[c]; }
        }
    }
    return M ? (float)(sum / m->norm) : 0.0f;
}

/* Input row s of item i as a term of its item-side vector, -1 when none or not a term
 * (SASREC_OUT_OWN: only the own, last, row of an item that has one). */
static int32_t side_row(const sasrec_model *m, int32_t i, int s) {
    int S = m->c.n_feat;
    const int32_t *r = m->rows + (size_t)i * S;
    return m->c.out == SASREC_OUT_OWN && s < S - 1 && r[S - 1] >= 0 ? -1 : r[s];
}

/* The item side of this forward into m->W, m->gW, m->Do (see sasrec.h): composed from the
 * input rows (their gradient gcomp zeroed when grad), the input or output table, or the
 * fixed vectors. */
static void item_side(sasrec_model *m, int grad) {
    int d = m->c.d, V = m->c.n_items, S = m->c.n_feat;
    m->Do = d;
    if (m->c.out == SASREC_OUT_FIXED) {
        m->W = m->fixed; m->gW = NULL; m->Do = m->c.out_dim;
    } else if (m->c.out == SASREC_OUT_TABLE) {
        m->W = m->params + m->otab; m->gW = m->grads + m->otab;
    } else if (!m->rows) {
        m->W = m->params + m->item; m->gW = m->grads + m->item;
    } else {
        const float *E = m->params + m->item;
        for (int i = 0; i < V; i++) {
            float *v = m->comp + (size_t)i * d;
            memset(v, 0, (size_t)d * sizeof(float));
            for (int s = 0; s < S; s++) {
                int32_t r = side_row(m, i, s);
                if (r < 0) continue;
                const float *e = E + (size_t)r * d;
                for (int k = 0; k < d; k++) v[k] += e[k];
            }
        }
        m->W = m->comp; m->gW = m->gcomp;
        if (grad) memset(m->gcomp, 0, (size_t)V * d * sizeof(float));
    }
}

/* Add the composed item vectors' gradient to the input rows they sum (OUT_TIED or OUT_OWN
 * with rows). */
static void item_side_backward(sasrec_model *m) {
    if (m->gW != m->gcomp || !m->gcomp) return;
    int d = m->c.d, V = m->c.n_items, S = m->c.n_feat;
    float *gE = m->grads + m->item;
    for (int i = 0; i < V; i++)
        for (int s = 0; s < S; s++) {
            int32_t r = side_row(m, i, s);
            if (r < 0) continue;
            const float *gv = m->gcomp + (size_t)i * d;
            float *ge = gE + (size_t)r * d;
            for (int k = 0; k < d; k++) ge[k] += gv[k];
        }
}

/* The query rows of the M gathered hidden rows G: G itself, or the head W h + b into Z. */
static void queries(sasrec_model *m, int M) {
    if (m->c.out != SASREC_OUT_FIXED) { m->Q = m->G; m->dQ = m->dG; return; }
    linear_forward(m->Z, m->G, m->params + m->head_w, m->params + m->head_b, M, m->c.d, m->c.out_dim);
    m->Q = m->Z; m->dQ = m->dZ;
}

/* ids (B,T,n_feat) -> out (B,T,d); see sasrec.h for the model. */
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
    int S = c->n_feat;
    for (int n = 0; n < N; n++) {
        const float *pv = P + m->posn + (size_t)(n % T) * d;
        float *er = m->e + (size_t)n * d;
        memset(er, 0, (size_t)d * sizeof(float));
        for (int s = 0; s < S; s++) {
            int32_t id = b->ids[(size_t)n * S + s];
            if (id < -1 || id >= c->n_rows || (id < 0 && !c->item_rows))
                return tr_error("sasrec: input row %d outside 0..%d", id, c->n_rows - 1);
            if (id < 0) continue;
            const float *ev = P + m->item + (size_t)id * d;
            for (int k = 0; k < d; k++) er[k] += ev[k];
        }
        for (int k = 0; k < d; k++) er[k] = er[k] * sq + pv[k];
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
    if (c->loss == SASREC_LOSS_SOFTMAX && c->negatives > 0) {
        if (!b->negs) return tr_error("sasrec: sampled softmax needs the batch's negatives");
        for (int j = 0; j < c->negatives; j++)
            if (b->negs[j] < 0 || b->negs[j] >= c->n_items)
                return tr_error("sasrec: negative %d outside 0..%d", b->negs[j], c->n_items - 1);
    }
    m->negs = b->negs;
    m->logq = b->logq;
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
    m->norm = b->norm > 0 ? b->norm : (float)(M > 0 ? M : 1);
    if (grad) memset(m->grads, 0, m->n_params * sizeof(float));
    item_side(m, grad);
    queries(m, M);
    float L = loss_fwd(m, M, grad);
    if (grad) item_side_backward(m);
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
    if (c->out == SASREC_OUT_FIXED) {          /* back through the head: dG from dZ */
        memset(m->dG, 0, (size_t)m->M * d * sizeof(float));
        linear_backward(m->dG, g + m->head_w, g + m->head_b, m->dZ, m->G, P + m->head_w, m->M, d, c->out_dim);
    }
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
    int S = c->n_feat;
    for (int n = 0; n < N; n++) {
        const float *gr = m->t1 + (size_t)n * d;
        for (int s = 0; s < S; s++) {
            int32_t id = b->ids[(size_t)n * S + s];
            if (id < 0) continue;
            float *ge = g + m->item + (size_t)id * d;
            for (int k = 0; k < d; k++) ge[k] += gr[k] * sq;
        }
    }
}

int sasrec_scores(sasrec_model *m, const sasrec_batch *b, float *scores) {
    sasrec_batch e = *b;
    e.pos = NULL;
    if (sasrec_forward(m, &e, 0, NULL, 0, NULL) < 0) return -1;
    int d = m->c.d;
    for (int i = 0; i < b->B; i++)
        memcpy(m->G + (size_t)i * d, m->out + ((size_t)i * b->T + b->len[i] - 1) * d,
               (size_t)d * sizeof(float));
    item_side(m, 0);
    queries(m, b->B);
    nn_sgemm(0, 1, b->B, m->c.n_items, m->Do, 1.0f, m->Q, m->Do, m->W, m->Do, 0.0f, scores, m->c.n_items);
    return 0;
}

/* ---- the shared negatives of sampled softmax ---- */

/* Uniform, or popularity: q(i) = (counts[i] + 1) / sum, kept as cumulative sums. */
int sasrec_sampler_init(sasrec_sampler *s, int n_items, const int32_t *counts, int kind) {
    memset(s, 0, sizeof *s);
    s->n_items = n_items;
    s->kind = kind;
    if (n_items < 1) return tr_error("sasrec: a sampler needs at least one item");
    if (kind == SASREC_SAMPLER_UNIFORM) return 0;
    if (kind != SASREC_SAMPLER_POP || !counts) return tr_error("sasrec: unknown sampler %d", kind);
    s->cum = tr_calloc((size_t)n_items, sizeof *s->cum);
    double tot = 0;
    for (int i = 0; i < n_items; i++) { tot += counts[i] + 1.0; s->cum[i] = tot; }
    for (int i = 0; i < n_items; i++) s->cum[i] /= tot;
    return 0;
}

/* Release the cumulative table. */
void sasrec_sampler_free(sasrec_sampler *s) { free(s->cum); s->cum = NULL; }

/* n draws with replacement into ids, and log(n q(id)) of each into logq. */
void sasrec_sampler_draw(const sasrec_sampler *s, rng_t *rng, int n, int32_t *ids, float *logq) {
    for (int j = 0; j < n; j++) {
        if (!s->cum) {
            ids[j] = (int32_t)rng_below(rng, (uint32_t)s->n_items);
            logq[j] = logf((float)n / s->n_items);
            continue;
        }
        double x = rng_uniform_d(rng);
        int lo = 0, hi = s->n_items - 1;          /* first i with cum[i] > x */
        while (lo < hi) { int mid = (lo + hi) / 2; if (s->cum[mid] > x) hi = mid; else lo = mid + 1; }
        ids[j] = lo;
        double q = s->cum[lo] - (lo ? s->cum[lo - 1] : 0);
        logq[j] = (float)log(n * q);
    }
}
