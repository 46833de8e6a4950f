"""The Vision Transformer (Dosovitskiy et al., 2021, "An Image is Worth 16x16 Words") in its CLIP and SigLIP forms.

pixels [B, C, H, W] -> patchify (a stride-p convolution) -> + positions (CLIP: a class token first) -> n_layers x
pre-norm [attention; GELU MLP] -> CLIP: pooled = post_norm(class token) / SigLIP: post_norm, then attention pooling
(a learned probe, "MAP" head). Module names follow transformers', so an HF state dict loads as it is.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.common.errors import ConfigError

VIT_KINDS = ("clip", "siglip")


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    """CLIP's sigmoid approximation of GELU: x * sigmoid(1.702 x)."""
    return x * torch.sigmoid(1.702 * x)


VISION_ACTIVATIONS = {
    "quick_gelu": quick_gelu,
    "gelu": F.gelu,
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
}


def _positive(name: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{name}={value!r} must be a positive integer")


@dataclass(frozen=True)
class ViTConfig:
    """A vision tower: `kind` "clip" (class token, pre-norm, pooled class token) or "siglip" (no class token,
    attention-pooling head)."""

    kind: str = "clip"
    image_size: int = 224
    patch_size: int = 16
    channels: int = 3
    dim: int = 768
    n_layers: int = 12
    n_heads: int = 12
    ffn_dim: int = 3072
    act: str = "quick_gelu"
    eps: float = 1e-5
    use_head: bool = True  # SigLIP's attention-pooling head

    def __post_init__(self):
        if self.kind not in VIT_KINDS:
            raise ConfigError(f"vision tower kind {self.kind!r} is not supported; supported: {', '.join(VIT_KINDS)}")
        for name in ("image_size", "patch_size", "channels", "dim", "n_layers", "n_heads", "ffn_dim"):
            _positive(name, getattr(self, name))
        if self.image_size % self.patch_size:
            raise ConfigError(f"image_size={self.image_size} must be a multiple of patch_size={self.patch_size}")
        if self.dim % self.n_heads:
            raise ConfigError(f"dim={self.dim} must be a multiple of n_heads={self.n_heads}")
        if self.act not in VISION_ACTIVATIONS:
            raise ConfigError(f"activation {self.act!r} is not supported; supported: {', '.join(VISION_ACTIVATIONS)}")

    @property
    def n_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


class SelfAttention(nn.Module):
    """Multi-head attention with biased q/k/v/out projections (CLIP, SigLIP, the CLIP text tower)."""

    def __init__(self, dim: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.q_proj, self.k_proj, self.v_proj = (nn.Linear(dim, dim) for _ in range(3))
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = (p(x).view(B, T, self.n_heads, -1).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal and mask is None)
        return self.out_proj(out.transpose(1, 2).reshape(B, T, D))


class FeedForward(nn.Module):
    """fc1 -> activation -> fc2 (both with bias)."""

    def __init__(self, dim: int, ffn_dim: int, act: str):
        super().__init__()
        self.act = VISION_ACTIVATIONS[act]
        self.fc1, self.fc2 = nn.Linear(dim, ffn_dim), nn.Linear(ffn_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class EncoderLayer(nn.Module):
    """x + attn(LN(x)); x + mlp(LN(x)): the pre-norm block every tower here shares."""

    def __init__(self, dim: int, n_heads: int, ffn_dim: int, act: str, eps: float):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(dim, eps=eps)
        self.self_attn = SelfAttention(dim, n_heads)
        self.layer_norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = FeedForward(dim, ffn_dim, act)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x), mask, is_causal)
        return x + self.mlp(self.layer_norm2(x))


class Encoder(nn.Module):
    def __init__(self, n_layers: int, dim: int, n_heads: int, ffn_dim: int, act: str, eps: float):
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(dim, n_heads, ffn_dim, act, eps) for _ in range(n_layers))

    def forward(self, x, mask=None, is_causal=False, upto: int | None = None) -> list[torch.Tensor]:
        """All hidden states: [input, after layer 1, ..., after layer `upto` (default: all)]."""
        states = [x]
        for layer in self.layers[:upto]:
            states.append(layer(states[-1], mask, is_causal))
        return states


