// y = x (q * s)^T (+ b) for int8 weights with one scale per output channel (lmforge.quant Int8Linear), bf16 inputs,
// the codes dequantized in registers: the weight streams from memory at one byte per weight, never widened in memory.
//
// The codes are packed once into blocks of 32 outputs, [N/32][K][32] int8, so that an input channel's 32 codes are
// 32 consecutive bytes. A task computes one block for up to kRows rows at a time: each input channel's codes are
// sign-extended and converted to float32 in two (AVX-512) or four (AVX2) vectors, multiplied-added with the row's
// input broadcast to all lanes, and the float32 sums are scaled once per output at the end (w = q s: sum(q x) s),
// plus the bias, rounded to bf16 (or written as float32: an LM head's logits). The inputs are bf16, exact in float32,
// so the result differs from PyTorch's _weight_int8pack_mm by the order of float32 sums only (tests/unit/kernels/
// test_linear_int8.py). The instruction set is chosen at run time (quant_linear.h); packing is the same for both.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "int8_dot.h"
#include "linear_tasks.h"
#include "quant_linear.h"

#if defined(LMFORGE_QUANT_AVX2) || defined(LMFORGE_QUANT_AVX512)
#include <immintrin.h>
#endif

namespace {

using lmforge::QuantIsa;

constexpr int64_t kOut = 32;  // outputs per block
constexpr int64_t kRows512 = 12;  // rows per pass: 2 x 12 accumulators
constexpr int64_t kRows256 = 2;  // AVX2: 4 x 2 accumulators in 16 registers
constexpr int64_t kAhead = 16;  // input channels of codes prefetched ahead (512 bytes)
constexpr int64_t kRowsVnni = 6;  // int8 x int8 path: 2 x 6 int32 and 2 x 6 float32 accumulators

// The int8 x int8 layout (int8_dot.h): uint8 [N/32][K/32 * 8][32][4], q + 128 of 4 consecutive input channels of one
// output per 32-bit lane; channels past K (up to a multiple of 32) and outputs past N hold q = 0.
at::Tensor pack_linear_int8_vnni(const at::Tensor& weight) {
  TORCH_CHECK(weight.dim() == 2 && weight.scalar_type() == at::kChar, "pack_linear_int8_vnni: an int8 [N, K] weight");
  const int64_t N = weight.size(0), K = weight.size(1), NB = (N + kOut - 1) / kOut;
  const int64_t K4 = (K + lmforge::kXBlock - 1) / lmforge::kXBlock * lmforge::kXBlock / 4;
  at::Tensor packed = at::full({NB, K4, kOut, 4}, 128, weight.options().dtype(at::kByte));
  const at::Tensor w = weight.contiguous();
  const int8_t* src = w.data_ptr<int8_t>();
  uint8_t* dst = packed.data_ptr<uint8_t>();
  at::parallel_for(0, NB, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t nb = b0; nb < b1; ++nb)
      for (int64_t j = 0; j < kOut && nb * kOut + j < N; ++j)
        for (int64_t k = 0; k < K; ++k)
          dst[((nb * K4 + k / 4) * kOut + j) * 4 + k % 4] = uint8_t(src[(nb * kOut + j) * K + k] + 128);
  });
  return packed;
}

at::Tensor pack_linear_int8(const at::Tensor& weight) {
  TORCH_CHECK(weight.dim() == 2 && weight.scalar_type() == at::kChar, "pack_linear_int8: an int8 [N, K] weight");
  const int64_t N = weight.size(0), K = weight.size(1), NB = (N + kOut - 1) / kOut;
  at::Tensor packed = at::zeros({NB, K, kOut}, weight.options());  // outputs past N stay zero
  const at::Tensor w = weight.contiguous();
  const int8_t* src = w.data_ptr<int8_t>();
  int8_t* dst = packed.data_ptr<int8_t>();
  at::parallel_for(0, NB, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t nb = b0; nb < b1; ++nb)
      for (int64_t j = 0; j < kOut && nb * kOut + j < N; ++j)
        for (int64_t k = 0; k < K; ++k) dst[(nb * K + k) * kOut + j] = src[(nb * kOut + j) * K + k];
  });
  return packed;
}

