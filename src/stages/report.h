/* report: `tokenrec report`, every method's test metrics on every dataset of the database
 * as a Markdown (default) or CSV table on stdout, or with --html FILE one self-contained
 * HTML page with the charts (report_html.h). The rows come from report_query.h. */
#ifndef TOKENREC_REPORT_H
#define TOKENREC_REPORT_H
int cmd_report(int argc, char **argv);
#endif
