/* Bins.c: histogram binning and resampling of series for charts. */
#include "Bins.h"
#include <math.h>
#include <stdio.h>
#include <string.h>

/* Bins of width ceil(range / nbins) starting at the minimum. */
void Bins_linear(Bins *b, const int64_t *v, size_t n, int nbins) {
    memset(b, 0, sizeof *b);
    if (nbins > BINS_MAX) nbins = BINS_MAX;
    if (n == 0 || nbins < 1) return;
    int64_t mn = v[0], mx = v[0];
    for (size_t i = 1; i < n; i++) { if (v[i] < mn) mn = v[i]; if (v[i] > mx) mx = v[i]; }
    int64_t range = mx - mn + 1;
    int64_t w = (range + nbins - 1) / nbins;
    b->n = (int)((range + w - 1) / w);
    for (int i = 0; i < b->n; i++) { b->lo[i] = mn + i * w; b->hi[i] = mn + (i + 1) * w - 1; }
    b->hi[b->n - 1] = mx;
    for (size_t i = 0; i < n; i++) b->count[(v[i] - mn) / w]++;
    for (int i = 0; i < b->n; i++) if (b->count[i] > b->max) b->max = b->count[i];
    b->total = (int64_t)n;
}

/* The power-of-two class of v: 0 for v < 1, else 1 + floor(log2 v). */
static int log2_class(int64_t v) {
    int k = 0;
    if (v >= 1) { k = 1; while (v > 1) { v >>= 1; k++; } }
    return k;
}

/* Classes from the minimum's to the maximum's, the last bin taking the rest when there are
 * more than nbins. */
void Bins_log2(Bins *b, const int64_t *v, size_t n, int nbins) {
    memset(b, 0, sizeof *b);
    if (nbins > BINS_MAX) nbins = BINS_MAX;
    if (n == 0 || nbins < 1) return;
    int64_t mn = v[0], mx = v[0];
    for (size_t i = 1; i < n; i++) { if (v[i] < mn) mn = v[i]; if (v[i] > mx) mx = v[i]; }
    int k0 = log2_class(mn), need = log2_class(mx) - k0 + 1;
    b->n = need < nbins ? need : nbins;
    for (int i = 0; i < b->n; i++) {
        int k = k0 + i;                 /* k = 0: values below 1; k >= 1: [2^(k-1), 2^k) */
        b->lo[i] = k == 0 ? mn : (int64_t)1 << (k - 1);
        b->hi[i] = k == 0 ? 0 : ((int64_t)1 << k) - 1;
    }
    b->lo[0] = mn;
    b->hi[b->n - 1] = mx;
    for (size_t i = 0; i < n; i++) {
        int k = log2_class(v[i]) - k0;
        b->count[k < b->n ? k : b->n - 1]++;
    }
    for (int i = 0; i < b->n; i++) if (b->count[i] > b->max) b->max = b->count[i];
    b->total = (int64_t)n;
}

const char *Bins_label(const Bins *b, int i, char *buf, size_t len) {
    if (i < 0 || i >= b->n) snprintf(buf, len, "?");
    else if (b->lo[i] == b->hi[i]) snprintf(buf, len, "%lld", (long long)b->lo[i]);
    else snprintf(buf, len, "%lld-%lld", (long long)b->lo[i], (long long)b->hi[i]);
    return buf;
}

int Bins_resample(const double *xs, const double *ys, int n, int cols, double *out) {
    if (cols <= 0 || cols > 4096) return 0;
    double sum[cols];
    int cnt[cols];
    memset(sum, 0, sizeof sum);
    memset(cnt, 0, sizeof cnt);
    double x0 = n ? xs[0] : 0, x1 = n ? xs[n - 1] : 0;
    for (int i = 0; i < n; i++) {
        if (!isfinite(ys[i])) continue;
        int c = x1 > x0 ? (int)((xs[i] - x0) / (x1 - x0) * (cols - 1) + 0.5) : 0;
        if (c < 0) c = 0;
        if (c >= cols) c = cols - 1;
        sum[c] += ys[i];
        cnt[c]++;
    }
    int filled = 0;
    for (int c = 0; c < cols; c++) {
        out[c] = cnt[c] ? sum[c] / cnt[c] : NAN;
        filled += cnt[c] > 0;
    }
    return filled;
}
