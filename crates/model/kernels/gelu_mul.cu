// The input of Gemma's down projection from the stacked gate/up projection's
// output: out = gelu_tanh(gate) * up, where each row of x holds gate (its first
// `inter` values) then up. gelu in f32, rounded to the activation dtype (as
// PyTorch computes it on a bf16 tensor), then the product rounded.
//
// x: [rows, 2 * inter]; out: [rows, inter]. A grid-stride loop over out.
#include <stdint.h>

#include "convert.cuh"

template <typename T>
__device__ void gelu_mul(const T *x, T *out, int rows, int inter) {
  const size_t n = (size_t)rows * inter;
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
       i += (size_t)gridDim.x * blockDim.x) {
    const size_t r = i / inter, c = i % inter;
    const float g = to_f(x[r * 2 * inter + c]);
    const float u = to_f(x[r * 2 * inter + inter + c]);
    const float inner = 0.7978845608028654f * (g + 0.044715f * g * g * g);
    const float gelu = 0.5f * g * (1.f + tanhf(inner));
    out[i] = from_f<T>(to_f(from_f<T>(gelu)) * u);
  }
}

#define GELU_MUL(T, NAME)                                                  \
  extern "C" __global__ void NAME(const T *x, T *out, int rows, int inter) { \
    gelu_mul<T>(x, out, rows, inter);                                       \
  }

GELU_MUL(float, gelu_mul_f32)
GELU_MUL(__half, gelu_mul_f16)
GELU_MUL(__nv_bfloat16, gelu_mul_bf16)
