/* finetune: stage 3 of TokenRec. Prompts made of user and item tokens go through the T5
 * encoder, a fixed decoder prompt comes out as hidden states, and the head maps them to z
 * in the CF vector space, trained so that the target item's vector is close:
 *   - default ("clean"): softmax over all items of z . v with the propagated (mean) item
 *     vectors, dot product at retrieval (why: docs/METHOD.md, "The recommender");
 *   - --faithful: TokenRec's own choice, the cosine-embedding loss with one uniform negative
 *     against the item ego vectors, cosine at retrieval, targets up to position 49.
 * Samples by prefix augmentation over the train split; valid HR@10/NDCG@10 after each epoch
 * selects the best checkpoint; the model is stored in `models`. */
#ifndef TOKENREC_FINETUNE_H
#define TOKENREC_FINETUNE_H
int cmd_finetune(int argc, char **argv);
/* The epoch cap of `finetune --arch causal` on this dataset (its row of the causal defaults). */
int finetune_causal_epochs(const char *dataset);
#endif
