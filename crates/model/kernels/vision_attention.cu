// The vision tower's attention (every patch sees every patch of its image) in one
// pass, flash-attention style: scores, softmax and the product with the values
// tile by tile in registers, never the [heads, patches, patches] scores in memory
// (at 896 px, 16 x 4096 x 4096: three passes over 512 MB a layer unfused).
//
// q, k, v: [images * heads, n, D] (the queries already scaled); out: [images, n,
// heads * D], the layout out_proj takes. A block of 4 warps takes 64 queries of one
// (image, head); each warp 16 of them, against 64 keys a tile, on the tensor cores
// (mma.cuh): S = Q K^T from the queries' fragments kept in registers, the running
// maximum and sum per row (f32), then P V with P rounded to T (as the unfused path
// rounds the probabilities) and the outputs kept in f32 until the end.
//
// Shared memory: one tile of 64 rows of K (also Q's at the start), padded to a
// multiple of 16 columns with zeros, and V transposed ([D][64 keys]); rows padded
// by 8 elements so a fragment's 32-bit loads hit distinct banks.
#include <stdint.h>

#include "convert.cuh"
#include "mma.cuh"

#define VA_TILE 64

template <typename T> __device__ __forceinline__ uint32_t pack_half2(float lo, float hi);
template <> __device__ __forceinline__ uint32_t pack_half2<__nv_bfloat16>(float lo, float hi) {
  return pack2(lo, hi, __nv_bfloat16());
}
template <> __device__ __forceinline__ uint32_t pack_half2<__half>(float lo, float hi) {
  return pack2(lo, hi, __half());
}

// Rows [start, start + 64) of a [n, D] matrix into sm (row stride S), zero past n
// and from column D to DP.
template <typename T, int D, int DP, int S>
__device__ __forceinline__ void load_rows(T *sm, const T *src, int start, int n) {
  constexpr int VECS = DP / 8;
  for (int i = threadIdx.x; i < VA_TILE * VECS; i += blockDim.x) {
    const int r = i / VECS, c = (i % VECS) * 8;
    uint4 val = make_uint4(0u, 0u, 0u, 0u);
    if (start + r < n && c < D) val = *reinterpret_cast<const uint4 *>(src + (size_t)(start + r) * D + c);
    *reinterpret_cast<uint4 *>(sm + r * S + c) = val;
  }
}

// Rows [start, start + 64) of V [n, D] into vt transposed: vt[d * ST + key].
template <typename T, int D, int ST>
__device__ __forceinline__ void load_values_transposed(T *vt, const T *src, int start, int n) {
  constexpr int VECS = D / 8;
  for (int i = threadIdx.x; i < VA_TILE * VECS; i += blockDim.x) {
    const int r = i / VECS, c = (i % VECS) * 8;
    uint4 val = make_uint4(0u, 0u, 0u, 0u);
    if (start + r < n) val = *reinterpret_cast<const uint4 *>(src + (size_t)(start + r) * D + c);
    const T *e = reinterpret_cast<const T *>(&val);
#pragma unroll
    for (int j = 0; j < 8; ++j) vt[(c + j) * ST + r] = e[j];
  }
}

__device__ __forceinline__ uint32_t ld32(const void *p) { return *reinterpret_cast<const uint32_t *>(p); }

