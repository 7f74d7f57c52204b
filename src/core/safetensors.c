/* safetensors.c: the safetensors reader and writer (see safetensors.h). */
#include "safetensors.h"
#include "util.h"
#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

float st_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* IEEE half to float, including subnormals, infinities and NaN. */
float st_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, u;
    if (exp == 0) {
        if (man == 0) u = sign;
        else {                                   /* subnormal: normalise */
            int e = -1;
            do { e++; man <<= 1; } while (!(man & 0x400));
            u = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ff) << 13);
        }
    } else if (exp == 31) {
        u = sign | 0x7f800000u | (man << 13);
    } else {
        u = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static int dtype_parse(const char *s, st_dtype *d, size_t *size) {
    if (!strcmp(s, "F32")) { *d = ST_F32; *size = 4; return 0; }
    if (!strcmp(s, "F16")) { *d = ST_F16; *size = 2; return 0; }
    if (!strcmp(s, "BF16")) { *d = ST_BF16; *size = 2; return 0; }
    if (!strcmp(s, "I32")) { *d = ST_I32; *size = 4; return 0; }
    return -1;
}

void st_free(st_file *f) {
    if (!f) return;
    for (int i = 0; i < f->n; i++) { free(f->t[i].name); free(f->t[i].f); free(f->t[i].i); }
    free(f->t);
    for (int i = 0; i < f->n_meta; i++) { free(f->meta_key[i]); free(f->meta_val[i]); }
    free(f->meta_key); free(f->meta_val);
    memset(f, 0, sizeof *f);
}

/* Parse a non-negative integer JSON number that is exactly integral. */
static int json_u64(const cJSON *j, uint64_t *v) {
    if (!cJSON_IsNumber(j)) return -1;
    double d = j->valuedouble;
    if (d < 0 || d > 9.0e15 || d != (double)(uint64_t)d) return -1;
    *v = (uint64_t)d;
    return 0;
}

/* Decode one tensor entry of the header into t, copying its data from the data section.
 * -1 with tr_error (naming the file and the tensor) when the entry is inconsistent. */
static int load_entry(st_tensor *t, const cJSON *e, const char *path, const unsigned char *data,
                      uint64_t data_len) {
    const char *nm = e->string;
    if (!cJSON_IsObject(e))
        return tr_error("%s: tensor '%s': expected an object {dtype, shape, data_offsets}",
                        path, nm);
    const cJSON *jd = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *js = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *jo = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(jd))
        return tr_error("%s: tensor '%s': missing or non-string dtype", path, nm);
    size_t esize;
    if (dtype_parse(jd->valuestring, &t->dtype, &esize))
        return tr_error("%s: tensor '%s': unsupported dtype '%s' (expected F32, F16, BF16 or I32)",
                        path, nm, jd->valuestring);
    if (!cJSON_IsArray(js))
        return tr_error("%s: tensor '%s': missing or non-array shape", path, nm);
    int nd = cJSON_GetArraySize(js);
    if (nd > ST_MAX_DIMS)
        return tr_error("%s: tensor '%s': %d dimensions (at most %d supported)", path, nm, nd,
                        ST_MAX_DIMS);
    t->ndim = nd;
    uint64_t numel = 1;
    for (int d = 0; d < nd; d++) {
        uint64_t v;
        if (json_u64(cJSON_GetArrayItem(js, d), &v))
            return tr_error("%s: tensor '%s': shape[%d] is not a non-negative integer", path, nm, d);
        t->shape[d] = (int64_t)v;
        if (v && numel > UINT64_MAX / 16 / v)
            return tr_error("%s: tensor '%s': shape too large", path, nm);
        numel *= v;
    }
    uint64_t b0, b1;
    if (!cJSON_IsArray(jo) || cJSON_GetArraySize(jo) != 2 ||
        json_u64(cJSON_GetArrayItem(jo, 0), &b0) || json_u64(cJSON_GetArrayItem(jo, 1), &b1))
        return tr_error("%s: tensor '%s': data_offsets must be [begin, end] integers", path, nm);
    if (b1 < b0 || b1 > data_len)
        return tr_error("%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] out of range "
                        "(data section is %" PRIu64 " bytes; file truncated?)",
                        path, nm, b0, b1, data_len);
    if (b1 - b0 != numel * esize)
        return tr_error("%s: tensor '%s': %" PRIu64 " data bytes, but shape and dtype %s need %"
                        PRIu64, path, nm, b1 - b0, jd->valuestring, numel * esize);
    t->numel = (size_t)numel;
    const unsigned char *src = data + b0;
    size_t n = (size_t)numel;
    if (t->dtype == ST_I32) {
        t->i = tr_malloc(n ? n * 4 : 1);
        memcpy(t->i, src, n * 4);
    } else {
        t->f = tr_malloc(n ? n * 4 : 1);
        if (t->dtype == ST_F32) memcpy(t->f, src, n * 4);
        else {
            for (size_t k = 0; k < n; k++) {
                uint16_t h = (uint16_t)(src[2 * k] | (src[2 * k + 1] << 8));
                t->f[k] = t->dtype == ST_BF16 ? st_bf16_to_f32(h) : st_f16_to_f32(h);
            }
        }
    }
    return 0;
}

