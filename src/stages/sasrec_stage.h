/* sasrec_stage: `tokenrec sasrec`, the SASRec baseline's stage, and the loader of the model it
 * stores (table sasrec_models) for evaluate. */
#ifndef TOKENREC_SASREC_STAGE_H
#define TOKENREC_SASREC_STAGE_H
#include <sqlite3.h>
#include <stdint.h>
#include "sasrec.h"

int cmd_sasrec(int argc, char **argv);
/* The model stored by sasrec run `run_id`, with an arena for batches of up to max_B users;
 * NULL with tr_error when there is none or it does not fit its shape. */
sasrec_model *sasrec_model_load(sqlite3 *db, int64_t run_id, int max_B);

#endif
