"""Training memory from a ModelConfig: model states per ZeRO stage (Rajbhandari et al., 2020, "ZeRO") and
activations per layer (Korthikanti et al., 2022, "Reducing Activation Recomputation in Large Transformer Models").

Pure arithmetic on the config (no module is built); every figure is bytes on one data-parallel rank.
"""

from lmforge.common.errors import ConfigError
from lmforge.model.config_ffn import is_moe_layer

DTYPE_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}
ZERO_STAGES = (0, 1, 2, 3)


def dtype_bytes(dtype: str) -> int:
    if dtype not in DTYPE_BYTES:
        raise ConfigError(f"dtype must be one of {', '.join(DTYPE_BYTES)}, got {dtype!r}")
    return DTYPE_BYTES[dtype]


def zero_model_states(n_params: int, stage: int, dp: int, dtype: str = "bf16") -> dict[str, float]:
    """Bytes per rank of weights, gradients and Adam states for ZeRO stage 0-3 over `dp` data-parallel ranks.

    Convention (ZeRO paper, section 3): mixed precision (bf16/fp16) keeps 2-byte weights and gradients and
    K = 12 bytes of optimizer state per parameter (fp32 master weights, Adam m and v): 16 bytes/param in all.
    Pure fp32 training keeps 4 + 4 bytes and K = 8 (m and v; the weights are the master copy).
    Stage 0: (2 + 2 + K) Psi; stage 1 (P_os): 2 Psi + 2 Psi + K Psi / N; stage 2 (P_os+g): 2 Psi + (2 + K) Psi / N;
    stage 3 (P_os+g+p): (2 + 2 + K) Psi / N.
    """
    if stage not in ZERO_STAGES:
        raise ConfigError(f"zero stage must be one of 0, 1, 2, 3, got {stage!r}")
    if not isinstance(dp, int) or dp < 1:
        raise ConfigError(f"data-parallel size must be a positive integer, got {dp!r}")
    w = dtype_bytes(dtype)
    k = 12 if w == 2 else 8
    weights, grads, optim = w * n_params, w * n_params, k * n_params
    optim /= dp if stage >= 1 else 1
    grads /= dp if stage >= 2 else 1
    weights /= dp if stage >= 3 else 1
    return {"weights": weights, "gradients": grads, "optimizer": optim, "total": weights + grads + optim}


def _attention_activations(cfg, seq_len: int, flash: bool, dropout: bool) -> tuple[int, int]:
    """(bytes per token, bytes per token per key) an attention block keeps for backward, 2-byte activations."""
    h, heads = cfg.dim, cfg.n_heads
    if cfg.attention.kind == "mla":  # naive MLA materialises per-head K/V from the latent
        att = cfg.attention
        d_qk, d_v, kv_heads = att.qk_nope_head_dim + att.qk_rope_head_dim, att.v_head_dim, heads
        latents = 2 * (att.kv_lora_rank + att.qk_rope_head_dim) + 2 * att.kv_lora_rank  # kv_a out, its norm out
        latents += 4 * att.q_lora_rank if att.q_lora_rank else 0  # q_a out, its norm out
    else:
        d_qk = d_v = cfg.resolved_head_dim
        kv_heads, latents = cfg.resolved_kv_heads, 0
    per_token = 2 * h + 2 * heads * d_qk + 2 * kv_heads * d_qk + 2 * kv_heads * d_v + 2 * heads * d_v + latents
    per_token += h if dropout else 0  # 1-byte mask after the output projection
    if flash:  # softmax statistics only (fp32 logsumexp per head): the s x s scores are recomputed
        return per_token + 4 * heads, 0
    return per_token, heads * (2 + (3 if dropout else 0))  # softmax out (2), dropout mask (1) + output (2)


def _ffn_activations(cfg, layer_idx: int, dropout: bool) -> int:
    """Bytes per token the MLP (or MoE) of one layer keeps: inputs of every matmul and activation."""
    h = cfg.dim
    drop = h if dropout else 0
    if not is_moe_layer(cfg, layer_idx):
        gated = cfg.ffn.kind in ("swiglu", "geglu")
        # gated: gate out, up out, act(gate), product -> 4 f; plain: up out (act input), act out -> 2 f
        return 2 * h + 2 * (4 if gated else 2) * cfg.ffn_dim + drop
    f = cfg.moe.ffn_dim or cfg.ffn_dim
    k = cfg.moe.n_experts_per_tok
    router = 4 * cfg.moe.n_routed_experts  # fp32 router logits / scores
    routed = k * (2 * h + 8 * f)  # each token's k sorted copies through a SwiGLU expert
    shared = 8 * f * cfg.moe.n_shared_experts
    return 2 * h + router + routed + shared + drop


def layer_activation_bytes(cfg, layer_idx: int, seq_len: int, batch: int, flash: bool = True,
                           dropout: bool = False) -> int:
    """Activation bytes one block keeps for backward (16-bit activations, 1-byte dropout masks).

    Korthikanti et al. count s b h (34 + 5 a s / h) for a GPT block: attention 11 sbh + 5 a s^2 b, MLP 19 sbh,
    two LayerNorms 4 sbh. This generalises it: q/k/v sized by query and kv heads (GQA/MQA, MLA's materialised
    K/V plus latents), a gated MLP keeping four f-wide tensors (SwiGLU) instead of two, MoE keeping each token's
    k routed copies and fp32 router scores, no dropout unless asked. With flash / SDPA attention the
    a s^2 b score term drops (only an fp32 logsumexp per head and token is kept). With dropout=True,
    flash=False, MHA and a 4h GELU MLP it is exactly s b h (34 + 5 a s / h).
    """
    attn, per_key = _attention_activations(cfg, seq_len, flash, dropout)
    norms = 2 * cfg.dim * (2 + 2 * (cfg.norms.position == "sandwich"))  # each norm keeps its input
    per_token = attn + _ffn_activations(cfg, layer_idx, dropout) + norms + per_key * seq_len
    return per_token * seq_len * batch


def activation_memory(cfg, seq_len: int, batch: int, flash: bool = True, dropout: bool = False) -> dict[str, int]:
    """Activation bytes of a forward pass, without and with full activation checkpointing of every block.

    Without: the sum over blocks, plus the head (final norm input, 16-bit logits and fp32 logits for the loss).
    With (Korthikanti's "full recomputation"): each block keeps only its 2 s b h input, plus the largest block's
    activations while it is recomputed in backward, plus the head.
    """
    layers = [layer_activation_bytes(cfg, i, seq_len, batch, flash, dropout) for i in range(cfg.n_layers)]
    head = seq_len * batch * (2 * cfg.dim + 6 * cfg.vocab_size)
    checkpoint_inputs = cfg.n_layers * 2 * cfg.dim * seq_len * batch
    return {
        "per_layer_max": max(layers),
        "no_checkpointing": sum(layers) + head,
        "checkpointing": checkpoint_inputs + max(layers) + head,
    }
