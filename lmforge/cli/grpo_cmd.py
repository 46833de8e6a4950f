"""`lmforge grpo`: GRPO and its successors (DAPO options, Dr. GRPO, RLOO / ReMax baselines) on an embedded task
with a verifiable reward. Thin: its flags are generated from GRPOConfig and the RL run settings (rl_config.py).
"""

from __future__ import annotations

from lmforge.cli.rl_common import rl_command
from lmforge.train.post.rl_config import GRPOConfig

grpo_command, EPILOG = rl_command("grpo", GRPOConfig, "GRPO family (group baselines, no critic) on a "
                                   "verifiable-reward task; prints before/after figures.")
