"""`lmforge generate`: complete a prompt or answer one chat message, streaming tokens to stdout."""

import sys

import typer

from lmforge.common.errors import LmforgeError


def generate(
    prompt: str = typer.Argument(None, help="Raw text to continue (omit when using --chat)."),
    chat: str = typer.Option(None, "--chat", help="A user message, wrapped in the model's chat template."),
    system: str = typer.Option(None, "--system", help="System prompt for --chat (default: the template's own)."),
    model: str = typer.Option("smollm2-135m", "--model", "-m", help="Embedded model name, HF directory or .gguf."),
    max_new_tokens: int = typer.Option(256, "--max-new-tokens", "-n", min=1, help="Most tokens to generate."),
    temperature: float = typer.Option(0.2, "--temperature", "-t", min=0.0,
                                      help="0 = greedy; higher = more random (0.2 suits small chat models)."),
    seed: int = typer.Option(None, "--seed", help="Seed for sampling (reproducible output)."),
    dtype: str = typer.Option("float32", help="Compute dtype: float32 or bfloat16."),
) -> None:
    """Generate text with a KV cache; stops at the model's end-of-turn / end-of-text token."""
    from lmforge.engine.generate import generate_stream
    from lmforge.model.loader import load

    if (prompt is None) == (chat is None):
        raise LmforgeError("give either a PROMPT argument or --chat MESSAGE (exactly one)")
    if system is not None and chat is None:
        raise LmforgeError("--system only applies with --chat")
    lm = load(model, dtype=dtype)
    if lm.tokenizer is None:
        raise LmforgeError(f"{model} has no tokenizer (tokenizer.json); cannot encode text")
    if chat is not None:
        messages = ([{"role": "system", "content": system}] if system is not None else [])
        messages.append({"role": "user", "content": chat})
        text = lm.tokenizer.apply_chat_template(messages, add_generation_prompt=True)
        ids = lm.tokenizer.encode(text, add_special_tokens=False)
    else:
        ids = lm.tokenizer.encode(prompt)
    stops = lm.stop_token_ids()
    generated: list[int] = []
    printed = ""
    for (token,) in generate_stream(lm.model, [ids], max_new_tokens=max_new_tokens, temperature=temperature,
                                    stop_token_ids=stops, seed=seed, pad_id=lm.config.pad_token_id or 0):
        if token in stops:
            break
        generated.append(token)
        text = lm.tokenizer.decode(generated, skip_special_tokens=False)
        if not text.endswith("\ufffd"):  # wait for the rest of a multi-byte character
            sys.stdout.write(text[len(printed):])
            sys.stdout.flush()
            printed = text
    sys.stdout.write(lm.tokenizer.decode(generated)[len(printed):] + "\n")
