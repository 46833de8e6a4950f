"""Tensor and sequence parallelism with DTensor's `parallelize_module` (Megatron-LM's split, Shoeybi et al., 2019;
Korthikanti et al., 2022 for the sequence-parallel norms), applied to a plain lmforge Transformer (or a pipeline
stage of one) from outside, as torchtitan's parallelize_llama does:

- attention: q/k/v column-parallel (each rank a group of query and kv heads), o row-parallel;
- MLP: gate/up column-parallel, down row-parallel; MoE: experts split over the ranks (expert_parallel.py), shared
  experts column/row-parallel, the router replicated;
- between them the residual stream is sharded by sequence: norms run on T / tp tokens (SequenceParallel), the
  attention and MLP inputs are all-gathered, the row-parallel outputs reduce-scattered;
- the embedding and the LM head stay replicated (tied weights stay tied), their activations converted at the edge.
"""

from __future__ import annotations

from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import Replicate, Shard
from torch.distributed.tensor.parallel import (
    ColwiseParallel,
    PrepareModuleInput,
    PrepareModuleInputOutput,
    PrepareModuleOutput,
    RowwiseParallel,
    SequenceParallel,
    parallelize_module,
)

from lmforge.common.errors import LmforgeError
from lmforge.model.config import ModelConfig
from lmforge.model.mlp import GeluMLP, SwiGLU
from lmforge.model.moe import MoE
from lmforge.train.parallel.expert_parallel import ExpertParallelExperts

SEQ = Shard(1)  # the residual stream between blocks: [B, T / tp, D] on each rank


def check_tensor_parallel(cfg: ModelConfig, tp: int, seq_len: int) -> None:
    """One-line errors for models or shapes tp ranks cannot split evenly."""
    if tp == 1:
        return
    if cfg.attention.kind == "mla":
        raise LmforgeError("tp > 1 splits multi-head / grouped-query attention; MLA models train with tp=1")
    if cfg.heads.mlm or cfg.heads.final_logit_softcap is not None:
        raise LmforgeError("tp > 1 supports decoder LM heads (no MLM head or logit soft-cap); use tp=1")
    checks = {"n_heads": cfg.n_heads, "n_kv_heads": cfg.resolved_kv_heads, "seq_len (sequence parallel)": seq_len,
              "ffn_dim": cfg.ffn_dim}
    if cfg.moe.n_routed_experts:
        checks["n_routed_experts"] = cfg.moe.n_routed_experts
        checks["moe shared expert width"] = (cfg.moe.ffn_dim or cfg.ffn_dim) * max(cfg.moe.n_shared_experts, 1)
    for name, value in checks.items():
        if value % tp:
            raise LmforgeError(f"tp={tp} must divide {name}={value}")


def _mlp_plan(mlp: nn.Module, prefix: str) -> dict:
    plan = {f"{prefix}.down_proj": RowwiseParallel(output_layouts=SEQ) if prefix == "mlp" else RowwiseParallel(),
            f"{prefix}.up_proj": ColwiseParallel()}
    if isinstance(mlp, SwiGLU):
        plan[f"{prefix}.gate_proj"] = ColwiseParallel()
    elif not isinstance(mlp, GeluMLP):
        raise LmforgeError(f"tensor parallel: no plan for the feed-forward module {type(mlp).__name__}")
    return plan


def block_plan(block: nn.Module) -> dict:
    """The parallelize_module plan of one Block (its names: attn, attn_norm, mlp, mlp_norm, post-norms)."""
    plan = {name: SequenceParallel(use_local_output=True)
            for name in ("attn_norm", "mlp_norm", "attn_post_norm", "mlp_post_norm") if hasattr(block, name)}
    n_args = 7  # Attention.forward(x, cos, sin, mask, is_causal, backend, q_scale)
    plan["attn"] = PrepareModuleInput(input_layouts=(SEQ,) + (None,) * (n_args - 1),
                                      desired_input_layouts=(Replicate(),) + (None,) * (n_args - 1))
    for name in ("q_proj", "k_proj", "v_proj"):
        plan[f"attn.{name}"] = ColwiseParallel()
    plan["attn.o_proj"] = RowwiseParallel(output_layouts=SEQ)
    if block.attn.q_norm is not None:  # per-head QK norms run on this rank's heads: [B, T, heads / tp, head_dim]
        plan["attn.q_norm"] = SequenceParallel(sequence_dim=2, use_local_output=True)
        plan["attn.k_norm"] = SequenceParallel(sequence_dim=2, use_local_output=True)
    if isinstance(block.mlp, MoE):
        plan["mlp"] = PrepareModuleInputOutput(input_layouts=(SEQ,), desired_input_layouts=(Replicate(),),
                                               use_local_input=True, output_layouts=(Replicate(),),
                                               desired_output_layouts=(SEQ,), use_local_output=True)
        if block.mlp.shared is not None:
            plan.update(_mlp_plan(block.mlp.shared, "mlp.shared"))
    else:
        plan["mlp"] = PrepareModuleInput(input_layouts=(SEQ,), desired_input_layouts=(Replicate(),))
        plan.update(_mlp_plan(block.mlp, "mlp"))
    return plan


def apply_tensor_parallel(model: nn.Module, mesh: DeviceMesh) -> None:
    """Shard `model` (a Transformer or a pipeline stage: embed / extras, layers, norm, lm_head, each optional) over
    the 1-D tp `mesh` in place; its attention modules then count their local heads."""
    tp = mesh.size()
    layers = model.layers.values() if isinstance(model.layers, nn.ModuleDict) else model.layers
    for block in layers:
        block.attn.n_heads //= tp
        block.attn.n_kv_heads //= tp
        if isinstance(block.mlp, MoE):
            block.mlp.experts = ExpertParallelExperts(block.mlp.experts, mesh)
        parallelize_module(block, mesh, block_plan(block))
    plan = {}
    first = "extras" if getattr(model, "extras", None) is not None else "embed"
    if getattr(model, first, None) is not None:  # the stream enters sharded by sequence (a local chunk: no comm)
        plan[first] = PrepareModuleOutput(output_layouts=Replicate(), desired_output_layouts=SEQ,
                                          use_local_output=True)
    if getattr(model, "lm_head", None) is not None:
        if any(True for _ in model.norm.parameters()):
            plan["norm"] = SequenceParallel(use_local_output=True)
        plan["lm_head"] = PrepareModuleInput(input_layouts=(SEQ,), desired_input_layouts=(Replicate(),),
                                             use_local_output=True)
    parallelize_module(model, mesh, plan)
