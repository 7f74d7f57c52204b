/* Histogram: horizontal bars, one row per bin ("4-7  ████████▌   123"), and a one-line
 * sparkline for distributions over many categories (codebook usage). */
#ifndef TOKENREC_UI_HISTOGRAM_H
#define TOKENREC_UI_HISTOGRAM_H
#include "Bins.h"
/* Title line, then up to h-1 bins in w columns. */
void Histogram_draw(int y, int x, int h, int w, const char *title, const Bins *b);
/* counts[0..n) as w columns of ▁..█ (the maximum of each column's categories). */
void Histogram_spark(int y, int x, int w, const int64_t *counts, int n);
#endif
