"""A non-editable install (a wheel, `pip install .`, `pip install git+...`) carries everything the package reads at
run time: the DeepSpeed configs and the launcher scripts travel inside it, and the checkout's top-level
ds_configs/ and launch/ are links to those same folders."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tinydnabert.app import quickstart
from tinydnabert.pretrain import ds_config


def test_checkout_links_point_into_the_package(repo_root: Path):
    assert (repo_root / "ds_configs").resolve() == ds_config.CONFIG_DIR
    assert (repo_root / "launch" / "pretrain.py").resolve() == quickstart.LAUNCH_PRETRAIN
    assert {p.name for p in ds_config.CONFIG_DIR.glob("*.json")} >= {ds_config.GPU_CONFIG, ds_config.CPU_CONFIG}


@pytest.mark.timeout(300)
def test_wheel_holds_the_configs_and_the_launchers(repo_root: Path, tmp_path: Path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(tmp_path), str(repo_root)], check=True, cwd=tmp_path)
    [wheel] = tmp_path.glob("tinydnabert-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in (f"tinydnabert/pretrain/ds_configs/{ds_config.GPU_CONFIG}",
                   f"tinydnabert/pretrain/ds_configs/{ds_config.CPU_CONFIG}",
                   "tinydnabert/app/launch/pretrain.py", "tinydnabert/app/launch/finetune.py",
                   "tinydnabert/published/nt_scores.csv", "tinydnabert/pretrain/data/loaders.py",
                   "tinydnabert/eval/tasks/registry.py"):
        assert needed in names, f"{needed} is not in the wheel"


def test_quickstart_names_the_packaged_launcher_outside_a_checkout(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no launch/ here: the command must name the package's own copy
    assert Path(quickstart.pretrain_script()).resolve() == quickstart.LAUNCH_PRETRAIN
