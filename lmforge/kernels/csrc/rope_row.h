// RoPE of one head's row (lmforge/model/rope.py, the "rotate half" layout): dst = x * cos + rotate_half(x) * sin,
// with rotate_half(x) = cat(-x2, x1), each product and the sum rounded to T where the eager ops round them (bfloat16
// results bit for bit). Shared by fused_ops.cpp's rope_ and cached_attention.cpp; dst may be src (in place).
#pragma once

#include <cstdint>

#include "float_vec.h"

namespace lmforge {

template <typename T>
inline void rope_row(const T* src, T* dst, const T* cos, const T* sin, int64_t D) {
  const int64_t half = D / 2, W = Vec::size(), hv = half - half % W;
  const T *x1 = src, *x2 = src + half, *c1 = cos, *s1 = sin, *c2 = cos + half, *s2 = sin + half;
  T *y1 = dst, *y2 = dst + half;
  for (int64_t d = 0; d < hv; d += W) {  // both halves' numbers are read before either is written
    const Vec a = load(x1 + d), z = load(x2 + d);
    store(y1 + d, round_to<T>(a * load(c1 + d)) - round_to<T>(z * load(s1 + d)));
    store(y2 + d, round_to<T>(z * load(c2 + d)) + round_to<T>(a * load(s2 + d)));
  }
  for (int64_t d = hv; d < half; ++d) {
    const float a = static_cast<float>(x1[d]), z = static_cast<float>(x2[d]);
    y1[d] = static_cast<T>(round_to<T>(a * static_cast<float>(c1[d])) - round_to<T>(z * static_cast<float>(s1[d])));
    y2[d] = static_cast<T>(round_to<T>(z * static_cast<float>(c2[d])) + round_to<T>(a * static_cast<float>(s2[d])));
  }
}

}  // namespace lmforge
