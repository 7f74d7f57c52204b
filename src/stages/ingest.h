/* ingest: read a public interaction dataset (or a user's own file), apply the iterative
 * k-core filter, number users and items, make the chronological leave-one-out split, and
 * store it in the database in one transaction. Parsing happens before the database is
 * touched, so bad input leaves the database exactly as it was. */
#ifndef TOKENREC_INGEST_H
#define TOKENREC_INGEST_H
#include <sqlite3.h>
#include <stdint.h>

/* Interactions as read, before filtering: ids are numbered in order of first appearance. */
typedef struct {
    int32_t  *user, *item;      /* temporary ids */
    int64_t  *ts;               /* timestamp in the source's unit, or the file order */
    int64_t   n, cap;
    int       has_ts;
    /* original ids by temporary id */
    char    **user_orig, **item_orig;
    int32_t   n_users, n_items;
    void     *umap, *imap;      /* string -> id maps */
    const char *source;         /* description of the files read */
    const char *format;
} ingest_raw;

/* The filtered, numbered dataset: user u's sequence is item[off[u] .. off[u+1]). */
typedef struct {
    int32_t   n_users, n_items;
    int64_t   n;                /* interactions */
    int64_t  *off;              /* n_users + 1 */
    int32_t  *item;             /* chronological per user */
    int64_t  *ts;               /* unix seconds, or NULL */
    char    **user_orig, **item_orig;
    char    **item_name;        /* NULL when the dataset has no names; entries may be NULL */
} ingest_data;

void ingest_raw_init(ingest_raw *r);
void ingest_raw_free(ingest_raw *r);
void ingest_data_free(ingest_data *d);
/* Record one interaction by original ids (numbers users and items on first sight). */
void ingest_raw_add(ingest_raw *r, const char *user, const char *item, int64_t ts);

/* Readers. Each returns 0, or -1 with a message naming the file, line and expectation. */
int ingest_read_hetrec_lastfm(ingest_raw *r, const char *path);   /* user_taggedartists-timestamps.dat */
int ingest_read_ml1m_ratings(ingest_raw *r, const char *path);    /* ratings.dat (UserID::MovieID::Rating::Timestamp) */
int ingest_read_sequence(ingest_raw *r, const char *path);        /* "user item item ..." per line */
/* A user's own delimited file: 0-based columns; time_col < 0 when there is none. */
int ingest_read_delimited(ingest_raw *r, const char *path, const char *delim, int header,
                          int user_col, int item_col, int time_col);

/* Keep each (user, item) pair's first occurrence, order each user's items by timestamp
 * (stable, file order breaks ties), keep the maximal k-core, and number users in file
 * order and items in order of first appearance along the users' sequences. ts_div turns
 * source timestamps into unix seconds (1000 for milliseconds). */
int ingest_build(const ingest_raw *r, int kcore, int ts_div, ingest_data *d);

/* Attach display names from a delimited file (id column, name column); encoding is
 * "auto" (UTF-8 if valid, else Latin-1), "utf-8" or "latin1". */
int ingest_load_names(ingest_data *d, const char *path, const char *delim, int header,
                      int id_col, int name_col, const char *encoding);

/* Write the dataset under name, replacing an earlier one, in the current transaction. */
int ingest_write(sqlite3 *db, const char *name, const ingest_raw *r, const ingest_data *d,
                 int kcore);

/* The split of position p in a sequence of length n: 0 train, 1 valid, 2 test. */
static inline int ingest_split_of(int64_t p, int64_t n) { return p == n - 1 ? 2 : p == n - 2 ? 1 : 0; }

/* The `tokenrec ingest` command. */
int cmd_ingest(int argc, char **argv);
/* The data directory: --data-dir, else $TOKENREC_DATA_DIR, else ../shared/datasets next to
 * the working directory or the binary. NULL with tr_error when none exists. */
const char *ingest_data_dir(const char *opt, char *buf, int len);

#endif
