/* finetune_causal.c: `tokenrec finetune --arch causal`, the causal ID-token LLM: a decoder
 * over one sequence per user (the user's tokens unless --user-prefix 0, then each train
 * item's tokens), every train target trained in one pass (sasrec_fit's windows), kept by
 * valid HR@10, stored in `models` (causalrec.h). */
#include "causalrec.h"
#include "cli.h"
#include "dist_stage.h"
#include "finetune.h"
#include "finetune_opts.h"
#include "sasrec_fit.h"
#include "util.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Each dataset's defaults for --arch causal (README, "The causal LLM"): pool, item input and
 * (LastFM) d 128 chosen by valid HR@10 on LastFM; the training settings are those SASRec's
 * valid runs chose on the same data (the same stack: ML-1M's 512 negatives, batch 16 and
 * dropout 0.2, the epoch caps as the time budget). Clothing's 512
 * negatives and lr 2e-3: the best valid HR@10 of 256, 512, 1,024 and 2,048 negatives and a
 * full softmax, lr 2e-3 and 3e-3, d 64 and 128 (fewer negatives train faster and, down to
 * 512, better); 100 epochs its cap then (30 without the user position, below). The items'
 * own rows start from the CF vectors (id-init cf) where valid HR@10 chose them over random
 * rows: LastFM, Beauty and Clothing
 * (and so a dataset not listed); on ML-1M a tie at the default 2 threads (0.2919 against
 * 0.2921), so it keeps random rows. With them Beauty's best lr of 2e-3, 1e-3 and 5e-4 is
 * 5e-4 (still rising slowly at 70 epochs, the time budget, 13 s an epoch alone), and its item
 * token rows start from the CF vectors too (token-init cf: 0.1124 against 0.1115; on LastFM
 * and Clothing it lost). Token dropout lost everywhere it was tried (Beauty, Clothing). The
 * cosine schedule over the epoch cap (--lr-schedule) won on Beauty at lr 1e-3 (0.1141 against
 * 0.1124 at a constant 5e-4; lr 2e-3 and a 100-epoch cap lost), on Clothing (0.0351
 * against 0.0349) and on ML-1M (0.2947 against 0.2921), lost on LastFM (0.1239 against 0.1431).
 * The user token rows from the users' CF vectors (--token-init users, cf+users) lost on
 * LastFM and Beauty. On Beauty the user position trains better as context alone
 * (--user-target 0: 0.1152 against 0.1141; on Clothing 0.0342 against 0.0351, and LastFM
 * behind from epoch 20), and better still left out (--user-prefix 0, the items alone:
 * Beauty 0.1188, Clothing 0.0368). ML-1M keeps it: a tie over two seeds (0.2952 and 0.2952
 * without, 0.2945 and 0.2974 with); LastFM lost without it (0.1257 against 0.1431) and
 * keeps the user's tokens, as the first row does.
 * Without the user position Beauty and Clothing peak sooner: their epoch caps (the cosine's
 * length) 50 (0.1191 against 0.1188 at 70) and 30 (0.0381, 40 0.0381, 100 0.0368).
 * Shuffling the runs of tied timestamps (--ties shuffle; of the shipped data only LastFM has timestamps)
 * lost on valid over three seeds (mean 0.1003 against 0.1257). Ranking with a CF prior
 * chosen on valid after training (--cf-blend auto) won on LastFM (three seeds, per tie
 * group: mean valid 0.1330 against 0.1257 for the model alone), Clothing (0.0388 against
 * 0.0381) and ML-1M (0.3022 against 0.2945), and so a dataset not listed has it too; on
 * Beauty valid picked weight 0 (0.1191 against 0.1189 at 0.1), so it ranks by the model
 * alone and skips the ten valid rankings. A dataset not listed gets the first row's. */
