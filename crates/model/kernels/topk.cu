// The k largest finite logits of each row, as the host sampler's top-k takes them:
// larger first, equal logits (-0 equal to +0) lower index first, NaN and +-inf never.
// One block per row. A radix select finds the k-th largest value: four passes of
// 8-bit digit histograms over order-preserving keys of the finite values, each pass
// narrowing to the digit holding it. Each warp counts into its own histogram, one
// add per distinct digit among its lanes (__match_any_sync): logits crowd into a
// few top digits, and one shared counter per digit would serialize the block. One more pass, each thread over a contiguous
// share of the row in index order, writes every larger value and, of the values
// equal to it, those of the lowest indices.
// x: [rows, n] f32; out: [rows, 2k + 1] u32: k indices, then their k values' bits
// (in no particular order: the host ranks them), then how many were taken (fewer
// than k when the row holds fewer finite values), with bit 31 set when the row held
// a NaN or an infinity. The block must have at most 1024 threads, a multiple of 32.
#include <stdint.h>

#define TOPK_MAX_THREADS 1024
#define TOPK_MAX_WARPS (TOPK_MAX_THREADS / 32)

__device__ __forceinline__ bool finite_bits(uint32_t b) { return (b & 0x7f800000u) != 0x7f800000u; }

// -0 as +0 (they are equal logits), then a key whose unsigned order is the floats'.
__device__ __forceinline__ uint32_t order_key(uint32_t b) {
  if (b == 0x80000000u) b = 0u;
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

// Picks the digit of this pass: the highest bin at which the count from the top
// reaches `want`; narrows the prefix to it and leaves what is still wanted of it.
__device__ void choose_digit(const uint32_t *hist, int shift, uint32_t *prefix, uint32_t *want) {
  uint32_t above = 0;
  for (int b = 255; b >= 0; --b) {
    if (above + hist[b] >= *want) {
      *prefix |= (uint32_t)b << shift;
      *want -= above;
      return;
    }
    above += hist[b];
  }
}

extern "C" __global__ void topk_f32(const float *x, uint32_t *out, int n, int k) {
  const uint32_t *row = reinterpret_cast<const uint32_t *>(x) + (size_t)blockIdx.x * n;
  uint32_t *ids = out + (size_t)blockIdx.x * (2 * k + 1);
  uint32_t *vals = ids + k;
  __shared__ uint32_t hist[TOPK_MAX_WARPS][256];
  __shared__ uint32_t ranks[TOPK_MAX_THREADS];
  const int lane = (int)threadIdx.x % 32, warp = (int)threadIdx.x / 32;
  const int warps = (int)blockDim.x / 32;
  __shared__ uint32_t s_prefix, s_want, s_total, s_nonfinite, s_next;
  if (threadIdx.x == 0) {
    s_prefix = 0;
    s_want = (uint32_t)k;
    s_nonfinite = 0;
    s_next = 0;
  }
  uint32_t mask = 0;
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int i = threadIdx.x; i < warps * 256; i += blockDim.x) hist[i / 256][i % 256] = 0;
    __syncthreads();
    const uint32_t prefix = s_prefix;
    bool nonfinite = false;
    // Whole warps step together (the match needs every lane); 256: no digit.
    for (int base = (int)threadIdx.x - lane; base < n; base += blockDim.x) {
      const int i = base + lane;
      uint32_t digit = 256;
      if (i < n) {
        const uint32_t b = row[i];
        nonfinite |= !finite_bits(b);
        const uint32_t key = order_key(b);
        if (finite_bits(b) && (key & mask) == prefix) digit = (key >> shift) & 255u;
      }
      const unsigned peers = __match_any_sync(0xffffffffu, digit);
      if (digit < 256 && lane == __ffs((int)peers) - 1) hist[warp][digit] += __popc(peers);
    }
    if (nonfinite) s_nonfinite = 1;  // every writer writes 1
    __syncthreads();
    for (int d = threadIdx.x; d < 256; d += blockDim.x) {
      uint32_t sum = 0;
      for (int w = 0; w < warps; ++w) sum += hist[w][d];
      hist[0][d] = sum;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      if (shift == 24) {
        uint32_t total = 0;
        for (int d = 0; d < 256; ++d) total += hist[0][d];
        s_total = total;
      }
      if (s_total > (uint32_t)k) choose_digit(hist[0], shift, &s_prefix, &s_want);
    }
    mask |= 255u << shift;
    __syncthreads();
  }
  // Every finite value when there are at most k; else those above the k-th
  // largest `kth` and the `want` lowest-indexed equal to it.
  const bool all = s_total <= (uint32_t)k;
  const uint32_t kth = s_prefix, want = s_want;
  const int share = (n + (int)blockDim.x - 1) / (int)blockDim.x;
  const int begin = (int)threadIdx.x * share;
  const int end = min(n, begin + share);
  uint32_t equal = 0;
  for (int i = begin; i < end && !all; ++i) {
    const uint32_t b = row[i];
    if (finite_bits(b) && order_key(b) == kth) ++equal;
  }
  ranks[threadIdx.x] = equal;
  __syncthreads();
  if (threadIdx.x == 0) {
    uint32_t run = 0;
    for (int t = 0; t < (int)blockDim.x; ++t) {
      const uint32_t c = ranks[t];
      ranks[t] = run;
      run += c;
    }
  }
  __syncthreads();
  uint32_t rank = ranks[threadIdx.x];
  const uint32_t larger = all ? s_total : (uint32_t)k - want;
  for (int i = begin; i < end; ++i) {
    uint32_t b = row[i];
    if (!finite_bits(b)) continue;
    const uint32_t key = order_key(b);
    if (b == 0x80000000u) b = 0u;
    if (all || key > kth) {
      const uint32_t slot = atomicAdd(&s_next, 1u);
      ids[slot] = (uint32_t)i;
      vals[slot] = b;
    } else if (key == kth) {
      if (rank < want) {
        ids[larger + rank] = (uint32_t)i;
        vals[larger + rank] = b;
      }
      ++rank;
    }
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    const uint32_t taken = all ? s_total : (uint32_t)k;
    ids[2 * k] = taken | (s_nonfinite ? 0x80000000u : 0u);
  }
}
