/* gen_eval.c: evaluate --method generate: beam-search accuracy and the latency of both
 * methods, measured in the same process on the same users (see genrec.h). */
#include "genrec.h"
#include "stage.h"
#include "util.h"
#include <stdio.h>
#include <string.h>

static void add_row(gen_eval_out *o, const char *method, const char *split, const char *metric, int k, double v) {
    if (o->n >= (int)(sizeof o->rows / sizeof o->rows[0])) return;
    gen_metric_row *r = &o->rows[o->n++];
    r->method = method; r->split = split; r->metric = metric; r->k = k; r->value = v;
}

/* Same encoder/decoder shape: the retrieval model can stand in for the generate model's size. */
static int same_shape(const t5_config *a, const t5_config *b) {
    return a->d_model == b->d_model && a->n_heads == b->n_heads && a->d_kv == b->d_kv &&
           a->d_ff == b->d_ff && a->n_enc_layers == b->n_enc_layers && a->n_dec_layers == b->n_dec_layers;
}

/* ms/user at batch 1 and the best users/s over the batch sizes, for beam search (g, with
 * model gm) and generative retrieval (model rm) on the same users. The two are timed in
 * turn, three times per batch size, and the fastest of the three counts: on a shared machine
 * the minimum is the least disturbed measurement, and alternating exposes both methods to
 * the same background load. */
typedef struct { t5_model *m; const prompt_vocab *v; int hist, cosine; } timed_model;
static int time_both(gen_search *g, timed_model gm, timed_model rm, const rec_data *d, int n, int topk,
                     gen_eval_out *out, int quiet) {
    static const int sizes[] = {1, 8, 32, 128};
    const char *names[2] = {"generate", "tokenrec"};
    double best[2] = {0, 0};
    int best_b[2] = {1, 1};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        int b = sizes[i];
        if ((b > n || b > g->max_users) && i > 0) break;
        double s[2] = {1e30, 1e30};
        for (int rep = 0; rep < 3; rep++)
            for (int k = 0; k < 2; k++) {
                timed_model t = k ? rm : gm;
                double x = gen_time_users(k ? NULL : g, t.m, t.v, d, t.hist, t.cosine, n, b, topk);
                if (x < 0) return -1;
                if (x < s[k]) s[k] = x;
            }
        for (int k = 0; k < 2; k++) {
            double ups = n / (s[k] > 0 ? s[k] : 1e-9);
            if (b == 1) add_row(out, names[k], "latency-b1", "ms_per_user", 1, 1000 * s[k] / n);
            add_row(out, names[k], "latency-batch", "users_per_s", b, ups);
            if (!quiet) fprintf(stderr, "[evaluate] latency %-8s batch %3d: %8.3f ms/user, %8.1f users/s\n",
                                names[k], b, 1000 * s[k] / n, ups);
            if (ups > best[k]) { best[k] = ups; best_b[k] = b; }
        }
    }
    for (int k = 0; k < 2; k++) add_row(out, names[k], "latency-best", "users_per_s", best_b[k], best[k]);
    return 0;
}

int gen_eval(sqlite3 *db, const char *dataset, rec_loaded *lm, const rec_data *d, int beam, int batch,
             retr_metrics *valid, retr_metrics *test, int topk, rec_topk_fn fn, void *ctx,
             int latency_users, int quiet, gen_eval_out *out) {
    memset(out, 0, sizeof *out);
    gen_search g;
    int cap = batch > 128 ? batch : 128;
    /* gen_search_init may lower cap to keep the key/value cache within its budget */
    if (gen_search_init(&g, lm->model, &lm->vocab, d, beam, cap, lm->hist_cap) != 0) return -1;
    if (batch > g.max_users) batch = g.max_users;
    int rc = -1;
    rec_loaded rl;
    memset(&rl, 0, sizeof rl);
    if (valid && gen_evaluate(&g, lm->model, &lm->vocab, d, 1, PROMPT_TEST, batch, valid, 0, NULL, NULL) != 0) goto out;
    double t0 = tr_monotonic();
    if (gen_evaluate(&g, lm->model, &lm->vocab, d, 2, PROMPT_TEST, batch, test, topk, fn, ctx) != 0) goto out;
    out->test_secs = tr_monotonic() - t0;
    add_row(out, "generate", "test", "beam", 0, beam);
    add_row(out, "generate", "test", "tuples", 0, g.trie.n_leaves);
    add_row(out, "generate", "test", "collided_tuples", 0, g.trie.n_collided);
    add_row(out, "generate", "test", "collided_items", 0, g.trie.n_collided_items);
    if (!quiet)
        fprintf(stderr, "[evaluate] generate: beam %d, %d items on %d tuples, %d tuples shared by %d items "
                "(each of those items takes its tuple's score; ties by item id)\n", beam, d->n_items,
                g.trie.n_leaves, g.trie.n_collided, g.trie.n_collided_items);
    if (latency_users > 0) {
        /* generative retrieval: the finetune stage's model when it has the same shape */
        int64_t rid = stage_current_run(db, dataset, "finetune");
        timed_model gm = {lm->model, &lm->vocab, lm->hist_cap, lm->cosine}, rm = gm;
        if (rid && rec_model_load(db, rid, &rl) == 0 && same_shape(t5_cfg(rl.model), t5_cfg(lm->model)) &&
            rl.tokenize_run == lm->tokenize_run && t5_cfg(rl.model)->head_out == d->D) {
            rm.m = rl.model; rm.v = &rl.vocab; rm.hist = rl.hist_cap; rm.cosine = rl.cosine;
        } else {
            rid = 0;
        }
        tr_error_clear();
        add_row(out, "tokenrec", "latency-best", "model_run", 0, (double)rid);
        if (!quiet)
            fprintf(stderr, "[evaluate] generative retrieval timed with %s; %d users, best of 3 per batch size\n",
                    rid ? "the current finetune run's model (same shape)" : "the generate model's own network and head",
                    latency_users);
        t5_reserve(rm.m, 128, g.rb.cap_T);
        if (time_both(&g, gm, rm, d, latency_users, topk, out, quiet) != 0) goto out;
    }
    rc = 0;
out:
    rec_loaded_free(&rl);
    gen_search_free(&g);
    return rc;
}
