// y = x w^T (+ b) for group-wise int4 weights (lmforge.quant Int4Linear): w = (q - 8) s + z with q in [0, 15] and one
// bf16 (s, z) per group of G input channels and output; bf16 inputs; the codes dequantized in registers, so the
// weight streams from memory at half a byte per weight (plus 4 bytes of (s, z) per group and output).
//
// Packing (done once, from the saved nibble layout): blocks of 32 outputs, [N/32][K/8][32] 32-bit lanes, each lane
// one output's 8 codes of input channels k..k+7, nibble p holding channel k+2p and nibble p+4 channel k+2p+1 (p < 4);
// the (s, z) pairs as [N/32][K/G][32] lanes (s in the low half). Per group the sums split as
// sum(w x) = s sum(q x) + (z - 8 s) sum(x), with sum(x) per row and group computed once per call.
// AVX-512 (with AVX512-BF16): nibble p shifted to bits 3-6 of each 16-bit half, & 0x00780078 | 0x41804180, is in each
// half the bf16 number 16 + q of channels k+2p and k+2p+1 (a shift and one ternary-logic instruction), the operand of
// the bf16 dot product with the row's pair of inputs: products exact, sums in float32; sum((16 + q) x) - 16 sum(x) is
// folded into the group's correction term (the offset costs about one bit of the float32 sums). AVX2: each nibble is masked, converted to float32 and multiplied-added. Results differ from the float32
// product of the dequantized weight by float32 rounding of the sums only (tests/unit/kernels/test_linear_int4.py).

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "int8_dot.h"
#include "linear_tasks.h"
#include "quant_linear.h"

#if defined(LMFORGE_QUANT_AVX2) || defined(LMFORGE_QUANT_AVX512)
#include <immintrin.h>
#endif

namespace {

using lmforge::QuantIsa;

constexpr int64_t kOut = 32;  // outputs per block
constexpr int64_t kRows = 8;  // rows per pass (the outputs' running sums live in a small buffer, updated per group)

// weight: uint8 [N, K/2], two codes per byte, the even channel in the low nibble (Int4Linear's saved layout).
at::Tensor pack_linear_int4(const at::Tensor& weight) {
  TORCH_CHECK(weight.dim() == 2 && weight.scalar_type() == at::kByte && weight.size(1) % 4 == 0,
              "pack_linear_int4: a uint8 [N, K/2] weight of nibbles with K a multiple of 8");
  const int64_t N = weight.size(0), K = weight.size(1) * 2, NB = (N + kOut - 1) / kOut;
  at::Tensor packed = at::zeros({NB, K / 8, kOut}, weight.options().dtype(at::kInt));  // outputs past N stay zero
  const at::Tensor w = weight.contiguous();
  const uint8_t* src = w.data_ptr<uint8_t>();
  uint32_t* dst = reinterpret_cast<uint32_t*>(packed.data_ptr<int32_t>());
  at::parallel_for(0, NB, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t nb = b0; nb < b1; ++nb)
      for (int64_t j = 0; j < kOut && nb * kOut + j < N; ++j)
        for (int64_t k8 = 0; k8 < K / 8; ++k8) {
          const uint8_t* bytes = src + (nb * kOut + j) * (K / 2) + k8 * 4;  // channel 2p: low nibble of byte p
          uint32_t lane = 0;
          for (int p = 0; p < 4; ++p)
            lane |= uint32_t(bytes[p] & 0xF) << (4 * p) | uint32_t(bytes[p] >> 4) << (16 + 4 * p);
          dst[(nb * (K / 8) + k8) * kOut + j] = lane;
        }
  });
  return packed;
}

// scales_and_zeros: bf16 [K/G, N, 2] (Int4Linear's saved layout) -> bf16 [N/32, K/G, 32, 2].
at::Tensor pack_int4_scales(const at::Tensor& scales_and_zeros) {
  TORCH_CHECK(scales_and_zeros.dim() == 3 && scales_and_zeros.size(2) == 2 &&
                  scales_and_zeros.scalar_type() == at::kBFloat16,
              "pack_int4_scales: bf16 scales and zeros [K/G, N, 2]");
  const int64_t groups = scales_and_zeros.size(0), N = scales_and_zeros.size(1), NB = (N + kOut - 1) / kOut;
  const at::Tensor padded = at::constant_pad_nd(scales_and_zeros, {0, 0, 0, NB * kOut - N});
  return padded.view({groups, NB, kOut, 2}).permute({1, 0, 2, 3}).contiguous();
}

