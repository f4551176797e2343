"""Pipelines keep earlier gains: properties are checked after every stage and after export, and a
step that breaks one on purpose makes its check fail, visibly in the row."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pytest
import torch
from torch import nn

from modelshrink.config import parse_config
from modelshrink.data.synthetic import write_synthetic_csv
from modelshrink.runner.checks import _channels, _evaluate, check_state, declared_properties
from modelshrink.runner.run import Runner
from modelshrink.techniques import TECHNIQUES, RunContext, Sparsity, TechniqueConfig, TechniqueResult
from modelshrink.techniques.base import Technique
from modelshrink.techniques.properties import DistinctValues


class DensifyConfig(TechniqueConfig):
    kind: Literal["test.densify"] = "test.densify"


def densify(model: nn.Module, cfg: DensifyConfig, ctx: RunContext) -> TechniqueResult:
    """Breaks every property on purpose: no zero stays zero, every value becomes distinct."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.rand(p.shape, generator=torch.Generator().manual_seed(0)) * 1e-3 + 1e-4)
    return TechniqueResult(model=model)


@pytest.fixture
def with_densify(monkeypatch: pytest.MonkeyPatch) -> None:
    # Registered for this test only, so the contract test never sees it.
    monkeypatch.setitem(TECHNIQUES, "test.densify", Technique("test.densify", DensifyConfig, densify, "test"))


def _run(tmp_path: Path, variants: list[dict]) -> dict[str, dict]:
    csv = write_synthetic_csv(tmp_path / "d.csv", 150)
    cfg = parse_config({"data": {"task": "csv", "path": str(csv), "vocab_size": 64, "max_len": 16},
                        "model": {"embed_dim": 8, "hidden": 8}, "train": {"epochs": 1}, "seeds": [0],
                        "variants": variants})  # fmt: skip
    rows = {r["variant"]: r for r in Runner(cfg, tmp_path / "o", log=lambda m: None).run()}
    assert all(r["status"] == "ok" for r in rows.values()), [r.get("error") for r in rows.values()]
    return rows


PRUNE = {"kind": "prune.magnitude", "schedule": "constant", "final_sparsity": 0.5, "epochs": 1}
CLUSTER = {"kind": "cluster.kmeans", "clusters": 8, "preserve_sparsity": True, "epochs": 1}
NM = {"kind": "prune.nm", "epochs": 1}
STRUCTURED = {
    "kind": "prune.structured",
    "unit_sparsity": 0.5,
    "embed_dim_sparsity": 0.5,
    "vocab_keep": 32,
    "epochs": 1,
}


def _by(checks: list[dict], after: str, prop: str) -> dict:
    return next(c for c in checks if c["after"] == after and c["property"].startswith(prop))


