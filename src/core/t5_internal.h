/* t5_internal: the private layout of struct t5_model (parameter offsets, activation arena),
 * shared by t5.c and the autoregressive decoding of t5_gen.c. Not part of the public API:
 * only those two files include it. */
#ifndef TOKENREC_T5_INTERNAL_H
#define TOKENREC_T5_INTERNAL_H
#include "t5.h"

/* Offsets of one block's parameters in the contiguous buffers. Decoder blocks also use
 * the cross-attention (c*) fields; `ff_ln`, `wi`, `wo` are layer.1 in the encoder and
 * layer.2 in the decoder. */
typedef struct {
    size_t ln0, q, k, v, o;
    size_t lnc, cq, ck, cv, co;
    size_t ff_ln, wi, wo;
} t5_block_off;

/* Saved activations of one block. */
typedef struct {
    float *x, *ln0, *r0, *qkv, *att, *attd, *ao;  /* qkv (N,3HD): fused q|k|v projection */
    uint8_t *adm, *cadm;                          /* attention-probability dropout masks */
    uint8_t *m0;
    float *x1;
    float *lnc, *rc, *cq, *ckv, *catt, *cattd, *cao;  /* decoder only; ckv (Ne,2HD) */
    uint8_t *mc;
    float *x2;                                   /* decoder: input of the FFN sublayer */
    float *lnf, *rf, *h, *hd;
    uint8_t *mh, *mf;
} t5_block_act;

typedef struct {
    int B, T, Td;                 /* capacity */
    char *mem;
    size_t bytes;
    t5_block_act *enc, *dec;
    int32_t *dec_ids;             /* (B,Td) */
    float *enc_emb; uint8_t *enc_me;  /* embedding after dropout is enc[0].x */
    uint8_t *dec_me;
    float *enc_xL, *enc_lnf, *enc_rf, *enc_out; uint8_t *enc_mo;
    float *dec_xL, *dec_lnf, *dec_rf, *dec_out; uint8_t *dec_mo;
    float *enc_bias, *dec_bias; int32_t *enc_bucket, *dec_bucket;
    float *pooled;                /* encoder-only: (B,C) */
    float *h1, *h1d; uint8_t *mh1;
    float *z;
    /* backward scratch */
    float *d_enc, *d_dec, *d_tmp, *d_ln, *d_qkv, *d_kv, *d_ao, *d_att, *d_h, *d_encout;
    float *d_ebias, *d_dbias, *d_flat, *d_h1, *d_z;
} t5_arena;

struct t5_model {
    t5_config cfg;
    size_t n_params;
    float *params, *grads, *adam_m, *adam_v;
    t5_param *tab;
    int n_tab, cap_tab;
    t5_block_off *enc, *dec;
    size_t shared, enc_rel, dec_rel, enc_lnf, dec_lnf, fc1_w, fc1_b, fc2_w, fc2_b;
    long step;
    t5_arena a;
    int last_B, last_T, last_has_loss, last_train;
    float last_pdrop, last_hpdrop;
};

#endif
