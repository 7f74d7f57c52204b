-- 002_cf.sql: collaborative-filtering vectors (LightGCN or MF), one float32 BLOB per row.
-- kind 'ego' is the layer-0 embedding table (E0); 'mean' is the propagated mean of layers
-- 0..L (equal to ego for MF). The run's settings are in stage_runs.params.
CREATE TABLE cf_vectors (
    run_id  INTEGER NOT NULL REFERENCES stage_runs(id) ON DELETE CASCADE,
    entity  TEXT NOT NULL,          -- 'user' or 'item'
    kind    TEXT NOT NULL,          -- 'ego' or 'mean'
    idx     INTEGER NOT NULL,       -- uid or iid
    vec     BLOB NOT NULL,          -- float32[dim], little-endian
    PRIMARY KEY (run_id, entity, kind, idx)
) WITHOUT ROWID;

-- Final metrics of a run (cf retrieval, evaluate methods): one row per (split, metric, k).
CREATE TABLE run_metrics (
    run_id  INTEGER NOT NULL REFERENCES stage_runs(id) ON DELETE CASCADE,
    method  TEXT NOT NULL,          -- e.g. 'lightgcn', 'mf', 'tokenrec', 'popularity'
    split   TEXT NOT NULL,          -- 'valid' or 'test' (or 'test-unseen', 'test-seen')
    metric  TEXT NOT NULL,          -- 'hr' or 'ndcg'
    k       INTEGER NOT NULL,
    value   REAL NOT NULL,
    PRIMARY KEY (run_id, method, split, metric, k)
) WITHOUT ROWID;
