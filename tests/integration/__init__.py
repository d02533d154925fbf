"""The slow tier: the real deepspeed launcher, training runs, end-to-end pipelines (conftest.py marks them)."""
