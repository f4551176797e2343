"""A tiny sweep on synthetic data, shared by the sweep tests (store, resume, executors, search) as the
`sweep` fixture (the tests import with --import-mode=importlib, so not as a module)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from modelshrink.data.synthetic import write_synthetic_csv

PRUNE = {"kind": "prune.magnitude", "schedule": "constant", "final_sparsity": 0.5, "epochs": 1}
VARIANTS: list[dict[str, Any]] = [
    {"name": "baseline", "steps": []},
    {"name": "pruned", "steps": [PRUNE]},
    {"name": "pruned-int8", "steps": [PRUNE, {"kind": "quant.int8_dynamic"}]},  # shares pruned's prefix in-process
    {"name": "clustered", "steps": [{"kind": "cluster.kmeans", "clusters": 4, "epochs": 1}]},
]
# What must agree between two runs of the same rows (latency and wall time are measured, so they vary).
COMPARED = ("status", "train_accuracy", "val_accuracy", "test_accuracy", "test_macro_f1", "file_bytes", "nonzeros",
            "export_format")  # fmt: skip


def sweep_config(
    tmp_path: Path, rows: int = 150, variants: list[dict[str, Any]] | None = None, seeds: tuple[int, ...] = (0, 1)
) -> dict[str, Any]:
    csv = write_synthetic_csv(tmp_path / "d.csv", rows)
    return {"data": {"task": "csv", "path": str(csv), "vocab_size": 64, "max_len": 16},
            "model": {"embed_dim": 8, "hidden": 8}, "train": {"epochs": 1}, "seeds": list(seeds),
            "variants": variants or VARIANTS}  # fmt: skip


def table(rows: list[dict[str, Any]]) -> dict[tuple[str, int], tuple[Any, ...]]:
    """(variant, seed) → the compared figures; fails on a duplicated (variant, seed)."""
    out = {(r["variant"], r["seed"]): tuple(r.get(c) for c in COMPARED) for r in rows}
    assert len(out) == len(rows), "a (variant, seed) row appears twice"
    return out


@pytest.fixture
def sweep() -> SimpleNamespace:
    return SimpleNamespace(VARIANTS=VARIANTS, config=sweep_config, table=table)
