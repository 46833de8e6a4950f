// The small element-wise steps of a decoder layer, each in one pass over memory: at decode time a layer's
// RMSNorm, RoPE and SwiGLU activation are a few thousand numbers each, and as eager PyTorch ops they cost a dozen
// dispatches, temporaries and passes (measured 15-30 us per step and layer on 2 cores, more than the arithmetic).
//
// Each op reproduces the rounding of the eager code it replaces (lmforge/model/norms.py, rope.py, mlp.py): float32
// arithmetic, with the result of every eager op rounded to the tensor's dtype where the eager code rounds it. Only
// the order of the sum in RMSNorm's mean differs. Used through lmforge/model/inference.py; checked against the
// eager code in tests/unit/kernels/test_fused_ops.py.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <tuple>

#include "float_vec.h"
#include "norm_row.h"
#include "rope_row.h"

namespace {

using lmforge::load;
using lmforge::round_to;
using lmforge::store;
using lmforge::Vec;

constexpr int64_t kGrain = 16384;  // numbers per thread below which an op runs on the calling thread

inline int64_t grain_rows(int64_t width) { return std::max<int64_t>(1, kGrain / std::max<int64_t>(1, width)); }

// With `h`: the residual add before the norm, s = to_dtype(x + h) written to `sum`, then the norm of s (as the eager
// `x = x + h; norm(x)` computes it).
template <typename T>
void rms_norm_rows(const T* x, const T* h, T* sum, const T* weight, T* y, int64_t rows, int64_t D, float eps) {
  at::parallel_for(0, rows, grain_rows(D), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const T* xr = x + r * D;
      if (h != nullptr) {
        lmforge::add_row(xr, h + r * D, sum + r * D, D);
        xr = sum + r * D;
      }
      lmforge::rms_norm_row(xr, weight, y + r * D, D, eps);
    }
  });
}

template <typename T>
void rms_norm_typed(const at::Tensor& x, const at::Tensor& h, const at::Tensor& sum, const at::Tensor& weight,
                    const at::Tensor& y, float eps) {
  const int64_t D = x.size(-1), rows = D == 0 ? 0 : x.numel() / D;
  rms_norm_rows(x.data_ptr<T>(), h.defined() ? h.data_ptr<T>() : nullptr, sum.defined() ? sum.data_ptr<T>() : nullptr,
                weight.data_ptr<T>(), y.data_ptr<T>(), rows, D, eps);
}

void rms_norm_dispatch(const at::Tensor& x, const at::Tensor& h, const at::Tensor& sum, const at::Tensor& weight,
                       const at::Tensor& y, double eps) {
  if (x.scalar_type() == at::kFloat) {
    rms_norm_typed<float>(x, h, sum, weight, y, static_cast<float>(eps));
  } else {
    TORCH_CHECK(x.scalar_type() == at::kBFloat16, "rms_norm supports float32 and bfloat16, not ", x.scalar_type());
    rms_norm_typed<at::BFloat16>(x, h, sum, weight, y, static_cast<float>(eps));
  }
}

void check_norm_args(const at::Tensor& x, const at::Tensor& weight) {
  TORCH_CHECK(x.dim() >= 1 && weight.dim() == 1 && x.size(-1) == weight.size(0),
              "rms_norm: x [..., D] and weight [D], got ", x.sizes(), " and ", weight.sizes());
  TORCH_CHECK(x.scalar_type() == weight.scalar_type(), "rms_norm: x and weight need one dtype");
}

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  check_norm_args(x, weight);
  const at::Tensor xc = x.contiguous();
  at::Tensor y = at::empty_like(xc);
  rms_norm_dispatch(xc, at::Tensor(), at::Tensor(), weight.contiguous(), y, eps);
  return y;
}

// The residual add and the RMSNorm after it in one pass: (x + h, rms_norm(x + h)), as the eager ops round them.
std::tuple<at::Tensor, at::Tensor> add_rms_norm(const at::Tensor& x, const at::Tensor& h, const at::Tensor& weight,
                                                double eps) {
  check_norm_args(x, weight);
  TORCH_CHECK(h.sizes() == x.sizes() && h.scalar_type() == x.scalar_type(),
              "add_rms_norm: x and h need one shape and dtype, got ", x.sizes(), " and ", h.sizes());
  const at::Tensor xc = x.contiguous(), hc = h.contiguous();
  at::Tensor sum = at::empty_like(xc), y = at::empty_like(xc);
  rms_norm_dispatch(xc, hc, sum, weight.contiguous(), y, eps);
  return {sum, y};
}

// RoPE in place (rope.py): x * cos + rotate_half(x) * sin, with rotate_half(x) = cat(-x2, x1); each product and the
// sum rounded to the dtype as the eager ops do. x [B, H, T, D] (any strides, contiguous rows), cos/sin [B, T, D].
template <typename T>
void rope_rows(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  const int64_t B = x.size(0), H = x.size(1), T_ = x.size(2), D = x.size(3);
  const int64_t sb = x.stride(0), sh = x.stride(1), st = x.stride(2);
  T* xp = x.data_ptr<T>();
  const T* cp = cos.data_ptr<T>();
  const T* sp = sin.data_ptr<T>();
  at::parallel_for(0, B * H * T_, grain_rows(D), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t b = i / (H * T_), h = i / T_ % H, t = i % T_;
      T* row = xp + b * sb + h * sh + t * st;
      lmforge::rope_row(row, row, cp + (b * T_ + t) * D, sp + (b * T_ + t) * D, D);
    }
  });
}

