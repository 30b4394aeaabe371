// Attention of a step's packed query rows over the paged KV pool, each row with its
// own run of keys: the prefill chunks and decodes of one step in one launch (the
// decode kernel, paged_attention.cu, takes one query per sequence; here a sequence
// has a row per new token). The attention itself is attend_keys.cuh.
//
// Layout: q [tokens, heads, head_dim]; k, v [pool slots, kv_heads * head_dim];
// slots: pool slots of every row's keys, in position order; meta [rows, 4] u32: (the
// row's token, first and one-past-last index into `slots` of the keys it sees, 0);
// out [tokens, heads, head_dim] (a row writes its token's place). Grid (rows,
// heads), 256 threads.
//
// A row's keys are one run because Gemma 3's masks make them one: causal, cut by
// the sliding window on local layers, and extended to the end of the query's image
// (whose soft tokens see each other); kv.rs makes the runs.
#include <stdint.h>

#include "attend_keys.cuh"

template <typename T>
__device__ void paged_rows(const T *q, const T *k, const T *v, const uint32_t *slots,
                           const uint32_t *meta, T *out, int heads, int kv_heads, int head_dim,
                           float scale) {
  const size_t r = blockIdx.x;
  const int h = blockIdx.y;
  const size_t at = ((size_t)meta[4 * r] * heads + h) * head_dim;
  const uint32_t begin = meta[4 * r + 1], end = meta[4 * r + 2];
  attend_keys<T>(q + at, k, v, slots + begin, end > begin ? end - begin : 0, out + at,
                 h / (heads / kv_heads), kv_heads, head_dim, scale);
}

#define PAGED_ROWS(T, NAME)                                                                 \
  extern "C" __global__ void NAME(const T *q, const T *k, const T *v, const uint32_t *slots, \
                                  const uint32_t *meta, T *out, int heads, int kv_heads,   \
                                  int head_dim, float scale) {                             \
    paged_rows<T>(q, k, v, slots, meta, out, heads, kv_heads, head_dim, scale);             \
  }

PAGED_ROWS(float, paged_rows_f32)
PAGED_ROWS(__half, paged_rows_f16)
PAGED_ROWS(__nv_bfloat16, paged_rows_bf16)
