// Decode attention straight from the paged KV cache, on CPU.
//
// One query token per sequence attends to its own cached keys and values, which lie in fixed-size blocks of a
// shared pool; each sequence names its blocks in a block table. The pure-PyTorch path (lmforge/engine/paged_cache.py)
// first copies every sequence's blocks into a contiguous buffer, then runs batched matmuls over it: the copy moves
// the whole cache through memory once more per step. Here each (sequence, KV head) task reads its blocks in place,
// once for the scores and once for the values, in float32 arithmetic (the softmax too, as the PyTorch path does).
// The query heads that share a KV head (grouped-query attention) are handled together, so each key and value row is
// read from memory once per group.
//
// Vectorised with ATen's Vectorized<float> (AVX-512, AVX2 or plain C++, chosen when lmforge/engine/cpu_kernels.py
// builds this file for the machine). Registered as torch.ops.lmforge.paged_decode_attention and checked against a
// float64 computation and the PyTorch path in tests/unit/engine/test_cpu_kernels.py.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <numeric>
#include <type_traits>
#include <vector>

namespace {

using Vec = at::vec::Vectorized<float>;

inline Vec load(const float* p) { return Vec::loadu(p); }
inline Vec load(const at::BFloat16* p) {
  Vec out;
  at::vec::load_to_float(p, out);
  return out;
}

// Blocks lie anywhere in the pool, so the hardware prefetcher, which follows address streams, cannot guess the jump
// to the next one: ask for it while this one is computed (measured 1.5x faster for a whole decode attention).
template <typename T>
inline void prefetch(const T* p, int64_t count) {
  const char* bytes = reinterpret_cast<const char*>(p);
  for (int64_t off = 0; off < count * static_cast<int64_t>(sizeof(T)); off += 64) __builtin_prefetch(bytes + off);
}

// Horizontal sums of W = Vec::size() vectors at once: out[i] = sum of the lanes of v[i]. Each level adds the even
// and odd lanes of neighbouring pairs, halving the lanes per vector: log2(W) levels of W/2, W/4, ... shuffles+adds
// instead of W separate reductions. v is overwritten.
inline Vec sum_lanes(Vec* v) {
  for (int64_t n = Vec::size(); n > 1; n /= 2) {
    for (int64_t i = 0; i < n / 2; ++i) {
      auto [even, odd] = at::vec::deinterleave2(v[2 * i], v[2 * i + 1]);
      v[i] = even + odd;
    }
  }
  return v[0];
}

constexpr int64_t kMaxChunks = 32;  // head width up to 32 * Vec::size()

struct Scratch {  // per thread
  std::vector<float> block, scores, acc;  // a block of keys or values in float32 [block_size * D], [G * L], [G * D]
  std::vector<Vec> partial;  // [Vec::size()]
};

// A block's n rows of keys or values as float32: float32 pools are read in place, others converted once into dst.
template <typename T>
inline const float* as_float(const T* src, int64_t n, int64_t D, float* dst) {
  if constexpr (std::is_same_v<T, float>) {
    return src;
  } else {
    for (int64_t j = 0; j < n * D; j += Vec::size()) load(src + j).store(dst + j);
    return dst;
  }
}

// One (sequence, KV head) task: G query heads (q_head apart) attend to the L entries `table` names. C_ > 0 fixes
// the number of vectors per row (D / Vec::size()) at compile time, so that a row's accumulators stay in registers.
template <typename T, int64_t C_>
void attend_one(const T* q, int64_t q_head, const T* keys, const T* values, const int64_t* table, int64_t L,
                int64_t block_size, int64_t G, int64_t D, float scale, T* out, int64_t o_head, Scratch& w) {
  constexpr int64_t W = Vec::size();
  const int64_t C = C_ > 0 ? C_ : D / W, block_len = block_size * D;
  float* buffer = w.block.data();
  Vec* partial = w.partial.data();
  w.scores.resize(G * L);
  float* s = w.scores.data();  // s[g * L + t]
  Vec reg[C_ > 0 ? C_ : kMaxChunks];

  for (int64_t blk = 0, t0 = 0; t0 < L; ++blk, t0 += block_size) {  // scores: s[g, t] = (q_g * scale) . k_t
    const int64_t n = std::min(block_size, L - t0);
    if (t0 + block_size < L) prefetch(keys + table[blk + 1] * block_len, block_len);
    const float* k_rows = as_float(keys + table[blk] * block_len, n, D, buffer);
    for (int64_t g = 0; g < G; ++g) {
      for (int64_t c = 0; c < C; ++c) reg[c] = load(q + g * q_head + c * W) * Vec(scale);
      int64_t i = 0;
      for (; i + W <= n; i += W) {  // W keys at a time, summed together
        for (int64_t j = 0; j < W; ++j) {
          const float* k = k_rows + (i + j) * D;
          Vec dot = reg[0] * Vec::loadu(k);
          for (int64_t c = 1; c < C; ++c) dot = at::vec::fmadd(reg[c], Vec::loadu(k + c * W), dot);
          partial[j] = dot;
        }
        sum_lanes(partial).store(s + g * L + t0 + i);
      }
      for (; i < n; ++i) {  // the rest one by one
        const float* k = k_rows + i * D;
        Vec dot = reg[0] * Vec::loadu(k);
        for (int64_t c = 1; c < C; ++c) dot = at::vec::fmadd(reg[c], Vec::loadu(k + c * W), dot);
        s[g * L + t0 + i] = at::vec::vec_reduce_all<float>([](Vec& a, Vec& b) { return a + b; }, dot);
      }
    }
  }
  for (int64_t g = 0; g < G; ++g) {  // softmax over t, in place
    float* sg = s + g * L;
    const float top = at::vec::reduce_all<float>([](Vec& a, Vec& b) { return at::vec::maximum(a, b); }, sg, L);
    at::vec::map([top](Vec x) { return (x - Vec(top)).exp_u20(); }, sg, sg, L);
    const float inv = 1.f / at::vec::reduce_all<float>([](Vec& a, Vec& b) { return a + b; }, sg, L);
    at::vec::map([inv](Vec x) { return x * Vec(inv); }, sg, sg, L);
  }
  float* acc = w.acc.data();
  std::fill(acc, acc + G * D, 0.f);
  for (int64_t blk = 0, t0 = 0; t0 < L; ++blk, t0 += block_size) {  // values: acc[g] = sum_t p[g, t] * v_t
    const int64_t n = std::min(block_size, L - t0);
    if (t0 + block_size < L) prefetch(values + table[blk + 1] * block_len, block_len);
    const float* v_rows = as_float(values + table[blk] * block_len, n, D, buffer);
    for (int64_t g = 0; g < G; ++g) {
      for (int64_t c = 0; c < C; ++c) reg[c] = Vec::loadu(acc + g * D + c * W);
      for (int64_t i = 0; i < n; ++i) {
        const Vec p(s[g * L + t0 + i]);
        for (int64_t c = 0; c < C; ++c) reg[c] = at::vec::fmadd(p, Vec::loadu(v_rows + i * D + c * W), reg[c]);
      }
      for (int64_t c = 0; c < C; ++c) reg[c].store(acc + g * D + c * W);
    }
  }
  for (int64_t g = 0; g < G; ++g)
    for (int64_t d = 0; d < D; ++d) out[g * o_head + d] = static_cast<T>(acc[g * D + d]);
}

template <typename T>
void decode_attention(const at::Tensor& q, const at::Tensor& k_pool, const at::Tensor& v_pool,
                      const at::Tensor& rows, const at::Tensor& tables, const at::Tensor& lengths,
                      int64_t block_size, double scale, const at::Tensor& out) {
  const int64_t H = q.size(0), D = q.size(2), H_kv = k_pool.size(0), B = rows.size(0), M = tables.size(1);
  const int64_t G = H / H_kv, C = D / Vec::size();
  const int64_t q_head = q.stride(0), q_tok = q.stride(1), o_head = out.stride(0), o_tok = out.stride(1);
  const int64_t pool_head = k_pool.stride(0);  // k_pool and v_pool share a shape and are contiguous
  const T* qp = q.data_ptr<T>();
  const T* kp = k_pool.data_ptr<T>();
  const T* vp = v_pool.data_ptr<T>();
  T* op = out.data_ptr<T>();
  const int64_t* row_p = rows.data_ptr<int64_t>();
  const int64_t* table_p = tables.data_ptr<int64_t>();
  const int64_t* len_p = lengths.data_ptr<int64_t>();

  const int64_t num_blocks = k_pool.size(1) / block_size;
  for (int64_t b = 0; b < B; ++b) {  // never read outside the pool, whatever the caller passes
    TORCH_CHECK(len_p[b] >= 1 && len_p[b] <= M * block_size, "row ", b, ": length ", len_p[b], " outside 1..",
                M * block_size);
    for (int64_t blk = 0; blk < (len_p[b] + block_size - 1) / block_size; ++blk)
      TORCH_CHECK(table_p[b * M + blk] >= 0 && table_p[b * M + blk] < num_blocks, "row ", b, ": block id ",
                  table_p[b * M + blk], " outside the pool of ", num_blocks);
  }

  // Tasks (sequence, KV head), longest sequences first, handed out one at a time: lengths vary widely, and an even
  // split of the list would leave a thread idle.
  std::vector<int64_t> order(B);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return len_p[a] > len_p[b]; });
  std::atomic<int64_t> next{0};
  auto* one = C == 4 ? &attend_one<T, 4> : C == 8 ? &attend_one<T, 8> : &attend_one<T, 0>;
  at::parallel_for(0, at::get_num_threads(), 1, [&](int64_t, int64_t) {
    Scratch w{std::vector<float>(block_size * D), {}, std::vector<float>(G * D), std::vector<Vec>(Vec::size())};
    for (int64_t task = next++; task < B * H_kv; task = next++) {
      const int64_t b = order[task / H_kv], kvh = task % H_kv, tok = row_p[b];
      one(qp + kvh * G * q_head + tok * q_tok, q_head, kp + kvh * pool_head, vp + kvh * pool_head,
                 table_p + b * M, len_p[b], block_size, G, D, static_cast<float>(scale),
                 op + kvh * G * o_head + tok * o_tok, o_head, w);
    }
  });
}

