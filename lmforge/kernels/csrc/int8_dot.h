// Dynamic int8 activations and int8 x int8 dot products (AVX512-VNNI `vpdpbusd`: 64 multiply-adds of unsigned by
// signed bytes per instruction), as llama.cpp's Q8_0 / Q4_1 dot products: linear_int8.cpp and linear_int4.cpp run
// them for every row count where this build has AVX512-VNNI (LMFORGE_INT8_ACTIVATIONS=0: weight-only, the bf16 x
// dequantized-code path).
//
// An input row is quantized once per call in blocks of kXBlock = 32 channels: scale = max|x| / 127, codes
// round-to-nearest-even(x * (127 / max|x|)) in [-127, 127] (an all-zero block: scale 0, codes 0), and each block's
// integer sum of codes (for int8's weight offset and int4's zero term). A block's dot product with a weight's codes is
// an exact int32; the kernels sum scale(x block) * dot in float32 per output and group. The reference of the same
// math in PyTorch is tests/unit/kernels/int8_reference.py.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "quant_linear.h"

#if defined(LMFORGE_QUANT_AVX512) && defined(__AVX512VNNI__)
#define LMFORGE_QUANT_VNNI 1
#include <immintrin.h>
#endif

namespace lmforge {

constexpr int64_t kXBlock = 32;

inline bool vnni_compiled() {
#if defined(LMFORGE_QUANT_VNNI)
  return true;
#else
  return false;
#endif
}

// M rows quantized: codes [M][stride] (stride = blocks * 32, past K zero), scales and code sums [M][blocks].
struct Int8Rows {
  const int8_t* q;
  const float* scale;
  const int32_t* sum;
  int64_t stride, blocks;
};

#if defined(LMFORGE_QUANT_VNNI)
inline __m512 bf16_to_f32(__m256i h) { return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)); }

// nibble_order: each 8 channels k..k+7 stored as k, k+4, k+1, k+5, k+2, k+6, k+3, k+7, the order of the int4
// kernel's nibbles in a 32-bit lane once masked (low nibbles) and shifted (high): see linear_int4.cpp.
// The buffers are the calling thread's (reused across calls); the kernel's worker threads only read them.
inline Int8Rows quantize_rows(const at::BFloat16* x, int64_t M, int64_t K, bool nibble_order) {
  thread_local std::vector<int8_t> codes;
  thread_local std::vector<float> scales;
  thread_local std::vector<int32_t> sums;
  const int64_t blocks = (K + kXBlock - 1) / kXBlock, stride = blocks * kXBlock;
  codes.resize(M * stride);
  scales.resize(M * blocks);
  sums.resize(M * blocks);
  const __m128i order = _mm_setr_epi8(0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t valid = std::min<int64_t>(kXBlock, K - b * kXBlock);
      const __mmask32 mask = valid == kXBlock ? ~__mmask32(0) : (__mmask32(1) << valid) - 1;
      const __m512i raw = _mm512_maskz_loadu_epi16(mask, x + m * K + b * kXBlock);
      const __m512 lo = bf16_to_f32(_mm512_castsi512_si256(raw)), hi = bf16_to_f32(_mm512_extracti64x4_epi64(raw, 1));
      const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(lo), _mm512_abs_ps(hi)));
      const __m512 id = _mm512_set1_ps(amax > 0.f ? 127.f / amax : 0.f);
      const __m512i qlo = _mm512_cvtps_epi32(_mm512_mul_ps(lo, id)), qhi = _mm512_cvtps_epi32(_mm512_mul_ps(hi, id));
      __m128i b0 = _mm512_cvtepi32_epi8(qlo), b1 = _mm512_cvtepi32_epi8(qhi);
      if (nibble_order) {
        b0 = _mm_shuffle_epi8(b0, order);
        b1 = _mm_shuffle_epi8(b1, order);
      }
      int8_t* dst = codes.data() + m * stride + b * kXBlock;
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), b0);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 16), b1);
      scales[m * blocks + b] = amax / 127.f;
      sums[m * blocks + b] = _mm512_reduce_add_epi32(_mm512_add_epi32(qlo, qhi));
    }
  return {codes.data(), scales.data(), sums.data(), stride, blocks};
}