#if defined(LMFORGE_QUANT_AVX512)
template <int P>
inline __m512bh codes_as_bf16(__m512i lanes) {  // 16 + q of channels k+2P, k+2P+1 in each lane's two halves
  // nibble P moved to bits 3-6 of each half: the top of the bf16 significand, below the exponent of 16.0 (0x4180)
  const __m512i moved = P == 0 ? _mm512_slli_epi32(lanes, 3) : _mm512_srli_epi32(lanes, P == 0 ? 0 : 4 * P - 3);
  return (__m512bh)_mm512_ternarylogic_epi32(moved, _mm512_set1_epi32(0x00780078), _mm512_set1_epi32(0x41804180),
                                             0xEA);  // (a & b) | c
}

// Independent sums per output and row: with few rows the chains of dot products (~6 cycles each) would bound a pass,
// so the four pairs of a lane's 8 channels go to kChains(R) separate accumulators, added at the group's end.
constexpr int kChains(int R) { return R == 1 ? 4 : R == 2 ? 2 : 1; }

template <int P, int R, int S>
inline void dot_pair(__m512 (&acc)[R][S][2], __m512i v0, __m512i v1, const at::BFloat16* x, int64_t K, int64_t k) {
  const __m512bh a0 = codes_as_bf16<P>(v0), a1 = codes_as_bf16<P>(v1);
#pragma GCC unroll 8
  for (int m = 0; m < R; ++m) {
    int32_t pair;
    std::memcpy(&pair, x + m * K + k + 2 * P, sizeof(pair));
    const __m512bh xb = (__m512bh)_mm512_set1_epi32(pair);
    acc[m][P % S][0] = _mm512_dpbf16_ps(acc[m][P % S][0], a0, xb);
    acc[m][P % S][1] = _mm512_dpbf16_ps(acc[m][P % S][1], a1, xb);
  }
}

// out[m][0..31] += the block's group sums for R rows of x (bf16, row stride K); xsum: [R][groups].
template <int R>
void rows_avx512(const at::BFloat16* x, int64_t K, int64_t G, const uint32_t* w, const uint32_t* sz,
                 const float* xsum, int64_t groups, float (*out)[kOut]) {
  constexpr int S = kChains(R);
  for (int64_t g = 0; g < groups; ++g) {
    __m512 acc[R][S][2];
    for (int m = 0; m < R; ++m)
      for (int s = 0; s < S; ++s) acc[m][s][0] = acc[m][s][1] = _mm512_setzero_ps();
    for (int64_t k = g * G; k < (g + 1) * G; k += 8) {
      const uint32_t* lanes = w + (k / 8) * kOut;
      _mm_prefetch(reinterpret_cast<const char*>(lanes + 4 * kOut), _MM_HINT_T0);  // 512 bytes ahead
      _mm_prefetch(reinterpret_cast<const char*>(lanes + 4 * kOut + 16), _MM_HINT_T0);
      const __m512i v0 = _mm512_loadu_si512(lanes), v1 = _mm512_loadu_si512(lanes + 16);
      dot_pair<0, R, S>(acc, v0, v1, x, K, k);
      dot_pair<1, R, S>(acc, v0, v1, x, K, k);
      dot_pair<2, R, S>(acc, v0, v1, x, K, k);
      dot_pair<3, R, S>(acc, v0, v1, x, K, k);
    }
    for (int m = 0; m < R; ++m)
      for (int s = 1; s < S; ++s) {
        acc[m][0][0] = _mm512_add_ps(acc[m][0][0], acc[m][s][0]);
        acc[m][0][1] = _mm512_add_ps(acc[m][0][1], acc[m][s][1]);
      }
    for (int h = 0; h < 2; ++h) {
      const __m512i pairs = _mm512_loadu_si512(sz + g * kOut + 16 * h);
      const __m512 s = _mm512_castsi512_ps(_mm512_slli_epi32(pairs, 16));
      const __m512 z = _mm512_castsi512_ps(_mm512_and_si512(pairs, _mm512_set1_epi32(int32_t(0xFFFF0000))));
      const __m512 c = _mm512_fmadd_ps(s, _mm512_set1_ps(-24.f), z);  // z - 8 s, less the 16 s of the codes
      for (int m = 0; m < R; ++m) {
        __m512 o = _mm512_loadu_ps(out[m] + 16 * h);
        o = _mm512_fmadd_ps(s, acc[m][0][h], o);
        o = _mm512_fmadd_ps(c, _mm512_set1_ps(xsum[m * groups + g]), o);
        _mm512_storeu_ps(out[m] + 16 * h, o);
      }
    }
  }
}
#endif

