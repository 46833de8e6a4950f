"""`lmforge lora merge BASE ADAPTER --out DIR`: fold a PEFT LoRA adapter into its base model and write a Hugging Face
directory (weights + tokenizer) that transformers and `lmforge.load` read. Thin: the logic lives in lmforge.peft.
"""

from pathlib import Path

import typer

from lmforge.common.errors import LmforgeError

app = typer.Typer(help="LoRA adapters: merge a PEFT adapter directory into its base model.", no_args_is_help=True)


@app.command("merge")
def merge(
    base: str = typer.Argument(..., help="Base model: embedded name (smollm2-135m), Hugging Face directory or .gguf."),
    adapter: Path = typer.Argument(..., help="PEFT LoRA adapter directory (adapter_config.json, "
                                   "adapter_model.safetensors), made by lmforge or by the peft library."),
    out: Path = typer.Option(..., "--out", "-o", help="Output Hugging Face directory (must be empty or absent)."),
    dtype: str = typer.Option("float32", help="dtype of the merged weights: float32, bfloat16 or float16."),
) -> None:
    """Load BASE, apply ADAPTER, merge B A into the weights and save the plain model to --out."""
    from lmforge.formats.loader import load, resolve_dtype
    from lmforge.peft import load_adapter, unload_lora

    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise LmforgeError(f"output {out} already exists and is not an empty directory")
    if not (adapter / "adapter_config.json").is_file():
        raise LmforgeError(f"{adapter} is not a PEFT adapter directory: adapter_config.json is missing")
    torch_dtype = resolve_dtype(dtype)
    lm = load(base, dtype="float32")  # merge in float32, cast once when saving
    if getattr(lm.model, "quant_config", None) is not None:
        raise LmforgeError(f"{base} is quantized; merge the adapter into the float base, then quantize the result")
    cfg = load_adapter(lm.model, adapter)
    unload_lora(lm.model, merge=True)
    lm.save(out, dtype=torch_dtype)
    n_layers = len(cfg.target_modules)
    print(f"wrote {out}: {base} + {adapter} merged (r={cfg.r}, alpha={cfg.alpha:g}, {n_layers} layers), {dtype}")
