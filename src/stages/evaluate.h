/* evaluate: stage 4. Generative retrieval with the finetuned model (one forward pass per
 * user, then top-K by similarity against every item's CF vector, history excluded), and the
 * baselines in the same harness: most popular, LightGCN retrieval. HR@{10,20,30} and
 * NDCG@{10,20,30} over the full item set; top-50 per user into `recommendations`. */
#ifndef TOKENREC_EVALUATE_H
#define TOKENREC_EVALUATE_H
int cmd_evaluate(int argc, char **argv);
#endif
