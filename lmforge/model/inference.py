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

from lmforge.kernels.backend_table import DECODE_ROWS, Backend, Capability, detect_capability, linear_plan
from lmforge.kernels.cpu_kernels import cpu_ops
from lmforge.kernels.quant_linear import int4_linear, int8_activations, int8_linear
from lmforge.model.attention import Attention
from lmforge.model.attention_kernel import CachedAttentionKernel
from lmforge.model.decode_stack import DecodeStack, config_allows
from lmforge.model.kernel_linear import KernelLinear, SiluGatedKernelLinear, fused_linear
from lmforge.model.mlp import SwiGLU
from lmforge.model.norms import RMSNorm
from lmforge.model.packed_linear import PackedLinear, replace_module
from lmforge.model.rope import apply_rope
from lmforge.model.transformer import Block, Transformer

KERNEL_DTYPES = (torch.float32, torch.bfloat16)


def _kernel_fits(x: torch.Tensor, *others: torch.Tensor) -> bool:
    return x.is_cpu and x.dtype in KERNEL_DTYPES and all(t.dtype == x.dtype for t in others)


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


def _projection(m: nn.Module, dtype: torch.dtype, gated: bool) -> list[torch.Tensor] | None:
    """A projection as DecodeStack takes it (weight, scales, bias): a kernel linear of the model's dtype (gate/up:
    the one-pass gated one), or an int8 / int4 quantized layer on lmforge's kernels in a bf16 model (packed now, as
    its first call would); None for any other."""
    empty = torch.empty(0)
    bias = empty if m.bias is None else m.bias.detach()
    if type(m) is (SiluGatedKernelLinear if gated else KernelLinear):
        return [m.packed, empty, bias] if m.packed.dtype == dtype else None
    if getattr(type(m), "kernel_linear", None) not in (int8_linear, int4_linear) or dtype != torch.bfloat16:
        return None
    pack = m._kernel_pack(empty)
    return None if pack is None else [*pack, bias]


def _decode_stack(model: nn.Module, ops) -> DecodeStack | None:
    """The whole batch-1 decode step in one kernel call (decode_stack.py) for a Transformer whose every layer the
    steps above put on lmforge's kernels (fused q/k/v, the attention kernel, RMSNorm kernels, the one-pass SwiGLU
    gate/up or a quantized one with silu_mul, kernel linears of the model's dtype or int8 / int4 layers packed for
    lmforge's quantized kernels in a bf16 model); None for any other model."""
    if ops is None or type(model) is not Transformer or not config_allows(model.config) or \
            type(model.embed) is not nn.Embedding or type(model.norm) is not FusedRMSNorm:
        return None
    dtype = model.embed.weight.dtype
    tensors, eps, scales, quantized = [], [], set(), set()
    for block in model.layers:
        attn, mlp, norms = block.attn, block.mlp, (block.attn_norm, block.mlp_norm)
        if type(block) is not Block or type(attn) is not Attention or type(attn.fused) is not CachedAttentionKernel or \
                any(type(n) is not FusedRMSNorm for n in norms) or type(mlp) is not FusedSwiGLU or \
                any(n.weight.dtype != dtype for n in norms):
            return None
        gate_up = mlp.gate_up_proj
        if not mlp.gated and mlp.silu_mul is None:
            return None
        projections = [_projection(m, dtype, False) for m in (attn.qkv_proj, attn.o_proj)]
        projections += [_projection(gate_up, dtype, mlp.gated), _projection(mlp.down_proj, dtype, False)]
        if any(p is None for p in projections):
            return None
        (a, b), (q, o, g, d) = norms, projections
        tensors += [a.weight.detach(), *q, *o, b.weight.detach(), *g, *d]
        eps += [a.eps, b.eps]
        scales.add(attn.head_dim ** -0.5 if attn.scale is None else attn.scale)
        quantized.update(getattr(type(m), "kernel_linear", None) for m in (attn.qkv_proj, attn.o_proj, gate_up,
                                                                           mlp.down_proj))
    if len(scales) != 1 or model.norm.weight.dtype != dtype:
        return None
    first = model.layers[0]
    int8_x = int8_activations() if int4_linear in quantized else None  # the int4 layers' activations, as they run
    stack = torch.classes.lmforge.DecodeStack(
        model.embed.weight.detach(), tensors, model.norm.weight.detach(), [*eps, model.norm.eps], first.attn.n_heads,
        first.attn.n_kv_heads, first.attn.head_dim, first.mlp.down_proj.in_features, scales.pop(), bool(int8_x))
    return DecodeStack(model.config, stack, dtype, int8_x)


@torch.no_grad()
def prepare_for_inference(model: nn.Module, kernels: bool = True,
                          capability: Capability | None = None) -> dict[str, int]:
    """Fuse projections, give the linears their backends and install the CPU kernels (see the module docstring), in
    place.

    kernels=False skips lmforge's kernels (its linears and step 3). capability: the backend table's input, detected
    on this machine by default (tests pass others). Returns counts: {"fused_projections", "kernel_linears",
    "packed_linears", "fused_kernels", "fused_attention", "fused_decode"}."""
    on_cpu = next(model.parameters()).device.type == "cpu"
    ops = cpu_ops() if kernels and on_cpu else None
    cap = None
    if on_cpu:
        cap = detect_capability(kernels=ops is not None) if capability is None else capability
        cap = cap if ops is not None else cap.without_kernels()
    fused = n_kernels = n_gated = n_attention = 0
    for name, module in list(model.named_modules()):
        if type(module) is Attention and module.qkv_proj is None:
            qkv = fused_linear([module.q_proj, module.k_proj, module.v_proj])
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
            gate_up = gated or fused_linear([module.gate_proj, module.up_proj])
            if gate_up is not None:
                replace_module(model, name, FusedSwiGLU(module, gate_up, ops))
                fused += 1
                n_gated += gated is not None
                n_kernels += ops is not None and module.act is F.silu
        elif type(module) is RMSNorm and ops is not None:
            replace_module(model, name, FusedRMSNorm(module, ops))
            n_kernels += 1
    n_linears, n_packed = _install_linears(model, cap, ops)
    stack = _decode_stack(model, ops)
    if stack is not None:
        model.fused_decode = stack
    return {"fused_projections": fused, "kernel_linears": n_gated + n_linears, "packed_linears": n_packed,
            "fused_kernels": n_kernels, "fused_attention": n_attention, "fused_decode": int(stack is not None)}
