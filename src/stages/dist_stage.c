/* dist_stage.c: rank 0's inputs on every rank (see dist_stage.h). */
#include "dist_stage.h"
#include "util.h"
#include <stdlib.h>
#include <string.h>

/* Rank 0's n elements of size sz at *p into every rank (allocated on the others; a NULL
 * array on rank 0 stays NULL everywhere). */
static void bcast_array(void **p, size_t n, size_t sz) {
    int has = dist_bcast_int(*p != NULL);
    if (has) dist_bcast_alloc(p, n * sz);
}

void dist_bcast_sequences(rec_data *d) {
    if (dist_size() <= 1) return;
    int32_t nn[2] = {d->n_users, d->n_items};
    dist_bcast(nn, sizeof nn);
    int64_t total = dist_rank() == 0 ? d->off[d->n_users] : 0;
    dist_bcast(&total, sizeof total);
    if (dist_rank() != 0) {
        d->n_users = nn[0];
        d->n_items = nn[1];
        d->off = tr_malloc((size_t)(nn[0] + 1) * sizeof *d->off);
        d->seq = tr_malloc((size_t)(total > 0 ? total : 1) * sizeof *d->seq);
    }
    dist_bcast(d->off, (size_t)(nn[0] + 1) * sizeof *d->off);
    dist_bcast(d->seq, (size_t)total * sizeof *d->seq);
    bcast_array((void **)&d->tied, (size_t)total, 1);
}

void dist_bcast_rec_data(rec_data *d) {
    if (dist_size() <= 1) return;
    dist_bcast_sequences(d);
    int32_t sc[6] = {d->K, d->L, d->extra, d->cpi, d->D, d->n_skip};
    int64_t runs[2] = {d->tokenize_run, d->cf_run};
    dist_bcast(sc, sizeof sc);
    dist_bcast(runs, sizeof runs);
    d->K = sc[0]; d->L = sc[1]; d->extra = sc[2]; d->cpi = sc[3]; d->D = sc[4]; d->n_skip = sc[5];
    d->tokenize_run = runs[0]; d->cf_run = runs[1];
    bcast_array((void **)&d->user_codes, (size_t)d->n_users * d->K, sizeof(int32_t));
    bcast_array((void **)&d->item_codes, (size_t)d->n_items * d->cpi, sizeof(int32_t));
    bcast_array((void **)&d->pool, (size_t)d->n_items * d->D, sizeof(float));
    bcast_array((void **)&d->pool_inv, (size_t)d->n_items, sizeof(float));
    bcast_array((void **)&d->skip, (size_t)d->n_users, 1);
    bcast_array((void **)&d->user_vec, (size_t)d->n_users * d->D, sizeof(float));
}

int dist_bcast_sasrec(sasrec_model **m, int max_B) {
    if (dist_size() <= 1) return 0;
    sasrec_config c;
    memset(&c, 0, sizeof c);
    if (dist_rank() == 0) c = *sasrec_cfg(*m);
    int plain = dist_bcast_int(!c.item_rows && !c.fixed);
    if (!plain) return tr_error("only SASRec's own models (item ids in, tied items out) are broadcast");
    dist_bcast(&c, sizeof c);
    if (dist_rank() != 0) {
        rng_t r;
        rng_seed(&r, 0);
        c.max_B = max_B;
        if (!(*m = sasrec_new(&c, &r))) return -1;
    }
    dist_bcast(sasrec_params(*m), sasrec_n_params(*m) * sizeof(float));
    return 0;
}

void dist_bcast_alloc(void **p, size_t n) {
    if (dist_size() <= 1 || n == 0) return;
    if (dist_rank() != 0) *p = tr_malloc(n);
    dist_bcast(*p, n);
}
