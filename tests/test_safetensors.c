/* test_safetensors.c: writer/reader round trips (tensors, metadata, a whole T5 model with
 * identical outputs after reload), half-precision conversion, and clean errors for
 * malformed or truncated files. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "rng.h"
#include "safetensors.h"
#include "t5.h"
#include "util.h"

static char tmpdir[256];

static int setup(void **state) {
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/test_safetensors.XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static const char *tpath(const char *name) {
    static char p[512];
    snprintf(p, sizeof p, "%s/%s", tmpdir, name);
    return p;
}

static void round_trip_tensors(void **state) {
    (void)state;
    float a[6] = { 1, -2, 3.5f, 4, 5, 6e-7f };
    int32_t b[3] = { -1, 0, 2147483647 };
    float s = 42;
    st_writer *w = st_writer_new();
    int64_t sa[2] = { 2, 3 }, sb[1] = { 3 };
    st_writer_add_f32(w, "a", a, 2, sa);
    st_writer_add_i32(w, "b.c", b, 1, sb);
    st_writer_add_f32(w, "scalar", &s, 0, NULL);
    st_writer_meta(w, "config", "{\"x\": 1}");
    st_writer_meta(w, "note", "hello");
    assert_int_equal(st_writer_save(w, tpath("rt.safetensors")), 0);
    st_writer_free(w);
    st_file f;
    assert_int_equal(st_load(&f, tpath("rt.safetensors")), 0);
    assert_int_equal(f.n, 3);
    const st_tensor *ta = st_find(&f, "a"), *tb = st_find(&f, "b.c"), *ts = st_find(&f, "scalar");
    assert_non_null(ta); assert_non_null(tb); assert_non_null(ts);
    assert_int_equal(ta->ndim, 2); assert_int_equal(ta->shape[0], 2); assert_int_equal(ta->shape[1], 3);
    assert_int_equal(ta->dtype, ST_F32);
    assert_memory_equal(ta->f, a, sizeof a);
    assert_int_equal(tb->dtype, ST_I32);
    assert_memory_equal(tb->i, b, sizeof b);
    assert_int_equal(ts->ndim, 0); assert_int_equal(ts->numel, 1); assert_true(ts->f[0] == 42);
    assert_string_equal(st_meta(&f, "note"), "hello");
    assert_string_equal(st_meta(&f, "config"), "{\"x\": 1}");
    assert_null(st_meta(&f, "nope"));
    assert_null(st_find(&f, "nope"));
    st_free(&f);
}

/* Write a file from a header string and a data blob; hlen_override < 0: the real length. */
static void write_raw(const char *name, const char *hdr, long hlen_override, const void *data,
                      size_t dlen) {
    FILE *fp = fopen(tpath(name), "wb");
    assert_non_null(fp);
    uint64_t hl = hlen_override >= 0 ? (uint64_t)hlen_override : strlen(hdr);
    unsigned char b[8];
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)(hl >> (8 * i));
    fwrite(b, 1, 8, fp);
    fwrite(hdr, 1, strlen(hdr), fp);
    if (dlen) fwrite(data, 1, dlen, fp);
    fclose(fp);
}

static void expect_error(const char *name, const char *needle) {
    st_file f;
    assert_int_equal(st_load(&f, tpath(name)), -1);
    const char *msg = tr_errmsg();
    if (!strstr(msg, needle) || !strstr(msg, name))
        print_error("message for %s: '%s' (wanted '%s')\n", name, msg, needle);
    assert_non_null(strstr(msg, name));
    assert_non_null(strstr(msg, needle));
    assert_int_equal(f.n, 0);
    st_free(&f);
}

static void malformed_files(void **state) {
    (void)state;
    float d[4] = { 1, 2, 3, 4 };
    uint16_t h[2] = { 0x3c00, 0xc000 };     /* F16 1.0, -2.0 */
    /* good file with F16 and BF16 converts */
    write_raw("half.st", "{\"h\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]},"
              "\"b\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[4,8]}}", -1, h, 4);
    {   /* append bf16 data: 1.0 = 0x3f80, -3.0 = 0xc040 */
        FILE *fp = fopen(tpath("half.st"), "ab");
        uint16_t bf[2] = { 0x3f80, 0xc040 };
        fwrite(bf, 2, 2, fp);
        fclose(fp);
    }
    st_file f;
    assert_int_equal(st_load(&f, tpath("half.st")), 0);
    assert_true(st_find(&f, "h")->f[0] == 1.0f && st_find(&f, "h")->f[1] == -2.0f);
    assert_true(st_find(&f, "b")->f[0] == 1.0f && st_find(&f, "b")->f[1] == -3.0f);
    st_free(&f);
    assert_true(st_f16_to_f32(0x0001) > 5.9e-8f && st_f16_to_f32(0x0001) < 6.0e-8f);
    assert_true(isinf(st_f16_to_f32(0x7c00)));

    write_raw("short.st", "", -1, NULL, 0);
    {   FILE *fp = fopen(tpath("short.st"), "wb"); fwrite("abc", 1, 3, fp); fclose(fp); }
    expect_error("short.st", "too short");
    write_raw("hlen.st", "{}", 1000, NULL, 0);
    expect_error("hlen.st", "header length");
    write_raw("json.st", "{\"a\": [1, 2", -1, NULL, 0);
    expect_error("json.st", "JSON");
    write_raw("range.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", -1, d, 8);
    expect_error("range.st", "out of range");
    write_raw("shape.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,16]}}", -1, d, 16);
    expect_error("shape.st", "need 12");
    write_raw("dtype.st", "{\"a\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[0,16]}}", -1, d, 16);
    expect_error("dtype.st", "unsupported dtype 'F64'");
    write_raw("neg.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[-4],\"data_offsets\":[0,16]}}", -1, d, 16);
    expect_error("neg.st", "shape[0]");
    write_raw("offs.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[16,0]}}", -1, d, 16);
    expect_error("offs.st", "out of range");
    write_raw("nooff.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[4]}}", -1, d, 16);
    expect_error("nooff.st", "data_offsets");
    write_raw("notobj.st", "[1,2,3]", -1, NULL, 0);
    expect_error("notobj.st", "JSON object");
    write_raw("meta.st", "{\"__metadata__\": 5}", -1, NULL, 0);
    expect_error("meta.st", "__metadata__");
    st_file g;
    assert_int_equal(st_load(&g, tpath("does-not-exist.st")), -1);
    assert_non_null(strstr(tr_errmsg(), "does-not-exist.st"));

    /* truncating a valid file anywhere gives an error, never a crash */
    float big[64];
    for (int i = 0; i < 64; i++) big[i] = (float)i;
    st_writer *w = st_writer_new();
    int64_t sh[2] = { 8, 8 };
    st_writer_add_f32(w, "big", big, 2, sh);
    assert_int_equal(st_writer_save(w, tpath("full.st")), 0);
    st_writer_free(w);
    char *buf; size_t len;
    assert_int_equal(tr_read_file(tpath("full.st"), &buf, &len), 0);
    for (size_t cut = 0; cut < len; cut += 7) {
        FILE *fp = fopen(tpath("cut.st"), "wb");
        fwrite(buf, 1, cut, fp);
        fclose(fp);
        st_file c;
        assert_int_equal(st_load(&c, tpath("cut.st")), -1);
        assert_non_null(strstr(tr_errmsg(), "cut.st"));
    }
    free(buf);
}

