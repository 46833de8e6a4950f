"""One RL post-training run, whatever the algorithm (PPO, GRPO family, rejection sampling), in the one Trainer loop
(the algorithm is a rollout objective: rollout_objective.py): evaluate the policy on held-out prompts, take the
algorithm's steps (checkpoints, --resume, the non-finite guard, metrics.jsonl), evaluate again, write summary.json
and report.md with the before/after figures, and export the trained policy as an HF directory.
"""

from __future__ import annotations

import copy
from dataclasses import asdict
from pathlib import Path

from lmforge.common.threads import torch_threads
from lmforge.data.tasks.verifiable import VerifiableTask, follows_format, reward
from lmforge.peft.lora import unload_lora
from lmforge.peft.peft_io import save_adapter
from lmforge.train.config import TrainConfig
from lmforge.train.metrics import read_metrics
from lmforge.train.number_format import fmt_duration
from lmforge.train.post.grpo import GRPOConfig, GRPOTrainer
from lmforge.train.post.policy_eval import evaluate_policy
from lmforge.train.post.ppo import PPOConfig, PPOTrainer
from lmforge.train.post.prompt_set import PromptSet
from lmforge.train.post.rejection_sampling import RejectionSampling, RSConfig
from lmforge.train.post.rl_config import RunConfig
from lmforge.train.post.rollout import GenerateFn, ReferenceFn, RewardFn, reference_from_model, reward_from_checker
from lmforge.train.post.rollout_objective import RolloutAlgorithm, rollout_objective
from lmforge.train.post.run_log import heldout_warning, write_run_report
from lmforge.train.pretrain import seed_everything
from lmforge.train.trainer import Trainer
from lmforge.train.trainer_checkpoints import check_fresh_start

AlgoConfig = PPOConfig | GRPOConfig | RSConfig


def algo_name(cfg: AlgoConfig) -> str:
    return {PPOConfig: "ppo", GRPOConfig: "grpo", RSConfig: "rs"}[type(cfg)]


def n_steps(cfg: AlgoConfig) -> int:
    return cfg.rounds if isinstance(cfg, RSConfig) else cfg.steps


def check_out(run: RunConfig) -> None:
    """Before any loading: a run that would start over existing checkpoints without --fresh is refused."""
    if not run.resume:
        check_fresh_start(run.out, run.fresh)


def build_algorithm(cfg: AlgoConfig, lm, reference: ReferenceFn, reward_fn: RewardFn, generate_fn: GenerateFn,
                    task: VerifiableTask | PromptSet, pad_id: int, grad_accum: int = 1) -> RolloutAlgorithm:
    """The algorithm of cfg, drawing fresh training prompts from the task each step (a function of the step)."""
    if isinstance(cfg, PPOConfig):
        return PPOTrainer(cfg, lm.model, reference, reward_fn, generate_fn, lm.tokenizer, pad_id,
                          lambda i, _r: task.records(cfg.batch_size, "train", start=i * cfg.batch_size), grad_accum)
    if isinstance(cfg, GRPOConfig):
        per_step = cfg.prompts_per_step * (1 + cfg.resample_rounds)
        algo, extra = GRPOTrainer, {}
        if cfg.process_reward_model is not None:  # dense per-step rewards (prm_grpo.py)
            from lmforge.train.post.prm_grpo import ProcessGRPOTrainer
            from lmforge.train.post.prm_train import load_prm

            algo, extra = ProcessGRPOTrainer, {"prm": load_prm(cfg.process_reward_model,
                                                                   next(lm.model.parameters()).device)}
        return algo(cfg, lm.model, reference if cfg.beta > 0 else None, reward_fn, generate_fn, lm.tokenizer,
                    pad_id, lambda i, r: task.records(cfg.prompts_per_step, "train",
                                                      start=i * per_step + r * cfg.prompts_per_step),
                    grad_accum, **extra)
    return RejectionSampling(cfg, lm.model, lm.tokenizer, generate_fn, reward_fn, pad_id,
                             lambda i, _r: task.records(cfg.prompts_per_round, "train",
                                                        start=i * cfg.prompts_per_round), grad_accum)


def train_config(cfg: AlgoConfig, run: RunConfig) -> TrainConfig:
    """The Trainer's view of an RL run: the algorithm's constant lr, AdamW without weight decay (torch's betas),
    a train record every step, fp32 on --device (no autocast: a bfloat16 policy trains in its dtype), no samples."""
    total = n_steps(cfg)
    return TrainConfig.from_dict({
        "out": run.out, "seed": cfg.seed, "resume": run.resume, "fresh": run.fresh, "threads": run.threads,
        "device": run.device, "precision": "fp32", "max_steps": total, "lr": cfg.lr, "lr_schedule": "constant",
        "warmup_steps": 0, "weight_decay": 0.0, "beta1": 0.9, "beta2": 0.999, "grad_clip": cfg.grad_clip,
        "grad_accum": run.grad_accum, "eval_every": run.eval_every or total, "log_every": 1,
        "checkpoint_every": run.checkpoint_every, "keep_checkpoints": run.keep_checkpoints, "sample_prompts": (),
        "sample_every": total, "peak_tflops": 1.0, "export_hf": False, "progress": run.progress})


