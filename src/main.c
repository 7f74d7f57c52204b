/* main.c: tokenrec's entry point: argv[1] picks the subcommand. */
#include <stdio.h>
#include <string.h>
int main(int argc, char **argv) { (void)argc; (void)argv; return 0; }
