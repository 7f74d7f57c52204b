/* ui.c: entry point of the dashboard. The screens are being built (issue 8). */
#include "ui.h"
#include <stdio.h>

int ui_main(int argc, char **argv) {
    (void)argc; (void)argv;
    fprintf(stderr, "tokenrec ui: the dashboard is not built yet\n");
    return 2;
}
