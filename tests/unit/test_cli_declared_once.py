"""Issue 22 (`duplicates`: no pair in lmforge/cli or lmforge/train that is the same logic): logic that two commands
had each written out now lives in one place, and the commands behave as before. The sampling flags of `generate`
and `chat` are declared once (sampling_options.with_sampling_flags) and reach SamplingParams in both; the JSONL
record files of `classify train --data` and of the RL commands' `--prompts` are read by one reader
(common/jsonl.py), with the same one-line errors."""

import inspect

import pytest

from lmforge.cli import chat_cmd, generate_cmd
from lmforge.cli import sampling_options as opt
from tests.cli_util import assert_user_error
from tests.inprocess_cli import run_main
from tests.pretrained_tiny import pretrained_tiny_dir

SAMPLING = ["--max-new-tokens", "3", "--temperature", "0.7", "--top-k", "5", "--top-p", "0.9", "--min-p", "0.05",
            "--repetition-penalty", "1.1", "--presence-penalty", "0.5", "--frequency-penalty", "0.25"]
EXPECTED = {"max_new_tokens": 3, "temperature": 0.7, "top_k": 5, "top_p": 0.9, "min_p": 0.05,
            "repetition_penalty": 1.1, "presence_penalty": 0.5, "frequency_penalty": 0.25, "seed": 7}


@pytest.mark.parametrize("command", [generate_cmd.generate, chat_cmd.chat])
def test_sampling_flags_are_declared_once(command):
    written = inspect.signature(command.__wrapped__).parameters  # what the command's source declares
    assert "sampling" in written and not set(opt.SAMPLING_FLAGS) & set(written)
    shown = list(inspect.signature(command).parameters)  # what typer builds the flags from
    start = shown.index("max_new_tokens")
    assert shown[start:start + len(opt.SAMPLING_FLAGS)] == list(opt.SAMPLING_FLAGS)


@pytest.mark.parametrize("args", [["generate", "hi"], ["chat"]])
def test_sampling_flags_reach_sampling_params_in_both_commands(args, capsys, monkeypatch):
    seen, build = [], opt.sampling_params

    def stop_here(**flags):  # the commands build their SamplingParams here; stop before a model loads
        seen.append(build(**flags))
        raise SystemExit(0)
    monkeypatch.setattr(opt, "sampling_params", stop_here)
    run = run_main(capsys, *args, *SAMPLING, "--seed", "7")
    assert run.returncode == 0, run.stderr
    assert {name: getattr(seen[0], name) for name in EXPECTED} == EXPECTED


def test_jsonl_record_files_give_the_same_one_line_errors(tmp_path, capsys):
    model = str(pretrained_tiny_dir())
    (tmp_path / "broken.jsonl").write_text('{"text": "a", "label": "x", "prompt": "p"}\n{"text": \n')
    (tmp_path / "blank.jsonl").write_text("\n  \n")
    classify = ("classify", "train", "--model", model, "--out", tmp_path / "c", "--data")
    grpo = ("grpo", "--model", model, "--out", tmp_path / "g", "--reward", "json", "--prompts")
    for command, kind, items in [(classify, "data file", "examples"), (grpo, "prompt file", "prompts")]:
        assert_user_error(run_main(capsys, *command, tmp_path / "broken.jsonl"), "broken.jsonl:2 is not valid JSON")
        assert_user_error(run_main(capsys, *command, tmp_path / "blank.jsonl"),
                          f"{kind} {tmp_path / 'blank.jsonl'} holds no {items}")
        assert_user_error(run_main(capsys, *command, tmp_path / "none.jsonl"),
                          f"{kind} {tmp_path / 'none.jsonl'} does not exist")
    assert not (tmp_path / "c").exists() and not (tmp_path / "g").exists()  # refused before anything ran


def test_quantize_and_prune_share_their_calibration_flags_and_reader(tmp_path, capsys):
    from lmforge.cli import calibration, prune_cmd, quantize_cmd

    prune, quantize = (inspect.signature(c).parameters for c in (prune_cmd.prune, quantize_cmd.quantize))
    for name, option in [("src", calibration.SOURCE), ("seq_len", calibration.SEQ_LEN), ("out", calibration.OUT)]:
        assert prune[name].default is option and quantize[name].default is option
    missing = tmp_path / "none.txt"
    for args in (["prune", "--method", "wanda"], ["quantize", "--method", "awq", "--bits", "4"]):
        run = run_main(capsys, *args, "--calibration", missing, "--out", tmp_path / "o")
        assert_user_error(run, f"--calibration {missing}: no such file")


@pytest.mark.parametrize("args, message", [
    (["ppo", "--model", "m", "--kl-horizon", "0"], "PPOConfig.kl_horizon=0: must be a positive integer"),
    (["ppo", "--model", "m", "--gamma", "1.5"], "PPOConfig.gamma=1.5: must be in [0, 1]"),
    (["grpo", "--model", "m", "--temperature", "-1"], "GRPOConfig.temperature=-1.0: must be in [0, inf]"),
    (["rs", "--model", "m", "--eval-every", "-1"], "RunConfig.eval_every=-1: must be an integer >= 0"),
    (["grpo", "--model", "m", "--threads", "0"], "RunConfig.threads=0: must be a positive integer"),
    (["grpo", "--model", "m", "--resume", "--fresh"], "resume and fresh exclude each other"),
    (["clip", "--dim", "0"], "ClipTrainConfig.dim=0: must be a positive integer"),
])
def test_training_configs_check_their_fields_with_the_shared_checks(args, message, capsys):
    assert_user_error(run_main(capsys, *args), message)


def test_decoder_only_and_encoder_decoder_generate_sum_up_their_stream_in_one_place(capsys):
    from lmforge.cli import generate_seq2seq, stream_summary

    assert generate_cmd.stream_summary is generate_seq2seq.stream_summary is stream_summary.stream_summary
    events = [[type("Event", (), {"token": t, "text": s, "finish_reason": f})()]
              for t, s, f in [(5, "Hel", None), (6, "lo", None), (2, "", "stop")]]
    seen = []
    out = stream_summary.stream_summary(iter(events), prompt_tokens=4, echo=True, on_event=seen.append)
    assert capsys.readouterr().out == "Hello\n" and len(seen) == 3
    assert {k: out[k] for k in ("text", "prompt_tokens", "completion_tokens", "finish_reason")} == {
        "text": "Hello", "prompt_tokens": 4, "completion_tokens": 3, "finish_reason": "stop"}
    assert out["total_s"] >= out["prefill_s"] >= 0 and out["decode_tok_s"] > 0
