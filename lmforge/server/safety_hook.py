"""`lmforge serve --safety POLICY.toml`: the rails between the HTTP routes and the engine, in one place.

`check_request` runs the input rail on a validated request (user and tool messages, text prompts) and redacts in
place; `guard` wraps one choice's engine stream: a blocked input answers the policy's refusal without running the
model, and the output rail holds back and releases text, ending a blocked answer with finish_reason
"content_filter" (the engine request is aborted, so no blocked text is ever generated further or sent).
"""

from __future__ import annotations

from dataclasses import replace

from lmforge.engine.llm import RequestOutput
from lmforge.safety.rails import CONTENT_FILTER, InputVerdict, Rails

INPUT_ROLES = ("user", "tool")  # what the client's users and tools wrote; system prompts are the operator's


class SafetyHook:
    def __init__(self, rails: Rails, metrics=None):
        self.rails, self.metrics = rails, metrics

    def check_request(self, body, kind: str) -> InputVerdict:
        """Input rail over the request's untrusted text; redactions are written back into `body`."""
        if kind == "chat":
            targets = [m for m in body.messages if m.role in INPUT_ROLES]
            verdict = self.rails.check_input([m.text() for m in targets])
            for message, text in zip(targets, verdict.texts, strict=True):
                if text != message.text():
                    message.content = text
        else:
            prompts = [body.prompt] if isinstance(body.prompt, str) else list(body.prompt)
            texts = [p for p in prompts if isinstance(p, str)]
            verdict = self.rails.check_input(texts)
            if verdict.texts != texts:
                redacted = iter(verdict.texts)
                prompts = [next(redacted) if isinstance(p, str) else p for p in prompts]
                body.prompt = prompts[0] if isinstance(body.prompt, str) else prompts
        self._count("input", verdict.findings)
        return verdict

    async def guard(self, stream, verdict: InputVerdict | None):
        """One choice's outputs, with the rails applied (an async iterator like the engine's)."""
        if verdict is not None and verdict.blocked:
            await stream.aclose()  # never started: the model does not run
            refusal = self.rails.refusal
            yield RequestOutput(request_id=-1, prompt_ids=[], text_delta=refusal, text=refusal, finished=True,
                                finish_reason=CONTENT_FILTER)
            return
        rail = self.rails.output_rail()
        held, received = [], 0  # logprobs wait with their text: [(end of their text, entry)]
        try:
            async for out in stream:
                received += len(out.text_delta)
                text = rail.feed(out.text_delta)
                if out.finished and not rail.blocked:
                    text += rail.finish()
                if rail.blocked:
                    yield replace(out, text_delta="", text=rail.released, logprobs=[], finished=True,
                                  finish_reason=CONTENT_FILTER)
                    return  # closing the engine stream aborts the request
                held += [(received, lp) for lp in out.logprobs]
                shown = received - len(rail.pending)
                ready = [lp for end, lp in held if end <= shown or out.finished]
                held = held[len(ready):]
                yield replace(out, text_delta=text, text=rail.released, logprobs=ready)
        finally:
            self._count("output", rail.findings)
            await stream.aclose()

    def _count(self, stage: str, findings) -> None:
        if self.metrics is None:
            return
        for f in {(f.category, f.action): f for f in findings}.values():
            self.metrics.inc("safety_findings_total", help="requests in which a safety rail found a category",
                             stage=stage, category=f.category, action=f.action)