typedef struct {
    const char *dataset;
    int    d, blocks, heads, hist, negatives, batch, epochs, eval_every, patience;
    double dropout, lr;
    const char *pool, *input, *id_init, *token_init;
    double token_drop;
    const char *lr_schedule;
    int user_target, user_prefix;
    const char *user_input;
    const char *ties, *cf_blend;
} causal_preset;

static const causal_preset presets[] = {
    /* dataset    d   blk hd hist neg   batch ep   eval pat drop lr     pool      input        id-init   token-init token-drop lr-schedule user-target user-prefix user-input ties cf-blend */
    {"other",     64, 2,  1, 50,  0,    128,  200, 5,   3,  0.5, 2e-3, "tokens", "tokens+id", "cf", "random", 0,          "constant", 1, 1, "tokens", "keep", "auto"},
    {"lastfm",    128, 2, 2, 50,  0,    128,  200, 5,   3,  0.5, 2e-3, "tokens", "tokens+id", "cf", "random", 0,          "constant", 1, 1, "tokens", "keep", "auto"},
    {"beauty",    64, 2,  1, 50,  0,    128,  50,  5,   3,  0.5, 1e-3, "tokens", "tokens+id", "cf", "cf",     0,          "cosine",   0, 0, "tokens", "keep", "0"},
    {"clothing",  64, 2,  1, 50,  512,  128,  30,  5,   3,  0.5, 2e-3, "tokens", "tokens+id", "cf", "random", 0,          "cosine",   1, 0, "tokens", "keep", "auto"},
    {"ml-1m",     64, 2,  1, 200, 512,  16,   45,  3,   3,  0.2, 2e-3, "tokens", "tokens+id", "random", "random", 0,        "cosine",   1, 1, "tokens", "keep", "auto"},
};

/* --token-init's values: which token rows start from the CF vectors, a bit each: 1 the
 * items', 2 the users' (0: none, all random). */
enum { TOKEN_INIT_ITEMS = 1, TOKEN_INIT_USERS = 2 };
static const char *const token_init_names[] = {"random", "cf", "users", "cf+users"};
static int token_init_parse(const char *s) {
    for (int i = 0; i < 4; i++) if (!strcmp(s, token_init_names[i])) return i;
    return -1;
}

/* The preset of a dataset (the first row when it has none). */
static const causal_preset *preset_for(const char *dataset) {
    for (size_t i = 1; i < sizeof presets / sizeof *presets; i++)
        if (!strcmp(presets[i].dataset, dataset)) return &presets[i];
    return &presets[0];
}

int finetune_causal_epochs(const char *dataset) { return preset_for(dataset)->epochs; }

void causal_defaults_text(char *buf, size_t n) {
    size_t o = (size_t)snprintf(buf, n,
        "--arch causal defaults per dataset (an option given on the command line wins):\n"
        "  dataset    d-model layers heads hist negatives batch epochs eval-every patience dropout lr      pool    item-input id-init token-init token-drop lr-schedule user-target user-prefix user-input ties    cf-blend\n");
    for (size_t i = 0; i < sizeof presets / sizeof *presets && o < n; i++) {
        const causal_preset *p = &presets[i];
        char uin[16];
        snprintf(uin, sizeof uin, p->user_prefix ? "%s" : "(%s)", p->user_input);
        o += (size_t)snprintf(buf + o, n - o, "  %-10s %-7d %-6d %-5d %-4d %-9d %-5d %-6d %-10d %-8d %-7.2g %-7.2g %-7s %-10s %-7s %-10s %-10g %-11s %-11s %-11d %-10s %-7s %s\n",
                              p->dataset, p->d, p->blocks, p->heads, p->hist, p->negatives, p->batch, p->epochs,
                              p->eval_every, p->patience, p->dropout, p->lr, p->pool, p->input, p->id_init, p->token_init, p->token_drop,
                              p->lr_schedule, p->user_prefix ? (p->user_target ? "1" : "0") : (p->user_target ? "(1)" : "(0)"),
                              p->user_prefix, uin, p->ties, p->cf_blend);
    }
    o += (size_t)snprintf(buf + o, n > o ? n - o : 0, "  (user-target and user-input in brackets: the values with "
                                                      "--user-prefix 1 where the default has no user position)\n");
    if (o > 0 && o < n && buf[o - 1] == '\n') buf[o - 1] = 0;
}