#if defined(LMFORGE_QUANT_AVX2)
template <int N>
inline __m256 nibble(__m256i lanes) {
  return _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srli_epi32(lanes, 4 * N), _mm256_set1_epi32(0xF)));
}

// As rows_avx512, one row at a time (x float32 here), codes masked and converted to float32 nibble by nibble.
void rows_avx2(int64_t rows, const float* x, int64_t K, int64_t G, const uint32_t* w, const uint32_t* sz,
               const float* xsum, int64_t groups, float (*out)[kOut]) {
  for (int64_t g = 0; g < groups; ++g) {
    alignas(32) float s[kOut], c[kOut];
    for (int64_t j = 0; j < kOut; ++j) {
      const uint32_t pair = sz[g * kOut + j];
      const uint32_t s_bits = pair << 16, z_bits = pair & 0xFFFF0000u;
      float sj, zj;
      std::memcpy(&sj, &s_bits, 4);
      std::memcpy(&zj, &z_bits, 4);
      s[j] = sj;
      c[j] = zj - 8.f * sj;
    }
    for (int64_t m = 0; m < rows; ++m) {
      __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
      const float* xr = x + m * K;
      for (int64_t k = g * G; k < (g + 1) * G; k += 8) {
        const uint32_t* lanes = w + (k / 8) * kOut;
        _mm_prefetch(reinterpret_cast<const char*>(lanes + 4 * kOut), _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(lanes + 4 * kOut + 16), _MM_HINT_T0);
        const __m256 x0 = _mm256_set1_ps(xr[k]), x1 = _mm256_set1_ps(xr[k + 1]), x2 = _mm256_set1_ps(xr[k + 2]),
                     x3 = _mm256_set1_ps(xr[k + 3]), x4 = _mm256_set1_ps(xr[k + 4]), x5 = _mm256_set1_ps(xr[k + 5]),
                     x6 = _mm256_set1_ps(xr[k + 6]), x7 = _mm256_set1_ps(xr[k + 7]);
        for (int h = 0; h < 4; ++h) {  // two chains of multiply-adds per vector of outputs
          const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(lanes + 8 * h));
          __m256 a = acc[h], b = _mm256_mul_ps(nibble<4>(v), x1);  // nibble p: channel 2p, p + 4: channel 2p + 1
          a = _mm256_fmadd_ps(nibble<0>(v), x0, a);
          a = _mm256_fmadd_ps(nibble<1>(v), x2, a);
          b = _mm256_fmadd_ps(nibble<5>(v), x3, b);
          a = _mm256_fmadd_ps(nibble<2>(v), x4, a);
          b = _mm256_fmadd_ps(nibble<6>(v), x5, b);
          a = _mm256_fmadd_ps(nibble<3>(v), x6, a);
          b = _mm256_fmadd_ps(nibble<7>(v), x7, b);
          acc[h] = _mm256_add_ps(a, b);
        }
      }
      const __m256 xs = _mm256_set1_ps(xsum[m * groups + g]);
      for (int h = 0; h < 4; ++h) {
        __m256 o = _mm256_loadu_ps(out[m] + 8 * h);
        o = _mm256_fmadd_ps(_mm256_load_ps(s + 8 * h), acc[h], o);
        o = _mm256_fmadd_ps(_mm256_load_ps(c + 8 * h), xs, o);
        _mm256_storeu_ps(out[m] + 8 * h, o);
      }
    }
  }
}
#endif

