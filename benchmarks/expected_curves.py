"""Write the shipped expected validation-loss curves (tinydnabert/published/expected_curves.json) from runs.

    python benchmarks/expected_curves.py --curve reference-cpu=runs/recipes/runs/reference \\
        --curve quickstart=runs/quickstart_curve/pretrain --curve modernbert-cpu=runs/recipes/runs/modernbert

Each curve is one real run's val/loss against tokens (steps x global batch x row length), the recipe it ran
(app/expected.py's RECIPE_KEYS, from the run's config.json and ds_config.json), its tolerance (expected.tolerance)
and where it came from (run, data, commit, date), so `tinydnabert plot RUN` can say whether a run is on it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from tinydnabert.app import expected
from tinydnabert.app.plots import read_scalars
from tinydnabert.io import atomic_write_json

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "tinydnabert" / "published" / expected.CURVES


def curve(name: str, run: Path, note: str) -> dict:
    recipe = expected.run_recipe(run)
    if recipe is None:
        raise SystemExit(f"error: {run}: no config.json / ds_config.json; pass a pretraining run directory")
    steps, values = read_scalars(run).get("val/loss", ([], []))
    if len(steps) < 3:
        raise SystemExit(f"error: {run}: {len(steps)} val/loss points; a curve needs >= 3 (lower --eval-interval)")
    per_step = recipe["train_batch_size"] * recipe["seq_len"]
    points = [[s * per_step, round(v, 5)] for s, v in zip(steps, values)]
    conf = json.loads((run / "config.json").read_text())
    data = []
    for d in conf["pretrain"]["data"]:
        m = Path(d) / "manifest.json"
        data += [Path(i["path"]).name for i in json.loads(m.read_text())["inputs"]] if m.is_file() else [Path(d).name]
    return {"name": name, "note": note, "recipe": recipe, "data": data, "points": points,
            "tolerance": round(expected.tolerance(points), 4),
            "source": {"run": str(run), "date": time.strftime("%Y-%m-%d"),
                       "git": subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                                             capture_output=True, text=True).stdout.strip()}}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--curve", action="append", required=True, help="NAME=RUN_DIR (repeat)")
    p.add_argument("--note", action="append", default=[], help="NAME=what the curve is (repeat)")
    p.add_argument("--out", default=str(OUT))
    a = p.parse_args()
    notes = dict(n.split("=", 1) for n in a.note)
    curves = [curve(n, Path(r), notes.get(n, "")) for n, r in (c.split("=", 1) for c in a.curve)]
    atomic_write_json(Path(a.out), {"format": "tinydnabert-expected-curves/1", "curves": curves})
    for c in curves:
        print(f"{c['name']}: {len(c['points'])} points to {c['points'][-1][0] / 1e6:.1f}M tokens, "
              f"tolerance {c['tolerance']:.3f}, recipe {c['recipe']}")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
