// The CUDA device API our kernels use, on the host, so that kernels/*.cu compile with
// the C++ compiler and run on the CPU in tests (force-included before each kernel
// source; see runtime.cpp for the scheduler).
//
// Each CUDA thread of a block is a fiber on the calling OS thread; blocks run one
// after another. __syncthreads and the warp shuffles are barriers the fibers wait at
// (a thread that returned counts as arrived, as on the GPU), and a barrier that can
// never be met is reported as a deadlock instead of hanging. __shared__ variables are
// per OS thread, so tests may launch from several threads at once.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

using std::isinf;
using std::isnan;

// Kernels may ask whether they are being emulated (for the tensor-core instructions,
// which mma.cuh emulates here).
#define MEDGEMMA_EMU 1

#ifdef EMU_SCAN
// Preprocessing pass of build.rs: leaves a mark where each kernel is defined.
#define __global__ EMU_KERNEL_MARK
#else
#define __global__
#endif
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static thread_local
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __restrict__ __restrict

struct dim3 {
  unsigned x, y, z;
};
struct float2 {
  float x, y;
};
struct alignas(16) float4 {
  float x, y, z, w;
};
struct alignas(16) uint4 {
  unsigned x, y, z, w;
};
inline float2 make_float2(float x, float y) { return {x, y}; }
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }

namespace emu {
// Where the running fiber is.
struct Place {
  dim3 thread, block, block_dim, grid_dim;
};
extern thread_local Place place;
// Waits until every live thread of the block (warp = -1) or of the thread's warp has
// arrived.
void barrier(int warp);
// This thread's slot for exchanging a warp value, and lane `lane`'s slot (nullptr if
// that lane does not exist).
uint64_t *lane_slot(unsigned lane);
unsigned linear_thread();
// Every lane of the calling thread's warp gives `bytes` (at most 64) from `mine`;
// `all` receives them in lane order (zeros for lanes the warp does not have).
void warp_exchange(const void *mine, void *all, std::size_t bytes);
}  // namespace emu

#define threadIdx (emu::place.thread)
#define blockIdx (emu::place.block)
#define blockDim (emu::place.block_dim)
#define gridDim (emu::place.grid_dim)

inline void __syncthreads() { emu::barrier(-1); }

template <typename T> inline T __shfl_xor_sync(unsigned, T v, int lane_mask, int width = 32) {
  static_assert(sizeof(T) <= sizeof(uint64_t), "shuffled values are at most 8 bytes");
  const unsigned me = emu::linear_thread(), lane = me % 32;
  std::memcpy(emu::lane_slot(lane), &v, sizeof(T));
  emu::barrier(int(me / 32));
  const unsigned src = lane ^ unsigned(lane_mask);
  T out = v;
  const uint64_t *s = emu::lane_slot(src);
  if (s != nullptr && src / unsigned(width) == lane / unsigned(width)) std::memcpy(&out, s, sizeof(T));
  emu::barrier(int(me / 32));
  return out;
}

// The lanes of the warp holding the same value as this one (every lane of the warp
// takes part).
inline unsigned __match_any_sync(unsigned, unsigned v) {
  unsigned all[32];
  emu::warp_exchange(&v, all, sizeof v);
  const unsigned warp_first = emu::linear_thread() / 32 * 32;
  const unsigned threads = blockDim.x * blockDim.y * blockDim.z;
  unsigned mask = 0;
  for (unsigned l = 0; l < 32; ++l)
    if (warp_first + l < threads && all[l] == v) mask |= 1u << l;
  return mask;
}
inline int __popc(unsigned v) { return __builtin_popcount(v); }
inline int __ffs(int v) { return __builtin_ffs(v); }

template <typename T> inline T __ldcs(const T *p) { return *p; }
template <typename T> inline T __ldg(const T *p) { return *p; }
template <typename T> inline void __stcs(T *p, T v) { *p = v; }

inline float __uint_as_float(unsigned v) {
  float f;
  std::memcpy(&f, &v, 4);
  return f;
}
inline unsigned __float_as_uint(float f) {
  unsigned v;
  std::memcpy(&v, &f, 4);
  return v;
}
inline float __int_as_float(int v) {
  float f;
  std::memcpy(&f, &v, 4);
  return f;
}
inline float __expf(float x) { return expf(x); }

