// Decode attention straight over the paged KV pool: one query token per sequence,
// keys and values read in place through each sequence's slot list (no gather, no
// padding copies), softmax in f32 with a running maximum.
//
// Layout: q [seqs, heads, head_dim]; k, v [pool slots, kv_heads * head_dim];
// slots [seqs, max_keys] (pool slot of each key, in position order); lens [seqs];
// out [seqs, heads, head_dim]. Grid (heads, seqs), 256 threads: each warp takes
// every 8th key; warps are merged at the end. head_dim must be a multiple of 32,
// at most 256.
//
// Rounding follows the unfused path: the score q.k is rounded to the activation
// dtype, then scaled and rounded again (as a matmul in that dtype and a multiply
// would); probabilities stay in f32.
#include <stdint.h>

#include "convert.cuh"

#define WARPS 8
#define MAX_PER_LANE 8

template <typename T>
__device__ void paged_decode(const T *q, const T *k, const T *v, const uint32_t *slots,
                             const uint32_t *lens, T *out, int heads, int kv_heads,
                             int head_dim, int max_keys, float scale) {
  const int h = blockIdx.x, s = blockIdx.y;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int kh = h / (heads / kv_heads);
  const size_t row = (size_t)kv_heads * head_dim;
  const int per = head_dim / 32;

  float qv[MAX_PER_LANE], acc[MAX_PER_LANE];
  const T *qp = q + ((size_t)s * heads + h) * head_dim;
#pragma unroll
  for (int i = 0; i < MAX_PER_LANE; ++i) {
    qv[i] = i < per ? to_f(qp[lane + 32 * i]) : 0.f;
    acc[i] = 0.f;
  }
  float m = -INFINITY, l = 0.f;
  const int len = (int)lens[s];
  for (int j = warp; j < len; j += WARPS) {
    const size_t slot = slots[(size_t)s * max_keys + j];
    const T *kp = k + slot * row + (size_t)kh * head_dim;
    float part = 0.f;
#pragma unroll
    for (int i = 0; i < MAX_PER_LANE; ++i)
      if (i < per) part += qv[i] * to_f(kp[lane + 32 * i]);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) part += __shfl_xor_sync(0xffffffffu, part, o);
    const float score = to_f(from_f<T>(to_f(from_f<T>(part)) * scale));
    const float m_new = fmaxf(m, score);
    const float corr = expf(m - m_new);
    const float p = expf(score - m_new);
    l = l * corr + p;
    const T *vp = v + slot * row + (size_t)kh * head_dim;
#pragma unroll
    for (int i = 0; i < MAX_PER_LANE; ++i)
      if (i < per) acc[i] = acc[i] * corr + p * to_f(vp[lane + 32 * i]);
    m = m_new;
  }

  __shared__ float s_max[WARPS], s_sum[WARPS];
  __shared__ float s_acc[WARPS][32 * MAX_PER_LANE];
  if (lane == 0) {
    s_max[warp] = m;
    s_sum[warp] = l;
  }
  for (int i = 0; i < per; ++i) s_acc[warp][lane + 32 * i] = acc[i];
  __syncthreads();
  if (warp != 0) return;
  float mx = -INFINITY;
  for (int w = 0; w < WARPS; ++w) mx = fmaxf(mx, s_max[w]);
  float total = 0.f;
  for (int w = 0; w < WARPS; ++w)
    if (s_max[w] > -INFINITY) total += s_sum[w] * expf(s_max[w] - mx);
  T *op = out + ((size_t)s * heads + h) * head_dim;
  for (int i = 0; i < per; ++i) {
    float a = 0.f;
    for (int w = 0; w < WARPS; ++w)
      if (s_max[w] > -INFINITY) a += s_acc[w][lane + 32 * i] * expf(s_max[w] - mx);
    op[lane + 32 * i] = from_f<T>(total > 0.f ? a / total : 0.f);
  }
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