// Independent sums per output and row: with few rows, the chains of multiply-adds (4 cycles each) would bound a
// pass, so consecutive input channels go to kChains(R) separate accumulators, added at the end.
constexpr int kChains(int R) { return R == 1 ? 4 : R == 2 ? 2 : 1; }

#if defined(LMFORGE_QUANT_AVX512)
template <int R, int S>
inline void step_avx512(__m512 (&acc)[R][S][2], const float* x, int64_t K, const int8_t* w, int64_t k, int s) {
  const __m128i* codes = reinterpret_cast<const __m128i*>(w + k * kOut);
  const __m512 w0 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(codes)));
  const __m512 w1 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(codes + 1)));
#pragma GCC unroll 16
  for (int m = 0; m < R; ++m) {
    const __m512 xb = _mm512_set1_ps(x[m * K + k]);
    acc[m][s][0] = _mm512_fmadd_ps(w0, xb, acc[m][s][0]);
    acc[m][s][1] = _mm512_fmadd_ps(w1, xb, acc[m][s][1]);
  }
}

// 32 outputs of R rows of x (float32, row stride K) from one block of codes w; `valid` of them real.
template <int R, typename Y>
void rows_avx512(const float* x, int64_t K, const int8_t* w, const float* scale, const float* bias, Y* y,
                 int64_t y_stride, int64_t valid) {
  constexpr int S = kChains(R);
  __m512 acc[R][S][2];
  for (int m = 0; m < R; ++m)
    for (int s = 0; s < S; ++s) acc[m][s][0] = acc[m][s][1] = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + S <= K; k += S) {
    _mm_prefetch(reinterpret_cast<const char*>(w + (k + kAhead) * kOut), _MM_HINT_T0);
    if constexpr (S > 2) _mm_prefetch(reinterpret_cast<const char*>(w + (k + kAhead + 2) * kOut), _MM_HINT_T0);
#pragma GCC unroll 4
    for (int s = 0; s < S; ++s) step_avx512<R, S>(acc, x, K, w, k + s, s);
  }
  for (; k < K; ++k) step_avx512<R, S>(acc, x, K, w, k, 0);
  alignas(64) float sums[kOut];
  for (int m = 0; m < R; ++m) {
    for (int s = 1; s < S; ++s) {
      acc[m][0][0] = _mm512_add_ps(acc[m][0][0], acc[m][s][0]);
      acc[m][0][1] = _mm512_add_ps(acc[m][0][1], acc[m][s][1]);
    }
    _mm512_store_ps(sums, acc[m][0][0]);
    _mm512_store_ps(sums + 16, acc[m][0][1]);
    lmforge::write_row(sums, scale, bias, y + m * y_stride, valid);
  }
}
#endif

#if defined(LMFORGE_QUANT_AVX2)
template <int R, int S>
inline void step_avx2(__m256 (&acc)[R][S][4], const float* x, int64_t K, const int8_t* w, int64_t k, int s) {
  __m256 wv[4];
  for (int h = 0; h < 4; ++h)
    wv[h] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(
        reinterpret_cast<const __m128i*>(w + k * kOut + 8 * h))));
  for (int m = 0; m < R; ++m) {
    const __m256 xb = _mm256_set1_ps(x[m * K + k]);
    for (int h = 0; h < 4; ++h) acc[m][s][h] = _mm256_fmadd_ps(wv[h], xb, acc[m][s][h]);
  }
}

template <int R, typename Y>
void rows_avx2(const float* x, int64_t K, const int8_t* w, const float* scale, const float* bias, Y* y,
               int64_t y_stride, int64_t valid) {
  constexpr int S = R == 1 ? 2 : 1;  // 4 x R x S accumulators in 16 registers
  __m256 acc[R][S][4];
  for (int m = 0; m < R; ++m)
    for (int s = 0; s < S; ++s)
      for (int h = 0; h < 4; ++h) acc[m][s][h] = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + S <= K; k += S) {
    _mm_prefetch(reinterpret_cast<const char*>(w + (k + kAhead) * kOut), _MM_HINT_T0);
    for (int s = 0; s < S; ++s) step_avx2<R, S>(acc, x, K, w, k + s, s);
  }
  for (; k < K; ++k) step_avx2<R, S>(acc, x, K, w, k, 0);
  alignas(32) float sums[kOut];
  for (int m = 0; m < R; ++m) {
    for (int h = 0; h < 4; ++h) {
      for (int s = 1; s < S; ++s) acc[m][0][h] = _mm256_add_ps(acc[m][0][h], acc[m][s][h]);
      _mm256_store_ps(sums + 8 * h, acc[m][0][h]);
    }
    lmforge::write_row(sums, scale, bias, y + m * y_stride, valid);
  }
}
#endif

