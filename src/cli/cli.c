/* cli.c: long-option parsing, help text, and the canonical parameter JSON. */
#include "cli.h"
#include "util.h"
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const cli_opt *find_opt(const cli_opt *opts, const char *name, size_t len) {
    for (const cli_opt *o = opts; o->name; o++)
        if (strlen(o->name) == len && strncmp(o->name, name, len) == 0) return o;
    return NULL;
}

/* Convert one value, with errors that say which option wanted what. */
static int set_value(const cli_opt *o, const char *val) {
    char *end;
    switch (o->type) {
    case CLI_INT: {
        errno = 0;
        long v = strtol(val, &end, 10);
        if (errno || end == val || *end || v < -2147483647L || v > 2147483647L)
            return tr_error("--%s: expected an integer, got '%s'", o->name, val);
        *(int *)o->dest = (int)v;
        return 0;
    }
    case CLI_FLOAT: {
        errno = 0;
        double v = strtod(val, &end);
        if (errno || end == val || *end || !isfinite(v))
            return tr_error("--%s: expected a number, got '%s'", o->name, val);
        *(double *)o->dest = v;
        return 0;
    }
    case CLI_STR:
        *(const char **)o->dest = val;
        return 0;
    case CLI_FLAG:
        if (!strcmp(val, "1") || !strcmp(val, "true") || !strcmp(val, "yes")) *(int *)o->dest = 1;
        else if (!strcmp(val, "0") || !strcmp(val, "false") || !strcmp(val, "no")) *(int *)o->dest = 0;
        else return tr_error("--%s: expected true or false, got '%s'", o->name, val);
        return 0;
    default:
        return tr_error("--%s: bad option table", o->name);
    }
}

/* Walk argv once; anything that is not a known --option is an error naming it. */
int cli_parse(int argc, char **argv, const cli_opt *opts, const char *usage,
              const char *summary) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            cli_help(stdout, usage, summary, opts);
            return 1;
        }
        if (strncmp(a, "--", 2) != 0 || !a[2])
            return tr_error("%s: unexpected argument '%s' (see --help)", argv[0], a);
        const char *name = a + 2;
        const char *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        const cli_opt *o = find_opt(opts, name, len);
        if (!o) {
            if (len > 3 && !strncmp(name, "no-", 3)) {
                const cli_opt *f = find_opt(opts, name + 3, len - 3);
                if (f && f->type == CLI_FLAG && !eq) { *(int *)f->dest = 0; continue; }
            }
            return tr_error("%s: unknown option '--%.*s' (see --help)", argv[0], (int)len, name);
        }
        if (o->type == CLI_FLAG && !eq) { *(int *)o->dest = 1; continue; }
        const char *val = eq ? eq + 1 : NULL;
        if (!val) {
            if (i + 1 >= argc) return tr_error("--%s: expects a value", o->name);
            val = argv[++i];
        }
        if (set_value(o, val) != 0) return -1;
    }
    return 0;
}

int cli_parse_db(int argc, char **argv, const char *usage, const char *summary, const char **db,
                 const char **dataset, const char *dataset_help) {
    cli_opt opts[] = {
        {"db", CLI_STR, db, "database file", 0},
        {"dataset", CLI_STR, dataset, dataset_help, 0},
        CLI_OPT_END};
    return cli_parse(argc, argv, opts, usage, summary);
}

void cli_help(FILE *f, const char *usage, const char *summary, const cli_opt *opts) {
    fprintf(f, "usage: %s\n\n%s\n\noptions:\n", usage, summary);
    for (const cli_opt *o = opts; o->name; o++) {
        char left[64], def[96] = "";
        const char *meta = o->type == CLI_INT ? " N" : o->type == CLI_FLOAT ? " X"
                         : o->type == CLI_STR ? " S" : "";
        snprintf(left, sizeof left, "--%s%s", o->name, meta);
        switch (o->type) {
        case CLI_INT: snprintf(def, sizeof def, " (default %d)", *(int *)o->dest); break;
        case CLI_FLOAT: snprintf(def, sizeof def, " (default %g)", *(double *)o->dest); break;
        case CLI_STR:
            if (*(const char **)o->dest)
                snprintf(def, sizeof def, " (default %s)", *(const char **)o->dest);
            break;
        case CLI_FLAG: if (*(int *)o->dest) snprintf(def, sizeof def, " (on; --no-%s)", o->name); break;
        default: break;
        }
        fprintf(f, "  %-22s %s%s\n", left, o->help, def);
    }
    fprintf(f, "  %-22s %s\n", "-h, --help", "show this help");
}

static void json_str(char **buf, size_t *len, size_t *cap, const char *s);

static void append(char **buf, size_t *len, size_t *cap, const char *s) {
    size_t n = strlen(s);
    if (*len + n + 1 > *cap) {
        *cap = (*len + n + 1) * 2;
        *buf = tr_realloc(*buf, *cap);
    }
    memcpy(*buf + *len, s, n + 1);
    *len += n;
}

static void json_str(char **buf, size_t *len, size_t *cap, const char *s) {
    append(buf, len, cap, "\"");
    char tmp[8];
    for (; s && *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') { tmp[0] = '\\'; tmp[1] = (char)c; tmp[2] = 0; }
        else if (c < 0x20) snprintf(tmp, sizeof tmp, "\\u%04x", c);
        else { tmp[0] = (char)c; tmp[1] = 0; }
        append(buf, len, cap, tmp);
    }
    append(buf, len, cap, "\"");
}

/* The JSON is the identity of a run's settings: same options, same string. */
char *cli_params_json(const cli_opt *opts) {
    size_t len = 0, cap = 256;
    char *buf = tr_malloc(cap);
    buf[0] = 0;
    append(&buf, &len, &cap, "{");
    int first = 1;
    char num[64];
    for (const cli_opt *o = opts; o->name; o++) {
        if (!o->param) continue;
        if (!first) append(&buf, &len, &cap, ",");
        first = 0;
        json_str(&buf, &len, &cap, o->name);
        append(&buf, &len, &cap, ":");
        switch (o->type) {
        case CLI_INT: case CLI_FLAG: snprintf(num, sizeof num, "%d", *(int *)o->dest);
            append(&buf, &len, &cap, num); break;
        case CLI_FLOAT: snprintf(num, sizeof num, "%.9g", *(double *)o->dest);
            append(&buf, &len, &cap, num); break;
        case CLI_STR:
            if (*(const char **)o->dest) json_str(&buf, &len, &cap, *(const char **)o->dest);
            else append(&buf, &len, &cap, "null");
            break;
        default: break;
        }
    }
    append(&buf, &len, &cap, "}");
    return buf;
}

char *cli_json_append(char *json, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    size_t len = strlen(json);
    char *out = tr_malloc(len + (size_t)n + 3);
    memcpy(out, json, len - 1);                    /* without the closing brace */
    size_t k = len - 1;
    if (len > 2 && n > 0) out[k++] = ',';
    va_start(ap, fmt);
    vsnprintf(out + k, (size_t)n + 1, fmt, ap);
    va_end(ap);
    strcpy(out + k + n, "}");
    free(json);
    return out;
}
