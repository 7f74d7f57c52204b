/* Screen.c: what every screen shares: its allocation from its class. */
#include "Screen.h"
#include <string.h>

void *Screen_alloc(const Screen *cls, size_t size) {
    Screen *s = tr_calloc(1, size);
    memcpy(s, cls, sizeof *s);
    return s;
}