template <typename Y, int R>
void rows_dispatch(QuantIsa isa, int64_t rows, const float* x, int64_t K, const int8_t* w, const float* scale,
                   const float* bias, Y* y, int64_t y_stride, int64_t valid) {
  if constexpr (R > 1) {
    if (rows < R) return rows_dispatch<Y, R - 1>(isa, rows, x, K, w, scale, bias, y, y_stride, valid);
  }
#if defined(LMFORGE_QUANT_AVX512)
  if (isa == QuantIsa::kAvx512) return rows_avx512<R, Y>(x, K, w, scale, bias, y, y_stride, valid);
#endif
#if defined(LMFORGE_QUANT_AVX2)
  if constexpr (R <= kRows256) {
    if (isa == QuantIsa::kAvx2) return rows_avx2<R, Y>(x, K, w, scale, bias, y, y_stride, valid);
  }
#endif
}

#if defined(LMFORGE_QUANT_VNNI)
template <int R>
void rows_vnni(const lmforge::Int8Rows& xq, int64_t rows, int64_t m0, const uint8_t* w, float (*sums)[kOut]) {
  if constexpr (R > 1) {
    if (rows < R) return rows_vnni<R - 1>(xq, rows, m0, w, sums);
  }
  lmforge::int8_block_vnni<R>(xq, m0, w, sums);
}
#endif

#if defined(LMFORGE_QUANT_VNNI)
// One bf16 row x [K] by the int8 x int8 layout (NB blocks of Kb >= K inputs) into y [N]: a decode step's, four
// blocks at a time (for_block_quads). Called on raw pointers by the op and by decode_stack.cpp.
template <typename Y>
void vnni_row_into(const at::BFloat16* x, int64_t K, const uint8_t* wp, int64_t NB, int64_t Kb, const float* sp,
                   const float* bp, Y* y, int64_t N) {
  const lmforge::Int8Rows xq = lmforge::quantize_rows(x, 1, K, false);
  auto blocks = [&](auto... nb) {
    constexpr int O = sizeof...(nb);
    alignas(64) float sums[O][kOut];
    const uint8_t* const w[O] = {(wp + nb * Kb * kOut)...};
    lmforge::int8_blocks_vnni<O>(xq, 0, w, sums);
    const int64_t index[O] = {nb...};
    for (int o = 0; o < O; ++o)
      lmforge::write_row(sums[o], sp + index[o] * kOut, bp ? bp + index[o] * kOut : nullptr, y + index[o] * kOut,
                         std::min(kOut, N - index[o] * kOut));
  };
  lmforge::for_block_quads(NB, Kb * kOut, blocks);
}
#endif

