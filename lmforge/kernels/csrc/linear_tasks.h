// The task loop shared by lmforge's linear kernels (linear_bf16.cpp, linear_f32.cpp, linear_int8.cpp,
// linear_int4.cpp): y [..., width] for x [..., K] from a weight packed in blocks of out_per_block outputs, each
// `block_bytes` of it. Tasks are the blocks, split over the threads; each runs its rows in passes of up to `rows` (the
// accumulators a pass keeps in registers):
// block(rows in the pass, their first x row, block index, the block's float32 bias or null, its first output).
// A thread is given at least kThreadWork bytes of weights times rows (half a megabyte: 15-25 us of one core's
// stream): below that, waking it costs about what it saves on an idle machine, and on a loaded one a parallel region
// can wait milliseconds for its second thread (measured at load 13 on 2 cores, one 576 x 576 int8 layer at one row:
// 38 us median on one thread, 197 us split over two). So a decode step's small layers (SmolLM2's 576 x 576 o_proj:
// 0.2 MB int4, 0.3 MB int8) run on the calling thread, and the larger ones on at most one thread per half megabyte.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace lmforge {

constexpr int64_t kThreadWork = 512 * 1024;

// The tasks of one call on raw pointers: y [M, width] for x [M, K] (contiguous), bias bp (float32, or null).
template <typename T, typename Block, typename Y = T>
void linear_blocks_into(const T* xp, int64_t M, int64_t K, int64_t blocks, int64_t out_per_block, int64_t rows,
                        int64_t width, int64_t written_per_block, const float* bp, Y* yp, int64_t block_bytes,
                        Block& block) {
  const int64_t grain = std::max<int64_t>(1, kThreadWork / std::max<int64_t>(1, block_bytes * M));
  at::parallel_for(0, blocks, grain, [&](int64_t b0, int64_t b1) {
    for (int64_t nb = b0; nb < b1; ++nb)
      for (int64_t m0 = 0; m0 < M; m0 += rows)
        block(std::min(rows, M - m0), xp + m0 * K, nb, bp ? bp + nb * out_per_block : nullptr,
              yp + m0 * width + nb * written_per_block);
  });
}

// One row's tasks (a decode step's), blocks taken two at a time from the two halves of a thread's range: pair(a, b)
// computes blocks a and b together, one(b) a block alone (an odd one out). One core reads two streams of memory
// faster than one (Zen 5, one thread: a sum over two halves of 1 GiB 38-40 GB/s against 34 over one; SmolLM2's
// gate/up and head, bf16: 39-41 against 34-38 GB/s with the blocks one by one).
template <typename Pair, typename One>
void for_block_pairs(int64_t blocks, int64_t block_bytes, Pair& pair, One& one) {
  const int64_t grain = std::max<int64_t>(1, kThreadWork / std::max<int64_t>(1, block_bytes));
  at::parallel_for(0, blocks, grain, [&](int64_t b0, int64_t b1) {
    const int64_t half = (b1 - b0) / 2;
    for (int64_t i = 0; i < half; ++i) pair(b0 + i, b0 + half + i);
    if ((b1 - b0) % 2) one(b1 - 1);
  });
}

// One row's tasks for the quantized kernels: blocks four at a time from the four quarters of a thread's range (four
// streams of codes; their compute per byte is higher than the float kernels', and the fourth stream still paid on
// Zen 5: SmolLM2's int4 projections from a cold cache 1.95-2.12 ms two at a time, 1.77-1.92 four at a time), then two,
// then one: run(a, b, c, d), run(a, b), run(a) (a generic lambda).
template <typename Run>
void for_block_quads(int64_t blocks, int64_t block_bytes, Run& run) {
  const int64_t grain = std::max<int64_t>(1, kThreadWork / std::max<int64_t>(1, block_bytes));
  at::parallel_for(0, blocks, grain, [&](int64_t b0, int64_t b1) {
    const int64_t q = (b1 - b0) / 4;
    for (int64_t i = b0; i < b0 + q; ++i) run(i, i + q, i + 2 * q, i + 3 * q);
    int64_t nb = b0 + 4 * q;
    if (b1 - nb >= 2) {
      run(nb, nb + 1);
      nb += 2;
    }
    if (nb < b1) run(nb);
  });
}

// T: the input's element type; Y: the output's (T, or float for float32 results of bf16 inputs).
template <typename T, typename Block, typename Y = T>
at::Tensor linear_by_blocks(const at::Tensor& x, int64_t K, int64_t blocks, int64_t out_per_block, int64_t rows,
                            int64_t width, int64_t written_per_block, const at::Tensor& bias, int64_t block_bytes,
                            Block block) {
  const at::Tensor xc = x.contiguous();
  const int64_t M = K == 0 ? 0 : xc.numel() / K;
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = width;
  at::Tensor y = at::empty(shape, x.options().dtype(c10::CppTypeToScalarType<Y>::value));
  linear_blocks_into<T, Block, Y>(xc.data_ptr<T>(), M, K, blocks, out_per_block, rows, width, written_per_block,
                                  bias.defined() ? bias.data_ptr<float>() : nullptr, y.data_ptr<Y>(), block_bytes,
                                  block);
  return y;
}

}  // namespace lmforge
