"""Q4_K quantization (llama.cpp's 4-bit K-quant) in numpy, which gguf-py's `quantize` does not implement.

A 256-value super-block holds 8 sub-blocks of 32: each value is d*sc*q - dmin*m with q in 0..15, the sub-block's
6-bit scale sc and min m packed into 12 bytes, the super-block's fp16 d and dmin in front (`block_q4_K`). The
per-sub-block range is taken as [min(x, 0), max(x)] (llama.cpp's reference quantizer without its search).
"""

import numpy as np

QK_K = 256
Q4_K_BYTES = 144  # fp16 d, fp16 dmin, 12 bytes of scales/mins, 128 bytes of nibbles


def _six_bit(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fp16 step, 6-bit codes) with codes * step ~ values (values >= 0, per super-block along axis -1)."""
    step = (values.max(axis=-1, keepdims=True) / 63).astype(np.float16)
    safe = np.where(step == 0, 1, step.astype(np.float32))
    return step, np.clip(np.rint(values / safe), 0, 63).astype(np.uint8)


def quantize_q4_k(values: np.ndarray) -> np.ndarray:
    """float rows (last dim a multiple of 256) -> uint8 Q4_K blocks, shape [..., last/256*144]."""
    shape = values.shape
    if shape[-1] % QK_K:
        raise ValueError(f"Q4_K rows need a multiple of {QK_K} values, got {shape[-1]}")
    x = values.astype(np.float32).reshape(-1, 8, 32)  # super-blocks, sub-blocks, values
    low = np.minimum(x.min(axis=-1), 0)
    scale, mins = (x.max(axis=-1) - low) / 15, -low
    d, sc = _six_bit(scale)
    dmin, m = _six_bit(mins)
    step = (d.astype(np.float32) * sc)[..., None]
    offset = (dmin.astype(np.float32) * m)[..., None]
    q = np.clip(np.rint((x + offset) / np.where(step == 0, 1, step)), 0, 15).astype(np.uint8)
    packed = np.empty((x.shape[0], 12), dtype=np.uint8)
    packed[:, 0:4] = sc[:, :4] | ((sc[:, 4:] >> 4) << 6)
    packed[:, 4:8] = m[:, :4] | ((m[:, 4:] >> 4) << 6)
    packed[:, 8:12] = (sc[:, 4:] & 0xF) | ((m[:, 4:] & 0xF) << 4)
    pairs = q.reshape(-1, 4, 2, 32)  # sub-blocks 2i (low nibbles) and 2i+1 (high nibbles) share 32 bytes
    nibbles = (pairs[:, :, 0] | (pairs[:, :, 1] << 4)).reshape(-1, 128)
    blocks = np.concatenate([d.view(np.uint8), dmin.view(np.uint8), packed, nibbles], axis=1)
    return blocks.reshape(*shape[:-1], shape[-1] // QK_K * Q4_K_BYTES)