void rope_(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  TORCH_CHECK(x.dim() == 4 && x.stride(3) == 1 && x.size(3) % 2 == 0,
              "rope_: x [B, H, T, D] with contiguous rows and an even D, got ", x.sizes(), " strides ", x.strides());
  TORCH_CHECK(cos.dim() == 3 && cos.sizes() == sin.sizes() && cos.size(0) == x.size(0) && cos.size(1) == x.size(2) &&
                  cos.size(2) == x.size(3) && cos.is_contiguous() && sin.is_contiguous(),
              "rope_: cos and sin must be contiguous [B, T, D] matching x ", x.sizes(), ", got ", cos.sizes());
  TORCH_CHECK(x.scalar_type() == cos.scalar_type() && x.scalar_type() == sin.scalar_type(),
              "rope_: x, cos and sin need one dtype");
  if (x.scalar_type() == at::kFloat) {
    rope_rows<float>(x, cos, sin);
  } else {
    TORCH_CHECK(x.scalar_type() == at::kBFloat16, "rope_ supports float32 and bfloat16, not ", x.scalar_type());
    rope_rows<at::BFloat16>(x, cos, sin);
  }
}

// SwiGLU's activation on a fused gate/up projection (mlp.py): x [..., 2F] -> silu(x[..., :F]) * x[..., F:]
// (norm_row.h's silu_mul_row per row).
template <typename T>
void silu_mul_rows(const T* x, T* y, int64_t rows, int64_t F) {
  at::parallel_for(0, rows, grain_rows(2 * F), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) lmforge::silu_mul_row(x + r * 2 * F, y + r * F, F);
  });
}

at::Tensor silu_mul(const at::Tensor& x) {
  TORCH_CHECK(x.dim() >= 1 && x.size(-1) % 2 == 0, "silu_mul: x [..., 2F], got ", x.sizes());
  const at::Tensor xc = x.contiguous();
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  const int64_t F = shape.back() / 2;
  shape.back() = F;
  at::Tensor y = at::empty(shape, x.options());
  const int64_t rows = F == 0 ? 0 : xc.numel() / (2 * F);
  if (x.scalar_type() == at::kFloat) {
    silu_mul_rows(xc.data_ptr<float>(), y.data_ptr<float>(), rows, F);
  } else {
    TORCH_CHECK(x.scalar_type() == at::kBFloat16, "silu_mul supports float32 and bfloat16, not ", x.scalar_type());
    silu_mul_rows(xc.data_ptr<at::BFloat16>(), y.data_ptr<at::BFloat16>(), rows, F);
  }
  return y;
}

// Each row's argmax, as torch.argmax(x, -1) returns it: the first index of the largest value, or of the first NaN
// if the row has one. Two vector passes over the row (its maximum, then where it first occurs); torch's own CPU
// argmax measured 260 us for 18 rows of a 49,152-token vocabulary on 2 cores, this one 32 us.
int64_t argmax_row(const float* x, int64_t V) {
  const int64_t W = Vec::size(), Vv = V - V % W;
  const Vec lowest(-std::numeric_limits<float>::infinity());
  Vec best[4] = {lowest, lowest, lowest, lowest};  // four chains, so that each maximum need not wait for the last
  int64_t i = 0;
  for (; i + 4 * W <= Vv; i += 4 * W)
    for (int64_t j = 0; j < 4; ++j) best[j] = at::vec::maximum(best[j], Vec::loadu(x + i + j * W));  // NaN propagates
  for (; i < Vv; i += W) best[0] = at::vec::maximum(best[0], Vec::loadu(x + i));
  const Vec all = at::vec::maximum(at::vec::maximum(best[0], best[1]), at::vec::maximum(best[2], best[3]));
  float top = at::vec::vec_reduce_all<float>([](Vec& a, Vec& b) { return at::vec::maximum(a, b); }, all);
  for (i = Vv; i < V; ++i) top = (std::isnan(x[i]) || x[i] > top) ? x[i] : top;
  if (std::isnan(top)) {
    for (i = 0; i < V; ++i)
      if (std::isnan(x[i])) return i;
  }
  for (i = 0; i < Vv; i += W)
    if ((Vec::loadu(x + i) == Vec(top)).zero_mask() != (1 << W) - 1) break;  // a lane equals the maximum
  for (; i < V; ++i)
    if (x[i] == top) return i;
  return V - 1;  // not reached: the maximum is one of the values
}

at::Tensor argmax_rows(const at::Tensor& x) {
  TORCH_CHECK(x.dim() == 2 && x.size(1) > 0 && x.scalar_type() == at::kFloat,
              "argmax_rows: float32 [rows, V] with V > 0, got ", x.scalar_type(), " ", x.sizes());
  const at::Tensor xc = x.contiguous();
  const int64_t rows = xc.size(0), V = xc.size(1);
  at::Tensor out = at::empty({rows}, x.options().dtype(at::kLong));
  const float* xp = xc.data_ptr<float>();
  int64_t* op = out.data_ptr<int64_t>();
  at::parallel_for(0, rows, grain_rows(V), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) op[r] = argmax_row(xp + r * V, V);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(lmforge, m) {
  m.def("rms_norm(Tensor x, Tensor weight, float eps) -> Tensor");
  m.def("add_rms_norm(Tensor x, Tensor h, Tensor weight, float eps) -> (Tensor, Tensor)");
  m.def("rope_(Tensor(a!) x, Tensor cos, Tensor sin) -> ()");
  m.def("silu_mul(Tensor x) -> Tensor");
  m.def("argmax_rows(Tensor x) -> Tensor");
}

TORCH_LIBRARY_IMPL(lmforge, CPU, m) {
  m.impl("rms_norm", &rms_norm);
  m.impl("add_rms_norm", &add_rms_norm);
  m.impl("rope_", &rope_);
  m.impl("silu_mul", &silu_mul);
  m.impl("argmax_rows", &argmax_rows);
}
