-- 003_tokenize.sql: the MQ-Tokenizer stage. Each entity (user, item) gets K tokens, one code
-- per codebook; the trained tokenizers are kept so new entities can be tokenized later.

-- The tokens: book 0..K-1 hold the codes; with --disambiguate, book K holds the extra token
-- (0 for the first entity of a tuple shared by several, 1, 2, ... for the others).
CREATE TABLE tokens (run_id INTEGER NOT NULL REFERENCES stage_runs(id) ON DELETE CASCADE,
  entity TEXT NOT NULL, idx INTEGER NOT NULL, book INTEGER NOT NULL, code INTEGER NOT NULL,
  PRIMARY KEY (run_id, entity, idx, book)) WITHOUT ROWID;
CREATE INDEX tokens_by_code ON tokens (run_id, entity, book, code);

-- The trained tokenizer of each entity type (the checkpoint with the best holdout
-- reconstruction). weights: float32 encoders and decoder in src/core/mq.h's layout; codebooks:
-- float32 (K, L, d_c); bn_stats: float32 BatchNorm running mean/var (mq.h's layout).
CREATE TABLE tokenizers (
    run_id      INTEGER NOT NULL REFERENCES stage_runs(id) ON DELETE CASCADE,
    entity      TEXT NOT NULL,          -- 'user' or 'item'
    source      TEXT NOT NULL,          -- cf_vectors.kind it was trained on: 'ego' or 'mean'
    d_in        INTEGER NOT NULL,
    h1          INTEGER NOT NULL,
    h2          INTEGER NOT NULL,
    d_c         INTEGER NOT NULL,
    K           INTEGER NOT NULL,
    L           INTEGER NOT NULL,
    rho         REAL NOT NULL,
    dropout1    REAL NOT NULL,
    dropout2    REAL NOT NULL,
    beta        REAL NOT NULL,
    bn_eps      REAL NOT NULL,
    best_epoch  INTEGER NOT NULL,
    epochs      INTEGER NOT NULL,
    weights     BLOB NOT NULL,
    codebooks   BLOB NOT NULL,
    bn_stats    BLOB NOT NULL,
    PRIMARY KEY (run_id, entity)
) WITHOUT ROWID;

-- Per run and entity type: how good and how distinct the tokens are.
CREATE TABLE tokenize_stats (
    run_id          INTEGER NOT NULL REFERENCES stage_runs(id) ON DELETE CASCADE,
    entity          TEXT NOT NULL,
    n               INTEGER NOT NULL,   -- entities tokenized by the run
    n_train         INTEGER NOT NULL,   -- of which the tokenizer trained on
    n_holdout       INTEGER NOT NULL,   -- of which held out for checkpoint selection
    n_excluded      INTEGER NOT NULL,   -- left out entirely (--holdout-users), not tokenized
    holdout_mse     REAL NOT NULL,      -- eval-mode reconstruction MSE on the holdout, best epoch
    input_var       REAL NOT NULL,      -- mean per-dimension variance of the input vectors
    distinct_tuples INTEGER NOT NULL,   -- distinct K-tuples
    largest_group   INTEGER NOT NULL,   -- most entities sharing one K-tuple
    collisions      INTEGER NOT NULL,   -- n - distinct_tuples
    disambiguated   INTEGER NOT NULL,   -- 1 if book K holds the extra token
    seconds         REAL NOT NULL,      -- training time of this tokenizer
    PRIMARY KEY (run_id, entity)
) WITHOUT ROWID;

CREATE TABLE tokenize_book_stats (
    run_id      INTEGER NOT NULL REFERENCES stage_runs(id) ON DELETE CASCADE,
    entity      TEXT NOT NULL,
    book        INTEGER NOT NULL,
    used        INTEGER NOT NULL,       -- distinct codes used
    perplexity  REAL NOT NULL,          -- exp(entropy) of the code distribution
    PRIMARY KEY (run_id, entity, book)
) WITHOUT ROWID;

-- Entities tokenized after the run through its frozen tokenizer (tokenize --new-users /
-- --new-items); their tokens are in tokens under the same run_id.
CREATE TABLE tokens_unseen (
    run_id      INTEGER NOT NULL REFERENCES stage_runs(id) ON DELETE CASCADE,
    entity      TEXT NOT NULL,
    idx         INTEGER NOT NULL,
    origin      TEXT NOT NULL,          -- 'cf': its cf_vectors row; 'propagated': from neighbours
    added_at    REAL NOT NULL,
    PRIMARY KEY (run_id, entity, idx)
) WITHOUT ROWID;
