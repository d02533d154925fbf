"""Continued pretraining (--init-from): the first step's loss is the exported model's, not a random one's, and the
run records where it started. The export is the session's `reference_run`'s (tests/integration/conftest.py); a
tokenizer or shape that does not fit is refused before any training (in-process:
tests/unit/test_pretrain_inputs.py)."""

from __future__ import annotations

import json

from tests.helpers import REFERENCE_STEPS, losses, pretrain_cmd, rows, start, wait


def test_init_from_starts_at_the_exported_models_loss(tmp_path, reference_run, hg38_shards, tiny_ds):
    ref, _ = reference_run
    out, log = tmp_path / "b", tmp_path / "b.txt"
    wait(start(pretrain_cmd(tiny_ds, hg38_shards, out, "--max-steps", "2", "--init-from", str(ref / "export"),
                            "--no-export", "--num-workers", "0"), log), log)
    # The reference's step 1 is this run's step 1 but for the weights: the same rows (any world size), the same
    # dropout (seeded per step and slot) and the same random init (one seed) that --init-from replaced.
    assert rows(out)[1] == rows(ref)[1]
    trained = losses(ref)
    fresh = trained[1]
    end = sum(trained[s] for s in range(REFERENCE_STEPS - 4, REFERENCE_STEPS + 1)) / 5
    started = losses(out)[1]
    assert fresh - end > 0.3, (fresh, end)  # the reference learned: else the comparison below says nothing
    assert started < (fresh + end) / 2 and abs(started - end) < 0.5, (started, fresh, end)
    record = json.loads((out / "config.json").read_text())
    assert record["pretrain"]["init_from"] == str(ref / "export")
    assert list(record["init_from"]["files"]) == ["model.safetensors"]
    assert len(record["init_from"]["files"]["model.safetensors"]) == 64
