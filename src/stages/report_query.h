/* report_query: the reads behind `tokenrec report`, shared by its Markdown/CSV table
 * (report.c) and its HTML page (report_html.c), so both show the same runs and numbers. */
#ifndef TOKENREC_REPORT_QUERY_H
#define TOKENREC_REPORT_QUERY_H
#include <sqlite3.h>
#include <stdint.h>

/* Metrics of a method: HR@10, NDCG@10, HR@20, NDCG@20, HR@30, NDCG@30. */
#define RQ_NM 6
extern const char *const rq_metric_name[RQ_NM];    /* "hr", "ndcg", ... */
extern const int rq_metric_k[RQ_NM];                /* 10, 10, 20, 20, 30, 30 */

/* One method's metrics on a test split ('test', or 'test_unseen' after evaluate --unseen):
 * those of the latest done run that stored the split. */
typedef struct {
    char    dataset[128], method[64], split[16], stage[32];
    int64_t run;
    double  m[RQ_NM];           /* NAN where not stored */
    double  users;              /* the users the split is over (metric 'users'); NAN if not stored */
    double  seconds;            /* the run's wall time */
    char   *params;             /* the run's settings (canonical JSON), malloc'd */
} rq_method;

/* Every (dataset, method, split) of the database (dataset NULL) or of one dataset, in
 * dataset, method, split order. Returns the count (*rows malloc'd) or -1 with tr_error. */
int  rq_methods(sqlite3 *db, const char *dataset, rq_method **rows);
void rq_methods_free(rq_method *rows, int n);

/* The latency table: per dataset, the latest done evaluate run that timed generative
 * retrieval against beam search (evaluate --method generate), one row per method. */
typedef struct {
    char    dataset[128], method[64];
    int64_t run;
    double  ms_per_user;        /* batch 1 */
    double  users_per_s;        /* at the best batch */
    int     best_batch, beam;   /* beam: for method generate */
    int     own_model;          /* tokenrec timed on its own finetune model (else on generate's) */
} rq_latency;
int rq_latency_rows(sqlite3 *db, const char *dataset, rq_latency **rows);   /* count or -1 */

/* The runs a dataset's report is made of: the latest done run of each stage, and of each
 * method within a stage (evaluate runs one per method), in run order. */
typedef struct {
    int64_t id;
    char    stage[32], method[64];      /* method: params' "method", "" when none */
    double  seconds;                    /* wall time, start to end */
    char   *params;                     /* malloc'd */
} rq_run;
int  rq_runs(sqlite3 *db, const char *dataset, rq_run **rows);             /* count or -1 */
void rq_runs_free(rq_run *rows, int n);

/* One run_metrics value of a run (method NULL: any method's), NAN when there is none. */
double rq_metric(sqlite3 *db, int64_t run, const char *method, const char *split, const char *metric, int k);

/* The 95% interval p +- 1.96 sqrt(p (1 - p) / n) clipped to [0, 1]: the binomial standard
 * error of a hit rate over n users (for NDCG, whose per-user values also lie in [0, 1], an
 * upper bound on it). n <= 0 or a NaN gives lo = hi = NAN. */
void rq_interval95(double p, double n, double *lo, double *hi);

#endif
