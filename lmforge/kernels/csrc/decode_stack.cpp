// A prepared decoder's batch-1 decode step in one call: the new token's embedding, every layer (RMSNorm, the fused
// q/k/v projection, RoPE + the KV-cache write + attention over the cache, the o projection, the residual add with the
// MLP's RMSNorm, SwiGLU's gate/up with its activation, the down projection, the residual add) and the final norm.
//
// Run layer by layer from Python, the same step is ~8 operator calls and ~8 module calls per layer, 9 us of Python
// and dispatch each: 2-2.5 ms of a SmolLM2 step whose projections stream their weights in ~8 ms (bf16, one thread;
// docs/benchmarks.md). Here every piece is the kernel the operators run (float_linears.h, cached_attention.h,
// norm_row.h), on raw pointers into one scratch buffer, in the same order: the hidden states are those of the
// layer-by-layer prepared step bit for bit (tests/unit/kernels/test_decode_stack.py). A bf16 model's projections may
// also be lmforge's int8 / int4 layers (Int8Linear / Int4Linear packed for the kernels): their ops' functions
// (linear_int8.cpp, linear_int4.cpp) are called directly, and a quantized gate/up is followed by SiLU * up in a
// second pass, as FusedSwiGLU runs it.
//
// Held by lmforge/model/decode_stack.py as a torch custom class (`torch.classes.lmforge.DecodeStack`), built once per
// prepared model from its packed weights, so that a step passes only the token, the cache and the RoPE tables.

#include <ATen/ATen.h>
#include <torch/custom_class.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "cached_attention.h"
#include "float_linears.h"
#include "norm_row.h"
#include "quant_linear.h"

namespace lmforge {

namespace {

inline void linear(const float* x, const at::Tensor& w, const at::Tensor& b, float* y, int64_t width, bool gated) {
  linear_f32_into(x, 1, w, b.defined() ? b.data_ptr<float>() : nullptr, y, width, gated);
}

inline void linear(const at::BFloat16* x, const at::Tensor& w, const at::Tensor& b, at::BFloat16* y, int64_t width,
                   bool gated) {
  linear_bf16_into(x, 1, w, b.defined() ? b.data_ptr<float>() : nullptr, y, width, gated);
}

// (inputs, outputs the packing has room for) of a weight packed by pack_linear_f32 ([NB, K, 32]) or pack_linear_bf16
// ([NB, K/2, 32, 2]).
std::pair<int64_t, int64_t> packed_shape(const at::Tensor& w) {
  if (w.scalar_type() == at::kFloat && w.dim() == 3) return {w.size(1), w.size(0) * w.size(2)};
  TORCH_CHECK(w.scalar_type() == at::kBFloat16 && w.dim() == 4 && w.size(3) == 2,
              "DecodeStack: a projection's weight must come from pack_linear_f32 or pack_linear_bf16, got ",
              w.scalar_type(), " ", w.sizes());
  return {w.size(1) * 2, w.size(0) * w.size(2)};
}

enum class Kind { kFloat, kInt8, kInt4 };

// One projection: a float kernel's packed weight and its bias as the kernel takes it, or a quantized layer's kernel
// pack (codes, scales) and its bias as the layer holds it.
struct Proj {
  Kind kind = Kind::kFloat;
  at::Tensor w, aux, bias;
  at::Tensor aux_f32, bias_f32;  // a quantized layer's scales (int8) and bias as its kernel reads them (or undefined)
  int64_t inputs = 0, width = 0;
  bool gated = false;  // a float gate/up packed gated: its kernel writes silu(gate) * up
};

}  // namespace

class DecodeStack : public torch::CustomClassHolder {
 public:
  static constexpr int64_t kPerLayer = 14;

