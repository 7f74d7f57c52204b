/* sasrec_stage.c: `tokenrec sasrec`, the SASRec baseline as a stage of its own (upstream:
 * ingest). It trains on the train split with the valid items for early stopping, through
 * the stage runner (resumable, fingerprinted), and stores the best epoch's parameters in
 * sasrec_models; `tokenrec evaluate --method sasrec` then only scores them. */
#include "sasrec_stage.h"
#include "cli.h"
#include "db.h"
#include "dist_stage.h"
#include "sasrec_fit.h"
#include "util.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Each dataset's default setting, chosen by valid HR@10 (bench/sasrec; README, Modes). A
 * dataset not listed gets the first row's setting under its own name. The epochs of
 * clothing and ml-1m are a time budget (all four datasets in under 30 minutes on 2 cores):
 * both were still improving slowly there. ml-1m's batch of 16 users (378 steps an epoch,
 * against 47 at 128) reaches in 45 epochs a valid HR@10 (0.2856) that batch 128 was far
 * from after 60 (0.2538). lastfm: batch 32 had the best valid HR@10 of 32, 64 and 128
 * (0.1330, 0.1119, 0.1174 on one thread; about 0.01 is one standard error there), then d 128
 * with 2 heads the best (0.1303 on 2 threads) of d 64 (0.1193), dropout 0.3 (0.1239) and 0.7
 * (0.1064), 1 block (0.1018), lr 1e-3 (0.1110) and maxlen 100 (0.1018). The cosine schedule
 * (--lr-schedule) over the epoch cap beat a constant lr on Beauty (0.1161 against 0.1130, its
 * cap 70 epochs) and Clothing (0.0348 against 0.0337), and on LastFM by a hair (0.1312
 * against 0.1303, a tie within noise); ML-1M was not measured with it. */
typedef struct {
    const char *dataset;
    int    dim, blocks, heads, maxlen, negatives, batch, epochs, eval_every, patience;
    double dropout, lr;
    const char *sampler, *lr_schedule;
} sasrec_preset;

static const sasrec_preset presets[] = {
    /* dataset    d   blk hd  len  neg   batch ep   eval pat  drop  lr     sampler    lr-schedule */
    {"other",     64, 2,  1,  50,  0,    128,  200, 5,  4,   0.5,  2e-3,  "uniform", "constant"},
    {"lastfm",    128, 2, 2,  200, 0,    32,   200, 5,  4,   0.5,  2e-3,  "uniform", "cosine"},
    {"beauty",    64, 2,  1,  50,  0,    128,  70,  5,  3,   0.5,  2e-3,  "uniform", "cosine"},
    {"clothing",  64, 2,  1,  50,  2048, 128,  40,  5,  3,   0.5,  2e-3,  "uniform", "cosine"},
    {"ml-1m",     64, 2,  1,  200, 512,  16,   45,  3,  3,   0.2,  2e-3,  "uniform", "constant"},
};

/* The preset of a dataset (the first row when it has none). */
static const sasrec_preset *preset_for(const char *dataset) {
    for (size_t i = 1; i < sizeof presets / sizeof *presets; i++)
        if (!strcmp(presets[i].dataset, dataset)) return &presets[i];
    return &presets[0];
}

/* The --help text: what the stage does and the table of per-dataset defaults. */
static void summary_text(char *buf, size_t n) {
    size_t o = (size_t)snprintf(buf, n,
        "SASRec (Kang & McAuley 2018): a causal self-attention model over item ids, trained on\n"
        "every position of each user's most recent --maxlen train items at once (the next item\n"
        "of each position is its target), with a softmax over all items (--negatives 0) or over\n"
        "N negatives shared by the batch, uniform or popularity-sampled with the log-Q\n"
        "correction. Valid HR@10 every --eval-every epochs picks the epoch kept; training stops\n"
        "after --patience checks without a better one. 'tokenrec evaluate --method sasrec'\n"
        "scores the kept model on the test items.\n\n"
        "Defaults per dataset (an option given on the command line wins):\n"
        "  dataset    dim blocks maxlen negatives sampler  dropout  lr      batch epochs eval-every patience lr-schedule\n");
    for (size_t i = 0; i < sizeof presets / sizeof *presets && o < n; i++) {
        const sasrec_preset *p = &presets[i];
        o += (size_t)snprintf(buf + o, n - o, "  %-10s %-3d %-6d %-6d %-9d %-8s %-8.2g %-7.2g %-5d %-6d %-10d %-8d %s\n",
                              p->dataset, p->dim, p->blocks, p->maxlen, p->negatives, p->sampler,
                              p->dropout, p->lr, p->batch, p->epochs, p->eval_every, p->patience, p->lr_schedule);
    }
    if (o > 0 && o < n && buf[o - 1] == '\n') buf[o - 1] = 0;
}

