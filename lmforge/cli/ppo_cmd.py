"""`lmforge ppo`: PPO with a critic, a frozen reference and a per-token KL penalty, on an embedded task with a
verifiable reward. Thin: its flags are generated from PPOConfig and the RL run settings (train/post/rl_config.py).
"""

from __future__ import annotations

from lmforge.cli.rl_common import rl_command
from lmforge.train.post.rl_config import PPOConfig

ppo_command, EPILOG = rl_command("ppo", PPOConfig, "RLHF with PPO (actor, critic, reward, reference) on a "
                                   "verifiable-reward task; prints before/after figures.")