void paged_decode_attention(const at::Tensor& q, const at::Tensor& k_pool, const at::Tensor& v_pool,
                            const at::Tensor& rows, const at::Tensor& tables, const at::Tensor& lengths,
                            int64_t block_size, double scale, const at::Tensor& out) {
  TORCH_CHECK(q.dim() == 3 && out.dim() == 3 && k_pool.dim() == 3, "q/out [H, N, D] and pools [H_kv, slots, D]");
  TORCH_CHECK(q.stride(2) == 1 && out.stride(2) == 1, "q and out need a contiguous last dimension");
  TORCH_CHECK(k_pool.is_contiguous() && v_pool.is_contiguous() && k_pool.sizes() == v_pool.sizes(),
              "the key and value pools must be contiguous and of one shape");
  TORCH_CHECK(q.size(0) % k_pool.size(0) == 0 && q.size(2) == k_pool.size(2), "head counts or widths disagree");
  TORCH_CHECK(q.size(2) % Vec::size() == 0 && q.size(2) <= kMaxChunks * Vec::size(),
              "the head width must be a multiple of ", Vec::size(), " up to ", kMaxChunks * Vec::size());
  TORCH_CHECK(q.scalar_type() == k_pool.scalar_type() && q.scalar_type() == v_pool.scalar_type() &&
                  q.scalar_type() == out.scalar_type(),
              "dtypes disagree");
  TORCH_CHECK(rows.scalar_type() == at::kLong && tables.scalar_type() == at::kLong &&
                  lengths.scalar_type() == at::kLong && rows.is_contiguous() && tables.is_contiguous() &&
                  lengths.is_contiguous(),
              "rows, tables and lengths must be contiguous int64");
  TORCH_CHECK(tables.dim() == 2 && tables.size(0) == rows.size(0) && lengths.size(0) == rows.size(0),
              "one block table and length per row");
  TORCH_CHECK(block_size >= 1 && k_pool.size(1) % block_size == 0, "the pools hold whole blocks");
  if (q.scalar_type() == at::kFloat) {
    decode_attention<float>(q, k_pool, v_pool, rows, tables, lengths, block_size, scale, out);
  } else if (q.scalar_type() == at::kBFloat16) {
    decode_attention<at::BFloat16>(q, k_pool, v_pool, rows, tables, lengths, block_size, scale, out);
  } else {
    TORCH_CHECK(false, "paged_decode_attention supports float32 and bfloat16, not ", q.scalar_type());
  }
}

}  // namespace

TORCH_LIBRARY(lmforge, m) {
  m.def("paged_decode_attention(Tensor q, Tensor k_pool, Tensor v_pool, Tensor rows, Tensor tables, "
        "Tensor lengths, int block_size, float scale, Tensor(a!) out) -> ()");
}

TORCH_LIBRARY_IMPL(lmforge, CPU, m) { m.impl("paged_decode_attention", &paged_decode_attention); }