/* Options the user left unset (-1, or NULL) take the dataset's preset. */
typedef struct {
    int dim, blocks, heads, maxlen, negatives, batch, epochs, eval_every, patience, seed;
    double dropout, lr, wd, clip;
    const char *sampler, *loss, *lr_schedule;
} sasrec_args;

static void fill_defaults(sasrec_args *a, const sasrec_preset *p) {
#define DEF(f) if (a->f < 0) a->f = p->f
    DEF(dim); DEF(blocks); DEF(heads); DEF(maxlen); DEF(negatives); DEF(batch); DEF(epochs);
    DEF(eval_every); DEF(patience); DEF(dropout); DEF(lr);
#undef DEF
    if (!a->sampler) a->sampler = p->sampler;
    if (!a->lr_schedule) a->lr_schedule = p->lr_schedule;
}

/* The settings as a training config; -1 with tr_error on a value out of range. */
static int to_cfg(const sasrec_args *a, sasrec_train_cfg *tc, int quiet) {
    if (strcmp(a->loss, "softmax") && strcmp(a->loss, "bce"))
        return tr_error("--loss: expected softmax or bce, got '%s'", a->loss);
    if (strcmp(a->sampler, "uniform") && strcmp(a->sampler, "pop"))
        return tr_error("--sampler: expected uniform or pop, got '%s'", a->sampler);
    if (sasrec_lr_schedule_parse(a->lr_schedule) < 0)
        return tr_error("--lr-schedule: expected constant or cosine, got '%s'", a->lr_schedule);
    if (a->dim < 1 || a->dim > 4096 || a->blocks < 0 || a->blocks > 64 || a->heads < 1 || a->dim % a->heads ||
        a->maxlen < 1 || a->maxlen > 1024 || a->epochs < 1 || a->batch < 1 || a->batch > 4096 ||
        a->eval_every < 1 || a->patience < 1 || a->dropout < 0 || a->dropout >= 1 || a->lr <= 0 ||
        a->negatives < 0 || a->negatives > 100000 || a->wd < 0)
        return tr_error("expected --dim in 1..4096 divisible by --heads, --blocks in 0..64, --maxlen in 1..1024, "
                        "--batch in 1..4096, positive --epochs, --eval-every, --patience and --lr, --dropout in "
                        "[0,1), --negatives in 0..100000, --wd >= 0");
    memset(tc, 0, sizeof *tc);
    tc->model.d = a->dim;
    tc->model.n_blocks = a->blocks;
    tc->model.n_heads = a->heads;
    tc->model.max_len = a->maxlen;
    tc->model.loss = strcmp(a->loss, "bce") ? SASREC_LOSS_SOFTMAX : SASREC_LOSS_BCE;
    tc->model.negatives = tc->model.loss == SASREC_LOSS_SOFTMAX ? a->negatives : 0;
    tc->model.dropout = (float)a->dropout;
    tc->sampler = strcmp(a->sampler, "pop") ? SASREC_SAMPLER_UNIFORM : SASREC_SAMPLER_POP;
    tc->epochs = a->epochs;
    tc->batch = a->batch;
    tc->eval_every = a->eval_every;
    tc->patience = a->patience;
    tc->lr = (float)a->lr;
    tc->lr_cosine = sasrec_lr_schedule_parse(a->lr_schedule) == 1;
    tc->weight_decay = (float)a->wd;
    tc->clip = (float)a->clip;
    tc->seed = (uint64_t)(int64_t)a->seed;
    tc->quiet = quiet;
    return 0;
}

