/* run: `tokenrec run --dataset NAME`, every stage in order. Each stage skips itself when an
 * up-to-date run exists and resumes an interrupted one, so `run` can be re-run at will. */
#ifndef TOKENREC_RUN_H
#define TOKENREC_RUN_H
int cmd_run(int argc, char **argv);
#endif
