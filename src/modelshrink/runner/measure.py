"""One variant's files, each loaded back and measured: ONNX in every format the registry always
writes (plus the variant's own, e.g. int8 static) and the compact file, in torch (`compact`) and in
the torch-free runtime (`msz_runtime`, the way it ships).

`measure_artifact` is the one measuring procedure for a file (accuracy from the file, bytes,
latency per batch size and thread count, peak memory of a fresh process); `measure_variant`
writes a stage's files and measures them into a `VariantRow`. Neither knows the runner.
"""

from __future__ import annotations

import hashlib
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
from modelshrink.export.onnx import OnnxClassifier, export_onnx, onnx_weight_stats
from modelshrink.export.onnx_hf import HF_ONNX_NAME, export_hf_onnx, hf_onnx_predictor
from modelshrink.measure.accuracy import classification_metrics, predict_logits
from modelshrink.measure.latency import gpu_runner, latency_batches, timed_runs
from modelshrink.measure.memory import peak_rss_mb
from modelshrink.measure.size import file_sizes, model_stats
from modelshrink.models.builders import saved_config
from modelshrink.models.hf import HFClassifier
from modelshrink.runner.checks import check_compact, check_onnx, failed
from modelshrink.runner.pipeline import Log, Stage, log_failed_checks
from modelshrink.runner.row import SPLITS, ArtifactRow, VariantRow, thread_counts
from modelshrink.train import torch_predictor

BATCHES = (1, 256)
LATENCY_BUDGET_S = 0.15  # timed seconds per (artifact, batch, threads); 16 per model, ~3 s with warm-ups
MEASURE_MEMORY = True  # one fresh subprocess per artifact (~1 s each, ~3 s for torch)
PTE_CALIBRATION_BATCHES = 8  # training batches the int8 .pte's observers see (PT2E static quantization)
Logits = Callable[[np.ndarray], np.ndarray]  # every row of a split → (N, labels) logits


@dataclass
class ArtifactCache:
    """Latency and memory of files already measured in this process, by runtime and content hash:
    variants whose files are byte-identical (e.g. int8 of a pruned and of an unpruned prefix that
    rounds the same) are timed once."""

    latency: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    memory: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class Artifact:
    """A written file and how to run it."""

    name: str  # onnx_fp32, ..., compact
    runtime: str  # onnxruntime | torch
    path: Path
    weights: str
    logits: Logits  # for accuracy
    timed: Callable[[int], Callable[[np.ndarray], Any]]  # threads → one call on a latency batch
    memory_input: tuple[tuple[int, ...], str] | None  # (shape, dtype) for the memory child; None: not measured
    # batch sizes timed (a file with a fixed batch size: that one); BATCHES as it is when the file is measured
    batches: tuple[int, ...] = field(default_factory=lambda: BATCHES)


def onnx_artifact(name: str, path: Path, threads: int, adapt: Callable[[np.ndarray], np.ndarray] | None = None,
                  batch: int | None = None) -> Artifact:  # fmt: skip
    """An ONNX file in ONNX Runtime; `adapt` reshapes task rows to the file's input (--onnx input)."""
    clf = OnnxClassifier(path, threads=threads)
    fit = adapt or (lambda x: x)

    def logits(x: np.ndarray) -> np.ndarray:
        if adapt is not None:  # a foreign file: its own input layout, maybe a fixed batch
            return clf.predict_logits(fit(x), batch_size=batch or 256)
        return predict_logits(lambda xb: clf.predict_logits(xb, batch_size=len(xb)), x)

    def timed(n: int) -> Callable[[np.ndarray], Any]:
        c = OnnxClassifier(path, threads=n)
        return lambda xb: c.session.run(None, {c.input_name: fit(xb)})  # the bare runtime call is what is timed

    return Artifact(name, "onnxruntime", path, name.removeprefix("onnx_"), logits, timed, None,
                    (batch,) if batch else BATCHES)  # fmt: skip


def torch_artifact(name: str, path: Path, model: nn.Module, weights: str) -> Artifact:
    """A compact file, loaded back into torch (`model` is what it loaded as)."""
    predict = torch_predictor(model)

    def timed(threads: int) -> Callable[[np.ndarray], Any]:
        def run(xb: np.ndarray) -> Any:
            saved = torch.get_num_threads()
            torch.set_num_threads(threads)
            try:
                return predict(xb)
            finally:
                torch.set_num_threads(saved)

        return run

    return Artifact(name, "torch", path, weights, lambda x: predict_logits(predict, x), timed, None)


