// The index of the largest value of each row of f32 logits, as the host sampler
// picks it: the first of equal maxima, NaN never chosen over a number, and the last
// index of a row that is all NaN. One block per row; each thread scans a strided
// share (16-byte loads when the row allows), then the block reduces.
// x: [rows, n] f32; out: [rows] u32.
#include <stdint.h>

struct Best {
  float v;
  int i;
};

// Whether a beats b under the order above.
__device__ __forceinline__ bool beats(const Best &a, const Best &b) {
  const bool an = isnan(a.v), bn = isnan(b.v);
  if (an != bn) return bn;
  if (an) return a.i > b.i;
  if (a.v != b.v) return a.v > b.v;
  return a.i < b.i;
}

__device__ __forceinline__ void take(Best &best, float v, int i) {
  const Best c{v, i};
  if (beats(c, best)) best = c;
}

extern "C" __global__ void argmax_f32(const float *x, uint32_t *out, int n, int vectorized) {
  const float *row = x + (size_t)blockIdx.x * n;
  Best best{__int_as_float(0x7fc00000), -1};  // NaN at -1: anything beats it
  if (vectorized) {
    const float4 *v4 = reinterpret_cast<const float4 *>(row);
    for (int k = threadIdx.x; k < n / 4; k += blockDim.x) {
      const float4 f = __ldcs(v4 + k);
      take(best, f.x, 4 * k);
      take(best, f.y, 4 * k + 1);
      take(best, f.z, 4 * k + 2);
      take(best, f.w, 4 * k + 3);
    }
  } else {
    for (int k = threadIdx.x; k < n; k += blockDim.x) take(best, row[k], k);
  }
  for (int o = 16; o > 0; o >>= 1) {
    const Best other{__shfl_xor_sync(0xffffffffu, best.v, o), __shfl_xor_sync(0xffffffffu, best.i, o)};
    if (beats(other, best)) best = other;
  }
  __shared__ float vs[32];
  __shared__ int is[32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) {
    vs[warp] = best.v;
    is[warp] = best.i;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    Best b{vs[0], is[0]};
    for (int w = 1; w < (int)(blockDim.x / 32); ++w) {
      const Best c{vs[w], is[w]};
      if (beats(c, b)) b = c;
    }
    out[blockIdx.x] = (uint32_t)(b.i < 0 ? 0 : b.i);
  }
}
