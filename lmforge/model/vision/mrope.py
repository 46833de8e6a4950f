"""M-RoPE, multimodal rotary positions (Wang et al., 2024, "Qwen2-VL"), the 2D/3D RoPE of image patches in the LM.

Every token gets three positions (temporal, height, width). Text tokens use the same number three times, so text
alone is plain RoPE; an image's patches (after the 2x2 spatial merge) get (start, start + row, start + col), and the
text after it restarts at start + max(rows, cols). The rotary frequencies are split into three sections
(mrope_section, e.g. 16/24/24 pairs), each rotated by its own axis' position.
"""

import itertools

import torch

from lmforge.common.errors import LmforgeError
from lmforge.model.rope import apply_rope, rope_inv_freq

TEXT, IMAGE, VIDEO = 0, 1, 2


def token_types(ids: torch.Tensor, image_token_id: int, video_token_id: int | None = None) -> torch.Tensor:
    """[B, T] modality per token: 0 text, 1 image patch, 2 video patch."""
    types = (ids == image_token_id).long()
    if video_token_id is not None:
        types = types + 2 * (ids == video_token_id).long()
    return types


def vision_position_ids(start: int, grid_thw, spatial_merge: int) -> torch.Tensor:
    """[3, t*h*w] positions of one image / video's merged patches, row-major, offset by `start`."""
    t, h, w = (int(v) for v in grid_thw)
    h, w = h // spatial_merge, w // spatial_merge
    tt, hh, ww = torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij")
    return torch.stack([tt, hh, ww]).reshape(3, -1) + start


def mrope_position_ids(types: torch.Tensor, image_grids=None, video_grids=None, attention_mask=None,
                       spatial_merge: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """(positions [3, B, T], deltas [B, 1]) for a batch; padding (attention_mask 0) stays at 0.

    image_grids / video_grids: (t, h, w) patch grids, one per image / video in order over the batch (before the
    merge). delta = next position - length: decoding continues at position (length + delta) on all three axes.
    """
    grids = {IMAGE: iter(image_grids if image_grids is not None else []),
             VIDEO: iter(video_grids if video_grids is not None else [])}
    B, T = types.shape
    positions = torch.zeros(3, B, T, dtype=torch.long)
    deltas = []
    for b in range(B):
        keep = attention_mask[b].bool().cpu() if attention_mask is not None else torch.ones(T, dtype=torch.bool)
        row_types = types[b].cpu()[keep].tolist()
        pieces, pos = [], 0
        start = 0
        for kind, run in itertools.groupby(row_types):
            n = len(list(run))
            if kind == TEXT:
                pieces.append(torch.arange(pos, pos + n).expand(3, -1))
                pos += n
            else:
                grid = next(grids[kind], None)
                if grid is None:
                    name = "image" if kind == IMAGE else "video"
                    raise LmforgeError(f"row {b} has more {name} runs than {name} grids given")
                ids = vision_position_ids(pos, grid, spatial_merge)
                if ids.shape[1] != n:
                    raise LmforgeError(f"row {b}: a run of {n} vision tokens at {start} but grid {list(grid)} "
                                       f"merged by {spatial_merge} gives {ids.shape[1]}")
                pieces.append(ids)
                pos += max(int(grid[1]), int(grid[2])) // spatial_merge
            start += n
        row = torch.cat(pieces, dim=1) if pieces else torch.zeros(3, 0, dtype=torch.long)
        positions[:, b, keep] = row
        deltas.append((int(row.max()) + 1 if row.numel() else 0) - len(row_types))
    return positions.to(types.device), torch.tensor(deltas, device=types.device).unsqueeze(1)


def mrope_cos_sin(positions: torch.Tensor, head_dim: int, theta: float, section: list[int],
                  dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [B, T, head_dim] for 3-axis positions [3, B, T]: frequency pairs [0, s0) follow the temporal
    position, [s0, s0 + s1) the height, the rest the width (then duplicated for the rotate-half layout)."""
    if sum(section) != head_dim // 2:
        raise LmforgeError(f"mrope_section {section} must sum to head_dim / 2 = {head_dim // 2}")
    inv_freq = rope_inv_freq(head_dim, theta).to(positions.device)
    freqs = positions.to(torch.float32)[..., None] * inv_freq  # [3, B, T, head_dim/2]
    chosen = torch.cat([part[i % 3] for i, part in enumerate(freqs.split(section, dim=-1))], dim=-1)
    emb = torch.cat((chosen, chosen), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_mrope(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
    """Rotate queries and keys [B, H, T, D]: the usual RoPE rotation with M-RoPE's per-section angles."""
    return apply_rope(q, cos, sin), apply_rope(k, cos, sin)
