/* Bins: histogram binning and chart resampling, without ncurses, so they can be tested. */
#ifndef TOKENREC_UI_BINS_H
#define TOKENREC_UI_BINS_H
#include <stddef.h>
#include <stdint.h>

#define BINS_MAX 64

/* Bin b holds the values lo[b] <= v <= hi[b] (integers). */
typedef struct {
    int     n;                      /* number of bins */
    int64_t lo[BINS_MAX], hi[BINS_MAX];
    int64_t count[BINS_MAX];
    int64_t max;                    /* largest count, for scaling bars */
    int64_t total;
} Bins;

/* Equal-width integer bins over [min, max] of the values, at most nbins of them (fewer when
 * the range is narrower than nbins: then every bin is one value wide). */
void Bins_linear(Bins *b, const int64_t *v, size_t n, int nbins);
/* Powers of two, 1, 2-3, 4-7, 8-15, ..., from the class of the minimum to that of the
 * maximum (values below 1 form one bin), for long tails such as item popularity. At most
 * nbins; the last bin takes everything above. The first bin starts at the minimum. */
void Bins_log2(Bins *b, const int64_t *v, size_t n, int nbins);
/* "4-7" or "12" */
const char *Bins_label(const Bins *b, int i, char *buf, size_t len);

/* Resample a series (xs ascending) to cols columns over [xs[0], xs[n-1]]: out[c] is the mean
 * of the ys whose x falls into column c, or NAN when none does. Returns the number of
 * non-empty columns. */
int Bins_resample(const double *xs, const double *ys, int n, int cols, double *out);

#endif
