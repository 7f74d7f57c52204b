/* info: `tokenrec info`, the dataset statistics and every stage's state. */
#ifndef TOKENREC_INFO_H
#define TOKENREC_INFO_H
#include <sqlite3.h>
#include <stdio.h>

typedef struct {
    int     n_users, n_items;
    long long n;
    double  density;
    int     len_min, len_median, len_max;
    long long n_train, n_valid, n_test;
} dataset_stats;

int  info_dataset_stats(sqlite3 *db, const char *dataset, dataset_stats *s);
void info_print_stats(FILE *f, const char *dataset, const dataset_stats *s);
int  cmd_info(int argc, char **argv);

#endif
