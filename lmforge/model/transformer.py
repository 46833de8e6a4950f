"""The dense Transformer (GPT-2 / Llama / Qwen / Mistral / Gemma / BLOOM decoders, BERT encoders), read top down.

token ids -> embedding -> n_layers x [x + attn(norm(x)); x + mlp(norm(x))] -> norm -> lm_head -> logits
(post-norm, sandwich norms, absolute or ALiBi positions and sliding windows are config switches; see layer_inputs.py).
The model knows nothing of devices, optimisers, checkpoint formats or parallelism: those adapters live outside.
"""

import math

import torch
from torch import nn

from lmforge.common.errors import LmforgeError
from lmforge.model.attention import Attention
from lmforge.model.attention_backend import SDPA, backend_of
from lmforge.model.attention_mask import build_attention_mask  # noqa: F401  (moved; kept importable from here)
from lmforge.model.config import ModelConfig
from lmforge.model.encoder import InputExtras, MLMTransform
from lmforge.model.layer_inputs import layer_inputs, needs_input_extras
from lmforge.model.mla import MLAttention
from lmforge.model.moe import make_ffn, moe_aux_loss
from lmforge.model.norms import add_and_norm, make_norm
from lmforge.model.segments import check_segment_ids, segment_positions


def float32_logits(head: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The LM head's output as float32 from float32 sums, whatever the compute dtype: logits rounded to bf16 tie
    tokens (SmolLM2 int4: "The" and "L" both 25.125, in float32 25.113 and 25.070), and greedy picks the wrong one.

    A head with its own float32-output path uses it (quant.py's int8/int4 linears, inference.py's kernel linear); a
    bf16 / fp16 nn.Linear computes in float32 from its upcast weight (exact, slower: prepared CPU models run the bf16
    kernel instead); a float32 head (or one under autocast) is called as it is.
    """
    if hasattr(head, "float_logits"):
        return head.float_logits(x)
    if type(head) is nn.Linear and head.weight.dtype in (torch.bfloat16, torch.float16) and \
            not torch.is_autocast_enabled(x.device.type):
        bias = None if head.bias is None else head.bias.float()
        return nn.functional.linear(x.float(), head.weight.float(), bias)
    return head(x).float()


class Block(nn.Module):
    """One residual block: attention then MLP, each added back to the residual stream.

    norm_position "pre" (GPT-2/Llama): x + f(norm(x)); "post" (BERT): norm(x + f(x)); "sandwich" (Gemma):
    x + post_norm(f(norm(x))).
    """

    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        self.norm_position = cfg.norms.position
        self.attn_norm = make_norm(cfg.norms.kind, cfg.dim, cfg.norms.eps)
        self.attn = MLAttention(cfg, layer_idx) if cfg.attention.kind == "mla" else Attention(cfg, layer_idx)
        self.mlp_norm = make_norm(cfg.norms.kind, cfg.dim, cfg.norms.eps)
        self.mlp = make_ffn(cfg, layer_idx)  # dense MLP, or MoE on the layers the config routes
        if cfg.norms.position == "sandwich":
            self.attn_post_norm = make_norm(cfg.norms.kind, cfg.dim, cfg.norms.eps)
            self.mlp_post_norm = make_norm(cfg.norms.kind, cfg.dim, cfg.norms.eps)

    def forward(self, x, cos, sin, mask, is_causal, backend=SDPA, q_scale=None):
        if self.norm_position == "post":
            x = self.attn_norm(x + self.attn(x, cos, sin, mask, is_causal, backend, q_scale))
            return self.mlp_norm(x + self.mlp(x))
        h = self.attn(self.attn_norm(x), cos, sin, mask, is_causal, backend, q_scale)
        if self.norm_position == "sandwich":
            x = x + self.attn_post_norm(h)
            return x + self.mlp_post_norm(self.mlp(self.mlp_norm(x)))
        x, h = add_and_norm(self.mlp_norm, x, h)  # x = x + h; h = mlp_norm(x) (one kernel call once prepared)
        return x + self.mlp(h)


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.dim)
        if needs_input_extras(cfg):
            self.extras = InputExtras(cfg)
        self.layers = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layers))
        # Post-norm blocks end normalised already: BERT has no final norm.
        self.norm = make_norm(cfg.norms.kind, cfg.dim, cfg.norms.eps) if cfg.norms.position != "post" else nn.Identity()
        if cfg.heads.mlm:
            self.head_transform = MLMTransform(cfg)
        self.lm_head = nn.Linear(cfg.dim, cfg.vocab_size, bias=cfg.heads.mlm)
        self.tie_weights()
        self.init_weights()
        # model/inference.py may set this to a kernel running a whole batch-1 decode step (decode_stack.py): it
        # returns hidden_states' result for the calls it takes and None for the others.
        self.fused_decode = None

    def tie_weights(self) -> None:
        if self.config.tie_embeddings:
            self.lm_head.weight = self.embed.weight

    @torch.no_grad()
    def init_weights(self) -> None:
        """GPT-2 / Llama init: N(0, std) everywhere, residual output projections scaled by 1/sqrt(2 n_layers)."""
        std = self.config.init_std
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                scale = 1 / math.sqrt(2 * self.config.n_layers) if name.endswith(("o_proj", "down_proj")) else 1
                nn.init.normal_(module.weight, mean=0.0, std=std * scale)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=std)
            elif hasattr(module, "reset_parameters") and not list(module.children()):
                module.reset_parameters()

    def aux_loss(self) -> torch.Tensor:
        """The MoE load-balancing loss of the last forward (0 for dense models or aux_loss_coef=0)."""
        return moe_aux_loss(self)

    def _hooked(self) -> bool:
        """Whether a forward hook sits on the embedding, a layer or the final norm (MTP reads the norm's output,
        gated cross-attention hooks layers): the one-call decode step would run past it, so the layers run."""
        return any(m._forward_hooks or m._forward_pre_hooks for m in (self.embed, self.norm, *self.layers))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                positions: torch.Tensor | None = None, kv_cache=None,
                last_only: bool = False, token_type_ids: torch.Tensor | None = None,
                logit_indices: torch.Tensor | None = None, inputs_embeds: torch.Tensor | None = None,
                segment_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Float logits [B, T, V] (or [B, 1, V] with last_only) for token ids [B, T].

        attention_mask: [B, S] key mask over cached + new tokens (1 = token, 0 = padding); when given and
        positions is not, positions count only real tokens, so left padding does not shift them.
        kv_cache: any object whose `backend` stores the new keys/values and runs attention (attention_backend.py;
        the caches are in lmforge.generation.cache); None: plain SDPA. A paged cache (the serving engine's) takes
        packed tokens [1, N] of several sequences with explicit positions.
        logit_indices: compute logits only at these positions of T (e.g. each packed sequence's last token).
        segment_ids: [B, T] documents packed in a row (contiguous runs of one id): attention stays inside each one
        and positions restart at each (segments.py); training only, not with a KV cache.
        """
        x = self.hidden_states(input_ids, attention_mask, positions, kv_cache, token_type_ids,
                               inputs_embeds=inputs_embeds, segment_ids=segment_ids)
        if last_only:
            x = x[:, -1:] if x.shape[1] > 1 else x  # (a decode step's one token: no slicing op)
        elif logit_indices is not None:
            x = x[:, logit_indices]
        if self.config.heads.mlm:
            x = self.head_transform(x)
        logits = float32_logits(self.lm_head, x)
        if self.config.heads.final_logit_softcap is not None:
            cap = self.config.heads.final_logit_softcap
            logits = torch.tanh(logits / cap) * cap
        return logits

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                      positions: torch.Tensor | None = None, kv_cache=None,
                      token_type_ids: torch.Tensor | None = None,
                      inputs_embeds: torch.Tensor | None = None,
                      segment_ids: torch.Tensor | None = None) -> torch.Tensor:
        """The final hidden states [B, T, dim] (after the final norm): what the LM head reads, what embeddings pool."""
        if inputs_embeds is not None:  # [B, T, dim] instead of ids (prompt tuning, lmforge.peft)
            input_ids = inputs_embeds[..., 0]  # only its shape and device are read below
        if input_ids.dim() != 2:
            raise LmforgeError(f"input_ids must be [batch, seq], got shape {tuple(input_ids.shape)}")
        B, T = input_ids.shape
        backend = backend_of(kv_cache)
        if backend.explicit_positions and positions is None:
            raise LmforgeError(f"{type(kv_cache).__name__} needs explicit positions")
        if not backend.needs_mask and attention_mask is not None:
            raise LmforgeError(f"{type(kv_cache).__name__} takes no attention_mask: it masks by position (no padding)")
        if self.config.positions.kind == "alibi" and not backend.needs_mask and backend.alibi_slopes is None:
            raise LmforgeError(f"{type(kv_cache).__name__} masks attention by itself and adds no ALiBi biases: an "
                               "ALiBi model decodes with the default (contiguous) KV cache or without a cache")
        plain = attention_mask is None and positions is None and token_type_ids is None and inputs_embeds is None
        if self.fused_decode is not None and plain and segment_ids is None and not self._hooked() and \
                (x := self.fused_decode(input_ids, backend)) is not None:
            return x
        start = backend.begin(T)  # cache offset of the first new token (int, or a tensor for a static cache)
        if segment_ids is not None:
            check_segment_ids(segment_ids, input_ids, attention_mask, kv_cache)
            positions = segment_positions(segment_ids) if positions is None else positions
        if positions is None:
            if attention_mask is not None:
                positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, start:start + T]
            else:
                new = torch.arange(T, device=input_ids.device) + start if torch.is_tensor(start) else \
                    torch.arange(start, start + T, device=input_ids.device)
                positions = new.expand(B, T)
        x = self.embed(input_ids) if inputs_embeds is None else inputs_embeds
        if hasattr(self, "extras"):
            x = self.extras(x, positions, token_type_ids)
        per_layer = layer_inputs(self.config, attention_mask, positions, start, T, x.dtype, segment_ids,
                                 masks=backend.needs_mask)
        for layer, (cos, sin, mask, is_causal, q_scale) in zip(self.layers, per_layer, strict=True):
            x = layer(x, cos, sin, mask, is_causal, backend, q_scale)
        backend.end(T)
        return self.norm(x)