int causal_defaults(ft_opts *o, const char *dataset) {
    const causal_preset *p = preset_for(dataset);
    if (o->d_model <= 0) o->d_model = p->d;
    if (o->enc_layers <= 0) o->enc_layers = p->blocks;
    if (o->n_heads <= 0) o->n_heads = p->heads;
    if (o->hist < 0) o->hist = p->hist;
    if (o->negatives < 0) o->negatives = p->negatives;
    if (o->batch < 0) o->batch = p->batch;
    if (o->epochs < 0) o->epochs = p->epochs;
    if (o->eval_every < 0) o->eval_every = p->eval_every;
    if (o->patience < 0) o->patience = p->patience;
    if (o->dropout < 0) o->dropout = p->dropout;
    if (o->lr < 0) o->lr = p->lr;
    if (o->wd < 0) o->wd = 0;
    if (!o->pool) o->pool = p->pool;
    if (!o->item_input) o->item_input = p->input;
    if (!o->id_init) o->id_init = p->id_init;
    if (!o->token_init) o->token_init = p->token_init;
    if (!o->lr_schedule) o->lr_schedule = p->lr_schedule;
    if (!o->ties) o->ties = p->ties;
    if (!o->cf_blend) o->cf_blend = p->cf_blend;
    if (causal_cf_blend_parse(o->cf_blend) < -1)
        return tr_error("--cf-blend: expected auto (the weight valid HR@10 picks) or a weight in [0,1), got '%s'",
                        o->cf_blend);
    if (strcmp(o->ties, "keep") && strcmp(o->ties, "shuffle"))
        return tr_error("--ties: expected keep (runs of equal timestamps in their stored order) or shuffle (permuted "
                        "every epoch), got '%s'", o->ties);
    int given_prefix = o->user_prefix != -1;
    if (o->user_prefix == -1) o->user_prefix = p->user_prefix;
    else if (o->user_prefix != 0 && o->user_prefix != 1)
        return tr_error("--user-prefix: expected 1 (each sequence opens with the user's tokens), 0 (the items alone) "
                        "or -1 (the dataset's), got %d", o->user_prefix);
    if (!o->user_prefix && o->user_target != -1)
        return tr_error("--user-target %d: with --user-prefix 0 (%s) there is no user position to train; give "
                        "--user-prefix 1 to keep it", o->user_target, given_prefix ? "given" : "the dataset's default");
    if (o->user_target == -1) o->user_target = o->user_prefix ? p->user_target : 1;   /* 1: no effect */
    int given_uin = o->user_input != NULL;
    if (!o->user_input) o->user_input = o->user_prefix ? p->user_input : "tokens";
    if (causal_input_parse(o->user_input) < 0)
        return tr_error("--user-input: expected tokens or tokens+id, got '%s'", o->user_input);
    if (!o->user_prefix && given_uin)
        return tr_error("--user-input %s: with --user-prefix 0 (%s) there is no user position; give --user-prefix 1 "
                        "to keep it", o->user_input, given_prefix ? "given" : "the dataset's default");
    if (o->user_target != 0 && o->user_target != 1)
        return tr_error("--user-target: expected 1 (the user position predicts the first train item), 0 (it does not) "
                        "or -1 (the dataset's), got %d", o->user_target);
    if (o->token_drop == -1) o->token_drop = p->token_drop;
    else if (o->token_drop < 0 || o->token_drop > 1)
        return tr_error("--token-drop: expected a probability in [0,1] (or -1: the dataset's), got %g", o->token_drop);
    if (!strcmp(o->pool, "mean")) o->pool = "cf";    /* the CF vectors finetune's T5 is scored on */
    if (causal_pool_parse(o->pool) < 0)
        return tr_error("--pool: expected cf, learned, tokens or id with --arch causal, got '%s'", o->pool);
    if (causal_input_parse(o->item_input) < 0)
        return tr_error("--item-input: expected tokens or tokens+id, got '%s'", o->item_input);
    if (o->token_drop > 0 && causal_input_parse(o->item_input) != CAUSAL_IN_TOKENS_ID)
        return tr_error("--token-drop %g drops an item's token rows and keeps its own row: it needs --item-input "
                        "tokens+id (got --item-input %s)", o->token_drop, o->item_input);
    if (causal_sides_check(causal_pool_parse(o->pool), causal_input_parse(o->item_input)) != 0) return -1;
    if (strcmp(o->id_init, "cf") && strcmp(o->id_init, "random"))
        return tr_error("--id-init: expected cf or random, got '%s'", o->id_init);
    if (token_init_parse(o->token_init) < 0)
        return tr_error("--token-init: expected cf, users, cf+users or random, got '%s'", o->token_init);
    if (!o->user_prefix && (token_init_parse(o->token_init) & TOKEN_INIT_USERS))
        return tr_error("--token-init %s starts the user token rows, which --user-prefix 0 (%s) leaves out; give "
                        "--user-prefix 1 to keep them", o->token_init, given_prefix ? "given" : "the dataset's default");
    if (sasrec_lr_schedule_parse(o->lr_schedule) < 0)
        return tr_error("--lr-schedule: expected constant or cosine, got '%s'", o->lr_schedule);
    if (o->shards > o->batch)
        return tr_error("--shards %d is more than the batch (%d sequences)", o->shards, o->batch);
    if (o->d_model > 4096 || o->d_model % o->n_heads || o->enc_layers > 64 || o->hist < 1 || o->hist > 1024 ||
        o->batch < 1 || o->batch > 4096 || o->epochs < 1 || o->eval_every < 1 || o->patience < 1 ||
        o->dropout >= 1 || o->lr <= 0 || o->negatives > 100000 || o->eval_batch < 1)
        return tr_error("--arch causal: expected --d-model up to 4096 divisible by --heads, --layers up to 64, --hist "
                        "in 1..1024, --batch in 1..4096, positive --epochs, --eval-every, --patience, --lr and "
                        "--eval-batch, --dropout in [0,1), --negatives up to 100000");
    return 0;
}

