"""Post-training: supervised fine-tuning, reward models, preference optimisation (DPO family) and reinforcement
learning from rewards (PPO, GRPO family, rejection sampling). Rollouts come from a generate function passed in:
nothing here imports the serving engine.
"""
