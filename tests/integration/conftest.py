"""Everything under tests/integration is the slow tier: the real deepspeed launcher, fine-tuning runs,
end-to-end pipelines. `python -m pytest -m "not slow"` (or `pytest tests/unit`) runs the fast tier alone."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.slow)