inline int32_t load4(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

// int8 weights: 32 outputs of R rows from one block of codes stored as unsigned bytes q + 128, [blocks * 8][32][4]
// (4 consecutive input channels per output in each 32-bit lane). dot(q + 128, xq) - 128 sum(xq) = dot(q, xq), exact;
// the accumulators start at -128 sum(xq). sums[m][j] = sum_b scale_b dot_bj (times the weight scale by the caller).
// Independent chains of dot products per output and row: one chain of 8 vpdpbusd per block (~5 cycles each) would
// bound a pass of one or two rows. No software prefetch: the codes stream in order, and the hardware's prefetcher
// alone streamed them faster (Zen 5, one thread, a 196608 x 576 layer: int8 25.6-35.9 GB/s without, 27.4-30.2 with
// prefetches 1 KB ahead; int4 23.3-35.4 against 21.2-22.7 with 512 B or 1 KB).
constexpr int kDotChains(int R) { return R <= 2 ? 2 : 1; }

template <int R>
inline void int8_block_vnni(const Int8Rows& x, int64_t m0, const uint8_t* w, float (*sums)[32]) {
  constexpr int S = kDotChains(R);
  __m512 acc[R][2];
  for (int m = 0; m < R; ++m) acc[m][0] = acc[m][1] = _mm512_setzero_ps();
  for (int64_t b = 0; b < x.blocks; ++b) {
    __m512i dot[R][S][2];
    for (int m = 0; m < R; ++m) {
      dot[m][0][0] = dot[m][0][1] = _mm512_set1_epi32(-128 * x.sum[(m0 + m) * x.blocks + b]);
      for (int c = 1; c < S; ++c) dot[m][c][0] = dot[m][c][1] = _mm512_setzero_si512();
    }
    const uint8_t* wb = w + b * kXBlock * 32;
#pragma GCC unroll 8
    for (int t = 0; t < 8; ++t) {
      const __m512i w0 = _mm512_loadu_si512(wb + t * 128), w1 = _mm512_loadu_si512(wb + t * 128 + 64);
#pragma GCC unroll 8
      for (int m = 0; m < R; ++m) {
        const __m512i xb = _mm512_set1_epi32(load4(x.q + (m0 + m) * x.stride + b * kXBlock + 4 * t));
        dot[m][t % S][0] = _mm512_dpbusd_epi32(dot[m][t % S][0], w0, xb);
        dot[m][t % S][1] = _mm512_dpbusd_epi32(dot[m][t % S][1], w1, xb);
      }
    }
    for (int m = 0; m < R; ++m) {
      const __m512 s = _mm512_set1_ps(x.scale[(m0 + m) * x.blocks + b]);
      for (int h = 0; h < 2; ++h) {
        __m512i d = dot[m][0][h];
        for (int c = 1; c < S; ++c) d = _mm512_add_epi32(d, dot[m][c][h]);
        acc[m][h] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), s, acc[m][h]);
      }
    }
  }
  for (int m = 0; m < R; ++m) {
    _mm512_storeu_ps(sums[m], acc[m][0]);
    _mm512_storeu_ps(sums[m] + 16, acc[m][1]);
  }
}

// One row, O blocks of 32 outputs at once (a decode step's call, lmforge::for_block_quads): each block's sums are
// int8_block_vnni<1>'s, bit for bit (exact int32 dot products, the same float32 operations in the same order), the
// codes read from O places in memory and each of x's codes loaded once for all O; O blocks are O independent chains.
template <int O>
inline void int8_blocks_vnni(const Int8Rows& x, int64_t m0, const uint8_t* const (&w)[O], float (&sums)[O][32]) {
  __m512 acc[O][2];
  for (int o = 0; o < O; ++o) acc[o][0] = acc[o][1] = _mm512_setzero_ps();
  const int8_t* row = x.q + m0 * x.stride;
  for (int64_t b = 0; b < x.blocks; ++b) {
    __m512i dot[O][2];
    const __m512i offset = _mm512_set1_epi32(-128 * x.sum[m0 * x.blocks + b]);
    for (int o = 0; o < O; ++o) dot[o][0] = dot[o][1] = offset;
#pragma GCC unroll 8
    for (int t = 0; t < 8; ++t) {
      const __m512i xb = _mm512_set1_epi32(load4(row + b * kXBlock + 4 * t));
#pragma GCC unroll 4
      for (int o = 0; o < O; ++o) {
        const uint8_t* wb = w[o] + b * kXBlock * 32 + t * 128;
        dot[o][0] = _mm512_dpbusd_epi32(dot[o][0], _mm512_loadu_si512(wb), xb);
        dot[o][1] = _mm512_dpbusd_epi32(dot[o][1], _mm512_loadu_si512(wb + 64), xb);
      }
    }
    const __m512 s = _mm512_set1_ps(x.scale[m0 * x.blocks + b]);
    for (int o = 0; o < O; ++o)
      for (int h = 0; h < 2; ++h) acc[o][h] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot[o][h]), s, acc[o][h]);
  }
  for (int o = 0; o < O; ++o) {
    _mm512_storeu_ps(sums[o], acc[o][0]);
    _mm512_storeu_ps(sums[o] + 16, acc[o][1]);
  }
}

