"""Elastic resume through the real launcher on CPU: a checkpoint saved by 2 ranks resumes on 1, and one saved by
1 rank resumes on 2 with other DataLoader workers; every global step after the resume is made of the same rows
(per (step, slot) checksums from --log-rows) as in the uninterrupted 2-rank run, and the losses stay within
LOSS_TOL of it (another world size sums the same micro-batch gradients in another order: not bit-identical).

The uninterrupted run and the 2-rank run killed after its first checkpoint are the session's `reference_run` and
`killed_run` (tests/integration/conftest.py); this module adds the 1-rank kill and the two resumes.
"""

from __future__ import annotations

import shutil

import pytest

from tests.helpers import RUN_FLAGS, kill_after_first_checkpoint, launch_ranks, losses, rows, wait

STEPS = 20  # resumed to step 20 and compared with the reference's first 20 steps
# Measured over steps 11-20: max |loss - reference| 0.0 (2 ranks -> 1) and 4.8e-7 (1 rank -> 2): the same
# micro-batches and dropout, summed in another order. 1e-5 leaves room for that and is far below what a wrong
# optimizer state does (the lr left at its step-0 value for one step put the loss 0.039 off) or wrong rows.
LOSS_TOL = 1e-5


def _args(run, ds, data, steps: int, workers: int, *extra: str) -> list[str]:
    return ["--deepspeed_config", str(ds), "--data", str(data), "--out", str(run), "--max-steps", str(steps),
            *RUN_FLAGS, "--num-workers", str(workers), *extra]


@pytest.fixture(scope="module")
def elastic_runs(tmp_path_factory, hg38_shards, tiny_ds, killed_run):
    """(a) 2 ranks killed (the session's killed_run, copied) -> 1 rank, (b) 1 rank killed -> 2 ranks."""
    root = tmp_path_factory.mktemp("elastic")
    out = {}
    killed, killed_at = killed_run
    run = shutil.copytree(killed, root / "2to1" / "run")
    log = run.parent / "resumed.txt"
    out["2to1"] = (run, killed_at, wait(launch_ranks(1, _args(run, tiny_ds, hg38_shards, STEPS, 1, "--resume"), log),
                                        log))
    run = root / "1to2" / "run"
    run.parent.mkdir()
    killed_log = run.parent / "killed.txt"
    proc = launch_ranks(1, _args(run, tiny_ds, hg38_shards, 40, 0), killed_log)
    killed_at = kill_after_first_checkpoint(proc, run, killed_log)
    log = run.parent / "resumed.txt"
    out["1to2"] = (run, killed_at, wait(launch_ranks(2, _args(run, tiny_ds, hg38_shards, STEPS, 2, "--resume"), log),
                                        log))
    return out


@pytest.mark.timeout(1500)
@pytest.mark.parametrize("name,before,after", [("2to1", 2, 1), ("1to2", 1, 2)])
def test_resume_on_another_world_size_keeps_every_step_rows_and_losses(reference_run, elastic_runs, name, before,
                                                                       after):
    ref, _ = reference_run
    run, killed_at, log = elastic_runs[name]
    assert 0 < killed_at < STEPS
    assert f"resuming a {before}-rank checkpoint on {after} ranks" in log
    assert f"x {after} ranks = 2,048 tokens" in log  # the same global batch, 16 x 128
    ref_rows, got = rows(ref), rows(run)
    assert list(range(1, STEPS + 1)) == sorted(got) == sorted(ref_rows)[:STEPS]
    assert all(len(v) == 4 for v in ref_rows.values())
    assert got == {s: ref_rows[s] for s in got}  # every step, before and after the resume
    ref_loss, loss = losses(ref), losses(run)
    assert sorted(loss) == list(range(1, STEPS + 1))
    diff = max(abs(loss[s] - ref_loss[s]) for s in range(killed_at + 1, STEPS + 1))
    print(f"{name}: max |loss - reference| over steps {killed_at + 1}-{STEPS}: {diff:.2e}")
    assert diff < LOSS_TOL
    assert loss[STEPS] < loss[1] - 0.3  # still learning after the resume
