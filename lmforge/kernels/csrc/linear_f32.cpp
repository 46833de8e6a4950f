// y = x W^T (+ b) for float32 on CPU, the fp32 model's linears (the server's default dtype).
//
// The weight is packed once into blocks of kOut = 2 vectors of outputs, [N/kOut][K][kOut], so that an input
// channel's kOut weights are two consecutive vectors. A task computes one block's kOut outputs for up to kRows rows
// at a time: 2 x kRows float32 accumulators stay in registers while the block's weights stream through once
// (prefetched 8 input channels ahead) and each row's input is broadcast to all lanes and multiplied-added (FMA).
// Vectorised with ATen's Vectorized<float>: AVX-512 gives 32 outputs x 12 rows per pass (lmforge/kernels/
// cpu_kernels.py uses this kernel only on such CPUs; at AVX2 width it measured slower than oneDNN at 2048 rows).
// Sums run in another order than oneDNN's, so results differ by float rounding (~1e-6 relative). Measured on 2 Zen 5
// cores against oneDNN's packed fp32 linear (packed_linear.py), SmolLM2-135M's 30 layers with weights streaming from
// memory: 10.9 vs 15.6 ms at 1 row, 13.6 vs 26.5 at 18 rows, 21.9 vs 35.4 at 32; 2 layers at 2048 rows 66 vs 87 ms.
//
// silu_gated_linear_f32: SwiGLU's gate/up projection with silu(gate) * up applied before anything is written, from a
// weight packed with gated=true (each block holds kOut/2 gate outputs and the same kOut/2 up outputs).
// Checked against F.linear and the eager SwiGLU in tests/unit/kernels/test_linear_f32.py.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cstdint>
#include <vector>

#include <immintrin.h>

#include "float_linears.h"
#include "float_vec.h"
#include "linear_tasks.h"

namespace {

using lmforge::Vec;

constexpr int64_t kW = Vec::size();
constexpr int64_t kOut = 2 * kW;  // outputs per block: two vectors
constexpr int64_t kRows = kW >= 16 ? 12 : 6;  // rows per pass: 2 x kRows accumulators (+ 3) within 32 or 16 registers
constexpr int64_t kAhead = 8;  // input channels of weights prefetched ahead (8 x 128 bytes at AVX-512 width)

// gated: weight = [gate; up] ([2F, K], F a multiple of kW), packed so that block b holds gate rows b*kW.. and the same
// up rows; else any [N, K].
at::Tensor pack_linear_f32(const at::Tensor& weight, bool gated) {
  TORCH_CHECK(weight.dim() == 2 && weight.scalar_type() == at::kFloat, "pack_linear_f32: a float32 [N, K] weight");
  const int64_t N = weight.size(0), K = weight.size(1), NB = (N + kOut - 1) / kOut;
  TORCH_CHECK(!gated || N % kOut == 0, "pack_linear_f32: a gated weight [2F, K] needs F to be a multiple of ", kW,
              ", got 2F = ", N);
  at::Tensor packed = at::zeros({NB, K, kOut}, weight.options());  // outputs past N stay zero
  const at::Tensor w = weight.contiguous();
  const float* src = w.data_ptr<float>();
  float* dst = packed.data_ptr<float>();
  auto source_row = [&](int64_t nb, int64_t j) {  // the weight row of block nb's output j
    return gated ? (j < kW ? nb * kW + j : N / 2 + nb * kW + j - kW) : nb * kOut + j;
  };
  at::parallel_for(0, NB, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t nb = b0; nb < b1; ++nb)
      for (int64_t j = 0; j < kOut && nb * kOut + j < N; ++j)
        for (int64_t k = 0; k < K; ++k) dst[(nb * K + k) * kOut + j] = src[source_row(nb, j) * K + k];
  });
  return packed;
}

// Writes R rows of a block's kOut outputs (`valid` of them real) from their sums acc[m][0..1], bias added. Gated: kW
// values silu(gate) * up instead.
template <int R, bool Gated>
void store_block(const Vec (*acc)[2], const float* bias, float* y, int64_t y_stride, int64_t valid) {
  const int64_t lo = std::min<int64_t>(valid, kW), hi = std::max<int64_t>(0, valid - kW);
  const Vec b0 = bias ? Vec::loadu(bias, lo) : Vec(0.f), b1 = bias && hi > 0 ? Vec::loadu(bias + kW, hi) : Vec(0.f);
  for (int m = 0; m < R; ++m) {
    const Vec y0 = acc[m][0] + b0, y1 = acc[m][1] + b1;
    if constexpr (Gated) {
      (y0 / (Vec(1.f) + y0.neg().exp()) * y1).store(y + m * y_stride);  // silu(gate) * up
    } else {
      y0.store(y + m * y_stride, lo);
      if (hi > 0) y1.store(y + m * y_stride + kW, hi);
    }
  }
}