/* Store the kept model of run `run_id` (inside the caller's output transaction). */
static int save_model(sqlite3 *db, int64_t run_id, sasrec_model *m, const sasrec_fit_result *r) {
    const sasrec_config *c = sasrec_cfg(m);
    sqlite3_stmt *st = db_prep(db, "INSERT OR REPLACE INTO sasrec_models (run_id, n_items, d, n_blocks, "
                                   "n_heads, max_len, best_valid, best_epoch, epochs, n_params, params) "
                                   "VALUES (?,?,?,?,?,?,?,?,?,?,?)");
    if (!st) return -1;
    size_t np = sasrec_n_params(m);
    sqlite3_bind_int64(st, 1, run_id);
    sqlite3_bind_int(st, 2, c->n_items);
    sqlite3_bind_int(st, 3, c->d);
    sqlite3_bind_int(st, 4, c->n_blocks);
    sqlite3_bind_int(st, 5, c->n_heads);
    sqlite3_bind_int(st, 6, c->max_len);
    sqlite3_bind_double(st, 7, r->best_valid);
    sqlite3_bind_int(st, 8, r->best_epoch);
    sqlite3_bind_int(st, 9, r->epochs);
    sqlite3_bind_int64(st, 10, (int64_t)np);
    sqlite3_bind_blob64(st, 11, sasrec_params(m), np * sizeof(float), SQLITE_STATIC);
    int rc = db_step_done(db, st);
    sqlite3_finalize(st);
    return rc;
}

sasrec_model *sasrec_model_load(sqlite3 *db, int64_t run_id, int max_B) {
    sqlite3_stmt *st = db_prep(db, "SELECT n_items, d, n_blocks, n_heads, max_len, n_params, params "
                                   "FROM sasrec_models WHERE run_id=?");
    if (!st) return NULL;
    sqlite3_bind_int64(st, 1, run_id);
    sasrec_model *m = NULL;
    if (sqlite3_step(st) != SQLITE_ROW) {
        tr_error("sasrec run %lld has no stored model (run 'tokenrec sasrec --force')", (long long)run_id);
    } else {
        sasrec_config c = {.n_items = sqlite3_column_int(st, 0), .d = sqlite3_column_int(st, 1),
                           .n_blocks = sqlite3_column_int(st, 2), .n_heads = sqlite3_column_int(st, 3),
                           .max_len = sqlite3_column_int(st, 4), .max_B = max_B};
        rng_t r;
        rng_seed(&r, 0);
        m = sasrec_new(&c, &r);
        if (m && (sqlite3_column_int64(st, 5) != (int64_t)sasrec_n_params(m) ||
                  db_column_floats(st, 6, sasrec_params(m), (int)sasrec_n_params(m)) != 0)) {
            tr_error("sasrec run %lld: the stored parameters do not fit its shape", (long long)run_id);
            sasrec_free(m);
            m = NULL;
        }
    }
    sqlite3_finalize(st);
    return m;
}

/* Train on the loaded sequences and write the kept model; 0, 130 (stopped) or -1. Under
 * mpirun every rank calls it; the others (run and db NULL) get rank 0's sequences. */