// Fibers switch only at barriers, so a plain read-modify-write is atomic here.
inline unsigned atomicAdd(unsigned *p, unsigned v) {
  const unsigned old = *p;
  *p = old + v;
  return old;
}
inline int min(int a, int b) { return a < b ? a : b; }
inline float rsqrtf(float x) { return 1.f / sqrtf(x); }

// Half precision: IEEE binary16 through the compiler's _Float16 (rounds to nearest even,
// as __float2half), bfloat16 rounded to nearest even as __float2bfloat16.
struct __half {
  uint16_t bits;
};
struct __half2 {
  __half x, y;
};
struct __nv_bfloat16 {
  uint16_t bits;
};
struct __nv_bfloat162 {
  __nv_bfloat16 x, y;
};

inline float __half2float(__half h) {
  _Float16 f;
  std::memcpy(&f, &h.bits, 2);
  return float(f);
}
inline __half __float2half(float x) {
  const _Float16 f = _Float16(x);
  __half h;
  std::memcpy(&h.bits, &f, 2);
  return h;
}
inline float2 __half22float2(__half2 h) { return {__half2float(h.x), __half2float(h.y)}; }
inline __half2 __floats2half2_rn(float a, float b) { return {__float2half(a), __float2half(b)}; }

inline float __bfloat162float(__nv_bfloat16 b) { return __uint_as_float(unsigned(b.bits) << 16); }
inline __nv_bfloat16 __float2bfloat16(float x) {
  const unsigned u = __float_as_uint(x);
  if ((u & 0x7fffffffu) > 0x7f800000u) return {uint16_t((u >> 16) | 0x40)};
  return {uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16)};
}
inline __nv_bfloat162 __floats2bfloat162_rn(float a, float b) {
  return {__float2bfloat16(a), __float2bfloat16(b)};
}

namespace emu {
inline float half_bits(uint16_t b, __nv_bfloat16) { return __bfloat162float({b}); }
inline float half_bits(uint16_t b, __half) { return __half2float({b}); }

// mma.sync.aligned.m16n8k16.row.col.f32.{bf16,f16}: D = A B + C over the warp, each
// lane holding the fragments PTX documents (groupID = lane / 4, t = lane % 4):
// a0 A[g][2t..2t+1], a1 A[g+8][2t..], a2 A[g][2t+8..], a3 A[g+8][2t+8..];
// b0 B[2t..2t+1][g], b1 B[2t+8..2t+9][g]; c0, c1 C[g][2t..2t+1], c2, c3 C[g+8][2t..].
// Products summed in f32 in k order (the hardware's order is not specified).
template <typename T> void mma_16816(float c[4], const uint32_t a[4], const uint32_t b[2]) {
  struct Frag {
    uint32_t a[4], b[2];
  } mine{{a[0], a[1], a[2], a[3]}, {b[0], b[1]}}, all[32];
  warp_exchange(&mine, all, sizeof(Frag));
  float A[16][16], B[16][8];
  for (int lane = 0; lane < 32; ++lane) {
    const int g = lane / 4, t = lane % 4;
    const Frag &f = all[lane];
    const int rows[4] = {g, g + 8, g, g + 8}, cols[4] = {2 * t, 2 * t, 2 * t + 8, 2 * t + 8};
    for (int r = 0; r < 4; ++r)
      for (int h = 0; h < 2; ++h)
        A[rows[r]][cols[r] + h] = half_bits(uint16_t(f.a[r] >> (16 * h)), T());
    for (int r = 0; r < 2; ++r)
      for (int h = 0; h < 2; ++h)
        B[2 * t + 8 * r + h][g] = half_bits(uint16_t(f.b[r] >> (16 * h)), T());
  }
  const unsigned lane = linear_thread() % 32;
  const int g = int(lane / 4), t = int(lane % 4);
  for (int i = 0; i < 4; ++i) {
    const int row = g + 8 * (i / 2), col = 2 * t + (i % 2);
    float sum = c[i];
    for (int k = 0; k < 16; ++k) sum += A[row][k] * B[k][col];
    c[i] = sum;
  }
}
}  // namespace emu
