"""Everything under tests/integration is the slow tier: the real deepspeed launcher, fine-tuning runs,
end-to-end pipelines. `python -m pytest -m "not slow"` (or `pytest tests/unit`) runs the fast tier alone.

The tiny pretraining runs that several modules read are built here, once per session (a launch costs 7-12 s of
start-up on 2 cores; the first one on a fresh machine also JIT-compiles DeepSpeed's shm comm op and CPU
FusedAdam, ~2 min, cached after):

    reference_run  2 ranks, 30 uninterrupted steps of tests.helpers.RUN_FLAGS, with its export: test_pretrain
                   (loss, TensorBoard, run dir, export), test_elastic and test_remote (the rows and losses a
                   resumed or streamed run must repeat), test_init_from (the export to start from), test_bf16
                   (an fp32 export)
    killed_run     the same run SIGKILLed once its first checkpoint (step 5) is complete, left as it was:
                   test_pretrain resumes a copy on two simulated nodes, test_elastic a copy on 1 rank
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import REFERENCE_STEPS, RUN_FLAGS, kill_after_first_checkpoint, launch_ranks, tiny_ds_config, wait

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def tiny_ds(tmp_path_factory) -> Path:
    return tiny_ds_config(tmp_path_factory.mktemp("ds") / "tiny-zero1-cpu-fp32.json")


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory, hg38_shards, tiny_ds) -> tuple[Path, str]:
    """(run directory, console log) of 30 uninterrupted steps on 2 ranks."""
    root = tmp_path_factory.mktemp("reference")
    run, log = root / "run", root / "log.txt"
    text = wait(launch_ranks(2, ["--deepspeed_config", str(tiny_ds), "--data", str(hg38_shards), "--out", str(run),
                                 "--max-steps", str(REFERENCE_STEPS), *RUN_FLAGS], log), log, timeout=420)
    return run, text


@pytest.fixture(scope="session")
def killed_run(tmp_path_factory, hg38_shards, tiny_ds) -> tuple[Path, int]:
    """(run directory, the step of its checkpoint): the reference run on 2 ranks, to the schedule's end (40) so
    that it is still going when it is SIGKILLed after its first checkpoint. Copy it before resuming it."""
    root = tmp_path_factory.mktemp("killed")
    run, log = root / "run", root / "killed.txt"
    proc = launch_ranks(2, ["--deepspeed_config", str(tiny_ds), "--data", str(hg38_shards), "--out", str(run),
                            "--max-steps", "40", *RUN_FLAGS], log)
    return run, kill_after_first_checkpoint(proc, run, log)
