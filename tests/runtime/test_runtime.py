"""modelshrink.runtime: a compact file runs in ONNX Runtime without PyTorch, as its float32 ONNX file does."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from modelshrink import runtime
from modelshrink.data.synthetic import synthetic_text_task, synthetic_texts
from modelshrink.errors import ArtifactError
from modelshrink.export.compact import load_model, save_model
from modelshrink.export.int8 import int8_weight_only
from modelshrink.export.onnx import OnnxClassifier, export_onnx
from modelshrink.models.cnn import TinyCNN
from modelshrink.models.lstm import LSTMClassifier
from modelshrink.runtime.container import FORMAT_VERSION, MAGIC

# A subprocess in which importing torch (or anything under it) fails: the runtime must not need it.
_NO_TORCH = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this test")
sys.meta_path.insert(0, Block())
"""


@pytest.fixture(scope="module")
def task():  # type: ignore[no-untyped-def]
    return synthetic_text_task(n=200, vocab_size=40, max_len=12)


def _lstm(task, quantize: bool = False) -> tuple[torch.nn.Module, dict | None]:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    model = LSTMClassifier(task.input_dim, task.num_labels, embed_dim=8, hidden=16).eval()
    with torch.no_grad():  # a pruned-looking model: the file codes zeros as positions
        model.embedding.weight[model.embedding.weight.abs() < 0.5] = 0
    return model, (int8_weight_only(model) if quantize else None)


def _save(task, model, quantized, path: Path) -> Path:  # type: ignore[no-untyped-def]
    cfg = {"name": "lstm", "embed_dim": 8, "hidden": 16}
    save_model(model, path, cfg, task.input_dim, task.labels, task.preprocessing, quantized,
               example_input=torch.from_numpy(task.x_train[:2]))  # fmt: skip
    return path


@pytest.mark.parametrize("quantize", [False, True], ids=["exact", "int8"])
def test_runtime_logits_equal_onnx_fp32_of_the_same_weights(task, tmp_path: Path, quantize: bool) -> None:  # type: ignore[no-untyped-def]
    model, quantized = _lstm(task, quantize)
    msz = _save(task, model, quantized, tmp_path / "weights.msz")
    onnx_path = export_onnx(model, torch.from_numpy(task.x_train[:2]), tmp_path / "model.onnx")
    session = runtime.load(msz)
    ours, ref = session.logits(task.x_test), OnnxClassifier(onnx_path).predict_logits(task.x_test)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)
    assert (ours.argmax(1) == ref.argmax(1)).all()  # hence the same test accuracy
    # Without ONNX Runtime's memory arena (the lower-RSS option): the same logits.
    np.testing.assert_array_equal(runtime.load(msz, arena=False).logits(task.x_test), ours)
    # Raw text through the file's own tokenizer gives what the run's encoded test split gives.
    texts, _ = synthetic_texts(200, 0)
    pred = session.predict(texts[-len(task.x_test) :])
    assert pred.labels == [task.labels[i] for i in ref.argmax(1)]
    np.testing.assert_allclose(pred.probabilities.sum(1), 1.0, rtol=1e-5)
    # A sentence is classified without its padding columns, as every accuracy is measured, alone or in a batch.
    ids = session.preprocess([texts[0]])
    unpadded = session.logits(ids[:, ids.shape[1] - int((ids != 0).sum()) :])[0]
    want = np.exp(unpadded - unpadded.max()) / np.exp(unpadded - unpadded.max()).sum()
    alone = session.predict([texts[0]]).probabilities[0]
    np.testing.assert_allclose(alone, want, rtol=1e-6)
    np.testing.assert_array_equal(session.predict([texts[0], "i feel so " * 10 + "happy"]).probabilities[0], alone)


