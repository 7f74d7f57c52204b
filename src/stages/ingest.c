/* ingest.c: dataset readers, the k-core filter, numbering, the split, and the table writes. */
#include "ingest.h"
#include "cli.h"
#include "csvread.h"
#include "db.h"
#include "stage.h"
#include "util.h"
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- string -> id map (open addressing; keys live in the caller's names array) ---- */

typedef struct {
    int32_t *slot;      /* id + 1, 0 = empty */
    size_t   cap;       /* power of two */
    size_t   n;
} strmap;

static uint64_t hash_str(const char *s, size_t n) { return tr_hash64(s, n, 0); }

/* Find s in the map; if absent, add it as id *count (names grows with it). */
static int32_t strmap_intern(strmap *m, char ***names, int32_t *count, const char *s) {
    if (m->n * 2 >= m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 1024;
        int32_t *slot = tr_calloc(cap, sizeof *slot);
        for (size_t i = 0; i < m->cap; i++) {
            if (!m->slot[i]) continue;
            const char *k = (*names)[m->slot[i] - 1];
            size_t j = hash_str(k, strlen(k)) & (cap - 1);
            while (slot[j]) j = (j + 1) & (cap - 1);
            slot[j] = m->slot[i];
        }
        free(m->slot);
        m->slot = slot;
        m->cap = cap;
    }
    size_t len = strlen(s);
    size_t j = hash_str(s, len) & (m->cap - 1);
    while (m->slot[j]) {
        if (!strcmp((*names)[m->slot[j] - 1], s)) return m->slot[j] - 1;
        j = (j + 1) & (m->cap - 1);
    }
    int32_t id = (*count)++;
    if ((id & (id - 1)) == 0 || id < 16)   /* grow names at powers of two */
        *names = tr_realloc(*names, (size_t)(id < 16 ? 16 : 2 * id) * sizeof **names);
    (*names)[id] = tr_strdup(s);
    m->slot[j] = id + 1;
    m->n++;
    return id;
}

/* Look s up without adding it; -1 when absent. */
static int32_t strmap_find(const strmap *m, char **names, const char *s) {
    if (!m->cap) return -1;
    size_t j = hash_str(s, strlen(s)) & (m->cap - 1);
    while (m->slot[j]) {
        if (!strcmp(names[m->slot[j] - 1], s)) return m->slot[j] - 1;
        j = (j + 1) & (m->cap - 1);
    }
    return -1;
}

static void strmap_free(strmap *m) { if (m) free(m->slot); free(m); }

void ingest_raw_init(ingest_raw *r) {
    memset(r, 0, sizeof *r);
    r->umap = tr_calloc(1, sizeof(strmap));
    r->imap = tr_calloc(1, sizeof(strmap));
}

void ingest_raw_free(ingest_raw *r) {
    free(r->user); free(r->item); free(r->ts);
    for (int32_t i = 0; i < r->n_users; i++) free(r->user_orig[i]);
    for (int32_t i = 0; i < r->n_items; i++) free(r->item_orig[i]);
    free(r->user_orig); free(r->item_orig);
    strmap_free(r->umap); strmap_free(r->imap);
    memset(r, 0, sizeof *r);
}

void ingest_data_free(ingest_data *d) {
    free(d->off); free(d->item); free(d->ts);
    for (int32_t i = 0; i < d->n_users; i++) free(d->user_orig[i]);
    for (int32_t i = 0; i < d->n_items; i++) {
        free(d->item_orig[i]);
        if (d->item_name) free(d->item_name[i]);
    }
    free(d->user_orig); free(d->item_orig); free(d->item_name);
    memset(d, 0, sizeof *d);
}

void ingest_raw_add(ingest_raw *r, const char *user, const char *item, int64_t ts) {
    if (r->n == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 4096;
        r->user = tr_realloc(r->user, (size_t)r->cap * sizeof *r->user);
        r->item = tr_realloc(r->item, (size_t)r->cap * sizeof *r->item);
        r->ts = tr_realloc(r->ts, (size_t)r->cap * sizeof *r->ts);
    }
    r->user[r->n] = strmap_intern(r->umap, &r->user_orig, &r->n_users, user);
    r->item[r->n] = strmap_intern(r->imap, &r->item_orig, &r->n_items, item);
    r->ts[r->n] = ts;
    r->n++;
}

/* ---- readers ---- */

/* Strip a trailing CR (CRLF files) in place. */
static const char *field(const csv_row *row, int col) {
    char *s = row->f[col];
    size_t n = row->len[col];
    if (n && s[n - 1] == '\r') s[n - 1] = 0;
    return s;
}

static int nonempty_id(const csv_row *row, int col, const char *what) {
    const char *s = field(row, col);
    if (!*s) return tr_error("%s:%d: field %d: expected %s, found an empty field", row->path,
                             row->line, col + 1, what);
    return 0;
}

/* A format of four fields per line: user, item, another field, timestamp. */
typedef struct {
    const char *format, *delim, *fields; /* name, separator, the fields as the error names them */
    int header;                          /* 1: the first line is a header */
    const char *what[4];                 /* each field checked as an integer as this; NULL: not checked */
} four_fields;

static const four_fields hetrec_lastfm = {"hetrec-lastfm", "\t", "userID, artistID, tagID, timestamp", 1,
    {"a userID", "an artistID", "a tagID", "a timestamp in milliseconds"}};
static const four_fields ml1m_ratings = {"ml-1m-ratings", "::", "UserID::MovieID::Rating::Timestamp", 0,
    {"a UserID", "a MovieID", NULL, "a Unix timestamp"}};

typedef struct { ingest_raw *r; const four_fields *f; } four_ctx;

/* One line of a four_fields format: its integer fields checked in order, then added. */
static int four_row(void *ctx, const csv_row *row) {
    const four_ctx *c = ctx;
    long long v[4] = {0};
    if (csv_need_fields(row, 4, c->f->fields) != 0) return -1;
    for (int k = 0; k < 4; k++)
        if (c->f->what[k] && csv_field_i64(row, k, c->f->what[k], &v[k]) != 0) return -1;
    ingest_raw_add(c->r, field(row, 0), field(row, 1), v[3]);
    return 0;
}

/* Read a four_fields file into r. */
static int read_four(ingest_raw *r, const char *path, const four_fields *f) {
    r->has_ts = 1;
    r->format = f->format;
    four_ctx c = {r, f};
    return csvread_file(path, f->delim, f->header, four_row, &c);
}

int ingest_read_hetrec_lastfm(ingest_raw *r, const char *path) {
    return read_four(r, path, &hetrec_lastfm);
}

int ingest_read_ml1m_ratings(ingest_raw *r, const char *path) {
    return read_four(r, path, &ml1m_ratings);
}

typedef struct { ingest_raw *r; strmap seen; char **seen_names; int32_t n_seen; int *first_line; } seq_ctx;

static int sequence_row(void *ctx, const csv_row *row) {
    seq_ctx *c = ctx;
    int nf = row->n;
    while (nf > 0 && (row->len[nf - 1] == 0 || (row->len[nf - 1] == 1 && row->f[nf - 1][0] == '\r')))
        nf--;                                 /* a trailing space or CR */
    if (nf < 2)
        return tr_error("%s:%d: expected a user id followed by at least one item id", row->path,
                        row->line);
    if (nonempty_id(row, 0, "a user id") != 0) return -1;
    int32_t before = c->n_seen;
    int32_t id = strmap_intern(&c->seen, &c->seen_names, &c->n_seen, field(row, 0));
    if (id < before)
        return tr_error("%s:%d: user '%s' already had a line (line %d); expected one line per user",
                        row->path, row->line, field(row, 0), c->first_line[id]);
    c->first_line = tr_realloc(c->first_line, (size_t)c->n_seen * sizeof *c->first_line);
    c->first_line[id] = row->line;
    for (int k = 1; k < nf; k++) {
        if (nonempty_id(row, k, "an item id (single spaces between ids)") != 0) return -1;
        ingest_raw_add(c->r, field(row, 0), field(row, k), c->r->n);
    }
    return 0;
}

int ingest_read_sequence(ingest_raw *r, const char *path) {
    r->has_ts = 0;
    r->format = "sequence";
    seq_ctx c = {0};
    c.r = r;
    int rc = csvread_file(path, " ", 0, sequence_row, &c);
    for (int32_t i = 0; i < c.n_seen; i++) free(c.seen_names[i]);
    free(c.seen_names); free(c.seen.slot); free(c.first_line);
    return rc;
}

typedef struct { ingest_raw *r; int ucol, icol, tcol; } delim_ctx;

static int delimited_row(void *ctx, const csv_row *row) {
    delim_ctx *c = ctx;
    int need = c->ucol > c->icol ? c->ucol : c->icol;
    if (c->tcol > need) need = c->tcol;
    if (row->n < need + 1)
        return tr_error("%s:%d: expected at least %d fields (user in %d, item in %d%s), found %d",
                        row->path, row->line, need + 1, c->ucol + 1, c->icol + 1,
                        c->tcol >= 0 ? ", time" : "", row->n);
    if (nonempty_id(row, c->ucol, "a user id") != 0 || nonempty_id(row, c->icol, "an item id") != 0)
        return -1;
    long long ts = c->r->n;
    if (c->tcol >= 0) {
        if (csv_field_i64(row, c->tcol, "a Unix timestamp", &ts) != 0) return -1;
    }
    ingest_raw_add(c->r, field(row, c->ucol), field(row, c->icol), ts);
    return 0;
}

int ingest_read_delimited(ingest_raw *r, const char *path, const char *delim, int header,
                          int user_col, int item_col, int time_col) {
    if (user_col < 0 || item_col < 0 || user_col == item_col)
        return tr_error("%s: the user and item columns must be two different columns", path);
    r->has_ts = time_col >= 0;
    r->format = "delimited";
    delim_ctx c = {r, user_col, item_col, time_col};
    return csvread_file(path, delim, header, delimited_row, &c);
}

/* ---- filtering, ordering, numbering ---- */

static const int64_t *sort_ts;
static int cmp_by_ts(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    int64_t tx = sort_ts[x], ty = sort_ts[y];
    if (tx != ty) return tx < ty ? -1 : 1;
    return x < y ? -1 : x > y;          /* file order breaks ties: a stable sort */
}

int ingest_build(const ingest_raw *r, int kcore, int ts_div, ingest_data *d) {
    memset(d, 0, sizeof *d);
    if (r->n == 0) return tr_error("%s: no interactions", r->source ? r->source : "input");
    if (kcore < 1) return tr_error("--kcore must be at least 1");
    int64_t n = r->n;
    /* 1. first occurrence of each (user, item) pair, via a hash set of 64-bit keys */
    size_t cap = 1;
    while (cap < (size_t)n * 2) cap <<= 1;
    uint64_t *set = tr_calloc(cap, sizeof *set);
    char *keep = tr_malloc((size_t)n);
    for (int64_t k = 0; k < n; k++) {
        uint64_t key = ((uint64_t)(uint32_t)r->user[k] << 32 | (uint32_t)r->item[k]) + 1;
        size_t j = (size_t)((key * 0x9E3779B97F4A7C15ull) >> 20) & (cap - 1);
        keep[k] = 1;
        while (set[j]) {
            if (set[j] == key) { keep[k] = 0; break; }
            j = (j + 1) & (cap - 1);
        }
        if (keep[k]) set[j] = key;
    }
    free(set);
    /* 2. iterative k-core over the unique pairs */
    int32_t *udeg = tr_calloc((size_t)r->n_users, sizeof *udeg);
    int32_t *ideg = tr_calloc((size_t)r->n_items, sizeof *ideg);
    for (int changed = 1; changed;) {
        memset(udeg, 0, (size_t)r->n_users * sizeof *udeg);
        memset(ideg, 0, (size_t)r->n_items * sizeof *ideg);
        for (int64_t k = 0; k < n; k++)
            if (keep[k]) { udeg[r->user[k]]++; ideg[r->item[k]]++; }
        changed = 0;
        for (int64_t k = 0; k < n; k++)
            if (keep[k] && (udeg[r->user[k]] < kcore || ideg[r->item[k]] < kcore)) {
                keep[k] = 0;
                changed = 1;
            }
    }
    /* 3. group by user (users in file order), each group sorted by time */
    int64_t *uoff = tr_calloc((size_t)r->n_users + 1, sizeof *uoff);
    for (int64_t k = 0; k < n; k++) if (keep[k]) uoff[r->user[k] + 1]++;
    for (int32_t u = 0; u < r->n_users; u++) uoff[u + 1] += uoff[u];
    int64_t total = uoff[r->n_users];
    if (total == 0) {
        free(keep); free(udeg); free(ideg); free(uoff);
        return tr_error("%s: nothing is left after the %d-core filter", r->source ? r->source : "input",
                        kcore);
    }
    int64_t *idx = tr_malloc((size_t)total * sizeof *idx);
    int64_t *fill = tr_malloc((size_t)r->n_users * sizeof *fill);
    memcpy(fill, uoff, (size_t)r->n_users * sizeof *fill);
    for (int64_t k = 0; k < n; k++) if (keep[k]) idx[fill[r->user[k]]++] = k;
    sort_ts = r->ts;
    for (int32_t u = 0; u < r->n_users; u++)
        if (r->has_ts && uoff[u + 1] - uoff[u] > 1)
            qsort(idx + uoff[u], (size_t)(uoff[u + 1] - uoff[u]), sizeof *idx, cmp_by_ts);
    /* 4. number the surviving users and items */
    int32_t *imap = tr_malloc((size_t)r->n_items * sizeof *imap);
    for (int32_t i = 0; i < r->n_items; i++) imap[i] = -1;
    int32_t nu = 0;
    for (int32_t u = 0; u < r->n_users; u++) nu += uoff[u + 1] > uoff[u];
    d->n_users = nu;
    d->n = total;
    d->off = tr_malloc(((size_t)nu + 1) * sizeof *d->off);
    d->item = tr_malloc((size_t)total * sizeof *d->item);
    d->ts = r->has_ts ? tr_malloc((size_t)total * sizeof *d->ts) : NULL;
    d->user_orig = tr_malloc((size_t)nu * sizeof *d->user_orig);
    d->item_orig = tr_malloc((size_t)r->n_items * sizeof *d->item_orig);
    int32_t uu = 0, ni = 0;
    int64_t o = 0;
    for (int32_t u = 0; u < r->n_users; u++) {
        if (uoff[u + 1] == uoff[u]) continue;
        d->off[uu] = o;
        d->user_orig[uu++] = tr_strdup(r->user_orig[u]);
        for (int64_t p = uoff[u]; p < uoff[u + 1]; p++) {
            int64_t k = idx[p];
            int32_t it = r->item[k];
            if (imap[it] < 0) {
                imap[it] = ni;
                d->item_orig[ni++] = tr_strdup(r->item_orig[it]);
            }
            d->item[o] = imap[it];
            if (d->ts) d->ts[o] = r->ts[k] / (ts_div > 0 ? ts_div : 1);
            o++;
        }
    }
    d->off[nu] = o;
    d->n_items = ni;
    free(keep); free(udeg); free(ideg); free(uoff); free(idx); free(fill); free(imap);
    return 0;
}

/* ---- names ---- */

typedef struct {
    ingest_data *d;
    strmap       map;
    char       **keys;
    int32_t      nkeys;
    int          id_col, name_col;
    int          latin1;
} names_ctx;

static int names_row(void *ctx, const csv_row *row) {
    names_ctx *c = ctx;
    int need = (c->id_col > c->name_col ? c->id_col : c->name_col) + 1;
    if (row->n < need)
        return tr_error("%s:%d: expected at least %d fields (id, name), found %d", row->path,
                        row->line, need, row->n);
    int32_t k = strmap_find(&c->map, c->keys, field(row, c->id_col));
    if (k < 0) return 0;                  /* an item the dataset does not keep */
    const char *nm = field(row, c->name_col);
    size_t n = strlen(nm);
    if (!c->latin1 && !utf8_valid(nm, n))
        return tr_error("%s:%d: field %d: expected UTF-8 text (use --encoding latin1)", row->path,
                        row->line, c->name_col + 1);
    free(c->d->item_name[k]);
    c->d->item_name[k] = c->latin1 ? latin1_to_utf8(nm, n) : tr_strdup(nm);
    return 0;
}

int ingest_load_names(ingest_data *d, const char *path, const char *delim, int header,
                      int id_col, int name_col, const char *encoding) {
    int latin1;
    if (!strcmp(encoding, "latin1") || !strcmp(encoding, "iso-8859-1")) latin1 = 1;
    else if (!strcmp(encoding, "utf-8") || !strcmp(encoding, "utf8")) latin1 = 0;
    else if (!strcmp(encoding, "auto")) {
        char *buf;
        size_t len;
        if (tr_read_file(path, &buf, &len) != 0) return -1;
        latin1 = !utf8_valid(buf, len);
        free(buf);
    } else
        return tr_error("--encoding: unknown encoding '%s'; expected auto, utf-8 or latin1", encoding);
    names_ctx c = {0};
    c.d = d;
    c.id_col = id_col;
    c.name_col = name_col;
    c.latin1 = latin1;
    /* the map holds the dataset's item ids first, so a lookup is an intern that finds */
    for (int32_t i = 0; i < d->n_items; i++) strmap_intern(&c.map, &c.keys, &c.nkeys, d->item_orig[i]);
    if (!d->item_name) d->item_name = tr_calloc((size_t)d->n_items, sizeof *d->item_name);
    int rc = csvread_file(path, delim, header, names_row, &c);
    for (int32_t i = 0; i < c.nkeys; i++) free(c.keys[i]);
    free(c.keys); free(c.map.slot);
    return rc;
}

/* ---- database ---- */

int ingest_write(sqlite3 *db, const char *name, const ingest_raw *r, const ingest_data *d, int kcore) {
    sqlite3_stmt *st = db_prep(db,
        "INSERT INTO datasets (name, source, format, kcore, n_users, n_items, n_interactions, "
        "has_timestamps, ingested_at) VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT(name) DO UPDATE SET "
        "source=excluded.source, format=excluded.format, kcore=excluded.kcore, "
        "n_users=excluded.n_users, n_items=excluded.n_items, n_interactions=excluded.n_interactions, "
        "has_timestamps=excluded.has_timestamps, ingested_at=excluded.ingested_at");
    if (!st) return -1;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, r->source ? r->source : "", -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, r->format ? r->format : "", -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 4, kcore);
    sqlite3_bind_int(st, 5, d->n_users);
    sqlite3_bind_int(st, 6, d->n_items);
    sqlite3_bind_int64(st, 7, d->n);
    sqlite3_bind_int(st, 8, d->ts != NULL);
    sqlite3_bind_double(st, 9, tr_now());
    int rc = db_step_done(db, st);
    sqlite3_finalize(st);
    if (rc) return -1;
    int64_t id = db_query_i64(db, -1, "SELECT id FROM datasets WHERE name=%Q", name);
    char *sql = sqlite3_mprintf("DELETE FROM interactions WHERE dataset_id=%lld;"
                                "DELETE FROM users WHERE dataset_id=%lld;"
                                "DELETE FROM items WHERE dataset_id=%lld;",
                                (long long)id, (long long)id, (long long)id);
    rc = db_exec(db, sql);
    sqlite3_free(sql);
    if (rc) return -1;

    sqlite3_stmt *su = db_prep(db, "INSERT INTO users (dataset_id, uid, orig_id) VALUES (?,?,?)");
    sqlite3_stmt *si = db_prep(db, "INSERT INTO items (dataset_id, iid, orig_id, name) VALUES (?,?,?,?)");
    sqlite3_stmt *sx = db_prep(db, "INSERT INTO interactions (dataset_id, uid, pos, iid, ts, split) "
                                   "VALUES (?,?,?,?,?,?)");
    rc = (su && si && sx) ? 0 : -1;
    for (int32_t u = 0; !rc && u < d->n_users; u++) {
        sqlite3_bind_int64(su, 1, id);
        sqlite3_bind_int(su, 2, u);
        sqlite3_bind_text(su, 3, d->user_orig[u], -1, SQLITE_STATIC);
        rc = db_step_done(db, su);
    }
    for (int32_t i = 0; !rc && i < d->n_items; i++) {
        sqlite3_bind_int64(si, 1, id);
        sqlite3_bind_int(si, 2, i);
        sqlite3_bind_text(si, 3, d->item_orig[i], -1, SQLITE_STATIC);
        if (d->item_name && d->item_name[i]) sqlite3_bind_text(si, 4, d->item_name[i], -1, SQLITE_STATIC);
        else sqlite3_bind_null(si, 4);
        rc = db_step_done(db, si);
    }
    /* Interactions go in 128 rows per statement: a million single-row steps spend more time
     * in the statement machinery than in the B-tree. */
    enum { ROWS = 128 };
    char *multi = sqlite3_mprintf("INSERT INTO interactions (dataset_id, uid, pos, iid, ts, split) VALUES (?,?,?,?,?,?)");
    for (int k = 1; k < ROWS; k++) {
        char *m2 = sqlite3_mprintf("%s,(?,?,?,?,?,?)", multi);
        sqlite3_free(multi);
        multi = m2;
    }
    sqlite3_stmt *sm = rc ? NULL : db_prep(db, multi);
    sqlite3_free(multi);
    if (!sm) rc = -1;
    int64_t total = d->n, k = 0;
    for (int32_t u = 0; !rc && u < d->n_users; u++) {
        int64_t len = d->off[u + 1] - d->off[u];
        for (int64_t p = 0; !rc && p < len; p++, k++) {
            int64_t x = d->off[u] + p;
            int bulk = total - (k - k % ROWS) >= ROWS;     /* this row's block is a full one */
            sqlite3_stmt *s = bulk ? sm : sx;
            int b = bulk ? (int)(k % ROWS) * 6 : 0;
            sqlite3_bind_int64(s, b + 1, id);
            sqlite3_bind_int(s, b + 2, u);
            sqlite3_bind_int64(s, b + 3, p);
            sqlite3_bind_int(s, b + 4, d->item[x]);
            if (d->ts) sqlite3_bind_int64(s, b + 5, d->ts[x]);
            else sqlite3_bind_null(s, b + 5);
            sqlite3_bind_int(s, b + 6, ingest_split_of(p, len));
            if (!bulk || k % ROWS == ROWS - 1) rc = db_step_done(db, s);
        }
    }
    sqlite3_finalize(sm);
    sqlite3_finalize(su); sqlite3_finalize(si); sqlite3_finalize(sx);
    return rc;
}