#if defined(LMFORGE_QUANT_AVX512)
template <int R>
void rows_avx512_dispatch(int64_t rows, const at::BFloat16* x, int64_t K, int64_t G, const uint32_t* w,
                          const uint32_t* sz, const float* xsum, int64_t groups, float (*out)[kOut]) {
  if constexpr (R > 1) {
    if (rows < R) return rows_avx512_dispatch<R - 1>(rows, x, K, G, w, sz, xsum, groups, out);
  }
  rows_avx512<R>(x, K, G, w, sz, xsum, groups, out);
}
#endif

// T: bf16 x for the AVX-512 path, float32 for AVX2.
template <typename T, typename Y>
at::Tensor run_isa(QuantIsa isa, const at::Tensor& x, const at::Tensor& packed, const at::Tensor& sz,
                   const at::Tensor& xsum, const at::Tensor& b, int64_t K, int64_t G, int64_t N) {
  const int64_t NB = packed.size(0), groups = K / G;
  const uint32_t* wp = reinterpret_cast<const uint32_t*>(packed.data_ptr<int32_t>());
  const uint32_t* sp = reinterpret_cast<const uint32_t*>(sz.data_ptr<at::BFloat16>());
  const T* x0 = x.data_ptr<T>();
  const float* xs = xsum.data_ptr<float>();
  auto block = [&](int64_t rows, const T* xr, int64_t nb, const float* bb, Y* yb) {
    const int64_t m0 = (xr - x0) / K;
    const uint32_t* w = wp + nb * (K / 8) * kOut;
    const uint32_t* s = sp + nb * groups * kOut;
    alignas(64) float out[kRows][kOut] = {};
#if defined(LMFORGE_QUANT_AVX512)
    if constexpr (std::is_same_v<T, at::BFloat16>) {
      if (isa == QuantIsa::kAvx512) rows_avx512_dispatch<kRows>(rows, xr, K, G, w, s, xs + m0 * groups, groups, out);
    }
#endif
#if defined(LMFORGE_QUANT_AVX2)
    if constexpr (std::is_same_v<T, float>) {
      if (isa == QuantIsa::kAvx2) rows_avx2(rows, xr, K, G, w, s, xs + m0 * groups, groups, out);
    }
#endif
    for (int64_t m = 0; m < rows; ++m)
      lmforge::write_row(out[m], nullptr, bb, yb + m * N, std::min(kOut, N - nb * kOut));
  };
  const int64_t block_bytes = (packed.numel() * 4 + sz.numel() * 2) / NB;  // codes and (s, z) pairs
  return lmforge::linear_by_blocks<T, decltype(block), Y>(x, K, NB, kOut, kRows, N, kOut, b, block_bytes, block);
}

#if defined(LMFORGE_QUANT_VNNI)
template <int R>
void rows_vnni(const lmforge::Int8Rows& xq, int64_t rows, int64_t m0, const float* xsum, int64_t groups, int64_t G,
               const uint32_t* w, const uint32_t* sz, float (*out)[kOut]) {
  if constexpr (R > 1) {
    if (rows < R) return rows_vnni<R - 1>(xq, rows, m0, xsum, groups, G, w, sz, out);
  }
  lmforge::int4_block_vnni<R>(xq, m0, xsum + m0 * groups, groups, G, w, sz, out);
}

