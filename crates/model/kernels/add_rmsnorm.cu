// Gemma's residual add fused with the RMSNorms on either side of it:
//   y  = rmsnorm(x) * w_post            (the sublayer's post-norm)
//   h' = h + y                          (the residual stream, written out)
//   z  = rmsnorm(h') * w_next           (the next sublayer's pre-norm, written out)
// with w_* = 1 + weight in f32, sums in f32, and y, h', z rounded to the activation
// dtype where the unfused path rounds them. One block per row.
//
// x, h: [rows, cols]; w_post, w_next: [cols] f32; out: [2, rows, cols] (h', then z).
#include <stdint.h>

#include "convert.cuh"

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

template <typename T>
__device__ void add_rmsnorm(const T *x, const T *h, const float *w_post, const float *w_next,
                            T *out, int rows, int cols, float eps) {
  const size_t row = blockIdx.x;
  const T *xr = x + row * cols;
  const T *hr = h + row * cols;
  T *h_out = out + row * cols;
  T *z_out = out + (size_t)rows * cols + row * cols;
  float sq = 0.f;
  for (int c = threadIdx.x; c < cols; c += blockDim.x) {
    const float v = to_f(xr[c]);
    sq += v * v;
  }
  const float scale_x = rsqrtf(block_sum(sq) / cols + eps);
  float sq_h = 0.f;
  for (int c = threadIdx.x; c < cols; c += blockDim.x) {
    const float y = to_f(from_f<T>(to_f(xr[c]) * scale_x * w_post[c]));
    const T hn = from_f<T>(to_f(hr[c]) + y);
    h_out[c] = hn;
    const float v = to_f(hn);
    sq_h += v * v;
  }
  const float scale_h = rsqrtf(block_sum(sq_h) / cols + eps);
  for (int c = threadIdx.x; c < cols; c += blockDim.x)
    z_out[c] = from_f<T>(to_f(h_out[c]) * scale_h * w_next[c]);
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
