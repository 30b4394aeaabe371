// The vision tower's biased products finished in one pass over their output
// (candle would take a broadcast add plus one more pass, each with a per-element
// index computation and a host-to-device copy of the strides):
//
//   bias_epilogue, mode 0: out = gelu_tanh(x + bias)              (fc1, then the activation)
//   bias_epilogue, mode 1: out = res + (x + bias)                 (out_proj / fc2, then the residual;
//                          res may hold fewer rows, repeated: the patch embedding plus the positions)
//   qkv_heads:             x [rows, 3 * heads * d] + bias → out [3, images, heads, patches, d],
//                          the queries times `scale`              (q/k/v, split into heads)
//
// Every step is computed in f32 and rounded to T where the unfused ops round: the
// biased product, then the activation (computed in f32 and rounded once, as PyTorch
// does on a bf16 tensor), the residual sum or the scaled queries.
//
// One thread per 16 bytes (Vec16); a row's width, and d, must be whole vectors and
// every pointer 16-byte aligned (the Rust side checks).
#include <stdint.h>

#include "convert.cuh"

template <typename T> __device__ __forceinline__ float round_to(float v) {
  return to_f(from_f<T>(v));
}

__device__ __forceinline__ float gelu_tanh(float g) {
  const float inner = 0.7978845608028654f * (g + 0.044715f * g * g * g);
  return 0.5f * g * (1.f + tanhf(inner));
}

template <typename T>
__device__ void bias_epilogue(const T *x, const T *bias, const T *res, T *out, size_t vecs,
                              int row_vecs, size_t res_vecs, int mode) {
  constexpr int N = Vec16<T>::N;
  const uint4 *xv = reinterpret_cast<const uint4 *>(x);
  const uint4 *bv = reinterpret_cast<const uint4 *>(bias);
  const uint4 *rv = reinterpret_cast<const uint4 *>(res);
  uint4 *ov = reinterpret_cast<uint4 *>(out);
  for (size_t k = (size_t)blockIdx.x * blockDim.x + threadIdx.x; k < vecs;
       k += (size_t)gridDim.x * blockDim.x) {
    float v[N], b[N];
    Vec16<T>::load(__ldcs(xv + k), v);
    Vec16<T>::load(bv[k % row_vecs], b);
#pragma unroll
    for (int j = 0; j < N; ++j) v[j] = round_to<T>(v[j] + b[j]);
    if (mode == 0) {
#pragma unroll
      for (int j = 0; j < N; ++j) v[j] = gelu_tanh(v[j]);
    } else {
      float r[N];
      Vec16<T>::load(rv[k < res_vecs ? k : k % res_vecs], r);
#pragma unroll
      for (int j = 0; j < N; ++j) v[j] += r[j];
    }
    __stcs(ov + k, Vec16<T>::store(v));
  }
}

template <typename T>
__device__ void qkv_heads(const T *x, const T *bias, T *out, size_t vecs, int patches,
                          int heads, int d, float scale) {
  constexpr int N = Vec16<T>::N;
  const int hidden = heads * d;
  const int row_vecs = 3 * hidden / N;
  const size_t rows = vecs / row_vecs;
  const uint4 *xv = reinterpret_cast<const uint4 *>(x);
  const uint4 *bv = reinterpret_cast<const uint4 *>(bias);
  for (size_t k = (size_t)blockIdx.x * blockDim.x + threadIdx.x; k < vecs;
       k += (size_t)gridDim.x * blockDim.x) {
    const size_t row = k / row_vecs;
    const int c = (int)(k % row_vecs) * N;
    const int which = c / hidden, head = (c % hidden) / d, dd = c % d;
    const size_t image = row / patches, patch = row % patches;
    float v[N], b[N];
    Vec16<T>::load(__ldcs(xv + k), v);
    Vec16<T>::load(bv[k % row_vecs], b);
    const float mul = which == 0 ? scale : 1.f;
#pragma unroll
    for (int j = 0; j < N; ++j) v[j] = round_to<T>(v[j] + b[j]) * mul;
    const size_t at =
        (size_t)which * rows * hidden + ((image * heads + head) * patches + patch) * d + dd;
    *reinterpret_cast<uint4 *>(out + at) = Vec16<T>::store(v);
  }
}

#define BIAS_EPILOGUE(T, SUFFIX)                                                          \
  extern "C" __global__ void bias_epilogue_##SUFFIX(const T *x, const T *bias, const T *res, \
                                                    T *out, size_t vecs, int row_vecs,       \
                                                    size_t res_vecs, int mode) {             \
    bias_epilogue<T>(x, bias, res, out, vecs, row_vecs, res_vecs, mode);                     \
  }                                                                                          \
  extern "C" __global__ void qkv_heads_##SUFFIX(const T *x, const T *bias, T *out,           \
                                                size_t vecs, int patches, int heads, int d,  \
                                                float scale) {                               \
    qkv_heads<T>(x, bias, out, vecs, patches, heads, d, scale);                              \
  }

BIAS_EPILOGUE(float, f32)
BIAS_EPILOGUE(__half, f16)
BIAS_EPILOGUE(__nv_bfloat16, bf16)