/* ---- the command ---- */

const char *ingest_data_dir(const char *opt, char *buf, int len) {
    if (opt && *opt) {
        if (!tr_dir_exists(opt)) { tr_error("--data-dir %s: no such directory", opt); return NULL; }
        return opt;
    }
    const char *env = getenv("TOKENREC_DATA_DIR");
    if (env && *env) {
        if (!tr_dir_exists(env)) { tr_error("TOKENREC_DATA_DIR=%s: no such directory", env); return NULL; }
        return env;
    }
    if (tr_dir_exists("../shared/datasets")) return "../shared/datasets";
    /* next to the source tree of the binary: <root>/build/tokenrec -> <root>/../shared */
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = 0;
        for (int up = 0; up < 3; up++) {
            char *s = strrchr(exe, '/');
            if (!s) break;
            *s = 0;
            snprintf(buf, (size_t)len, "%s/../shared/datasets", exe);
            if (tr_dir_exists(buf)) return buf;
        }
    }
    tr_error("no data directory: pass --data-dir DIR or set TOKENREC_DATA_DIR (see datasets/README.md)");
    return NULL;
}

static int hash_file(const char *path, uint64_t *h) {
    char *buf;
    size_t len;
    if (tr_read_file(path, &buf, &len) != 0) return -1;
    *h = tr_hash64(buf, len, *h);
    free(buf);
    return 0;
}

