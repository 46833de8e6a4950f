// Paged attention straight from the KV cache, on CPU, for decoding rows and prompt chunks alike.
//
// Every sequence's cached keys and values lie in fixed-size blocks of a shared pool, named by its block table. The
// pure-PyTorch path (lmforge/engine/paged_cache.py) first copies each decoding sequence's blocks into a contiguous
// buffer, then runs batched matmuls over it: the copy moves the whole cache through memory once more per step. Here
// each task reads its blocks in place, once for the scores and once for the values; the softmax and the weighted sum
// of the values are float32 (as the PyTorch path computes them).
//
// The tiles of query rows and their tasks are attention_tiles.h's (shared with cached_attention.cpp). Registered as
// torch.ops.lmforge.paged_attention and checked against a float64 computation and the PyTorch path in
// tests/unit/kernels/test_paged_attention.py.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cstdint>

#include "attention_tiles.h"

namespace {

using lmforge::Vec;
using lmforge::tiles::kMaxChunks;

template <typename T>
void attend(const at::Tensor& q, const at::Tensor& k_pool, const at::Tensor& v_pool, const at::Tensor& first,
            const at::Tensor& rows, const at::Tensor& tables, const at::Tensor& lengths, int64_t block_size,
            double scale, const at::Tensor& out) {
  const int64_t H = q.size(0), N = q.size(1), D = q.size(2), H_kv = k_pool.size(0), B = first.size(0);
  const int64_t M = tables.size(1);
  const int64_t* first_p = first.data_ptr<int64_t>();
  const int64_t* rows_p = rows.data_ptr<int64_t>();
  const int64_t* table_p = tables.data_ptr<int64_t>();
  const int64_t* len_p = lengths.data_ptr<int64_t>();

  const int64_t num_blocks = k_pool.size(1) / block_size;
  for (int64_t b = 0; b < B; ++b) {  // never read or write outside the tensors, whatever the caller passes
    const int64_t longest = len_p[b] + rows_p[b] - 1;
    TORCH_CHECK(rows_p[b] >= 1 && first_p[b] >= 0 && first_p[b] + rows_p[b] <= N, "tile ", b, ": tokens ",
                first_p[b], "..", first_p[b] + rows_p[b] - 1, " outside 0..", N - 1);
    TORCH_CHECK(len_p[b] >= 1 && longest <= M * block_size, "tile ", b, ": lengths ", len_p[b], "..", longest,
                " outside 1..", M * block_size);
    for (int64_t blk = 0; blk < (longest + block_size - 1) / block_size; ++blk)
      TORCH_CHECK(table_p[b * M + blk] >= 0 && table_p[b * M + blk] < num_blocks, "tile ", b, ": block id ",
                  table_p[b * M + blk], " outside the pool of ", num_blocks);
  }
  // k_pool and v_pool share a shape and are contiguous
  lmforge::tiles::attend_tiles(q.data_ptr<T>(), q.stride(0), q.stride(1), k_pool.data_ptr<T>(), v_pool.data_ptr<T>(),
                               k_pool.stride(0), first_p, rows_p, table_p, M, len_p, B, H, H_kv, D, block_size,
                               static_cast<float>(scale), out.data_ptr<T>(), out.stride(0), out.stride(1));
}

void paged_attention(const at::Tensor& q, const at::Tensor& k_pool, const at::Tensor& v_pool, const at::Tensor& first,
                     const at::Tensor& rows, const at::Tensor& tables, const at::Tensor& lengths, int64_t block_size,
                     double scale, const at::Tensor& out) {
  TORCH_CHECK(q.dim() == 3 && out.dim() == 3 && k_pool.dim() == 3, "q/out [H, N, D] and pools [H_kv, slots, D]");
  TORCH_CHECK(q.sizes() == out.sizes() && q.stride(2) == 1 && out.stride(2) == 1,
              "q and out need one shape and a contiguous last dimension");
  TORCH_CHECK(k_pool.is_contiguous() && v_pool.is_contiguous() && k_pool.sizes() == v_pool.sizes(),
              "the key and value pools must be contiguous and of one shape");
  TORCH_CHECK(q.size(0) % k_pool.size(0) == 0 && q.size(2) == k_pool.size(2), "head counts or widths disagree");
  TORCH_CHECK(q.size(2) % Vec::size() == 0 && q.size(2) <= kMaxChunks * Vec::size(),
              "the head width must be a multiple of ", Vec::size(), " up to ", kMaxChunks * Vec::size());
  TORCH_CHECK(q.scalar_type() == k_pool.scalar_type() && q.scalar_type() == v_pool.scalar_type() &&
                  q.scalar_type() == out.scalar_type(),
              "dtypes disagree");
  for (const at::Tensor* t : {&first, &rows, &tables, &lengths})
    TORCH_CHECK(t->scalar_type() == at::kLong && t->is_contiguous(), "first, rows, tables, lengths: contiguous int64");
  TORCH_CHECK(tables.dim() == 2 && tables.size(0) == first.size(0) && rows.size(0) == first.size(0) &&
                  lengths.size(0) == first.size(0),
              "one first token, row count, block table and length per tile");
  TORCH_CHECK(block_size >= 1 && k_pool.size(1) % block_size == 0, "the pools hold whole blocks");
  if (q.scalar_type() == at::kFloat) {
    attend<float>(q, k_pool, v_pool, first, rows, tables, lengths, block_size, scale, out);
  } else if (q.scalar_type() == at::kBFloat16) {
    attend<at::BFloat16>(q, k_pool, v_pool, first, rows, tables, lengths, block_size, scale, out);
  } else {
    TORCH_CHECK(false, "paged_attention supports float32 and bfloat16, not ", q.scalar_type());
  }
}

// The step's new keys and values into their slots: pool[:, slots[n]] = new[:, n] for both pools (what an index_put
// does, in one call for both and without its checks and temporaries: ~18 us -> ~2 us per layer at decode).
template <typename T>
void write_pairs(T* k_pool, T* v_pool, const at::Tensor& k, const at::Tensor& v, const int64_t* slots,
                 int64_t slots_per_head) {
  const int64_t H = k.size(0), N = k.size(1), D = k.size(2);
  const T* kp = k.data_ptr<T>();
  const T* vp = v.data_ptr<T>();
  for (int64_t h = 0; h < H; ++h)
    for (int64_t n = 0; n < N; ++n) {
      const int64_t dst = (h * slots_per_head + slots[n]) * D;
      std::copy_n(kp + h * k.stride(0) + n * k.stride(1), D, k_pool + dst);
      std::copy_n(vp + h * v.stride(0) + n * v.stride(1), D, v_pool + dst);
    }
}

void write_kv(const at::Tensor& k_pool, const at::Tensor& v_pool, const at::Tensor& k, const at::Tensor& v,
              const at::Tensor& slots) {
  TORCH_CHECK(k_pool.dim() == 3 && k_pool.is_contiguous() && v_pool.is_contiguous() &&
                  k_pool.sizes() == v_pool.sizes(),
              "write_kv: the pools must be contiguous [H_kv, slots, D] of one shape");
  TORCH_CHECK(k.dim() == 3 && k.sizes() == v.sizes() && k.stride(2) == 1 && v.stride(2) == 1 &&
                  k.size(0) == k_pool.size(0) && k.size(2) == k_pool.size(2),
              "write_kv: k and v must be [H_kv, N, D] alike, with contiguous rows, matching the pools");
  TORCH_CHECK(slots.dim() == 1 && slots.scalar_type() == at::kLong && slots.is_contiguous() && slots.size(0) == k.size(1),
              "write_kv: slots must be contiguous int64 [N]");
  TORCH_CHECK(k.scalar_type() == k_pool.scalar_type() && v.scalar_type() == k_pool.scalar_type() &&
                  v_pool.scalar_type() == k_pool.scalar_type(),
              "write_kv: dtypes disagree");
  const int64_t S = k_pool.size(1), N = k.size(1);
  const int64_t* sp = slots.data_ptr<int64_t>();
  for (int64_t n = 0; n < N; ++n)
    TORCH_CHECK(sp[n] >= 0 && sp[n] < S, "write_kv: slot ", sp[n], " outside the pool of ", S);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, k.scalar_type(), "write_kv", [&] {
    write_pairs(k_pool.data_ptr<scalar_t>(), v_pool.data_ptr<scalar_t>(), k, v, sp, S);
  });
}

}  // namespace

TORCH_LIBRARY(lmforge, m) {
  m.def("paged_attention(Tensor q, Tensor k_pool, Tensor v_pool, Tensor first, Tensor rows, Tensor tables, "
        "Tensor lengths, int block_size, float scale, Tensor(a!) out) -> ()");
  m.def("write_kv(Tensor(a!) k_pool, Tensor(b!) v_pool, Tensor k, Tensor v, Tensor slots) -> ()");
}

TORCH_LIBRARY_IMPL(lmforge, CPU, m) {
  m.impl("paged_attention", &paged_attention);
  m.impl("write_kv", &write_kv);
}
