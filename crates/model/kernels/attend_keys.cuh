// One query row's attention over a run of keys read in place from the paged KV pool,
// shared by the decode kernel (paged_attention.cu) and the rows kernel
// (paged_rows.cu). A block of WARPS warps per (query row, head): each warp takes
// every WARPS-th key, lanes split head_dim (a multiple of 32, at most 256), softmax
// in f32 with a running maximum; warps are merged at the end.
//
// Rounding follows the unfused path: the score q.k is rounded to the activation
// dtype, then scaled and rounded again (as a matmul in that dtype and a multiply
// would); probabilities stay in f32; the output is rounded once.
#pragma once
#include <stdint.h>

#include "convert.cuh"

#define WARPS 8
#define MAX_PER_LANE 8

// qp: the row's query for this head; slots: pool slots of the row's `keys` keys;
// k, v: the pools [pool slots, kv_heads * head_dim]; kh: the kv head; op: the output.
template <typename T>
__device__ void attend_keys(const T *qp, const T *k, const T *v, const uint32_t *slots,
                            uint32_t keys, T *op, int kh, int kv_heads, int head_dim,
                            float scale) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const size_t stride = (size_t)kv_heads * head_dim;
  const int per = head_dim / 32;

  float qv[MAX_PER_LANE], acc[MAX_PER_LANE];
#pragma unroll
  for (int i = 0; i < MAX_PER_LANE; ++i) {
    qv[i] = i < per ? to_f(qp[lane + 32 * i]) : 0.f;
    acc[i] = 0.f;
  }
  float m = -INFINITY, l = 0.f;
  for (uint32_t j = warp; j < keys; j += WARPS) {
    const size_t slot = slots[j];
    const T *kp = k + slot * stride + (size_t)kh * head_dim;
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
    const T *vp = v + slot * stride + (size_t)kh * head_dim;
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
  for (int i = 0; i < per; ++i) {
    float a = 0.f;
    for (int w = 0; w < WARPS; ++w)
      if (s_max[w] > -INFINITY) a += s_acc[w][lane + 32 * i] * expf(s_max[w] - mx);
    op[lane + 32 * i] = from_f<T>(total > 0.f ? a / total : 0.f);
  }
}