#define INGEST_PATH_MAX 4200

/* Where an item-names file is and how to read it. */
typedef struct { const char *file, *sep, *enc; int header, id_col, name_col; } names_spec;

/* Read a built-in dataset's files under the data directory into raw: p1 gets the path of
 * the interactions, p2 that of the item names (INGEST_PATH_MAX bytes each); *h the input's
 * hash, *ts_div the timestamps' unit, ns the names file and how to read it. */
static int read_builtin(const char *data_dir, const char *dataset, ingest_raw *raw, char *p1, char *p2,
                        uint64_t *h, int *ts_div, names_spec *ns) {
    char dirbuf[4096];
    const char *dir = ingest_data_dir(data_dir, dirbuf, sizeof dirbuf);
    if (!dir) return -1;
    if (!strcmp(dataset, "lastfm")) {
        snprintf(p1, INGEST_PATH_MAX, "%s/lastfm/raw/hetrec2011-lastfm-2k/user_taggedartists-timestamps.dat", dir);
        snprintf(p2, INGEST_PATH_MAX, "%s/lastfm/raw/hetrec2011-lastfm-2k/artists.dat", dir);
        raw->source = p1;
        *ts_div = 1000;
        ns->file = p2;
        return hash_file(p1, h) != 0 || ingest_read_hetrec_lastfm(raw, p1) != 0 ? -1 : 0;
    }
    if (!strcmp(dataset, "ml-1m")) {
        snprintf(p1, INGEST_PATH_MAX, "%s/ml-1m/raw/ratings.dat", dir);
        snprintf(p2, INGEST_PATH_MAX, "%s/ml-1m/raw/movies.dat", dir);
        ns->file = p2; ns->sep = "::"; ns->header = 0;
        if (!strcmp(ns->enc, "auto")) ns->enc = "latin1";
        raw->source = p1;
        if (tr_file_exists(p1))
            return hash_file(p1, h) != 0 || ingest_read_ml1m_ratings(raw, p1) != 0 ? -1 : 0;
        snprintf(p1, INGEST_PATH_MAX, "%s/ml-1m/derived/ml-1m_user_sequences.txt", dir);
        return hash_file(p1, h) != 0 || ingest_read_sequence(raw, p1) != 0 ? -1 : 0;
    }
    if (!strcmp(dataset, "beauty") || !strcmp(dataset, "clothing")) {
        snprintf(p1, INGEST_PATH_MAX, "%s/%s/tokenrec/user_sequence.txt", dir, dataset);
        raw->source = p1;
        return hash_file(p1, h) != 0 || ingest_read_sequence(raw, p1) != 0 ? -1 : 0;
    }
    return tr_error("ingest: unknown dataset '%s'; expected lastfm, ml-1m, beauty or clothing, "
                    "or give your own file with --file", dataset);
}

