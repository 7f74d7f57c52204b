-- 006_unseen.sql: the users a cf run held out (cf --holdout-users FRAC) for the unseen-user
-- test. They are left out of the cf graph and BPR training; cf still writes cf_vectors for
-- them, folded in from their train items (a normalised sum of item vectors, see
-- src/stages/unseen.h). tokenize leaves them out of the tokenizer's training and tokenizes them
-- through the frozen tokenizer (tokens_unseen, origin 'cf-holdout'); finetune leaves them
-- out of its samples and validation; evaluate --unseen tests them with the unseen template.
CREATE TABLE cf_holdout (
    run_id  INTEGER NOT NULL REFERENCES stage_runs(id) ON DELETE CASCADE,
    uid     INTEGER NOT NULL,
    PRIMARY KEY (run_id, uid)
) WITHOUT ROWID;
