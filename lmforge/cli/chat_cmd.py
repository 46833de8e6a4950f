"""`lmforge chat`: an interactive chat in the terminal, streaming each answer, keeping the conversation.

Commands: /reset, /system TEXT, /image PATH (a LLaVA model: the image goes with the next message), /save FILE,
/help, /exit. Ctrl-C stops the current answer (the part already written stays in the history); Ctrl-D (end of
input) or /exit leaves.
"""

import json
import sys
from pathlib import Path

import typer

from lmforge.cli import image_input
from lmforge.cli import sampling_options as opt
from lmforge.cli.device_option import DEVICE, pick_device, place
from lmforge.cli.safety_cmd import SAFETY, load_rails
from lmforge.common.errors import LmforgeError
from lmforge.common.threads import set_threads

HELP = """commands:
  /reset          forget the conversation (keeps the system prompt)
  /system TEXT    set the system prompt (and start over)
  /image PATH     attach an image to your next message (LLaVA models)
  /save FILE      write the conversation as JSON messages
  /help           this text
  /exit           leave (Ctrl-D works too); Ctrl-C stops an answer"""


class ChatSession:
    """The conversation (messages) and how to answer the next user turn."""

    def __init__(self, lm, params, system: str | None = None, write=None, rails=None, images=()):
        self.lm, self.params, self.system, self.rails = lm, params, system, rails
        self.write = write or _stdout
        self.messages: list[dict] = []
        self.vision = image_input.image_encoder(lm, images)
        self.reset()
        self.pending_images: list[Path] = list(images)  # they go with the next user message

    def reset(self) -> None:
        self.messages = [{"role": "system", "content": self.system}] if self.system else []
        self.pending_images = []

    def prompt_ids(self) -> list[int]:
        return self.prompt()[0]

    def prompt(self):
        """(prompt ids, encoded images or None) of the conversation so far."""
        # tokenize=True: what the user types is plain text, never control tokens (`<|im_start|>`)
        return image_input.chat_prompt(self.lm.tokenizer, self.vision, self.messages)

    def answer(self, user: str) -> str:
        """Stream the answer to `user`; a Ctrl-C keeps what was written so far and returns."""
        from lmforge.generation.generate import generate_stream

        rail = None
        if self.rails is not None:  # --safety: the input rail first, then the answer streams through the output rail
            verdict = self.rails.check_input([user])
            if verdict.blocked:
                self.write(self.rails.refusal + "\n")
                return self.rails.refusal
            user, rail = verdict.texts[0], self.rails.output_rail()
        self.messages.append({"role": "user", "content": image_input.image_message(user, self.pending_images)})
        self.pending_images = []
        reply = ""
        try:
            ids, images = self.prompt()
            steps = generate_stream(self.lm.model, [ids], self.params, tokenizer=self.lm.tokenizer,
                                    pad_id=self.lm.config.pad_token_id or 0,
                                    images=None if images is None else [images])
            if rail is not None:
                from lmforge.safety.stream import guard_steps

                steps = guard_steps(steps, rail)
            for (event,) in steps:
                reply += event.text
                self.write(event.text)
                if event.finish_reason == "content_filter":
                    self.write(" [stopped by the safety policy]")
        except KeyboardInterrupt:
            self.write(" [stopped]")
        except LmforgeError:
            self.messages.pop()  # the turn did not happen (e.g. the conversation outgrew the context)
            raise
        self.write("\n")
        self.messages.append({"role": "assistant", "content": reply})
        return reply

    def command(self, line: str) -> bool:
        """Run a /command; False when it asks to leave."""
        name, _, arg = line.partition(" ")
        arg = arg.strip()
        if name in ("/exit", "/quit"):
            return False
        if name == "/reset":
            self.reset()
            self.write("(conversation cleared)\n")
        elif name == "/system":
            if not arg:
                raise LmforgeError("usage: /system TEXT")
            self.system = arg
            self.reset()
            self.write("(system prompt set; conversation cleared)\n")
        elif name == "/image":
            if not arg:
                raise LmforgeError("usage: /image PATH")
            if self.vision is None:
                raise LmforgeError(f"{self.lm.source} is a text-only model; /image needs a LLaVA model")
            self.vision.open([arg])  # a one-line error now for a missing or unreadable file
            self.pending_images.append(Path(arg))
            self.write(f"(image {arg} goes with your next message)\n")
        elif name == "/save":
            if not arg:
                raise LmforgeError("usage: /save FILE")
            try:
                Path(arg).expanduser().write_text(json.dumps(self.messages, ensure_ascii=False, indent=2) + "\n")
            except OSError as err:
                raise LmforgeError(f"cannot write {arg}: {err.strerror}") from None
            self.write(f"(saved {len(self.messages)} messages to {arg})\n")
        elif name == "/help":
            self.write(HELP + "\n")
        else:
            raise LmforgeError(f"unknown command {name}; type /help")
        return True


def _stdout(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def repl(session: ChatSession, read=input) -> None:
    """Read lines until EOF or /exit; errors in one turn are reported and the chat goes on."""
    while True:
        try:
            line = read(">>> ").strip()
        except EOFError:
            session.write("\n")
            return
        except KeyboardInterrupt:
            session.write("\n(use /exit or Ctrl-D to leave)\n")
            continue
        if not line:
            continue
        try:
            if line.startswith("/"):
                if not session.command(line):
                    return
            else:
                session.answer(line)
        except LmforgeError as err:
            session.write(f"error: {err}\n")


@opt.with_sampling_flags
def chat(
    model: str = opt.MODEL,
    system: str = typer.Option(None, "--system", help="System prompt (default: the chat template's own)."),
    sampling: dict = opt.SAMPLING,
    seed: int = opt.SEED,
    dtype: str = opt.DTYPE,
    device: str = DEVICE,
    safety: str = SAFETY,
    threads: int = opt.THREADS,
    image: list[Path] = typer.Option(None, "--image", metavar="PATH", help="An image file for a LLaVA model "
                                     "(repeatable): it goes with your first message; /image PATH adds more later."),
) -> None:
    """Chat with a model in the terminal (type /help for commands)."""
    import dataclasses

    params = opt.sampling_params(**sampling, seed=seed)
    image_input.check_files(image)
    rails = load_rails(safety)
    set_threads(threads)
    where = pick_device(device, dtype)
    print(f"loading {model} …", file=sys.stderr, flush=True)  # seconds of torch import and weights: say so
    from lmforge.formats.loader import load
    from lmforge.model.inference import prepare_for_inference

    lm = place(load(model, dtype=dtype), where)
    prepare_for_inference(lm.model)  # fused projections, packed linears, CPU kernels (inference only)
    if lm.tokenizer is None or lm.tokenizer.chat_template is None:
        raise LmforgeError(f"{model} has no tokenizer with a chat template; use `lmforge generate` for raw text")
    session = ChatSession(lm, dataclasses.replace(params, stop_token_ids=lm.stop_token_ids()), system, rails=rails,
                          images=image or ())
    session.write(f"chatting with {model} — /help for commands, Ctrl-D to leave\n")
    repl(session)
