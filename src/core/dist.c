/* dist.c: the MPI layer (see dist.h); without TOKENREC_MPI, or when not started by mpirun,
 * one process and no-op collectives. */
#include "dist.h"
#include "util.h"
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef TOKENREC_MPI
#include <mpi.h>
#endif

#ifdef TOKENREC_MPI
static int d_joined;            /* MPI_Init was called */
#endif
static int d_rank, d_size = 1, d_local = 1;
static dist_stats d_stats;

/* Was this process started by mpirun (OpenMPI's or a PMI launcher's environment)? */
static int launched_by_mpirun(void) {
    return getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMIX_RANK") || getenv("PMI_SIZE");
}

int dist_init(int *argc, char ***argv) {
#ifdef TOKENREC_MPI
    if (d_joined || !launched_by_mpirun()) return 0;
    if (MPI_Init(argc, argv) != MPI_SUCCESS) return tr_error("MPI_Init failed");
    d_joined = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &d_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &d_size);
    MPI_Comm local;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &local);
    MPI_Comm_size(local, &d_local);
    MPI_Comm_free(&local);
    return 0;
#else
    (void)argc; (void)argv;
    if (launched_by_mpirun() && getenv("OMPI_COMM_WORLD_SIZE") && atoi(getenv("OMPI_COMM_WORLD_SIZE")) > 1)
        return tr_error("started by mpirun with %s processes, but this tokenrec was built without MPI "
                        "(meson setup -Dmpi=enabled, with libopenmpi-dev installed)", getenv("OMPI_COMM_WORLD_SIZE"));
    return 0;
#endif
}

void dist_finalize(void) {
#ifdef TOKENREC_MPI
    if (d_joined) MPI_Finalize();
    d_joined = 0;
#endif
}

int dist_rank(void) { return d_rank; }
int dist_size(void) { return d_size; }
int dist_local_size(void) { return d_local; }

/* 1 when built with MPI. */
int dist_built(void) {
#ifdef TOKENREC_MPI
    return 1;
#else
    return 0;
#endif
}

int dist_default_threads(void) {
    int n = tr_ncores() / (d_local > 0 ? d_local : 1);
    return n > 0 ? n : 1;
}

#ifdef TOKENREC_MPI
/* The MPI datatype and size of a dist_type. */
static MPI_Datatype mpi_type(dist_type t, size_t *size) {
    switch (t) {
    case DIST_F64: *size = 8; return MPI_DOUBLE;
    case DIST_I32: *size = 4; return MPI_INT32_T;
    case DIST_I64: *size = 8; return MPI_INT64_T;
    default:       *size = 4; return MPI_FLOAT;
    }
}
#define CHUNK ((size_t)INT_MAX / 8)       /* elements per MPI call (counts are ints) */
#endif

/* The in-place all-reduce (sum) of n elements, in chunks of CHUNK; returns the bytes. */
static size_t allreduce_raw(void *buf, size_t n, dist_type t) {
#ifdef TOKENREC_MPI
    size_t sz;
    MPI_Datatype dt = mpi_type(t, &sz);
    for (size_t o = 0; o < n; o += CHUNK) {
        size_t k = n - o < CHUNK ? n - o : CHUNK;
        MPI_Allreduce(MPI_IN_PLACE, (char *)buf + o * sz, (int)k, dt, MPI_SUM, MPI_COMM_WORLD);
    }
    return n * sz;
#else
    (void)buf; (void)t;
    return n * 4;
#endif
}

void dist_allreduce_sum(void *buf, size_t n, dist_type t) {
    if (d_size <= 1) return;
    double t0 = tr_monotonic();
    size_t bytes = allreduce_raw(buf, n, t);
    d_stats.calls++;
    d_stats.bytes += (double)bytes;
    d_stats.seconds += tr_monotonic() - t0;
}

void dist_allreduce_mean(float *buf, size_t n) {
    if (d_size <= 1) return;
    dist_allreduce_sum(buf, n, DIST_F32);
    float s = 1.0f / (float)d_size;
    for (size_t i = 0; i < n; i++) buf[i] *= s;
}

void dist_reduce_sum(void *buf, size_t n, dist_type t) {
#ifdef TOKENREC_MPI
    if (d_size <= 1) return;
    size_t sz;
    MPI_Datatype dt = mpi_type(t, &sz);
    for (size_t o = 0; o < n; o += CHUNK) {
        size_t k = n - o < CHUNK ? n - o : CHUNK;
        char *p = (char *)buf + o * sz;
        MPI_Reduce(d_rank == 0 ? MPI_IN_PLACE : p, d_rank == 0 ? p : NULL, (int)k, dt, MPI_SUM, 0, MPI_COMM_WORLD);
    }
#else
    (void)buf; (void)n; (void)t;
#endif
}

