"""Bring your own ONNX model: the post-training techniques and every measurement, no PyTorch model needed.

`--onnx model.onnx` takes a classifier exported from any framework (PyTorch, Keras/TensorFlow
through tf2onnx, ...) and a task's data. Techniques that train (pruning, clustering,
distillation) need the model's weights in PyTorch and are not run; the three that need no
training are: int8 dynamic, int8 static (calibrated on training rows) and float16, each
written with ONNX Runtime's tools exactly as the runner writes the project's own models.

Each variant is one row in the run folder's results store, with the same measured fields as
a runner row (accuracy from the file, bytes, gzip/zstd bytes, latency), so `modelshrink
report` and the exports work unchanged. Loading an ONNX file runs no code from it.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from modelshrink.config import RunConfig
from modelshrink.data.tasks import TaskData
from modelshrink.errors import ArtifactError, DataError
from modelshrink.export.formats import get_format
from modelshrink.export.onnx import OnnxClassifier, convert_onnx, onnx_weight_stats
from modelshrink.export.onnx_run import check_onnx_file
from modelshrink.runner.folder import RunFolder, environment
from modelshrink.runner.measure import ArtifactCache, Logits, measure_artifact, onnx_artifact, split_metrics
from modelshrink.runner.pipeline import Log
from modelshrink.runner.row import VariantRow
from modelshrink.store import ResultStore, config_key

# The variants an ONNX input gets: (name, technique kind or None for the file as given, format).
ONNX_VARIANTS: tuple[tuple[str, str | None, str], ...] = (
    ("baseline", None, "fp32"),
    ("baseline-int8", "quant.int8_dynamic", "int8_dynamic"),
    ("baseline-int8-static", "quant.int8_static", "int8_static"),
    ("baseline-fp16", "quant.fp16", "fp16"),
)
CALIBRATION_BATCHES, CALIBRATION_BATCH = 8, 32  # as quant.int8_static's default: 8 training batches


class _Input:
    """Adapts the task's arrays to the ONNX model's input: rank, layout, fixed sizes."""

    def __init__(self, model: onnx.ModelProto, data: TaskData) -> None:
        graph_inputs = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
        if len(graph_inputs) != 1:
            raise DataError(f"--onnx model has {len(graph_inputs)} inputs; modelshrink needs a classifier with one")
        inp = graph_inputs[0]
        self.name = inp.name
        # Each axis: an int when fixed in the file, None when dynamic (a name or unset).
        self.dims = [d.dim_value if d.HasField("dim_value") else None for d in inp.type.tensor_type.shape.dim]
        self.batch = self.dims[0] if self.dims and self.dims[0] else None
        sample = data.x_train[:1]
        self.mode = self._choose(sample.shape[1:])

    def _choose(self, row: tuple[int, ...]) -> str:
        want = self.dims[1:]
        fits = len(want) == len(row) and all(w is None or w == r for w, r in zip(want, row, strict=True))
        if fits:
            return "as-is"
        if (
            len(row) == 3
            and len(want) == 3
            and all(w is None or w == r for w, r in zip(want, row[1:] + row[:1], strict=True))
        ):
            return "nhwc"  # Keras/TensorFlow image models are channels-last
        if len(want) == 1 and (want[0] is None or want[0] == int(np.prod(row))):
            return "flatten"
        if len(row) == 1 and len(want) == 1 and want[0] is not None and want[0] > row[0]:
            return "pad"  # token ids shorter than the model's fixed sequence: pre-pad with 0
        raise DataError(
            f"--onnx model's input {self.name!r} has shape {['?' if d is None else d for d in self.dims]}, "
            f"but the task's rows have shape {list(row)}; export the model for that input, or pick the matching task"
        )

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.mode == "nhwc":
            return np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        if self.mode == "flatten":
            return x.reshape(len(x), -1)
        if self.mode == "pad" or (x.ndim == 2 and len(self.dims) == 2 and self.dims[1] and x.shape[1] < self.dims[1]):
            width = self.dims[1] or x.shape[1]
            return np.pad(x, ((0, 0), (width - x.shape[1], 0)))  # pre-padding, as the tokenizer pads
        return x


def _weight_stats(model: onnx.ModelProto) -> dict[str, int]:
    """Parameters (elements of float initializers), their nonzeros and most distinct values in one tensor."""
    params = nonzeros = distinct = 0
    for init in model.graph.initializer:
        arr = numpy_helper.to_array(init)
        if not np.issubdtype(arr.dtype, np.floating):
            continue  # shapes, indices: not weights
        params += arr.size
        nonzeros += int(np.count_nonzero(arr))
        if arr.ndim >= 2:
            distinct = max(distinct, int(np.unique(arr).size))
    return {"parameters": params, "nonzeros": nonzeros, "distinct_values_max": distinct}


def _write_variant(src: Path, dst: Path, fmt: str, adapt: _Input, data: TaskData) -> None:
    batches: list[np.ndarray] = []
    if fmt == "int8_static":  # calibration on training rows shaped as the model's input wants
        rows = adapt(data.x_train[: CALIBRATION_BATCHES * CALIBRATION_BATCH])
        batch = adapt.batch or CALIBRATION_BATCH
        batches = [rows[i : i + batch] for i in range(0, len(rows) - batch + 1, batch)]
    convert_onnx(src, dst, fmt, batches, adapt.name)


def _variant_row(
    name: str, path: Path, fmt: str, kind: str | None, adapt: _Input, data: TaskData, folder: RunFolder,
    stats: dict[str, Any], reference: np.ndarray | None, cache: ArtifactCache,
) -> tuple[VariantRow, np.ndarray]:  # fmt: skip
    """Measure one written variant of the --onnx file, as measure_variant measures a built one."""
    threads = folder.cfg.latency_threads
    art = onnx_artifact(get_format(fmt).artifact, path, threads, adapt, adapt.batch)
    metrics, test_logits = split_metrics(_checked(art.logits, data), data)
    sample = adapt(data.x_test[: adapt.batch or 256])
    art.memory_input = (sample.shape, str(sample.dtype))
    measured = measure_artifact(art, data, folder.out, stats, stats["dense_fp32_bytes"], cache, test_logits)
    weights = onnx_weight_stats(path)
    skipped = [] if fmt != "int8_static" or "LSTM" not in weights["op_types"] else [
        {"name": "LSTM", "type": "LSTM", "reason": "ONNX Runtime has no static int8 kernel for it; weights stay float32"}
    ]  # fmt: skip
    ref = reference if reference is not None else test_logits  # the --onnx file as given is the reference
    row = VariantRow(
        export_format=fmt, primary=art.name, parameters=stats["parameters"], nonzeros=stats["nonzeros"],
        steps=[{"kind": kind, "skipped": skipped, "details": {"note": "ONNX Runtime, on the --onnx file"}}] if kind else [],
        distinct_values_max=stats["distinct_values_max"], dense_fp32_bytes=stats["dense_fp32_bytes"],
        baseline_dense_fp32_bytes=stats["dense_fp32_bytes"], metrics=metrics, labels=data.labels,
        onnx_weights={k: weights[k] for k in ("int8_bytes", "float_bytes", "total_bytes", "op_types")},
        test_agreement_with_reference=float((test_logits.argmax(1) == ref.argmax(1)).mean()),
        latency_threads=threads, artifacts=[measured],
    )  # fmt: skip
    return row, test_logits


def _checked(logits: Logits, data: TaskData) -> Logits:
    """The file's logits, refusing a model whose outputs do not match the task's labels."""

    def run(x: np.ndarray) -> np.ndarray:
        out = logits(x)
        if out.ndim != 2 or out.shape[1] != data.num_labels:
            raise DataError(f"--onnx model outputs shape {list(out.shape)}, but the task has {data.num_labels} "
                            f"labels ({', '.join(data.labels)}); pass a classifier for this task")  # fmt: skip
        return out

    return run


def _dims(value: onnx.ValueInfoProto) -> list[int | None]:
    return [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]


def _describe(value: onnx.ValueInfoProto) -> str:
    elem = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type).name
    return f"{value.name} ({elem} {['?' if d is None else d for d in _dims(value)]})"


def pick_output(model: onnx.ModelProto, num_labels: int, name: str | None = None) -> str:
    """The output holding the [batch, labels] scores: the one named, or the only float rank-2 output whose
    last axis is `num_labels` (or dynamic). Converters often add a label output beside it (e.g. skl2onnx, tf2onnx)."""
    outputs = list(model.graph.output)
    listed = ", ".join(_describe(o) for o in outputs)
    if name is not None:
        if name not in {o.name for o in outputs}:
            raise DataError(f"--onnx-output {name!r} is not an output of the --onnx model; its outputs: {listed}")
        return name
    floats = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE)
    fits = [o for o in outputs if o.type.tensor_type.elem_type in floats and len(_dims(o)) == 2
            and _dims(o)[1] in (None, num_labels)]  # fmt: skip
    exact = [o for o in fits if _dims(o)[1] == num_labels]
    chosen = exact if len(exact) == 1 else fits
    if len(outputs) == 1:
        return outputs[0].name  # the one output: checked on the first batch (shape) as before
    if len(chosen) != 1:
        why = "none is" if not chosen else f"{len(chosen)} are"
        raise DataError(
            f"--onnx model has {len(outputs)} outputs and {why} a float [batch, {num_labels}] score output: {listed}; "
            "name the one with the scores with --onnx-output NAME"
        )
    return chosen[0].name


def _only_output(model: onnx.ModelProto, name: str) -> onnx.ModelProto:
    """A copy of `model` whose one graph output is `name`: every later step reads outputs[0]."""
    trimmed = onnx.ModelProto()
    trimmed.CopyFrom(model)
    keep = [o for o in trimmed.graph.output if o.name == name]
    del trimmed.graph.output[:]
    trimmed.graph.output.extend(keep)
    return trimmed


def _load(
    onnx_path: Path, data: TaskData, threads: int, output: str | None = None, scratch: Path | None = None
) -> tuple[onnx.ModelProto, _Input, Path]:
    """The --onnx file, refused with one line before anything is written when it cannot serve.

    Returns the model, its input adapter and the file to use: the given one, or (several outputs) a
    copy in `scratch` that keeps only the score output."""
    if not onnx_path.is_file():
        raise ArtifactError(f"--onnx file {str(onnx_path)!r} does not exist; pass an existing .onnx file")
    check_onnx_file(onnx_path)  # external data outside its folder, sizes the file does not hold: refused
    try:
        model = onnx.load(str(onnx_path))
    except Exception as err:  # protobuf DecodeError, OSError
        raise ArtifactError(f"--onnx file {str(onnx_path)!r} is not a readable ONNX model: {err}") from err
    if not model.graph.output:
        raise DataError(
            f"--onnx file {str(onnx_path)!r} has no graph outputs; modelshrink needs a classifier whose graph "
            "outputs its [batch, labels] scores: export the model with its output"
        )
    adapt = _Input(model, data)
    chosen = pick_output(model, data.num_labels, output)
    if len(model.graph.output) > 1:
        if scratch is None:  # internal: run_onnx always passes one
            raise ValueError("a scratch folder is needed to trim the --onnx model's outputs")
        model = _only_output(model, chosen)
        onnx_path = scratch / "input.onnx"
        onnx.save(model, str(onnx_path))
    OnnxClassifier(onnx_path, threads=threads)  # fails here, before anything is written
    return model, adapt, onnx_path


def check_onnx_input(onnx_path: Path, data: TaskData, threads: int, output: str | None = None) -> None:
    """Refuse, with one line and before the run folder is touched, an --onnx file that cannot serve the task."""
    with tempfile.TemporaryDirectory(prefix="modelshrink-onnx-") as scratch:
        _load(Path(onnx_path), data, threads, output, Path(scratch))


def run_onnx(
    onnx_path: Path, cfg: RunConfig, data: TaskData, out: Path, log: Log = print, output: str | None = None
) -> list[dict[str, Any]]:
    """Write and measure the ONNX model as given and its int8 dynamic, int8 static and float16 versions.

    `output` names the score output of a file with several (default: the one float [batch, labels] output)."""
    with tempfile.TemporaryDirectory(prefix="modelshrink-onnx-") as scratch:
        return _run_onnx(Path(onnx_path), cfg, data, out, log, output, Path(scratch))


def _run_onnx(
    given: Path, cfg: RunConfig, data: TaskData, out: Path, log: Log, output: str | None, scratch: Path
) -> list[dict[str, Any]]:  # fmt: skip
    model, adapt, onnx_path = _load(given, data, cfg.latency_threads, output, scratch)
    folder, stats, env, cache = RunFolder(out, cfg), _weight_stats(model), environment(), ArtifactCache()
    stats["dense_fp32_bytes"] = stats["parameters"] * 4
    out.mkdir(parents=True, exist_ok=True)
    (out / "preprocessing.json").write_text(json.dumps(data.preprocessing))
    seed = cfg.seeds[0]  # nothing here is random: one row per variant
    shared = {"onnx_sha256": hashlib.sha256(given.read_bytes()).hexdigest(),
              "data": cfg.data.model_dump(mode="json", exclude={"path"}), "data_sha256": data.fingerprint,
              "latency_threads": cfg.latency_threads}  # fmt: skip
    if onnx_path != given:  # several outputs, one chosen: only then, so older rows keep their keys
        shared["onnx_output"] = model.graph.output[0].name
    reference: np.ndarray | None = None
    with ResultStore(out / "results.sqlite") as store:
        for name, kind, fmt in ONNX_VARIANTS:
            row_cfg = {**shared, "variant": {"name": name, "steps": [{"kind": kind}] if kind else [], "source": "onnx"},
                       "seed": seed}  # fmt: skip
            key, t0 = config_key(row_cfg), time.perf_counter()
            path = folder.model_dir(name, seed) / "model.onnx"
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                _write_variant(onnx_path, path, fmt, adapt, data)
                row, test_logits = _variant_row(name, path, fmt, kind, adapt, data, folder, stats, reference, cache)
            except DataError:
                raise  # the model does not fit the task: one error line, not four failed rows
            except Exception as err:  # a quantizer that cannot handle this graph: record it, go on
                store.put(key, name, seed, "failed", row_cfg, {"error": f"{type(err).__name__}: {err}"})
                log(f"[red]{name} failed:[/red] {type(err).__name__}: {err}")
                continue
            reference = test_logits if reference is None else reference
            (path.parent / "metrics.json").write_text(json.dumps(row.metrics, indent=1))
            result = {**row.to_dict(), **env, "wall_s": round(time.perf_counter() - t0, 2), "executor": "inprocess"}
            store.put(key, name, seed, "ok", row_cfg, result)
            log(f"{name}: test acc {result['test_accuracy']:.4f}, {result['file_bytes']:,} bytes ({fmt})")
        return store.rows()