static const char *usage_ingest = "tokenrec ingest --dataset NAME [options]";
static const char *summary_ingest =
    "Read an interaction dataset, keep its k-core, split each user's chronological sequence\n"
    "(last item test, second to last valid, the rest train) and store it in the database.\n"
    "Built-in datasets: lastfm (hetrec2011 raw tag timestamps, TokenRec's LastFM), ml-1m\n"
    "(ratings.dat if present, else the derived sequences), beauty, clothing (TokenRec's\n"
    "user_sequence.txt). Your own data: --file PATH with --format sequence|delimited.";

int cmd_ingest(int argc, char **argv) {
    const char *dbpath = DB_DEFAULT_PATH, *dataset = NULL, *data_dir = NULL, *file = NULL;
    const char *format = "delimited", *delim = "\t", *names = NULL, *names_delim = "\t";
    const char *encoding = "auto";
    int kcore = 5, ucol = 1, icol = 2, tcol = 3, header = 0, force = 0, quiet = 0;
    int names_id_col = 1, names_col = 2;
    cli_opt opts[] = {
        {"db", CLI_STR, &dbpath, "database file", 0},
        {"dataset", CLI_STR, &dataset, "lastfm, ml-1m, beauty, clothing, or a name for --file", 1},
        {"data-dir", CLI_STR, &data_dir, "where the datasets are (default ../shared/datasets)", 0},
        {"kcore", CLI_INT, &kcore, "keep users and items with at least this many interactions", 1},
        {"file", CLI_STR, &file, "your own interaction file instead of a built-in dataset", 0},
        {"format", CLI_STR, &format, "format of --file: sequence or delimited", 1},
        {"delimiter", CLI_STR, &delim, "field delimiter of a delimited --file (\\t, ',', '::', ...)", 1},
        {"user-col", CLI_INT, &ucol, "user column of a delimited --file, from 1", 1},
        {"item-col", CLI_INT, &icol, "item column of a delimited --file, from 1", 1},
        {"time-col", CLI_INT, &tcol, "timestamp column (Unix seconds), 0 for none (file order)", 1},
        {"header", CLI_FLAG, &header, "the delimited --file starts with a header line", 1},
        {"names", CLI_STR, &names, "optional item names file (id and name columns)", 0},
        {"names-delimiter", CLI_STR, &names_delim, "delimiter of --names", 1},
        {"names-id-col", CLI_INT, &names_id_col, "id column of --names, from 1", 1},
        {"names-col", CLI_INT, &names_col, "name column of --names, from 1", 1},
        {"encoding", CLI_STR, &encoding, "encoding of names: auto, utf-8 or latin1", 1},
        {"force", CLI_FLAG, &force, "ingest again even if the input is unchanged", 0},
        {"quiet", CLI_FLAG, &quiet, "print no statistics", 0},
        CLI_OPT_END};
    int rc = cli_parse(argc, argv, opts, usage_ingest, summary_ingest);
    if (rc) return rc > 0 ? 0 : -1;
    if (!dataset) return tr_error("ingest: --dataset is required (lastfm, ml-1m, beauty, clothing)");
    if (strcmp(encoding, "auto") && strcmp(encoding, "utf-8") && strcmp(encoding, "utf8") &&
        strcmp(encoding, "latin1") && strcmp(encoding, "iso-8859-1"))
        return tr_error("--encoding: unknown encoding '%s'; expected auto, utf-8 or latin1", encoding);
    if (!strcmp(delim, "\\t")) delim = "\t";
    if (!strcmp(names_delim, "\\t")) names_delim = "\t";

    char p1[INGEST_PATH_MAX], p2[INGEST_PATH_MAX];
    ingest_raw raw;
    ingest_raw_init(&raw);
    ingest_data d = {0};
    int ts_div = 1;
    uint64_t h = 0;
    const char *names_file = NULL, *names_sep = "\t", *names_enc = encoding;
    int names_hdr = 1, nid = 0, nname = 1;
    double t0 = tr_monotonic();
    rc = -1;
    if (file) {
        raw.source = file;
        if (hash_file(file, &h) != 0) goto out;
        if (!strcmp(format, "sequence")) {
            if (ingest_read_sequence(&raw, file) != 0) goto out;
        } else if (!strcmp(format, "delimited")) {
            if (ucol < 1 || icol < 1 || tcol < 0) { tr_error("ingest: columns are counted from 1"); goto out; }
            if (ingest_read_delimited(&raw, file, delim, header, ucol - 1, icol - 1, tcol - 1) != 0) goto out;
        } else {
            tr_error("--format: expected sequence or delimited, got '%s'", format);
            goto out;
        }
        if (names) { names_file = names; names_sep = names_delim; names_hdr = header; nid = names_id_col - 1; nname = names_col - 1; }
    } else {
        names_spec ns = {NULL, names_sep, names_enc, names_hdr, nid, nname};
        if (read_builtin(data_dir, dataset, &raw, p1, p2, &h, &ts_div, &ns) != 0) goto out;
        names_file = ns.file; names_sep = ns.sep; names_enc = ns.enc; names_hdr = ns.header;
    }
    if (ingest_build(&raw, kcore, ts_div, &d) != 0) goto out;
    if (names_file && tr_file_exists(names_file)) {
        if (hash_file(names_file, &h) != 0 ||
            ingest_load_names(&d, names_file, names_sep, names_hdr, nid, nname, names_enc) != 0)
            goto out;
    } else if (names_file && names) {
        tr_error("--names %s: no such file", names_file);
        goto out;
    }
    double t_parse = tr_monotonic() - t0;

    /* Only now, with the input known to be good, is the database opened. */
    char *pj = cli_params_json(opts);
    size_t pl = strlen(pj);
    pj = tr_realloc(pj, pl + 40);
    snprintf(pj + pl - 1, 40, ",\"input\":\"%016llx\"}", (unsigned long long)h);
    stage_cmd c;
    if (stage_cmd_open(&c, dbpath, dataset) != 0) { free(pj); goto out; }
    int b = stage_cmd_begin(&c, "ingest", pj, NULL, force, quiet, NULL);
    if (b == STAGE_UP_TO_DATE) {
        rc = 0;
    } else if (b == 0) {
        stage_run *run = &c.run;
        stage_progress(run, 0, "writing %lld interactions", (long long)d.n);
        if (stage_finish_begin(run) != 0 || ingest_write(c.db, dataset, &raw, &d, kcore) != 0 ||
            stage_finish_commit(run) != 0) {
            stage_fail_err(run);
        } else {
            double total = tr_monotonic() - t0;
            if (!quiet)
                fprintf(stderr, "[ingest] %s: %d users, %d items, %lld interactions in %.2fs "
                        "(parse %.2fs), %.0f interactions/s\n", dataset, d.n_users, d.n_items,
                        (long long)d.n, total, t_parse, d.n / total);
            rc = 0;
        }
    }
    stage_cmd_close(&c, rc);
out:
    ingest_raw_free(&raw);
    ingest_data_free(&d);
    return rc;
}
