// y = x W^T (+ b) for bfloat16 on CPUs with AVX512-BF16 (Zen 4/5, Intel Cooper Lake and later), the engine's linears.
//
// The weight is packed once into pairs of input channels: [N/32][K/2][32 outputs][2], so that one 64-byte vector
// holds 16 outputs x 2 inputs, the operand of the bf16 dot-product instruction (32 products summed in pairs into 16
// float32 lanes). A task computes 32 outputs for up to 12 rows at a time: 24 float32 accumulators stay in registers
// while the block's weights stream through once, prefetched 16 pairs ahead, and each row's pair of inputs is
// broadcast to all lanes. Products of two bf16 numbers are exact in float32 and the sums are float32, rounded to bf16
// once at the end: the result differs from oneDNN's (which F.linear and packed_linear.py use) by the order of the
// sums only. Measured on 2 Zen 5 cores against oneDNN's packed bf16 linear, SmolLM2-135M's 30 layers with weights
// streaming from memory: 6.6 vs 9.0 ms at 18 rows, 4.6 vs 6.7 ms at 1 row; 62 vs 63 ms at 2048 rows.
// linear_bf16_float writes those float32 sums unrounded: an LM head's logits, where bf16 rounding ties tokens.
// Checked against F.linear in tests/unit/kernels/test_linear_bf16.py.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "float_linears.h"
#include "float_vec.h"
#include "linear_tasks.h"

#if defined(__AVX512BF16__)
#include <immintrin.h>
#endif

namespace {

constexpr int64_t kOut = 32;  // outputs per task: two vectors of 16 float32 lanes
constexpr int64_t kRows = 12;  // rows per pass: 2 x 12 accumulators in registers

at::Tensor pack_linear_bf16(const at::Tensor& weight) {
  TORCH_CHECK(weight.dim() == 2 && weight.scalar_type() == at::kBFloat16, "pack_linear_bf16: a bf16 [N, K] weight");
  TORCH_CHECK(weight.size(1) % 2 == 0, "pack_linear_bf16: K must be even, got ", weight.size(1));
  const int64_t N = weight.size(0), K = weight.size(1), NB = (N + kOut - 1) / kOut;
  at::Tensor packed = at::zeros({NB, K / 2, kOut, 2}, weight.options());  // outputs past N stay zero
  const at::Tensor w = weight.contiguous();
  const uint32_t* src = reinterpret_cast<const uint32_t*>(w.data_ptr<at::BFloat16>());  // pairs of inputs
  uint32_t* dst = reinterpret_cast<uint32_t*>(packed.data_ptr<at::BFloat16>());
  at::parallel_for(0, NB, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t nb = b0; nb < b1; ++nb)
      for (int64_t j = 0; j < kOut && nb * kOut + j < N; ++j)
        for (int64_t k2 = 0; k2 < K / 2; ++k2) dst[(nb * (K / 2) + k2) * kOut + j] = src[(nb * kOut + j) * (K / 2) + k2];
  });
  return packed;
}

#if defined(__AVX512BF16__) && defined(CPU_CAPABILITY_AVX512)  // the store helpers take 16-float Vecs
constexpr bool kAvailable = true;

