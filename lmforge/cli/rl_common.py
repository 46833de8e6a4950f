"""What the RL commands (ppo, grpo, rs) share: their flags (generated from train/post/rl_config.py), the model, the
embedded verifiable task, and the before/after evaluation and export (rollouts decode with lmforge.generation through
train/post/rollout.py's policy_generate_fn).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import typer

from lmforge.cli.device_option import pick_device, place
from lmforge.cli.options_from_config import config_command, toml_epilog
from lmforge.train.post.rl_config import rl_command_config


def rl_command(name: str, algo: type, doc: str) -> tuple[Callable[..., None], str]:
    """The typer command `lmforge NAME` and its --help epilog: flags generated from RLCommandConfig, [run] and the
    algorithm's config; running it calls run_command."""
    cls = rl_command_config(name, algo)

    def run(cfg) -> None:
        run_command(getattr(cfg, name), model=cfg.model, task=cfg.task, max_operand=cfg.max_operand,
                    shaping=cfg.shaping, task_seed=cfg.task_seed, dtype=cfg.dtype, reward_model=cfg.reward_model,
                    lora_r=cfg.lora_r, prompts=cfg.prompts, heldout_prompts=cfg.heldout_prompts, reward=cfg.reward,
                    **dataclasses.asdict(cfg.run))
    return config_command(cls, run, doc=doc, name=name), toml_epilog(cls)


def run_command(cfg, *, model: str, out: str | None, task: str, max_operand: int, shaping: bool, task_seed: int,
                eval_prompts: int, eval_every: int, export_hf: bool, threads: int | None, dtype: str,
                reward_model: str | None = None, lora_r: int = 0, prompts: str | None = None,
                heldout_prompts: str | None = None, reward: tuple[str, ...] = (), **run_settings) -> dict:
    """Load the policy, build its generate function (lmforge.generation), and run the algorithm of cfg on the task
    (the embedded arithmetic, or the user's --prompts scored by the --reward terms and / or --reward-model).
    run_settings: RunConfig's other fields (checkpoint_every, grad_accum, resume, fresh, ...)."""
    from lmforge.common.errors import LmforgeError
    from lmforge.data.tasks.verifiable import VerifiableTask
    from lmforge.formats.loader import load
    from lmforge.train.post.rl_config import RunConfig
    from lmforge.train.post.rl_run import algo_name, check_out, run_rl

    run = RunConfig(out=out or f"runs/{algo_name(cfg)}", eval_prompts=eval_prompts, eval_every=eval_every,
                    export_hf=export_hf, threads=threads, **run_settings)
    check_out(run)  # a rerun over checkpoints without --resume / --fresh is refused before anything loads
    if getattr(cfg, "process_reward_model", None) is not None:
        from lmforge.train.post.prm_train import check_prm_dir

        check_prm_dir(cfg.process_reward_model)
    if prompts:
        from lmforge.train.post.prompt_set import PromptSet
        from lmforge.train.post.rewards import parse_reward

        terms = [parse_reward(spec) for spec in reward]  # a bad spec or import fails before the model loads
        verifiable = PromptSet.from_files(prompts, heldout_prompts, seed=task_seed)
        verifiable.check_columns({t.name: t.columns for t in terms})
    else:
        verifiable = VerifiableTask(kind=task, max_operand=max_operand, seed=task_seed, shaping=shaping)
        sizes = {split: verifiable.n_problems(split) for split in ("train", "heldout")}
        for split, size in sizes.items():  # an empty split would make the task draw problems for ever
            if size == 0:
                name = split.replace("heldout", "held-out")
                raise LmforgeError(f"--task {task} --max-operand {max_operand} has no {name} problems (it holds "
                                   f"{sum(sizes.values())}); raise --max-operand")
    where = pick_device(run.device, dtype)
    lm = place(load(model, dtype=dtype), where)  # the policy, its reference copy and the rollouts live there
    if lm.tokenizer is None:
        raise LmforgeError(f"{model} has no tokenizer; RL needs one to decode completions for the reward")
    pad_id = lm.config.pad_token_id if lm.config.pad_token_id is not None else 0
    reward_fn = reference = scorer = None
    if reward_model:
        from lmforge.train.post.reward_model import load_reward_model

        scorer = load_reward_model(reward_model)
        scorer.head.to(where)

        def reward_fn(records, texts):  # the reward model scores the prompt text + the completion
            return scorer.score([r["prompt"] for r in records], list(texts))
    if prompts:  # the user's terms (and the reward model, weight 1) score training and held-out completions alike
        verifiable.render(lm.tokenizer)
        reward_fn = user_reward(verifiable, terms, scorer, run.out)
    if lora_r:
        from lmforge.peft.lora import LoraConfig, apply_lora, lora_disabled
        from lmforge.train.post.rollout import reference_adapters_disabled

        apply_lora(lm.model, LoraConfig(r=lora_r, alpha=2.0 * lora_r))
        reference = reference_adapters_disabled(lm.model, lambda: lora_disabled(lm.model))
    from lmforge.train.post.rollout import policy_generate_fn

    generate_fn = policy_generate_fn(lm.model, lm.stop_token_ids(), pad_id)
    return run_rl(cfg, run, lm, generate_fn, verifiable, reward_fn=reward_fn, reference=reference, log=typer.echo)


def user_reward(prompt_set, terms: list, scorer, out: str):
    """The combined reward of --prompts: the --reward terms, plus the reward model's score (weight 1) when given;
    the prompt set keeps it (reward_fn) and each term alone (extra) for the held-out report. A term that raises
    on a sample is logged to OUT/reward_errors.jsonl."""
    from pathlib import Path

    from lmforge.train.post.rewards import CombinedReward, Reward, RewardErrors

    if scorer is not None:  # chat prompts are scored as their messages, text prompts as one user turn
        def score(prompts, completions, messages=None, **_columns):
            chats = [m if m is not None else p for p, m in zip(prompts, messages or [None] * len(prompts),
                                                                strict=True)]
            return scorer.score(chats, completions).tolist()
        terms = [*terms, Reward("reward_model", score)]
    combined = CombinedReward(terms, RewardErrors(Path(out) / "reward_errors.jsonl", typer.echo))
    prompt_set.reward_fn = combined
    prompt_set.extra = {}
    for term in terms:  # metric names: the function's name (a second one of the same name gets a suffix)
        key = term.key if term.key not in prompt_set.extra else f"{term.key}_{len(prompt_set.extra)}"
        prompt_set.extra[key] = combined.term(term)
    prompt_set.rewards = [f"{t.name}@{t.weight:g}" for t in terms]
    return combined
