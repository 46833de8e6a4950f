// Attention of a few query rows over cached keys and values read in place, on CPU: the machinery shared by
// paged_attention.cpp (the engine's paged cache) and cached_attention.cpp (the contiguous cache of batch-1 decoding).
//
// The keys and values of a sequence lie in blocks of `block_size` entries named by a block table (a contiguous cache
// is the table 0, 1, 2, ...); each task reads its blocks in place, once for the scores and once for the values; the
// softmax and the weighted sum of the values are float32.
//
// A task is one KV head of one "tile": up to a few consecutive query tokens of one sequence (a decoding sequence's
// new token, or a slice of a prompt chunk), row j of which attends to the first L0 + j cached entries (causal). The
// query heads that share the KV head (grouped-query attention) and the rows of the tile are handled together, in
// groups whose queries or accumulators stay in registers, so that a key or value is read from memory (and converted
// to float32) once per group and used by all its rows.
//
// Vectorised with ATen's Vectorized<float> (AVX-512, AVX2 or plain C++, chosen when lmforge/kernels/cpu_kernels.py
// builds the library for the machine).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <cstdint>
#include <numeric>
#include <type_traits>
#include <utility>
#include <vector>

#include "float_vec.h"

namespace lmforge::tiles {

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

// Before computing block blk (its first entry t0) of a task reading L entries: the next block's keys into L1, and
// four blocks ahead into L2 (keys and values) for blocks that do not follow their predecessor in memory: the hardware
// prefetcher streams through those that do, and extra prefetches only cost instructions.
template <typename T>
inline void prefetch_ahead(const T* keys, const T* values, const int64_t* table, int64_t blk, int64_t t0, int64_t L,
                           int64_t block_size, int64_t block_len) {
  if (t0 + block_size < L) prefetch(keys + table[blk + 1] * block_len, block_len);
  if (t0 + 4 * block_size < L && table[blk + 4] != table[blk + 3] + 1) {
    prefetch_l2(keys + table[blk + 4] * block_len, block_len);
    prefetch_l2(values + table[blk + 4] * block_len, block_len);
  }
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
constexpr int64_t kTileRows = 12;  // rows from which scores_tile_bf16 pays for its transposes

struct Scratch {  // per thread
  std::vector<float> block, query, scores, inv;  // a block of keys in float32 [block_size * D], then per tile
                                                 // [rows * G * D], [rows * G * L], [rows * G]
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

// exp(s[t] - max) in place for the first n entries of a row of scores, 0 for the rest up to L (entries the row does
// not see); returns 1 / the sum of the exponentials, applied once to the output instead of to every probability.
inline float softmax_numerators(float* s, int64_t n, int64_t L) {
  constexpr int64_t W = Vec::size();
  const Vec top(at::vec::reduce_all<float>([](Vec& a, Vec& b) { return at::vec::maximum(a, b); }, s, n));
  Vec sum(0.f);
  int64_t t = 0;
  for (; t + W <= n; t += W) {
    const Vec e = (Vec::loadu(s + t) - top).exp_u20();
    e.store(s + t);
    sum = sum + e;
  }
  if (t < n) {
    const Vec e = Vec::set(Vec(0.f), (Vec::loadu(s + t, n - t) - top).exp_u20(), n - t);
    e.store(s + t, n - t);
    sum = sum + e;
  }
  std::fill(s + n, s + L, 0.f);
  return 1.f / at::vec::vec_reduce_all<float>([](Vec& a, Vec& b) { return a + b; }, sum);
}

// out[i] = inv[i] * sum_t p[i * p_stride + t] * v_t over the first L entries of the block table, for RG rows at once:
// their RG x C accumulators stay in registers and each value row is read (and converted to float32) once for all of
// them (measured, 18 decoding rows of 9/3 heads of 64, bf16: the values pass 60 -> 35 us per layer). C_ = 0: any
// width, with the accumulators in memory.
template <typename T, int64_t C_, int64_t RG>
void values_rows(const T* values, const int64_t* table, int64_t L, int64_t block_size, int64_t D, const float* p,
                 int64_t p_stride, const float* inv, T* const* out) {
  constexpr int64_t W = Vec::size();
  const int64_t C = C_ > 0 ? C_ : D / W;
  Vec acc[RG][C_ > 0 ? C_ : kMaxChunks];
  for (int64_t i = 0; i < RG; ++i)
    for (int64_t c = 0; c < C; ++c) acc[i][c] = Vec(0.f);
  for (int64_t blk = 0, t0 = 0; t0 < L; ++blk, t0 += block_size) {
    const T* v_rows = values + table[blk] * block_size * D;
    if (t0 + block_size < L) prefetch(values + table[blk + 1] * block_size * D, block_size * D);
    const int64_t n = std::min(block_size, L - t0);
    for (int64_t t = 0; t < n; ++t) {
      Vec v[C_ > 0 ? C_ : kMaxChunks];
      for (int64_t c = 0; c < C; ++c) v[c] = load(v_rows + t * D + c * W);
      for (int64_t i = 0; i < RG; ++i) {
        const Vec pi(p[i * p_stride + t0 + t]);
        for (int64_t c = 0; c < C; ++c) acc[i][c] = at::vec::fmadd(pi, v[c], acc[i][c]);
      }
    }
  }
  for (int64_t i = 0; i < RG; ++i)
    for (int64_t c = 0; c < C; ++c) lmforge::store(out[i] + c * W, acc[i][c] * Vec(inv[i]));
}

// RG rows of an R-row computation at a time, RG fixed at compile time (up to kGroup): calls
// fn(std::integral_constant<int64_t, RG>, first row, RG).
template <int64_t kGroup, typename Fn>
void in_row_groups(int64_t R, Fn fn) {
  for (int64_t row0 = 0; row0 < R; row0 += kGroup) {
    const int64_t n = std::min(kGroup, R - row0);
    [&]<int64_t... I>(std::integer_sequence<int64_t, I...>) {
      ((n == I + 1 ? fn(std::integral_constant<int64_t, I + 1>{}, row0) : void()), ...);
    }(std::make_integer_sequence<int64_t, kGroup>{});
  }
}

// bfloat16 keys on a CPU with AVX512-BF16 (Zen 4/5, Cooper Lake and later): q . k by the bf16 dot-product
// instruction, 32 bf16 products per instruction summed in pairs straight into float32 lanes, reading the keys as they
// lie (no conversion pass). The products of two bf16 numbers are exact in float32, so the scores differ from the
// float32 path by the order of the sum only (the scale is applied to the sum instead of the query). RG rows at once
// (D = 32 x C2): their queries stay in registers and each key is loaded once for all of them; the partial sums of
// W keys are reduced together. s[i * s_stride + t] = scale * q_i . k_t for t < L. Measured with the values pass
// above (18 decoding rows of 9/3 heads of 64, cache warm): 160 -> 86 us per layer; prompt tiles 6.1 -> 3.6 ms per
// layer for 2048 tokens.
#if defined(CPU_CAPABILITY_AVX512) && defined(__AVX512BF16__)
constexpr bool kBf16Dot = true;
template <int64_t C2, int64_t RG>
void scores_rows_bf16(const at::BFloat16* const* q, const at::BFloat16* keys, const at::BFloat16* values,
                      const int64_t* table, int64_t L, int64_t block_size, float scale, float* s, int64_t s_stride) {
  constexpr int64_t W = Vec::size(), D = 32 * C2;
  const int64_t block_len = block_size * D;
  __m512bh qr[RG][C2];
  for (int64_t i = 0; i < RG; ++i)
    for (int64_t c = 0; c < C2; ++c) qr[i][c] = (__m512bh)_mm512_loadu_si512(q[i] + 32 * c);
  Vec part[RG][W];
  for (int64_t blk = 0, t0 = 0; t0 < L; ++blk, t0 += block_size) {
    const int64_t n = std::min(block_size, L - t0);
    prefetch_ahead(keys, values, table, blk, t0, L, block_size, block_len);
    const at::BFloat16* k_rows = keys + table[blk] * block_len;
    for (int64_t t = 0; t < n; t += W) {
      const int64_t m = std::min(W, n - t);
      for (int64_t j = 0; j < m; ++j) {
        __m512bh k[C2];
        for (int64_t c = 0; c < C2; ++c) k[c] = (__m512bh)_mm512_loadu_si512(k_rows + (t + j) * D + 32 * c);
        for (int64_t i = 0; i < RG; ++i) {
          __m512 acc = _mm512_dpbf16_ps(_mm512_setzero_ps(), qr[i][0], k[0]);
          for (int64_t c = 1; c < C2; ++c) acc = _mm512_dpbf16_ps(acc, qr[i][c], k[c]);
          part[i][j] = Vec(acc);
        }
      }
      for (int64_t i = 0; i < RG; ++i) {
        for (int64_t j = m; j < W; ++j) part[i][j] = Vec(0.f);
        (sum_lanes(part[i]) * Vec(scale)).store(s + i * s_stride + t0 + t, m);
      }
    }
  }
}

// Prompt tiles (many rows: up to 8 tokens x the query heads of a GQA group): each chunk of 16 keys is transposed once
// (16-lane gathers) into pairs-major order, kt[p][j] = (k_j[2p], k_j[2p + 1]), so that a row's 16 scores are D/2
// bf16 dot-product instructions into one vector with no horizontal sums (the decode path above needs 15
// shuffle-and-add steps per 16 keys and row). RG rows at a time: RG accumulators, each key vector loaded once for all
// of them. Measured (2048 prompt tokens, 9/3 heads of 64): 3.9 -> 3.0 ms per layer.
template <int64_t C2, int64_t RG>
void chunk_scores_bf16(const int32_t* kt, const at::BFloat16* const* q, float scale, float* s, int64_t s_stride,
                       __mmask16 mask) {
  __m512 acc[RG];
  for (int64_t i = 0; i < RG; ++i) acc[i] = _mm512_setzero_ps();
  for (int64_t p = 0; p < 16 * C2; ++p) {
    const __m512bh k = (__m512bh)_mm512_loadu_si512(kt + p * 16);
#pragma GCC unroll 16
    for (int64_t i = 0; i < RG; ++i) {
      int32_t pair;
      std::memcpy(&pair, q[i] + 2 * p, sizeof(pair));
      acc[i] = _mm512_dpbf16_ps(acc[i], k, (__m512bh)_mm512_set1_epi32(pair));
    }
  }
  for (int64_t i = 0; i < RG; ++i)  // the chunk's keys only
    _mm512_mask_storeu_ps(s + i * s_stride, mask, _mm512_mul_ps(acc[i], _mm512_set1_ps(scale)));
}

template <int64_t C2>
void scores_tile_bf16(const at::BFloat16* const* q, int64_t R, const at::BFloat16* keys, const at::BFloat16* values,
                      const int64_t* table, int64_t L, int64_t block_size, float scale, float* s, int64_t s_stride) {
  constexpr int64_t D = 32 * C2, P = 16 * C2;  // P pairs per key
  const int64_t block_len = block_size * D;
  alignas(64) int32_t kt[P * 16];
  const __m512i rows = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                          _mm512_set1_epi32(P));  // key j's pairs start at j * P
  for (int64_t blk = 0, t0 = 0; t0 < L; ++blk, t0 += block_size) {
    const int64_t n = std::min(block_size, L - t0);
    prefetch_ahead(keys, values, table, blk, t0, L, block_size, block_len);
    for (int64_t t = 0; t < n; t += 16) {
      const int64_t m = std::min<int64_t>(16, n - t);
      const __mmask16 mask = m >= 16 ? 0xffff : static_cast<__mmask16>((1u << m) - 1);
      const int32_t* k32 = reinterpret_cast<const int32_t*>(keys + table[blk] * block_len + t * D);
      for (int64_t p = 0; p < P; ++p)
        _mm512_store_si512(kt + p * 16, _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), mask, rows, k32 + p, 4));
      in_row_groups<12>(R, [&](auto rg, int64_t row0) {
        chunk_scores_bf16<C2, decltype(rg)::value>(kt, q + row0, scale, s + row0 * s_stride + t0 + t, s_stride,
                                                   mask);
      });
    }
  }
}
#else
constexpr bool kBf16Dot = false;
template <int64_t C2, int64_t RG>
void scores_rows_bf16(const at::BFloat16* const*, const at::BFloat16*, const at::BFloat16*, const int64_t*, int64_t,
                      int64_t, float, float*, int64_t) {}
