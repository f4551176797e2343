"""Run a compact file with ONNX Runtime: its ONNX graph plus the weights decoded in memory."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from modelshrink.runtime.codec import as_numpy
from modelshrink.runtime.container import TENSOR_ERRORS, graph_bytes, read_compact_file, tensor_error
from modelshrink.runtime.errors import ArtifactError
from modelshrink.runtime.preprocess import Preprocess

_ORT_TO_NUMPY = {"tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(float)": np.float32}


@dataclass(frozen=True)
class Prediction:
    """Labels and class probabilities of a batch of inputs."""

    labels: list[str]  # the most probable class of each input
    probabilities: np.ndarray  # (N, classes) softmax of the logits, float32
    classes: list[str]  # the column names of `probabilities`


class Session:
    """A compact file loaded into an ONNX Runtime session; `predict` takes raw texts or pixel arrays."""

    def __init__(self, path: Path, threads: int = 1, arena: bool = True) -> None:
        path = Path(path)
        header, payload = read_compact_file(path)
        model_bytes = graph_bytes(header, payload, path)  # raises for a file without a graph first
        self.meta: dict[str, Any] = header["meta"]
        self.weights: str = str(self.meta.get("weights", "exact"))
        pre = self.meta.get("preprocessing")
        self.preprocess = Preprocess(pre, str(path)) if pre else None  # None: `logits` only, on prepared arrays
        labels = self.meta.get("labels", self.preprocess.labels if self.preprocess else None)
        if not isinstance(labels, list) or not labels:
            raise ArtifactError(f"{path} is corrupt: its metadata has no list of class labels")
        self.labels = [str(x) for x in labels]
        self.path = path
        external = set(header["graph"].get("external", []))
        self._arrays: dict[str, np.ndarray] = {}  # ONNX Runtime reads these in place: keep them alive
        for entry in header["tensors"]:
            if isinstance(entry, dict) and isinstance(entry.get("name"), str) and entry["name"] in external:
                try:
                    self._arrays[str(entry["name"])] = as_numpy(entry, payload)
                except TENSOR_ERRORS as err:
                    raise tensor_error(path, entry, err) from err
        missing = sorted(external - set(self._arrays))
        if missing:
            raise ArtifactError(f"{path} is corrupt: its graph needs tensors {missing[:5]} the file does not hold")
        opts = ort.SessionOptions()
        # Fixed threads: latency comparable across runs; inter-op 1 as the graphs are sequential.
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        # arena=False: no CPU memory arena and no memory-pattern planning; each run allocates what it
        # needs and frees it (lower peak RSS for a small model, at some latency on large batches).
        opts.enable_cpu_mem_arena = arena
        opts.enable_mem_pattern = arena
        names = list(self._arrays)
        opts.add_external_initializers(names, [ort.OrtValue.ortvalue_from_numpy(self._arrays[n]) for n in names])
        try:
            self.session = ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])
        except Exception as err:  # ORT raises its own Fail/InvalidGraph/InvalidProtobuf types
            raise ArtifactError(f"{path} is corrupt: ONNX Runtime cannot load its graph ({err})") from err
        inp = self.session.get_inputs()[0]
        self.input_name: str = inp.name
        self._input_dtype = _ORT_TO_NUMPY.get(inp.type, np.float32)

    def logits(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Logits (N, classes) float32 of already preprocessed inputs `x`, in batches of `batch_size`."""
        x = np.asarray(x, dtype=self._input_dtype)
        if len(x) == 0:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        outs = [self.run(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
        return np.concatenate(outs).astype(np.float32, copy=False)

    def run(self, xb: np.ndarray) -> np.ndarray:
        """One call of the graph on one batch: the bare runtime call latency measures."""
        return self.session.run(None, {self.input_name: xb})[0]

    def _by_length(self, x: np.ndarray) -> np.ndarray:
        """Logits of token rows as every accuracy is measured: rows of one length together, without the padding
        columns (pre-padded ids, 0 = padding), so a sentence scores the same alone or in a batch."""
        if x.ndim != 2 or not np.issubdtype(x.dtype, np.integer) or len(x) == 0:
            return self.logits(x)
        nonzero = x != 0
        lengths = np.where(nonzero.any(axis=1), x.shape[1] - nonzero.argmax(axis=1), 1)
        out = np.empty((len(x), len(self.labels)), dtype=np.float32)
        for n in np.unique(lengths):
            rows = np.flatnonzero(lengths == n)
            out[rows] = self.logits(x[rows][:, x.shape[1] - int(n) :])
        return out

    def predict(self, inputs: Sequence[str] | np.ndarray) -> Prediction:
        """Classify raw inputs (a list of texts, or raw pixel arrays (N, C, H, W)) with the file's preprocessing."""
        if self.preprocess is None:
            raise ArtifactError(
                f"{self.path} carries no preprocessing settings; pass prepared arrays to Session.logits instead"
            )
        logits = self._by_length(self.preprocess(inputs))
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        return Prediction([self.labels[i] for i in probs.argmax(axis=1)], probs, list(self.labels))


def load(path: str | Path, threads: int = 1, arena: bool = True) -> Session:
    """Load a compact file (`weights.msz`, format version 3) into an ONNX Runtime session in memory.

    Raises ArtifactError, with one line naming the problem, for a missing, truncated, corrupt or
    version-mismatched file, or one written without its graph (version 2: load it in PyTorch).
    `arena=False` turns off ONNX Runtime's CPU memory arena and memory patterns (lower peak memory).
    """
    return Session(Path(path), threads, arena)
