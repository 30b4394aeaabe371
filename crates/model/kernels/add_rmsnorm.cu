// Gemma's residual add fused with the RMSNorms on either side of it:
//   y  = rmsnorm(x) * w_post            (the sublayer's post-norm)
//   h' = h + y                          (the residual stream, written out)
//   z  = rmsnorm(h') * w_next           (the next sublayer's pre-norm, written out)
// with w_* = 1 + weight in f32, sums in f32, and y, h', z rounded to the activation
// dtype where the unfused path rounds them.
//
// x, h: [rows, cols]; w_post, w_next: [cols] f32; out: [2, rows, cols] (h', then z).
// One block per row, of at least cols / PER threads (at most 1024: cols up to 8192).
#include <stdint.h>

#include "convert.cuh"

#define PER 8

// Sum over the block (blockDim.x a multiple of 32, at most 1024).
__device__ float block_sum(float v) {
  __shared__ float partial[32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  __syncthreads();
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  const int warps = blockDim.x / 32;
  v = threadIdx.x < warps ? partial[threadIdx.x] : 0.f;
  if (warp == 0)
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  __shared__ float total;
  if (threadIdx.x == 0) total = v;
  __syncthreads();
  return total;
}

// Each thread keeps its PER columns (c = threadIdx.x + j * blockDim.x) in registers
// across the three steps: x, h and the weights are read once, h' and z written once.
template <typename T>
__device__ void add_rmsnorm(const T *x, const T *h, const float *w_post, const float *w_next,
                            T *out, int rows, int cols, float eps) {
  const size_t row = blockIdx.x;
  const T *xr = x + row * cols;
  const T *hr = h + row * cols;
  T *h_out = out + row * cols;
  T *z_out = out + (size_t)rows * cols + row * cols;
  // Every load up front, so that they wait on memory once, together.
  float xs[PER], hs[PER], wp[PER], wn[PER];
#pragma unroll
  for (int j = 0; j < PER; ++j) {
    const int c = threadIdx.x + j * blockDim.x;
    const bool in = c < cols;
    xs[j] = in ? to_f(xr[c]) : 0.f;
    hs[j] = in ? to_f(hr[c]) : 0.f;
    wp[j] = in ? w_post[c] : 0.f;
    wn[j] = in ? w_next[c] : 0.f;
  }
  float sq = 0.f;
#pragma unroll
  for (int j = 0; j < PER; ++j) sq += xs[j] * xs[j];
  const float scale_x = rsqrtf(block_sum(sq) / cols + eps);
  float sq_h = 0.f;
#pragma unroll
  for (int j = 0; j < PER; ++j) {
    const int c = threadIdx.x + j * blockDim.x;
    if (c < cols) {
      const float y = to_f(from_f<T>(xs[j] * scale_x * wp[j]));
      const T hn = from_f<T>(hs[j] + y);
      h_out[c] = hn;
      hs[j] = to_f(hn);
      sq_h += hs[j] * hs[j];
    }
  }
  const float scale_h = rsqrtf(block_sum(sq_h) / cols + eps);
#pragma unroll
  for (int j = 0; j < PER; ++j) {
    const int c = threadIdx.x + j * blockDim.x;
    if (c < cols) z_out[c] = from_f<T>(hs[j] * scale_h * wn[j]);
  }
}

#define ADD_RMSNORM(T, NAME)                                                              \
  extern "C" __global__ void NAME(const T *x, const T *h, const float *w_post,             \
                                  const float *w_next, T *out, int rows, int cols,          \
                                  float eps) {                                              \
    add_rmsnorm<T>(x, h, w_post, w_next, out, rows, cols, eps);                             \
  }

ADD_RMSNORM(float, add_rmsnorm_f32)
ADD_RMSNORM(__half, add_rmsnorm_f16)
ADD_RMSNORM(__nv_bfloat16, add_rmsnorm_bf16)
