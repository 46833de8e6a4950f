"""A prepared decoder's batch-1 decode step in one kernel call, from the new token's id to the final norm's output
(torch.classes.lmforge.DecodeStack, csrc/decode_stack.cpp), installed by `prepare_for_inference` as
`Transformer.fused_decode` on models whose every layer it put on lmforge's float kernels or on its int8 / int4
quantized kernels (a bf16 model's Int8Linear / Int4Linear layers: the quantized ops' own functions, called directly).

Layer by layer, a prepared step makes 8 operator calls and about 8 module calls per layer, plus a dozen to build the
step's RoPE cos/sin: on SmolLM2 (30 layers, bf16, one thread) 2-2.5 ms of Python and dispatch against the ~8 ms in
which its projections stream their weights. The kernel runs the same kernels in the same order (the hidden states
are those of the layer-by-layer step, bit for bit), and the RoPE angles come from a table of cos/sin by position,
computed once by the same function (layer_inputs.rope_tables) and grown by doubling: its rows are the numbers a step
would compute for its position. It takes what generate's single-sequence path gives: one new token, no mask and no
explicit positions, on a batch-1 contiguous KV cache (`AttentionBackend.kv_buffers`); for any other call it returns
None and the layers run one by one.
"""

import torch

from lmforge.kernels.quant_linear import int8_activations
from lmforge.model.attention_backend import AttentionBackend
from lmforge.model.config import ModelConfig
from lmforge.model.config_attention import layer_window
from lmforge.model.layer_inputs import rope_tables

MIN_TABLE = 256  # positions of the first RoPE table


def config_allows(cfg: ModelConfig) -> bool:
    """A model whose step the kernel computes: causal RoPE attention over every position in every layer (no sliding
    window, no local RoPE base, no length-dependent frequencies, no LogN scaling), pre-norm blocks, no input extras."""
    pos = cfg.positions
    return pos.kind == "rope" and pos.rope_local_theta is None and pos.logn_train_len is None and \
        (pos.rope_scaling or {}).get("rope_type") != "dynamic" and cfg.rope_dim == cfg.resolved_head_dim and \
        cfg.attention.causal and cfg.norms.position == "pre" and cfg.norms.kind == "rmsnorm" and \
        not cfg.heads.mlm and all(layer_window(cfg, i) is None for i in range(cfg.n_layers))


class DecodeStack:
    """`Transformer.fused_decode`: hidden_states of a batch-1 decode step, or None where the layers run one by one.
    `stack`: the DecodeStack custom class built over the model's packed weights. int8_x: for a model with int4
    layers, whether they quantized their inputs to int8 when it was built (quant_linear.int8_activations()); a step
    taken after that changed runs the layers, which follow the new setting."""

    def __init__(self, cfg: ModelConfig, stack, dtype: torch.dtype, int8_x: bool | None = None):
        self.cfg, self.stack, self.dtype, self.int8_x = cfg, stack, dtype, int8_x
        self.cos = self.sin = torch.empty(0, cfg.resolved_head_dim, dtype=dtype)

    def __call__(self, input_ids: torch.Tensor, backend: AttentionBackend) -> torch.Tensor | None:
        if input_ids.shape != (1, 1) or input_ids.device.type != "cpu" or input_ids.dtype != torch.long:
            return None
        buffers = backend.kv_buffers()
        if buffers is None or buffers[0].dtype != self.dtype or \
                (self.int8_x is not None and int8_activations() != self.int8_x):
            return None
        keys, values, _ = buffers
        start = backend.begin(1)
        if start >= len(self.cos):
            self._grow(start + 1)
        x = self.stack.step(input_ids, keys, values, start, self.cos, self.sin)
        backend.end(1)
        return x

    def _grow(self, n: int) -> None:
        """RoPE tables [n', head_dim] for positions 0..n'-1, n' the next power of two >= n (at least MIN_TABLE)."""
        n = max(MIN_TABLE, 1 << (n - 1).bit_length())
        cos, sin = rope_tables(self.cfg, torch.arange(n)[None], self.dtype, local=False)
        self.cos, self.sin = cos[0].contiguous(), sin[0].contiguous()
