-- 001_core.sql: datasets, users, items, interactions; the stage runner's tables.

-- One row per ingested dataset. Re-ingesting a dataset replaces its rows in one transaction.
CREATE TABLE datasets (
    id              INTEGER PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,      -- lastfm, ml-1m, beauty, clothing, or a user's name
    source          TEXT NOT NULL,             -- the file(s) it was read from
    format          TEXT NOT NULL,             -- hetrec-lastfm, ml-1m-ratings, sequence, delimited
    kcore           INTEGER NOT NULL,
    n_users         INTEGER NOT NULL,
    n_items         INTEGER NOT NULL,
    n_interactions  INTEGER NOT NULL,
    has_timestamps  INTEGER NOT NULL,
    ingested_at     REAL NOT NULL               -- unix seconds
);

-- Users and items, numbered 0.. in order of first appearance; orig_id is the dataset's id.
CREATE TABLE users (
    dataset_id  INTEGER NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,
    uid         INTEGER NOT NULL,
    orig_id     TEXT NOT NULL,
    PRIMARY KEY (dataset_id, uid)
) WITHOUT ROWID;

CREATE TABLE items (
    dataset_id  INTEGER NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,
    iid         INTEGER NOT NULL,
    orig_id     TEXT NOT NULL,
    name        TEXT,                           -- display name (UTF-8) where the dataset has one
    PRIMARY KEY (dataset_id, iid)
) WITHOUT ROWID;

-- Each user's chronological sequence. split: 0 = train, 1 = valid (second to last),
-- 2 = test (last). ts: unix seconds where the source has timestamps, else NULL.
-- No foreign key here: the check would cost a lookup per row of a million-row ingest;
-- ingest deletes a dataset's interactions itself, in the same transaction.
CREATE TABLE interactions (
    dataset_id  INTEGER NOT NULL,
    uid         INTEGER NOT NULL,
    pos         INTEGER NOT NULL,
    iid         INTEGER NOT NULL,
    ts          INTEGER,
    split       INTEGER NOT NULL CHECK (split BETWEEN 0 AND 2),
    PRIMARY KEY (dataset_id, uid, pos)
) WITHOUT ROWID;

-- The stage runner: one row per run of a stage on a dataset.
CREATE TABLE stage_runs (
    id              INTEGER PRIMARY KEY,
    stage           TEXT NOT NULL,              -- ingest, cf, tokenize, finetune, evaluate
    dataset         TEXT NOT NULL,
    params          TEXT NOT NULL,              -- canonical JSON of the options that matter
    fingerprint     TEXT NOT NULL,              -- hash of stage, dataset, params, upstream run
    upstream_stage  TEXT,
    upstream_run    INTEGER,                    -- the stage_runs.id this run was built on
    status          TEXT NOT NULL CHECK (status IN ('running', 'stopped', 'failed', 'done')),
    progress        REAL NOT NULL DEFAULT 0,    -- 0..1
    message         TEXT,
    error           TEXT,
    pid             INTEGER,
    started_at      REAL NOT NULL,
    updated_at      REAL NOT NULL,
    ended_at        REAL
);
CREATE INDEX stage_runs_by_stage ON stage_runs (dataset, stage, status);

-- Training curves and other per-step numbers.
CREATE TABLE metrics_log (
    run_id  INTEGER NOT NULL REFERENCES stage_runs(id) ON DELETE CASCADE,
    name    TEXT NOT NULL,
    step    INTEGER NOT NULL,
    value   REAL,
    PRIMARY KEY (run_id, name, step)
) WITHOUT ROWID;

-- Checkpoints: named blobs per run, all written in one transaction per checkpoint.
CREATE TABLE checkpoints (
    run_id    INTEGER NOT NULL REFERENCES stage_runs(id) ON DELETE CASCADE,
    name      TEXT NOT NULL,
    step      INTEGER NOT NULL,
    data      BLOB NOT NULL,
    saved_at  REAL NOT NULL,
    PRIMARY KEY (run_id, name)
) WITHOUT ROWID;
