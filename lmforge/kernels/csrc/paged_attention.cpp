// Paged attention straight from the KV cache, on CPU, for decoding rows and prompt chunks alike.
//
// Every sequence's cached keys and values lie in fixed-size blocks of a shared pool, named by its block table. The
// pure-PyTorch path (lmforge/engine/paged_cache.py) first copies each decoding sequence's blocks into a contiguous
// buffer, then runs batched matmuls over it: the copy moves the whole cache through memory once more per step. Here
// each task reads its blocks in place, once for the scores and once for the values, in float32 arithmetic (the
// softmax too, as the PyTorch path does).
//
// A task is one KV head of one "tile": up to a few consecutive query tokens of one sequence (a decoding sequence's
// new token, or a slice of a prompt chunk), row j of which attends to the first L0 + j cached entries (causal). The
// query heads that share the KV head (grouped-query attention) and the rows of the tile are handled together, so a
// block is read from memory and converted to float32 once per task, then used by all of them.
//
// Vectorised with ATen's Vectorized<float> (AVX-512, AVX2 or plain C++, chosen when lmforge/kernels/cpu_kernels.py
// builds this file for the machine). Registered as torch.ops.lmforge.paged_attention and checked against a float64
// computation and the PyTorch path in tests/unit/kernels/test_paged_attention.py.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <numeric>
#include <type_traits>
#include <vector>

#include "float_vec.h"

