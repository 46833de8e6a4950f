"""`lmforge generate` on an encoder-decoder model (T5): the PROMPT (or the --chat message, as plain text) is the
encoder's input; the decoder writes the answer from decoder_start_token_id (lmforge.generation.seq2seq)."""

import sys
import time

from lmforge.common.errors import LmforgeError


def check_seq2seq_options(lm, draft, num_beams: int, rails, context_options: tuple) -> None:
    """The decoder-only features `generate` has that an encoder-decoder run does not take, refused by name."""
    refused = {"--draft": draft is not None, "--num-beams > 1": num_beams > 1, "--safety": rails is not None,
               "--rope-scaling / --rope-factor / --original-max-len / --max-context":
                   any(v is not None for v in context_options)}
    bad = [flag for flag, given in refused.items() if given]
    if bad:
        raise LmforgeError(f"{lm.source} is an encoder-decoder ({lm.config.family}) model: {', '.join(bad)} "
                           "apply to decoder-only models")
    if lm.tokenizer is None:
        raise LmforgeError(f"{lm.source} has no tokenizer (tokenizer.json); cannot encode text")


def run_seq2seq(lm, text: str, params, echo: bool) -> dict:
    """Encode `text`, decode one answer (streamed to stdout when `echo`); the JSON summary generate prints."""
    from lmforge.generation.seq2seq import seq2seq_stream

    ids = lm.tokenizer.encode(text)
    if not ids:
        raise LmforgeError("the prompt encodes to no tokens")
    start = time.perf_counter()
    first = None
    answer, tokens, finish = "", [], None
    for (event,) in seq2seq_stream(lm.model, [ids], params, tokenizer=lm.tokenizer):
        first = first or time.perf_counter()
        tokens.append(event.token)
        answer += event.text
        finish = event.finish_reason
        if echo and event.text:
            sys.stdout.write(event.text)
            sys.stdout.flush()
    end = time.perf_counter()
    if echo:
        sys.stdout.write("\n")
    return {"text": answer, "prompt_tokens": len(ids), "completion_tokens": len(tokens), "finish_reason": finish,
            "prefill_s": round(first - start, 4),
            "decode_tok_s": round((len(tokens) - 1) / (end - first), 2) if len(tokens) > 1 else None,
            "total_s": round(end - start, 4)}