// Int8 activations (int8_dot.h): y [M, N] for x [M, K] (bf16, contiguous), quantized once in blocks of 32, in the
// nibbles' channel order; bias: float32 or null. One row (a decode step) runs its blocks four at a time
// (int4_blocks_vnni: the same sums as one by one). Called on raw pointers by the op and by decode_stack.cpp.
template <typename Y>
void vnni_into(const at::BFloat16* x0, int64_t M, const uint32_t* wp, const uint32_t* sp, int64_t NB, int64_t K,
               int64_t G, const float* bias, Y* y, int64_t N) {
  constexpr int64_t kRowsVnni = 4;  // 2 x 4 int32, 2 x 4 float32 sums per group, 2 x 4 totals
  const int64_t groups = K / G;
  const lmforge::Int8Rows xq = lmforge::quantize_rows(x0, M, K, true);
  thread_local std::vector<float> xsum_buffer;  // [M, groups]: sum_b scale_b sum(xq_b) over the group's blocks
  xsum_buffer.assign(M * groups, 0.f);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t b = 0; b < xq.blocks; ++b) {
      const int64_t i = m * xq.blocks + b;
      xsum_buffer[m * groups + b * lmforge::kXBlock / G] += xq.scale[i] * float(xq.sum[i]);
    }
  const float* xs = xsum_buffer.data();
  const int64_t block_bytes = K / 8 * kOut * 4 + groups * kOut * 4;  // codes and (s, z) pairs
  auto write = [&](const float* out, int64_t m, int64_t nb) {
    lmforge::write_row(out, nullptr, bias ? bias + nb * kOut : nullptr, y + m * N + nb * kOut,
                       std::min(kOut, N - nb * kOut));
  };
  if (M == 1) {  // four blocks at a time (for_block_quads)
    auto blocks = [&](auto... nb) {
      constexpr int O = sizeof...(nb);
      alignas(64) float out[O][kOut];
      const uint32_t* const w[O] = {(wp + nb * (K / 8) * kOut)...};
      const uint32_t* const sz[O] = {(sp + nb * groups * kOut)...};
      if (G == lmforge::kXBlock) {
        lmforge::int4_blocks_vnni<O, true>(xq, 0, xs, groups, G, w, sz, out);
      } else {
        lmforge::int4_blocks_vnni<O>(xq, 0, xs, groups, G, w, sz, out);
      }
      const int64_t index[O] = {nb...};
      for (int o = 0; o < O; ++o) write(out[o], 0, index[o]);
    };
    lmforge::for_block_quads(NB, block_bytes, blocks);
    return;
  }
  auto block = [&](int64_t rows, const at::BFloat16* xr, int64_t nb, const float*, Y*) {
    alignas(64) float out[kRowsVnni][kOut] = {};
    const int64_t m0 = (xr - x0) / K;
    rows_vnni<kRowsVnni>(xq, rows, m0, xs, groups, G, wp + nb * (K / 8) * kOut, sp + nb * groups * kOut, out);
    for (int64_t m = 0; m < rows; ++m) write(out[m], m0 + m, nb);
  };
  lmforge::linear_blocks_into<at::BFloat16, decltype(block), Y>(x0, M, K, NB, kOut, kRowsVnni, N, kOut, bias, y,
                                                                block_bytes, block);
}

template <typename Y>
at::Tensor run_vnni(const at::Tensor& xc, const at::Tensor& packed, const at::Tensor& sz, const at::Tensor& b,
                    int64_t K, int64_t G, int64_t N) {
  std::vector<int64_t> shape(xc.sizes().begin(), xc.sizes().end());
  shape.back() = N;
  at::Tensor y = at::empty(shape, xc.options().dtype(c10::CppTypeToScalarType<Y>::value));
  vnni_into<Y>(xc.data_ptr<at::BFloat16>(), xc.numel() / K,
               reinterpret_cast<const uint32_t*>(packed.data_ptr<int32_t>()),
               reinterpret_cast<const uint32_t*>(sz.data_ptr<at::BFloat16>()), packed.size(0), K, G,
               b.defined() ? b.data_ptr<float>() : nullptr, y.data_ptr<Y>(), N);
  return y;
}
#endif

template <typename Y>
at::Tensor run(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& sz,
               const c10::optional<at::Tensor>& bias, int64_t out_features, bool int8_x) {
  const QuantIsa isa = lmforge::quant_isa();
  TORCH_CHECK(isa != QuantIsa::kNone, "linear_int4 needs an x86 CPU with AVX2 and FMA (this build has neither)");
  lmforge::check_int4_pack(packed, sz, out_features);
  const int64_t K = packed.size(1) * 8, N = out_features;
  TORCH_CHECK(x.scalar_type() == at::kBFloat16 && x.dim() >= 1 && x.size(-1) == K,
              "linear_int4: x must be bf16 [..., ", K, "], got ", x.scalar_type(), " ", x.sizes());
  at::Tensor b;
  if (bias.has_value() && bias->defined()) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == N, "linear_int4: bias must be [", N, "]");
    b = bias->to(at::kFloat).contiguous();
  }
  const int64_t groups = sz.size(1), G = K / groups;
  const at::Tensor xc = x.contiguous();
#if defined(LMFORGE_QUANT_VNNI)
  if (int8_x && isa == QuantIsa::kAvx512 && G % lmforge::kXBlock == 0 && xc.numel() > 0)
    return run_vnni<Y>(xc, packed, sz, b, K, G, N);
