"""Use a saved model on raw text: a model folder (model.onnx + preprocessing.json) or a compact
file (.msz), which runs in the torch-free runtime (modelshrink.runtime), or an ExecuTorch program (.pte)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from modelshrink.data.hf_text import encoder_from_preprocessing
from modelshrink.errors import ArtifactError
from modelshrink.export.onnx import OnnxClassifier
from modelshrink.measure.accuracy import predict_logits

Classify = Callable[[Sequence[str]], list[tuple[str, float]]]


def _compact_classifier(path: Path) -> Classify:
    from modelshrink import runtime

    session = runtime.load(path)
    kind = session.preprocess.kind if session.preprocess else None
    if kind != "text":
        raise ArtifactError(f"{str(path)!r} holds a {kind!r} model; predict reads text models with a tokenizer only")

    def classify(texts: Sequence[str]) -> list[tuple[str, float]]:
        out = session.predict(list(texts))
        return [(label, float(p.max())) for label, p in zip(out.labels, out.probabilities, strict=True)]

    return classify


def _pte_classifier(path: Path) -> Classify:
    """An ExecuTorch program with the preprocessing.json of its run folder."""
    from modelshrink.export.executorch import PteClassifier

    clf = PteClassifier(path)  # a truncated or corrupt program: one line, exit 2
    pre_path = path.parent / "preprocessing.json"
    try:
        pre = json.loads(pre_path.read_text())
        tokenizer, labels = encoder_from_preprocessing(pre), [str(x) for x in pre["labels"]]
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as err:
        raise ArtifactError(f"{str(pre_path)!r}: a .pte file needs its run's preprocessing.json ({err})") from err

    def classify(texts: Sequence[str]) -> list[tuple[str, float]]:
        logits = clf.predict_logits(tokenizer.encode(texts))
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        return [(labels[i], float(p[i])) for i, p in zip(probs.argmax(axis=1), probs, strict=True)]

    return classify


def load_text_classifier(model_dir: Path) -> Classify:
    """A function mapping sentences to (label, probability) with the folder's model.onnx, or a compact file."""
    model_dir = Path(model_dir)
    if model_dir.is_file() and model_dir.suffix == ".pte":
        return _pte_classifier(model_dir)
    if model_dir.is_file():
        return _compact_classifier(model_dir)
    pre_path, onnx_path = model_dir / "preprocessing.json", model_dir / "model.onnx"
    for path in (pre_path, onnx_path):
        if not path.is_file():
            raise ArtifactError(f"{str(path)!r} is missing; pass a model folder written by `modelshrink run`")
    try:
        pre = json.loads(pre_path.read_text())
        if pre.get("kind") != "text":
            raise ArtifactError(f"{str(model_dir)!r} holds a {pre.get('kind')!r} model; predict reads text models only")
        tokenizer = encoder_from_preprocessing(pre)  # the word tokenizer, or an hf model's own
        labels: list[str] = list(pre["labels"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as err:
        raise ArtifactError(
            f"{str(pre_path)!r} is not a valid preprocessing file ({type(err).__name__}: {err})"
        ) from err
    clf = OnnxClassifier(onnx_path)

    def classify(texts: Sequence[str]) -> list[tuple[str, float]]:
        logits = predict_logits(lambda xb: clf.predict_logits(xb, batch_size=len(xb)), tokenizer.encode(texts))
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        return [(labels[i], float(p[i])) for i, p in zip(probs.argmax(axis=1), probs, strict=True)]

    return classify