def run_rl(cfg: AlgoConfig, run: RunConfig, lm, generate_fn: GenerateFn, task: VerifiableTask | PromptSet,
           reward_fn: RewardFn | None = None, reference: ReferenceFn | None = None, log=print) -> dict:
    """Train lm.model in place; returns the summary (also written to run.out/summary.json), or the Trainer's
    summary (status "interrupted") when stopped by a signal.

    reward_fn: defaults to the task's verifiable reward (pass a reward model's scorer instead);
    reference: defaults to a frozen copy of the initial policy (pass an adapters-disabled one with LoRA); on
    --resume it is rebuilt from the starting weights, before the checkpoint's are loaded.
    task: the embedded arithmetic task, or the user's prompts with their reward (prompt_set.py, rewards.py).
    The held-out figures always use the task's own reward (not a reward model's score)."""
    with torch_threads(run.threads):
        return _run(cfg, run, lm, generate_fn, task, reward_fn, reference, log)


def _run(cfg: AlgoConfig, run: RunConfig, lm, generate_fn: GenerateFn, task: VerifiableTask | PromptSet,
         reward_fn: RewardFn | None, reference: ReferenceFn | None, log) -> dict:
    check_out(run)
    name = algo_name(cfg)
    pad_id = lm.config.pad_token_id if lm.config.pad_token_id is not None else 0
    task_reward, extra, title, remedy = task_rewards(task, name)
    reward_fn = reward_fn or task_reward
    reference = reference or reference_from_model(copy.deepcopy(lm.model))
    held = task.distinct_records(run.eval_prompts, "heldout")
    warning = heldout_warning(len(held), "problems", "held-out reward", remedy)

    def evaluate() -> dict[str, float]:
        figures = evaluate_policy(lm.model, reference, held, lm.tokenizer, generate_fn, task_reward, pad_id,
                                  cfg.max_new_tokens, extra=extra)
        return {f"eval_{k}": v for k, v in figures.items()}

    def start_record() -> dict[str, float]:
        before = evaluate()
        log(f"{name}: before: held-out reward {before['eval_reward_greedy']:.3f} (greedy), "
            f"{before['eval_reward_sampled']:.3f} (sampled) on {len(held)} problems")
        if warning:
            log(warning)
        return before

    seed_everything(cfg.seed)  # the critic's head is initialised from the global RNG
    algo = build_algorithm(cfg, lm, reference, reward_fn, generate_fn, task, pad_id, run.grad_accum)
    objective = rollout_objective(algo, name, evaluate, start_record, "eval_reward_greedy", "held-out reward")
    trainer = Trainer(train_config(cfg, run), algo.module, None, run_dir=run.out, log=log, objective=objective,
                      label=name)
    result = trainer.fit()
    if result["status"] != "finished":
        return result
    before, after = _before_after(Path(run.out))
    total = n_steps(cfg)
    errors = getattr(getattr(task, "reward_fn", None), "errors", None)
    summary = {"algorithm": name, "steps": total, "elapsed_s": result["elapsed_s"],
               "skipped_steps": result["nonfinite_steps"], "heldout_problems": len(held),
               **{f"before_{k}": v for k, v in before.items()}, **{f"after_{k}": v for k, v in after.items()},
               "config": asdict(cfg), "run": asdict(run),
               "task": asdict(task) if isinstance(task, VerifiableTask) else task.summary(),
               **({"reward_errors": errors.count} if errors is not None else {})}
    labels = {"exact": "exact match (greedy)", "format": "format: one number then stop (greedy)"}
    report = write_run_report(
        Path(run.out), title, summary,
        {f"held-out reward (greedy), {len(held)} problems": (before["reward_greedy"], after["reward_greedy"]),
         "held-out reward (sampled)": (before["reward_sampled"], after["reward_sampled"]),
         **{labels.get(k, f"{k} (greedy)"): (before[f"{k}_greedy"], after[f"{k}_greedy"]) for k in extra},
         "KL(policy || reference), nats/sequence": (before["kl"], after["kl"])}, [warning])
    if getattr(lm.model, "lora_config", None) is not None:  # the adapter, then the merged policy
        save_adapter(lm.model, lm.model.lora_config, Path(run.out) / "adapter")
        unload_lora(lm.model, merge=True)
    if run.export_hf:
        lm.save(Path(run.out) / "hf")
    log(f"{name}: after {total} steps: held-out reward {before['reward_greedy']:.3f} -> {after['reward_greedy']:.3f}"
        f" (greedy) on {len(held)} problems, KL to the reference {after['kl']:.3f} nats/sequence in "
        f"{fmt_duration(summary['elapsed_s'])}; report {report}")
    return summary


def task_rewards(task, name: str) -> tuple[RewardFn, dict[str, RewardFn], str, str]:
    """(the held-out reward, the extra held-out figures by name, the report's title, the remedy for too few
    held-out problems) of the embedded arithmetic task or of the user's prompts (prompt_set.py: its combined
    reward and each of its terms)."""
    if isinstance(task, VerifiableTask):
        extra = {"exact": reward_from_checker(lambda r, c: reward(r, c, shaping=False)),
                 "format": reward_from_checker(lambda r, c: float(follows_format(c)))}
        return (reward_from_checker(task.reward), extra, f"{name.upper()} on the verifiable {task.kind} task",
                f"raise --eval-prompts, or --max-operand: the task holds {task.n_problems('heldout')} held-out "
                f"problems")
    return task.reward_fn, task.extra, f"{name.upper()} on {task.source}", "add held-out prompts"


def _before_after(run_dir: Path) -> tuple[dict[str, float], dict[str, float]]:
    """The held-out figures of step 0 and of the last evaluation, from metrics.jsonl (a resumed run evaluated
    step 0 in its first attempt)."""
    evals = [r for r in read_metrics(run_dir / "metrics.jsonl") if r.get("kind") == "val"]
    strip = lambda r: {k.removeprefix("eval_"): v for k, v in r.items() if k.startswith("eval_")}  # noqa: E731
    return strip(evals[0]), strip(evals[-1])