void causal_opts_bcast(ft_opts *o) {
    if (dist_size() < 2) return;
    int pool = dist_bcast_int(dist_rank() ? 0 : causal_pool_parse(o->pool));
    int in = dist_bcast_int(dist_rank() ? 0 : causal_input_parse(o->item_input));
    int uin = dist_bcast_int(dist_rank() ? 0 : causal_input_parse(o->user_input));
    int cf = dist_bcast_int(dist_rank() ? 0 : !strcmp(o->id_init, "cf"));
    int tcf = dist_bcast_int(dist_rank() ? 0 : token_init_parse(o->token_init));
    int cosine = dist_bcast_int(dist_rank() ? 0 : sasrec_lr_schedule_parse(o->lr_schedule));
    int shuffle = dist_bcast_int(dist_rank() ? 0 : !strcmp(o->ties, "shuffle"));
    double blend = dist_rank() ? 0 : causal_cf_blend_parse(o->cf_blend);
    dist_bcast(&blend, sizeof blend);
    ft_opts r = *o;
    dist_bcast(&r, sizeof r);
    if (dist_rank() == 0) return;
    *o = r;                             /* rank 0's pointers mean nothing here */
    o->dbpath = o->dataset = o->preset = o->loss = o->score = o->init_from = o->tokenizer = NULL;
    o->objective = o->hist_order = o->arch = NULL;
    o->pool = causal_pool_name(pool);
    o->item_input = causal_input_name(in);
    o->user_input = causal_input_name(uin);
    o->id_init = cf ? "cf" : "random";
    o->token_init = token_init_names[tcf];
    o->lr_schedule = cosine ? "cosine" : "constant";
    o->ties = shuffle ? "shuffle" : "keep";
    static char blend_s[32];            /* one finetune per process */
    snprintf(blend_s, sizeof blend_s, "%.17g", blend);
    o->cf_blend = blend < 0 ? "auto" : blend_s;
}

