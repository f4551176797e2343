"""One variant's artifacts and measurements: ONNX float32/float16/int8 and the compact file,
each loaded back and evaluated, with sizes, latency and peak memory.

Kept apart from run.py's loop: `Runner._variant` calls `measure_variant`.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from modelshrink.config import VariantConfig
from modelshrink.data.tasks import TaskData
from modelshrink.export.compact import Int8Tensor, int8_weight_only, load_model, save_model
from modelshrink.export.onnx import OnnxClassifier, export_onnx, onnx_weight_stats
from modelshrink.measure.accuracy import classification_metrics, predict_logits
from modelshrink.measure.latency import latency_batches, timed_runs
from modelshrink.measure.memory import peak_rss_mb
from modelshrink.measure.size import file_sizes, model_stats
from modelshrink.models.builders import build_model

if TYPE_CHECKING:
    from modelshrink.runner.run import Runner, Stage

SPLITS = ("train", "val", "test")
# The ONNX artifacts written for every variant (file name suffix → export format).
ONNX_ARTIFACTS = {"onnx_fp32": "fp32", "onnx_fp16": "fp16", "onnx_int8": "int8_dynamic"}
# A variant in another format (int8_static; quant.qat's int8_weights) has its own file as a fourth artifact.
ARTIFACT_NAMES = {**{f: n for n, f in ONNX_ARTIFACTS.items()}, "int8_static": "onnx_int8_static",
                  "int8_weights": "onnx_int8_weights"}  # fmt: skip
BATCHES = (1, 256)
LATENCY_BUDGET_S = 0.15  # timed seconds per (artifact, batch, threads); 16 per model, ~3 s with warm-ups
MEASURE_MEMORY = True  # one fresh subprocess per artifact (~1 s each, ~3 s for torch)


def _split(data: TaskData, name: str) -> tuple[np.ndarray, np.ndarray]:
    return {"train": (data.x_train, data.y_train), "val": (data.x_val, data.y_val),
            "test": (data.x_test, data.y_test)}[name]  # fmt: skip


def _sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _thread_counts() -> list[int]:
    return sorted({1, os.cpu_count() or 1})


def _model_config(runner: Runner, stage: Stage) -> dict[str, Any]:
    # A technique that changes the architecture records the stage's own config; else the run's.
    cfg = getattr(stage, "model_config", None)
    if isinstance(cfg, dict):
        return cfg
    if cfg is not None and hasattr(cfg, "model_dump"):
        return dict(cfg.model_dump(mode="json"))
    return dict(runner.cfg.model.model_dump(mode="json"))


def variant_preprocessing(preprocessing: dict[str, Any], model_config: Any) -> dict[str, Any]:
    """The preprocessing a variant's files carry: a vocabulary-pruned model (`vocab_keep`) reads
    every id >= vocab_keep as out-of-vocabulary, so its tokenizer needs only the words below it
    (same ids, same predictions; the rest would be dead weight in the file)."""
    keep = getattr(model_config, "vocab_keep", None)
    if preprocessing.get("kind") != "text" or not keep:
        return preprocessing
    tokenizer = dict(preprocessing["tokenizer"])
    tokenizer["vocab"] = list(tokenizer["vocab"])[: max(0, keep - 2)]  # ids 0 (pad) and 1 (OOV) have no word
    return {**preprocessing, "tokenizer": tokenizer}


def _compact_model(model: nn.Module, export_format: str) -> tuple[nn.Module, dict[str, Int8Tensor] | None, str]:
    """The torch model the compact file holds for a variant in `export_format`.

    int8 formats: weights quantized to int8 per channel (weight-only; activations stay float),
    the torch counterpart of the ONNX int8 file. fp16: weights rounded to float16. Otherwise
    the model itself. Returns (model, int8 tensors or None, weights label).
    """
    if export_format.startswith("int8"):
        qmodel = copy.deepcopy(model)
        return qmodel, int8_weight_only(qmodel), "int8 per-channel weight-only"
    if export_format == "fp16":
        hmodel = copy.deepcopy(model)
        with torch.no_grad():
            for p in hmodel.parameters():
                if p.is_floating_point():
                    p.copy_(p.half().float())
        return hmodel, None, "float16"
    return model, None, "float32"


def _torch_predictor(model: nn.Module) -> Any:
    def predict(xb: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(xb)).numpy()

    return predict


def _latency(runner: Runner, artifact: str, runtime: str, key: str, make: Any, x: np.ndarray) -> list[dict[str, Any]]:
    """Latency rows of one artifact for each batch size and thread count, cached by file content."""
    cache: dict[str, list[dict[str, Any]]] = runner.__dict__.setdefault("_latency_cache", {})
    if key not in cache:
        rows = []
        for threads in _thread_counts():
            predict = make(threads)
            for batch in BATCHES:
                warmup = 10 if batch == 1 else 2
                res = timed_runs(predict, latency_batches(x, batch), LATENCY_BUDGET_S, warmup=warmup)
                rows.append({"batch": batch, "threads": threads, **res})
        cache[key] = rows
    return [{"artifact": artifact, "runtime": runtime, **r} for r in cache[key]]


def _torch_maker(model: nn.Module) -> Any:
    def make(threads: int) -> Any:
        predict = _torch_predictor(model)

        def run(xb: np.ndarray) -> np.ndarray:
            saved = torch.get_num_threads()
            torch.set_num_threads(threads)
            try:
                return predict(xb)
            finally:
                torch.set_num_threads(saved)

        return run

    return make


def _onnx_maker(path: Path) -> Any:
    def make(threads: int) -> Any:
        clf = OnnxClassifier(path, threads=threads)

        def run(xb: np.ndarray) -> Any:
            return clf.session.run(None, {clf.input_name: xb})  # the bare runtime call is what is timed

        return run

    return make


def _memory(runner: Runner, artifact: str, runtime: str, path: Path, key: str, x: np.ndarray) -> dict[str, Any]:
    cache: dict[str, dict[str, Any]] = runner.__dict__.setdefault("_memory_cache", {})
    if key not in cache:
        cache[key] = peak_rss_mb(runtime, path, (256, *x.shape[1:]), str(x.dtype))
    return {"artifact": artifact, "runtime": runtime, **cache[key]}


def measure_variant(
    runner: Runner, data: TaskData, variant: VariantConfig, seed: int, cache: dict[tuple, Stage]
) -> dict[str, Any]:
    """Build the variant, write its artifacts, load each back and measure it; return the row."""
    stage = runner._stage(data, variant, seed, cache)
    model = stage.model
    folder = runner.out / "models" / f"{variant.name}-seed{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    ctx = runner._context(data, seed, variant.name)
    base = cache.get(("baseline",))
    base_model = base.model if base is not None else build_model(runner.cfg.model, data.input_dim, data.num_labels)
    baseline_dense = model_stats(base_model)["dense_fp32_bytes"]

    # The deployable ONNX file in the variant's format; quant.int8_static says how many
    # calibration batches it wants.
    n_calib = next((s["details"]["calibration_batches"] for s in reversed(stage.steps)
                    if "calibration_batches" in s["details"]), None)  # fmt: skip
    calibration = list(itertools.islice(ctx.calibration or [], n_calib)) if n_calib else None
    onnx_path = export_onnx(model, ctx.example_input, folder / "model.onnx", stage.export_format,  # type: ignore[arg-type]
                            calibration=calibration)  # fmt: skip

    # Accuracy from the ONNX file, never from the torch model it came from.
    clf = OnnxClassifier(onnx_path, threads=runner.cfg.latency_threads)
    metrics: dict[str, Any] = {}
    for split in SPLITS:
        x, y = _split(data, split)
        logits = predict_logits(lambda xb: clf.predict_logits(xb, batch_size=len(xb)), x)
        metrics[split] = classification_metrics(y, logits, data.num_labels)
        if split == "test":
            test_logits = logits
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=1))
    # Vocabulary, labels and settings beside the model: the folder alone classifies raw text.
    preprocessing = variant_preprocessing(data.preprocessing, stage.model_config)
    (folder / "preprocessing.json").write_text(json.dumps(preprocessing))
    torch_logits = predict_logits(_torch_predictor(model), data.x_test)
    agreement = float((torch_logits.argmax(1) == test_logits.argmax(1)).mean())

    # Every variant also as float32, float16 and int8 ONNX files, each run in ONNX Runtime.
    onnx_files: dict[str, Path] = {}
    for name, fmt in ONNX_ARTIFACTS.items():
        onnx_files[name] = onnx_path if fmt == stage.export_format else export_onnx(
            model, ctx.example_input, folder / f"model.{fmt}.onnx", fmt)  # type: ignore[arg-type]  # fmt: skip
    onnx_files.setdefault(ARTIFACT_NAMES[stage.export_format], onnx_path)

    # The compact file: written, loaded back with no pickle, checked against the in-memory model.
    compact_path = folder / "weights.msz"
    cmodel, quantized, weights_label = _compact_model(model, stage.export_format)
    save_model(cmodel, compact_path, _model_config(runner, stage), stage.input_dim, data.labels,
               preprocessing, quantized)  # fmt: skip
    loaded, _ = load_model(compact_path)
    compact_logits = predict_logits(_torch_predictor(loaded), data.x_test)
    expected_logits = torch_logits if cmodel is model else predict_logits(_torch_predictor(cmodel), data.x_test)
    compact_exact = bool(np.array_equal(compact_logits, expected_logits))
    compact_acc = classification_metrics(data.y_test, compact_logits, data.num_labels)

    stats = model_stats(model)
    artifacts: list[dict[str, Any]] = []
    latency: list[dict[str, Any]] = []
    memory: list[dict[str, Any]] = []
    x_test = data.x_test
    for name, path in [*onnx_files.items(), ("compact", compact_path)]:
        sizes = file_sizes(path)
        runtime = "torch" if name == "compact" else "onnxruntime"
        if name == "compact":
            acc = compact_acc
        elif path == onnx_path:
            acc = metrics["test"]
        else:
            other = OnnxClassifier(path, threads=runner.cfg.latency_threads)

            def run_other(xb: np.ndarray, c: OnnxClassifier = other) -> np.ndarray:
                return c.predict_logits(xb, batch_size=len(xb))

            acc = classification_metrics(data.y_test, predict_logits(run_other, x_test), data.num_labels)
        artifacts.append({
            "artifact": name, "runtime": runtime, "file": str(path.relative_to(runner.out)),
            "file_bytes": sizes["file_bytes"], "gzip_bytes": sizes["gzip_bytes"], "zstd_bytes": sizes["zstd_bytes"],
            "dense_fp32_bytes": stats["dense_fp32_bytes"], "params": stats["parameters"],
            "nonzeros": stats["nonzeros"], "compression_x": baseline_dense / sizes["file_bytes"],
            "test_accuracy": acc["accuracy"], "test_macro_f1": acc["macro_f1"],
            "weights": weights_label if name == "compact" else name.removeprefix("onnx_"),
        })  # fmt: skip
        key = f"{runtime}:{_sha(path)}"
        make = _torch_maker(loaded) if name == "compact" else _onnx_maker(path)
        latency += _latency(runner, name, runtime, key, make, x_test)
        # A user's own model (`custom`) rebuilds only in the process that holds its build function,
        # so its compact file's memory cannot be measured in a fresh process: left out, not guessed.
        rebuildable = name != "compact" or _model_config(runner, stage).get("name") != "custom"
        if MEASURE_MEMORY and rebuildable:
            memory.append(_memory(runner, name, runtime, path, key, x_test))

    by_name = {a["artifact"]: a for a in artifacts}
    primary = file_sizes(onnx_path)
    b1 = next(r for r in latency if r["artifact"] == ARTIFACT_NAMES[stage.export_format] and r["batch"] == 1
              and r["threads"] == 1)  # fmt: skip
    weights = onnx_weight_stats(onnx_path)
    row: dict[str, Any] = {
        "export_format": stage.export_format,
        "steps": stage.steps,
        "parameters": stats["parameters"],
        "nonzeros": stats["nonzeros"],
        "distinct_values_max": stats["distinct_values_max"],
        "dense_fp32_bytes": stats["dense_fp32_bytes"],
        "baseline_dense_fp32_bytes": baseline_dense,  # the compression_x numerator: same seed's baseline
        "file_bytes": primary["file_bytes"],  # the ONNX file a user deploys, in the variant's format
        "file_gzip_bytes": primary["gzip_bytes"],
        "file_zstd_bytes": primary["zstd_bytes"],
        "compression_x": baseline_dense / primary["file_bytes"],
        "onnx_weights": {k: weights[k] for k in ("int8_bytes", "float_bytes", "total_bytes", "op_types")},
        **{f"{s}_accuracy": metrics[s]["accuracy"] for s in SPLITS},
        "test_macro_f1": metrics["test"]["macro_f1"],
        "test_confusion_matrix": metrics["test"]["confusion_matrix"],  # rows: true label, columns: predicted
        "labels": data.labels,
        "baseline_history": runner._history if variant.start == "baseline" else [],  # per epoch, for the report
        "test_agreement_with_torch": agreement,  # share of test predictions equal to the float torch model's
        # One unpadded sentence, 1 thread, the variant's ONNX file (the full table is in `latency`).
        "latency_ms_p50": b1["median_ms"],
        "latency_ms_p90": b1["p90_ms"],
        "latency_threads": runner.cfg.latency_threads,
        "compact_bytes": by_name["compact"]["file_bytes"],
        "compact_gzip_bytes": by_name["compact"]["gzip_bytes"],
        "compact_compression_x": by_name["compact"]["compression_x"],
        "compact_weights": weights_label,
        "compact_test_accuracy": compact_acc["accuracy"],  # torch, the model loaded from the compact file
        "compact_test_macro_f1": compact_acc["macro_f1"],
        "compact_matches_model": compact_exact,  # loaded logits == in-memory logits, bit for bit
        **{f"{n}_bytes": by_name[n]["file_bytes"] for n in ONNX_ARTIFACTS},
        **{f"{n}_test_accuracy": by_name[n]["test_accuracy"] for n in ONNX_ARTIFACTS},
        **_flat_latency(latency, memory),
        "sizes": artifacts,
        "latency": latency,
        "memory": memory,
        "artifacts": {
            "onnx": str(onnx_path.relative_to(runner.out)),
            "compact": str(compact_path.relative_to(runner.out)),
            **{n: a["file"] for n, a in by_name.items() if n != "compact"},
        },  # fmt: skip
    }
    # Earlier gains (sparsity, distinct values, N:M) checked on the written files (runner/checks.py).
    row.update(runner._export_checks(variant.name, stage, onnx_path, compact_path))
    return row


def _flat_latency(latency: list[dict[str, Any]], memory: list[dict[str, Any]]) -> dict[str, float]:
    """CSV-friendly columns: median ms per artifact, batch and threads (1 or all), peak RSS."""
    most = max(_thread_counts())
    out: dict[str, float] = {}
    for r in latency:
        t = "1" if r["threads"] == 1 else "all"
        if r["threads"] in (1, most):
            out[f"ms_{r['artifact']}_b{r['batch']}_t{t}"] = r["median_ms"]
            if most == 1:  # one core: "all threads" is 1 thread
                out[f"ms_{r['artifact']}_b{r['batch']}_tall"] = r["median_ms"]
    for m in memory:
        out[f"peak_rss_mb_{m['artifact']}"] = m["peak_rss_mb"]
    return out
