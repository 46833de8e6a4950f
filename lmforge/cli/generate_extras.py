"""`lmforge generate` flags for speculative decoding (--draft, --num-draft) and inference-time context extension
(--rope-scaling, --rope-factor, --original-max-len, --max-context), and the runs they select."""

import sys
import time

import typer

from lmforge.common.errors import LmforgeError

DRAFT = typer.Option(None, "--draft", help="Speculative decoding: 'ngram' (prompt lookup), 'mtp' (the model's own "
                                           "multi-token-prediction head, saved as mtp.safetensors by a pretrain with "
                                           "n_mtp_modules > 0; at most that many drafts per round) or a draft model "
                                           "(embedded name, HF directory or .gguf) sharing the target's vocabulary.")
NUM_DRAFT = typer.Option(4, "--num-draft", help="Speculative decoding: tokens the draft proposes per target forward.")
ROPE_SCALING = typer.Option(None, "--rope-scaling", help="Extend the context with this RoPE scaling: linear, ntk, "
                                                         "yarn or llama3 (needs --rope-factor).")
ROPE_FACTOR = typer.Option(None, "--rope-factor", help="RoPE scaling factor (> 1): the context grows by this much.")
ORIGINAL_MAX_LEN = typer.Option(None, "--original-max-len", help="The context the model was trained on "
                                                                 "(default: its max_seq_len).")
MAX_CONTEXT = typer.Option(None, "--max-context", help="The new context length (default: original length x factor).")


def apply_context_options(lm, rope_scaling: str | None, rope_factor: float | None, original_max_len: int | None,
                          max_context: int | None) -> None:
    from lmforge.model.context_extension import extend_context

    if any(v is not None for v in (rope_scaling, rope_factor, original_max_len, max_context)):
        extend_context(lm.model, rope_scaling, rope_factor, original_max_len, max_context)


def run_speculative(lm, ids: list[int], params, draft: str, num_draft: int, dtype: str, echo: bool,
                    device=None) -> dict:
    """Speculative generation (batch 1); the JSON summary includes the acceptance figures. A draft model loads
    on `device` (the target's; None: the CPU)."""
    from lmforge.formats.loader import load
    from lmforge.generation.speculative import speculative_generate

    if params.logprobs is not None or params.stop or params.uses_history:
        raise LmforgeError("--draft cannot be combined with --logprobs, --stop or repetition/presence/frequency "
                           "penalties")
    if draft == "mtp" and lm.mtp is None:
        raise LmforgeError(f"--draft mtp needs multi-token-prediction modules (mtp.safetensors, written by a pretrain "
                           f"with n_mtp_modules > 0); {lm.source} has none")
    named = {"ngram": "ngram", "mtp": lm.mtp}
    draft_model = named[draft] if draft in named else load(draft, dtype=dtype).model.to(device or "cpu")
    start = time.perf_counter()
    out = speculative_generate(lm.model, ids, draft_model, params, num_draft=num_draft)
    total = time.perf_counter() - start
    answer = [t for t in out.tokens if t not in params.stop_token_ids]
    text = lm.tokenizer.decode(answer, skip_special_tokens=True)
    if echo:
        sys.stdout.write(text + "\n")
    return {"text": text, "prompt_tokens": len(ids), "completion_tokens": len(out.tokens),
            "finish_reason": out.finish_reason, "total_s": round(total, 4),
            "tok_s": round(len(out.tokens) / total, 2) if total > 0 else None,
            "speculative": {"draft": draft, "num_draft": num_draft, **out.summary()}}
