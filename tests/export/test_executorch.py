"""ExecuTorch .pte files: float32 and PT2E int8 export of a tiny text model, run back in ExecuTorch's runtime;
bad programs are one line and exit 2. Skipped (with the reason) where executorch is not installed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from modelshrink.cli import main
from modelshrink.errors import ArtifactError
from modelshrink.export import executorch as et
from modelshrink.export import formats

needs_et = pytest.mark.skipif(not et.available(), reason="executorch is not installed (the `executorch` extra)")


def test_pte_formats_only_when_executorch_imports(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(et, "available", lambda: False)
    assert formats.pte_formats() == []
    monkeypatch.setattr(et, "available", lambda: True)
    assert [f.artifact for f in formats.pte_formats()] == ["executorch_fp32", "executorch_int8"]


def test_not_a_program_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "model.pte"
    bad.write_bytes(b"PK\x03\x04 not a program at all")
    with pytest.raises(ArtifactError, match="model.pte"):
        et.PteClassifier(bad)


@pytest.fixture(scope="module")
def programs(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path, Path]:
    """A tiny classifier over 6 token ids, exported once as float32 and int8 (batch 4)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(20, 4), nn.Flatten(), nn.Linear(24, 3)).eval()
    example = torch.randint(0, 20, (4, 6))
    out = tmp_path_factory.mktemp("pte")
    calib = [torch.randint(0, 20, (16, 6)) for _ in range(4)]
    fp32 = et.export_pte(model, example, out / "model.pte_fp32.pte")
    int8 = et.export_pte(model, example, out / "model.pte_int8.pte", "int8", calib)
    return model, fp32, int8


@needs_et
def test_fp32_program_matches_torch_for_any_row_count(programs: tuple[nn.Module, Path, Path]) -> None:
    model, fp32, _ = programs
    clf = et.PteClassifier(fp32)
    assert clf.shape == (4, 6)
    x = torch.randint(0, 20, (13, 6))  # 3 full batches and one padded row
    got = clf.predict_logits(x.numpy())
    with torch.no_grad():
        want = model(x).numpy()
    assert got.shape == (13, 3)
    np.testing.assert_allclose(got, want, atol=1e-5)


@needs_et
def test_int8_program_is_quantized_and_close(programs: tuple[nn.Module, Path, Path]) -> None:
    model, fp32, int8 = programs
    x = torch.randint(0, 20, (64, 6))
    got = et.PteClassifier(int8).predict_logits(x.numpy())
    with torch.no_grad():
        want = model(x).numpy()
    assert not np.array_equal(got, want)  # rounded to int8, not the float program again
    np.testing.assert_allclose(got, want, atol=0.3)  # int8 weights and activations: close, not equal
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.9


@needs_et
def test_truncated_or_corrupt_program_exits_2_in_eval_and_predict(
    programs: tuple[nn.Module, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, fp32, _ = programs
    data = fp32.read_bytes()
    (tmp_path / "preprocessing.json").write_text(json.dumps(
        {"kind": "text", "labels": ["a", "b", "c"], "tokenizer": {"vocab": ["x", "y"], "max_len": 6}}))  # fmt: skip
    csv = tmp_path / "d.csv"
    csv.write_text("text,label\nx y,a\n")
    for name, blob in (("truncated.pte", data[: len(data) // 2]), ("corrupt.pte", data[:64] + b"\xff" * 64)):
        path = tmp_path / name
        path.write_bytes(blob)
        with pytest.raises(ArtifactError, match=name):
            et.PteClassifier(path)
        assert main(["eval", str(path), "--data", str(csv)]) == 2
        assert main(["predict", str(path), "x y"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 2 and all(name in line for line in err), err  # one line each, no traceback