double causal_cf_blend_parse(const char *s) {
    if (!strcmp(s, "auto")) return -1;
    char *end;
    double v = strtod(s, &end);
    return end != s && !*end && v >= 0 && v < 1 ? v : -2;
}

/* What starts from the CF vectors (sasrec_fit's init hook): pool learned's output table,
 * with --id-init cf the items' own input rows (and the users', --user-input tokens+id:
 * user_own), with --token-init cf the item token rows, users the user token rows, cf+users
 * both (tokens: TOKEN_INIT_* bits). */
typedef struct { const rec_data *d; const causal_rows *r; int table, own_rows, user_own, tokens; } cf_start;
static void init_from_cf(sasrec_model *m, void *ctx) {
    const cf_start *c = ctx;
    if (c->table) causal_init_learned(m, c->d);
    if (c->own_rows) causal_init_id_rows(m, c->d, c->r);
    if (c->user_own) causal_init_user_id_rows(m, c->d, c->r);
    if (c->tokens & TOKEN_INIT_ITEMS) causal_init_token_rows(m, c->d, c->r);
    if (c->tokens & TOKEN_INIT_USERS) causal_init_user_token_rows(m, c->d, c->r);
}

/* The valid and test metrics of the kept model (every rank under mpirun: the ranking is
 * shared out). */
static int rank_splits(sasrec_model *m, const rec_data *d, const causal_rows *r, const sasrec_blend *bl,
                       const ft_opts *o, retr_metrics *vm, retr_metrics *tm) {
    int ks[3] = {10, 20, 30};
    retr_metrics_init(vm, 3, ks);
    retr_metrics_init(tm, 3, ks);
    return sasrec_rank(m, d, r->user_rows, bl, 1, o->eval_batch, 1, vm, 0, NULL, NULL) != 0 ||
           sasrec_rank(m, d, r->user_rows, bl, 2, o->eval_batch, 1, tm, 0, NULL, NULL) != 0 ? -1 : 0;
}

/* --cf-blend auto: for each group of users (with d->tied two: those whose last train item
 * is tied to the one before it, and the rest; without, one) the weight of 0, 0.1, ..., 0.9
 * with the best valid HR@10 (the smallest on a tie) into w[0] (bl's alpha: the untied users,
 * or everyone) and w[1] (alpha_tied), the rest of bl as given. Logged per
 * weight (step 10 x weight): "cf_blend_valid_hr@10" over every user (one weight for all),
 * and with ties "cf_blend_valid_hr@10_tied" / "_new" per group. A given weight is kept for
 * both groups. Returns 0 or -1. */
