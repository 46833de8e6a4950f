// Which instruction set lmforge's quantized linears (linear_int8.cpp, linear_int4.cpp) run on, chosen at run time:
// the AVX-512 path (AVX512F/BW/VL and AVX512-BF16: the int4 kernel's dot product) where this build is at AVX-512
// width (torch's CPU capability: ATEN_CPU_CAPABILITY=avx2 builds at AVX2 width, as for the float kernels) and the
// compiler emitted those instructions, else the AVX2 + FMA path, else none (callers keep PyTorch's int8/int4 ops).
// `quant_linear_isa("avx2")` switches a process to the AVX2 path (tests check both on one machine). Also the
// epilogue both kernels share: float32 sums (times a per-output scale) plus the bias, rounded to the output type.
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <type_traits>

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512BF16__)
#define LMFORGE_QUANT_AVX512 1
#endif
#if defined(__AVX2__) && defined(__FMA__)
#define LMFORGE_QUANT_AVX2 1
#endif
#if defined(LMFORGE_QUANT_AVX512)
#include <immintrin.h>
#endif

namespace lmforge {

enum class QuantIsa { kNone, kAvx2, kAvx512 };

inline QuantIsa default_quant_isa() {
#if defined(LMFORGE_QUANT_AVX512) && defined(CPU_CAPABILITY_AVX512)
  return QuantIsa::kAvx512;
#elif defined(LMFORGE_QUANT_AVX2)
  return QuantIsa::kAvx2;
#else
  return QuantIsa::kNone;
#endif
}

inline QuantIsa& quant_isa() {  // one per process (an inline function's static is shared by the library's files)
  static QuantIsa isa = default_quant_isa();
  return isa;
}

inline const char* quant_isa_name(QuantIsa isa) {
  return isa == QuantIsa::kAvx512 ? "avx512" : isa == QuantIsa::kAvx2 ? "avx2" : "none";
}

// The quantized linears' ops (linear_int8.cpp, linear_int4.cpp), also called directly by decode_stack.cpp.
at::Tensor linear_int8(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& scales,
                       const c10::optional<at::Tensor>& bias, int64_t out_features, bool float_out);
at::Tensor linear_int4(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& scales_and_zeros,
                       const c10::optional<at::Tensor>& bias, int64_t out_features, bool float_out, bool int8_x);
// linear_int4's checks of its packed weight and scales (pack_linear_int4, pack_int4_scales) for out_features outputs.
void check_int4_pack(const at::Tensor& packed, const at::Tensor& scales_and_zeros, int64_t out_features);
// The decode stack's calls, on raw pointers into tensors it checked once (no tensor made per call): y [out_features]
// (bf16) for one bf16 row x, as the ops compute it; bias float32 or null. linear_int4_row: pack_linear_int4's codes
// ([blocks, K/8, 32]) and pack_int4_scales' pairs ([blocks, groups, 32, 2]), int8 activations. linear_int8_row:
// pack_linear_int8_vnni's codes ([blocks, padded_K/4, 32, 4]) and float32 scales. Each returns false, writing nothing,
// where its op would not run that path (int8_x false, not the AVX-512 path, an int4 group size not a multiple of 32, a
// build without AVX512-VNNI): the caller runs the op.
bool linear_int4_row(const at::BFloat16* x, const int32_t* codes, const at::BFloat16* scales_and_zeros, int64_t blocks,
                     int64_t K, int64_t groups, const float* bias, int64_t out_features, bool int8_x, at::BFloat16* y);
bool linear_int8_row(const at::BFloat16* x, int64_t K, const uint8_t* codes, int64_t blocks, int64_t padded_K,
                     const float* scales, const float* bias, int64_t out_features, at::BFloat16* y);

// y[j] = v[j] (* scale[j]) (+ bias[j]) for the `valid` real outputs of a block, rounded to Y (bf16: to nearest even).
// AVX-512 builds: 16 outputs per instruction, the same numbers (c10::BFloat16's rounding: nearest even, NaN 0x7FC0)
// as the scalar loop, whose ~10 instructions per output were 4x the int4 kernel's own per block of a decode step.
template <typename Y>
inline void write_row(const float* v, const float* scale, const float* bias, Y* y, int64_t valid) {
#if defined(LMFORGE_QUANT_AVX512)
  for (int64_t j = 0; j < valid; j += 16) {
    const __mmask16 mask = valid - j >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (valid - j)) - 1);
    const __m512 sums = _mm512_maskz_loadu_ps(mask, v + j);
    const __m512 b = bias ? _mm512_maskz_loadu_ps(mask, bias + j) : _mm512_setzero_ps();
    // v * scale + bias fused, as the compiler contracts the scalar loop's
    const __m512 out =
        scale ? _mm512_fmadd_ps(sums, _mm512_maskz_loadu_ps(mask, scale + j), b) : _mm512_add_ps(sums, b);
    if constexpr (std::is_same_v<Y, float>) {
      _mm512_mask_storeu_ps(y + j, mask, out);
    } else {
      static_assert(std::is_same_v<Y, at::BFloat16>, "write_row: float32 or bf16 outputs");
      const __m512i u = _mm512_castps_si512(out);  // + 0x7FFF + the lowest kept bit, then the high half
      const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
      __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7FFF))), 16);
      r = _mm512_mask_mov_epi32(r, _mm512_cmp_ps_mask(out, out, _CMP_UNORD_Q), _mm512_set1_epi32(0x7FC0));
      _mm256_mask_storeu_epi16(y + j, mask, _mm512_cvtepi32_epi16(r));
    }
  }
#else
  for (int64_t j = 0; j < valid; ++j) {
    const float out = (scale ? v[j] * scale[j] : v[j]) + (bias ? bias[j] : 0.f);
    y[j] = static_cast<Y>(out);
  }
#endif
}

}  // namespace lmforge
