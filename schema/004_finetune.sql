-- 004_finetune.sql: the trained TokenRec model of a finetune run (the best checkpoint).
-- params: every parameter of the T5 model and head, float32, in the order of t5.h's
-- contiguous buffer; config: the t5_config as JSON; K, L, extra: the token vocabulary.
CREATE TABLE models (
    run_id     INTEGER PRIMARY KEY REFERENCES stage_runs(id) ON DELETE CASCADE,
    config     TEXT NOT NULL,
    K          INTEGER NOT NULL,
    L          INTEGER NOT NULL,
    extra      INTEGER NOT NULL,
    pool_kind  TEXT NOT NULL,         -- 'mean' or 'ego': the CF item vectors z is scored against
    cosine     INTEGER NOT NULL,      -- 1: cosine score, 0: dot product
    hist_cap   INTEGER NOT NULL,      -- most recent items in a prompt
    n_params   INTEGER NOT NULL,
    params     BLOB NOT NULL
);
