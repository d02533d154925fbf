# The README's two set-up commands: `make test` and `make demo`. Both install first.
# Variables can be overridden: `make demo ARGS="--smoke"`, `make install TORCH=` (keep your torch).
PYTHON ?= python3
ARGS ?=
# CPU build FIRST: an unpinned `torch` (asked for by deepspeed) would pull a multi-GB CUDA build.
# On a GPU machine install your CUDA torch yourself and pass TORCH= (empty) to skip this.
TORCH ?= torch==2.13.0

.PHONY: install demo smoke test

install:
	@if [ -n "$(TORCH)" ]; then $(PYTHON) -m pip install --quiet "$(TORCH)"; fi
	$(PYTHON) -m pip install --quiet -e '.[test]'

# The whole pipeline on the real genome: preprocess -> pretrain -> export -> fine-tune -> results (~10 min, 2 CPU cores).
demo: install
	$(PYTHON) -m tinydnabert.cli quickstart $(ARGS)

# The smallest end-to-end setting (~2 min): what tests/test_quickstart.py runs.
smoke: install
	$(PYTHON) -m tinydnabert.cli quickstart --smoke --out runs/quickstart-smoke $(ARGS)

# README: "Run the tests" (what .ci/run runs after the same install).
test: install
	$(PYTHON) -m pytest -q tests