// Writes R rows of a block's 32 outputs (`valid` of them real) from their float32 sums acc[m][0..1], bias added.
// Gated: the block holds 16 gate outputs then the same 16 up outputs (see silu_gated_linear_bf16), and 16 values
// silu(gate) * up are written, rounded to bf16 where the eager SwiGLU rounds (each projection, the SiLU, the
// product). Y: the output type, bf16 or (not gated) float32.
template <int R, bool Gated, typename Y>
void store_block(const __m512 (*acc)[2], const float* bias, Y* y, int64_t y_stride, int64_t valid) {
  if constexpr (Gated) {
    static_assert(std::is_same_v<Y, at::BFloat16>, "the gated kernel writes bf16");
    const __m512 b0 = bias ? _mm512_loadu_ps(bias) : _mm512_setzero_ps();
    const __m512 b1 = bias ? _mm512_loadu_ps(bias + 16) : _mm512_setzero_ps();
    for (int m = 0; m < R; ++m) {
      const lmforge::Vec gate = lmforge::round_to<at::BFloat16>(lmforge::Vec(_mm512_add_ps(acc[m][0], b0)));
      const lmforge::Vec up = lmforge::round_to<at::BFloat16>(lmforge::Vec(_mm512_add_ps(acc[m][1], b1)));
      const lmforge::Vec silu = lmforge::round_to<at::BFloat16>(gate / (lmforge::Vec(1.f) + gate.neg().exp_u20()));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(y + m * y_stride), (__m256i)_mm512_cvtneps_pbh(silu * up));
    }
    return;
  }
  const __mmask16 lo = valid >= 16 ? 0xffff : (1u << valid) - 1;
  const __mmask16 hi = valid >= 32 ? 0xffff : valid <= 16 ? 0 : (1u << (valid - 16)) - 1;
  const __m512 b0 = bias ? _mm512_maskz_loadu_ps(lo, bias) : _mm512_setzero_ps();
  const __m512 b1 = bias ? _mm512_maskz_loadu_ps(hi, bias + 16) : _mm512_setzero_ps();
  for (int m = 0; m < R; ++m) {
    if constexpr (std::is_same_v<Y, float>) {
      _mm512_mask_storeu_ps(y + m * y_stride, lo, _mm512_add_ps(acc[m][0], b0));
      _mm512_mask_storeu_ps(y + m * y_stride + 16, hi, _mm512_add_ps(acc[m][1], b1));
    } else {
      _mm256_mask_storeu_epi16(y + m * y_stride, lo, (__m256i)_mm512_cvtneps_pbh(_mm512_add_ps(acc[m][0], b0)));
      _mm256_mask_storeu_epi16(y + m * y_stride + 16, hi, (__m256i)_mm512_cvtneps_pbh(_mm512_add_ps(acc[m][1], b1)));
    }
  }
}

// 32 outputs (`valid` of them real) for R rows of x (row stride K), from one block of the packed weight.
template <int R, bool Gated, typename Y>
void rows_block(const at::BFloat16* x, int64_t K, const at::BFloat16* w, const float* bias, Y* y, int64_t y_stride,
                int64_t valid) {
  __m512 acc[R][2];
  for (int m = 0; m < R; ++m) acc[m][0] = acc[m][1] = _mm512_setzero_ps();
  for (int64_t k2 = 0; k2 < K / 2; ++k2) {
    _mm_prefetch(reinterpret_cast<const char*>(w + (k2 + 16) * 2 * kOut), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(w + (k2 + 16) * 2 * kOut + kOut), _MM_HINT_T0);
    const __m512bh w0 = (__m512bh)_mm512_loadu_si512(w + k2 * 2 * kOut);
    const __m512bh w1 = (__m512bh)_mm512_loadu_si512(w + k2 * 2 * kOut + kOut);
    for (int m = 0; m < R; ++m) {
      int32_t pair;
      std::memcpy(&pair, x + m * K + 2 * k2, sizeof(pair));
      const __m512bh xb = (__m512bh)_mm512_set1_epi32(pair);
      acc[m][0] = _mm512_dpbf16_ps(acc[m][0], w0, xb);
      acc[m][1] = _mm512_dpbf16_ps(acc[m][1], w1, xb);
    }
  }
  store_block<R, Gated, Y>(acc, bias, y, y_stride, valid);
}

