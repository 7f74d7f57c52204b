/* dist: data parallelism across processes (MPI, OpenMPI) for the training loops and
 * evaluate. The model core: no database.
 *
 * Built with -Dmpi (TOKENREC_MPI defined) and started by mpirun, dist_init joins the job:
 * dist_rank() is this process's rank, dist_size() the number of processes. Otherwise (no
 * MPI in the build, or a plain start without mpirun, which never calls MPI_Init) there is
 * one process of rank 0 and every collective below is a no-op, so callers need no #ifdef
 * and a single-process run is what it was before.
 *
 * Making a training loop data-parallel (what sasrec_fit does):
 *   - rank 0 alone opens the database, reads the inputs and dist_bcast()s them (and the
 *     state of a resumed checkpoint); every rank builds the same model from the same seed;
 *   - every rank draws the same random numbers for the global batch (order, negatives),
 *     computes the gradient of its part of the batch, then one in-place
 *     dist_allreduce_sum (each part's loss already divided by the global normaliser) or
 *     dist_allreduce_mean (each part's loss a mean over equal parts) over the flat
 *     gradient buffer, and every rank takes the same optimizer step;
 *   - rank 0 alone writes progress, checkpoints and outputs; dist_any() makes a stop
 *     request seen on any rank a stop of all at the same step;
 *   - an error on one rank that the others cannot see: dist_abort() (stops every rank).
 * Every collective must be called by every rank, in the same order. */
#ifndef TOKENREC_DIST_H
#define TOKENREC_DIST_H
#include <stddef.h>
#include <stdint.h>

/* Element types of the reductions. */
typedef enum { DIST_F32, DIST_F64, DIST_I32, DIST_I64 } dist_type;

/* Join the MPI job when started by mpirun (and built with MPI); a no-op otherwise.
 * Call once, early in main, before any thread is started. Returns 0 or -1 (tr_error). */
int  dist_init(int *argc, char ***argv);
/* Leave the job (MPI_Finalize); a no-op when dist_init did not join one. */
void dist_finalize(void);
int  dist_rank(void);           /* 0 .. dist_size() - 1; 0 without MPI */
int  dist_size(void);           /* processes of the job; 1 without MPI */
int  dist_local_size(void);     /* processes of the job on this machine; 1 without MPI */
int  dist_built(void);          /* 1 when this binary was built with MPI */
/* Threads per process when the user asked for "all cores" (0): the cores shared by the
 * processes of the job on this machine, at least 1. */
int  dist_default_threads(void);

/* In place: every rank's buf becomes the elementwise sum (mean) over the ranks. */
void dist_allreduce_sum(void *buf, size_t n, dist_type t);
void dist_allreduce_mean(float *buf, size_t n);
/* In place, to rank 0: its buf becomes the elementwise sum; the others' is left as it is. */
void dist_reduce_sum(void *buf, size_t n, dist_type t);
/* Rank 0's bytes into every rank's buf. */
void dist_bcast(void *buf, size_t bytes);
/* Rank 0's value, on every rank. */
int  dist_bcast_int(int v);
/* 1 on every rank when flag is nonzero on any rank. */
int  dist_any(int flag);
/* 1 on every rank when buf's n bytes are the same on every rank (a 64-bit hash compared). */
int  dist_same(const void *buf, size_t n);
/* Print "tokenrec: rank R of N: MESSAGE" on stderr and stop every process of the job with
 * exit status code (exit(code) without MPI). */
void dist_abort(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));

/* Gradients of a batch cut into G shards, summed the same way at any process count: this
 * rank computes shards [g0, g1) of dist_shards(); each shard's gradient is pushed in order
 * and summed pairwise in a binary tree (left + right); dist_accum_reduce then all-reduces
 * the tree's sum (one in-place all-reduce over n + n_extra floats) into out. With G a power
 * of two and the process count a power of two dividing it, the sum is the same tree at every
 * process count (bitwise with 1 and 2 processes; above 2 as far as MPI's own reduction
 * order allows). */
typedef struct {
    size_t  n, n_extra;
    int     nlev, top;
    float **lev;                /* one buffer of n + n_extra floats per tree level */
    int    *cnt;                /* shards summed in each level's buffer */
    double  seconds;            /* wall seconds in the all-reduces */
} dist_accum;
/* This rank's shards [*g0, *g1) of G (contiguous; none when G < the process count and this
 * rank is past them). */
void dist_shards(int G, int *g0, int *g1);
void dist_accum_init(dist_accum *a, size_t n, size_t n_extra, int G);
/* One shard's gradient (n floats), in shard order. */
void dist_accum_push(dist_accum *a, const float *g);
/* The sum over every rank's shards into out (n floats; zeros for a rank without shards),
 * and extra (n_extra floats, e.g. each shard's loss and target count, zero where this
 * rank has no shard) summed over the ranks in the same all-reduce. Resets for the next batch. */
void dist_accum_reduce(dist_accum *a, float *out, float *extra);
void dist_accum_free(dist_accum *a);

/* What the all-reduces of this process cost so far: calls, bytes of the buffers reduced
 * (what one rank hands in) and wall seconds inside them. */
typedef struct { int64_t calls; double bytes, seconds; } dist_stats;
void dist_get_stats(dist_stats *s);
void dist_reset_stats(void);

#endif
