-- 010_sasrec.sql: the trained SASRec baseline of a sasrec run (stage `tokenrec sasrec`), the
-- parameters of its best valid epoch. params: float32, in the order of sasrec.h's
-- contiguous buffer (item table, positions, the blocks, the final norm).
CREATE TABLE sasrec_models (
    run_id     INTEGER PRIMARY KEY REFERENCES stage_runs(id) ON DELETE CASCADE,
    n_items    INTEGER NOT NULL,
    d          INTEGER NOT NULL,
    n_blocks   INTEGER NOT NULL,
    n_heads    INTEGER NOT NULL,
    max_len    INTEGER NOT NULL,
    best_valid REAL NOT NULL,         -- valid HR@10 of the kept epoch
    best_epoch INTEGER NOT NULL,
    epochs     INTEGER NOT NULL,      -- epochs trained (early stopping may end before the most)
    n_params   INTEGER NOT NULL,
    params     BLOB NOT NULL
);
