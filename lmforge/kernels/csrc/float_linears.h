// The float linear kernels (linear_bf16.cpp, linear_f32.cpp) on raw pointers, for kernels that chain several
// projections in one call (decode_stack.cpp) without an operator call or an output tensor per projection:
// y [M, width] = x [M, K] W^T (+ bias) from a weight packed by pack_linear_bf16 / pack_linear_f32, or with `gated`
// silu(x gate^T) * (x up^T) [M, hidden] from a gated packing (as silu_gated_linear_bf16 / _f32). The sums are those
// of the operators (same kernels, same order). `bias`: float32 in the order the kernel reads it (kernel_bias), or
// null.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace lmforge {

void linear_bf16_into(const at::BFloat16* x, int64_t M, const at::Tensor& packed, const float* bias, at::BFloat16* y,
                      int64_t width, bool gated);
void linear_f32_into(const float* x, int64_t M, const at::Tensor& packed, const float* bias, float* y, int64_t width,
                     bool gated);

// A linear's bias as its kernel reads it: float32, and for a gated float32 weight reordered like its rows.
at::Tensor kernel_bias(const at::Tensor& bias, const at::Tensor& packed, bool gated);

}  // namespace lmforge
