/* FunctionBar.c: key in bold, label on the bar's colour, as htop draws its F-keys. */
#include "FunctionBar.h"
#include "CRT.h"

void FunctionBar_draw(const FunctionKey *keys, int y, int w) {
    CRT_fill(y, 0, w, CRT_colors[C_KEY_LABEL]);
    int x = 0;
    for (const FunctionKey *k = keys; k && k->key && x < w; k++) {
        x += CRT_print(y, x, w - x, CRT_colors[C_KEY], k->key);
        x += CRT_printf(y, x, w - x, CRT_colors[C_KEY_LABEL], " %s  ", k->label);
    }
}
