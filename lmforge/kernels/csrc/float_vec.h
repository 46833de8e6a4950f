// Loads, stores and rounding between float32 / bfloat16 memory and ATen's Vectorized<float> registers, shared by the
// kernels of this directory. Arithmetic is done in float32; bfloat16 results are rounded to nearest even, as
// PyTorch's own CPU kernels do.
#pragma once

#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

namespace lmforge {

using Vec = at::vec::Vectorized<float>;

inline Vec load(const float* p) { return Vec::loadu(p); }
inline Vec load(const at::BFloat16* p) {
  Vec out;
  at::vec::load_to_float(p, out);
  return out;
}

inline void store(float* p, const Vec& v) { v.store(p); }
inline void store(at::BFloat16* p, const Vec& v) {
  at::vec::convert_from_float<at::BFloat16>(v, v).store(p, Vec::size());
}

// v as it would be after a round trip through T's precision (what an eager op producing a T tensor leaves).
template <typename T>
inline Vec round_to(const Vec& v) {
  if constexpr (std::is_same_v<T, float>) {
    return v;
  } else {
    return std::get<0>(at::vec::convert_to_float<T>(at::vec::convert_from_float<T>(v, v)));
  }
}

template <typename T>
inline float round_to(float v) {
  return static_cast<float>(static_cast<T>(v));
}

}  // namespace lmforge
