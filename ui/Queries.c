/* Queries.c: the dashboard's reads. Every statement is finalized before returning. */
#include "Queries.h"
#include "Format.h"
#include "db.h"
#include "results.h"
#include "util.h"
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

/* Text column or "" (never NULL). */
static const char *col_text(sqlite3_stmt *st, int c) {
    const unsigned char *t = sqlite3_column_text(st, c);
    return t ? (const char *)t : "";
}

static char *col_dup(sqlite3_stmt *st, int c) {
    return sqlite3_column_type(st, c) == SQLITE_NULL ? NULL : tr_strdup(col_text(st, c));
}

/* Grow the array p so that index n fits. */
#define GROW(p, n, cap) do { if ((n) >= (cap)) { (cap) = (cap) ? 2 * (cap) : 64; \
    (p) = tr_realloc((p), (size_t)(cap) * sizeof *(p)); } } while (0)

int Queries_stage(sqlite3 *db, const char *dataset, int stage, StageInfo *si) {
    memset(si, 0, sizeof *si);
    si->stage = stage;
    si->state = stage_get_state(db, dataset, stage_defs[stage].name, &si->run);
    if (!si->run) return 0;
    stage_run_info ri;
    if (stage_run_get(db, si->run, &ri) < 0) return -1;
    si->progress = ri.progress;
    si->pid = ri.pid;
    si->started_at = ri.started_at;
    si->updated_at = ri.updated_at;
    si->ended_at = ri.ended_at;
    snprintf(si->message, sizeof si->message, "%s", ri.message);
    snprintf(si->error, sizeof si->error, "%s", ri.error);
    si->upstream_run = ri.upstream_run;
    char *params = stage_run_params(db, si->run);
    snprintf(si->params, sizeof si->params, "%s", params ? params : "");
    free(params);
    return 0;
}

int Queries_datasets(sqlite3 *db, char (*names)[128], int max) {
    sqlite3_stmt *st = db_prep(db, "SELECT name FROM datasets ORDER BY ingested_at DESC, name");
    int n = 0;
    while (st && n < max && sqlite3_step(st) == SQLITE_ROW)
        snprintf(names[n++], 128, "%s", col_text(st, 0));
    sqlite3_finalize(st);
    return n;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

int Queries_dataset(sqlite3 *db, const char *dataset, DatasetInfo *di) {
    memset(di, 0, sizeof *di);
    di->id = db_dataset_id(db, dataset);
    if (di->id < 0) return -1;
    sqlite3_stmt *st = db_prep(db, "SELECT n_users, n_items, has_timestamps, ingested_at, source, format "
                                   "FROM datasets WHERE id=?");
    if (!st) return -1;
    sqlite3_bind_int64(st, 1, di->id);
    if (sqlite3_step(st) == SQLITE_ROW) {
        di->n_users = sqlite3_column_int(st, 0);
        di->n_items = sqlite3_column_int(st, 1);
        di->has_ts = sqlite3_column_int(st, 2);
        di->ingested_at = sqlite3_column_double(st, 3);
        snprintf(di->source, sizeof di->source, "%s", col_text(st, 4));
        snprintf(di->format, sizeof di->format, "%s", col_text(st, 5));
    }
    sqlite3_finalize(st);
    di->seq_len = tr_calloc((size_t)di->n_users + 1, sizeof *di->seq_len);
    di->popularity = tr_calloc((size_t)di->n_items + 1, sizeof *di->popularity);
    st = db_prep(db, "SELECT uid, iid, split FROM interactions WHERE dataset_id=?");
    if (!st) { DatasetInfo_free(di); return -1; }
    sqlite3_bind_int64(st, 1, di->id);
    while (sqlite3_step(st) == SQLITE_ROW) {
        int u = sqlite3_column_int(st, 0), i = sqlite3_column_int(st, 1), s = sqlite3_column_int(st, 2);
        if (u >= 0 && u < di->n_users) di->seq_len[u]++;
        if (i >= 0 && i < di->n_items) di->popularity[i]++;
        di->n++;
        if (s == 0) di->n_train++; else if (s == 1) di->n_valid++; else di->n_test++;
    }
    sqlite3_finalize(st);
    if (di->n_users > 0) {
        int64_t *sorted = tr_malloc((size_t)di->n_users * sizeof *sorted);
        memcpy(sorted, di->seq_len, (size_t)di->n_users * sizeof *sorted);
        qsort(sorted, (size_t)di->n_users, sizeof *sorted, cmp_i64);
        int nu = di->n_users;
        di->len_min = (int)sorted[0];
        di->len_max = (int)sorted[nu - 1];
        di->len_median = (int)(nu % 2 ? sorted[nu / 2] : (sorted[nu / 2 - 1] + sorted[nu / 2]) / 2);
        di->len_mean = (double)di->n / nu;
        free(sorted);
    }
    if (di->n_users && di->n_items) di->density = (double)di->n / ((double)di->n_users * di->n_items);
    return 0;
}

void DatasetInfo_free(DatasetInfo *di) {
    free(di->seq_len);
    free(di->popularity);
    di->seq_len = di->popularity = NULL;
}

/* Users or items with their interaction counts, in id order. */
static int entities(sqlite3 *db, const char *sql, int64_t dsid, EntityRow **rows, int has_name) {
    *rows = NULL;
    sqlite3_stmt *st = db_prep(db, sql);
    if (!st) return 0;
    sqlite3_bind_int64(st, 1, dsid);
    int n = 0, cap = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        GROW(*rows, n, cap);
        EntityRow *r = &(*rows)[n++];
        r->id = sqlite3_column_int(st, 0);
        r->orig = tr_strdup(col_text(st, 1));
        r->len = sqlite3_column_int(st, 2);
        r->name = has_name ? col_dup(st, 3) : NULL;
    }
    sqlite3_finalize(st);
    return n;
}

