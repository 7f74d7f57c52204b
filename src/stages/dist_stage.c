/* dist_stage.c: rank 0's inputs on every rank (see dist_stage.h). */
#include "dist_stage.h"
#include "util.h"
#include <stdlib.h>
#include <string.h>

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
}

int dist_bcast_sasrec(sasrec_model **m, int max_B) {
    if (dist_size() <= 1) return 0;
    sasrec_config c;
    memset(&c, 0, sizeof c);
    if (dist_rank() == 0) c = *sasrec_cfg(*m);
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