static int pick_blend(stage_run *run, sasrec_model *m, const rec_data *d, const causal_rows *r, const ft_opts *o,
                      const sasrec_blend *bl, double w[2]) {
    double given = causal_cf_blend_parse(o->cf_blend);
    if (given >= 0) { w[0] = w[1] = given; return 0; }
    int G = d->tied ? 2 : 1;
    double hits[2][10] = {{0}}, best[2] = {-1, -1};
    long n[2] = {0, 0};
    int pick[2] = {0, 0};
    rec_data dg = *d;                   /* d with the other group skipped */
    dg.skip = tr_malloc((size_t)d->n_users);
    for (int g = 0; g < G; g++) {
        for (int32_t u = 0; u < d->n_users; u++)
            dg.skip[u] = (d->skip && d->skip[u]) || (G == 2 && sasrec_last_tied(d, u, 1) != g);
        int ks[1] = {10};
        float weights[10];
        retr_metrics vm[10];
        for (int k = 0; k < 10; k++) {
            weights[k] = (float)(k / 10.0);
            retr_metrics_init(&vm[k], 1, ks);
        }
        if (sasrec_rank_grid(m, &dg, r->user_rows, bl, 1, o->eval_batch, 1, weights, 10, vm) != 0) {
            free(dg.skip);
            return -1;
        }
        for (int k = 0; k < 10; k++) {
            hits[g][k] = vm[k].hr[0];
            n[g] = vm[k].n;
            if (vm[k].hr[0] > best[g]) { best[g] = vm[k].hr[0]; pick[g] = k; }
        }
    }
    free(dg.skip);
    w[0] = pick[0] / 10.0;
    w[1] = pick[G - 1] / 10.0;
    char line[3][512];
    static const char *const names[3] = {"cf_blend_valid_hr@10", "cf_blend_valid_hr@10_new", "cf_blend_valid_hr@10_tied"};
    for (int s = 0; s < (G == 2 ? 3 : 1); s++) {
        size_t pos = 0;
        line[s][0] = 0;
        for (int k = 0; k < 10; k++) {
            double h = s ? hits[s - 1][k] : hits[0][k] + (G == 2 ? hits[1][k] : 0);
            long nn = s ? n[s - 1] : n[0] + (G == 2 ? n[1] : 0);
            double hr = nn ? h / nn : 0;
            if (run) stage_metric(run, k, names[s], hr);
            pos += (size_t)snprintf(line[s] + pos, sizeof line[s] - pos, " %.1f:%.4f", k / 10.0, hr);
        }
    }
    if (run && !o->quiet) {
        fprintf(stderr, "[finetune] %s: CF blend, valid HR@10 by weight:%s\n", run->dataset, line[0]);
        if (G == 2)
            fprintf(stderr, "[finetune] %s:   users whose last item starts a timestamp (%ld):%s\n"
                            "[finetune] %s:   users whose last item is tied (%ld):%s\n", run->dataset, n[0], line[1],
                    run->dataset, n[1], line[2]);
        fprintf(stderr, "[finetune] %s: CF blend kept: %.1f%s\n", run->dataset, w[0], G == 2 ? "" : " (no ties)");
        if (G == 2) fprintf(stderr, "[finetune] %s: CF blend kept for tied users: %.1f\n", run->dataset, w[1]);
    }
    return 0;
}

/* The valid and test metrics (and each split's users) into run_metrics. */
static int write_results(stage_run *run, const retr_metrics *vm, const retr_metrics *tm) {
    for (int s = 0; s < 2; s++) {
        const retr_metrics *M = s ? tm : vm;
        const char *split = s ? "test" : "valid";
        if (stage_result(run, "tokenrec", split, "users", 0, (double)M->n)) return -1;
        for (int k = 0; k < M->nk; k++)
            if (stage_result(run, "tokenrec", split, "hr", M->ks[k], retr_hr(M, M->ks[k])) ||
                stage_result(run, "tokenrec", split, "ndcg", M->ks[k], retr_ndcg(M, M->ks[k])))
                return -1;
    }
    return 0;
}

/* Do the users' own rows of spec s start from their CF vectors (--id-init cf)? */
static int user_cf_rows(const causal_spec *s, const ft_opts *o) {
    return causal_user_own_rows(s) && !strcmp(o->id_init, "cf");
}