int Queries_users(sqlite3 *db, int64_t dsid, EntityRow **rows) {
    return entities(db, "SELECT u.uid, u.orig_id, (SELECT count(*) FROM interactions i WHERE "
                        "i.dataset_id=u.dataset_id AND i.uid=u.uid) FROM users u WHERE u.dataset_id=? "
                        "ORDER BY u.uid", dsid, rows, 0);
}

int Queries_items(sqlite3 *db, int64_t dsid, EntityRow **rows) {
    int n = entities(db, "SELECT iid, orig_id, 0, name FROM items WHERE dataset_id=? ORDER BY iid",
                     dsid, rows, 1);
    /* Popularity in one pass over the interactions rather than a subquery per item. */
    sqlite3_stmt *st = db_prep(db, "SELECT iid, count(*) FROM interactions WHERE dataset_id=? GROUP BY iid");
    if (!st) return n;
    sqlite3_bind_int64(st, 1, dsid);
    while (sqlite3_step(st) == SQLITE_ROW) {
        int i = sqlite3_column_int(st, 0);
        if (i >= 0 && i < n && (*rows)[i].id == i) (*rows)[i].len = sqlite3_column_int(st, 1);
    }
    sqlite3_finalize(st);
    return n;
}

void EntityRow_free(EntityRow *rows, int n) {
    for (int i = 0; i < n; i++) { free(rows[i].orig); free(rows[i].name); }
    free(rows);
}

/* Parse a whole non-negative decimal number; -1 if s is not one. */
static int parse_id(const char *s) {
    if (!*s) return -1;
    long v = 0;
    for (const char *p = s; *p; p++) {
        if (!isdigit((unsigned char)*p) || v > 100000000) return -1;
        v = v * 10 + (*p - '0');
    }
    return (int)v;
}