class PatchEmbeddings(nn.Module):
    """Patchify: a conv with kernel = stride = patch size; CLIP prepends a learned class token."""

    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.cfg = cfg
        if cfg.kind == "clip":
            self.class_embedding = nn.Parameter(torch.zeros(cfg.dim))
        self.patch_embedding = nn.Conv2d(cfg.channels, cfg.dim, cfg.patch_size, cfg.patch_size, bias=cfg.kind != "clip")
        self.position_embedding = nn.Embedding(cfg.n_patches + (cfg.kind == "clip"), cfg.dim)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.patch_embedding(pixels.to(self.patch_embedding.weight.dtype)).flatten(2).transpose(1, 2)
        if self.cfg.kind == "clip":
            x = torch.cat([self.class_embedding.expand(x.shape[0], 1, -1), x], dim=1)
        return x + self.position_embedding.weight


class AttentionPoolingHead(nn.Module):
    """SigLIP's multi-head attention pooling: one learned probe attends over the patches, then a residual MLP."""

    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.probe = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.attention = nn.MultiheadAttention(cfg.dim, cfg.n_heads, batch_first=True)
        self.layernorm = nn.LayerNorm(cfg.dim, eps=cfg.eps)
        self.mlp = FeedForward(cfg.dim, cfg.ffn_dim, cfg.act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.attention(self.probe.expand(x.shape[0], -1, -1), x, x, need_weights=False)[0]
        return (h + self.mlp(self.layernorm(h)))[:, 0]


class VisionTransformer(nn.Module):
    """A CLIP or SigLIP vision tower. forward -> (last hidden states [B, N, D], pooled [B, D])."""

    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.config = cfg
        self.embeddings = PatchEmbeddings(cfg)
        if cfg.kind == "clip":
            self.pre_layrnorm = nn.LayerNorm(cfg.dim, eps=cfg.eps)  # sic: transformers' spelling
        self.encoder = Encoder(cfg.n_layers, cfg.dim, cfg.n_heads, cfg.ffn_dim, cfg.act, cfg.eps)
        self.post_layernorm = nn.LayerNorm(cfg.dim, eps=cfg.eps)
        if cfg.kind == "siglip" and cfg.use_head:
            self.head = AttentionPoolingHead(cfg)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self, std: float = 0.02) -> None:
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d, nn.Embedding)):
                nn.init.normal_(module.weight, std=std)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
        for name, p in self.named_parameters():
            if name.endswith(("class_embedding", "probe")):
                nn.init.normal_(p, std=std)

    def check_pixels(self, pixels: torch.Tensor) -> None:
        cfg = self.config
        if pixels.dim() != 4 or pixels.shape[1:] != (cfg.channels, cfg.image_size, cfg.image_size):
            raise ValueError(f"pixel_values must be [batch, {cfg.channels}, {cfg.image_size}, {cfg.image_size}], "
                             f"got {tuple(pixels.shape)}")

    def hidden_states(self, pixels: torch.Tensor, upto: int | None = None) -> list[torch.Tensor]:
        """[embeddings (after CLIP's pre-norm), after layer 1, ...]: LLaVA reads the second-to-last."""
        self.check_pixels(pixels)
        x = self.embeddings(pixels)
        if self.config.kind == "clip":
            x = self.pre_layrnorm(x)
        return self.encoder(x, upto=upto)

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        last = self.hidden_states(pixels)[-1]
        if self.config.kind == "clip":
            return last, self.post_layernorm(last[:, 0])
        last = self.post_layernorm(last)
        return last, self.head(last) if hasattr(self, "head") else None


def causal_padding_mask(attention_mask: torch.Tensor | None, T: int, dtype: torch.dtype) -> torch.Tensor | None:
    """An additive [B, 1, T, T] mask: causal, and padding keys (attention_mask 0) hidden by the dtype's most negative
    value (not -inf: a padded query that sees no key stays finite); None: causal only."""
    if attention_mask is None:
        return None
    causal = torch.ones(T, T, dtype=torch.bool, device=attention_mask.device).tril()
    allowed = causal[None, None] & attention_mask.bool()[:, None, None, :]
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)