/* The training config of the run's options over d and rows r. */
static int train_cfg(const ft_opts *o, const causal_spec *s, rec_data *d, const causal_rows *r,
                     cf_start *cs, sasrec_train_cfg *tc) {
    memset(tc, 0, sizeof *tc);
    if (causal_config(s, d, r, o->batch > o->eval_batch ? o->batch : o->eval_batch, &tc->model) != 0) return -1;
    tc->model.loss = SASREC_LOSS_SOFTMAX;
    tc->model.negatives = o->negatives;
    tc->model.dropout = (float)o->dropout;
    tc->sampler = SASREC_SAMPLER_UNIFORM;
    tc->epochs = o->epochs;
    tc->batch = o->batch;
    tc->eval_every = o->eval_every;
    tc->patience = o->patience;
    tc->lr = (float)o->lr;
    tc->weight_decay = (float)o->wd;
    tc->lr_cosine = sasrec_lr_schedule_parse(o->lr_schedule) == 1;
    tc->clip = (float)o->clip;
    tc->seed = (uint64_t)(int64_t)o->seed;
    tc->quiet = o->quiet;
    tc->user_rows = r->user_rows;
    tc->windows = 1;
    tc->tie_shuffle = !strcmp(o->ties, "shuffle");
    tc->token_drop = (float)o->token_drop;            /* > 0 only with tokens+id (causal_defaults) */
    tc->no_user_target = !o->user_target;
    tc->shards = o->shards;
    tc->label = "finetune";
    tc->loss_metric = "train_loss_epoch";
    tc->valid_metric = "valid_hr@10";
    *cs = (cf_start){.d = d, .r = r, .table = s->pool == CAUSAL_POOL_LEARNED,
                     .own_rows = s->item_input == CAUSAL_IN_TOKENS_ID && !strcmp(o->id_init, "cf"),
                     .user_own = user_cf_rows(s, o), .tokens = token_init_parse(o->token_init)};
    if ((cs->own_rows || cs->tokens) && !d->pool) return tr_error("--id-init cf and --token-init %s need the CF item vectors", o->token_init);
    if (cs->table || cs->own_rows || cs->user_own || cs->tokens) { tc->init = init_from_cf; tc->init_ctx = cs; }
    return 0;
}

