"""`lmforge calc`: parameters, FLOPs per token, training memory per ZeRO stage and KV-cache bytes of a preset.

A thin command over lmforge.calc.calc (pure arithmetic on the config; no model is built): rich tables, or --json.
"""

import json

import typer
from rich.console import Console
from rich.table import Table


def _num(x: float) -> str:
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.2f}{unit}"
    return f"{x:.0f}"


def _bytes(x: float) -> str:
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(x) >= scale:
            return f"{x / scale:.2f} {unit}"
    return f"{x:.0f} B"


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, title_justify="left")
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i == 0 else "right")
    return table


def header(name: str, r: dict) -> str:
    c = r["config"]
    moe = f", {c['n_experts_per_tok']}/{c['n_routed_experts']} experts" if c["n_routed_experts"] else ""
    return (f"{name}: {c['family']}, {c['attention']}, {c['n_layers']} layers, dim {c['dim']}, "
            f"{c['n_heads']}/{c['n_kv_heads']} q/kv heads, vocab {c['vocab_size']}{moe}")


def render(r: dict) -> list[Table]:
    s, p = r["settings"], r["params"]
    params = _table("Parameters", "component", "total", "active / token")
    for comp, n in p["components"].items():
        params.add_row(comp, _num(n), _num(p["active_components"][comp]))
    params.add_row("[bold]all[/bold]", f"[bold]{_num(p['total'])}[/bold]", f"[bold]{_num(p['active'])}[/bold]")
    f = r["flops_per_token"]
    flops = _table(f"FLOPs per token at seq_len {s['seq_len']}", "quantity", "FLOPs")
    for key in ("matmul_params", "attention_forward", "forward", "training", "inference"):
        flops.add_row(key, _num(f[key]))
    m = r["memory"]
    zero = _table(f"Training memory per rank ({s['dtype']}, dp={s['dp']}, micro-batch {s['batch']})",
                  "ZeRO stage", "weights", "gradients", "Adam states", "total")
    for stage, z in m["zero"].items():
        mark = " *" if int(stage) == s["zero_stage"] else ""
        zero.add_row(f"{stage}{mark}", *(_bytes(z[k]) for k in ("weights", "gradients", "optimizer", "total")))
    acts = _table("Activations (16-bit)", "attention", "per layer", "all layers", "with checkpointing")
    for kind, a in m["activations"].items():
        acts.add_row(kind, _bytes(a["per_layer_max"]), _bytes(a["no_checkpointing"]), _bytes(a["checkpointing"]))
    kv = r["kv_cache"]
    kvt = _table(f"KV cache per token ({s['dtype']}; this model: {_bytes(kv['bytes_per_token'])})",
                 "attention", "bytes / token", "elements / layer", "sizing")
    for kind, row in kv["comparison"].items():
        kvt.add_row(kind, _bytes(row["bytes_per_token"]), str(row["elements_per_layer"]), row["note"])
    return [params, flops, zero, acts, kvt]


def calc(
    preset: str = typer.Option(None, "--preset", "-p", help="Model preset name (see `lmforge info`)."),
    model_config: str = typer.Option(None, "--model-config", help="ModelConfig JSON file instead of --preset (e.g. "
                                     "a run's OUT/model_config.json)."),
    seq_len: int = typer.Option(4096, "--seq-len", help="Sequence length for FLOPs and activations."),
    batch: int = typer.Option(1, "--batch", help="Micro-batch size per data-parallel rank (activations)."),
    dtype: str = typer.Option("bf16", "--dtype", help="Training / KV-cache dtype: bf16, fp16 (mixed precision, "
                              "16 bytes/param with Adam) or fp32 (16 bytes/param: 4 + 4 + 8)."),
    zero_stage: int = typer.Option(0, "--zero-stage", help="ZeRO stage 0-3 to mark and add to the per-rank total."),
    dp: int = typer.Option(1, "--dp", help="Data-parallel size N that ZeRO shards over."),
    tp: int = typer.Option(1, "--tp", help="Tensor-parallel ranks (lmforge pretrain --tp): heads, MLP and experts "
                           "split; adds the layout's parameters and model states per rank."),
    pp: int = typer.Option(1, "--pp", help="Pipeline stages (lmforge pretrain --pp): the largest stage counts."),
    as_json: bool = typer.Option(False, "--json", help="Print the figures as one JSON object."),
) -> None:
    """Parameters by component, FLOPs per token, training memory per ZeRO stage and KV-cache bytes of a preset."""
    from lmforge.calc.calc import calc_report
    from lmforge.calc.calc_layout import layout_memory
    from lmforge.common.errors import ConfigError
    from lmforge.model import ModelConfig
    from lmforge.model.presets import get_preset

    if (preset is None) == (model_config is None):
        raise ConfigError("give one of --preset NAME or --model-config FILE")
    cfg = get_preset(preset) if preset else ModelConfig.load(model_config)
    report = calc_report(cfg, seq_len=seq_len, batch=batch, dtype=dtype, zero_stage=zero_stage, dp=dp)
    report["layout"] = layout_memory(cfg, tp, pp, dp, zero_stage, dtype)
    if as_json:
        print(json.dumps(report))
        return
    console = Console(width=max(Console().width, 100))
    console.print(header(preset or model_config, report))
    for table in render(report):
        console.print(table)
    total = report["memory"]["per_rank_total"]
    console.print(f"per rank, ZeRO-{zero_stage} + flash activations: {_bytes(total['no_checkpointing'])}, "
                  f"{_bytes(total['checkpointing'])} with activation checkpointing")
    lay = report["layout"]
    if tp > 1 or pp > 1:
        console.print(f"layout tp={tp} x pp={pp} x dp={dp} ({lay['world']} ranks): {_num(lay['params_per_rank'])} "
                      f"parameters per rank, model states {_bytes(lay['model_states']['total'])} per rank "
                      f"(ZeRO-{zero_stage}; activations not split here)")