/* Shared by users and items: #N, exact orig_id, then N as an id. */
static int find_entity(sqlite3 *db, int64_t dsid, const char *q, const char *table, const char *idcol) {
    while (*q == ' ') q++;
    if (q[0] == '#') {
        int id = parse_id(q + 1);
        if (id < 0) return -1;
        return (int)db_query_i64(db, -1, "SELECT %s FROM %s WHERE dataset_id=%lld AND %s=%d",
                                 idcol, table, (long long)dsid, idcol, id);
    }
    int r = (int)db_query_i64(db, -1, "SELECT %s FROM %s WHERE dataset_id=%lld AND orig_id=%Q",
                              idcol, table, (long long)dsid, q);
    if (r >= 0) return r;
    int id = parse_id(q);
    if (id < 0) return -1;
    return (int)db_query_i64(db, -1, "SELECT %s FROM %s WHERE dataset_id=%lld AND %s=%d", idcol,
                             table, (long long)dsid, idcol, id);
}

int Queries_findUser(sqlite3 *db, int64_t dsid, const char *q) {
    return find_entity(db, dsid, q, "users", "uid");
}

int Queries_findItem(sqlite3 *db, int64_t dsid, const char *q) {
    int r = find_entity(db, dsid, q, "items", "iid");
    if (r >= 0 || !*q) return r;
    char *like = sqlite3_mprintf("%%%s%%", q);
    r = (int)db_query_i64(db, -1, "SELECT iid FROM items WHERE dataset_id=%lld AND name LIKE %Q "
                                  "ORDER BY iid LIMIT 1", (long long)dsid, like);
    sqlite3_free(like);
    return r;
}

int Queries_history(sqlite3 *db, int64_t dsid, int uid, HistRow **rows) {
    *rows = NULL;
    sqlite3_stmt *st = db_prep(db, "SELECT i.pos, i.iid, i.split, coalesce(i.ts, -1), it.name, it.orig_id "
                                   "FROM interactions i LEFT JOIN items it ON it.dataset_id=i.dataset_id "
                                   "AND it.iid=i.iid WHERE i.dataset_id=? AND i.uid=? ORDER BY i.pos");
    if (!st) return 0;
    sqlite3_bind_int64(st, 1, dsid);
    sqlite3_bind_int(st, 2, uid);
    int n = 0, cap = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        GROW(*rows, n, cap);
        HistRow *r = &(*rows)[n++];
        r->pos = sqlite3_column_int(st, 0);
        r->iid = sqlite3_column_int(st, 1);
        r->split = sqlite3_column_int(st, 2);
        r->ts = sqlite3_column_int64(st, 3);
        r->name = col_dup(st, 4);
        r->orig = col_dup(st, 5);
    }
    sqlite3_finalize(st);
    return n;
}

void HistRow_free(HistRow *rows, int n) {
    for (int i = 0; i < n; i++) { free(rows[i].name); free(rows[i].orig); }
    free(rows);
}

int64_t Queries_tokenRun(sqlite3 *db, const char *dataset) {
    if (!db_table_exists(db, "tokens")) return 0;
    return stage_current_run(db, dataset, "tokenize");
}

int Queries_tokens(sqlite3 *db, int64_t run, const char *entity, int idx, int *codes) {
    if (!run) return 0;
    sqlite3_stmt *st = db_prep(db, "SELECT book, code FROM tokens WHERE run_id=? AND entity=? AND idx=? "
                                   "ORDER BY book");
    if (!st) return 0;
    sqlite3_bind_int64(st, 1, run);
    sqlite3_bind_text(st, 2, entity, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 3, idx);
    int k = 0;
    for (int i = 0; i < Q_MAX_BOOKS; i++) codes[i] = -1;
    while (sqlite3_step(st) == SQLITE_ROW) {
        int b = sqlite3_column_int(st, 0);
        if (b < 0 || b >= Q_MAX_BOOKS) continue;
        codes[b] = sqlite3_column_int(st, 1);
        if (b + 1 > k) k = b + 1;
    }
    sqlite3_finalize(st);
    return k;
}