  // embed [V, dim]; per layer, in this order: attn_norm weight, q/k/v, o, mlp_norm weight, gate/up, down, each
  // projection as three tensors: a float kernel's packed weight (pack_linear_f32 / pack_linear_bf16; gate/up: packed
  // gated), an empty tensor, its bias (empty: none); or a quantized layer's kernel pack (int8: codes from
  // pack_linear_int8 / pack_linear_int8_vnni and float32 scales; int4: pack_linear_int4's codes and pack_int4_scales'
  // pairs) and its bias (bf16 models only; gate/up: SiLU * up after it). final_norm [dim]; eps: per layer
  // attn_norm's and mlp_norm's, then the final norm's. int8_x: the int4 layers' int8 activations (linear_int4's
  // argument).
  DecodeStack(at::Tensor embed, std::vector<at::Tensor> layers, at::Tensor final_norm, std::vector<double> eps,
              int64_t heads, int64_t kv_heads, int64_t head_dim, int64_t hidden, double scale, bool int8_x)
      : embed_(embed.contiguous()), final_norm_(final_norm.contiguous()), eps_(eps.begin(), eps.end()), heads_(heads),
        kv_heads_(kv_heads), head_dim_(head_dim), hidden_(hidden), scale_(static_cast<float>(scale)),
        int8_x_(int8_x) {
    const at::ScalarType dtype = embed_.scalar_type();
    TORCH_CHECK(dtype == at::kFloat || dtype == at::kBFloat16, "DecodeStack: float32 or bfloat16, not ", dtype);
    TORCH_CHECK(embed_.dim() == 2 && layers.size() % kPerLayer == 0 && !layers.empty() &&
                    eps_.size() == 2 * layers.size() / kPerLayer + 1,
                "DecodeStack: embed [V, dim], ", kPerLayer, " tensors per layer and 2 eps per layer + 1");
    TORCH_CHECK(heads >= 1 && kv_heads >= 1 && heads % kv_heads == 0 && head_dim % at::vec::Vectorized<float>::size() == 0,
                "DecodeStack: heads a multiple of kv_heads, head_dim a multiple of the vector width");
    dim_ = embed_.size(1);
    qkv_width_ = (heads + 2 * kv_heads) * head_dim;
    const int64_t widths[4] = {qkv_width_, dim_, 2 * hidden, dim_}, inputs[4] = {dim_, heads * head_dim, dim_, hidden};
    for (size_t i = 0; i < layers.size(); i += kPerLayer) {
      const std::vector<at::Tensor> t(layers.begin() + i, layers.begin() + i + kPerLayer);
      Layer layer;
      for (int j : {0, 7}) {
        TORCH_CHECK(t[j].dim() == 1 && t[j].size(0) == dim_ && t[j].scalar_type() == dtype,
                    "DecodeStack: a norm's weight must be [", dim_, "] of the embedding's dtype");
        (j == 0 ? layer.attn_norm : layer.mlp_norm) = t[j].contiguous();
      }
      for (int p = 0; p < 4; ++p) {  // q/k/v, o, gate/up, down at 1, 4, 8, 11: weight, scales, bias
        const int at = p < 2 ? 1 + 3 * p : 8 + 3 * (p - 2);
        layer.proj[p] = projection(t[at], t[at + 1], t[at + 2], inputs[p], widths[p], p == 2, dtype);
      }
      layers_.push_back(std::move(layer));
    }
    TORCH_CHECK(final_norm_.dim() == 1 && final_norm_.size(0) == dim_ && final_norm_.scalar_type() == dtype,
                "DecodeStack: the final norm's weight must be [", dim_, "]");
  }

  // token: one id ([1, 1] int64). k_cache, v_cache: the KV cache's buffers [layers, 1, kv_heads, S, head_dim], entries
  // 0..start-1 cached; the new ones go to `start`. cos, sin: RoPE tables [n, head_dim] (row p: position p) with
  // n > start. Returns the final norm's output [1, 1, dim].
  at::Tensor step(const at::Tensor& token, const at::Tensor& k_cache, const at::Tensor& v_cache, int64_t start,
                  const at::Tensor& cos, const at::Tensor& sin) {
    const int64_t L = static_cast<int64_t>(layers_.size());
    TORCH_CHECK(token.numel() == 1 && token.scalar_type() == at::kLong && token.is_cpu(),
                "DecodeStack.step: one int64 token id");
    TORCH_CHECK(k_cache.dim() == 5 && k_cache.sizes() == v_cache.sizes() && k_cache.size(0) == L &&
                    k_cache.size(1) == 1 && k_cache.size(2) == kv_heads_ && k_cache.size(4) == head_dim_ &&
                    k_cache.is_contiguous() && v_cache.is_contiguous() &&
                    k_cache.scalar_type() == embed_.scalar_type() && v_cache.scalar_type() == embed_.scalar_type(),
                "DecodeStack.step: the caches must be contiguous [", L, ", 1, ", kv_heads_, ", S, ", head_dim_,
                "] of the model's dtype, got ", k_cache.sizes());
    TORCH_CHECK(start >= 0 && start < k_cache.size(3), "DecodeStack.step: position ", start, " outside the cache");
    TORCH_CHECK(cos.dim() == 2 && cos.sizes() == sin.sizes() && cos.size(1) == head_dim_ && cos.size(0) > start &&
                    cos.is_contiguous() && sin.is_contiguous() && cos.scalar_type() == embed_.scalar_type() &&
                    sin.scalar_type() == embed_.scalar_type(),
                "DecodeStack.step: cos and sin must be contiguous [n > ", start, ", ", head_dim_, "] tables");
    const int64_t id = *token.data_ptr<int64_t>();
    TORCH_CHECK(id >= 0 && id < embed_.size(0), "DecodeStack.step: token id ", id, " outside the vocabulary");
    at::Tensor out = at::empty({1, 1, dim_}, embed_.options());
    if (embed_.scalar_type() == at::kFloat) {
      run<float>(id, k_cache, v_cache, start, cos, sin, out);
    } else {
      run<at::BFloat16>(id, k_cache, v_cache, start, cos, sin, out);
    }
    return out;
  }

