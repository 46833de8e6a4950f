"""lmforge decodes through one core (lmforge.generation): one model call (`step.model_step`), one loop
(`generate.generate_stream`, whose batch-1 form is `decode`), one `sample`. Checked on the source, and by behaviour:
the evaluations and training samples that had their own no-cache loop (train/sample.py) now run that loop."""

import ast
from pathlib import Path

import lmforge
from lmforge.generation.generate import decode, generate, greedy_completion
from lmforge.generation.sampling_params import SamplingParams
from lmforge.train.needle import model_answer
from tests.context_lm import assert_not_constant, naive_greedy
from tests.tiny_lm import tiny_lm

PACKAGE = Path(lmforge.__file__).parent


def _sources():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path.relative_to(PACKAGE).as_posix(), ast.parse(path.read_text(), str(path))


def test_one_sample_function_and_one_model_call_on_a_cache():
    samples = [name for name, tree in _sources() for node in tree.body
               if isinstance(node, ast.FunctionDef) and node.name == "sample" and not name.startswith("cli/")]
    # (cli/ has `lmforge data sample`, a command; methods such as PPO's `sample` of a rollout are not token samplers)
    assert samples == ["generation/sampling.py"]
    # a model forward on a KV cache is written once, in the decode step; the model and its adapter wrappers
    # (which are models themselves, like the training-time LLaVA wrapper train/vlm_model.py) pass the cache down
    callers = {name for name, tree in _sources() for node in ast.walk(tree)
               if isinstance(node, ast.Call) and any(k.arg == "kv_cache" for k in node.keywords)
               and not name.startswith(("model/", "peft/")) and name != "train/vlm_model.py"}
    assert callers == {"generation/step.py"}
    assert not (PACKAGE / "train" / "sample.py").exists()
    assert not (PACKAGE / "engine" / "fast_decode.py").exists()


def test_decode_is_the_generate_loop_for_one_prompt(context_llama):
    prompt = [3, 17, 5, 9, 2]
    greedy = decode(context_llama, prompt, max_new_tokens=16)
    assert_not_constant(greedy)
    assert greedy == naive_greedy(context_llama, prompt, 16)
    params = SamplingParams(max_new_tokens=16, temperature=0.9, top_k=20, seed=7)
    sampled = decode(context_llama, prompt, max_new_tokens=16, temperature=0.9, seed=7)
    assert sampled == generate(context_llama, [prompt], SamplingParams(max_new_tokens=16, temperature=0.9, seed=7))[0]
    assert sampled != greedy  # the seed and temperature reached the sampler
    assert generate(context_llama, [prompt], params) == generate(context_llama, [prompt], params)


class _TokensSeen:
    """Counts the token positions a model's forward runs (a cache-less loop re-runs the whole window per token)."""

    def __init__(self, model):
        self.n = 0
        self.handle = model.register_forward_pre_hook(self._count, with_kwargs=True)

    def _count(self, _module, args, kwargs):
        ids = args[0] if args else kwargs["input_ids"]
        self.n += ids.shape[1]


def test_greedy_completion_runs_each_token_once_and_drops_the_stop(context_llama):
    prompt = [3, 17, 5, 9, 2, 11]
    reference = naive_greedy(context_llama, prompt, 12)
    assert_not_constant(reference)
    seen = _TokensSeen(context_llama)
    try:
        assert greedy_completion(context_llama, prompt, 12) == reference
        assert seen.n == len(prompt) + 12 - 1  # prefill, then one token per step (cache-less: 6 + 7 + ... + 17)
        stop = reference[4]
        cut = reference[:reference.index(stop)]
        assert greedy_completion(context_llama, prompt, 12, (stop,)) == cut
    finally:
        seen.handle.remove()
    long_prompt = (prompt * 200)[:context_llama.config.max_seq_len + 5]  # longer than the context: its tail is kept
    assert len(greedy_completion(context_llama, long_prompt, 4)) == 4


def test_passkey_answers_decode_with_the_cache():
    lm = tiny_lm()
    ids = lm.tokenizer.encode("hello world, the pass key is")
    seen = _TokensSeen(lm.model)
    try:
        text = model_answer(lm.model, lm.tokenizer, max_new_tokens=6)(ids)
    finally:
        seen.handle.remove()
    expected = naive_greedy(lm.model, ids, 6)
    assert text == lm.tokenizer.decode(expected, skip_special_tokens=True)
    assert seen.n == len(ids) + 6 - 1