#endif
  const int64_t M = xc.numel() / K;
  at::Tensor xsum = at::empty({M, groups}, x.options().dtype(at::kFloat));  // [M, K/G]: each group's sum of x
  const at::BFloat16* xp = xc.data_ptr<at::BFloat16>();
  float* xs = xsum.data_ptr<float>();
  int64_t i = 0;  // each group's sum in channel order, 8 groups at a time: 8 chains of additions instead of one
  for (; i + 8 <= M * groups; i += 8) {
    float total[8] = {};
    for (int64_t k = 0; k < G; ++k)
      for (int64_t j = 0; j < 8; ++j) total[j] += static_cast<float>(xp[(i + j) * G + k]);
    std::copy_n(total, 8, xs + i);
  }
  for (; i < M * groups; ++i) {
    float total = 0.f;
    for (int64_t k = 0; k < G; ++k) total += static_cast<float>(xp[i * G + k]);
    xs[i] = total;
  }
  if (isa == QuantIsa::kAvx512) return run_isa<at::BFloat16, Y>(isa, xc, packed, sz, xsum, b, K, G, N);
  return run_isa<float, Y>(isa, xc.to(at::kFloat), packed, sz, xsum, b, K, G, N);
}

}  // namespace

namespace lmforge {

void check_int4_pack(const at::Tensor& packed, const at::Tensor& sz, int64_t out_features) {
  TORCH_CHECK(packed.dim() == 3 && packed.size(2) == kOut && packed.is_contiguous() &&
                  packed.scalar_type() == at::kInt,
              "linear_int4: the weight must come from pack_linear_int4");
  const int64_t NB = packed.size(0), K = packed.size(1) * 8, N = out_features;
  TORCH_CHECK(N > (NB - 1) * kOut && N <= NB * kOut, "linear_int4: out_features ", N, " does not match the weight");
  TORCH_CHECK(sz.dim() == 4 && sz.size(0) == NB && sz.size(2) == kOut && sz.size(3) == 2 && sz.is_contiguous() &&
                  sz.scalar_type() == at::kBFloat16 && sz.size(1) > 0 && K % sz.size(1) == 0 &&
                  (K / sz.size(1)) % 8 == 0,
              "linear_int4: the scales must come from pack_int4_scales, for the same weight");
}

bool linear_int4_row(const at::BFloat16* x, const int32_t* codes, const at::BFloat16* scales_and_zeros, int64_t blocks,
                     int64_t K, int64_t groups, const float* bias, int64_t out_features, bool int8_x, at::BFloat16* y) {
#if defined(LMFORGE_QUANT_VNNI)
  const int64_t G = K / groups;
  if (!int8_x || quant_isa() != QuantIsa::kAvx512 || G % kXBlock != 0) return false;
  vnni_into<at::BFloat16>(x, 1, reinterpret_cast<const uint32_t*>(codes),
                          reinterpret_cast<const uint32_t*>(scales_and_zeros), blocks, K, G, bias, y, out_features);
  return true;
#else
  return false;
#endif
}

// int8_x: int8 activations (int8_dot.h) where this build has AVX512-VNNI, the AVX-512 path runs and the group size
// is a multiple of 32; else (and when false) the bf16 inputs times the codes as above.
at::Tensor linear_int4(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& scales_and_zeros,
                       const c10::optional<at::Tensor>& bias, int64_t out_features, bool float_out, bool int8_x) {
  return float_out ? run<float>(x, packed, scales_and_zeros, bias, out_features, int8_x)
                   : run<at::BFloat16>(x, packed, scales_and_zeros, bias, out_features, int8_x);
}

}  // namespace lmforge

TORCH_LIBRARY_FRAGMENT(lmforge, m) {
  m.def("pack_linear_int4(Tensor weight) -> Tensor");
  m.def("pack_int4_scales(Tensor scales_and_zeros) -> Tensor");
  m.def("linear_int4(Tensor x, Tensor packed, Tensor scales_and_zeros, Tensor? bias, int out_features, "
        "bool float_out=False, bool int8_x=False) -> Tensor");
}

TORCH_LIBRARY_IMPL(lmforge, CPU, m) {
  m.impl("pack_linear_int4", &pack_linear_int4);
  m.impl("pack_int4_scales", &pack_int4_scales);
  m.impl("linear_int4", &lmforge::linear_int4);
}
