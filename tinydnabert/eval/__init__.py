"""Evaluation: what a pretrained encoder is worth on labelled tasks.

common (EvalConfig, splits, MCC, results and predictions files) and encoder (the one way to load a model)
are shared by finetune, probe and embed; benchmark runs them per task and arm, report draws the table.
Imports prep/ and pretrain/, nothing from app/.
"""
