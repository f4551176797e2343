"""Use a saved model on raw text: the model folder's ONNX file plus its preprocessing.json."""

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


def load_text_classifier(model_dir: Path) -> Classify:
    """A function mapping sentences to (label, probability) with the folder's model.onnx."""
    model_dir = Path(model_dir)
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