char *Queries_prompt(sqlite3 *db, int64_t dsid, int64_t run, int uid, int limit) {
    int codes[Q_MAX_BOOKS];
    int k = Queries_tokens(db, run, "user", uid, codes);
    if (!k) return NULL;
    char user[256];
    Format_userTokens(codes, k, user, sizeof user);
    HistRow *h;
    int n = Queries_history(db, dsid, uid, &h);
    int end = n;
    while (end > 0 && h[end - 1].split == 2) end--;       /* everything before the test item */
    int start = end > limit ? end - limit : 0;
    size_t cap = 256 + (size_t)(end - start) * 64, len = 0;
    char *items = tr_malloc(cap);
    items[0] = 0;
    int ok = 1;
    for (int i = start; i < end && ok; i++) {
        int c[Q_MAX_BOOKS];
        int ki = Queries_tokens(db, run, "item", h[i].iid, c);
        if (!ki) { ok = 0; break; }
        char t[256];
        Format_itemTokens(c, ki, t, sizeof t);
        size_t tl = strlen(t);
        if (len + tl + 2 > cap) { cap = 2 * cap + tl; items = tr_realloc(items, cap); }
        if (len) items[len++] = ' ';
        memcpy(items + len, t, tl + 1);
        len += tl;
    }
    HistRow_free(h, n);
    char *p = ok ? Format_prompt(user, items) : NULL;
    free(items);
    return p;
}

int64_t Queries_recRun(sqlite3 *db, const char *dataset) {
    if (!db_table_exists(db, "recommendations")) return 0;
    return stage_current_run(db, dataset, "evaluate");
}

int Queries_recs(sqlite3 *db, int64_t dsid, int64_t run, int uid, int limit, RecRow **rows) {
    *rows = NULL;
    if (!run) return 0;
    sqlite3_stmt *st = db_prep(db,
        "SELECT r.rank, r.iid, r.score, coalesce((SELECT max(i.split) FROM interactions i WHERE "
        "i.dataset_id=?1 AND i.uid=r.uid AND i.iid=r.iid AND i.split>0), 0), it.name "
        "FROM recommendations r LEFT JOIN items it ON it.dataset_id=?1 AND it.iid=r.iid "
        "WHERE r.run_id=?2 AND r.uid=?3 ORDER BY r.rank LIMIT ?4");
    if (!st) return 0;
    sqlite3_bind_int64(st, 1, dsid);
    sqlite3_bind_int64(st, 2, run);
    sqlite3_bind_int(st, 3, uid);
    sqlite3_bind_int(st, 4, limit);
    int n = 0, cap = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        GROW(*rows, n, cap);
        RecRow *r = &(*rows)[n++];
        r->rank = sqlite3_column_int(st, 0);
        r->iid = sqlite3_column_int(st, 1);
        r->score = sqlite3_column_double(st, 2);
        r->mark = sqlite3_column_int(st, 3);
        r->name = col_dup(st, 4);
    }
    sqlite3_finalize(st);
    return n;
}

void RecRow_free(RecRow *rows, int n) {
    for (int i = 0; i < n; i++) free(rows[i].name);
    free(rows);
}

int Queries_sharing(sqlite3 *db, int64_t dsid, int64_t run, int iid, int limit, ShareRow **rows) {
    *rows = NULL;
    if (!run) return 0;
    sqlite3_stmt *st = db_prep(db,
        "SELECT t2.idx, count(*) AS shared, it.name FROM tokens t1 JOIN tokens t2 ON t2.run_id=t1.run_id "
        "AND t2.entity='item' AND t2.book=t1.book AND t2.code=t1.code AND t2.idx<>t1.idx "
        "LEFT JOIN items it ON it.dataset_id=?1 AND it.iid=t2.idx "
        "WHERE t1.run_id=?2 AND t1.entity='item' AND t1.idx=?3 "
        "GROUP BY t2.idx ORDER BY shared DESC, t2.idx LIMIT ?4");
    if (!st) return 0;
    sqlite3_bind_int64(st, 1, dsid);
    sqlite3_bind_int64(st, 2, run);
    sqlite3_bind_int(st, 3, iid);
    sqlite3_bind_int(st, 4, limit);
    int n = 0, cap = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        GROW(*rows, n, cap);
        ShareRow *r = &(*rows)[n++];
        r->iid = sqlite3_column_int(st, 0);
        r->shared = sqlite3_column_int(st, 1);
        r->name = col_dup(st, 2);
    }
    sqlite3_finalize(st);
    return n;
}