def test_properties_kept_pass_and_a_densifying_step_fails_visibly(tmp_path: Path, with_densify: None) -> None:
    # One run (one baseline, shared pipeline prefixes) for both halves: the tests stay fast.
    rows = _run(tmp_path, [
        {"name": "prune-cluster", "steps": [PRUNE, CLUSTER]},
        {"name": "prune-cluster-int8", "steps": [PRUNE, CLUSTER, {"kind": "quant.int8_dynamic"}]},
        {"name": "nm", "steps": [NM]},
        {"name": "prune-densify", "steps": [PRUNE, {"kind": "test.densify"}]},
        {"name": "cluster-densify", "steps": [PRUNE, CLUSTER, {"kind": "test.densify"}]},
        {"name": "nm-densify", "steps": [NM, {"kind": "test.densify"}]},
        {"name": "baseline", "steps": []},
        {"name": "structured", "steps": [STRUCTURED]},
        {"name": "structured-int8", "steps": [STRUCTURED, {"kind": "quant.int8_dynamic"}]},
    ])  # fmt: skip
    row = rows["prune-cluster"]
    stage = row["steps"][1]["checks"]  # after cluster.kmeans: prune.magnitude's sparsity survived
    assert _by(stage, "cluster.kmeans", "sparsity>=")["ok"] is True
    assert _by(stage, "cluster.kmeans", "sparsity>=")["measured"] >= 0.499
    for after in ("export:onnx", "export:compact"):
        assert _by(row["checks"], after, "sparsity>=")["ok"] is True
        assert _by(row["checks"], after, "distinct_values<=")["ok"] is True
    assert row["checks_failed"] == 0
    # int8 ONNX file (uint8 embedding with a zero point, int8 LSTM/Linear): zeros and <= k values survive
    int8 = rows["prune-cluster-int8"]["checks"]
    assert _by(int8, "export:onnx", "sparsity>=")["ok"] is True
    assert _by(int8, "export:onnx", "distinct_values<=")["ok"] is True
    assert "per output channel" in _by(int8, "export:onnx", "distinct_values<=")["note"]
    assert _by(int8, "export:compact", "distinct_values<=")["ok"] is True  # int8 with a scale per channel
    assert "per output channel" in _by(int8, "export:compact", "distinct_values<=")["note"]
    assert rows["prune-cluster-int8"]["checks_failed"] == 0
    nm = rows["nm"]["checks"]
    assert _by(nm, "export:onnx", "nm=2:4")["ok"] is True and _by(nm, "export:compact", "nm=2:4")["ok"] is True

    # A step that breaks each property on purpose: the check after it, and after export, fails.
    for name, prop, i in [("prune-densify", "sparsity>=", 1), ("cluster-densify", "distinct_values<=", 2),
                          ("nm-densify", "nm=2:4", 1)]:  # fmt: skip
        row = rows[name]
        assert _by(row["steps"][i]["checks"], "test.densify", prop)["ok"] is False
        assert _by(row["checks"], "export:onnx", prop)["ok"] is False
        assert _by(row["checks"], "export:compact", prop)["ok"] is False
        assert row["checks_failed"] >= 3
    assert _by(rows["prune-densify"]["checks"], "export:compact", "sparsity>=")["measured"] < 0.1
    assert _by(rows["cluster-densify"]["checks"], "export:compact", "sparsity>=")["ok"] is False

    # The runner tracks a changed architecture: the smaller model exports, and its compact file
    # is rebuilt from the new ModelConfig (the compact accuracy is measured on the fp32 variant only).
    small, base = rows["structured-int8"], rows["baseline"]
    assert small["parameters"] < 0.5 * base["parameters"]
    assert small["steps"][0]["details"]["model"] == {**small["steps"][0]["details"]["model"], "hidden": 4,
                                                     "embed_dim": 4, "vocab_keep": 32}  # fmt: skip
    assert small["onnx_weights"]["int8_bytes"] > 0 and small["test_accuracy"] > 0
    fp32 = rows["structured"]
    assert fp32["compact_test_accuracy"] == pytest.approx(fp32["test_accuracy"], abs=0.02)
    assert fp32["compact_bytes"] < base["compact_bytes"]


def test_check_state_unit() -> None:
    step = {"kind": "prune.magnitude", "properties": [Sparsity(("w",), 0.5).to_dict()]}
    assert step["properties"] == [{"property": "sparsity", "tensors": ["w"], "min": 0.5}]  # the stored JSON shape
    assert declared_properties(step) == [Sparsity(("w",), 0.5)]
    half = torch.tensor([[0.0, 1.0], [0.0, 2.0]])
    assert check_state({"w": half}, [step], "x")[0]["ok"] is True
    assert check_state({"w": half + 1}, [step], "x")[0]["ok"] is False
    gone = check_state({"v": half}, [step], "x")[0]
    assert gone["ok"] is False and "tensors gone" in gone["note"]


def test_per_channel_int8_codes_are_checked_channel_by_channel() -> None:
    # A bidirectional LSTM's weight as ORT stores it, (directions, input, 4*hidden), with a scale
    # per (direction, output channel): 3 codes per channel, 40 across the tensor.
    rng = np.random.default_rng(0)
    grid = rng.integers(-127, 128, size=(2, 1, 12, 3))
    codes = np.take_along_axis(grid, rng.integers(0, 3, size=(2, 8, 12, 1)), axis=3)[..., 0]
    rows = _channels(codes, np.ones((2, 12), dtype=np.float32))
    assert rows is not None and rows.shape == (24, 8)
    prop = DistinctValues(tensors=("w",), max=3)
    assert np.unique(codes).size > 3 and _evaluate(prop, list(rows)) == (True, 3.0)
    codes[1, 4, 7] = next(v for v in range(-127, 128) if v not in grid[1, 0, 7])  # a 4th value in one channel
    assert _evaluate(prop, list(_channels(codes, np.ones((2, 12))))) == (False, 4.0)
    assert _channels(codes, np.ones(())) is None  # one scale for the tensor: checked as a whole