int finetune_causal_run(stage_run *run, const ft_opts *o) {
    causal_spec s = {.pool = causal_pool_parse(o->pool), .item_input = causal_input_parse(o->item_input),
                     .cf_kind = "mean", .d = o->d_model, .blocks = o->enc_layers, .heads = o->n_heads,
                     .hist_cap = o->hist, .no_prefix = !o->user_prefix,
                     .user_input = causal_input_parse(o->user_input)};
    rec_data d;
    memset(&d, 0, sizeof d);
    causal_rows r = {0};
    sasrec_model *m = NULL;
    sasrec_fit_result res = {0};
    sasrec_train_cfg tc;
    cf_start cs;
    retr_metrics vm, tm;
    /* under mpirun rank 0 (run set) reads, every rank gets its data */
    int rc = run ? rec_data_load(run->db, run->dataset, run->upstream_run, s.cf_kind, &d) : 0;
    int blend = causal_cf_blend_parse(o->cf_blend) != 0;
    if (!rc && run && ((token_init_parse(o->token_init) & TOKEN_INIT_USERS) || user_cf_rows(&s, o) || blend)) {
        int nu = rec_user_vectors_load(run->db, &d, s.cf_kind);        /* the users' CF vectors */
        if (nu == 0) tr_error("--token-init %s / --user-input %s --id-init %s / --cf-blend %s: cf run %lld has no '%s' "
                              "user vectors", o->token_init, o->user_input, o->id_init, o->cf_blend, (long long)d.cf_run,
                              s.cf_kind);
        if (nu <= 0) rc = -1;
    }
    if (!rc) {                          /* (an error on rank 0 stops every rank: main) */
        dist_bcast_rec_data(&d);
        causal_rows_build(&d, &s, &r);
        rc = train_cfg(o, &s, &d, &r, &cs, &tc);
    }
    if (!rc && run && !o->quiet && !d.tied && !strcmp(o->ties, "shuffle"))
        fprintf(stderr, "[finetune] %s: --ties shuffle: the dataset has no timestamps, so no ties to shuffle\n",
                run->dataset);
    if (!rc && !o->quiet && run && !run->resumed)
        fprintf(stderr, "[finetune] %s: causal, d %d, %d layers, %d heads, hist %d, pool %s, item input %s, %s%s, "
                "%d rows x %d per position, %s, dropout %.2g, lr %.2g, batch %d, up to %d epochs\n", run->dataset,
                s.d, s.blocks, s.heads, s.hist_cap, o->pool, o->item_input,
                !o->user_prefix ? "no user position" : o->user_target ? "user position with a target" : "user position as context",
                causal_user_own_rows(&s) ? " (tokens+id)" : "",
                r.n_rows, r.n_feat,
                o->negatives ? "sampled softmax" : "full softmax", o->dropout, o->lr, o->batch, o->epochs);
    if (!rc) rc = sasrec_fit(run, &d, &tc, &m, &res);
    sasrec_blend bl = {d.user_vec, d.pool, d.D, 0, 0, d.tied};
    double w[2] = {0, 0};               /* the weights as given or picked; stored, and ranked with */
    if (!rc && blend) rc = pick_blend(run, m, &d, &r, o, &bl, w);
    s.cf_blend = w[0];
    s.cf_blend_tied = w[1];
    bl.alpha = (float)w[0];
    bl.alpha_tied = (float)w[1];
    if (!rc) rc = rank_splits(m, &d, &r, &bl, o, &vm, &tm);
    if (!run) {                         /* a rank other than 0: nothing to write */
        sasrec_free(m);
        causal_rows_free(&r);
        rec_data_free(&d);
        return rc;
    }
    if (rc == 0) {
        double tps = res.seconds > 0 ? (double)res.targets * res.epochs / res.seconds : 0;
        /* ID tokens: the rows an item position sums (its K tokens, the disambiguation code, its
         * own row), counted for every position; n_feat may hold -1 padding */
        double kps = res.seconds > 0 ? (double)res.positions * (d.cpi + (s.item_input == CAUSAL_IN_TOKENS_ID)) *
                                           res.epochs / res.seconds : 0;
        if (write_results(run, &vm, &tm) != 0 || stage_finish_begin(run) != 0 ||
            causal_save(run->db, run->id, m, &s, &d) != 0 ||
            stage_result(run, "tokenrec", "train", "best_epoch", 0, res.best_epoch) != 0 ||
            (blend && stage_result(run, "tokenrec", "train", "cf_blend", 0, s.cf_blend) != 0) ||
            (blend && d.tied && stage_result(run, "tokenrec", "train", "cf_blend_tied", 0, s.cf_blend_tied) != 0) ||
            (tps > 0 && stage_result(run, "tokenrec", "train", "targets_per_s", 0, tps) != 0) ||
            (kps > 0 && stage_result(run, "tokenrec", "train", "tokens_per_s", 0, kps) != 0) ||
            stage_finish_commit(run) != 0)
            rc = -1;
        else if (!o->quiet)
            fprintf(stderr, "[finetune] %s done: %d epochs in %.0fs (%.0f targets/s, %.0f tokens/s), best epoch %d, "
                    "valid HR@10 %.4f NDCG@10 %.4f; test HR@10 %.4f NDCG@10 %.4f HR@20 %.4f NDCG@20 %.4f\n",
                    run->dataset, res.epochs, res.seconds, tps, kps, res.best_epoch, retr_hr(&vm, 10),
                    retr_ndcg(&vm, 10), retr_hr(&tm, 10), retr_ndcg(&tm, 10), retr_hr(&tm, 20), retr_ndcg(&tm, 20));
    }
    if (rc < 0) stage_fail_err(run);          /* 130: sasrec_fit recorded the stop */
    sasrec_free(m);
    causal_rows_free(&r);
    rec_data_free(&d);
    return rc;
}