template <int64_t C2>
void scores_tile_bf16(const at::BFloat16* const*, int64_t, const at::BFloat16*, const at::BFloat16*, const int64_t*,
                      int64_t, int64_t, float, float*, int64_t) {}
#endif

// One task: a tile of r query tokens (q_tok apart; heads q_head apart) and one KV head. Row j attends to the first
// L0 + j entries of `table`. C_ > 0 fixes the vectors per row (D / Vec::size()) at compile time, so that the rows'
// accumulators stay in registers.
template <typename T, int64_t C_>
void attend_tile(const T* q, int64_t q_head, int64_t q_tok, const T* keys, const T* values, const int64_t* table,
                 int64_t L0, int64_t r, int64_t block_size, int64_t G, int64_t D, float scale, T* out,
                 int64_t o_head, int64_t o_tok, Scratch& w) {
  constexpr int64_t W = Vec::size();
  const int64_t C = C_ > 0 ? C_ : D / W, block_len = block_size * D, R = r * G, L = L0 + r - 1;
  auto length = [&](int64_t row) { return L0 + row / G; };  // row = j * G + g
  auto q_row = [&](int64_t row) { return q + row / G * q_tok + row % G * q_head; };
  w.scores.resize(R * L);
  w.inv.resize(R);
  float* s = w.scores.data();  // s[row * L + t]; a row also scores the entries past its own (it ignores them)

  if constexpr (kBf16Dot && std::is_same_v<T, at::BFloat16> && (C_ == 4 || C_ == 8)) {
    constexpr int64_t C2 = C_ / 2;
    if (R >= kTileRows) {  // a prompt tile: keys transposed once per chunk for all its rows
      std::vector<const at::BFloat16*> qs(R);
      for (int64_t row = 0; row < R; ++row) qs[row] = q_row(row);
      scores_tile_bf16<C2>(qs.data(), R, keys, values, table, L, block_size, scale, s, L);
    } else  // rows in groups of 8 (D = 64) or 4 (D = 128): 16 query registers
    in_row_groups<C2 == 2 ? 8 : 4>(R, [&](auto rg, int64_t row0) {
      constexpr int64_t RG = decltype(rg)::value;
      const at::BFloat16* qs[RG];
      for (int64_t i = 0; i < RG; ++i) qs[i] = q_row(row0 + i);
      scores_rows_bf16<C2, RG>(qs, keys, values, table, L, block_size, scale, s + row0 * L, L);
    });
  } else {
    w.query.resize(R * D);
    if constexpr (!std::is_same_v<T, float>) w.block.resize(block_size * D);  // keys converted to float32 here
    float* query = w.query.data();
    float* buffer = w.block.data();
    Vec* partial = w.partial.data();
    Vec reg[C_ > 0 ? C_ : kMaxChunks];
    for (int64_t row = 0; row < R; ++row)
      for (int64_t c = 0; c < C; ++c) (load(q_row(row) + c * W) * Vec(scale)).store(query + row * D + c * W);
    for (int64_t blk = 0, t0 = 0; t0 < L; ++blk, t0 += block_size) {  // s[row, t] = (q_row * scale) . k_t
      const int64_t n = std::min(block_size, L - t0);
      prefetch_ahead(keys, values, table, blk, t0, L, block_size, block_len);
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
  }
  for (int64_t row = 0; row < R; ++row) w.inv[row] = softmax_numerators(s + row * L, length(row), L);
  // Values: rows in groups whose accumulators fit in registers (6 rows of 4 vectors, 2 of 8, else 1).
  constexpr int64_t kValueGroup = C_ == 4 ? 6 : C_ == 8 ? 2 : 1;
  in_row_groups<kValueGroup>(R, [&](auto rg, int64_t row0) {
    constexpr int64_t RG = decltype(rg)::value;
    T* outs[RG];
    for (int64_t i = 0; i < RG; ++i) outs[i] = out + (row0 + i) / G * o_tok + (row0 + i) % G * o_head;
    values_rows<T, C_, RG>(values, table, L, block_size, D, s + row0 * L, L, w.inv.data() + row0, outs);
  });
}


// Tiles of query rows, every KV head of each, over a pool of blocks: tile b is rows[b] query tokens from token
// first[b] (q + token * q_tok + head * q_head), row j attending to the first lengths[b] + j entries of its table
// (tables + b * M); outputs alike at out. Pools [H_kv][...]: a KV head's entries start pool_head apart. The caller
// has checked every index. Tasks (tile, KV head), the most work first, handed out one at a time: tiles vary widely,
// and an even split of the list would leave a thread idle. Few tasks of little work (a decode step of one sequence:
// a few hundred keys per head) run on the calling thread: waking a second one costs more than their work.
template <typename T>
void attend_tiles(const T* q, int64_t q_head, int64_t q_tok, const T* k_pool, const T* v_pool, int64_t pool_head,
                  const int64_t* first, const int64_t* rows, const int64_t* tables, int64_t M, const int64_t* lengths,
                  int64_t B, int64_t H, int64_t H_kv, int64_t D, int64_t block_size, float scale, T* out,
                  int64_t o_head, int64_t o_tok) {
  constexpr int64_t kWorkPerThread = 1 << 18;  // multiply-adds (~30 us) a thread is worth waking for
  const int64_t G = H / H_kv, C = D / Vec::size();
  std::vector<int64_t> order(B);
  std::iota(order.begin(), order.end(), 0);
  auto work = [&](int64_t b) { return rows[b] * (lengths[b] + rows[b]); };
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return work(a) > work(b); });
  int64_t total = 0;
  for (int64_t b = 0; b < B; ++b) total += work(b) * H * D;
  const int64_t threads = std::clamp<int64_t>(total / kWorkPerThread, 1, at::get_num_threads());
  std::atomic<int64_t> next{0};
  auto* one = C == 4 ? &attend_tile<T, 4> : C == 8 ? &attend_tile<T, 8> : &attend_tile<T, 0>;
  at::parallel_for(0, threads, 1, [&](int64_t, int64_t) {
    Scratch w{{}, {}, {}, {}, std::vector<Vec>(Vec::size())};
    for (int64_t task = next++; task < B * H_kv; task = next++) {
      const int64_t b = order[task / H_kv], kvh = task % H_kv, tok = first[b];
      one(q + kvh * G * q_head + tok * q_tok, q_head, q_tok, k_pool + kvh * pool_head, v_pool + kvh * pool_head,
          tables + b * M, lengths[b], rows[b], block_size, G, D, scale, out + kvh * G * o_head + tok * o_tok, o_head,
          o_tok, w);
    }
  });
}

}  // namespace lmforge::tiles
