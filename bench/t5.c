/* bench/t5.c: training-step throughput of the T5 model core (forward + backward + AdamW).
 *
 * Cases:
 *   d256   yardstick: T5-style encoder, d_model 256, 4 layers, 4 heads, d_ff 1024, relative
 *          bias, dropout 0.1, vocab 3000, mean-pooled into a linear head to 64, cosine
 *          embedding loss, AdamW; batch 32 x 64 tokens
 *   d512   the same at d_model 512, 6 layers, 8 heads, d_ff 2048
 *   small  the `small` preset (4+2 layers, d 256), batch 32, encoder 160, decoder 20
 * Usage: bench_t5 [--threads N] [--steps N] [--case d256|d512|small] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include "blaskernel.h"
#include "nn.h"
#include "rng.h"
#include "t5.h"
#include "util.h"

/* User + system CPU seconds of this process. */
static double cpu_seconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec * 1e-6;
}

static void run_case(const char *name, t5_config cfg, int B, int T, int steps) {
    rng_t rng; rng_seed(&rng, 1234);
    t5_model *m = t5_new(&cfg, &rng);
    if (!m) { fprintf(stderr, "bench: %s\n", tr_errmsg()); exit(1); }
    if (t5_reserve(m, B, T)) { fprintf(stderr, "bench: %s\n", tr_errmsg()); exit(1); }
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)B * T), *msk = malloc(sizeof(int32_t) * (size_t)B * T);
    int32_t *dec = malloc(sizeof(int32_t) * (size_t)(cfg.dec_len > 0 ? cfg.dec_len : 1));
    float *pos = malloc(sizeof(float) * (size_t)B * cfg.head_out), *neg = malloc(sizeof(float) * (size_t)B * cfg.head_out);
    for (int i = 0; i < B * T; i++) { ids[i] = 1 + (int)rng_below(&rng, (uint32_t)cfg.vocab - 1); msk[i] = 1; }
    for (int i = 0; i < cfg.dec_len; i++) dec[i] = (int)rng_below(&rng, (uint32_t)cfg.vocab);
    for (int i = 0; i < B * cfg.head_out; i++) { pos[i] = rng_normal(&rng); neg[i] = rng_normal(&rng); }
    t5_batch b = { B, T, ids, msk, dec, 0, pos, neg };
    adamw_cfg opt = adamw_default(1e-4f);
    float loss = 0;
    for (int s = 0; s < 2; s++) t5_train_step(m, &b, &opt, 0, &rng, &loss);     /* warm-up */
    nn_sgemm_reset();
    double t0 = tr_monotonic(), c0 = cpu_seconds();
    for (int s = 0; s < steps; s++)
        if (t5_train_step(m, &b, &opt, 0, &rng, &loss)) { fprintf(stderr, "bench: %s\n", tr_errmsg()); exit(1); }
    double dt = (tr_monotonic() - t0) / steps, cpu = (cpu_seconds() - c0) / steps;
    double gemm = nn_sgemm_seconds() / steps;
    int dl = cfg.n_dec_layers > 0 ? cfg.dec_len : 0;
    printf("%-6s d_model %d, layers %d+%d, heads %d, d_ff %d, vocab %d, params %.2fM, batch %d x %d, "
           "decoder length %d, head %s, dropout %.2g\n", name, cfg.d_model, cfg.n_enc_layers,
           cfg.n_dec_layers, cfg.n_heads, cfg.d_ff, cfg.vocab, t5_n_params(m) / 1e6, B, T, dl,
           dl ? "flatten->256->64" : "mean-pool->64", cfg.dropout);
    printf("       %.1f ms/step, %.0f tokens/s (encoder tokens), sgemm %.0f%% of the time, "
           "CPU %.0f ms/step, loss %.4f, peak RSS %.0f MiB (%d steps)\n",
           dt * 1e3, B * T / dt, 100.0 * gemm / dt, cpu * 1e3, loss, tr_peak_rss_kib() / 1024.0, steps);
    fflush(stdout);
    free(ids); free(msk); free(dec); free(pos); free(neg);
    t5_free(m);
}

int main(int argc, char **argv) {
    bk_setup(argv, 0);      /* tokenrec's kernel choice and self-check (blaskernel.h) */
    int threads = 0, steps = 10;
    const char *only = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc) steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--case") && i + 1 < argc) only = argv[++i];
        else { fprintf(stderr, "usage: bench_t5 [--threads N] [--steps N] [--case d256|d512|small]\n"); return 2; }
    }
    t5_set_threads(threads);
    char load[128] = "?";
    FILE *lf = fopen("/proc/loadavg", "r");
    if (lf) { if (!fgets(load, sizeof load, lf)) load[0] = 0; fclose(lf); load[strcspn(load, "\n")] = 0; }
    printf("bench_t5: %d cores online, %d threads (one OpenMP team; OpenBLAS single-threaded, "
           "large products split by rows), OpenBLAS kernels %s, loadavg at start %s; "
           "%d timed steps after 2 warm-up\n", tr_ncores(), nn_threads(), bk_describe(), load, steps);
    t5_config c;
    t5_preset("small", &c);
    c.vocab = 3000; c.n_dec_layers = 0; c.head_hidden = 0; c.head_out = 64; c.dropout = 0.1f;
    if (!only || !strcmp(only, "d256")) run_case("d256", c, 32, 64, steps);
    c.d_model = 512; c.n_heads = 8; c.d_kv = 64; c.d_ff = 2048; c.n_enc_layers = 6;
    if (!only || !strcmp(only, "d512")) run_case("d512", c, 32, 64, steps > 5 ? steps / 2 : steps);
    t5_preset("small", &c);
    if (!only || !strcmp(only, "small")) run_case("small", c, 32, 160, steps > 5 ? steps / 2 : steps);
    return 0;
}
