"""Every tensor on the model's device, checked without a GPU: tests/device_trace.py simulates a second device on
the CPU (a tensor is "on the device" when the model's weights, an explicit device= or .to(device) put it there), and
records every op that mixes it with a host tensor, as CUDA would refuse. Generation, the serving engine and the
trainers run under it; the C++ CPU kernels are never chosen for tensors off the CPU."""

from unittest import mock

import pytest
import torch
from typer.testing import CliRunner

import lmforge.generation.cache.paged as paged
import lmforge.model.inference as inference
from lmforge.cli.main import app
from lmforge.engine.llm import LLM, EngineConfig
from lmforge.generation.cache.paged import PagedKVCache
from lmforge.generation.cache.paged_backend import PagedTorchBackend
from lmforge.generation.generate import generate
from lmforge.generation.grammar import json_schema_grammar
from lmforge.generation.sampling_params import SamplingParams
from tests.device_trace import DeviceTrace
from tests.tiny_lm import tiny_lm


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("device") / "tiny"
    tiny_lm().save(path)
    return path


def test_the_trace_catches_a_host_tensor_fed_to_the_model():
    model = tiny_lm().model
    with DeviceTrace(model) as trace:
        model(torch.tensor([[1, 2, 3]]))  # no device=: on a GPU machine this is a CPU tensor
    assert trace.faults and "embedding mixes device and host tensors" in trace.faults[0]
    with DeviceTrace(model) as trace:
        model(torch.tensor([[1, 2, 3]], device=model.embed.weight.device))
    assert trace.faults == []


def test_generate_and_the_engine_keep_every_tensor_on_the_device():
    lm = tiny_lm()
    grammar = json_schema_grammar({"type": "object", "properties": {"a": {"type": "integer"}}})
    params = [SamplingParams(max_new_tokens=5, temperature=0.8, top_p=0.9, top_k=20, repetition_penalty=1.2, seed=1,
                             logprobs=2, logit_bias={5: 2.0}, stop_token_ids=[2]),
              SamplingParams(max_new_tokens=6, temperature=1.0, seed=2, stop_token_ids=[2], grammar=grammar),
              SamplingParams(max_new_tokens=3, min_p=0.1, presence_penalty=0.5, frequency_penalty=0.3)]
    prompts = [[1, 2, 3, 4, 5, 6, 7, 8, 9], [5, 6], [7]]
    with mock.patch.object(paged, "cpu_ops", lambda: None), DeviceTrace(lm.model) as trace:  # GPU: no C++ kernels
        generate(lm.model, prompts, params, tokenizer=lm.tokenizer)
        llm = LLM(lm.model, lm.tokenizer, EngineConfig(num_blocks=32, block_size=4))
        outputs = llm.generate(prompts, params)
    assert isinstance(llm.runner.cache.backend, PagedTorchBackend)
    assert all(o.output_ids for o in outputs)
    assert trace.faults == []


def test_cpu_kernels_are_never_chosen_off_the_cpu():
    """The paged cache's attention backend: the kernel qualifies on the CPU (float32, head width 16), and the
    pure-PyTorch path takes the same cache anywhere else (meta: any non-CPU device, without one)."""
    shapes = {"k": (2, 16), "v": (2, 16)}
    on_cpu = PagedKVCache(2, 4, 16, shapes)
    assert isinstance(PagedKVCache(2, 4, 16, shapes, device="meta").backend, PagedTorchBackend)
    if paged.cpu_ops() is not None:  # the C++ extension built here: the CPU cache does take it
        assert not isinstance(on_cpu.backend, PagedTorchBackend)


@pytest.mark.parametrize("args", [
    ["dpo", "--train-pairs", "4", "--heldout-pairs", "2", "--max-len", "40", "--max-steps", "1", "--batch-size",
     "2", "--no-export-hf"],
    ["ppo", "--steps", "1", "--minibatch-size", "4", "--ppo-epochs", "1", "--eval-prompts", "2", "--eval-every", "0",
     "--max-new-tokens", "2", "--no-export-hf"],
], ids=["dpo", "ppo"])
def test_trainers_keep_every_tensor_on_the_device(model_dir, tmp_path, args):
    """A preference run (reference log-probs, pair batches) and an RL run (rollouts, rewards, critic, GAE)."""
    with DeviceTrace() as trace:  # the run's own model.to(device) puts the weights on the simulated device
        result = CliRunner().invoke(app, [*args, "-m", str(model_dir), "-o", str(tmp_path / "run"), "--device",
                                          "cpu", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert trace.faults == []


def _classifier_dir(path):
    from lmforge.formats.hf_classifier import save_classifier
    from lmforge.model.classifier import Classifier

    lm = tiny_lm()
    save_classifier(Classifier(lm.model, "sequence", ["no", "yes"]), path)
    lm.tokenizer.save(path)
    return path


@pytest.mark.parametrize("command", ["embed", "classify predict", "rag index", "data select"])
def test_encoders_keep_every_tensor_on_the_device(model_dir, tmp_path, command):
    """The commands that embed, classify or score texts: their model goes to --device and so does every batch."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("the cat sat on the mat. " * 20)
    chats = tmp_path / "chats.jsonl"
    chats.write_text("".join(f'{{"messages": [{{"role": "user", "content": "q{i}"}}, {{"role": "assistant", '
                             f'"content": "the cat {i}"}}]}}\n' for i in range(6)))
    args = {"embed": ["embed", str(model_dir), "the cat", "a dog sat"],
            "classify predict": ["classify", "predict", str(_classifier_dir(tmp_path / "cls")), "--text", "the cat"],
            "rag index": ["rag", "index", str(tmp_path / "docs"), "-o", str(tmp_path / "index"), "-e",
                          str(model_dir), "--chunk-size", "16", "--chunk-overlap", "0"],
            "data select": ["data", "select", str(chats), "-o", str(tmp_path / "kept.jsonl"), "--by", "kcenter",
                            "--keep", "3", "--model", str(model_dir), "--quiet"]}[command]
    # the command's own .to(device) puts the weights on the simulated device; off the CPU, prepare_for_inference
    # gives the linears no CPU backend (no C++ kernel, no oneDNN packing), so neither does it here
    no_cpu_backend = mock.patch.object(inference, "_plan", lambda m, cap: None)
    with mock.patch.object(inference, "cpu_ops", lambda: None), no_cpu_backend, DeviceTrace() as trace:
        result = CliRunner().invoke(app, [*args, "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert trace.faults == []
