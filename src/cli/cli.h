/* cli: the one option parser. Every subcommand describes its options in a table of cli_opt;
 * cli_parse fills the destinations, prints --help, and cli_params_json turns the options
 * that change a stage's result into the canonical JSON that the stage runner fingerprints. */
#ifndef TOKENREC_CLI_H
#define TOKENREC_CLI_H
#include <stdio.h>

typedef enum { CLI_INT, CLI_FLOAT, CLI_STR, CLI_FLAG, CLI_END } cli_type;

typedef struct {
    const char *name;   /* long name without "--"; NULL ends the table */
    cli_type    type;
    void       *dest;   /* int* (INT, FLAG), double* (FLOAT), const char ** (STR) */
    const char *help;   /* one line; the current value of dest is shown as the default */
    int         param;  /* 1: affects the result, so it goes into the params JSON */
} cli_opt;

#define CLI_OPT_END { NULL, CLI_END, NULL, NULL, 0 }

/* The rows every stage command's table has; none is a parameter of the run, so where they
 * stand in a table does not change its params JSON. */
#define CLI_OPTS_DB(db, dataset) \
    {"db", CLI_STR, (db), "database file", 0}, \
    {"dataset", CLI_STR, (dataset), "dataset (default: the only or the latest ingested)", 0}
#define CLI_OPTS_RUN(threads, force, quiet) \
    {"threads", CLI_INT, (threads), "threads (0: all cores)", 0}, \
    {"force", CLI_FLAG, (force), "run again even if an up-to-date run exists", 0}, \
    {"quiet", CLI_FLAG, (quiet), "no progress lines or summary", 0}

/* The one --seed default of every stage and of `tokenrec run`. Each stage draws from its own
 * streams of the seed (rng_stream), so one seed never gives two stages the same draws. */
#define CLI_SEED_DEFAULT 42
/* A stage's params marker that its streams are the named stream of --seed (cf, tokenize):
 * runs made when those stages seeded from --seed directly keep other fingerprints. */
#define CLI_SEED_STREAM(json, stage) cli_json_append((json), "\"seed-stream\":\"%s\"", (stage))

/* Parse argv[1..argc-1] against opts (argv[0] is the subcommand name).
 * Accepts --name value, --name=value, and --name for flags; -h and --help print help.
 * Returns 0 on success, 1 if help was printed, -1 on error (message in tr_errmsg()). */
int  cli_parse(int argc, char **argv, const cli_opt *opts, const char *usage,
               const char *summary);
/* cli_parse for a command whose only options are --db and --dataset (info, ui); dataset_help
 * says what its --dataset picks. */
int  cli_parse_db(int argc, char **argv, const char *usage, const char *summary, const char **db,
                  const char **dataset, const char *dataset_help);
void cli_help(FILE *f, const char *usage, const char *summary, const cli_opt *opts);

/* Canonical JSON object of the options with param = 1, in table order. Caller frees. */
char *cli_params_json(const cli_opt *opts);
/* The JSON object json (freed here) with the printf-formatted members fmt ("\"k\":v,...")
 * added at its end: for settings that enter the params only when they are used, so that
 * runs without them keep their fingerprints. Caller frees the result. */
char *cli_json_append(char *json, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