 private:
  template <typename T>
  void run(int64_t id, const at::Tensor& k_cache, const at::Tensor& v_cache, int64_t start, const at::Tensor& cos,
           const at::Tensor& sin, at::Tensor& out) const {
    const int64_t D = head_dim_, S = k_cache.size(3);
    std::vector<T> scratch(3 * dim_ + qkv_width_ + heads_ * D + 3 * hidden_);
    T* x = scratch.data();  // the residual stream
    T* h = x + dim_;        // a norm's output
    T* y = h + dim_;        // a projection's output added back (o, down)
    T* qkv = y + dim_;
    T* a = qkv + qkv_width_;  // the attention's output
    T* g = a + heads_ * D;    // silu(gate) * up
    T* gu = g + hidden_;      // a quantized gate/up's output
    std::copy_n(embed_.data_ptr<T>() + id * dim_, dim_, x);
    const T* c = cos.data_ptr<T>() + start * D;
    const T* s = sin.data_ptr<T>() + start * D;
    T* keys = k_cache.data_ptr<T>();
    T* values = v_cache.data_ptr<T>();
    for (int64_t l = 0; l < static_cast<int64_t>(layers_.size()); ++l) {
      const Layer& t = layers_[l];
      rms_norm_row(x, t.attn_norm.data_ptr<T>(), h, dim_, static_cast<float>(eps_[2 * l]));
      project(t.proj[0], h, qkv);
      cached_attention_into<T>(qkv, 1, c, s, keys, values, l, start, heads_, kv_heads_, S, D, scale_, a);
      project(t.proj[1], a, y);
      add_row(x, y, x, dim_);
      rms_norm_row(x, t.mlp_norm.data_ptr<T>(), h, dim_, static_cast<float>(eps_[2 * l + 1]));
      if (t.proj[2].kind == Kind::kFloat) {
        project(t.proj[2], h, g);
      } else {
        project(t.proj[2], h, gu);
        silu_mul_row(gu, g, hidden_);
      }
      project(t.proj[3], g, y);
      add_row(x, y, x, dim_);
    }
    rms_norm_row(x, final_norm_.data_ptr<T>(), out.data_ptr<T>(), dim_, static_cast<float>(eps_.back()));
  }

  struct Layer {
    at::Tensor attn_norm, mlp_norm;
    Proj proj[4];  // q/k/v, o, gate/up, down
  };

