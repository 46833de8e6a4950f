"""Rewrite a loaded model for fast inference, in place: fewer and larger projections, packed weights, fused kernels.

At decode time a step runs a few dozen tokens through each layer, so the cost is in the number of operations more
than in their arithmetic. `prepare_for_inference`:
1. fuses q/k/v into one projection (`Attention.qkv_proj`) and SwiGLU's gate/up into one (`FusedSwiGLU`): one call
   over a larger weight instead of three or two (on 2 Zen 5 cores, bf16, 18 rows: 275 -> 222 us per layer); float
   and int8 / int4 quantized layers alike (a quantized gate/up runs its SiLU and product in a second pass, silu_mul);
2. gives each CPU linear the backend lmforge/kernels/backend_table.py picks for its dtype, the CPU and the call's
   size: lmforge's kernels (csrc/linear_bf16.cpp, csrc/linear_f32.cpp; SwiGLU's gate/up with the SiLU and the
   product applied before anything is written), oneDNN's packed linear (packed_linear.py) or F.linear. On AMX CPUs
   a bf16 kernel linear also holds its weight packed for oneDNN, which runs prompt-sized calls on AMX tiles (the
   bf16 projections' weights twice in memory there);
3. where lmforge's C++ CPU kernels build (lmforge.kernels), replaces RMSNorm (with the residual add before the MLP's
   norm: norms.add_and_norm), RoPE and SiLU-times-up by one-pass kernels (18 rows: 120 -> 40 us per layer), and
   runs a batch-1 decode step's attention (RoPE, the cache write, attention over the cache) in one call
   (attention_kernel.py). They round where the eager code rounds: in bfloat16, RoPE, the residual add and SiLU
   give the eager results bit for bit and RMSNorm within one unit in the last place (its mean sums in another
   order); the decode attention is float32 throughout; float32 results differ by float rounding only (~1e-7);
4. a bf16 / fp16 LM head that no kernel took becomes a float32 copy (Float32Head): logits are float32 sums.
Everything computes what the unprepared model computes; it is for inference only (no gradients, and the fused or
packed weights are not in the state dict: save a model before preparing it).
"""

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.kernels import onednn
from lmforge.kernels.backend_table import DECODE_ROWS, Backend, Capability, detect_capability, linear_plan
from lmforge.kernels.cpu_kernels import cpu_ops
from lmforge.model.attention import Attention
from lmforge.model.attention_kernel import CachedAttentionKernel
from lmforge.model.mlp import SwiGLU
from lmforge.model.norms import RMSNorm
from lmforge.model.packed_linear import PackedLinear, replace_module
from lmforge.model.rope import apply_rope

KERNEL_DTYPES = (torch.float32, torch.bfloat16)


def _fused_linear(linears: list[nn.Module]) -> nn.Module | None:
    """One linear computing the given ones side by side, or None when they cannot be fused. Quantized layers that
    know how (lmforge.quant's Int8Linear / Int4Linear: `concat_outputs`) give one quantized layer of their kind."""
    concat_outputs = getattr(type(linears[0]), "concat_outputs", None)
    if concat_outputs is not None:
        return concat_outputs(linears)
    if any(type(m) is not nn.Linear for m in linears):  # e.g. LoRA-wrapped: leave them alone
        return None
    first = linears[0].weight
    if any(m.weight.dtype != first.dtype or m.weight.device != first.device for m in linears) or \
            len({m.bias is None for m in linears}) > 1:
        return None
    fused = nn.Linear(first.shape[1], sum(m.out_features for m in linears), bias=linears[0].bias is not None,
                      device="meta")
    fused.weight = nn.Parameter(torch.cat([m.weight.detach() for m in linears]), requires_grad=False)
    if linears[0].bias is not None:
        fused.bias = nn.Parameter(torch.cat([m.bias.detach() for m in linears]), requires_grad=False)
    return fused


def _kernel_fits(x: torch.Tensor, *others: torch.Tensor) -> bool:
    return x.is_cpu and x.dtype in KERNEL_DTYPES and all(t.dtype == x.dtype for t in others)


