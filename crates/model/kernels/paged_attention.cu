// Decode attention straight over the paged KV pool: one query token per sequence,
// keys and values read in place through each sequence's slot list (no gather, no
// padding copies); the attention itself is attend_keys.cuh.
//
// Layout: q [seqs, heads, head_dim]; k, v [pool slots, kv_heads * head_dim];
// slots [seqs, max_keys] (pool slot of each key, in position order); lens [seqs];
// out [seqs, heads, head_dim]. Grid (heads, seqs), 256 threads.
#include <stdint.h>

#include "attend_keys.cuh"

template <typename T>
__device__ void paged_decode(const T *q, const T *k, const T *v, const uint32_t *slots,
                             const uint32_t *lens, T *out, int heads, int kv_heads,
                             int head_dim, int max_keys, float scale) {
  const int h = blockIdx.x, s = blockIdx.y;
  const size_t at = ((size_t)s * heads + h) * head_dim;
  attend_keys<T>(q + at, k, v, slots + (size_t)s * max_keys, lens[s], out + at,
                 h / (heads / kv_heads), kv_heads, head_dim, scale);
}

#define PAGED_DECODE(T, NAME)                                                              \
  extern "C" __global__ void NAME(const T *q, const T *k, const T *v, const uint32_t *slots, \
                                  const uint32_t *lens, T *out, int heads, int kv_heads,   \
                                  int head_dim, int max_keys, float scale) {               \
    paged_decode<T>(q, k, v, slots, lens, out, heads, kv_heads, head_dim, max_keys, scale);  \
  }

PAGED_DECODE(float, paged_decode_f32)
PAGED_DECODE(__half, paged_decode_f16)
PAGED_DECODE(__nv_bfloat16, paged_decode_bf16)
