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

/* ms/user at batch 1 and the best users/s over the batch sizes, for beam search (g) or
 * generative retrieval (g NULL). */
static int time_method(gen_search *g, t5_model *m, const prompt_vocab *v, const rec_data *d, int hist_cap,
                       int cosine, int n, int topk, const char *method, gen_eval_out *out, int quiet) {
    static const int sizes[] = {1, 8, 32, 128};
    double best = 0;
    int best_b = 1;
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        int b = sizes[i];
        if (b > n && i > 0) break;
        double s = gen_time_users(g, m, v, d, hist_cap, cosine, n, b, topk);
        if (s < 0) return -1;
        double ups = n / (s > 0 ? s : 1e-9);
        if (b == 1) add_row(out, method, "latency-b1", "ms_per_user", 1, 1000 * s / n);
        add_row(out, method, "latency-batch", "users_per_s", b, ups);
        if (!quiet) fprintf(stderr, "[evaluate] latency %-8s batch %3d: %8.3f ms/user, %8.1f users/s\n", method, b, 1000 * s / n, ups);
        if (ups > best) { best = ups; best_b = b; }
    }
    add_row(out, method, "latency-best", "users_per_s", best_b, best);
    return 0;
}

int gen_eval(sqlite3 *db, const char *dataset, rec_loaded *lm, const rec_data *d, int beam, int batch,
             retr_metrics *valid, retr_metrics *test, int topk, rec_topk_fn fn, void *ctx,
             int latency_users, int quiet, gen_eval_out *out) {
    memset(out, 0, sizeof *out);
    gen_search g;
    int cap = batch > 128 ? batch : 128;
    if (gen_search_init(&g, lm->model, &lm->vocab, d, beam, cap, lm->hist_cap) != 0) return -1;
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
        if (time_method(&g, lm->model, &lm->vocab, d, lm->hist_cap, lm->cosine, latency_users, topk,
                        "generate", out, quiet) != 0) goto out;
        /* generative retrieval: the finetune stage's model when it has the same shape */
        int64_t rid = stage_current_run(db, dataset, "finetune");
        t5_model *rm = lm->model;
        const prompt_vocab *rv = &lm->vocab;
        int hist = lm->hist_cap, cosine = lm->cosine;
        if (rid && rec_model_load(db, rid, &rl) == 0 && same_shape(t5_cfg(rl.model), t5_cfg(lm->model)) &&
            rl.tokenize_run == lm->tokenize_run && t5_cfg(rl.model)->head_out == d->D) {
            rm = rl.model; rv = &rl.vocab; hist = rl.hist_cap; cosine = rl.cosine;
        } else {
            rid = 0;
        }
        tr_error_clear();
        add_row(out, "tokenrec", "latency-best", "model_run", 0, (double)rid);
        if (!quiet)
            fprintf(stderr, "[evaluate] generative retrieval timed with %s\n",
                    rid ? "the current finetune run's model (same shape)" : "the generate model's own network and head");
        t5_reserve(rm, 128, g.rb.cap_T);
        if (time_method(NULL, rm, rv, d, hist, cosine, latency_users, topk, "tokenrec", out, quiet) != 0) goto out;
    }
    rc = 0;
out:
    rec_loaded_free(&rl);
    gen_search_free(&g);
    return rc;
}
