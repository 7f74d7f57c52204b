/* dist_stage: what the data-parallel stages (sasrec, evaluate) share under mpirun, on top of
 * the core's dist.h: rank 0's loaded inputs handed to every rank, and the top-K lists of
 * the users each rank scored gathered on rank 0. Single-process: every call is a no-op. */
#ifndef TOKENREC_DIST_STAGE_H
#define TOKENREC_DIST_STAGE_H
#include <stdint.h>
#include "dist.h"
#include "recmodel.h"
#include "sasrec.h"

/* Rank 0's sequences (n_users, n_items, off, seq; nothing else of rec_data) into every
 * other rank's d, which must be zeroed (it is allocated here; rec_data_free frees it). */
void dist_bcast_sequences(rec_data *d);
/* Rank 0's whole rec_data (sequences, tokens, retrieval pool, skipped users: what
 * rec_data_load fills; the users' CF vectors when loaded) into every other rank's zeroed d. */
void dist_bcast_rec_data(rec_data *d);
/* Rank 0's SASRec model *m (shape and parameters; not the causal LLM's, whose item rows
 * and fixed vectors are not sent) on every rank: the other ranks' *m (NULL on
 * entry) is built here with the largest batch max_B. Returns 0 or -1 (tr_error). */
int  dist_bcast_sasrec(sasrec_model **m, int max_B);
/* Rank 0's n bytes at *p into every rank: the other ranks' *p (NULL on entry) is allocated
 * here (n = 0: left NULL). n must be the same on every rank (dist_bcast it first). */
void dist_bcast_alloc(void **p, size_t n);

#endif
