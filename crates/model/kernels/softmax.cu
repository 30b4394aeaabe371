// Softmax over the last dimension of contiguous rows, computed in f32 and rounded
// once to the activation dtype (transformers' softmax(x, dtype=float32).to(dtype)).
// One block per row: each thread holds up to VPT 16-byte pieces of the row in
// registers, so the row is read once and written once (candle's kernel reads it
// three times). Needs n % (16 / sizeof(T)) == 0, the rows starting on 16 bytes, and
// n <= blockDim.x * VPT * (16 / sizeof(T)).
// x, y: [rows, n].
#include <stdint.h>

#include "convert.cuh"

#define VPT 4

// Reduces over the block (blockDim.x a multiple of 32); `max` or sum.
template <bool MAX>
__device__ float block_reduce(float v) {
  __shared__ float partial[32];
  __shared__ float total;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  for (int o = 16; o > 0; o >>= 1) {
    const float other = __shfl_xor_sync(0xffffffffu, v, o);
    v = MAX ? fmaxf(v, other) : v + other;
  }
  __syncthreads();  // the previous call's readers are done with partial/total
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  if (warp == 0) {
    const int warps = blockDim.x / 32;
    v = lane < warps ? partial[lane] : (MAX ? -INFINITY : 0.f);
    for (int o = 16; o > 0; o >>= 1) {
      const float other = __shfl_xor_sync(0xffffffffu, v, o);
      v = MAX ? fmaxf(v, other) : v + other;
    }
    if (lane == 0) total = v;
  }
  __syncthreads();
  return total;
}

template <typename T>
__device__ void softmax_rows(const T *x, T *y, int n) {
  constexpr int N = Vec16<T>::N;
  const int vecs = n / N;
  const uint4 *xr = reinterpret_cast<const uint4 *>(x + (size_t)blockIdx.x * n);
  uint4 *yr = reinterpret_cast<uint4 *>(y + (size_t)blockIdx.x * n);
  float v[VPT][N];
  float m = -INFINITY;
#pragma unroll
  for (int i = 0; i < VPT; ++i) {
    const int k = threadIdx.x + i * blockDim.x;
    if (k < vecs) {
      Vec16<T>::load(__ldcs(xr + k), v[i]);
#pragma unroll
      for (int j = 0; j < N; ++j) m = fmaxf(m, v[i][j]);
    }
  }
  m = block_reduce<true>(m);
  float s = 0.f;
#pragma unroll
  for (int i = 0; i < VPT; ++i) {
    const int k = threadIdx.x + i * blockDim.x;
    if (k < vecs) {
#pragma unroll
      for (int j = 0; j < N; ++j) {
        v[i][j] = __expf(v[i][j] - m);
        s += v[i][j];
      }
    }
  }
  const float inv = 1.f / block_reduce<false>(s);
#pragma unroll
  for (int i = 0; i < VPT; ++i) {
    const int k = threadIdx.x + i * blockDim.x;
    if (k < vecs) {
#pragma unroll
      for (int j = 0; j < N; ++j) v[i][j] *= inv;
      __stcs(yr + k, Vec16<T>::store(v[i]));
    }
  }
}

#define SOFTMAX(T, NAME)                                               \
  extern "C" __global__ void NAME(const T *x, T *y, int n) {           \
    softmax_rows<T>(x, y, n);                                          \
  }

SOFTMAX(float, softmax_f32)
SOFTMAX(__half, softmax_f16)
SOFTMAX(__nv_bfloat16, softmax_bf16)