// kOut outputs (`valid` of them real) of R rows of x (row stride K) from one block.
template <int R, bool Gated>
void rows_block(const float* x, int64_t K, const float* w, const float* bias, float* y, int64_t y_stride,
                int64_t valid) {
  Vec acc[R][2];
  for (int m = 0; m < R; ++m) acc[m][0] = acc[m][1] = Vec(0.f);
  for (int64_t k = 0; k < K; ++k) {
    __builtin_prefetch(w + (k + kAhead) * kOut);
    __builtin_prefetch(w + (k + kAhead) * kOut + kW);
    const Vec w0 = Vec::loadu(w + k * kOut), w1 = Vec::loadu(w + k * kOut + kW);
#pragma GCC unroll 16
    for (int m = 0; m < R; ++m) {  // unrolled, so that the accumulators stay in registers
      const Vec xb(x[m * K + k]);
      acc[m][0] = at::vec::fmadd(w0, xb, acc[m][0]);
      acc[m][1] = at::vec::fmadd(w1, xb, acc[m][1]);
    }
  }
  store_block<R, Gated>(acc, bias, y, y_stride, valid);
}

// One row (a decode step's), two blocks a and b at once: the sums of rows_block<1> for each, the weights streaming
// from two places in memory (lmforge::for_block_pairs), prefetched non-temporally (see linear_bf16.cpp).
template <bool Gated>
void row_two_blocks(const float* x, int64_t K, const float* wa, const float* wb, const float* bias_a,
                    const float* bias_b, float* ya, float* yb, int64_t valid_a, int64_t valid_b) {
  Vec a[1][2] = {{Vec(0.f), Vec(0.f)}}, b[1][2] = {{Vec(0.f), Vec(0.f)}};
  for (int64_t k = 0; k < K; ++k) {
    const Vec xb(x[k]);
    _mm_prefetch(reinterpret_cast<const char*>(wa + (k + 8) * kOut), _MM_HINT_NTA);
    _mm_prefetch(reinterpret_cast<const char*>(wa + (k + 8) * kOut + kW), _MM_HINT_NTA);
    _mm_prefetch(reinterpret_cast<const char*>(wb + (k + 8) * kOut), _MM_HINT_NTA);
    _mm_prefetch(reinterpret_cast<const char*>(wb + (k + 8) * kOut + kW), _MM_HINT_NTA);
    a[0][0] = at::vec::fmadd(Vec::loadu(wa + k * kOut), xb, a[0][0]);
    a[0][1] = at::vec::fmadd(Vec::loadu(wa + k * kOut + kW), xb, a[0][1]);
    b[0][0] = at::vec::fmadd(Vec::loadu(wb + k * kOut), xb, b[0][0]);
    b[0][1] = at::vec::fmadd(Vec::loadu(wb + k * kOut + kW), xb, b[0][1]);
  }
  store_block<1, Gated>(a, bias_a, ya, 0, valid_a);
  store_block<1, Gated>(b, bias_b, yb, 0, valid_b);
}

template <bool Gated, int R = kRows>
void rows_block_dispatch(int64_t rows, const float* x, int64_t K, const float* w, const float* bias, float* y,
                         int64_t y_stride, int64_t valid) {
  if constexpr (R > 1) {
    if (rows < R) return rows_block_dispatch<Gated, R - 1>(rows, x, K, w, bias, y, y_stride, valid);
  }
  rows_block<R, Gated>(x, K, w, bias, y, y_stride, valid);
}

