// One row of RMSNorm (lmforge/model/norms.py) and of a residual add, rounded where the eager ops round: shared by
// fused_ops.cpp's rms_norm / add_rms_norm and decode_stack.cpp.
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

}  // namespace lmforge