int st_load(st_file *f, const char *path) {
    memset(f, 0, sizeof *f);
    char *buf;
    size_t len;
    if (tr_read_file(path, &buf, &len)) return -1;
    int rc = st_load_mem(f, path, buf, len);
    free(buf);
    return rc;
}

int st_load_mem(st_file *f, const char *path, const char *buf, size_t len) {
    memset(f, 0, sizeof *f);
    int rc = -1;
    cJSON *root = NULL;
    if (len < 8) {
        tr_error("%s: %zu bytes, too short for the 8-byte safetensors header length", path, len);
        goto out;
    }
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | (unsigned char)buf[i];
    if (hlen > len - 8) {
        tr_error("%s: header length %" PRIu64 " exceeds the %zu bytes after the length field "
                 "(not a safetensors file, or truncated)", path, hlen, len - 8);
        goto out;
    }
    root = cJSON_ParseWithLength(buf + 8, (size_t)hlen);
    if (!root || !cJSON_IsObject(root)) {
        tr_error("%s: header is not a valid JSON object", path);
        goto out;
    }
    const unsigned char *data = (const unsigned char *)buf + 8 + hlen;
    uint64_t data_len = len - 8 - hlen;
    int cnt = cJSON_GetArraySize(root);
    f->t = tr_calloc(cnt ? (size_t)cnt : 1, sizeof(st_tensor));
    const cJSON *e;
    cJSON_ArrayForEach(e, root) {
        if (!e->string) continue;
        if (!strcmp(e->string, "__metadata__")) {
            if (!cJSON_IsObject(e)) {
                tr_error("%s: __metadata__ must be an object of strings", path);
                goto out;
            }
            if (f->meta_key) {     /* a second one would overflow the first one's arrays */
                tr_error("%s: __metadata__ appears twice in the header; expected once", path);
                goto out;
            }
            int nm = cJSON_GetArraySize(e);
            f->meta_key = tr_calloc(nm ? (size_t)nm : 1, sizeof(char *));
            f->meta_val = tr_calloc(nm ? (size_t)nm : 1, sizeof(char *));
            const cJSON *kv;
            cJSON_ArrayForEach(kv, e) {
                f->meta_key[f->n_meta] = tr_strdup(kv->string ? kv->string : "");
                if (cJSON_IsString(kv)) f->meta_val[f->n_meta] = tr_strdup(kv->valuestring);
                else {
                    char *s = cJSON_PrintUnformatted(kv);
                    f->meta_val[f->n_meta] = tr_strdup(s ? s : "");
                    free(s);
                }
                f->n_meta++;
            }
            continue;
        }
        st_tensor *t = &f->t[f->n];
        t->name = tr_strdup(e->string);
        f->n++;
        if (load_entry(t, e, path, data, data_len)) goto out;
    }
    rc = 0;
out:
    cJSON_Delete(root);
    if (rc) st_free(f);
    return rc;
}

const st_tensor *st_find(const st_file *f, const char *name) {
    for (int i = 0; i < f->n; i++) if (!strcmp(f->t[i].name, name)) return &f->t[i];
    return NULL;
}

const char *st_meta(const st_file *f, const char *key) {
    for (int i = 0; i < f->n_meta; i++) if (!strcmp(f->meta_key[i], key)) return f->meta_val[i];
    return NULL;
}

/* ---- writer ---- */

typedef struct {
    char *name;
    const void *data;
    int is_i32, ndim;
    int64_t shape[ST_MAX_DIMS];
    size_t numel;
} st_wentry;

