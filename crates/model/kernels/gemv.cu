// y = x · wᵀ for the few rows of a decode step: x [rows, in], w [out, in] (as
// stored), y [rows, out], rows R at most 8 (one kernel per R). Reading the weights
// is the whole cost. A block of WARPS warps computes WARPS / split outputs: the
// `split` warps of an output take interleaved 16-byte pieces of its weight row,
// each lane keeping U pieces in flight (loads marked evict-first) and multiplying
// them by every x row (a few KB, kept in L1); sums in f32, reduced across the
// warp and then the output's warps, rounded to the activation dtype once, as
// cuBLAS rounds its f32 accumulator. `split` spreads outputs of few rows over
// more warps (the k and v projections have 1024 rows).
// Needs in % (16 / sizeof(T)) == 0, x and w starting on 16 bytes, and split a
// power of two dividing WARPS.
#include <stdint.h>

#include "convert.cuh"

#define WARPS 8
#define U 8

template <typename T, int R>
__device__ void gemv(const T *x, const T *w, T *y, int in, int out, int split) {
  constexpr int N = Vec16<T>::N;
  __shared__ float partial[WARPS][R];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int o = blockIdx.x * (WARPS / split) + warp / split;
  const int slice = warp % split;
  const int vecs = in / N;
  float acc[R];
#pragma unroll
  for (int r = 0; r < R; ++r) acc[r] = 0.f;
  if (o < out) {
    const uint4 *wr = reinterpret_cast<const uint4 *>(w + (size_t)o * in);
    const uint4 *xv = reinterpret_cast<const uint4 *>(x);
    const int step = 32 * split;
    for (int base = slice * 32 + lane; base < vecs; base += U * step) {
      uint4 wv[U];
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int v = base + u * step;
        wv[u] = v < vecs ? __ldcs(wr + v) : make_uint4(0u, 0u, 0u, 0u);
      }
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int v = base + u * step;
        if (v < vecs) {
          float wf[N];
          Vec16<T>::load(wv[u], wf);
#pragma unroll
          for (int r = 0; r < R; ++r) {
            float xf[N];
            Vec16<T>::load(__ldg(xv + (size_t)r * vecs + v), xf);
#pragma unroll
            for (int j = 0; j < N; ++j) acc[r] = fmaf(wf[j], xf[j], acc[r]);
          }
        }
      }
    }
  }
#pragma unroll
  for (int r = 0; r < R; ++r) {
    float s = acc[r];
    for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
    if (lane == 0) partial[warp][r] = s;
  }
  __syncthreads();
  if (lane < R && slice == 0 && o < out) {
    float s = 0.f;
    for (int k = 0; k < split; ++k) s += partial[warp + k][lane];
    y[(size_t)lane * out + o] = from_f<T>(s);
  }
}

#define GEMV(T, NAME, R)                                                                   \
  extern "C" __global__ void NAME##_##R(const T *x, const T *w, T *y, int in, int out,      \
                                        int split) {                                      \
    gemv<T, R>(x, w, y, in, out, split);                                                  \
  }
#define GEMV_ROWS(T, NAME) \
  GEMV(T, NAME, 1)         \
  GEMV(T, NAME, 2)         \
  GEMV(T, NAME, 3)         \
  GEMV(T, NAME, 4)         \
  GEMV(T, NAME, 5)         \
  GEMV(T, NAME, 6)         \
  GEMV(T, NAME, 7)         \
  GEMV(T, NAME, 8)

GEMV_ROWS(float, gemv_f32)
GEMV_ROWS(__half, gemv_f16)
GEMV_ROWS(__nv_bfloat16, gemv_bf16)