template <typename T, int D>
__device__ void vision_attention(const T *q, const T *k, const T *v, T *out, int n, int heads) {
  constexpr int DP = (D + 15) / 16 * 16;  // the QK^T depth, padded with zeros
  constexpr int S = DP + 8;               // row stride of the K (and Q) tile
  constexpr int ST = VA_TILE + 8;         // row stride of the transposed V tile
  constexpr int KS = DP / 16;             // k-steps of QK^T
  constexpr int NO = D / 8;               // 8-wide column tiles of the output
  __shared__ __align__(16) T sk[VA_TILE * S];
  __shared__ __align__(16) T svt[D * ST];

  const int bh = blockIdx.y, q0 = blockIdx.x * VA_TILE;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const size_t base = (size_t)bh * n * D;

  // The warp's 16 queries as A fragments, kept for every key tile.
  load_rows<T, D, DP, S>(sk, q + base, q0, n);
  __syncthreads();
  uint32_t qa[KS][4];
  const T *qr = sk + (warp * 16 + g) * S;
#pragma unroll
  for (int kk = 0; kk < KS; ++kk) {
    qa[kk][0] = ld32(qr + kk * 16 + 2 * t);
    qa[kk][1] = ld32(qr + 8 * S + kk * 16 + 2 * t);
    qa[kk][2] = ld32(qr + kk * 16 + 8 + 2 * t);
    qa[kk][3] = ld32(qr + 8 * S + kk * 16 + 8 + 2 * t);
  }

  float o[NO][4];
#pragma unroll
  for (int j = 0; j < NO; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};

  for (int k0 = 0; k0 < n; k0 += VA_TILE) {
    __syncthreads();  // every warp is done with the previous tile (and with Q)
    load_rows<T, D, DP, S>(sk, k + base, k0, n);
    load_values_transposed<T, D, ST>(svt, v + base, k0, n);
    __syncthreads();

    float s[8][4];
#pragma unroll
    for (int nt = 0; nt < 8; ++nt) {
      s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
      const T *kr = sk + (nt * 8 + g) * S;
#pragma unroll
      for (int kk = 0; kk < KS; ++kk) {
        const uint32_t b[2] = {ld32(kr + kk * 16 + 2 * t), ld32(kr + kk * 16 + 8 + 2 * t)};
        mma_16816<T>(s[nt], qa[kk], b);
      }
#pragma unroll
      for (int i = 0; i < 4; ++i)
        if (k0 + nt * 8 + 2 * t + (i % 2) >= n) s[nt][i] = -INFINITY;
    }

    // Running maximum and sum of rows g (h = 0) and g + 8 (h = 1); the four lanes
    // of a row (the same g) hold its 64 scores between them.
    float corr[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float mx = -INFINITY;
#pragma unroll
      for (int nt = 0; nt < 8; ++nt) mx = fmaxf(mx, fmaxf(s[nt][2 * h], s[nt][2 * h + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float m_new = fmaxf(m[h], mx);
      corr[h] = m_new == -INFINITY ? 1.f : __expf(m[h] - m_new);
      float sum = 0.f;
#pragma unroll
      for (int nt = 0; nt < 8; ++nt)
#pragma unroll
        for (int i = 0; i < 2; ++i) {
          const float x = s[nt][2 * h + i];
          const float p = x == -INFINITY ? 0.f : __expf(x - m_new);
          s[nt][2 * h + i] = p;
          sum += p;
        }
      l[h] = l[h] * corr[h] + sum;
      m[h] = m_new;
    }
#pragma unroll
    for (int j = 0; j < NO; ++j) {
      o[j][0] *= corr[0];
      o[j][1] *= corr[0];
      o[j][2] *= corr[1];
      o[j][3] *= corr[1];
    }

    // O += P V: P's accumulator layout is the A fragment layout of the next product.
#pragma unroll
    for (int kk = 0; kk < VA_TILE / 16; ++kk) {
      const uint32_t pa[4] = {
          pack_half2<T>(s[2 * kk][0], s[2 * kk][1]), pack_half2<T>(s[2 * kk][2], s[2 * kk][3]),
          pack_half2<T>(s[2 * kk + 1][0], s[2 * kk + 1][1]),
          pack_half2<T>(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
      for (int j = 0; j < NO; ++j) {
        const T *vr = svt + (j * 8 + g) * ST + kk * 16;
        const uint32_t b[2] = {ld32(vr + 2 * t), ld32(vr + 8 + 2 * t)};
        mma_16816<T>(o[j], pa, b);
      }
    }
  }

  const int image = bh / heads, head = bh % heads;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    float total = l[h];
    total += __shfl_xor_sync(0xffffffffu, total, 1);
    total += __shfl_xor_sync(0xffffffffu, total, 2);
    const float inv = total > 0.f ? 1.f / total : 0.f;
    const int row = q0 + warp * 16 + g + 8 * h;
    if (row >= n) continue;
    T *dst = out + (((size_t)image * n + row) * heads + head) * D;
#pragma unroll
    for (int j = 0; j < NO; ++j)
      *reinterpret_cast<uint32_t *>(dst + j * 8 + 2 * t) =
          pack_half2<T>(o[j][2 * h] * inv, o[j][2 * h + 1] * inv);
  }
}

#define VISION_ATTENTION(T, SUFFIX, D)                                                      \
  extern "C" __global__ void vision_attention_##SUFFIX##_d##D(const T *q, const T *k,       \
                                                             const T *v, T *out, int n,     \
                                                             int heads) {                   \
    vision_attention<T, D>(q, k, v, out, n, heads);                                         \
  }
#define VISION_ATTENTION_WIDTHS(T, SUFFIX) \
  VISION_ATTENTION(T, SUFFIX, 16)          \
  VISION_ATTENTION(T, SUFFIX, 32)          \
  VISION_ATTENTION(T, SUFFIX, 64)          \
  VISION_ATTENTION(T, SUFFIX, 72)          \
  VISION_ATTENTION(T, SUFFIX, 80)          \
  VISION_ATTENTION(T, SUFFIX, 96)          \
  VISION_ATTENTION(T, SUFFIX, 128)

VISION_ATTENTION_WIDTHS(__nv_bfloat16, bf16)
VISION_ATTENTION_WIDTHS(__half, f16)