// One row (a decode step's), two blocks a and b at once: the same sums as rows_block<1> for each, but the weights
// stream from two places in memory, which one core reads faster than one stream (lmforge::for_block_pairs), and are
// prefetched non-temporally: read once per step, they would otherwise evict from L2 and L3 what the rest of the step
// (Python, the sampler, the KV cache) reads next (SmolLM2 bf16, one thread: the time of a step outside its stack and
// head 0.21-0.34 -> 0.08-0.18 ms, the whole decode ~5% faster).
template <bool Gated, typename Y>
void row_two_blocks(const at::BFloat16* x, int64_t K, const at::BFloat16* wa, const at::BFloat16* wb,
                    const float* bias_a, const float* bias_b, Y* ya, Y* yb, int64_t valid_a, int64_t valid_b) {
  __m512 a[1][2] = {{_mm512_setzero_ps(), _mm512_setzero_ps()}}, b[1][2] = {{_mm512_setzero_ps(), _mm512_setzero_ps()}};
  for (int64_t k2 = 0; k2 < K / 2; ++k2) {
    int32_t pair;
    std::memcpy(&pair, x + 2 * k2, sizeof(pair));
    const __m512bh xb = (__m512bh)_mm512_set1_epi32(pair);
    _mm_prefetch(reinterpret_cast<const char*>(wa + (k2 + 16) * 2 * kOut), _MM_HINT_NTA);
    _mm_prefetch(reinterpret_cast<const char*>(wa + (k2 + 16) * 2 * kOut + kOut), _MM_HINT_NTA);
    _mm_prefetch(reinterpret_cast<const char*>(wb + (k2 + 16) * 2 * kOut), _MM_HINT_NTA);
    _mm_prefetch(reinterpret_cast<const char*>(wb + (k2 + 16) * 2 * kOut + kOut), _MM_HINT_NTA);
    a[0][0] = _mm512_dpbf16_ps(a[0][0], (__m512bh)_mm512_loadu_si512(wa + k2 * 2 * kOut), xb);
    a[0][1] = _mm512_dpbf16_ps(a[0][1], (__m512bh)_mm512_loadu_si512(wa + k2 * 2 * kOut + kOut), xb);
    b[0][0] = _mm512_dpbf16_ps(b[0][0], (__m512bh)_mm512_loadu_si512(wb + k2 * 2 * kOut), xb);
    b[0][1] = _mm512_dpbf16_ps(b[0][1], (__m512bh)_mm512_loadu_si512(wb + k2 * 2 * kOut + kOut), xb);
  }
  store_block<1, Gated, Y>(a, bias_a, ya, 0, valid_a);
  store_block<1, Gated, Y>(b, bias_b, yb, 0, valid_b);
}

template <bool Gated, typename Y, int R = kRows>
void rows_block_dispatch(int64_t rows, const at::BFloat16* x, int64_t K, const at::BFloat16* w, const float* bias,
                         Y* y, int64_t y_stride, int64_t valid) {
  if constexpr (R > 1) {
    if (rows < R) return rows_block_dispatch<Gated, Y, R - 1>(rows, x, K, w, bias, y, y_stride, valid);
  }
  rows_block<R, Gated, Y>(x, K, w, bias, y, y_stride, valid);
}
#else
constexpr bool kAvailable = false;
template <bool Gated, typename Y>
void rows_block_dispatch(int64_t, const at::BFloat16*, int64_t, const at::BFloat16*, const float*, Y*, int64_t,
                         int64_t) {}
template <bool Gated, typename Y>
void row_two_blocks(const at::BFloat16*, int64_t, const at::BFloat16*, const at::BFloat16*, const float*, const float*,
                    Y*, Y*, int64_t, int64_t) {}
#endif

// Tasks are blocks of 32 packed outputs, all M rows each; `width` outputs per row are written (out_features, or the
// hidden size when gated), of type Y. bias: float32 [N] or null.
template <bool Gated, typename Y>
void run_into(const at::BFloat16* x, int64_t M, const at::Tensor& packed, const float* bias, Y* y, int64_t width) {
  const int64_t K = packed.size(1) * 2, NB = packed.size(0), N = Gated ? 2 * width : width;
  const at::BFloat16* wp = packed.data_ptr<at::BFloat16>();
  const int64_t written = Gated ? kOut / 2 : kOut;  // outputs a block writes
  auto block = [&](int64_t rows, const at::BFloat16* xr, int64_t nb, const float* bb, Y* yb) {
    rows_block_dispatch<Gated, Y>(rows, xr, K, wp + nb * K * kOut, bb, yb, width, std::min(kOut, N - nb * kOut));
  };
  if (M == 1) {  // a decode step: blocks in pairs, two streams of weights
    auto pair = [&](int64_t na, int64_t nb) {
      row_two_blocks<Gated, Y>(x, K, wp + na * K * kOut, wp + nb * K * kOut, bias ? bias + na * kOut : nullptr,
                               bias ? bias + nb * kOut : nullptr, y + na * written, y + nb * written,
                               std::min(kOut, N - na * kOut), std::min(kOut, N - nb * kOut));
    };
    auto one = [&](int64_t nb) { block(1, x, nb, bias ? bias + nb * kOut : nullptr, y + nb * written); };
    return lmforge::for_block_pairs(NB, K * kOut * 2, pair, one);
  }
  lmforge::linear_blocks_into<at::BFloat16, decltype(block), Y>(x, M, K, NB, kOut, kRows, width,
                                                                written, bias, y, K * kOut * 2, block);
}