namespace {

using lmforge::load;
using lmforge::Vec;

// Blocks lie anywhere in the pool, so the hardware prefetcher, which follows address streams, cannot guess the jump
// to the next one: ask for it while this one is computed (measured 1.5x faster for a whole decode attention).
template <typename T>
inline void prefetch(const T* p, int64_t count) {
  const char* bytes = reinterpret_cast<const char*>(p);
  for (int64_t off = 0; off < count * static_cast<int64_t>(sizeof(T)); off += 64) __builtin_prefetch(bytes + off);
}

template <typename T>
inline void prefetch_l2(const T* p, int64_t count) {
  const char* bytes = reinterpret_cast<const char*>(p);
  for (int64_t off = 0; off < count * static_cast<int64_t>(sizeof(T)); off += 64) __builtin_prefetch(bytes + off, 0, 2);
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

// bfloat16 keys on a CPU with AVX512-BF16 (Zen 4/5, Cooper Lake and later): q . k by the bf16 dot-product
// instruction, 32 bf16 products per instruction summed in pairs straight into float32 lanes, reading the keys as
// they lie (no conversion pass). The products of two bf16 numbers are exact in float32, so the scores differ from
// the float32 path by the order of the sum only (the scale is applied to the sum instead of the query). Measured
// alone (18 decoding rows, 9/3 heads of 64, cache warm): 230 -> 192 us per layer. The values pass stays in float32:
// a bf16 version (keys interleaved in pairs, probabilities rounded to bf16) measured slower.
#if defined(CPU_CAPABILITY_AVX512) && defined(__AVX512BF16__)
constexpr bool kBf16Dot = true;
inline Vec dot_bf16(const at::BFloat16* q, const at::BFloat16* k, int64_t D) {
  __m512 acc = _mm512_setzero_ps();
  for (int64_t d = 0; d < D; d += 32)
    acc = _mm512_dpbf16_ps(acc, (__m512bh)_mm512_loadu_si512(q + d), (__m512bh)_mm512_loadu_si512(k + d));
  return Vec(acc);
}
#else
constexpr bool kBf16Dot = false;
inline Vec dot_bf16(const at::BFloat16*, const at::BFloat16*, int64_t) { return Vec(0.f); }
#endif

struct Scratch {  // per thread
  std::vector<float> block, query, scores, acc;  // a block of keys or values in float32 [block_size * D], then
                                                 // per tile [rows * G * D], [rows * G * L], [rows * G * D]
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

// One task: a tile of r query tokens (q_tok apart; heads q_head apart) and one KV head. Row j attends to the first
// L0 + j entries of `table`. C_ > 0 fixes the vectors per row (D / Vec::size()) at compile time, so that a row's
// accumulators stay in registers.
template <typename T, int64_t C_>
void attend_tile(const T* q, int64_t q_head, int64_t q_tok, const T* keys, const T* values, const int64_t* table,
                 int64_t L0, int64_t r, int64_t block_size, int64_t G, int64_t D, float scale, T* out,
                 int64_t o_head, int64_t o_tok, Scratch& w) {
  constexpr int64_t W = Vec::size();
  const int64_t C = C_ > 0 ? C_ : D / W, block_len = block_size * D, R = r * G, L = L0 + r - 1;
  auto length = [&](int64_t row) { return L0 + row / G; };  // row = j * G + g
  w.query.resize(R * D);
  w.acc.assign(R * D, 0.f);
  w.scores.resize(R * L);
  float* query = w.query.data();
  float* acc = w.acc.data();
  float* s = w.scores.data();  // s[row * L + t]
  float* buffer = w.block.data();
  Vec* partial = w.partial.data();
  Vec reg[C_ > 0 ? C_ : kMaxChunks];
  for (int64_t j = 0; j < r; ++j)
    for (int64_t g = 0; g < G; ++g)
      for (int64_t c = 0; c < C; ++c)
        (load(q + j * q_tok + g * q_head + c * W) * Vec(scale)).store(query + (j * G + g) * D + c * W);

  constexpr bool bf16_dot = kBf16Dot && std::is_same_v<T, at::BFloat16>;
  for (int64_t blk = 0, t0 = 0; t0 < L; ++blk, t0 += block_size) {  // scores: s[row, t] = (q_row * scale) . k_t
    const int64_t n = std::min(block_size, L - t0);
    if (t0 + block_size < L) prefetch(keys + table[blk + 1] * block_len, block_len);
    // Further ahead into L2 (more misses in flight than L1 keeps), for blocks that do not follow their predecessor in
    // memory: the hardware prefetcher streams through those that do, and extra prefetches only cost instructions.
    if (t0 + 4 * block_size < L && table[blk + 4] != table[blk + 3] + 1) {
      prefetch_l2(keys + table[blk + 4] * block_len, block_len);
      prefetch_l2(values + table[blk + 4] * block_len, block_len);
    }
    prefetch(values + table[blk] * block_len, block_len);  // read by the second pass: from cache then
    if constexpr (bf16_dot) {
      if (D % 32 == 0) {
        const T* k_rows = keys + table[blk] * block_len;
        for (int64_t row = 0; row < R; ++row) {
          const T* q_row = q + row / G * q_tok + row % G * q_head;
          const int64_t m = std::min(n, length(row) - t0);
          int64_t i = 0;
          for (; i + W <= m; i += W) {
            for (int64_t jj = 0; jj < W; ++jj) partial[jj] = dot_bf16(q_row, k_rows + (i + jj) * D, D);
            (sum_lanes(partial) * Vec(scale)).store(s + row * L + t0 + i);
          }
          for (; i < m; ++i)
            s[row * L + t0 + i] = scale * at::vec::vec_reduce_all<float>([](Vec& a, Vec& b) { return a + b; },
                                                                          dot_bf16(q_row, k_rows + i * D, D));
        }
        continue;
      }
    }
    const float* k_rows = as_float(keys + table[blk] * block_len, n, D, buffer);
    for (int64_t row = 0; row < R; ++row) {
      const int64_t m = std::min(n, length(row) - t0);  // keys this row sees in the block (causal)
      for (int64_t c = 0; c < C; ++c) reg[c] = Vec::loadu(query + row * D + c * W);
      int64_t i = 0;
      for (; i + W <= m; i += W) {  // W keys at a time, summed together
        for (int64_t jj = 0; jj < W; ++jj) {
          const float* k = k_rows + (i + jj) * D;
          Vec dot = reg[0] * Vec::loadu(k);
          for (int64_t c = 1; c < C; ++c) dot = at::vec::fmadd(reg[c], Vec::loadu(k + c * W), dot);
          partial[jj] = dot;
        }
        sum_lanes(partial).store(s + row * L + t0 + i);
      }
      for (; i < m; ++i) {  // the rest one by one
        const float* k = k_rows + i * D;
        Vec dot = reg[0] * Vec::loadu(k);
        for (int64_t c = 1; c < C; ++c) dot = at::vec::fmadd(reg[c], Vec::loadu(k + c * W), dot);
        s[row * L + t0 + i] = at::vec::vec_reduce_all<float>([](Vec& a, Vec& b) { return a + b; }, dot);
      }
    }
  }
  for (int64_t row = 0; row < R; ++row) {  // softmax over the row's own entries, in place
    float* sr = s + row * L;
    const int64_t n = length(row);
    const float top = at::vec::reduce_all<float>([](Vec& a, Vec& b) { return at::vec::maximum(a, b); }, sr, n);
    at::vec::map([top](Vec x) { return (x - Vec(top)).exp_u20(); }, sr, sr, n);
    const float inv = 1.f / at::vec::reduce_all<float>([](Vec& a, Vec& b) { return a + b; }, sr, n);
    at::vec::map([inv](Vec x) { return x * Vec(inv); }, sr, sr, n);
  }
  for (int64_t blk = 0, t0 = 0; t0 < L; ++blk, t0 += block_size) {  // values: acc[row] = sum_t p[row, t] * v_t
    const int64_t n = std::min(block_size, L - t0);
    const float* v_rows = as_float(values + table[blk] * block_len, n, D, buffer);
    for (int64_t row = 0; row < R; ++row) {
      const int64_t m = std::min(n, length(row) - t0);
      const float* p = s + row * L + t0;
      for (int64_t c = 0; c < C; ++c) reg[c] = Vec::loadu(acc + row * D + c * W);
      for (int64_t i = 0; i < m; ++i)
        for (int64_t c = 0; c < C; ++c) reg[c] = at::vec::fmadd(Vec(p[i]), Vec::loadu(v_rows + i * D + c * W), reg[c]);
      for (int64_t c = 0; c < C; ++c) reg[c].store(acc + row * D + c * W);
    }
  }
  for (int64_t j = 0; j < r; ++j)
    for (int64_t g = 0; g < G; ++g)
      for (int64_t d = 0; d < D; ++d) out[j * o_tok + g * o_head + d] = static_cast<T>(acc[(j * G + g) * D + d]);
}

template <typename T>
void attend(const at::Tensor& q, const at::Tensor& k_pool, const at::Tensor& v_pool, const at::Tensor& first,
            const at::Tensor& rows, const at::Tensor& tables, const at::Tensor& lengths, int64_t block_size,
            double scale, const at::Tensor& out) {
  const int64_t H = q.size(0), N = q.size(1), D = q.size(2), H_kv = k_pool.size(0), B = first.size(0);
  const int64_t M = tables.size(1), G = H / H_kv, C = D / Vec::size();
  const int64_t q_head = q.stride(0), q_tok = q.stride(1), o_head = out.stride(0), o_tok = out.stride(1);
  const int64_t pool_head = k_pool.stride(0);  // k_pool and v_pool share a shape and are contiguous
  const T* qp = q.data_ptr<T>();
  const T* kp = k_pool.data_ptr<T>();
  const T* vp = v_pool.data_ptr<T>();
  T* op = out.data_ptr<T>();
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

  // Tasks (tile, KV head), the most work first, handed out one at a time: tiles vary widely, and an even split of
  // the list would leave a thread idle.
  std::vector<int64_t> order(B);
  std::iota(order.begin(), order.end(), 0);
  auto work = [&](int64_t b) { return rows_p[b] * (len_p[b] + rows_p[b]); };
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return work(a) > work(b); });
  std::atomic<int64_t> next{0};
  auto* one = C == 4 ? &attend_tile<T, 4> : C == 8 ? &attend_tile<T, 8> : &attend_tile<T, 0>;
  at::parallel_for(0, at::get_num_threads(), 1, [&](int64_t, int64_t) {
    Scratch w{std::vector<float>(block_size * D), {}, {}, {}, std::vector<Vec>(Vec::size())};
    for (int64_t task = next++; task < B * H_kv; task = next++) {
      const int64_t b = order[task / H_kv], kvh = task % H_kv, tok = first_p[b];
      one(qp + kvh * G * q_head + tok * q_tok, q_head, q_tok, kp + kvh * pool_head, vp + kvh * pool_head,
          table_p + b * M, len_p[b], rows_p[b], block_size, G, D, static_cast<float>(scale),
          op + kvh * G * o_head + tok * o_tok, o_head, o_tok, w);
    }
  });
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
