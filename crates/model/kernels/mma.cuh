// One warp-wide tensor-core product, mma.sync m16n8k16 with f32 accumulation:
// C (16x8) += A (16x16, row-major) * B (16x8, column-major), the fragments as PTX
// lays them out (g = lane / 4, t = lane % 4):
//   a[0] A[g][2t, 2t+1]   a[1] A[g+8][2t, 2t+1]   a[2] A[g][2t+8, 2t+9]   a[3] A[g+8][2t+8, 2t+9]
//   b[0] B[2t, 2t+1][g]   b[1] B[2t+8, 2t+9][g]
//   c[0], c[1] C[g][2t, 2t+1]   c[2], c[3] C[g+8][2t, 2t+1]
// (two 16-bit values a register, the lower-numbered in the low half). Needs sm_80:
// built for an older GPU it leaves C as it is (no trap, which would poison the
// CUDA context), so a kernel built on it fails its self-test and is not used; the
// Rust side does not even launch it there (`vision_attention::serves`). Under the
// CPU emulator (crates/kernel-emu) emu.h computes it.
#pragma once
#include <stdint.h>

#include "convert.cuh"

#ifdef MEDGEMMA_EMU
template <typename T>
__device__ __forceinline__ void mma_16816(float c[4], const uint32_t a[4], const uint32_t b[2]) {
  emu::mma_16816<T>(c, a, b);
}
#else
template <typename T>
__device__ __forceinline__ void mma_16816(float c[4], const uint32_t a[4], const uint32_t b[2]);

// The PTX of one input type's product (needs sm_80; nothing before).
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#define MMA_16816_BODY(PTX_TYPE)                                                              \
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32." PTX_TYPE "." PTX_TYPE                  \
               ".f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"                   \
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])                                 \
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]))
#else
#define MMA_16816_BODY(PTX_TYPE) ((void)c, (void)a, (void)b)
#endif

template <>
__device__ __forceinline__ void mma_16816<__nv_bfloat16>(float c[4], const uint32_t a[4],
                                                         const uint32_t b[2]) {
  MMA_16816_BODY("bf16");
}

template <>
__device__ __forceinline__ void mma_16816<__half>(float c[4], const uint32_t a[4],
                                                  const uint32_t b[2]) {
  MMA_16816_BODY("f16");
}
#endif
