"""--onnx: a model the project did not build (plain PyTorch, exported by hand) through the no-training techniques."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from modelshrink.cli import main
from modelshrink.data.tasks import DataConfig, load_task
from modelshrink.export.onnx import onnx_weight_stats


def _plain_torch_onnx(path: Path, channels_last: bool = False) -> Path:
    """An MLP on flat 64-pixel rows, trained with a plain loop and exported with torch.onnx by hand."""
    data = load_task(DataConfig(task="digits"))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    x, y = torch.from_numpy(data.x_train.reshape(len(data.x_train), -1)), torch.from_numpy(data.y_train)
    for _ in range(30):  # full-batch steps: enough for ~90% on digits
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    example = torch.zeros(1, 8, 8, 1) if channels_last else torch.zeros(1, 64)
    wrapped = nn.Sequential(nn.Flatten(), model) if channels_last else model
    torch.onnx.export(wrapped, (example,), str(path), dynamo=False, input_names=["pixels"], output_names=["scores"],
                      dynamic_axes={"pixels": {0: "n"}, "scores": {0: "n"}})  # fmt: skip
    return path


def test_onnx_model_from_plain_pytorch_gets_sizes_and_accuracies(tmp_path: Path) -> None:
    src = _plain_torch_onnx(tmp_path / "mine.onnx")
    out = tmp_path / "run"
    assert main(["run", "--onnx", str(src), "--task", "digits", "--out", str(out)]) == 0
    rows = {r["variant"]: r for r in json.loads((out / "results.json").read_text())}
    assert set(rows) == {"baseline", "baseline-int8", "baseline-int8-static", "baseline-fp16"}
    assert all(r["status"] == "ok" for r in rows.values())
    base = rows["baseline"]
    assert base["file_bytes"] == src.stat().st_size  # the file as given
    assert base["test_accuracy"] > 0.8 and base["parameters"] == 64 * 128 + 128 + 128 * 10 + 10
    for name in ("baseline-int8", "baseline-int8-static"):
        assert rows[name]["file_bytes"] < 0.5 * base["file_bytes"]  # int8 weights, measured on the file
        assert rows[name]["onnx_weights"]["int8_bytes"] > 0
        assert rows[name]["test_accuracy"] > base["test_accuracy"] - 0.05
        assert rows[name]["test_agreement_with_reference"] > 0.9
    assert rows["baseline-fp16"]["file_bytes"] < 0.6 * base["file_bytes"]
    assert rows["baseline"]["latency_ms_p50"] > 0
    summary = (out / "summary.md").read_text()
    assert "baseline-int8-static" in summary
    fp16 = onnx_weight_stats(out / rows["baseline-fp16"]["artifacts"]["onnx"])["bytes_by_dtype"]
    assert fp16.get("float16", 0) > 0.9 * 2 * base["parameters"] and fp16.get("float32", 0) == 0


def test_channels_last_input_is_transposed(tmp_path: Path) -> None:
    from modelshrink.runner.onnx_input import _Input

    src = _plain_torch_onnx(tmp_path / "nhwc.onnx", channels_last=True)
    data = load_task(DataConfig(task="digits", subsample=100))
    adapt = _Input(onnx.load(str(src)), data)
    assert adapt.mode == "nhwc" and adapt(data.x_test).shape == (len(data.x_test), 8, 8, 1)
    np.testing.assert_array_equal(adapt(data.x_test)[0, :, :, 0], data.x_test[0, 0])


def test_onnx_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--onnx", str(tmp_path / "none.onnx"), "--task", "digits", "--out", str(tmp_path / "a")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "junk.onnx").write_bytes(b"\x00junk")
    assert main(["run", "--onnx", str(tmp_path / "junk.onnx"), "--task", "digits", "--out", str(tmp_path / "b")]) == 2
    assert "not a readable ONNX model" in capsys.readouterr().err
    model = nn.Linear(64, 3).eval()  # 3 outputs, digits has 10 labels
    torch.onnx.export(model, (torch.zeros(1, 64),), str(tmp_path / "three.onnx"), dynamo=False,
                      dynamic_axes={"x": {0: "n"}}, input_names=["x"])  # fmt: skip
    assert main(["run", "--onnx", str(tmp_path / "three.onnx"), "--task", "digits", "--out", str(tmp_path / "c")]) == 2
    assert "the task has 10 labels" in " ".join(capsys.readouterr().err.split())


def _two_output_onnx(path: Path, outputs: tuple[str, ...] = ("label", "probabilities")) -> tuple[Path, float]:
    """A linear digits classifier built with onnx.helper, as converters write them: a label output
    (int64 [N]) beside float [N, 10] score outputs. Returns the file and its test accuracy in numpy."""
    from onnx import TensorProto, helper

    data = load_task(DataConfig(task="digits"))
    x = data.x_train.reshape(len(data.x_train), -1).astype(np.float64)
    w = np.linalg.lstsq(np.c_[x, np.ones(len(x))], np.eye(10)[data.y_train], rcond=None)[0].astype(np.float32)
    nodes = [helper.make_node("Flatten", ["pixels"], ["flat"]), helper.make_node("MatMul", ["flat", "W"], ["xw"]),
             helper.make_node("Add", ["xw", "b"], ["logits"]),
             helper.make_node("ArgMax", ["logits"], ["label"], axis=1, keepdims=0),
             helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)]  # fmt: skip
    kinds = {"label": (TensorProto.INT64, ["n"]), "logits": (TensorProto.FLOAT, ["n", 10]),
             "probabilities": (TensorProto.FLOAT, ["n", 10])}  # fmt: skip
    graph = helper.make_graph(
        nodes, "converted", [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["n", 1, 8, 8])],
        [helper.make_tensor_value_info(o, *kinds[o]) for o in outputs],
        [numpy_helper.from_array(w[:64], "W"), numpy_helper.from_array(w[64], "b")],
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    xt = data.x_test.reshape(len(data.x_test), -1)
    return path, float(((xt @ w[:64] + w[64]).argmax(1) == data.y_test).mean())


def test_score_output_is_picked_beside_a_label_output(tmp_path: Path) -> None:
    from modelshrink.runner.onnx_input import pick_output

    src, _ = _two_output_onnx(tmp_path / "auto.onnx")
    assert pick_output(onnx.load(str(src)), 10) == "probabilities"  # the int64 label output is passed over
    assert pick_output(onnx.load(str(src)), 10, "label") == "label"  # a name given is taken as given


def test_onnx_output_names_one_of_several_score_outputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, expected = _two_output_onnx(tmp_path / "three.onnx", ("label", "logits", "probabilities"))
    out = tmp_path / "run"
    assert main(["run", "--onnx", str(src), "--task", "digits", "--seed", "0", "--out", str(out)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "2 are a float [batch, 10] score output" in err and "--onnx-output NAME" in err and not out.exists()
    assert main(["run", "--onnx", str(src), "--task", "digits", "--onnx-output", "nope", "--out", str(out)]) == 2
    assert "is not an output of the --onnx model; its outputs: label (int64 ['?'])" in capsys.readouterr().err
    assert not out.exists()
    assert main(["run", "--onnx", str(src), "--task", "digits", "--onnx-output", "logits", "--out", str(out)]) == 0
    rows = {r["variant"]: r for r in json.loads((out / "results.json").read_text())}
    assert all(r["status"] == "ok" for r in rows.values()) and len(rows) == 4
    assert rows["baseline"]["test_accuracy"] == pytest.approx(expected, abs=0.01)
    assert json.loads((out / "results.json").read_text())[0]["config"]["onnx_output"] == "logits"