def runtime_artifact(name: str, path: Path, weights: str, threads: int) -> Artifact:
    """A compact file in the torch-free runtime (modelshrink.runtime: its ONNX graph in ONNX Runtime)."""
    from modelshrink import runtime

    session = runtime.load(path, threads=threads)

    def timed(n: int) -> Callable[[np.ndarray], Any]:
        return runtime.load(path, threads=n).run  # the bare runtime call is what is timed

    def logits(x: np.ndarray) -> np.ndarray:  # batched and trimmed as every ONNX file is evaluated
        return predict_logits(session.logits, x)

    return Artifact(name, "modelshrink.runtime", path, weights, logits, timed, None)


def pte_artifact(name: str, path: Path, weights: str) -> Artifact:
    """A `.pte` program in ExecuTorch's Python runtime (fixed batch: the latency batch is the program's)."""
    from modelshrink.export.executorch import PteClassifier

    clf = PteClassifier(path)
    return Artifact(name, "executorch", path, weights, clf.predict_logits, lambda n: clf.run, None, (clf.shape[0],))


def measure_pte(
    stage: Stage, folder: Path, data: TaskData, stats: dict[str, Any], baseline_dense: int, s: MeasureSettings
) -> tuple[list[ArtifactRow], dict[str, str]]:
    """The variant's ExecuTorch programs (batch 1, the tokenizer's fixed length), each loaded back and
    measured (int8's `weights`: what stayed float32); a format that does not export or load is named with why."""
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
        rows.append(measure_artifact(art, data, s.root, stats, baseline_dense, s.cache))
    return rows, why


def gpu_latency(
    art: Artifact, data: TaskData, provider: str | None, cache: ArtifactCache
) -> list[dict[str, Any]] | None:
    """An ONNX file's latency per batch size with ONNX Runtime on the GPU (`provider`); None when there is no
    GPU provider, the file is not run by ONNX Runtime, or the session fell back to the CPU."""
    if provider is None or art.runtime != "onnxruntime":
        return None
    key = f"{provider}:{hashlib.sha256(art.path.read_bytes()).hexdigest()}"
    if key not in cache.latency:
        run = gpu_runner(str(art.path), provider)
        if run is None:
            return None
        cache.latency[key] = [{"batch": b, "provider": provider, **timed_runs(run, latency_batches(data.x_test, b),
                               LATENCY_BUDGET_S, warmup=10)} for b in art.batches]  # fmt: skip
    return cache.latency[key]


def measure_artifact(
    art: Artifact, data: TaskData, root: Path, stats: dict[str, Any], baseline_dense: int | None,
    cache: ArtifactCache, test_logits: np.ndarray | None = None, gpu_provider: str | None = None,
) -> ArtifactRow:  # fmt: skip
    """Bytes, test accuracy (from the file; `test_logits` when already computed), latency and memory; latency
    on the GPU too when `gpu_provider` names one (ONNX files only)."""
    sizes = file_sizes(art.path)
    logits = test_logits if test_logits is not None else art.logits(data.x_test)
    acc = classification_metrics(data.y_test, logits, data.num_labels)
    key = f"{art.runtime}:{hashlib.sha256(art.path.read_bytes()).hexdigest()}"
    if key not in cache.latency:
        cache.latency[key] = [
            {"batch": b, "threads": t, **timed_runs(run, latency_batches(data.x_test, b), LATENCY_BUDGET_S,
                                                    warmup=10 if b == 1 else 2)}
            for t in thread_counts() for run in [art.timed(t)] for b in art.batches
        ]  # fmt: skip
    memory = None
    if MEASURE_MEMORY and art.memory_input is not None:
        if key not in cache.memory:
            cache.memory[key] = peak_rss_mb(art.runtime, art.path, *art.memory_input)
        memory = cache.memory[key]
    return ArtifactRow(
        art.name, art.runtime, str(art.path.relative_to(root)), sizes["file_bytes"], sizes["gzip_bytes"],
        sizes["zstd_bytes"], acc["accuracy"], acc["macro_f1"], art.weights, stats["dense_fp32_bytes"],
        stats["parameters"], stats["nonzeros"],
        baseline_dense / sizes["file_bytes"] if baseline_dense else None, cache.latency[key], memory,
        gpu_latency(art, data, gpu_provider, cache),
    )  # fmt: skip


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


