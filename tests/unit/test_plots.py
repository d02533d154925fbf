"""`tinydnabert plot`: TensorBoard event files written by torch's SummaryWriter (what the trainer uses)
-> merged scalars -> a PNG with real content. The quickstart test plots a real pretraining run."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest

from tinydnabert.app import cli
from tinydnabert.app.plots import PlotConfig, plot_run, read_scalars, tensorboard_command
from tinydnabert.errors import InputError


def _write_run(run: Path, steps: range, loss_offset: float = 0.0, with_val: bool = True) -> None:
    from torch.utils.tensorboard import SummaryWriter

    w = SummaryWriter(log_dir=str(run / "tensorboard"))
    for s in steps:
        w.add_scalar("train/loss", 7.0 * math.exp(-s / 40) + 1.0 + loss_offset, s)
        w.add_scalar("train/lr", 1e-4 * min(1.0, s / 20) * (1 - s / 200), s)
        w.add_scalar("train/grad_norm", 3.0 / (1 + s / 10), s)
        w.add_scalar("perf/tokens_per_sec", 1000.0 + 5 * (s % 7), s)
        w.add_scalar("perf/mfu", 0.01, s)
        if with_val and s % 25 == 0:
            w.add_scalar("val/loss", 7.2 * math.exp(-s / 40) + 1.1, s)
            w.add_scalar("val/mlm_accuracy", 0.3 * (1 - math.exp(-s / 50)), s)
    w.close()


def _png_stats(path: Path) -> tuple[tuple[int, int], float]:
    from PIL import Image

    with Image.open(path) as im:
        im.verify()  # a truncated or non-PNG file raises here
    with Image.open(path) as im:
        assert im.format == "PNG"
        arr = np.asarray(im.convert("L"), dtype=np.float32)
        return im.size, float(arr.std())


@pytest.mark.timeout(60)
def test_plot_run_draws_every_panel(tmp_path):
    run = tmp_path / "run"
    _write_run(run, range(0, 120))
    scalars = read_scalars(run)
    assert {"train/loss", "train/lr", "val/loss", "val/mlm_accuracy", "perf/tokens_per_sec"} <= set(scalars)
    steps, values = scalars["val/loss"]
    assert steps == [0, 25, 50, 75, 100] and values[0] > values[-1]
    out = plot_run(PlotConfig(run=str(run)))
    assert out == run / "training.png"
    (w, h), std = _png_stats(out)
    assert w >= 1000 and h >= 900  # 2 columns x 3 rows of panels
    assert std > 20  # not a blank canvas: curves, axes and text
    assert not list(run.glob(".training.png.tmp-*"))


@pytest.mark.timeout(60)
def test_resumed_run_merges_files_later_write_wins(tmp_path):
    run = tmp_path / "run"
    _write_run(run, range(0, 60), with_val=False)
    time.sleep(1.1)  # event file names carry a timestamp in seconds
    _write_run(run, range(50, 100), loss_offset=10.0, with_val=False)  # resumed from step 50
    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) == 2
    steps, values = read_scalars(run)["train/loss"]
    assert steps == list(range(100))  # one point per step, no duplicates
    assert values[49] < 10 < values[50]  # steps 50.. come from the resumed run


@pytest.mark.timeout(60)
def test_cli_plot_and_errors(tmp_path, capsys):
    run = tmp_path / "run"
    _write_run(run, range(0, 30))
    out = tmp_path / "figs" / "curves.png"
    assert cli.main(["plot", str(run), "--out", str(out), "--title", "test run"]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and f"tensorboard --logdir {run / 'tensorboard'}" in printed
    assert _png_stats(out)[1] > 20
    assert tensorboard_command(run).startswith(f"tensorboard --logdir {run / 'tensorboard'}")

    with pytest.raises(InputError, match="no such run directory"):
        plot_run(PlotConfig(run=str(tmp_path / "missing")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no TensorBoard event files"):
        plot_run(PlotConfig(run=str(tmp_path / "empty")))
    from torch.utils.tensorboard import SummaryWriter
    w = SummaryWriter(log_dir=str(tmp_path / "other"))
    w.add_scalar("something/else", 1.0, 0)
    w.close()
    with pytest.raises(InputError, match=r"hold none of .*found: something/else"):
        plot_run(PlotConfig(run=str(tmp_path / "other")))
    assert cli.main(["plot", str(tmp_path / "missing")]) == 2