// Tasks are blocks of kOut packed outputs, all M rows each; `width` outputs per row are written (out_features, or the
// hidden size when gated). bias: float32 in block order (kernel_bias) or null.
template <bool Gated>
void run_into(const float* x, int64_t M, const at::Tensor& packed, const float* bias, float* y, int64_t width) {
  const int64_t K = packed.size(1), NB = packed.size(0), N = Gated ? 2 * width : width;
  const float* wp = packed.data_ptr<float>();
  const int64_t written = Gated ? kW : kOut;  // outputs a block writes
  auto block = [&](int64_t rows, const float* xr, int64_t nb, const float* bb, float* yb) {
    rows_block_dispatch<Gated>(rows, xr, K, wp + nb * K * kOut, bb, yb, width, std::min(kOut, N - nb * kOut));
  };
  if (M == 1) {  // a decode step: blocks in pairs, two streams of weights
    auto pair = [&](int64_t na, int64_t nb) {
      row_two_blocks<Gated>(x, K, wp + na * K * kOut, wp + nb * K * kOut, bias ? bias + na * kOut : nullptr,
                            bias ? bias + nb * kOut : nullptr, y + na * written, y + nb * written,
                            std::min(kOut, N - na * kOut), std::min(kOut, N - nb * kOut));
    };
    auto one = [&](int64_t nb) { block(1, x, nb, bias ? bias + nb * kOut : nullptr, y + nb * written); };
    return lmforge::for_block_pairs(NB, K * kOut * 4, pair, one);
  }
  lmforge::linear_blocks_into<float>(x, M, K, NB, kOut, kRows, width, written, bias, y, K * kOut * 4, block);
}

// Shared by both ops: the checks, and the output tensor.
template <bool Gated>
at::Tensor run(const char* name, const at::Tensor& x, const at::Tensor& packed, const c10::optional<at::Tensor>& bias,
               int64_t width) {
  TORCH_CHECK(packed.dim() == 3 && packed.size(2) == kOut && packed.is_contiguous() &&
                  packed.scalar_type() == at::kFloat,
              name, ": the weight must come from pack_linear_f32");
  const int64_t K = packed.size(1), NB = packed.size(0), N = Gated ? 2 * width : width;
  TORCH_CHECK(Gated ? N == NB * kOut : N > (NB - 1) * kOut && N <= NB * kOut, name, ": ",
              Gated ? "hidden size " : "out_features ", width, " does not match the weight");
  TORCH_CHECK(x.scalar_type() == at::kFloat && x.dim() >= 1 && x.size(-1) == K, name, ": x must be float32 [..., ", K,
              "], got ", x.scalar_type(), " ", x.sizes());
  at::Tensor b;
  if (bias.has_value() && bias->defined()) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == N, name, ": bias must be [", N, "]");
    b = lmforge::kernel_bias(*bias, packed, Gated);
  }
  const at::Tensor xc = x.contiguous();
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = width;
  at::Tensor y = at::empty(shape, x.options());
  run_into<Gated>(xc.data_ptr<float>(), K == 0 ? 0 : xc.numel() / K, packed, b.defined() ? b.data_ptr<float>() : nullptr,
                  y.data_ptr<float>(), width);
  return y;
}

at::Tensor linear_f32(const at::Tensor& x, const at::Tensor& packed, const c10::optional<at::Tensor>& bias,
                      int64_t out_features) {
  return run<false>("linear_f32", x, packed, bias, out_features);
}

at::Tensor silu_gated_linear_f32(const at::Tensor& x, const at::Tensor& packed, const c10::optional<at::Tensor>& bias,
                                 int64_t hidden) {
  return run<true>("silu_gated_linear_f32", x, packed, bias, hidden);
}

}  // namespace

void lmforge::linear_f32_into(const float* x, int64_t M, const at::Tensor& packed, const float* bias, float* y,
                              int64_t width, bool gated) {
  gated ? run_into<true>(x, M, packed, bias, y, width) : run_into<false>(x, M, packed, bias, y, width);
}

// float32; a gated float32 weight's [gate bias; up bias] reordered like its rows (block b: kW gate outputs, then the
// same kW up outputs).
at::Tensor lmforge::kernel_bias(const at::Tensor& bias, const at::Tensor& packed, bool gated) {
  at::Tensor b = bias.to(at::kFloat).contiguous();
  if (gated && packed.scalar_type() == at::kFloat) b = b.view({2, packed.size(0), kW}).transpose(0, 1).contiguous();
  return b;
}

TORCH_LIBRARY_FRAGMENT(lmforge, m) {
  m.def("pack_linear_f32(Tensor weight, bool gated=False) -> Tensor");
  m.def("linear_f32(Tensor x, Tensor packed, Tensor? bias, int out_features) -> Tensor");
  m.def("silu_gated_linear_f32(Tensor x, Tensor packed, Tensor? bias, int hidden) -> Tensor");
}

TORCH_LIBRARY_IMPL(lmforge, CPU, m) {
  m.impl("pack_linear_f32", &pack_linear_f32);
  m.impl("linear_f32", &linear_f32);
  m.impl("silu_gated_linear_f32", &silu_gated_linear_f32);
}
