/* finetune_opts: the settings of a `tokenrec finetune` run, shared by its two architectures:
 * the T5 encoder-decoder (finetune.c, TokenRec's own) and the causal decoder
 * (finetune_causal.c, --arch causal). Options left at -1 (or NULL) take the architecture's
 * default (ft_defaults_t5, causal_defaults). */
#ifndef TOKENREC_FINETUNE_OPTS_H
#define TOKENREC_FINETUNE_OPTS_H
#include "stage.h"

typedef struct {
    const char *dbpath, *dataset, *preset, *loss, *pool, *score, *init_from, *tokenizer, *objective, *hist_order;
    const char *arch, *item_input, *id_init, *token_init, *lr_schedule;
    int seed, threads, epochs, batch, warmup, hist, min_hist, max_pos, patience, ckpt_every, beam;
    int eval_batch, d_model, n_heads, d_ff, enc_layers, dec_layers, dec_len, faithful, force, quiet;
    int negatives, eval_every;
    int shards;                 /* > 1: batches cut in shards, what mpirun -np N splits (dist.h) */
    double lr, wd, clip, dropout, temperature;
    double token_drop;          /* causal, tokens+id: training drops an item's token rows */
    int user_target;            /* causal: 1 the user position predicts the first train item, 0 not */
    int user_prefix;            /* causal: 1 the sequence opens with the user's tokens, 0 the items alone */
    const char *user_input;     /* causal: the user position sums its tokens, or tokens+id (plus its own row) */
    const char *ties;           /* causal: training keeps runs of tied timestamps in file order, or shuffles them */
    const char *cf_blend;       /* causal: the CF prior's weight in the ranking, a number or "auto" (valid picks) */
} ft_opts;

/* --arch causal: the dataset's defaults for the options left unset, then their checks;
 * -1 with tr_error on a bad value. */
int causal_defaults(ft_opts *o, const char *dataset);
/* --cf-blend's value: the weight in [0,1), -1 for "auto", -2 for anything else. */
double causal_cf_blend_parse(const char *s);
/* The per-dataset defaults table of --arch causal, for --help. */
void causal_defaults_text(char *buf, size_t n);
/* Under mpirun: rank 0's settings of a causal run (after causal_defaults) on every rank;
 * the other ranks' string settings other than pool, item_input, user_input, id_init,
 * token_init, lr_schedule, ties and cf_blend become NULL. */
void causal_opts_bcast(ft_opts *o);
/* The run's work after stage_begin (as finetune's): 0, 130 when stopped, or -1. Under
 * mpirun every rank calls it; the ranks other than 0 with run NULL (they get rank 0's data
 * and write nothing). */
int finetune_causal_run(stage_run *run, const ft_opts *o);

#endif
