// The step between the q/k/v projections and attention, fused: Gemma's q and k
// RMSNorms (f32 sums, f32 `1 + w`), rotary embeddings (rotate-half, the tables in
// the activation dtype, products rounded as the unfused kernel rounds them), and
// the write of each token's k and v into the paged pool at its slot.
//
// q: [tokens, heads, d]; k, v: [tokens, kv_heads, d]; q_w, k_w: [d] f32;
// cos, sin: [tokens, d/2]; slots: [tokens]; k_pool, v_pool: [pool slots, kv_heads * d];
// q_out: [tokens, heads, d]. Grid (tokens, heads + kv_heads), d/2 threads (d even,
// at most 1024): block (t, h) normalizes and rotates head h of token t; the k
// blocks also copy that token's v head.
#include <stdint.h>

#include "convert.cuh"

__device__ float pair_sum(float v) {
  __shared__ float partial[32];
  __shared__ float total;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  if (threadIdx.x == 0) {
    float s = 0.f;
    for (int w = 0; w < (blockDim.x + 31) / 32; ++w) s += partial[w];
    total = s;
  }
  __syncthreads();
  return total;
}

template <typename T>
__device__ void qk_norm_rope_write(const T *q, const T *k, const T *v, const float *q_w,
                                   const float *k_w, const T *cos, const T *sin,
                                   const uint32_t *slots, T *k_pool, T *v_pool, T *q_out,
                                   int heads, int kv_heads, int d, float eps) {
  const int t = blockIdx.x, head = blockIdx.y, i = threadIdx.x, half = d / 2;
  const bool is_q = head < heads;
  const int kh = head - heads;
  const T *src = is_q ? q + ((size_t)t * heads + head) * d : k + ((size_t)t * kv_heads + kh) * d;
  const float *w = is_q ? q_w : k_w;
  // Lanes past half (a block rounded up to whole warps) only join the sums.
  const bool live = i < half;
  const float x1 = live ? to_f(src[i]) : 0.f, x2 = live ? to_f(src[i + half]) : 0.f;
  const float scale = rsqrtf(pair_sum(x1 * x1 + x2 * x2) / d + eps);
  if (!live) return;
  const T n1 = from_f<T>(x1 * scale * w[i]);
  const T n2 = from_f<T>(x2 * scale * w[i + half]);
  const float c = to_f(cos[(size_t)t * half + i]), s = to_f(sin[(size_t)t * half + i]);
  const float a1 = to_f(from_f<T>(to_f(n1) * c)), b1 = to_f(from_f<T>(to_f(n2) * s));
  const float a2 = to_f(from_f<T>(to_f(n1) * s)), b2 = to_f(from_f<T>(to_f(n2) * c));
  const T r1 = from_f<T>(a1 - b1), r2 = from_f<T>(a2 + b2);
  if (is_q) {
    T *dst = q_out + ((size_t)t * heads + head) * d;
    dst[i] = r1;
    dst[i + half] = r2;
    return;
  }
  const size_t base = (size_t)slots[t] * kv_heads * d + (size_t)kh * d;
  k_pool[base + i] = r1;
  k_pool[base + i + half] = r2;
  const T *vs = v + ((size_t)t * kv_heads + kh) * d;
  v_pool[base + i] = vs[i];
  v_pool[base + i + half] = vs[i + half];
}

#define QK_NORM_ROPE_WRITE(T, NAME)                                                        \
  extern "C" __global__ void NAME(const T *q, const T *k, const T *v, const float *q_w,     \
                                  const float *k_w, const T *cos, const T *sin,            \
                                  const uint32_t *slots, T *k_pool, T *v_pool, T *q_out,   \
                                  int heads, int kv_heads, int d, float eps) {             \
    qk_norm_rope_write<T>(q, k, v, q_w, k_w, cos, sin, slots, k_pool, v_pool, q_out, heads, \
                          kv_heads, d, eps);                                               \
  }

QK_NORM_ROPE_WRITE(float, qk_norm_rope_write_f32)
QK_NORM_ROPE_WRITE(__half, qk_norm_rope_write_f16)
QK_NORM_ROPE_WRITE(__nv_bfloat16, qk_norm_rope_write_bf16)