// Shared by the ops: the checks, and the output tensor.
template <bool Gated, typename Y = at::BFloat16>
at::Tensor run(const char* name, const at::Tensor& x, const at::Tensor& packed, const c10::optional<at::Tensor>& bias,
               int64_t width) {
  TORCH_CHECK(kAvailable, name, " needs a CPU with AVX512-BF16 (this build has no such instructions)");
  TORCH_CHECK(packed.dim() == 4 && packed.size(2) == kOut && packed.size(3) == 2 && packed.is_contiguous() &&
                  packed.scalar_type() == at::kBFloat16,
              name, ": the weight must come from pack_linear_bf16");
  const int64_t K = packed.size(1) * 2, NB = packed.size(0), N = Gated ? 2 * width : width;
  TORCH_CHECK(Gated ? N == NB * kOut : N > (NB - 1) * kOut && N <= NB * kOut, name, ": ",
              Gated ? "hidden size " : "out_features ", width, " does not match the weight");
  TORCH_CHECK(x.scalar_type() == at::kBFloat16 && x.dim() >= 1 && x.size(-1) == K, name, ": x must be bf16 [..., ", K,
              "], got ", x.scalar_type(), " ", x.sizes());
  at::Tensor b;
  if (bias.has_value() && bias->defined()) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == N, name, ": bias must be [", N, "]");
    b = bias->to(at::kFloat).contiguous();
  }
  const at::Tensor xc = x.contiguous();
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = width;
  at::Tensor y = at::empty(shape, x.options().dtype(c10::CppTypeToScalarType<Y>::value));
  run_into<Gated, Y>(xc.data_ptr<at::BFloat16>(), K == 0 ? 0 : xc.numel() / K, packed,
                     b.defined() ? b.data_ptr<float>() : nullptr, y.data_ptr<Y>(), width);
  return y;
}

at::Tensor linear_bf16(const at::Tensor& x, const at::Tensor& packed, const c10::optional<at::Tensor>& bias,
                       int64_t out_features) {
  return run<false>("linear_bf16", x, packed, bias, out_features);
}

// The same sums, written as float32 (not rounded to bf16).
at::Tensor linear_bf16_float(const at::Tensor& x, const at::Tensor& packed, const c10::optional<at::Tensor>& bias,
                             int64_t out_features) {
  return run<false, float>("linear_bf16_float", x, packed, bias, out_features);
}

// SwiGLU's first half in one pass: silu(x gate^T) * (x up^T), from a weight whose rows alternate 16 gate rows and the
// same 16 up rows (packed by pack_linear_bf16); the gate/up activations [.., 2 * hidden] are never written.
at::Tensor silu_gated_linear_bf16(const at::Tensor& x, const at::Tensor& packed, const c10::optional<at::Tensor>& bias,
                                  int64_t hidden) {
  return run<true>("silu_gated_linear_bf16", x, packed, bias, hidden);
}

}  // namespace

void lmforge::linear_bf16_into(const at::BFloat16* x, int64_t M, const at::Tensor& packed, const float* bias,
                               at::BFloat16* y, int64_t width, bool gated) {
  TORCH_CHECK(kAvailable, "linear_bf16 needs a CPU with AVX512-BF16 (this build has no such instructions)");
  gated ? run_into<true, at::BFloat16>(x, M, packed, bias, y, width)
        : run_into<false, at::BFloat16>(x, M, packed, bias, y, width);
}

TORCH_LIBRARY_FRAGMENT(lmforge, m) {
  m.def("pack_linear_bf16(Tensor weight) -> Tensor");
  m.def("linear_bf16(Tensor x, Tensor packed, Tensor? bias, int out_features) -> Tensor");
  m.def("linear_bf16_float(Tensor x, Tensor packed, Tensor? bias, int out_features) -> Tensor");
  m.def("silu_gated_linear_bf16(Tensor x, Tensor packed, Tensor? bias, int hidden) -> Tensor");
}

TORCH_LIBRARY_IMPL(lmforge, CPU, m) {
  m.impl("pack_linear_bf16", &pack_linear_bf16);
  m.impl("linear_bf16", &linear_bf16);
  m.impl("linear_bf16_float", &linear_bf16_float);
  m.impl("silu_gated_linear_bf16", &silu_gated_linear_bf16);
}