static int train_and_store(stage_run *run, sqlite3 *db, const char *dataset, const sasrec_train_cfg *tc) {
    rec_data d;
    memset(&d, 0, sizeof d);
    sasrec_model *m = NULL;
    sasrec_fit_result res = {0};
    int rc = run ? rec_sequences_load(db, dataset, &d) : 0;
    if (rc != 0) stage_fail_err(run);   /* the error stops every rank (main) */
    if (rc == 0) dist_bcast_sequences(&d);
    if (rc == 0) rc = sasrec_fit(run, &d, tc, &m, &res);
    if (!run) {                         /* a rank other than 0: nothing to write */
        sasrec_free(m);
        rec_data_free(&d);
        return rc;
    }
    if (rc == 0 && (stage_finish_begin(run) != 0 || save_model(db, run->id, m, &res) != 0 ||
                    stage_metric(run, res.epochs, "sasrec_best_valid_hr10", res.best_valid) != 0 ||
                    stage_metric(run, res.epochs, "sasrec_seconds", res.seconds) != 0 ||
                    stage_finish_commit(run) != 0))
        rc = -1;
    if (rc < 0) {
        stage_fail_err(run);
    } else if (rc == 0 && !tc->quiet) {
        char b[32];
        fprintf(stderr, "[sasrec] %s: best valid HR@10 %.4f at epoch %d of %d, %s; "
                        "'tokenrec evaluate --method sasrec' scores it\n", dataset, res.best_valid,
                res.best_epoch, res.epochs, tr_fmt_duration(res.seconds, b, sizeof b));
    }
    sasrec_free(m);
    rec_data_free(&d);
    return rc;
}

static const char *usage_sasrec = "tokenrec sasrec [--dataset NAME] [options]";