// int4 weights (linear_int4.cpp's lanes: 8 nibbles of one output per 32-bit lane, [K/8][32]) and (s, z) pairs
// [groups][32]; G a multiple of 32. out[m][j] = sum over groups g of s (sum_b scale_b dot_bj) + (z - 8 s) xsum[m][g],
// with xsum the group's sum_b scale_b sum(xq_b) (the quantized input's sum, as llama.cpp's Q8_1 block sum).
template <int R>
inline void int4_block_vnni(const Int8Rows& x, int64_t m0, const float* xsum, int64_t groups, int64_t G,
                            const uint32_t* w, const uint32_t* sz, float (*out)[32]) {
  const __m512i low = _mm512_set1_epi8(0x0F);
  constexpr int S = kDotChains(R);  // chain 0: the low nibbles' products, S - 1: the high nibbles'
  const int64_t per_group = G / kXBlock;
  __m512 total[R][2];
  for (int m = 0; m < R; ++m) total[m][0] = total[m][1] = _mm512_setzero_ps();
  for (int64_t g = 0; g < groups; ++g) {
    __m512 acc[R][2];
    for (int m = 0; m < R; ++m) acc[m][0] = acc[m][1] = _mm512_setzero_ps();
    for (int64_t b = g * per_group; b < (g + 1) * per_group; ++b) {
      __m512i dot[R][S][2];
      for (int m = 0; m < R; ++m)
        for (int c = 0; c < S; ++c) dot[m][c][0] = dot[m][c][1] = _mm512_setzero_si512();
#pragma GCC unroll 4
      for (int t = 0; t < 4; ++t) {
        const uint32_t* lanes = w + (b * 4 + t) * 32;
        const __m512i v0 = _mm512_loadu_si512(lanes), v1 = _mm512_loadu_si512(lanes + 16);
        const __m512i lo0 = _mm512_and_si512(v0, low), hi0 = _mm512_and_si512(_mm512_srli_epi32(v0, 4), low);
        const __m512i lo1 = _mm512_and_si512(v1, low), hi1 = _mm512_and_si512(_mm512_srli_epi32(v1, 4), low);
#pragma GCC unroll 8
        for (int m = 0; m < R; ++m) {
          const int8_t* xq = x.q + (m0 + m) * x.stride + b * kXBlock + 8 * t;
          const __m512i xa = _mm512_set1_epi32(load4(xq)), xb = _mm512_set1_epi32(load4(xq + 4));
          dot[m][0][0] = _mm512_dpbusd_epi32(dot[m][0][0], lo0, xa);
          dot[m][0][1] = _mm512_dpbusd_epi32(dot[m][0][1], lo1, xa);
          dot[m][S - 1][0] = _mm512_dpbusd_epi32(dot[m][S - 1][0], hi0, xb);
          dot[m][S - 1][1] = _mm512_dpbusd_epi32(dot[m][S - 1][1], hi1, xb);
        }
      }
      for (int m = 0; m < R; ++m) {
        const __m512 s = _mm512_set1_ps(x.scale[(m0 + m) * x.blocks + b]);
        for (int h = 0; h < 2; ++h) {
          const __m512i d = S > 1 ? _mm512_add_epi32(dot[m][0][h], dot[m][S - 1][h]) : dot[m][0][h];
          acc[m][h] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), s, acc[m][h]);
        }
      }
    }
    for (int h = 0; h < 2; ++h) {
      const __m512i pairs = _mm512_loadu_si512(sz + g * 32 + 16 * h);
      const __m512 s = _mm512_castsi512_ps(_mm512_slli_epi32(pairs, 16));
      const __m512 z = _mm512_castsi512_ps(_mm512_and_si512(pairs, _mm512_set1_epi32(int32_t(0xFFFF0000))));
      const __m512 c = _mm512_fmadd_ps(s, _mm512_set1_ps(-8.f), z);  // z - 8 s (rounded once)
      for (int m = 0; m < R; ++m) {
        total[m][h] = _mm512_fmadd_ps(s, acc[m][h], total[m][h]);
        total[m][h] = _mm512_fmadd_ps(c, _mm512_set1_ps(xsum[m * groups + g]), total[m][h]);
      }
    }
  }
  for (int m = 0; m < R; ++m) {
    _mm512_storeu_ps(out[m], total[m][0]);
    _mm512_storeu_ps(out[m] + 16, total[m][1]);
  }
}

