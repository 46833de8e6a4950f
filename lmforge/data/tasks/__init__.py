"""Embedded post-training tasks: deterministic, offline generators of instruction data, preference pairs and
prompts with verifiable rewards, each a pure function of (seed, index) like the pretraining corpus.
"""