int cmd_sasrec(int argc, char **argv) {
    const char *dbpath = DB_DEFAULT_PATH, *dataset = NULL;
    int threads = 0, force = 0, quiet = 0, shards = 0;
    sasrec_args a = {-1, -1, -1, -1, -1, -1, -1, -1, -1, CLI_SEED_DEFAULT, -1, -1, 0, 0, NULL, "softmax", NULL};
    cli_opt opts[] = {
        {"db", CLI_STR, &dbpath, "database file", 0},
        {"dataset", CLI_STR, &dataset, "dataset (default: the last ingested)", 0},
        {"dim", CLI_INT, &a.dim, "embedding and hidden size (-1: the dataset's default)", 1},
        {"blocks", CLI_INT, &a.blocks, "self-attention blocks (-1: default)", 1},
        {"heads", CLI_INT, &a.heads, "attention heads (-1: default)", 1},
        {"maxlen", CLI_INT, &a.maxlen, "most recent train items read (-1: default)", 1},
        {"loss", CLI_STR, &a.loss, "softmax (full or sampled, see --negatives) or bce (one negative per position)", 1},
        {"negatives", CLI_INT, &a.negatives, "softmax over N sampled negatives shared by the batch (0: all items; -1: default)", 1},
        {"sampler", CLI_STR, &a.sampler, "negatives: uniform or pop (train popularity), log-Q corrected (default: the dataset's)", 1},
        {"dropout", CLI_FLOAT, &a.dropout, "dropout rate (-1: default)", 1},
        {"lr", CLI_FLOAT, &a.lr, "Adam learning rate (-1: default)", 1},
        {"lr-schedule", CLI_STR, &a.lr_schedule, "constant (--lr throughout) or cosine (a half cosine from --lr to 0 "
         "at the last of --epochs; in the run's settings when cosine) (default: the dataset's)", 0},
        {"wd", CLI_FLOAT, &a.wd, "decoupled weight decay", 1},
        {"clip", CLI_FLOAT, &a.clip, "gradient norm clip (0: none)", 1},
        {"batch", CLI_INT, &a.batch, "users per training batch (-1: default)", 1},
        {"epochs", CLI_INT, &a.epochs, "most training epochs (-1: default)", 1},
        {"eval-every", CLI_INT, &a.eval_every, "epochs between valid HR@10 checks (-1: default)", 1},
        {"patience", CLI_INT, &a.patience, "checks without improvement before stopping (-1: default)", 1},
        {"seed", CLI_INT, &a.seed, "random seed (initialisation, order, dropout, negatives)", 1},
        {"shards", CLI_INT, &shards, "cut each batch into N shards (own dropout streams, gradients summed in a fixed "
         "tree): what 'mpirun -np P' (P <= N) splits across processes; the model depends on N, not on P "
         "(0: the whole batch at once; in the run's settings when > 1)", 0},
        {"threads", CLI_INT, &threads, "threads (0: all cores)", 0},
        {"force", CLI_FLAG, &force, "train again even if an up-to-date run exists", 0},
        {"quiet", CLI_FLAG, &quiet, "no progress or summary", 0},
        CLI_OPT_END};
    char summary[2048];
    summary_text(summary, sizeof summary);
    int rc = cli_parse(argc, argv, opts, usage_sasrec, summary);
    if (rc) return rc > 0 ? 0 : -1;
    nn_set_threads(threads || dist_size() == 1 ? threads : dist_default_threads());
    if (shards < 0 || shards > 4096) return tr_error("--shards must be in 0..4096, got %d", shards);
    if (dist_rank() != 0) {           /* under mpirun: rank 0 opens the database, the rest follow */
        sasrec_train_cfg tc;
        int go = dist_bcast_int(0);
        if (go != 1) return go == 0 ? 0 : tr_error("rank 0 stopped (its error above)");
        dist_bcast(&tc, sizeof tc);
        /* SASRec's stage sets none of the causal LLM's pointers (NULL on rank 0 too); a
         * pointer never crosses processes */
        tc.user_rows = NULL; tc.label = tc.loss_metric = tc.valid_metric = NULL;
        tc.init = NULL; tc.init_ctx = NULL; tc.model.item_rows = NULL; tc.model.fixed = NULL;
        tc.quiet = 1;
        return train_and_store(NULL, NULL, NULL, &tc);
    }
    stage_cmd c;
    if (stage_cmd_open(&c, dbpath, dataset) != 0) return dist_bcast_int(-1), -1;
    fill_defaults(&a, preset_for(c.dataset));
    sasrec_train_cfg tc;
    if (to_cfg(&a, &tc, quiet) != 0) return dist_bcast_int(-1), stage_cmd_close(&c, -1);
    tc.shards = shards;
    if (shards > tc.batch || (dist_size() > 1 && shards < dist_size())) {
        if (shards > tc.batch) tr_error("--shards %d is more than the batch (%d users)", shards, tc.batch);
        else tr_error("sasrec under mpirun with %d processes: each batch is cut into --shards pieces, a setting "
                      "of the run (the model depends on it, not on the process count); give --shards %d or "
                      "more (a power of two, e.g. 8, keeps every power-of-two process count bitwise the same), "
                      "and the same value when resuming", dist_size(), dist_size());
        dist_bcast_int(-1);
        return stage_cmd_close(&c, -1);
    }
    /* settings that do not change the model are normalised, so they do not start a new run */
    if (!strcmp(a.loss, "bce")) a.negatives = 0;
    if (a.negatives == 0) a.sampler = "uniform";
    /* after the defaults: the values used; --shards only when it cuts the batch, so runs
     * without it keep their fingerprints (the process count is never a setting) */
    char *pj = cli_params_json(opts);
    if (shards > 1) pj = cli_json_append(pj, "\"shards\":%d", shards);
    if (tc.lr_cosine) pj = cli_json_append(pj, "\"lr-schedule\":\"cosine\"");
    int b = stage_cmd_begin(&c, "sasrec", pj, NULL, force, quiet, NULL);
    dist_bcast_int(b == 0 ? 1 : b == STAGE_UP_TO_DATE ? 0 : -1);
    if (b != 0) return stage_cmd_close(&c, b == STAGE_UP_TO_DATE ? 0 : -1);
    dist_bcast(&tc, sizeof tc);
    if (!quiet)
        fprintf(stderr, "[sasrec] %s: d %d, %d blocks, maxlen %d, %s%s, dropout %g, lr %g, batch %d, "
                        "up to %d epochs, %d threads\n", c.dataset, a.dim, a.blocks, a.maxlen, a.loss,
                tc.model.negatives ? (tc.sampler ? " over pop-sampled negatives" : " over uniform negatives")
                                   : tc.model.loss == SASREC_LOSS_SOFTMAX ? " over all items" : "",
                a.dropout, a.lr, a.batch, a.epochs, nn_threads());
    if (!quiet && dist_size() > 1)
        fprintf(stderr, "[sasrec] data-parallel: %d processes, %d shards per batch; rank 0 alone uses the database\n",
                dist_size(), shards);
    return stage_cmd_close(&c, train_and_store(&c.run, c.db, c.dataset, &tc));
}