// x [..., K] by the int8 x int8 layout: the rows quantized once (int8_dot.h), then per block of 32 outputs.
template <typename Y>
at::Tensor run_vnni(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& s, const at::Tensor& b,
                    int64_t K, int64_t N) {
#if defined(LMFORGE_QUANT_VNNI)
  const at::Tensor xc = x.contiguous();
  const at::BFloat16* x0 = xc.data_ptr<at::BFloat16>();
  const int64_t M = K == 0 ? 0 : xc.numel() / K, Kb = packed.size(1) * 4;
  const uint8_t* wp = packed.data_ptr<uint8_t>();
  const float* sp = s.data_ptr<float>();
  if (M == 1) {
    std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
    shape.back() = N;
    at::Tensor y = at::empty(shape, x.options().dtype(c10::CppTypeToScalarType<Y>::value));
    vnni_row_into<Y>(x0, K, wp, packed.size(0), Kb, sp, b.defined() ? b.data_ptr<float>() : nullptr, y.data_ptr<Y>(),
                     N);
    return y;
  }
  const lmforge::Int8Rows xq = lmforge::quantize_rows(x0, M, K, false);
  auto block = [&](int64_t rows, const at::BFloat16* xr, int64_t nb, const float* bb, Y* yb) {
    alignas(64) float sums[kRowsVnni][kOut];
    rows_vnni<kRowsVnni>(xq, rows, (xr - x0) / K, wp + nb * Kb * kOut, sums);
    for (int64_t m = 0; m < rows; ++m)
      lmforge::write_row(sums[m], sp + nb * kOut, bb, yb + m * N, std::min(kOut, N - nb * kOut));
  };
  return lmforge::linear_by_blocks<at::BFloat16, decltype(block), Y>(xc, K, packed.size(0), kOut, kRowsVnni, N,
                                                                      kOut, b, Kb * kOut, block);
#else
  TORCH_CHECK(false, "linear_int8: this build has no AVX512-VNNI path for the int8 x int8 layout");
#endif
}

template <typename Y>
at::Tensor run(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& scales,
               const c10::optional<at::Tensor>& bias, int64_t out_features) {
  const QuantIsa isa = lmforge::quant_isa();
  TORCH_CHECK(isa != QuantIsa::kNone, "linear_int8 needs an x86 CPU with AVX2 and FMA (this build has neither)");
  if (packed.dim() == 4) {  // pack_linear_int8_vnni's layout: int8 activations
    TORCH_CHECK(packed.size(2) == kOut && packed.size(3) == 4 && packed.is_contiguous() &&
                    packed.scalar_type() == at::kByte,
                "linear_int8: the weight must come from pack_linear_int8_vnni");
    TORCH_CHECK(isa == QuantIsa::kAvx512, "linear_int8: the int8 x int8 layout runs on the AVX-512 path only");
    const int64_t N = out_features, NB = packed.size(0);
    TORCH_CHECK(N > (NB - 1) * kOut && N <= NB * kOut, "linear_int8: out_features ", N, " does not match the weight");
    TORCH_CHECK(x.scalar_type() == at::kBFloat16 && x.dim() >= 1 &&
                    (x.size(-1) + lmforge::kXBlock - 1) / lmforge::kXBlock * lmforge::kXBlock == packed.size(1) * 4,
                "linear_int8: x must be bf16 [..., K] with K up to ", packed.size(1) * 4, ", got ", x.scalar_type(),
                " ", x.sizes());
    TORCH_CHECK(scales.dim() == 1 && scales.size(0) == N, "linear_int8: scales must be [", N, "]");
    at::Tensor b;
    if (bias.has_value() && bias->defined()) {
      TORCH_CHECK(bias->dim() == 1 && bias->size(0) == N, "linear_int8: bias must be [", N, "]");
      b = bias->to(at::kFloat).contiguous();
    }
    return run_vnni<Y>(x, packed, scales.to(at::kFloat).contiguous(), b, x.size(-1), N);
  }
  TORCH_CHECK(packed.dim() == 3 && packed.size(2) == kOut && packed.is_contiguous() &&
                  packed.scalar_type() == at::kChar,
              "linear_int8: the weight must come from pack_linear_int8");
  const int64_t K = packed.size(1), NB = packed.size(0), N = out_features;
  TORCH_CHECK(N > (NB - 1) * kOut && N <= NB * kOut, "linear_int8: out_features ", N, " does not match the weight");
  TORCH_CHECK(x.scalar_type() == at::kBFloat16 && x.dim() >= 1 && x.size(-1) == K,
              "linear_int8: x must be bf16 [..., ", K, "], got ", x.scalar_type(), " ", x.sizes());
  TORCH_CHECK(scales.dim() == 1 && scales.size(0) == N, "linear_int8: scales must be [", N, "]");
  at::Tensor b;
  if (bias.has_value() && bias->defined()) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == N, "linear_int8: bias must be [", N, "]");
    b = bias->to(at::kFloat).contiguous();
  }
  const at::Tensor s = scales.to(at::kFloat).contiguous();
  const at::Tensor xf = x.to(at::kFloat);  // bf16 -> float32 is exact; broadcast from memory by the kernel
  const int8_t* wp = packed.data_ptr<int8_t>();
  const float* sp = s.data_ptr<float>();
  const int64_t rows_per_pass = isa == QuantIsa::kAvx512 ? kRows512 : kRows256;
  auto block = [&](int64_t rows, const float* xr, int64_t nb, const float* bb, Y* yb) {
    rows_dispatch<Y, kRows512>(isa, rows, xr, K, wp + nb * K * kOut, sp + nb * kOut, bb, yb, N,
                               std::min(kOut, N - nb * kOut));
  };
  at::Tensor y = lmforge::linear_by_blocks<float, decltype(block), Y>(xf, K, NB, kOut, rows_per_pass, N, kOut, b,
                                                                       K * kOut, block);
  return y;
}

}  // namespace