static void t5_round_trip_same_outputs(void **state) {
    (void)state;
    t5_config c; assert_int_equal(t5_preset("tiny", &c), 0);
    rng_t rng; rng_seed(&rng, 77);
    t5_model *m = t5_new(&c, &rng);
    assert_non_null(m);
    assert_int_equal(t5_resize_vocab(m, 70, &rng, 0), 0);
    int32_t ids[2 * 7] = { 1, 2, 3, 69, 5, 0, 0, 8, 9, 10, 11, 12, 13, 14 };
    int32_t msk[2 * 7] = { 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1, 1 };
    int32_t dec[6] = { 0, 5, 6, 7, 8, 9 };
    t5_batch b = { 2, 7, ids, msk, dec, 0, NULL, NULL };
    float z1[2 * 16], z2[2 * 16];
    assert_int_equal(t5_infer(m, &b, z1), 0);
    assert_int_equal(t5_save(m, tpath("model.safetensors")), 0);
    t5_model *m2 = t5_load(tpath("model.safetensors"), NULL, NULL);
    if (!m2) print_error("%s\n", tr_errmsg());
    assert_non_null(m2);
    assert_int_equal(t5_cfg(m2)->vocab, 70);
    assert_int_equal(t5_cfg(m2)->dec_len, 6);
    assert_true(fabsf(t5_cfg(m2)->dropout - c.dropout) < 1e-7f);
    assert_int_equal(t5_n_params(m2), t5_n_params(m));
    assert_memory_equal(t5_params(m2), t5_params(m), sizeof(float) * t5_n_params(m));
    assert_int_equal(t5_infer(m2, &b, z2), 0);
    assert_memory_equal(z1, z2, sizeof z1);
    t5_free(m2);

    /* without the head: loads, the head is fresh */
    st_writer *w = st_writer_new();
    for (int i = 0; i < t5_n_tensors(m); i++) {
        const t5_param *p = t5_tensor(m, i);
        if (!strncmp(p->name, "head.", 5)) continue;
        int64_t sh[2] = { p->rows, p->cols };
        st_writer_add_f32(w, p->name, t5_params(m) + p->off, p->cols ? 2 : 1, sh);
    }
    assert_int_equal(st_writer_save(w, tpath("nohead.safetensors")), 0);
    st_writer_free(w);
    t5_config fb = c;
    fb.head_hidden = 24; fb.head_out = 8;
    rng_seed(&rng, 1);
    m2 = t5_load(tpath("nohead.safetensors"), &fb, &rng);
    assert_non_null(m2);
    assert_int_equal(t5_cfg(m2)->head_hidden, 24);
    assert_int_equal(t5_param_find(m2, "head.fc1.weight")->cols, 6 * 32);
    assert_int_equal(t5_infer(m2, &b, z2), 0);
    t5_free(m2);

    /* a tensor with the wrong shape is an error naming it */
    w = st_writer_new();
    for (int i = 0; i < t5_n_tensors(m); i++) {
        const t5_param *p = t5_tensor(m, i);
        int64_t sh[2] = { p->rows, p->cols };
        if (!strcmp(p->name, "encoder.block.1.layer.1.DenseReluDense.wo.weight")) {
            sh[0] = p->cols; sh[1] = p->rows;
        }
        st_writer_add_f32(w, p->name, t5_params(m) + p->off, p->cols ? 2 : 1, sh);
    }
    assert_int_equal(st_writer_save(w, tpath("badshape.safetensors")), 0);
    st_writer_free(w);
    assert_null(t5_load(tpath("badshape.safetensors"), NULL, NULL));
    assert_non_null(strstr(tr_errmsg(), "encoder.block.1.layer.1.DenseReluDense.wo.weight"));
    t5_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(round_trip_tensors),
        cmocka_unit_test(malformed_files),
        cmocka_unit_test(t5_round_trip_same_outputs),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
