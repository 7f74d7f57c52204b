-- 005_evaluate.sql: each user's top-50 recommendations of an evaluate run (the test split,
-- history excluded), with scores. Metrics go to run_metrics (002_cf.sql), latency there too
-- (split 'latency', metric 'ms_per_user' / 'users_per_s', k 0).
CREATE TABLE recommendations (
    run_id  INTEGER NOT NULL REFERENCES stage_runs(id) ON DELETE CASCADE,
    uid     INTEGER NOT NULL,
    rank    INTEGER NOT NULL,       -- 1 = best
    iid     INTEGER NOT NULL,
    score   REAL NOT NULL,
    PRIMARY KEY (run_id, uid, rank)
) WITHOUT ROWID;