namespace lmforge {

bool linear_int8_row(const at::BFloat16* x, int64_t K, const uint8_t* codes, int64_t blocks, int64_t padded_K,
                     const float* scales, const float* bias, int64_t out_features, at::BFloat16* y) {
#if defined(LMFORGE_QUANT_VNNI)
  if (quant_isa() != QuantIsa::kAvx512) return false;
  vnni_row_into<at::BFloat16>(x, K, codes, blocks, padded_K, scales, bias, y, out_features);
  return true;
#else
  return false;
#endif
}

// float_out: the float32 sums (times the scales, plus the bias) unrounded, for an LM head's logits.
at::Tensor linear_int8(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& scales,
                       const c10::optional<at::Tensor>& bias, int64_t out_features, bool float_out) {
  return float_out ? run<float>(x, packed, scales, bias, out_features)
                   : run<at::BFloat16>(x, packed, scales, bias, out_features);
}

}  // namespace lmforge

namespace {

// Whether the int8 x int8 path (dynamic int8 activations, int8_dot.h) runs: this build has AVX512-VNNI and the
// kernels run on their AVX-512 path.
bool quant_linear_vnni() { return lmforge::vnni_compiled() && lmforge::quant_isa() == QuantIsa::kAvx512; }

// The instruction set of the quantized linears: `isa` "" reads it; "avx512", "avx2" or "default" sets it.
std::string quant_linear_isa(const std::string& isa) {
  if (isa == "default") {
    lmforge::quant_isa() = lmforge::default_quant_isa();
  } else if (isa == "avx512") {
#if defined(LMFORGE_QUANT_AVX512)
    lmforge::quant_isa() = QuantIsa::kAvx512;
#else
    TORCH_CHECK(false, "quant_linear_isa: this build has no AVX-512 (with BF16) path");
#endif
  } else if (isa == "avx2") {
#if defined(LMFORGE_QUANT_AVX2)
    lmforge::quant_isa() = QuantIsa::kAvx2;
#else
    TORCH_CHECK(false, "quant_linear_isa: this build has no AVX2 path");
#endif
  } else {
    TORCH_CHECK(isa.empty(), "quant_linear_isa: unknown instruction set '", isa,
                "'; valid: avx512, avx2, default (or empty to read it)");
  }
  return lmforge::quant_isa_name(lmforge::quant_isa());
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(lmforge, m) {
  m.def("pack_linear_int8(Tensor weight) -> Tensor");
  m.def("pack_linear_int8_vnni(Tensor weight) -> Tensor");
  m.def("linear_int8(Tensor x, Tensor packed, Tensor scales, Tensor? bias, int out_features, bool float_out=False) "
        "-> Tensor");
  m.def("quant_linear_isa(str isa=\"\") -> str", &quant_linear_isa);  // no tensor: one kernel for every key
  m.def("quant_linear_vnni() -> bool", &quant_linear_vnni);
}

TORCH_LIBRARY_IMPL(lmforge, CPU, m) {
  m.impl("pack_linear_int8", &pack_linear_int8);
  m.impl("pack_linear_int8_vnni", &pack_linear_int8_vnni);
  m.impl("linear_int8", &lmforge::linear_int8);
}
