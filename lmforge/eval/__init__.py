"""Evaluation: the lm-eval adapter, local benchmark tasks, LLM-as-judge, decontamination and the report card."""