struct st_writer {
    st_wentry *e;
    int n, cap;
    cJSON *meta;
};

st_writer *st_writer_new(void) {
    st_writer *w = tr_calloc(1, sizeof *w);
    w->meta = cJSON_CreateObject();
    return w;
}

void st_writer_meta(st_writer *w, const char *key, const char *value) {
    cJSON_DeleteItemFromObjectCaseSensitive(w->meta, key);
    cJSON_AddStringToObject(w->meta, key, value);
}

static void writer_add(st_writer *w, const char *name, const void *data, int is_i32, int ndim,
                       const int64_t *shape) {
    if (w->n == w->cap) {
        w->cap = w->cap ? 2 * w->cap : 64;
        w->e = tr_realloc(w->e, sizeof(st_wentry) * (size_t)w->cap);
    }
    st_wentry *e = &w->e[w->n++];
    memset(e, 0, sizeof *e);
    e->name = tr_strdup(name);
    e->data = data;
    e->is_i32 = is_i32;
    e->ndim = ndim > ST_MAX_DIMS ? ST_MAX_DIMS : ndim;
    e->numel = 1;
    for (int d = 0; d < e->ndim; d++) { e->shape[d] = shape[d]; e->numel *= (size_t)shape[d]; }
}

void st_writer_add_f32(st_writer *w, const char *name, const float *data, int ndim,
                       const int64_t *shape) {
    writer_add(w, name, data, 0, ndim, shape);
}

void st_writer_add_i32(st_writer *w, const char *name, const int32_t *data, int ndim,
                       const int64_t *shape) {
    writer_add(w, name, data, 1, ndim, shape);
}

/* Header JSON padded with spaces to a multiple of 8 (as the Rust implementation does),
 * then the tensors back to back in the order they were added. Written to path.tmp and
 * renamed, so a failed save leaves no half-written file under path. */
int st_writer_save(st_writer *w, const char *path) {
    cJSON *root = cJSON_CreateObject();
    if (cJSON_GetArraySize(w->meta) > 0)
        cJSON_AddItemToObject(root, "__metadata__", cJSON_Duplicate(w->meta, 1));
    uint64_t off = 0;
    for (int i = 0; i < w->n; i++) {
        st_wentry *e = &w->e[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "dtype", e->is_i32 ? "I32" : "F32");
        cJSON *sh = cJSON_AddArrayToObject(o, "shape");
        for (int d = 0; d < e->ndim; d++) cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)e->shape[d]));
        cJSON *of = cJSON_AddArrayToObject(o, "data_offsets");
        cJSON_AddItemToArray(of, cJSON_CreateNumber((double)off));
        off += e->numel * 4;
        cJSON_AddItemToArray(of, cJSON_CreateNumber((double)off));
        cJSON_AddItemToObject(root, e->name, o);
    }
    char *js = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    size_t jl = strlen(js), padded = (jl + 7) & ~(size_t)7;
    char *tmp = tr_malloc(strlen(path) + 8);
    sprintf(tmp, "%s.tmp", path);
    FILE *fp = fopen(tmp, "wb");
    int rc = -1;
    if (!fp) { tr_error("%s: cannot create: %s", tmp, strerror(errno)); goto out; }
    unsigned char hl[8];
    for (int i = 0; i < 8; i++) hl[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    int ok = fwrite(hl, 1, 8, fp) == 8 && fwrite(js, 1, jl, fp) == jl;
    for (size_t i = jl; ok && i < padded; i++) ok = fputc(' ', fp) != EOF;
    for (int i = 0; ok && i < w->n; i++)
        ok = fwrite(w->e[i].data, 4, w->e[i].numel, fp) == w->e[i].numel;
    if (fclose(fp) != 0) ok = 0;
    if (!ok) { tr_error("%s: write failed: %s", tmp, strerror(errno)); remove(tmp); goto out; }
    if (rename(tmp, path)) {
        tr_error("%s: cannot rename to %s: %s", tmp, path, strerror(errno));
        remove(tmp);
        goto out;
    }
    rc = 0;
out:
    free(tmp);
    free(js);
    return rc;
}

void st_writer_free(st_writer *w) {
    if (!w) return;
    for (int i = 0; i < w->n; i++) free(w->e[i].name);
    free(w->e);
    cJSON_Delete(w->meta);
    free(w);
}