// One row, O blocks of 32 outputs at once (a decode step's call: O = 4, and 2 or 1 for a thread's last blocks): each
// block's sums are int4_block_vnni<1>'s, bit for bit (the same float32 operations in the same order on the same exact
// int32 dot products), but the codes stream from O places in memory, which one core reads faster than one stream, and
// each of x's codes is loaded once for all O. The high nibbles are masked in place (16 q, no shift): their int32 sums
// are 16 times the products', divided back exactly by a shift per block. Zen 5, one thread, SmolLM2's int4 projections
// from a cold cache (loaded machine, alternating runs): blocks one by one 34 GB/s in an idle minute; two at a time with
// shifts 1.95-2.12 ms, four without 1.77-1.92 ms, against 1.54-1.65 ms for reading the same bytes in two streams.
// OneBlock: G == 32 (llama.cpp's Q4_1 groups), one block per group: its float32 sum needs no register across blocks
// (with O = 4 the general loop's 8 sums, 8 totals and 16 dot products spilled to the stack every block).
template <int O, bool OneBlock = false>
inline void int4_blocks_vnni(const Int8Rows& x, int64_t m0, const float* xsum, int64_t groups, int64_t G,
                             const uint32_t* const (&w)[O], const uint32_t* const (&sz)[O], float (&out)[O][32]) {
  const __m512i low = _mm512_set1_epi8(0x0F), high = _mm512_set1_epi8(int8_t(0xF0));
  const int64_t per_group = OneBlock ? 1 : G / kXBlock;
  const int8_t* row = x.q + m0 * x.stride;
  const float* scale = x.scale + m0 * x.blocks;
  __m512 total[O][2];
  for (int o = 0; o < O; ++o) total[o][0] = total[o][1] = _mm512_setzero_ps();
  for (int64_t g = 0; g < groups; ++g) {
    __m512 acc[O][2];
    for (int o = 0; o < O; ++o) acc[o][0] = acc[o][1] = _mm512_setzero_ps();
    for (int64_t b = g * per_group; b < (g + 1) * per_group; ++b) {
      __m512i dot[O][2][2];  // [block][low nibbles, 16 x high][half]
      for (int o = 0; o < O; ++o)
        for (int c = 0; c < 2; ++c) dot[o][c][0] = dot[o][c][1] = _mm512_setzero_si512();
#pragma GCC unroll 4
      for (int t = 0; t < 4; ++t) {
        const __m512i xa = _mm512_set1_epi32(load4(row + b * kXBlock + 8 * t));
        const __m512i xb = _mm512_set1_epi32(load4(row + b * kXBlock + 8 * t + 4));
#pragma GCC unroll 4
        for (int o = 0; o < O; ++o) {
          const uint32_t* lanes = w[o] + (b * 4 + t) * 32;
          const __m512i v0 = _mm512_loadu_si512(lanes), v1 = _mm512_loadu_si512(lanes + 16);
          dot[o][0][0] = _mm512_dpbusd_epi32(dot[o][0][0], _mm512_and_si512(v0, low), xa);
          dot[o][0][1] = _mm512_dpbusd_epi32(dot[o][0][1], _mm512_and_si512(v1, low), xa);
          dot[o][1][0] = _mm512_dpbusd_epi32(dot[o][1][0], _mm512_and_si512(v0, high), xb);
          dot[o][1][1] = _mm512_dpbusd_epi32(dot[o][1][1], _mm512_and_si512(v1, high), xb);
        }
      }
      const __m512 s = _mm512_set1_ps(scale[b]);
#pragma GCC unroll 4
      for (int o = 0; o < O; ++o)
        for (int h = 0; h < 2; ++h) {
          const __m512i d = _mm512_add_epi32(dot[o][0][h], _mm512_srai_epi32(dot[o][1][h], 4));
          acc[o][h] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), s, acc[o][h]);
        }
    }
    const __m512 xs = _mm512_set1_ps(xsum[g]);
#pragma GCC unroll 4
    for (int o = 0; o < O; ++o)
      for (int h = 0; h < 2; ++h) {
        const __m512i pairs = _mm512_loadu_si512(sz[o] + g * 32 + 16 * h);
        const __m512 s = _mm512_castsi512_ps(_mm512_slli_epi32(pairs, 16));
        const __m512 z = _mm512_castsi512_ps(_mm512_and_si512(pairs, _mm512_set1_epi32(int32_t(0xFFFF0000))));
        const __m512 c = _mm512_fmadd_ps(s, _mm512_set1_ps(-8.f), z);
        total[o][h] = _mm512_fmadd_ps(s, acc[o][h], total[o][h]);
        total[o][h] = _mm512_fmadd_ps(c, xs, total[o][h]);
      }
  }
  for (int o = 0; o < O; ++o) {
    _mm512_storeu_ps(out[o], total[o][0]);
    _mm512_storeu_ps(out[o] + 16, total[o][1]);
  }
}
#endif

}  // namespace lmforge
