// One row of RMSNorm (lmforge/model/norms.py), of a residual add and of SwiGLU's activation, rounded where the eager
// ops round: shared by fused_ops.cpp's rms_norm / add_rms_norm / silu_mul and decode_stack.cpp.
#pragma once

#include <cmath>
#include <cstdint>

#include "float_vec.h"

namespace lmforge {

// y = weight * to_dtype(x * rsqrt(mean(x^2) + eps)), x in float32.
template <typename T>
inline void rms_norm_row(const T* x, const T* weight, T* y, int64_t D, float eps) {
  const int64_t W = Vec::size(), Dv = D - D % W;
  Vec acc(0.f);
  for (int64_t d = 0; d < Dv; d += W) {
    Vec v = load(x + d);
    acc = at::vec::fmadd(v, v, acc);
  }
  float sum = at::vec::vec_reduce_all([](Vec& a, Vec& b) { return a + b; }, acc);
  for (int64_t d = Dv; d < D; ++d) sum += static_cast<float>(x[d]) * static_cast<float>(x[d]);
  const float scale = 1.f / std::sqrt(sum / static_cast<float>(D) + eps);
  for (int64_t d = 0; d < Dv; d += W) store(y + d, load(weight + d) * round_to<T>(load(x + d) * Vec(scale)));
  for (int64_t d = Dv; d < D; ++d)
    y[d] = static_cast<T>(static_cast<float>(weight[d]) * round_to<T>(static_cast<float>(x[d]) * scale));
}

// sum = to_dtype(x + h) (sum may be x).
template <typename T>
inline void add_row(const T* x, const T* h, T* sum, int64_t D) {
  const int64_t W = Vec::size(), Dv = D - D % W;
  for (int64_t d = 0; d < Dv; d += W) store(sum + d, load(x + d) + load(h + d));
  for (int64_t d = Dv; d < D; ++d) sum[d] = static_cast<T>(static_cast<float>(x[d]) + static_cast<float>(h[d]));
}

// SwiGLU's activation on one fused gate/up row (mlp.py): x [2F] -> y = silu(x[:F]) * x[F:], the SiLU rounded to
// the dtype before the product as the eager ops do.
template <typename T>
inline void silu_mul_row(const T* x, T* y, int64_t F) {
  const int64_t W = Vec::size(), Fv = F - F % W;
  const T* up = x + F;
  for (int64_t d = 0; d < Fv; d += W) {
    const Vec g = load(x + d);
    store(y + d, round_to<T>(g / (Vec(1.f) + g.neg().exp_u20())) * load(up + d));
  }
  for (int64_t d = Fv; d < F; ++d) {
    const float g = static_cast<float>(x[d]);
    y[d] = static_cast<T>(round_to<T>(g / (1.f + std::exp(-g))) * static_cast<float>(up[d]));
  }
}

}  // namespace lmforge
