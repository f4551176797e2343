"""ExecuTorch .pte files: float32 and PT2E int8 export of a tiny text model, run back in ExecuTorch's runtime;
bad programs are one line and exit 2. Skipped (with the reason) where executorch is not installed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from modelshrink.cli import main
from modelshrink.errors import ArtifactError
from modelshrink.export import executorch as et
from modelshrink.export import formats
from modelshrink.models import LSTMClassifier

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
    fp32 = et.export_pte(model, example, out / "model.pte_fp32.pte").path
    int8 = et.export_pte(model, example, out / "model.pte_int8.pte", "int8", calib).path
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


@pytest.fixture(scope="module")
def lstm_program(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, et.PteExport]:
    """The reference LSTM, small (vocabulary 1,000 x 32, hidden 8, 4 tokens), as an int8 program (batch 1; ~10 s)."""
    torch.manual_seed(0)
    model = LSTMClassifier(1000, 3, embed_dim=32, hidden=8).eval()
    example = torch.randint(0, 1000, (1, 4))
    calib = [torch.randint(0, 1000, (16, 4)) for _ in range(2)]
    path = tmp_path_factory.mktemp("pte_lstm") / "model.pte_int8.pte"
    return model, et.export_pte(model, example, path, "int8", calib)


@needs_et
def test_int8_lstm_program_holds_int8_weights_and_names_what_stayed_float(
    lstm_program: tuple[nn.Module, et.PteExport],
) -> None:
    model, int8 = lstm_program
    assert int8.weights is not None
    w = int8.weights
    assert w.unrolled == ["lstm"]
    # Every matrix once as int8/uint8 (the recurrent weight is one constant for all 4 steps, not one per step).
    matrices = sum(p.numel() for n, p in model.named_parameters() if p.dim() == 2)
    assert w.int8_bytes == matrices
    biases = sum(p.numel() for n, p in model.named_parameters() if n.startswith("fc.bias")) + 4 * 8  # b_ih + b_hh
    assert w.float_bytes == 4 * biases  # what stayed float32: the biases alone
    assert w.float_layers and all("bias" in name for name in w.float_layers), w.float_layers
    # Scales and zero points: the embedding's per row (float), each linear's per output channel (float scale, int zp)
    assert w.qparam_bytes >= 1000 * 2 * 4 + (32 + 32 + 3) * 4
    assert w.int8_share > 0.85 and w.describe().startswith(f"int8 {100 * w.int8_share:.1f}% of weight bytes (+")
    # The file holds the int8 weights, not the float32 ones: under half their float32 bytes (~134 KB).
    float32_bytes = 4 * sum(p.numel() for p in model.parameters())
    assert int8.path.stat().st_size < 0.5 * float32_bytes, (int8.path.stat().st_size, float32_bytes)
    x = torch.randint(0, 1000, (48, 4))
    got = et.PteClassifier(int8.path).predict_logits(x.numpy())
    with torch.no_grad():
        want = model(x).numpy()
    np.testing.assert_allclose(got, want, atol=0.1)  # int8 weights, activations quantized per call: close
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.9


@needs_et
def test_int8_lstm_program_runs_in_a_fresh_process(lstm_program: tuple[nn.Module, et.PteExport]) -> None:
    """Its quantized kernels (embedding_byte) are registered by the runner itself, not by the export before it."""
    model, int8 = lstm_program
    x = torch.randint(0, 1000, (5, 4))
    code = ("import sys, numpy as np; from modelshrink.export.executorch import PteClassifier; "
            "np.save(sys.argv[2], PteClassifier(sys.argv[1]).predict_logits(np.load(sys.argv[3])))")  # fmt: skip
    out, inp = int8.path.with_suffix(".logits.npy"), int8.path.with_suffix(".x.npy")
    np.save(inp, x.numpy())
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", code, str(int8.path), str(out), str(inp)], env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    with torch.no_grad():
        np.testing.assert_allclose(np.load(out), model(x).numpy(), atol=0.1)


@needs_et
def test_measure_pte_row_says_what_stayed_float(
    lstm_program: tuple[nn.Module, et.PteExport], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modelshrink.data.synthetic import synthetic_text_task
    from modelshrink.runner import measure

    model, int8 = lstm_program
    monkeypatch.setattr(measure, "pte_formats", lambda: [f for f in formats.pte_formats() if f.mode == "int8"])
    monkeypatch.setattr(et, "export_pte", lambda m, ex, dst, mode, calib: int8)  # the fixture's file, not again
    data = synthetic_text_task(40, vocab_size=1000, max_len=4)
    stage = SimpleNamespace(model=model)
    settings = measure.MeasureSettings(tmp_path.parent, 1, torch.from_numpy(data.x_train[:1]), [])
    stats = {"dense_fp32_bytes": 1, "parameters": 1, "nonzeros": 1}
    pairs, why = measure.evaluate_pte(stage, tmp_path, data, stats, 1, settings)  # type: ignore[arg-type]
    assert why == {} and not pairs[0][0].latency  # evaluated, not timed yet
    measure.time_files(pairs, data, measure.ArtifactCache())
    rows = [r for r, _ in pairs]
    assert [(r.artifact, r.weights) for r in rows] == [("executorch_int8", int8.weights.describe())]  # type: ignore[union-attr]
    assert "float32: " in rows[0].weights and "bias" in rows[0].weights
    assert rows[0].latency  # timed on trimmed token rows, pre-padded back to the program's length
