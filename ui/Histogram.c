/* Histogram.c: bars in eighths of a cell where the terminal has UTF-8, '#' otherwise. */
#include "Histogram.h"
#include "CRT.h"
#include <stdio.h>
#include <string.h>

static const char *const eighths[9] = {"", "▏", "▎", "▍", "▌", "▋", "▊", "▉", "█"};
static const char *const levels[9] = {" ", "▁", "▂", "▃", "▄", "▅", "▆", "▇", "█"};

void Histogram_draw(int y, int x, int h, int w, const char *title, const Bins *b) {
    if (h < 2 || w < 16) return;
    CRT_print(y, x, w, CRT_colors[C_TITLE], title);
    int lw = 0, cw = 0;
    char buf[48];
    for (int i = 0; i < b->n; i++) {
        int l = (int)strlen(Bins_label(b, i, buf, sizeof buf));
        if (l > lw) lw = l;
        l = snprintf(buf, sizeof buf, "%lld", (long long)b->count[i]);
        if (l > cw) cw = l;
    }
    int bw = w - lw - cw - 3;
    if (bw < 2) return;
    for (int i = 0; i < b->n && i < h - 1; i++) {
        int row = y + 1 + i;
        CRT_printf(row, x, lw, CRT_colors[C_DIM], "%*s", lw, Bins_label(b, i, buf, sizeof buf));
        int e = b->max > 0 ? (int)((double)b->count[i] / b->max * bw * 8 + 0.5) : 0;
        if (b->count[i] > 0 && e == 0) e = 1;
        int cx = x + lw + 1;
        for (int k = 0; k < e / 8; k++) CRT_print(row, cx++, 1, CRT_colors[C_BAR], CRT_utf8 ? "█" : "#");
        if (e % 8) CRT_print(row, cx++, 1, CRT_colors[C_BAR], CRT_utf8 ? eighths[e % 8] : "#");
        CRT_printf(row, cx + 1, cw, CRT_colors[C_DEFAULT], "%lld", (long long)b->count[i]);
    }
}

void Histogram_spark(int y, int x, int w, const int64_t *counts, int n) {
    if (w <= 0 || n <= 0) return;
    if (w > n) w = n;
    int64_t mx = 0;
    for (int i = 0; i < n; i++) if (counts[i] > mx) mx = counts[i];
    for (int c = 0; c < w; c++) {
        int a = (int)((int64_t)c * n / w), b = (int)((int64_t)(c + 1) * n / w);
        int64_t m = 0;
        for (int i = a; i < b; i++) if (counts[i] > m) m = counts[i];
        int lv = mx > 0 ? (int)((double)m / mx * 8 + 0.5) : 0;
        if (m > 0 && lv == 0) lv = 1;
        if (CRT_utf8) CRT_print(y, x + c, 1, CRT_colors[lv ? C_BAR : C_ERROR], lv ? levels[lv] : "_");
        else CRT_print(y, x + c, 1, CRT_colors[lv ? C_BAR : C_ERROR], lv ? (lv > 4 ? "#" : ".") : "_");
    }
}