def test_runtime_decodes_the_weights_torch_loads_bit_for_bit(task, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model, quantized = _lstm(task, quantize=True)
    msz = _save(task, model, quantized, tmp_path / "weights.msz")
    loaded, _ = load_model(msz)
    arrays = runtime.load(msz)._arrays
    state = loaded.state_dict()
    assert set(arrays) == set(state)
    for name, arr in arrays.items():
        assert arr.tobytes() == state[name].numpy().tobytes(), name


def test_loads_and_predicts_with_torch_blocked(task, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model, _ = _lstm(task)
    msz = _save(task, model, None, tmp_path / "weights.msz")
    code = _NO_TORCH + (
        "from modelshrink import runtime\n"
        f"out = runtime.load({str(msz)!r}).predict(['i feel so happy today', 'angry and mad'])\n"
        "import json; print(json.dumps({'labels': out.labels, 'torch': 'torch' in sys.modules}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": ":".join(sys.path)})  # fmt: skip
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout.strip().splitlines()[-1])
    expected = runtime.load(msz).predict(["i feel so happy today", "angry and mad"]).labels
    assert res == {"labels": expected, "torch": False}


def test_image_model_scales_raw_pixels(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = TinyCNN(3, channels=4).eval()
    pre = {"kind": "image", "labels": ["a", "b", "c"], "scale": 1 / 16.0, "shape": [1, 8, 8]}
    raw = np.random.default_rng(0).integers(0, 17, (5, 1, 8, 8)).astype(np.float32)
    save_model(model, tmp_path / "w.msz", {"name": "cnn-small", "channels": 4}, 1, pre["labels"], pre,
               example_input=torch.zeros(2, 1, 8, 8))  # fmt: skip
    got = runtime.load(tmp_path / "w.msz").predict(raw).probabilities
    with torch.no_grad():
        ref = torch.softmax(model(torch.from_numpy(raw / 16.0)), 1).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-6)


def _bad(good: Path, data: bytes) -> Path:
    bad = good.with_name("bad.msz")
    bad.write_bytes(data)
    return bad


def test_bad_files_say_what_is_wrong(task, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model, _ = _lstm(task)
    good = _save(task, model, None, tmp_path / "weights.msz")
    data = good.read_bytes()
    newer = bytearray(data)
    struct.pack_into("<H", newer, len(MAGIC), FORMAT_VERSION + 1)
    flipped = bytearray(data)
    flipped[-5] ^= 0xFF
    cases = {
        "truncated": data[: len(data) // 2],
        "corrupt: payload checksum": bytes(flipped),
        f"version {FORMAT_VERSION + 1}.*upgrade": bytes(newer),
        "not a modelshrink compact file": b"PK\x03\x04" + data[4:],
    }
    for pattern, blob in cases.items():
        with pytest.raises(ArtifactError, match=pattern):
            runtime.load(_bad(good, blob))
    with pytest.raises(ArtifactError, match="does not exist|cannot read"):
        runtime.load(tmp_path / "missing.msz")


def test_file_without_graph_says_so_and_still_loads_in_torch(task, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model, _ = _lstm(task)
    path = tmp_path / "w.msz"
    save_model(model, path, {"name": "lstm", "embed_dim": 8, "hidden": 16}, task.input_dim, task.labels,
               task.preprocessing)  # fmt: skip
    with pytest.raises(ArtifactError, match="carries no ONNX graph.*PyTorch"):
        runtime.load(path)
    assert load_model(path)[0] is not None


def test_cli_predict_reads_msz_and_bad_files_exit_2(task, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:  # type: ignore[no-untyped-def]
    from modelshrink.cli import main

    model, _ = _lstm(task)
    good = _save(task, model, None, tmp_path / "weights.msz")
    assert main(["predict", str(good), "i feel so happy today"]) == 0
    label = capsys.readouterr().out.split("\t")[0]
    assert label == runtime.load(good).predict(["i feel so happy today"]).labels[0]
    bad = _bad(good, good.read_bytes()[:100])
    assert main(["predict", str(bad), "x"]) == 2
    assert main(["eval", str(bad), "--data", str(tmp_path / "none.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all("truncated" in line for line in err)
