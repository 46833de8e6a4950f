// Which instruction set lmforge's quantized linears (linear_int8.cpp, linear_int4.cpp) run on, chosen at run time:
// the AVX-512 path (AVX512F/BW/VL and AVX512-BF16: the int4 kernel's dot product) where this build is at AVX-512
// width (torch's CPU capability: ATEN_CPU_CAPABILITY=avx2 builds at AVX2 width, as for the float kernels) and the
// compiler emitted those instructions, else the AVX2 + FMA path, else none (callers keep PyTorch's int8/int4 ops).
// `quant_linear_isa("avx2")` switches a process to the AVX2 path (tests check both on one machine). Also the
// epilogue both kernels share: float32 sums (times a per-output scale) plus the bias, rounded to the output type.
#pragma once

#include <ATen/ATen.h>

#include <string>

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512BF16__)
#define LMFORGE_QUANT_AVX512 1
#endif
#if defined(__AVX2__) && defined(__FMA__)
#define LMFORGE_QUANT_AVX2 1
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

// y[j] = v[j] (* scale[j]) (+ bias[j]) for the `valid` real outputs of a block, rounded to Y (bf16: to nearest even).
template <typename Y>
inline void write_row(const float* v, const float* scale, const float* bias, Y* y, int64_t valid) {
  for (int64_t j = 0; j < valid; ++j) {
    const float out = (scale ? v[j] * scale[j] : v[j]) + (bias ? bias[j] : 0.f);
    y[j] = static_cast<Y>(out);
  }
}

}  // namespace lmforge
