"""The fast tier: no launcher, no training run; `python -m pytest -m "not slow"` runs it in under a minute."""