void ShareRow_free(ShareRow *rows, int n) {
    for (int i = 0; i < n; i++) free(rows[i].name);
    free(rows);
}

int Queries_books(sqlite3 *db, int64_t run, const char *entity) {
    if (!run) return 0;
    return (int)db_query_i64(db, 0, "SELECT max(book)+1 FROM tokens WHERE run_id=%lld AND entity=%Q",
                             (long long)run, entity);
}

int Queries_codeUsage(sqlite3 *db, int64_t run, const char *entity, int book, int64_t **counts) {
    return results_code_usage(db, run, entity, book, counts);
}

int Queries_collisions(sqlite3 *db, int64_t run, const char *entity, Collision **rows) {
    *rows = NULL;
    if (!run) return 0;
    sqlite3_stmt *st = db_prep(db,
        "WITH k AS (SELECT idx, group_concat(code, '-') AS key FROM "
        "(SELECT idx, book, code FROM tokens WHERE run_id=?1 AND entity=?2 ORDER BY idx, book) "
        "GROUP BY idx) "
        "SELECT key, count(*), group_concat(idx, ' ') FROM (SELECT key, idx FROM k ORDER BY idx) "
        "GROUP BY key HAVING count(*) > 1 ORDER BY count(*) DESC, min(idx)");
    if (!st) return 0;
    sqlite3_bind_int64(st, 1, run);
    sqlite3_bind_text(st, 2, entity, -1, SQLITE_STATIC);
    int n = 0, cap = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        GROW(*rows, n, cap);
        Collision *c = &(*rows)[n++];
        snprintf(c->key, sizeof c->key, "%s", col_text(st, 0));
        int m = sqlite3_column_int(st, 1);
        c->members = tr_calloc((size_t)m, sizeof *c->members);
        c->n = 0;
        const char *p = col_text(st, 2);
        while (*p && c->n < m) {
            c->members[c->n++] = (int)strtol(p, (char **)&p, 10);
            while (*p == ' ') p++;
        }
    }
    sqlite3_finalize(st);
    return n;
}

void Collision_free(Collision *rows, int n) {
    for (int i = 0; i < n; i++) free(rows[i].members);
    free(rows);
}

int Queries_metricRuns(sqlite3 *db, const char *dataset, RunRow **rows) {
    *rows = NULL;
    int64_t *ids;
    int nid = stage_run_ids(db, dataset, &ids);
    sqlite3_stmt *st = nid > 0 ? db_prep(db, "SELECT count(*) FROM metrics_log WHERE run_id=?") : NULL;
    int n = 0, cap = 0;
    for (int i = 0; st && i < nid; i++) {
        stage_run_info ri;
        sqlite3_bind_int64(st, 1, ids[i]);
        int64_t points = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
        sqlite3_reset(st);
        if (points <= 0 || stage_run_get(db, ids[i], &ri) != 0) continue;
        GROW(*rows, n, cap);
        RunRow *r = &(*rows)[n++];
        r->id = ids[i];
        snprintf(r->stage, sizeof r->stage, "%s", ri.stage);
        snprintf(r->status, sizeof r->status, "%s", ri.status);
        r->points = points;
    }
    sqlite3_finalize(st);
    free(ids);
    return n;
}

