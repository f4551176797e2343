"""Accuracy of a saved model file on a labelled CSV, with the preprocessing stored with it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from modelshrink.data.hf_text import encoder_from_preprocessing
from modelshrink.data.text import read_text_csv
from modelshrink.errors import ArtifactError, DataError
from modelshrink.measure.accuracy import Predictor, classification_metrics, predict_logits


def _beside(path: Path) -> dict[str, Any]:
    """The preprocessing.json of the run folder an ONNX or .pte file was written in."""
    pre_path = path.parent / "preprocessing.json"
    if not pre_path.is_file():
        raise ArtifactError(
            f"{str(pre_path)!r} is missing; an {path.suffix} file needs the preprocessing.json of its run"
        )
    try:
        pre: dict[str, Any] = json.loads(pre_path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ArtifactError(f"{str(pre_path)!r} is not a valid preprocessing file ({err})") from err
    return pre


def _onnx_predictor(onnx_path: Path) -> tuple[Predictor, dict[str, Any]]:
    from modelshrink.export.onnx import OnnxClassifier

    pre = _beside(onnx_path)
    clf = OnnxClassifier(onnx_path)
    return (lambda xb: clf.predict_logits(xb, batch_size=len(xb))), pre


def _pte_predictor(path: Path) -> tuple[Predictor, dict[str, Any]]:
    from modelshrink.export.executorch import PteClassifier

    clf = PteClassifier(path)  # a truncated or corrupt program: one line, before the CSV is read
    return clf.predict_logits, _beside(path)


def _compact_predictor(path: Path) -> tuple[Predictor, dict[str, Any], str, str]:
    """A compact file in the torch-free runtime (version 3, with its graph), else rebuilt in PyTorch;
    returns (predictor, preprocessing, weights, runtime)."""
    from modelshrink import runtime
    from modelshrink.runtime.container import read_compact_file

    header, _ = read_compact_file(path)  # a bad file: one line, before anything else
    graph = header.get("graph")
    if header["version"] < 3 or not isinstance(graph, dict) or "missing" in graph:
        return _torch_predictor(path)
    session = runtime.load(path)
    meta = header["meta"]
    predict: Predictor = lambda xb: session.logits(xb, batch_size=len(xb))  # noqa: E731
    return predict, meta.get("preprocessing"), str(meta.get("weights", "exact")), "modelshrink.runtime"


def _torch_predictor(path: Path) -> tuple[Predictor, dict[str, Any], str, str]:
    import torch

    from modelshrink.export.compact import load_model

    model, meta = load_model(path)
    pre = meta.get("preprocessing")
    if not isinstance(pre, dict):
        raise ArtifactError(f"{path} holds no preprocessing settings; write it with save_model(preprocessing=...)")

    def predict(xb: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(xb)).numpy()

    return predict, pre, str(meta.get("weights", "exact")), "torch"


def evaluate_file(path: Path, data: Path, text_column: str = "text", label_column: str = "label") -> dict[str, Any]:
    """accuracy, macro_f1 and rows of a compact file (or a model folder's / an .onnx file) on `data`.

    The file's own preprocessing (tokenizer, labels) encodes the CSV, so the figure is
    what the file does on raw text. Returns accuracy, macro_f1, rows, kind, weights and runtime (a .msz
    with its graph runs in modelshrink.runtime, an older one in torch).
    """
    path = Path(path)
    if path.is_dir():
        path = path / "model.onnx"
        if not path.is_file():
            raise ArtifactError(f"{str(path)!r} is missing; pass a compact file or a model folder of a run")
    if not path.exists():
        raise ArtifactError(f"{str(path)!r} does not exist; pass a compact file (.msz) written by modelshrink")
    if path.suffix == ".onnx":
        predict, pre = _onnx_predictor(path)
        kind, weights, runtime = "onnx", "as stored in the ONNX file", "onnxruntime"
    elif path.suffix == ".pte":
        predict, pre = _pte_predictor(path)
        kind, weights, runtime = "pte", "as stored in the program", "executorch"
    else:
        predict, pre, weights, runtime = _compact_predictor(path)
        kind = "compact"
    if not isinstance(pre, dict) or pre.get("kind") != "text":
        kind_of = pre.get("kind") if isinstance(pre, dict) else None
        raise ArtifactError(f"{path} is a {kind_of!r} model; `eval` reads text classifiers only")
    try:
        tokenizer = encoder_from_preprocessing(pre)  # the word tokenizer, or an hf model's own
        labels = [str(x) for x in pre["labels"]]
    except (KeyError, TypeError, ValueError) as err:
        raise ArtifactError(f"{path} has unusable preprocessing settings ({type(err).__name__}: {err})") from err
    texts, names = read_text_csv(data, text_column, label_column)
    label_id = {name: i for i, name in enumerate(labels)}
    unknown = sorted(set(names) - set(label_id))
    if unknown:
        raise DataError(
            f"{str(data)!r} has labels the model does not know: {', '.join(map(repr, unknown[:5]))}; "
            f"the model's labels are {', '.join(map(repr, labels))}"
        )
    y = np.array([label_id[n] for n in names], dtype=np.int64)
    logits = predict_logits(predict, tokenizer.encode(texts))
    metrics = classification_metrics(y, logits, len(labels))
    return {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"], "rows": len(y), "kind": kind,
            "weights": weights, "runtime": runtime}  # fmt: skip
