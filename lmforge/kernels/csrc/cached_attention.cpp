// A decode step's attention on the contiguous KV cache (lmforge/generation/cache/contiguous.py's KVCache, batch 1) in
// one call, from the fused q/k/v projection's output to the o projection's input: RoPE of the queries (in place) and
// of the new keys, the new keys and values written into the cache, and attention of the new tokens over every cached
// entry (causal), by the tiles of attention_tiles.h (the paged kernel's) reading the cache in place.
//
// As eager ops this is a split, three views and three transposes, two RoPE calls, a dozen indexing ops to write and
// slice the cache, SDPA and a transpose-and-copy back: ~30 operator calls per layer and step, more time than the
// arithmetic of a few hundred cached tokens. RoPE rounds as the eager code does (rope_row.h: bfloat16 bit for bit),
// so the cache holds the same numbers; the attention's scores, softmax and weighted sum of the values are float32
// (SDPA's differ from them by the order and precision of their sums). Used by lmforge/model/attention_kernel.py;
// checked against the eager attention in tests/unit/kernels/test_cached_attention.py.

#include <ATen/ATen.h>
#include <torch/library.h>

#include <cstdint>

#include "cached_attention.h"

namespace {

using lmforge::Vec;

template <typename T>
at::Tensor attend(const at::Tensor& qkv, const at::Tensor& cos, const at::Tensor& sin, const at::Tensor& k_cache,
                  const at::Tensor& v_cache, int64_t layer, int64_t start, int64_t H, double scale) {
  const int64_t T_ = qkv.size(1), H_kv = k_cache.size(2), S = k_cache.size(3), D = k_cache.size(4);
  at::Tensor out = at::empty({1, T_, H * D}, qkv.options());
  lmforge::cached_attention_into<T>(qkv.data_ptr<T>(), T_, cos.defined() ? cos.data_ptr<T>() : nullptr,
                                    sin.defined() ? sin.data_ptr<T>() : nullptr, k_cache.data_ptr<T>(),
                                    v_cache.data_ptr<T>(), layer, start, H, H_kv, S, D, static_cast<float>(scale),
                                    out.data_ptr<T>());
  return out;
}

// qkv [1, T, (H + 2 H_kv) D]: the T new tokens' queries, keys and values side by side (the fused projection's
// output; its queries are rotated in place). cos, sin [1, T, D] or None (no RoPE). k_cache, v_cache
// [layers, 1, H_kv, S, D]: KVCache's buffers, whose entries 0..start-1 of `layer` are cached; the new ones are written
// at start..start+T-1. Returns the attention output [1, T, H D], token t attending to entries 0..start+t.
at::Tensor cached_attention(const at::Tensor& qkv, const c10::optional<at::Tensor>& cos,
                            const c10::optional<at::Tensor>& sin, const at::Tensor& k_cache, const at::Tensor& v_cache,
                            int64_t layer, int64_t start, int64_t heads, double scale) {
  TORCH_CHECK(k_cache.dim() == 5 && k_cache.size(1) == 1 && k_cache.is_contiguous() && v_cache.is_contiguous() &&
                  k_cache.sizes() == v_cache.sizes(),
              "cached_attention: the caches must be contiguous [layers, 1, H_kv, S, D] of one shape, got ",
              k_cache.sizes(), " and ", v_cache.sizes());
  const int64_t H_kv = k_cache.size(2), S = k_cache.size(3), D = k_cache.size(4), W = Vec::size();
  TORCH_CHECK(qkv.dim() == 3 && qkv.size(0) == 1 && qkv.is_contiguous() && heads >= 1 && heads % H_kv == 0 &&
                  qkv.size(2) == (heads + 2 * H_kv) * D,
              "cached_attention: qkv must be contiguous [1, T, (heads + 2 H_kv) D] with heads a multiple of H_kv = ",
              H_kv, " and D = ", D, ", got ", qkv.sizes(), " and heads ", heads);
  TORCH_CHECK(D % W == 0 && D / W <= lmforge::tiles::kMaxChunks,
              "cached_attention: the head width must be a multiple of ", W, " up to ", lmforge::tiles::kMaxChunks * W);
  const int64_t T_ = qkv.size(1);
  TORCH_CHECK(layer >= 0 && layer < k_cache.size(0) && start >= 0 && T_ >= 1 && start + T_ <= S,
              "cached_attention: layer ", layer, " and positions ", start, "..", start + T_ - 1, " outside the cache's ",
              k_cache.size(0), " layers and ", S, " positions");
  TORCH_CHECK(qkv.scalar_type() == k_cache.scalar_type() && qkv.scalar_type() == v_cache.scalar_type(),
              "cached_attention: qkv and the caches need one dtype");
  const bool rope = cos.has_value() && cos->defined();
  TORCH_CHECK(rope == (sin.has_value() && sin->defined()), "cached_attention: give both cos and sin, or neither");
  if (rope)
    TORCH_CHECK(cos->dim() == 3 && cos->sizes() == sin->sizes() && cos->size(0) == 1 && cos->size(1) == T_ &&
                    cos->size(2) == D && cos->is_contiguous() && sin->is_contiguous() &&
                    cos->scalar_type() == qkv.scalar_type() && sin->scalar_type() == qkv.scalar_type(),
                "cached_attention: cos and sin must be contiguous [1, T, D] of qkv's dtype, got ", cos->sizes());
  const at::Tensor c = rope ? *cos : at::Tensor(), s = rope ? *sin : at::Tensor();
  if (qkv.scalar_type() == at::kFloat) return attend<float>(qkv, c, s, k_cache, v_cache, layer, start, heads, scale);
  TORCH_CHECK(qkv.scalar_type() == at::kBFloat16, "cached_attention supports float32 and bfloat16, not ",
              qkv.scalar_type());
  return attend<at::BFloat16>(qkv, c, s, k_cache, v_cache, layer, start, heads, scale);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(lmforge, m) {
  m.def("cached_attention(Tensor(a!) qkv, Tensor? cos, Tensor? sin, Tensor(b!) k_cache, Tensor(c!) v_cache, "
        "int layer, int start, int heads, float scale) -> Tensor");
}

TORCH_LIBRARY_IMPL(lmforge, CPU, m) { m.impl("cached_attention", &cached_attention); }
