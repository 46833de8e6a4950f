"""`lmforge generate` on an encoder-decoder model (T5): the PROMPT (or the --chat message, as plain text) is the
encoder's input; the decoder writes the answer from decoder_start_token_id (lmforge.generation.seq2seq)."""

from lmforge.cli.stream_summary import stream_summary
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
    return stream_summary(seq2seq_stream(lm.model, [ids], params, tokenizer=lm.tokenizer), len(ids), echo)
