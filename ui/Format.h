/* Format: the text the dashboard shows, computed without ncurses so that it can be tested:
 * durations, ETA, progress text, token strings, the test prompt, and UTF-8 display widths. */
#ifndef TOKENREC_UI_FORMAT_H
#define TOKENREC_UI_FORMAT_H
#include <stddef.h>
#include <stdint.h>

/* "12.3s", "3m05s", "1h02m"; "-" for a negative or unknown duration. */
const char *Format_duration(double seconds, char *buf, size_t len);

/* Seconds left for a run that reached progress p (0..1) at updated_at after starting at
 * started_at, assuming a constant rate, less the time since updated_at (never below 0).
 * -1 when it cannot be estimated (no progress yet, or nothing left to do). */
double Format_etaSeconds(double p, double started_at, double updated_at, double now);
/* The ETA as text: "ETA 3m05s", or "" when Format_etaSeconds is -1. */
const char *Format_eta(double p, double started_at, double updated_at, double now, char *buf,
                       size_t len);

/* Progress as "42.0%" (clamped to 0..100). */
const char *Format_progress(double p, char *buf, size_t len);
/* How many of width cells a bar filled to p shows (rounded down, clamped). */
int Format_barCells(double p, int width);

/* 1234567 as "1,234,567". */
const char *Format_count(int64_t n, char *buf, size_t len);

/* Token strings (docs/METHOD.md, "Tokens and prompts"): codebook k of a user is written with the letters a, b, c
 * ("user_<a-12><b-7><c-200>"), of an item with the digits 0, 1, 2 ("item_<0-5><1-9><2-77>").
 * codes[k] < 0 is written as "?". */
const char *Format_userTokens(const int *codes, int k, char *buf, size_t len);
const char *Format_itemTokens(const int *codes, int k, char *buf, size_t len);

/* The test prompt (docs/METHOD.md, "Tokens and prompts") with {user} and {items} filled in (malloc'd). */
char *Format_prompt(const char *user, const char *items);

/* Display: the number of bytes of the UTF-8 string s that fit into cols terminal columns,
 * whole characters only; *width gets the columns they take (may be NULL). Invalid bytes
 * count as one column each. */
size_t Format_fit(const char *s, int cols, int *width);
/* Terminal columns of the whole string. */
int Format_width(const char *s);

#endif
