"""What the RL commands (ppo, grpo, rs) share: the engine-backed generate function handed to the training code
(train never imports the engine), the embedded verifiable task, and the before/after evaluation and export.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from lmforge.cli.dtype_warning import warn_if_slow_dtype

if TYPE_CHECKING:  # torch and the engine load when a command runs, not at `lmforge --help`
    import torch

    from lmforge.train.post.rollout import GenerateFn


def engine_generate_fn(model: torch.nn.Module, stop_token_ids: list[int], pad_id: int) -> GenerateFn:
    """A GenerateFn on lmforge.engine.generate: row i of a call samples with seed + i, so the G samples of a
    group differ while the whole rollout stays reproducible."""
    from lmforge.engine.generate import generate
    from lmforge.engine.sampling_params import SamplingParams
    from lmforge.train.post.rollout import RolloutParams

    def generate_fn(prompts: list[list[int]], params: RolloutParams) -> list[list[int]]:
        rows = [SamplingParams(max_new_tokens=params.max_new_tokens, temperature=params.temperature,
                               top_p=params.top_p, seed=None if params.seed is None else params.seed + i,
                               stop_token_ids=tuple(stop_token_ids))
                for i in range(len(prompts))]
        was_training = model.training
        model.eval()
        try:
            return generate(model, prompts, rows, pad_id=pad_id)
        finally:
            model.train(was_training)
    return generate_fn


# flags shared by `lmforge ppo`, `lmforge grpo` and `lmforge rs` (the model, the task and the run around it)
MODEL = typer.Option(..., "--model", "-m", help="Policy to train: an HF directory (e.g. a run's hf/), a .gguf, "
                     "or smollm2-135m.")
OUT = typer.Option(None, "--out", "-o", help="Run directory (metrics.jsonl, PNG curves, report.md, hf/).")
TASK = typer.Option("add", "--task", help="Verifiable task: add | sub | mul | mixed arithmetic.")
MAX_OPERAND = typer.Option(9, "--max-operand", help="Task operands are drawn from [0, MAX_OPERAND].")
SHAPING = typer.Option(True, "--shaping/--no-shaping", help="Partial credit (0.6 exact + 0.2 closeness + 0.2 "
                       "format) instead of 0/1 exact match.")
TASK_SEED = typer.Option(0, "--task-seed", help="Seed of the task's prompt generator.")
EVAL_PROMPTS = typer.Option(64, "--eval-prompts", help="Most distinct held-out problems in each evaluation.")
EVAL_EVERY = typer.Option(20, "--eval-every", help="Steps between held-out evaluations (0: before and after only).")
EXPORT = typer.Option(True, "--export-hf/--no-export-hf", help="Write the trained policy to OUT/hf.")
THREADS = typer.Option(None, "--threads", help="torch CPU threads.")
DTYPE = typer.Option("float32", "--dtype", help="Training dtype: float32 (recommended) or bfloat16.")
REWARD_MODEL = typer.Option(None, "--reward-model", help="Train on a reward model's score (an `lmforge rm` run's "
                            "reward_model/ directory) instead of the verifiable reward; held-out figures still "
                            "use the verifiable reward.")
LORA_R = typer.Option(0, "--lora-r", help="LoRA rank for the policy (q, k, v, o projections); 0 trains every "
                      "weight. With LoRA the reference is the base with the adapters switched off (no copy).")


def run_command(cfg, *, model: str, out: str | None, task: str, max_operand: int, shaping: bool, task_seed: int,
                eval_prompts: int, eval_every: int, export_hf: bool, threads: int | None, dtype: str,
                reward_model: str | None = None, lora_r: int = 0) -> dict:
    """Load the policy, build the engine's generate function, and run the algorithm of cfg on the task."""
    from lmforge.common.errors import LmforgeError
    from lmforge.data.tasks.verifiable import VerifiableTask
    from lmforge.formats.loader import load
    from lmforge.train.post.rl_run import RunConfig, algo_name, run_rl

    run = RunConfig(out=out or f"runs/{algo_name(cfg)}", eval_prompts=eval_prompts, eval_every=eval_every,
                    export_hf=export_hf, threads=threads)
    verifiable = VerifiableTask(kind=task, max_operand=max_operand, seed=task_seed, shaping=shaping)
    sizes = {split: verifiable.n_problems(split) for split in ("train", "heldout")}
    for split, size in sizes.items():  # an empty split would make the task draw problems for ever
        if size == 0:
            name = split.replace("heldout", "held-out")
            raise LmforgeError(f"--task {task} --max-operand {max_operand} has no {name} problems (it holds "
                               f"{sum(sizes.values())}); raise --max-operand")
    warn_if_slow_dtype(dtype)
    lm = load(model, dtype=dtype)
    if lm.tokenizer is None:
        raise LmforgeError(f"{model} has no tokenizer; RL needs one to decode completions for the reward")
    pad_id = lm.config.pad_token_id if lm.config.pad_token_id is not None else 0
    reward_fn = reference = None
    if reward_model:
        from lmforge.train.post.reward_model import load_reward_model

        scorer = load_reward_model(reward_model)

        def reward_fn(records, texts):  # the reward model scores the prompt text + the completion
            return scorer.score([r["prompt"] for r in records], list(texts))
    if lora_r:
        from lmforge.peft.lora import LoraConfig, apply_lora, lora_disabled
        from lmforge.train.post.rollout import reference_adapters_disabled

        apply_lora(lm.model, LoraConfig(r=lora_r, alpha=2.0 * lora_r))
        reference = reference_adapters_disabled(lm.model, lambda: lora_disabled(lm.model))
    generate_fn = engine_generate_fn(lm.model, lm.stop_token_ids(), pad_id)
    return run_rl(cfg, run, lm, generate_fn, verifiable, reward_fn=reward_fn, reference=reference, log=typer.echo)
