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


TEXT_MODEL = """
import torch
from torch import nn

class Bag(nn.Module):
    def __init__(self, vocab, labels):
        super().__init__()
        self.embed, self.out = nn.Embedding(vocab, 8), nn.Linear(8, labels)

    def forward(self, x):  # (B, T) token ids
        return self.out(self.embed(x).mean(dim=1))

def build(inputs):
    return Bag(inputs.input_dim, inputs.num_labels)
"""


def user_model(root: Path, kind: str) -> dict[str, str]:
    """The model section of a user's model: `custom` from a file.py with its --weights, or a tiny hf folder."""
    if kind == "hf":
        from modelshrink.data.synthetic import tiny_hf_folder

        return {"name": "hf", "path": str(tiny_hf_folder(root / "tiny-bert", ["joy", "anger", "fear"], layers=1))}
    import torch
    from safetensors.torch import save_file

    from modelshrink.models.byo import ModelInputs, load_build_fn

    root.mkdir(parents=True, exist_ok=True)
    (root / "my_model.py").write_text(TEXT_MODEL)
    torch.manual_seed(0)
    save_file(load_build_fn(f"{root / 'my_model.py'}:build")(ModelInputs(64, 3)).state_dict(), root / "bag.safetensors")
    return {"name": "custom", "build": f"{root / 'my_model.py'}:build", "weights": str(root / "bag.safetensors")}


@pytest.fixture
def sweep() -> SimpleNamespace:
    return SimpleNamespace(VARIANTS=VARIANTS, config=sweep_config, table=table, user_model=user_model)
