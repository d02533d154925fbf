# The README's two set-up commands: `make test` and `make demo`. Both install first.
# Variables can be overridden: `make demo ARGS="--smoke"`, `make install TORCH=` (keep your torch).
PYTHON ?= python3
ARGS ?=
# CPU build FIRST: an unpinned `torch` (asked for by deepspeed) would pull a multi-GB CUDA build.
# On a GPU machine install your CUDA torch yourself and pass TORCH= (empty) to skip this.
TORCH ?= torch==2.13.0

.PHONY: install demo smoke lint test test-fast

install:
	@if [ -n "$(TORCH)" ]; then $(PYTHON) -m pip install --quiet "$(TORCH)"; fi
	$(PYTHON) -m pip install --quiet -e '.[test]'

# The whole pipeline on the real genome: preprocess -> pretrain -> export -> probe -> results (~5 min, 2 CPU cores).
demo: install
	$(PYTHON) -m tinydnabert quickstart $(ARGS)

# The smallest end-to-end setting (~2 min): what tests/integration/test_quickstart.py runs.
smoke: install
	$(PYTHON) -m tinydnabert quickstart --smoke --out runs/quickstart-smoke $(ARGS)

# The linter (configured in pyproject.toml): .ci/run runs it before the tests, through `make test`.
lint:
	$(PYTHON) -m ruff check .

# README: "Run the tests" (what .ci/run runs): the linter, then every test, both tiers (<= 15 min on 2 cores;
# the 15 slowest are listed at the end, to see where the time goes).
test: install lint
	$(PYTHON) -m pytest -q --durations=15 tests

# The fast tier alone (no launcher, no end-to-end runs): under a minute on 2 cores.
test-fast:
	$(PYTHON) -m pytest -q -m "not slow" tests