void dist_bcast(void *buf, size_t bytes) {
#ifdef TOKENREC_MPI
    if (d_size <= 1) return;
    for (size_t o = 0; o < bytes; o += CHUNK)
        MPI_Bcast((char *)buf + o, (int)(bytes - o < CHUNK ? bytes - o : CHUNK), MPI_BYTE, 0, MPI_COMM_WORLD);
#else
    (void)buf; (void)bytes;
#endif
}

int dist_bcast_int(int v) {
    dist_bcast(&v, sizeof v);
    return v;
}

int dist_any(int flag) {
    int32_t f = flag != 0;
    if (d_size > 1) allreduce_raw(&f, 1, DIST_I32);
    return f != 0;
}

int dist_same(const void *buf, size_t n) {
    if (d_size <= 1) return 1;
    uint64_t h = 1469598103934665603ULL;          /* FNV-1a */
    const unsigned char *p = buf;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ULL;
    uint64_t h0 = h;
    dist_bcast(&h0, sizeof h0);
    return !dist_any(h != h0);
}

void dist_abort(int code, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (d_size > 1) fprintf(stderr, "tokenrec: rank %d of %d: %s; stopping every rank\n", d_rank, d_size, msg);
    else fprintf(stderr, "tokenrec: %s\n", msg);
    fflush(stderr);
#ifdef TOKENREC_MPI
    if (d_joined) MPI_Abort(MPI_COMM_WORLD, code);
#endif
    exit(code);
}

void dist_shards(int G, int *g0, int *g1) {
    *g0 = (int)((int64_t)d_rank * G / d_size);
    *g1 = (int)((int64_t)(d_rank + 1) * G / d_size);
}

void dist_accum_init(dist_accum *a, size_t n, size_t n_extra, int G) {
    memset(a, 0, sizeof *a);
    a->n = n;
    a->n_extra = n_extra;
    while ((1 << a->nlev) < G) a->nlev++;
    a->nlev += 2;
    a->lev = tr_calloc((size_t)a->nlev, sizeof *a->lev);
    a->cnt = tr_calloc((size_t)a->nlev, sizeof *a->cnt);
}

/* lev[i] += lev[i + 1] over the gradient part. */
static void accum_merge(dist_accum *a, int i) {
    float *x = a->lev[i];
    const float *y = a->lev[i + 1];
    for (size_t k = 0; k < a->n; k++) x[k] += y[k];
    a->cnt[i] += a->cnt[i + 1];
}

void dist_accum_push(dist_accum *a, const float *g) {
    if (a->top >= a->nlev) {            /* more shards than dist_accum_init's G: fold */
        accum_merge(a, a->top - 2);
        a->top--;
    }
    if (!a->lev[a->top]) a->lev[a->top] = tr_malloc((a->n + a->n_extra + 1) * sizeof(float));
    memcpy(a->lev[a->top], g, a->n * sizeof(float));
    a->cnt[a->top++] = 1;
    while (a->top >= 2 && a->cnt[a->top - 1] == a->cnt[a->top - 2]) {
        accum_merge(a, a->top - 2);
        a->top--;
    }
}

void dist_accum_reduce(dist_accum *a, float *out, float *extra) {
    while (a->top >= 2) {               /* a run of shards that is not a power of two */
        accum_merge(a, a->top - 2);
        a->top--;
    }
    if (!a->lev[0]) a->lev[0] = tr_malloc((a->n + a->n_extra + 1) * sizeof(float));
    float *buf = a->lev[0];
    if (a->top == 0) memset(buf, 0, a->n * sizeof(float));
    if (a->n_extra) memcpy(buf + a->n, extra, a->n_extra * sizeof(float));
    double t0 = tr_monotonic();
    dist_allreduce_sum(buf, a->n + a->n_extra, DIST_F32);
    a->seconds += tr_monotonic() - t0;
    memcpy(out, buf, a->n * sizeof(float));
    if (a->n_extra) memcpy(extra, buf + a->n, a->n_extra * sizeof(float));
    a->top = 0;
}

void dist_accum_free(dist_accum *a) {
    for (int i = 0; i < a->nlev; i++) free(a->lev[i]);
    free(a->lev);
    free(a->cnt);
    memset(a, 0, sizeof *a);
}

void dist_get_stats(dist_stats *s) { *s = d_stats; }
void dist_reset_stats(void) { memset(&d_stats, 0, sizeof d_stats); }
