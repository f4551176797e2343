"""One variant's files, each loaded back and measured: ONNX in every format the registry always
writes (plus the variant's own, e.g. int8 static) and the compact file, in torch (`compact`) and in
the torch-free runtime (`msz_runtime`, the way it ships).

Measuring is two halves: `evaluate_variant` writes a stage's files and evaluates each (bytes,
accuracy from the file, checks) into a `VariantRow` not timed yet; `time_variant` times them
(runner/timing.py: latency, peak memory and cold start of a fresh process). `measure_variant` does
both; `--jobs` workers evaluate and the driver times (runner/executors.py). `measure_artifact` is
both halves for one file. None of them knows the runner.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

from modelshrink.data.tasks import TaskData
from modelshrink.errors import ArtifactError
from modelshrink.export._atomic import write_text_atomic
from modelshrink.export.compact import load_model, save_model
from modelshrink.export.formats import always_written, compact_model, get_format, pte_formats
from modelshrink.export.onnx import export_onnx, onnx_weight_stats
from modelshrink.export.onnx_hf import HF_ONNX_NAME, export_hf_onnx, hf_onnx_predictor
from modelshrink.measure.accuracy import classification_metrics, predict_logits
from modelshrink.measure.size import file_sizes, model_stats
from modelshrink.models.builders import saved_config
from modelshrink.models.hf import HFClassifier
from modelshrink.runner.checks import check_compact, check_onnx, failed
from modelshrink.runner.pipeline import Log, Stage, log_failed_checks
from modelshrink.runner.row import SPLITS, ArtifactRow, VariantRow
from modelshrink.runner.timing import (
    BATCHES,
    Artifact,
    ArtifactCache,
    FileToTime,
    Logits,
    onnx_artifact,
    pte_artifact,
    runtime_artifact,
    time_files,
    torch_artifact,
)
from modelshrink.train import torch_predictor

__all__ = ["BATCHES", "Artifact", "ArtifactCache", "Logits", "Untimed", "evaluate_variant", "measure_artifact",
           "measure_variant", "onnx_artifact", "time_variant", "time_variants"]  # fmt: skip

PTE_CALIBRATION_BATCHES = 8  # training batches the int8 .pte's observers see (PT2E static quantization)


def evaluate_pte(
    stage: Stage, folder: Path, data: TaskData, stats: dict[str, Any], baseline_dense: int, s: MeasureSettings
) -> tuple[list[tuple[ArtifactRow, Artifact]], dict[str, str]]:
    """The variant's ExecuTorch programs (batch 1, the tokenizer's fixed length), each loaded back and
    evaluated (int8's `weights`: what stayed float32); a format that does not export or load is named with why."""
    from modelshrink.errors import IncompatibleModelError
    from modelshrink.export.executorch import export_pte

    rows, why = [], {}
    for fmt in pte_formats():
        calibration = s.calibration[:PTE_CALIBRATION_BATCHES] if fmt.needs_calibration else None
        try:
            pte = export_pte(stage.model, s.example_input[:1], folder / f"model.{fmt.name}.pte", fmt.mode, calibration)
            art = pte_artifact(fmt.artifact, pte.path, pte.weights.describe() if pte.weights else fmt.mode)
        except (IncompatibleModelError, ArtifactError) as err:
            why[fmt.artifact] = str(err)
            continue
        art.memory_input = ((1, *data.x_test.shape[1:]), str(data.x_test.dtype))
        rows.append((evaluate_artifact(art, data, s.root, stats, baseline_dense), art))
    return rows, why


def evaluate_artifact(
    art: Artifact, data: TaskData, root: Path, stats: dict[str, Any], baseline_dense: int | None,
    test_logits: np.ndarray | None = None,
) -> ArtifactRow:  # fmt: skip
    """Bytes and test accuracy (from the file; `test_logits` when already computed); not timed yet (timing.py)."""
    sizes = file_sizes(art.path)
    logits = test_logits if test_logits is not None else art.logits(data.x_test)
    acc = classification_metrics(data.y_test, logits, data.num_labels)
    return ArtifactRow(
        art.name, art.runtime, str(art.path.relative_to(root)), sizes["file_bytes"], sizes["gzip_bytes"],
        sizes["zstd_bytes"], acc["accuracy"], acc["macro_f1"], art.weights, stats["dense_fp32_bytes"],
        stats["parameters"], stats["nonzeros"], baseline_dense / sizes["file_bytes"] if baseline_dense else None,
    )  # fmt: skip


def measure_artifact(
    art: Artifact, data: TaskData, root: Path, stats: dict[str, Any], baseline_dense: int | None,
    cache: ArtifactCache, test_logits: np.ndarray | None = None, gpu_provider: str | None = None,
) -> ArtifactRow:  # fmt: skip
    """Bytes, test accuracy (from the file; `test_logits` when already computed), latency and memory; latency
    on the GPU too when `gpu_provider` names one (ONNX files only)."""
    row = evaluate_artifact(art, data, root, stats, baseline_dense, test_logits)
    time_files([(row, art)], data, cache, gpu_provider)
    return row


T = TypeVar("T")
SLOW_S = 10.0  # a measuring step at least this long says so: a big model's row is minutes of quiet otherwise


def said(log: Log, what: str, work: Callable[[], T]) -> T:
    """`work()`, and one line when it took SLOW_S or more (progress in a log file, for big models)."""
    t0 = time.perf_counter()
    out = work()
    if (spent := time.perf_counter() - t0) >= SLOW_S:
        log(f"{what} measured in {spent:.0f} s")
    return out


def split_metrics(logits: Logits, data: TaskData) -> tuple[dict[str, Any], np.ndarray]:
    """Accuracy, macro-F1 and confusion matrix per split, and the test split's logits."""
    out: dict[str, Any] = {}
    for split in SPLITS:
        x, y = data.split(split)
        split_logits = logits(x)
        out[split] = classification_metrics(y, split_logits, data.num_labels)
    return out, split_logits  # the last split is "test"


def _config_dict(cfg: Any) -> dict[str, Any]:
    return dict(cfg) if isinstance(cfg, dict) else dict(cfg.model_dump(mode="json"))


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


@dataclass
class MeasureSettings:
    """What measuring needs besides the stage: where files go, threads, and the inputs of export."""

    root: Path  # the run folder; artifact paths in the row are relative to it
    latency_threads: int  # ONNX Runtime threads for accuracy
    example_input: torch.Tensor
    calibration: list[torch.Tensor]  # training batches for static int8
    cache: ArtifactCache = field(default_factory=ArtifactCache)
    log: Log = print
    executorch: bool = False  # also write and measure .pte programs (when executorch imports)
    gpu_provider: str | None = None  # also time the ONNX files on the GPU (measure.latency.gpu_latency_provider)


def _write_onnx(stage: Stage, folder: Path, s: MeasureSettings) -> tuple[str, dict[str, Path]]:
    """The variant's deployable ONNX file and every always-written format: (its artifact name, files by name)."""
    # quant.int8_static says how many calibration batches it wants.
    n_calib = next((st["details"]["calibration_batches"] for st in reversed(stage.steps)
                    if "calibration_batches" in st["details"]), None)  # fmt: skip
    calibration = list(itertools.islice(s.calibration, n_calib)) if n_calib else None
    fmt = get_format(stage.export_format)
    primary = export_onnx(stage.model, s.example_input, folder / "model.onnx", fmt.name,  # type: ignore[arg-type]
                          calibration=calibration)  # fmt: skip
    files = {}
    for other in always_written():
        files[other.artifact] = primary if other.name == fmt.name else export_onnx(
            stage.model, s.example_input, folder / f"model.{other.name}.onnx", other.name)  # type: ignore[arg-type]  # fmt: skip
    files.setdefault(fmt.artifact, primary)  # a format not always written (int8 static) comes last
    return fmt.artifact, files


@dataclass
class Untimed:
    """A variant's row, its files written and evaluated but not timed yet: `time_variant` times them."""

    row: VariantRow
    files: list[FileToTime]  # row.artifacts, in the same order, as another process loads them again
    gpu_provider: str | None  # also time the ONNX files on the GPU with this provider
    live: list[Artifact] | None = None  # the files as loaded in this process; None once sent to another


def measure_variant(
    name: str, stage: Stage, data: TaskData, folder: Path, baseline_dense: int, s: MeasureSettings
) -> VariantRow:
    """Write the stage's files into `folder`, load each back and measure it."""
    return time_variant(evaluate_variant(name, stage, data, folder, baseline_dense, s), data, s.cache, s.log)


def time_variant(untimed: Untimed, data: TaskData, cache: ArtifactCache, log: Log = print) -> VariantRow:
    """Time the files of an evaluated variant (runner/timing.py), loading them again when they were evaluated
    in another process; returns its row, complete."""
    return time_variants([untimed], data, cache, log)[0]


def time_variants(untimed: list[Untimed], data: TaskData, cache: ArtifactCache, log: Log = print) -> list[VariantRow]:
    """`time_variant` for variants evaluated on the same data, together: every latency first, then the memory
    probes of all their files, two at a time (a variant's slow torch probe pairs with another's)."""
    pairs: list[tuple[ArtifactRow, Artifact]] = []
    for u in untimed:
        arts = u.live or [f.load(u.row.latency_threads) for f in u.files]
        pairs += zip(u.row.artifacts, arts, strict=True)
    providers = {u.gpu_provider for u in untimed}
    if len(providers) > 1:  # internal: one run's rows share their device
        raise ValueError(f"variants timed together must share a GPU provider, got {providers}")
    time_files(pairs, data, cache, next(iter(providers), None), lambda what, work: said(log, what, work))
    return [u.row for u in untimed]


def evaluate_variant(
    name: str, stage: Stage, data: TaskData, folder: Path, baseline_dense: int, s: MeasureSettings
) -> Untimed:
    """Write the stage's files into `folder`, load each back and evaluate it (bytes, accuracy, checks); the
    timings are left to `time_variant`."""
    folder.mkdir(parents=True, exist_ok=True)
    model, x_test = stage.model, data.x_test
    primary_name, files = _write_onnx(stage, folder, s)
    primary_path = files[primary_name]
    sample = ((256, *x_test.shape[1:]), str(x_test.dtype))
    onnx_arts = [onnx_artifact(n, p, s.latency_threads) for n, p in files.items()]
    for art in onnx_arts:
        art.memory_input = sample
    # Accuracy from the deployable file, never from the torch model it came from.
    metrics, test_logits = said(s.log, f"{name}: accuracy of {primary_name}", lambda: split_metrics(
        next(a for a in onnx_arts if a.path == primary_path).logits, data))  # fmt: skip
    write_text_atomic(folder / "metrics.json", json.dumps(metrics, indent=1))  # a full disk leaves no half file
    # Vocabulary, labels and settings beside the model: the folder alone classifies raw text.
    preprocessing = variant_preprocessing(data.preprocessing, stage.model_config)
    write_text_atomic(folder / "preprocessing.json", json.dumps(preprocessing))
    torch_logits = predict_logits(torch_predictor(model), x_test)

    # The compact file: written, loaded back with no pickle, checked against the in-memory model.
    compact_path = folder / "weights.msz"
    cmodel, quantized, weights_label = compact_model(model, get_format(stage.export_format))
    model_cfg = saved_config(_config_dict(stage.model_config), cmodel)  # an hf model: its config in the file
    save_model(cmodel, compact_path, model_cfg, stage.input_dim, data.labels, preprocessing, quantized,
               example_input=s.example_input)  # fmt: skip
    loaded, _ = load_model(compact_path)
    compact = torch_artifact("compact", compact_path, loaded, weights_label)
    # A user's own model (`custom`) rebuilds only in the process that holds its build function,
    # so its compact file's memory cannot be measured in a fresh process: left out, not guessed.
    compact.memory_input = sample if model_cfg.get("name") != "custom" else None
    compact_logits = compact.logits(x_test)
    x_val, y_val = data.split("val")  # search chooses by the file's validation accuracy, never its test accuracy
    compact_val = classification_metrics(y_val, compact.logits(x_val), data.num_labels)["accuracy"]
    expected = torch_logits if cmodel is model else predict_logits(torch_predictor(cmodel), x_test)

    stats = model_stats(model)
    measured = [(said(s.log, f"{name}: {a.name}", lambda a=a: evaluate_artifact(
                 a, data, s.root, stats, baseline_dense, test_logits if a.path == primary_path else None)), a)
                for a in onnx_arts]  # fmt: skip
    measured.append((evaluate_artifact(compact, data, s.root, stats, baseline_dense, compact_logits), compact))
    shipped, not_exported = _device_files(stage, folder, compact_path, weights_label, data, stats, baseline_dense, s)
    measured += shipped
    hf_onnx = _hf_onnx(model, folder, data, s, onnx_arts, {primary_path: test_logits}, not_exported)
    weights = onnx_weight_stats(primary_path)
    row = VariantRow(
        export_format=stage.export_format, primary=primary_name, steps=stage.steps,
        parameters=stats["parameters"], nonzeros=stats["nonzeros"], distinct_values_max=stats["distinct_values_max"],
        dense_fp32_bytes=stats["dense_fp32_bytes"], baseline_dense_fp32_bytes=baseline_dense, metrics=metrics,
        labels=data.labels, onnx_weights={k: weights[k] for k in ("int8_bytes", "float_bytes", "total_bytes", "op_types")},
        test_agreement_with_reference=float((torch_logits.argmax(1) == test_logits.argmax(1)).mean()),
        latency_threads=s.latency_threads, artifacts=[r for r, _ in measured], baseline_history=[],
        compact_matches_model=compact_matches(cmodel, loaded, compact_logits, expected), not_exported=not_exported,
        compact_val_accuracy=float(compact_val), hf_onnx=hf_onnx,
    )  # fmt: skip
    row.checks, row.checks_failed = export_checks(name, stage, primary_path, compact_path, s.log)
    files_ = [FileToTime(a.name, a.runtime, a.path, a.weights, a.batches, a.memory_input) for _, a in measured]
    return Untimed(row, files_, s.gpu_provider, [a for _, a in measured])


def _device_files(
    stage: Stage,
    folder: Path,
    compact_path: Path,
    weights_label: str,
    data: TaskData,
    stats: dict[str, Any],
    baseline_dense: int,
    s: MeasureSettings,
) -> tuple[list[tuple[ArtifactRow, Artifact]], dict[str, str]]:
    """The compact file in the torch-free runtime, and the ExecuTorch programs when asked for, each evaluated;
    each file that could not be made says why."""
    rows: list[tuple[ArtifactRow, Artifact]] = []
    not_exported: dict[str, str] = {}
    try:  # a model whose graph did not export says why
        shipped = runtime_artifact("msz_runtime", compact_path, weights_label, s.latency_threads)
        shipped.memory_input = ((256, *data.x_test.shape[1:]), str(data.x_test.dtype))
        rows.append((said(s.log, "msz_runtime", lambda: evaluate_artifact(
            shipped, data, s.root, stats, baseline_dense)), shipped))  # fmt: skip
    except ArtifactError as err:
        not_exported["msz_runtime"] = str(err)
    if s.executorch:  # opt-in (`executorch: true`): lowering the LSTM takes minutes per program
        ptes, why = evaluate_pte(stage, folder, data, stats, baseline_dense, s)
        rows, not_exported = rows + ptes, {**not_exported, **why}
    return rows, not_exported


def _hf_onnx(
    model: nn.Module, folder: Path, data: TaskData, s: MeasureSettings, onnx_arts: list[Artifact],
    test_logits: dict[Path, np.ndarray], not_exported: dict[str, str],
) -> dict[str, Any] | None:  # fmt: skip
    """An hf model's input_ids + attention_mask file (export/onnx_hf.py) beside model.onnx: its bytes, its test
    accuracy in ONNX Runtime, and its logits against the measured float32 file's on the test rows (`test_logits`:
    files' logits already computed). None: not an hf model, or the export failed (then `not_exported` says why)."""
    if not isinstance(model, HFClassifier):
        return None
    from modelshrink.errors import IncompatibleModelError

    try:
        path = export_hf_onnx(model, s.example_input.cpu().numpy(), folder / HF_ONNX_NAME)
    except IncompatibleModelError as err:
        not_exported["onnx_hf"] = str(err)
        return None
    logits = predict_logits(hf_onnx_predictor(path, model.pad_id, s.latency_threads), data.x_test)
    fp32 = next(a for a in onnx_arts if a.name == "onnx_fp32")
    reference = test_logits[fp32.path] if fp32.path in test_logits else fp32.logits(data.x_test)
    return {"file": str(path.relative_to(s.root)), "file_bytes": path.stat().st_size, "weights": "fp32",
            "inputs": ["input_ids", "attention_mask"], "padding": "right",
            "test_accuracy": classification_metrics(data.y_test, logits, data.num_labels)["accuracy"],
            "compared_with": fp32.name, "max_abs_logit_diff": float(np.abs(logits - reference).max()),
            "matches": bool(np.allclose(logits, reference, rtol=1e-4, atol=1e-5))}  # fmt: skip


def compact_matches(written: nn.Module, loaded: nn.Module, logits: np.ndarray, expected: np.ndarray) -> bool:
    """The loaded model holds the written weights bit for bit, and its logits equal the in-memory model's up
    to float rounding: the same weights can differ in the last bits of a transformer's logits when tensors sit
    at other addresses (SIMD paths), so the logits are compared with a tolerance far below any decision."""
    mine, theirs = written.state_dict(), loaded.state_dict()
    same = mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    return bool(same and np.allclose(logits, expected, rtol=1e-5, atol=1e-6))


def export_checks(name: str, stage: Stage, onnx_path: Path, compact_path: Path, log: Log) -> tuple[list, int]:
    """Earlier gains (sparsity, distinct values, N:M) checked on the written files (runner/checks.py);
    failures are recorded, not fatal. Returns the export checks and the variant's failed count."""
    checks = check_onnx(onnx_path, stage.model.state_dict(), stage.steps)
    checks += check_compact(compact_path, stage.steps)
    log_failed_checks(log, name, checks)
    every = [c for st in stage.steps for c in st.get("checks", [])] + checks
    return checks, len(failed(every))
