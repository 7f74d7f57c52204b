/* Meter.c: the progress bar. The text sits inside the bar, right-aligned, as in htop. */
#include "Meter.h"
#include "CRT.h"
#include "Format.h"
#include <string.h>

void Meter_draw(int y, int x, int w, double p, int attr) {
    if (w < 8) return;
    int inner = w - 2;
    char pct[16];
    Format_progress(p, pct, sizeof pct);
    int filled = Format_barCells(p, inner);
    int tl = (int)strlen(pct);
    CRT_print(y, x, 1, CRT_colors[C_DIM], "[");
    for (int i = 0; i < inner; i++) {
        int t = i - (inner - tl);
        char c[2] = {t >= 0 ? pct[t] : (i < filled ? '|' : ' '), 0};
        int a = t >= 0 ? (i < filled ? attr : CRT_colors[C_DIM]) : (i < filled ? attr : CRT_colors[C_BAR_EMPTY]);
        CRT_print(y, x + 1 + i, 1, a, c);
    }
    CRT_print(y, x + w - 1, 1, CRT_colors[C_DIM], "]");
}
