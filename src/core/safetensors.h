/* safetensors: read and write the Hugging Face safetensors format.
 *
 * Layout: 8-byte little-endian header length N, N bytes of JSON
 * ({name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}}), then
 * the raw little-endian tensor bytes (offsets relative to the end of the header).
 *
 * On load F32, F16 and BF16 tensors become float32 (st_tensor.f) and I32 tensors int32
 * (st_tensor.i). A malformed or truncated file gives -1 and a tr_error message that names
 * the file and what was expected; it never crashes. */
#ifndef TOKENREC_SAFETENSORS_H
#define TOKENREC_SAFETENSORS_H
#include <stddef.h>
#include <stdint.h>

#define ST_MAX_DIMS 8

typedef enum { ST_F32 = 0, ST_F16, ST_BF16, ST_I32 } st_dtype;

typedef struct {
    char    *name;
    st_dtype dtype;                    /* dtype in the file */
    int      ndim;
    int64_t  shape[ST_MAX_DIMS];
    size_t   numel;
    float   *f;                        /* F32/F16/BF16 data as float32, else NULL */
    int32_t *i;                        /* I32 data, else NULL */
} st_tensor;

typedef struct {
    st_tensor *t;
    int        n;
    char     **meta_key, **meta_val;   /* __metadata__ entries */
    int        n_meta;
} st_file;

/* Load every tensor of path into f (zeroed first). -1 with tr_error on failure (f is then
 * empty; st_free is still safe). */
int  st_load(st_file *f, const char *path);
/* The same over the len bytes of a file already in memory; path names it in messages. */
int  st_load_mem(st_file *f, const char *path, const char *buf, size_t len);
void st_free(st_file *f);
const st_tensor *st_find(const st_file *f, const char *name);   /* NULL if absent */
const char      *st_meta(const st_file *f, const char *key);    /* NULL if absent */

/* Writer: tensors are referenced, not copied, until st_writer_save. */
typedef struct st_writer st_writer;
st_writer *st_writer_new(void);
void st_writer_meta(st_writer *w, const char *key, const char *value);
void st_writer_add_f32(st_writer *w, const char *name, const float *data, int ndim,
                       const int64_t *shape);
void st_writer_add_i32(st_writer *w, const char *name, const int32_t *data, int ndim,
                       const int64_t *shape);
int  st_writer_save(st_writer *w, const char *path);   /* -1 with tr_error */
void st_writer_free(st_writer *w);

/* Half-precision conversions used by the loader. */
float st_bf16_to_f32(uint16_t h);
float st_f16_to_f32(uint16_t h);

#endif
