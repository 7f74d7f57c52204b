/* main.c: tokenrec's entry point. argv[1] picks the subcommand; errors are printed here. */
#include "blaskernel.h"
#include "cf.h"
#include "dist.h"
#include "evaluate.h"
#include "finetune.h"
#include "info.h"
#include "report.h"
#include "run.h"
#include "sasrec_stage.h"
#include "ingest.h"
#include "stage.h"
#include "tokenize.h"
#include "util.h"
#include "../../ui/ui.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *help;
    int dist;                   /* runs data-parallel under mpirun -np N > 1 */
} command;

static const command commands[] = {
    {"ingest", cmd_ingest, "read a dataset, k-core filter, leave-one-out split", 0},
    {"cf", cmd_cf, "LightGCN/MF collaborative filtering", 0},
    {"tokenize", cmd_tokenize, "MQ-Tokenizer: K tokens per user and item", 0},
    {"finetune", cmd_finetune, "train the recommender on ID tokens (the causal LLM, or --arch t5)", 1},
    {"sasrec", cmd_sasrec, "the SASRec baseline: causal transformer over item ids", 1},
    {"evaluate", cmd_evaluate, "generative retrieval and baselines: HR@K, NDCG@K", 1},
    {"report", cmd_report, "every method's metrics on every dataset (Markdown or CSV)", 0},
    {"run", cmd_run, "every stage in order, skipping what is done, resuming what was stopped", 0},
    {"info", cmd_info, "dataset statistics and the state of every stage", 0},
    {"ui", ui_main, "the ncurses dashboard", 0},
};

static void usage(FILE *f) {
    fprintf(f, "usage: tokenrec COMMAND [options]   (tokenrec COMMAND --help for its options)\n\n"
               "TokenRec (Qu et al. 2024) in C: LLM-based generative recommendation on a CPU.\n\n"
               "commands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].help);
    fprintf(f, "\nThe database is tokenrec.db unless --db FILE is given.\n");
}

/* OpenMP threads that wait spin for a long time by default (libgomp reads its settings
 * before main), which costs up to 10x when the cores are shared with another process. Unless
 * the user chose a policy, ask for a short spin before sleeping; returns 1 when the program
 * must re-execute for it to apply (bk_setup does, once, with its own choice). */
static int tame_openmp_spinning(void) {
    if (getenv("OMP_WAIT_POLICY") || getenv("GOMP_SPINCOUNT")) return 0;
    setenv("GOMP_SPINCOUNT", "10000", 1);
    return 1;
}

int main(int argc, char **argv) {
    bk_setup(argv, tame_openmp_spinning());    /* may re-execute; see blaskernel.h */
    stage_set_blas(bk_describe());
    if (argc < 2) { usage(stderr); return 2; }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) { printf("tokenrec 0.1.0\n"); return 0; }
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++) {
        if (strcmp(argv[1], commands[i].name)) continue;
        if (dist_init(&argc, &argv) != 0) {
            fprintf(stderr, "tokenrec %s: error: %s\n", argv[1], tr_errmsg());
            return 1;
        }
        if (dist_size() > 1 && !commands[i].dist) {
            if (dist_rank() == 0)
                fprintf(stderr, "tokenrec %s: error: does not run under mpirun with %d processes; "
                                "only finetune, sasrec and evaluate do (run it without mpirun)\n", argv[1], dist_size());
            dist_finalize();
            return 1;
        }
        stage_install_signals();
        int rc = commands[i].fn(argc - 1, argv + 1);
        if (rc < 0) {
            /* under mpirun the other ranks wait in a collective: stop them all */
            if (dist_size() > 1) dist_abort(1, "tokenrec %s: error: %s", argv[1], tr_errmsg());
            fprintf(stderr, "tokenrec %s: error: %s\n", argv[1], tr_errmsg());
            return 1;
        }
        dist_finalize();
        return rc;
    }
    fprintf(stderr, "tokenrec: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
