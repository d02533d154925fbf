# The README's two everyday commands. Variables can be overridden: `make demo ARGS="--smoke"`.
PYTHON ?= python3
ARGS ?=

.PHONY: demo smoke test

# The whole pipeline on the real genome: preprocess -> pretrain -> export -> fine-tune -> results (~13 min, 2 CPU cores).
demo:
	$(PYTHON) launch/quickstart.py $(ARGS)

# The smallest end-to-end setting (~3 min): what tests/test_quickstart.py runs.
smoke:
	$(PYTHON) launch/quickstart.py --smoke --out runs/quickstart-smoke $(ARGS)

# README: "Run the tests"
test:
	$(PYTHON) -m pytest -q tests
