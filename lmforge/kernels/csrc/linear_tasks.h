// The task loop shared by lmforge's linear kernels (linear_bf16.cpp, linear_f32.cpp): y [..., width] for x [..., K]
// from a weight packed in blocks of out_per_block outputs. Tasks are the blocks, split over the threads; each runs
// its rows in passes of up to `rows` (the accumulators a pass keeps in registers):
// block(rows in the pass, their first x row, block index, the block's float32 bias or null, its first output).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace lmforge {

// T: the input's element type; Y: the output's (T, or float for float32 results of bf16 inputs).
template <typename T, typename Block, typename Y = T>
at::Tensor linear_by_blocks(const at::Tensor& x, int64_t K, int64_t blocks, int64_t out_per_block, int64_t rows,
                            int64_t width, int64_t written_per_block, const at::Tensor& bias, Block block) {
  const at::Tensor xc = x.contiguous();
  const int64_t M = K == 0 ? 0 : xc.numel() / K;
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = width;
  at::Tensor y = at::empty(shape, x.options().dtype(c10::CppTypeToScalarType<Y>::value));
  const T* xp = xc.data_ptr<T>();
  const float* bp = bias.defined() ? bias.data_ptr<float>() : nullptr;
  Y* yp = y.data_ptr<Y>();
  at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t nb = b0; nb < b1; ++nb)
      for (int64_t m0 = 0; m0 < M; m0 += rows)
        block(std::min(rows, M - m0), xp + m0 * K, nb, bp ? bp + nb * out_per_block : nullptr,
              yp + m0 * width + nb * written_per_block);
  });
  return y;
}

}  // namespace lmforge