def measure_variant(
    name: str, stage: Stage, data: TaskData, folder: Path, baseline_dense: int, s: MeasureSettings
) -> VariantRow:
    """Write the stage's files into `folder`, load each back and measure it."""
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
    rows = [said(s.log, f"{name}: {a.name}", lambda a=a: measure_artifact(
                a, data, s.root, stats, baseline_dense, s.cache, test_logits if a.path == primary_path else None,
                s.gpu_provider)) for a in onnx_arts]  # fmt: skip
    rows.append(said(s.log, f"{name}: compact", lambda: measure_artifact(
        compact, data, s.root, stats, baseline_dense, s.cache, compact_logits)))  # fmt: skip
    shipped, not_exported = _device_files(stage, folder, compact_path, weights_label, data, stats, baseline_dense, s)
    rows += shipped
    hf_onnx = _hf_onnx(model, folder, data, s, next(a for a in onnx_arts if a.name == "onnx_fp32"), not_exported)
    weights = onnx_weight_stats(primary_path)
    row = VariantRow(
        export_format=stage.export_format, primary=primary_name, steps=stage.steps,
        parameters=stats["parameters"], nonzeros=stats["nonzeros"], distinct_values_max=stats["distinct_values_max"],
        dense_fp32_bytes=stats["dense_fp32_bytes"], baseline_dense_fp32_bytes=baseline_dense, metrics=metrics,
        labels=data.labels, onnx_weights={k: weights[k] for k in ("int8_bytes", "float_bytes", "total_bytes", "op_types")},
        test_agreement_with_reference=float((torch_logits.argmax(1) == test_logits.argmax(1)).mean()),
        latency_threads=s.latency_threads, artifacts=rows, baseline_history=[],
        compact_matches_model=compact_matches(cmodel, loaded, compact_logits, expected), not_exported=not_exported,
        compact_val_accuracy=float(compact_val), hf_onnx=hf_onnx,
    )  # fmt: skip
    row.checks, row.checks_failed = export_checks(name, stage, primary_path, compact_path, s.log)
    return row


def _device_files(
    stage: Stage,
    folder: Path,
    compact_path: Path,
    weights_label: str,
    data: TaskData,
    stats: dict[str, Any],
    baseline_dense: int,
    s: MeasureSettings,
) -> tuple[list[ArtifactRow], dict[str, str]]:
    """The compact file in the torch-free runtime, and the ExecuTorch programs when asked for; each file that
    could not be made says why."""
    rows: list[ArtifactRow] = []
    not_exported: dict[str, str] = {}
    try:  # a model whose graph did not export says why
        shipped = runtime_artifact("msz_runtime", compact_path, weights_label, s.latency_threads)
        shipped.memory_input = ((256, *data.x_test.shape[1:]), str(data.x_test.dtype))
        rows.append(said(s.log, "msz_runtime", lambda: measure_artifact(
            shipped, data, s.root, stats, baseline_dense, s.cache)))  # fmt: skip
    except ArtifactError as err:
        not_exported["msz_runtime"] = str(err)
    if s.executorch:  # opt-in (`executorch: true`): lowering the LSTM takes minutes per program
        ptes, why = measure_pte(stage, folder, data, stats, baseline_dense, s)
        rows, not_exported = rows + ptes, {**not_exported, **why}
    return rows, not_exported


def _hf_onnx(
    model: nn.Module, folder: Path, data: TaskData, s: MeasureSettings, fp32: Artifact, not_exported: dict[str, str]
) -> dict[str, Any] | None:
    """An hf model's input_ids + attention_mask file (export/onnx_hf.py) beside model.onnx: its bytes, its test
    accuracy in ONNX Runtime, and its logits against the measured float32 file's on the test rows. None: not
    an hf model, or the export failed (then `not_exported` says why)."""
    if not isinstance(model, HFClassifier):
        return None
    from modelshrink.errors import IncompatibleModelError

    try:
        path = export_hf_onnx(model, s.example_input.cpu().numpy(), folder / HF_ONNX_NAME)
    except IncompatibleModelError as err:
        not_exported["onnx_hf"] = str(err)
        return None
    logits = predict_logits(hf_onnx_predictor(path, model.pad_id, s.latency_threads), data.x_test)
    reference = fp32.logits(data.x_test)
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
