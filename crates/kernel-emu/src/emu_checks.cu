// Kernels that check the emulator itself (src/tests.rs), not the model's.
#include <stdint.h>

// out[block] = sum of in[block * blockDim.x + t] over the block's threads, through
// shared memory, a warp shuffle and __syncthreads; warps wholly past `n` leave at
// once (and must not hold the barrier up).
static inline int min_int(int a, int b) { return a < b ? a : b; }

extern "C" __global__ void emu_block_sum(const float *in, float *out, int n) {
  __shared__ float warp_sums[32];
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  const int active = min_int(n - (int)(blockIdx.x * blockDim.x), (int)blockDim.x);
  if ((int)threadIdx.x / 32 >= (active + 31) / 32) return;
  float v = (int)threadIdx.x < active ? in[i] : 0.f;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = v;
  __syncthreads();
  if (threadIdx.x == 0) {
    float s = 0.f;
    for (int w = 0; w < (active + 31) / 32; ++w) s += warp_sums[w];
    out[blockIdx.x] = s;
  }
}

// Lane t of each warp gets lane (t ^ mask)'s id.
extern "C" __global__ void emu_shuffle(int *out, int mask) {
  out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, (int)threadIdx.x, mask);
}

// out[t] = the lanes of t's warp whose value (t % modulus) is t's, and the lowest of them.
extern "C" __global__ void emu_match(uint32_t *out, int modulus) {
  const unsigned peers = __match_any_sync(0xffffffffu, threadIdx.x % (unsigned)modulus);
  out[2 * threadIdx.x] = peers;
  out[2 * threadIdx.x + 1] = (uint32_t)(__ffs((int)peers) - 1) * 100 + (uint32_t)__popc(peers);
}

// Thread 0 waits at a barrier the others never reach while they wait at another one.
extern "C" __global__ void emu_deadlock(int *out) {
  if (threadIdx.x == 0) {
    __syncthreads();
  } else {
    out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1, 1);
  }
}

// out[i] = (x, y, z) of the thread and block, for the index mapping.
extern "C" __global__ void emu_places(uint32_t *out) {
  const uint32_t block = (blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
  const uint32_t t = (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
  const uint32_t i = block * blockDim.x * blockDim.y * blockDim.z + t;
  out[6 * i + 0] = threadIdx.x;
  out[6 * i + 1] = threadIdx.y;
  out[6 * i + 2] = threadIdx.z;
  out[6 * i + 3] = blockIdx.x;
  out[6 * i + 4] = blockIdx.y;
  out[6 * i + 5] = blockIdx.z;
}

// Round trips through the half-precision conversions, for their bits.
extern "C" __global__ void emu_to_half(const float *in, uint16_t *h, uint16_t *b, float *back, int n) {
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    const __half x = __float2half(in[i]);
    const __nv_bfloat16 y = __float2bfloat16(in[i]);
    h[i] = x.bits;
    b[i] = y.bits;
    back[2 * i] = __half2float(x);
    back[2 * i + 1] = __bfloat162float(y);
  }
}
