"""`lmforge rs`: rejection sampling fine-tuning (best-of-N by reward, then SFT on the kept completions) on an
embedded task with a verifiable reward. Thin: its flags are generated from RSConfig and the RL run settings.
"""

from __future__ import annotations

from lmforge.cli.rl_common import rl_command
from lmforge.train.post.rl_config import RSConfig

rs_command, EPILOG = rl_command("rs", RSConfig, "Rejection sampling fine-tuning on a verifiable-reward task; "
                                   "prints before/after figures.")