  // A projection from its three tensors (see the constructor), checked against the model's shapes.
  static Proj projection(const at::Tensor& w, const at::Tensor& aux, const at::Tensor& b, int64_t inputs,
                         int64_t width, bool gated, at::ScalarType dtype) {
    Proj p;
    p.inputs = inputs;
    p.width = width;
    const at::ScalarType wt = w.scalar_type();
    if (aux.numel() == 0) {  // a float kernel's weight
      const auto [K, room] = packed_shape(w);
      TORCH_CHECK(wt == dtype && w.is_contiguous() && K == inputs && room >= width && (!gated || room == width),
                  "DecodeStack: a projection's packed weight does not match the model's shapes");
      p.w = w;
      p.gated = gated;
      if (b.numel() > 0) {
        TORCH_CHECK(b.dim() == 1 && b.size(0) == width, "DecodeStack: a bias must be [", width, "]");
        p.bias = kernel_bias(b, w, gated);
      }
      return p;
    }
    TORCH_CHECK(dtype == at::kBFloat16, "DecodeStack: quantized projections need a bfloat16 model");
    TORCH_CHECK(wt == at::kChar || wt == at::kByte || wt == at::kInt,
                "DecodeStack: a quantized projection's codes must come from pack_linear_int8(_vnni) or "
                "pack_linear_int4, got ", wt);
    const int64_t K = wt == at::kInt ? w.size(1) * 8 : wt == at::kChar ? w.size(1) : w.size(1) * 4;
    TORCH_CHECK(K == inputs || (wt == at::kByte && K >= inputs && K - inputs < 32),
                "DecodeStack: a quantized projection takes ", K, " inputs, the model ", inputs);
    p.kind = wt == at::kInt ? Kind::kInt4 : Kind::kInt8;
    if (p.kind == Kind::kInt4) check_int4_pack(w, aux, width);
    p.w = w;
    p.aux = aux;
    if (b.numel() > 0) {
      TORCH_CHECK(b.dim() == 1 && b.size(0) == width, "DecodeStack: a bias must be [", width, "]");
      p.bias = b;
      p.bias_f32 = b.to(at::kFloat).contiguous();
    }
    if (p.kind == Kind::kInt8 && w.dim() == 4 && w.is_contiguous() && w.size(2) == 32 && w.size(3) == 4 &&
        width > (w.size(0) - 1) * 32 && width <= w.size(0) * 32 && aux.dim() == 1 && aux.size(0) == width)
      p.aux_f32 = aux.to(at::kFloat).contiguous();  // the int8 x int8 layout, as linear_int8 checks it: its row call
    return p;
  }

  // y = the projection of one row x (the op's own function for a quantized layer: the same call as its module's).
  template <typename T>
  void project(const Proj& p, const T* x, T* y) const {
    if (p.kind == Kind::kFloat) {
      linear(x, p.w, p.bias, y, p.gated ? p.width / 2 : p.width, p.gated);
      return;
    }
    if constexpr (std::is_same_v<T, at::BFloat16>) {
      // int8 activations: straight into y (a tensor made and copied per projection cost ~0.2 ms a step)
      const float* bias_f32 = p.bias_f32.defined() ? p.bias_f32.const_data_ptr<float>() : nullptr;
      if (p.kind == Kind::kInt4 &&
          linear_int4_row(x, p.w.const_data_ptr<int32_t>(), p.aux.const_data_ptr<at::BFloat16>(), p.w.size(0),
                          p.w.size(1) * 8, p.aux.size(1), bias_f32, p.width, int8_x_, y))
        return;
      if (p.kind == Kind::kInt8 && p.aux_f32.defined() &&
          linear_int8_row(x, p.inputs, p.w.const_data_ptr<uint8_t>(), p.w.size(0), p.w.size(1) * 4,
                          p.aux_f32.const_data_ptr<float>(), bias_f32, p.width, y))
        return;
      const at::Tensor xt = at::from_blob(const_cast<T*>(x), {1, p.inputs}, at::TensorOptions().dtype(at::kBFloat16));
      const c10::optional<at::Tensor> bias = p.bias.defined() ? c10::optional<at::Tensor>(p.bias) : c10::nullopt;
      const at::Tensor r = p.kind == Kind::kInt8 ? linear_int8(xt, p.w, p.aux, bias, p.width, false)
                                                 : linear_int4(xt, p.w, p.aux, bias, p.width, false, int8_x_);
      std::copy_n(r.data_ptr<T>(), p.width, y);
    }
  }

  at::Tensor embed_, final_norm_;
  std::vector<Layer> layers_;
  std::vector<double> eps_;
  int64_t heads_, kv_heads_, head_dim_, hidden_, dim_ = 0, qkv_width_ = 0;
  float scale_;
  bool int8_x_;
};

}  // namespace lmforge

TORCH_LIBRARY_FRAGMENT(lmforge, m) {
  m.class_<lmforge::DecodeStack>("DecodeStack")
      .def(torch::init<at::Tensor, std::vector<at::Tensor>, at::Tensor, std::vector<double>, int64_t, int64_t, int64_t,
                       int64_t, double, bool>())
      .def("step", &lmforge::DecodeStack::step);
}
