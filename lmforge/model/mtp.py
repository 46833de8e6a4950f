"""Multi-token prediction (MTP; DeepSeek-AI, 2024, "DeepSeek-V3 Technical Report", section 2.2).

D sequential modules share the main model's embedding and output head. Module k combines the previous depth's
hidden state at position i (RMSNorm) with the embedding of token i+k (RMSNorm) through a linear projection and one
transformer block, and predicts token i+k+1. The modules live beside the Transformer (transformers' DeepseekV3
ignores them too), add a training loss, and can draft tokens for speculative decoding.
"""

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.common.errors import LmforgeError
from lmforge.model.config import ModelConfig
from lmforge.model.norms import RMSNorm, make_norm
from lmforge.model.rope import rope_cos_sin, rope_inv_freq
from lmforge.model.transformer import Block, Transformer


class MTPModule(nn.Module):
    """One depth: h' = Block(eh_proj([enorm(emb); hnorm(h)])), logits = head(norm(h')). Names follow the checkpoint."""

    def __init__(self, cfg: ModelConfig, depth: int):
        super().__init__()
        self.enorm = RMSNorm(cfg.dim, cfg.norms.eps)
        self.hnorm = RMSNorm(cfg.dim, cfg.norms.eps)
        self.eh_proj = nn.Linear(2 * cfg.dim, cfg.dim, bias=False)  # embedding half first, as DeepSeek-V3 stores it
        self.block = Block(cfg, cfg.n_layers + depth)  # the layer index DeepSeek-V3 gives its MTP layer
        self.norm = make_norm(cfg.norms.kind, cfg.dim, cfg.norms.eps)

    def forward(self, h: torch.Tensor, emb: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = self.eh_proj(torch.cat([self.enorm(emb), self.hnorm(h)], dim=-1))
        return self.block(x, cos, sin, None, x.shape[1] > 1)


class MultiTokenPrediction(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.heads.n_mtp_modules < 1:
            raise LmforgeError("MultiTokenPrediction needs ModelConfig.heads.n_mtp_modules >= 1")
        self.config = cfg
        self.depths = nn.ModuleList(MTPModule(cfg, k) for k in range(cfg.heads.n_mtp_modules))
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=self.config.init_std)
            elif hasattr(module, "reset_parameters") and not list(module.children()):
                module.reset_parameters()

    def rope(self, length: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        positions = torch.arange(length, device=device)[None]
        inv_freq = rope_inv_freq(self.config.rope_dim, self.config.positions.rope_theta).to(device)
        return rope_cos_sin(positions, inv_freq, dtype)


def forward_with_hidden(model: Transformer, input_ids: torch.Tensor, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, final normed hidden states [B, T, D]) of the main model, read with a hook: the model is unchanged."""
    captured = {}
    handle = model.norm.register_forward_hook(lambda _m, _i, out: captured.__setitem__("h", out))
    try:
        logits = model(input_ids, **kwargs)
    finally:
        handle.remove()
    return logits, captured["h"]


def mtp_logits(model: Transformer, mtp: MultiTokenPrediction, input_ids: torch.Tensor,
               hidden: torch.Tensor) -> list[torch.Tensor]:
    """Logits of each depth k = 1..D: [B, T-k, V], where position i predicts input_ids[:, i+k+1]."""
    T = input_ids.shape[1]
    cos, sin = mtp.rope(T, hidden.device, hidden.dtype)
    h, out = hidden, []
    for k, module in enumerate(mtp.depths, start=1):
        n = T - k
        if n < 1:
            break
        h = module(h[:, :n], model.embed(input_ids[:, k:k + n]), cos[:, :n], sin[:, :n])
        out.append(model.lm_head(module.norm(h)).float())
    return out


def mtp_loss(model: Transformer, mtp: MultiTokenPrediction, input_ids: torch.Tensor,
             hidden: torch.Tensor) -> torch.Tensor:
    """mtp_loss_weight * mean over depths of the cross-entropy of token i+k+1 (unpadded sequences)."""
    if input_ids.shape[1] < 3:
        raise LmforgeError("the MTP loss needs sequences of at least 3 tokens")
    losses = []
    for k, logits in enumerate(mtp_logits(model, mtp, input_ids, hidden), start=1):
        targets = input_ids[:, k + 1:]
        if targets.shape[1] == 0:
            break
        losses.append(F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), targets.reshape(-1)))
    return mtp.config.heads.mtp_loss_weight * torch.stack(losses).mean()


@torch.no_grad()
def mtp_draft(model: Transformer, mtp: MultiTokenPrediction, input_ids: torch.Tensor) -> torch.Tensor:
    """Greedy tokens [B, 1 + D]: the main model's next token, then one draft per MTP depth (to verify later).

    Depth k runs over the same T positions as the prompt, fed the tokens shifted by k (the prompt followed by
    the tokens proposed so far), so its last position proposes token T+k.
    """
    logits, h = forward_with_hidden(model, input_ids)
    T = input_ids.shape[1]
    tokens = torch.cat([input_ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    cos, sin = mtp.rope(T, h.device, h.dtype)
    for k, module in enumerate(mtp.depths, start=1):
        h = module(h, model.embed(tokens[:, k:k + T]), cos, sin)
        next_token = model.lm_head(module.norm(h[:, -1:])).argmax(-1)
        tokens = torch.cat([tokens, next_token], dim=1)
    return tokens[:, T:]