class KernelLinear(nn.Module):
    """A linear on lmforge's kernel, its weight packed once: bf16 by the AVX512-BF16 dot product
    (torch.ops.lmforge.linear_bf16, weight in pairs of input channels), float32 by FMA (linear_f32). Inference only;
    the weight is not a parameter (as with PackedLinear). With `prompt_rows`, calls of more rows run on oneDNN's
    packed linear instead (the backend table's rule for AMX CPUs), from a second copy of the weight."""

    gate_block = None  # gated: the outputs alternate this many gate and up rows in the oneDNN copy (None: halves)

    def __init__(self, linear: nn.Linear, ops, gated: bool = False, prompt_rows: int | None = None):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach()
        if weight.dtype == torch.bfloat16:
            self.packed = ops.pack_linear_bf16(weight)
            self.kernel = ops.silu_gated_linear_bf16 if gated else ops.linear_bf16
        else:
            self.packed = ops.pack_linear_f32(weight, gated=gated)
            self.kernel = ops.silu_gated_linear_f32 if gated else ops.linear_f32
        self.bias = None if linear.bias is None else linear.bias.detach()
        self.gated, self.prompt_rows = gated, prompt_rows
        self.onednn = None if prompt_rows is None else onednn.pack(weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.onednn is not None and x.numel() > self.prompt_rows * self.in_features:
            return self._onednn_forward(x)
        return self.kernel(x, self.packed, self.bias, self.out_features)

    def _onednn_forward(self, x: torch.Tensor) -> torch.Tensor:
        y = onednn.linear(x, self.onednn, self.bias)
        if not self.gated:
            return y
        if self.gate_block is None:
            gate, up = y.chunk(2, dim=-1)
            return F.silu(gate) * up
        blocks = y.unflatten(-1, (-1, 2, self.gate_block))  # rounded where the eager SwiGLU rounds
        return (F.silu(blocks[..., 0, :]) * blocks[..., 1, :]).flatten(-2)

    def float_logits(self, x: torch.Tensor) -> torch.Tensor:
        """float32 outputs, not rounded to bf16 (an LM head's logits: transformer.float32_logits)."""
        if self.packed.dtype == torch.bfloat16:
            return torch.ops.lmforge.linear_bf16_float(x, self.packed, self.bias, self.out_features)
        return self(x)  # the float32 kernel's

    def weight_bytes(self) -> int:  # what one call reads (the packed weight holds whole blocks of outputs)
        return self.packed.nbytes + (0 if self.bias is None else self.bias.nbytes)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class SiluGatedKernelLinear(KernelLinear):
    """silu(x gate^T) * (x up^T), SwiGLU's first half, in one pass of lmforge's kernel
    (torch.ops.lmforge.silu_gated_linear_bf16 / _f32): each block of the packed weight holds some gate rows and the
    same up rows, so that a task holds both halves of its outputs and the [.., 2 * hidden] projection is never
    written."""

    def __init__(self, gate: nn.Linear, up: nn.Linear, ops, prompt_rows: int | None = None):
        hidden = gate.out_features
        both = _fused_linear([gate, up])  # [gate; up] rows
        if both.weight.dtype == torch.bfloat16:  # interleaved here in blocks of 16 rows (the bf16 kernel's half block);
            # the float32 packing interleaves the halves itself, and its kernel the bias
            interleaved = both.weight.view(2, hidden // 16, 16, -1).transpose(0, 1).reshape(2 * hidden, -1)
            both.weight = nn.Parameter(interleaved, requires_grad=False)
            if both.bias is not None:
                both.bias = nn.Parameter(both.bias.view(2, hidden // 16, 16).transpose(0, 1).reshape(-1),
                                         requires_grad=False)
            self.gate_block = 16
        super().__init__(both, ops, gated=True, prompt_rows=prompt_rows)
        self.out_features = hidden


def _plan(m: nn.Module, cap: Capability | None) -> tuple[Backend, Backend] | None:
    """(decode-sized, prompt-sized) backends of a plain CPU nn.Linear from the backend table; None for others
    (LoRA-wrapped, quantized, on another device)."""
    if cap is None or type(m) is not nn.Linear or m.weight.device.type != "cpu":
        return None
    return linear_plan(m.weight.dtype, cap, m.in_features)


def _prompt_rows(plan: tuple[Backend, Backend]) -> int | None:
    """The rows above which a kernel linear hands calls to oneDNN (its plan's second backend), else None."""
    decode, prompt = plan
    if prompt is decode:
        return None
    if (decode, prompt) != (Backend.KERNEL, Backend.ONEDNN):
        raise NotImplementedError(f"no linear runs {decode.value} for decode and {prompt.value} for prompts")
    return DECODE_ROWS


def _silu_gated(mlp: SwiGLU, cap: Capability | None, ops) -> SiluGatedKernelLinear | None:
    """The one-pass gate/up projection for this MLP, or None when the kernel does not apply."""
    gate, up = mlp.gate_proj, mlp.up_proj
    plans = [_plan(m, cap) for m in (gate, up)]
    if mlp.act is not F.silu or any(p is None or p[0] is not Backend.KERNEL for p in plans) or \
            gate.out_features % 16 or gate.weight.dtype != up.weight.dtype or (gate.bias is None) != (up.bias is None):
        return None
    return SiluGatedKernelLinear(gate, up, ops, prompt_rows=_prompt_rows(plans[0]))


def _install_linears(model: nn.Module, cap: Capability | None, ops) -> tuple[int, int]:
    """Give every plain CPU nn.Linear left the backend the table picks (a bf16 / fp16 LM head no kernel takes
    becomes a Float32Head first); (kernel linears, packed linears)."""
    head = getattr(model, "lm_head", None)
    head_plan = _plan(head, cap)
    if type(head) is nn.Linear and head.weight.dtype in (torch.bfloat16, torch.float16) and \
            (head_plan is None or head_plan[0] is not Backend.KERNEL):
        replace_module(model, "lm_head", Float32Head(head))
    n_kernel = n_packed = 0
    for name, module in list(model.named_modules()):
        plan = _plan(module, cap)
        if plan is None:
            continue
        if name == "lm_head":  # one row per sequence when generating: the decode-sized backend at every size
            plan = (plan[0], plan[0])
        if plan[0] is Backend.KERNEL:
            replace_module(model, name, KernelLinear(module, ops, prompt_rows=_prompt_rows(plan)))
            n_kernel += 1
        elif plan[0] is Backend.ONEDNN:
            replace_module(model, name, PackedLinear(module))
            n_packed += 1
    return n_kernel, n_packed


class FusedSwiGLU(nn.Module):
    """SwiGLU with gate and up in one projection: down(act(h[:F]) * h[F:]) for h = gate_up(x); with the kernel,
    SiLU and the product in one pass."""

    def __init__(self, mlp: SwiGLU, gate_up: nn.Module, ops):
        super().__init__()
        self.gate_up_proj, self.down_proj, self.act = gate_up, mlp.down_proj, mlp.act
        self.silu_mul = ops.silu_mul if ops is not None and mlp.act is F.silu else None
        self.gated = isinstance(gate_up, SiluGatedKernelLinear)  # it returns silu(gate) * up already

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.gate_up_proj(x)
        if self.gated:
            return self.down_proj(h)
        if self.silu_mul is not None and _kernel_fits(h):
            return self.down_proj(self.silu_mul(h))
        gate, up = h.chunk(2, dim=-1)
        return self.down_proj(self.act(gate) * up)


class FusedRMSNorm(RMSNorm):
    """RMSNorm in one pass (torch.ops.lmforge.rms_norm); the eager code for inputs the kernel does not take."""

    def __init__(self, norm: RMSNorm, ops):
        super().__init__(norm.weight.shape[0], norm.eps)
        self.weight = norm.weight
        self.kernel, self.add_kernel = ops.rms_norm, ops.add_rms_norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _kernel_fits(x, self.weight):
            return self.kernel(x, self.weight, self.eps)
        return super().forward(x)

    def add_forward(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x + h, self(x + h)) in one pass (torch.ops.lmforge.add_rms_norm; norms.add_and_norm calls it)."""
        if _kernel_fits(x, h, self.weight) and x.shape == h.shape:
            return self.add_kernel(x, h, self.weight, self.eps)
        x = x + h
        return x, self(x)


class InplaceRope:
    """`apply_rope` rotating x in place in one pass (torch.ops.lmforge.rope_); x must be a fresh activation
    (the attention's q and k are). Falls back to apply_rope for inputs the kernel does not take."""

    def __init__(self, ops):
        self.kernel = ops.rope_

    def __call__(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        if _kernel_fits(x, cos, sin) and x.dim() == 4 and x.stride(-1) == 1 and cos.is_contiguous() and \
                sin.is_contiguous() and cos.shape == (x.shape[0], x.shape[2], x.shape[3]) and cos.shape == sin.shape:
            self.kernel(x, cos, sin)
            return x
        return apply_rope(x, cos, sin)


class Float32Head(nn.Module):
    """A bf16 / fp16 LM head that no kernel took, held as a float32 copy made once: its logits are float32 sums
    (transformer.float32_logits) without upcasting the weight on every call (SmolLM2's head: ~130 ms per call on a
    loaded 2-core Zen 5). Costs the head's weight twice over in memory; the inner linear may be packed."""

    def __init__(self, head: nn.Linear):
        super().__init__()
        self.linear = nn.Linear(head.in_features, head.out_features, bias=head.bias is not None)
        self.linear.weight = nn.Parameter(head.weight.detach().float(), requires_grad=False)
        if head.bias is not None:
            self.linear.bias = nn.Parameter(head.bias.detach().float(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.float())

    float_logits = forward


@torch.no_grad()
def prepare_for_inference(model: nn.Module, kernels: bool = True,
                          capability: Capability | None = None) -> dict[str, int]:
    """Fuse projections, give the linears their backends and install the CPU kernels (see the module docstring), in
    place.

    kernels=False skips lmforge's kernels (its linears and step 3). capability: the backend table's input, detected
    on this machine by default (tests pass others). Returns counts: {"fused_projections", "kernel_linears",
    "packed_linears", "fused_kernels", "fused_attention"}."""
    on_cpu = next(model.parameters()).device.type == "cpu"
    ops = cpu_ops() if kernels and on_cpu else None
    cap = None
    if on_cpu:
        cap = detect_capability(kernels=ops is not None) if capability is None else capability
        cap = cap if ops is not None else cap.without_kernels()
    fused = n_kernels = n_gated = n_attention = 0
    for name, module in list(model.named_modules()):
        if type(module) is Attention and module.qkv_proj is None:
            qkv = _fused_linear([module.q_proj, module.k_proj, module.v_proj])
            if qkv is not None:
                module.qkv_proj = qkv
                del module.q_proj, module.k_proj, module.v_proj
                fused += 1
            if ops is not None:
                module.rope = InplaceRope(ops)
                n_kernels += 1
                if CachedAttentionKernel.applies_to(module):
                    module.fused = CachedAttentionKernel(ops)
                    n_attention += 1
        elif type(module) is SwiGLU:
            gated = _silu_gated(module, cap, ops)
            gate_up = gated or _fused_linear([module.gate_proj, module.up_proj])
            if gate_up is not None:
                replace_module(model, name, FusedSwiGLU(module, gate_up, ops))
                fused += 1
                n_gated += gated is not None
                n_kernels += ops is not None and module.act is F.silu
        elif type(module) is RMSNorm and ops is not None:
            replace_module(model, name, FusedRMSNorm(module, ops))
            n_kernels += 1
    n_linears, n_packed = _install_linears(model, cap, ops)
    return {"fused_projections": fused, "kernel_linears": n_gated + n_linears, "packed_linears": n_packed,
            "fused_kernels": n_kernels, "fused_attention": n_attention}