int Queries_metricNames(sqlite3 *db, int64_t run, char ***names) {
    *names = NULL;
    sqlite3_stmt *st = db_prep(db, "SELECT DISTINCT name FROM metrics_log WHERE run_id=? "
                                   "ORDER BY name<>'loss', name");
    if (!st) return 0;
    sqlite3_bind_int64(st, 1, run);
    int n = 0, cap = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        GROW(*names, n, cap);
        (*names)[n++] = tr_strdup(col_text(st, 0));
    }
    sqlite3_finalize(st);
    return n;
}

int Queries_series(sqlite3 *db, int64_t run, const char *name, double **steps, double **values) {
    return results_series(db, run, name, steps, values);
}

static void push(char ***argv, int *n, int *cap, const char *s) {
    GROW(*argv, *n + 1, *cap);
    (*argv)[(*n)++] = s ? tr_strdup(s) : NULL;
}

static int builtin_dataset(const char *name) {
    static const char *const b[] = {"lastfm", "ml-1m", "beauty", "clothing"};
    for (size_t i = 0; i < sizeof b / sizeof *b; i++) if (!strcmp(b[i], name)) return 1;
    return 0;
}

char **Queries_launchArgv(sqlite3 *db, const char *exe, const char *dbpath, const char *dataset,
                          int stage, int force) {
    char **argv = NULL;
    int n = 0, cap = 0;
    push(&argv, &n, &cap, exe);
    /* the stage's command after "tokenrec", word by word */
    const char *cmd = stage_defs[stage].command;
    if (!strncmp(cmd, "tokenrec ", 9)) cmd += 9;
    while (*cmd) {
        size_t len = strcspn(cmd, " ");
        char word[64];
        snprintf(word, sizeof word, "%.*s", (int)len, cmd);
        push(&argv, &n, &cap, word);
        cmd += len + strspn(cmd + len, " ");
    }
    push(&argv, &n, &cap, "--db");
    push(&argv, &n, &cap, dbpath);
    push(&argv, &n, &cap, "--dataset");
    push(&argv, &n, &cap, dataset);
    if (stage == STAGE_INGEST && db && !builtin_dataset(dataset)) {
        /* The user's own file: the source recorded by ingest and the settings of its last run. */
        sqlite3_stmt *st = db_prep(db, "SELECT source FROM datasets WHERE name=?");
        if (st) {
            sqlite3_bind_text(st, 1, dataset, -1, SQLITE_STATIC);
            if (sqlite3_step(st) == SQLITE_ROW) {
                push(&argv, &n, &cap, "--file");
                push(&argv, &n, &cap, col_text(st, 0));
            }
            sqlite3_finalize(st);
        }
        int64_t last = 0;         /* the latest ingest run, whatever its state */
        stage_get_state(db, dataset, stage_defs[STAGE_INGEST].name, &last);
        char *params = last ? stage_run_params(db, last) : NULL;
        st = params ? db_prep(db, "SELECT key, value, type FROM json_each(?) "
                                  "WHERE key NOT IN ('dataset', 'input') AND type<>'null'") : NULL;
        if (st) {
            sqlite3_bind_text(st, 1, params, -1, SQLITE_STATIC);
            while (sqlite3_step(st) == SQLITE_ROW) {
                const char *key = col_text(st, 0);
                char opt[96];
                snprintf(opt, sizeof opt, "--%s", key);
                if (!strcmp(key, "header")) {         /* the one flag among ingest's settings */
                    if (sqlite3_column_int(st, 1)) push(&argv, &n, &cap, opt);
                    continue;
                }
                push(&argv, &n, &cap, opt);
                push(&argv, &n, &cap, col_text(st, 1));
            }
            sqlite3_finalize(st);
        }
        free(params);
        tr_error_clear();
    }
    if (force) push(&argv, &n, &cap, "--force");
    push(&argv, &n, &cap, NULL);
    return argv;
}

void Queries_freeArgv(char **argv) {
    if (!argv) return;
    for (char **p = argv; *p; p++) free(*p);
    free(argv);
}
