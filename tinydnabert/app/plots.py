"""`tinydnabert plot RUN`: one PNG of a pretraining run, drawn from its TensorBoard logs.

    tinydnabert plot runs/quickstart/pretrain            # -> runs/quickstart/pretrain/training.png
    tensorboard --logdir runs/quickstart/pretrain/tensorboard   # the same numbers, interactive

Panels (each drawn only when the run logged it): loss (train/loss and val/loss), val/mlm_accuracy,
the learning-rate schedule (train/lr), gradient norm (train/grad_norm), and throughput
(perf/tokens_per_sec, with the median perf/mfu in its title). The x axis is the optimizer step, the
training loop's only clock. Where a shipped recipe's expected validation curve matches the run
(app/expected.py), it is drawn on the loss panel and `main` prints a one-line verdict: on the curve, above
it, below it, or diverging.

Reading uses tensorboard's EventAccumulator on every directory under RUN/tensorboard that holds
event files. A resumed run appends a second events file; where two files log the same tag at the
same step, the later write wins, so the curve shows what the resumed run actually did.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from tinydnabert.app import expected
from tinydnabert.config import add_dataclass_args, dataclass_from_args
from tinydnabert.console import print0
from tinydnabert.errors import InputError

# (panel title, y label, [(tag, legend label)], log-scale y?)
PANELS: list[tuple[str, str, list[tuple[str, str]], bool]] = [
    ("MLM loss", "cross-entropy (nats)", [("train/loss", "train"), ("val/loss", "val")], False),
    ("Learning rate", "lr", [("train/lr", "lr")], False),
    ("Throughput", "tokens / s", [("perf/tokens_per_sec", "tokens/s")], False),
    ("Gradient norm", "global L2 norm (before clipping)", [("train/grad_norm", "grad norm")], True),
    ("Masked-token accuracy", "val accuracy", [("val/mlm_accuracy", "val")], False),
]
MFU_TAG = "perf/mfu"


@dataclass
class PlotConfig:
    run: str = field(default="", metadata={"help": "run directory (with tensorboard/) or a TensorBoard log directory"})
    out: str = field(default="", metadata={"help": "PNG to write (default: RUN/training.png)"})
    title: str = field(default="", metadata={"help": "figure title (default: the run directory's name)"})
    smooth: int = field(default=0, metadata={
        "help": "moving-average window (in logged points) drawn over train curves; 0 = auto (~1/20 of the points)"})

    def __post_init__(self) -> None:
        if not self.run:
            raise InputError("name the run to plot: `tinydnabert plot RUN` (the --out of launch/pretrain.py)")
        if self.smooth < 0:
            raise InputError(f"--smooth {self.smooth}: must be >= 0")


def event_dirs(run: str | os.PathLike) -> list[Path]:
    """Directories under RUN/tensorboard (or under RUN itself) that hold tfevents files."""
    run = Path(run)
    if not run.exists():
        raise InputError(f"{run}: no such run directory; pass the --out of launch/pretrain.py")
    root = run / "tensorboard" if (run / "tensorboard").is_dir() else run
    dirs = sorted({p.parent for p in root.rglob("events.out.tfevents.*")})
    if not dirs:
        raise InputError(f"{root}: no TensorBoard event files (events.out.tfevents.*); "
                         f"was this run started with TensorBoard logging on?")
    return dirs


def read_scalars(run: str | os.PathLike) -> dict[str, tuple[list[int], list[float]]]:
    """tag -> (steps, values), sorted by step, merged across event files and subdirectories."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    merged: dict[str, dict[int, tuple[float, float]]] = {}
    for d in event_dirs(run):
        # size_guidance 0 = keep every point (the default keeps a 10k-point reservoir sample).
        acc = EventAccumulator(str(d), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags().get("scalars", []):
            per_step = merged.setdefault(tag, {})
            for ev in acc.Scalars(tag):
                old = per_step.get(ev.step)
                if old is None or ev.wall_time >= old[0]:
                    per_step[ev.step] = (ev.wall_time, ev.value)
    return {tag: ([s for s in sorted(pts)], [pts[s][1] for s in sorted(pts)]) for tag, pts in merged.items()}


def _moving_average(values: list[float], window: int) -> list[float]:
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def plot_run(cfg: PlotConfig) -> Path:
    """Draw the panels the run has data for into one PNG (written atomically); returns its path."""
    import matplotlib
    matplotlib.use("Agg")  # files only: no display on a training node
    import matplotlib.pyplot as plt

    scalars = read_scalars(cfg.run)
    curve, differs, tokens_per_step = expected_curve(cfg.run)
    panels = [p for p in PANELS if any(tag in scalars for tag, _ in p[2])]
    if not panels:
        raise InputError(f"{cfg.run}: the TensorBoard logs hold none of "
                         f"{', '.join(t for p in PANELS for t, _ in p[2])} "
                         f"(found: {', '.join(sorted(scalars)) or 'nothing'})")
    run = Path(cfg.run)
    out = Path(cfg.out) if cfg.out else run / "training.png"
    ncols = 2 if len(panels) > 1 else 1
    nrows = (len(panels) + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(6.0 * ncols, 3.6 * nrows), squeeze=False)
    for ax, (title, ylabel, tags, logy) in zip(axes.flat, panels):
        for tag, label in tags:
            if tag not in scalars:
                continue
            steps, values = scalars[tag]
            many = len(values) > 1
            window = cfg.smooth or max(1, len(values) // 20)
            if tag in ("train/loss", "train/grad_norm", "perf/tokens_per_sec") and window > 1:
                # Raw points faint, the trend bold: per-step MLM loss is noisy at small batch.
                ax.plot(steps, values, color="C0", alpha=0.25, lw=0.8)
                ax.plot(steps, _moving_average(values, window), color="C0", lw=1.6, label=f"{label} (avg {window})")
            else:
                style = dict(marker="o", ms=3.5) if tag.startswith("val/") or not many else {}
                ax.plot(steps, values, lw=1.6, label=label, color="C1" if tag.startswith("val/") else "C0", **style)
        if title == "MLM loss" and curve is not None:
            pts = sorted(curve["points"])
            ax.plot([t / tokens_per_step for t, _ in pts], [v for _, v in pts], color="grey", ls="--", lw=1.2,
                    label=f"expected ({curve['name']}{', indicative' if differs else ''})")
        if title == "Throughput":
            ax.set_ylim(bottom=0)  # from zero, so step-to-step jitter does not look like a collapse
            if MFU_TAG in scalars:
                # MFU is tokens/s times a constant (FLOPs per token / peak), so a second curve would
                # only redraw this one; its median goes in the title. Logged as a fraction (0.41 = 41%).
                mfu = sorted(scalars[MFU_TAG][1])
                title = f"{title} (median MFU {100 * mfu[len(mfu) // 2]:.1f}%)"
        if logy and all(v > 0 for tag, _ in tags if tag in scalars for v in scalars[tag][1]):
            ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(cfg.title or f"pretraining run: {run.resolve().name}")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.tmp-", suffix=".png", dir=out.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a figure is for everyone who can read the run
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        plt.close(fig)
    return out


def expected_curve(run: str | os.PathLike) -> tuple[dict | None, list[str], int]:
    """(the shipped curve matching the run's recipe or the closest one, the settings that differ, tokens per
    step); (None, [], 0) for a bare TensorBoard directory (no config.json / ds_config.json)."""
    recipe = expected.run_recipe(Path(run))
    if recipe is None or not recipe.get("train_batch_size") or not recipe.get("seq_len"):
        return None, [], 0
    curve, differs = expected.match(recipe, expected.load_curves(), expected.run_data(Path(run)))
    return curve, differs, recipe["train_batch_size"] * recipe["seq_len"]


def health(run: str | os.PathLike) -> str:
    """The one-line verdict of the run's validation loss against its expected curve."""
    curve, differs, tokens_per_step = expected_curve(run)
    if not tokens_per_step:
        return "expected curve: no config.json / ds_config.json here (a bare TensorBoard directory): not checked"
    steps, values = read_scalars(run).get("val/loss", ([], []))
    return expected.verdict(steps, values, tokens_per_step, curve, differs)


def tensorboard_command(run: str | os.PathLike) -> str:
    """The command that opens this run in TensorBoard."""
    run = Path(run)
    logdir = run / "tensorboard" if (run / "tensorboard").is_dir() else run
    return f"tensorboard --logdir {logdir} --port 6006   # then open http://localhost:6006"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run directory (the --out of launch/pretrain.py)")
    add_dataclass_args(parser, PlotConfig, skip=("run",))


def main(args: argparse.Namespace) -> int:
    cfg = dataclass_from_args(PlotConfig, args)
    out = plot_run(cfg)
    print0(f"wrote {out}\n{health(cfg.run)}\ninteractive: {tensorboard_command(cfg.run)}")
    return 0
