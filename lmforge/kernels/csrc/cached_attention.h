// The arithmetic of cached_attention.cpp's operator on raw pointers, shared with decode_stack.cpp (which runs it for
// every layer of a decode step inside one call): RoPE of the T new tokens' queries (in place) and keys, the new keys
// and values written into the layer's cache at start..start+T-1, and attention of token t over entries 0..start+t,
// by attention_tiles.h's tiles. The caller has checked the shapes.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <vector>

#include "attention_tiles.h"
#include "rope_row.h"

namespace lmforge {

constexpr int64_t kCacheBlock = 64;  // the cache seen as blocks 0, 1, 2, ... of this many entries (the tiles' unit)

// rows [T, (H + 2 H_kv) D]: each new token's queries, keys and values side by side (the fused projection's output).
// cos, sin [T, D] or null (no RoPE). k_cache, v_cache [layers, 1, H_kv, S, D]. out [T, H D].
template <typename T>
void cached_attention_into(T* rows, int64_t T_, const T* cp, const T* sp, T* k_cache, T* v_cache, int64_t layer,
                           int64_t start, int64_t H, int64_t H_kv, int64_t S, int64_t D, float scale, T* out) {
  const int64_t width = (H + 2 * H_kv) * D, head_len = S * D;
  T* keys = k_cache + layer * H_kv * head_len;
  T* values = v_cache + layer * H_kv * head_len;
  for (int64_t t = 0; t < T_; ++t) {  // [q heads | k heads | v heads] per token row
    T* q = rows + t * width;
    const T *k = q + H * D, *v = k + H_kv * D;
    for (int64_t h = 0; h < H_kv; ++h) {
      T* k_dst = keys + h * head_len + (start + t) * D;
      if (cp != nullptr) {
        rope_row(k + h * D, k_dst, cp + t * D, sp + t * D, D);
      } else {
        std::copy_n(k + h * D, D, k_dst);
      }
      std::copy_n(v + h * D, D, values + h * head_len + (start + t) * D);
    }
    if (cp != nullptr)
      for (int64_t h = 0; h < H; ++h) rope_row(q + h * D, q + h * D, cp + t * D, sp + t * D, D);
  }
  const int64_t L = start + T_;  // entries the last row sees
  std::vector<int64_t> table((L + kCacheBlock - 1) / kCacheBlock);
  std::iota(table.begin(), table.end(), 0);
  const int64_t first = 0, length = start + 1;
  tiles::attend_tiles<T>(rows, D, width, keys, values, head_len, &first, &T_, table.data(),
                         static_cast<int64_t>(table.size()), &length, 1, H, H_kv, D, kCacheBlock, scale, out, D, H * D);
}

}  // namespace lmforge
