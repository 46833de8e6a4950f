"""`lmforge chat` (REPL fed through stdin) and the sampling flags of `lmforge generate`, on a tiny saved model."""

import json

import pytest
from typer.testing import CliRunner

from lmforge.cli import chat_cmd
from lmforge.cli.main import app
from lmforge.common.errors import LmforgeError
from lmforge.generation import generate as generate_module
from lmforge.generation.generate import StepOutput, generate
from lmforge.generation.sampling_params import SamplingParams
from tests.tiny_lm import tiny_lm
from tests.unit.test_cli_errors import assert_user_error, run_cli


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-chat")
    tiny_lm().save(path)
    return path


def test_chat_keeps_history_and_runs_commands(model_dir, tmp_path):
    saved, reset = tmp_path / "conv.json", tmp_path / "after-reset.json"
    script = (f"hello there\nand again\n/save {saved}\n/system be brief\nhi\n/reset\n/save {reset}\n"
              f"/bogus\n/help\n")
    result = CliRunner().invoke(app, ["chat", "-m", str(model_dir), "-n", "6", "-t", "0"], input=script)
    assert result.exit_code == 0, result.output
    messages = json.loads(saved.read_text())
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
    assert [messages[0]["content"], messages[2]["content"]] == ["hello there", "and again"]
    lm = tiny_lm()  # the first answer is what generation gives for the templated first turn
    ids = lm.tokenizer.encode(lm.tokenizer.apply_chat_template(messages[:1], add_generation_prompt=True),
                              add_special_tokens=False)
    first = generate(lm.model, [ids], SamplingParams(max_new_tokens=6, stop_token_ids=lm.stop_token_ids()))[0]
    assert messages[1]["content"] == lm.tokenizer.decode([t for t in first if t not in lm.stop_token_ids()])
    assert json.loads(reset.read_text()) == [{"role": "system", "content": "be brief"}]
    assert "unknown command /bogus" in result.output and "/save FILE" in result.output


def test_ctrl_c_stops_the_answer_not_the_chat(monkeypatch):
    def interrupted_stream(model, prompts, params, **kw):
        yield [StepOutput(1, "Once upon")]
        raise KeyboardInterrupt

    written = []
    session = chat_cmd.ChatSession(tiny_lm(), SamplingParams(max_new_tokens=4), write=written.append)
    lines = iter(["tell me a story", "/exit", "never read"])
    with monkeypatch.context() as patch:
        patch.setattr(generate_module, "generate_stream", interrupted_stream)
        session.answer("tell me a story")
    assert session.messages[-1] == {"role": "assistant", "content": "Once upon"}
    assert "[stopped]" in "".join(written)

    calls = []

    def interrupt_once(prompt):
        calls.append(prompt)
        if len(calls) == 1:
            raise KeyboardInterrupt  # Ctrl-C at the prompt: the chat goes on
        return next(lines)

    with monkeypatch.context() as patch:
        patch.setattr(generate_module, "generate_stream", interrupted_stream)
        chat_cmd.repl(session, read=interrupt_once)
    assert len(calls) == 3 and len(session.messages) == 4  # two turns, the second also interrupted


def test_chat_turn_errors_do_not_end_the_chat():
    written = []
    session = chat_cmd.ChatSession(tiny_lm(), SamplingParams(max_new_tokens=200), write=written.append)
    reads = iter(["word " * 100, "/exit"])
    chat_cmd.repl(session, read=lambda prompt: next(reads))
    assert "error:" in "".join(written) and "context" in "".join(written) and session.messages == []
    with pytest.raises(LmforgeError, match="usage: /save"):
        session.command("/save")


def test_generate_json_stream_and_stop_flags(model_dir):
    runner = CliRunner()
    base = ["generate", "the cat", "-m", str(model_dir), "-n", "12", "--seed", "5", "-t", "0.8", "--top-k", "40"]
    streamed = runner.invoke(app, base)
    as_json = runner.invoke(app, [*base, "--json", "--logprobs", "3"])
    assert streamed.exit_code == 0 and as_json.exit_code == 0, (streamed.output, as_json.output)
    out = json.loads(as_json.output)
    assert streamed.output == out["text"] + "\n"  # the stream shows exactly the final text
    assert out["prompt_tokens"] == len(tiny_lm().tokenizer.encode("the cat")) and 1 <= out["completion_tokens"] <= 12
    assert out["finish_reason"] in ("stop", "length") and out["prefill_s"] > 0 and len(out["logprobs"]) == \
        out["completion_tokens"] and all(len(t["top_logprobs"]) == 3 for t in out["logprobs"])
    stop = out["text"][3:5]
    stopped = json.loads(runner.invoke(app, [*base, "--json", "--stop", stop, "--stop", "qqq"]).output)
    assert stopped["text"] == out["text"][:out["text"].index(stop)] and stopped["finish_reason"] == "stop"
    beams = json.loads(runner.invoke(app, ["generate", "the cat", "-m", str(model_dir), "-n", "5", "--num-beams",
                                           "3", "--length-penalty", "0.5", "--json"]).output)
    assert beams["completion_tokens"] <= 5 and "score" in beams


def test_generate_flag_errors_exit_2(model_dir):
    assert_user_error(run_cli("generate", "hi", "-m", str(model_dir), "--top-p", "3", "--frequency-penalty", "0"),
                      "top_p", "(0.0, 1.0]")
    runner = CliRunner()
    for flags, needle in [(["--logprobs", "2"], "--json"), (["--num-beams", "2", "--top-k", "3"], "--num-beams"),
                          (["--repetition-penalty", "0"], "repetition_penalty")]:
        result = runner.invoke(app, ["generate", "hi", "-m", str(model_dir), *flags])
        assert isinstance(result.exception, LmforgeError) and needle in str(result.exception), flags
    assert "--stop" in runner.invoke(app, ["generate", "--help"]).output
    assert "--system" in runner.invoke(app, ["chat", "--help"]).output
