"""ExecuTorch: a model as a `.pte` program with the XNNPACK delegate, float32 or int8 (PT2E), and its runner.

Optional (`pip install modelshrink[executorch]`): `available()` says whether executorch imports;
nothing else in modelshrink imports it. The export path is PyTorch's on-device one:
`torch.export` → (int8: `prepare_pt2e` with XNNPACK's quantizer, calibrated on training batches,
`convert_pt2e`) → `to_edge_transform_and_lower(XnnpackPartitioner)` → `.to_executorch()`.

Fixed shapes: the program takes input of the example's shape (batch and, for text, the
tokenizer's fixed `max_len`: the LSTM is unrolled over those time steps at export). The runner
pads a smaller batch to it and splits a larger one, so any number of rows runs; a model that
cannot be exported raises IncompatibleModelError naming the model and why.

int8 is PT2E quantization (export/executorch_quant.py): XNNPACK's symmetric per-channel config,
static for Linear and Conv (int8 weights and activations) and dynamic inside LSTMs, which are
unrolled into linear ops first (models/lstm_unrolled.py) so they are quantized at all; embeddings
as uint8 rows (ExecuTorch's `embedding_byte` op). What stayed float32 is read from the converted
graph and returned with the file.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from modelshrink.errors import ArtifactError, ConfigError, IncompatibleModelError
from modelshrink.export.executorch_quant import PteWeights, quantize_int8

PteMode = Literal["fp32", "int8"]
PTE_MAGIC = b"ET"  # flatbuffer file identifier "ETxx" at bytes 4..8 of every program


def available() -> bool:
    """Whether ExecuTorch is installed (the `executorch` extra)."""
    return importlib.util.find_spec("executorch") is not None


@contextlib.contextmanager
def _native_log() -> Iterator[list[str]]:
    """Collect what ExecuTorch's runtime logs (cpuinfo probes, load errors; to file descriptor 2 or through
    sys.stderr) into the yielded list instead of the terminal, so a bad file stays one line."""
    lines: list[str] = []
    sys.stderr.flush()
    saved, text = os.dup(2), io.StringIO()
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            with contextlib.redirect_stderr(text):  # the Python bindings log through sys.stderr
                yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            said = tmp.read().decode(errors="replace") + text.getvalue()
            lines.extend(line for line in said.splitlines() if line.strip())


def _lower(program: Any, name: str, fuse_quant: bool) -> bytes:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import ExecutorchBackendConfig, to_edge_transform_and_lower

    # int8: quant fusion turns a dequantized uint8 table read by aten.embedding into quantized_decomposed::
    # embedding_byte (the table stays uint8 in the file); a float program is written as before, without it.
    config = ExecutorchBackendConfig(do_quant_fusion_and_const_prop=fuse_quant)
    try:
        return bytes(
            to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]).to_executorch(config).buffer
        )
    except Exception as err:  # exir raises many types (SpecViolationError, RuntimeError, ...)
        raise IncompatibleModelError(
            f"ExecuTorch cannot lower {name} to XNNPACK ({type(err).__name__}: {err})"
        ) from err


@dataclass
class PteExport:
    """A written program: its path and, for int8, what its weights are (None for float32)."""

    path: Path
    weights: PteWeights | None = None


def export_pte(model: nn.Module, example: torch.Tensor, dst: Path, mode: PteMode = "fp32",
               calibration: Iterable[torch.Tensor] | None = None) -> PteExport:  # fmt: skip
    """Write `model` as an ExecuTorch program at `dst` (fixed input shape: `example`'s).

    mode "int8" needs `calibration` (training input batches); its LSTMs are unrolled into linear ops, its
    embeddings stored as uint8 rows (export/executorch_quant.py), and the result says what stayed float.
    Raises IncompatibleModelError when ExecuTorch is absent or the model does not export (the message names
    the model and the reason).
    """
    if not available():
        raise ConfigError("ExecuTorch is not installed; pip install 'modelshrink[executorch]' to write .pte files")
    name = type(model).__name__
    model = model.eval()
    weights = None
    try:
        if mode == "int8":
            if calibration is None:
                raise IncompatibleModelError("int8 .pte export needs calibration batches (training inputs)")
            import executorch.kernels.quantized  # noqa: F401  registers quantized_decomposed::embedding_byte.out

            model, weights = quantize_int8(model, example, calibration)
        program = torch.export.export(model, (example,))
    except IncompatibleModelError:
        raise
    except Exception as err:  # torch.export raises Unsupported, UserError, RuntimeError, ...
        raise IncompatibleModelError(
            f"torch.export cannot export {name} for ExecuTorch ({type(err).__name__}: {err})"
        ) from err
    data = _lower(program, name, fuse_quant=mode == "int8")
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(data)
    return PteExport(dst, weights)


class PteClassifier:
    """A `.pte` program in ExecuTorch's Python runtime; logits of any number of rows."""

    def __init__(self, path: Path) -> None:
        path = Path(path)
        try:
            head = path.read_bytes()[:8]
        except OSError as err:
            raise ArtifactError(f"cannot read {str(path)!r} ({err.strerror or err})") from err
        if len(head) < 8 or head[4:6] != PTE_MAGIC:
            raise ArtifactError(f"{str(path)!r} is not an ExecuTorch program (no 'ET' identifier); pass a .pte file")
        if not available():
            raise ArtifactError(f"{path}: running a .pte file needs ExecuTorch; pip install 'modelshrink[executorch]'")
        err: Exception | None = None
        with _native_log() as log:  # importing executorch logs torch/torchao warnings: kept off the terminal too
            import executorch.kernels.quantized  # noqa: F401  the quantized kernels an int8 program calls (embedding_byte)
            from executorch.runtime import Runtime, Verification  # after the cheap checks: the import takes seconds

            try:
                program = Runtime.get().load_program(path, verification=Verification.InternalConsistency)
                self.method = program.load_method("forward")
                self.shape = tuple(self.method.metadata.input_tensor_meta(0).sizes())
            except Exception as caught:  # the runtime raises RuntimeError/ValueError with its error code
                err = caught
        if err is not None:
            said = f"; {log[-1].split('] ', 1)[-1]}" if log else ""  # the runtime's own reason, without its prefix
            raise ArtifactError(
                f"{str(path)!r} is corrupt or truncated: ExecuTorch cannot load it ({err}{said})"
            ) from err
        self.path = path

    def run(self, xb: np.ndarray) -> np.ndarray:
        """One call on exactly the program's batch size: the bare runtime call latency measures. Token rows
        shorter than the program's fixed length (latency batches trim shared leading padding) are pre-padded
        with 0 back to it, as the tokenizer writes them."""
        if xb.ndim == 2 and len(self.shape) == 2 and xb.shape[1] < self.shape[1]:
            xb = np.pad(xb, ((0, 0), (self.shape[1] - xb.shape[1], 0)))
        return self.method.execute([torch.from_numpy(np.ascontiguousarray(xb))])[0].numpy()

    def predict_logits(self, x: np.ndarray) -> np.ndarray:
        """Logits (N, classes) float32: rows in chunks of the program's batch, the last one padded."""
        batch = self.shape[0]
        x = np.asarray(x)
        out = []
        for i in range(0, len(x), batch):
            chunk = x[i : i + batch]
            n = len(chunk)
            if n < batch:
                chunk = np.concatenate([chunk, np.zeros((batch - n, *chunk.shape[1:]), dtype=chunk.dtype)])
            out.append(self.run(chunk)[:n])
        return np.concatenate(out).astype(np.float32, copy=False) if out else np.zeros((0, 0), np.float32)
