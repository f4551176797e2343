"""The result row: what one (variant, seed) measured, typed; the store keeps its `to_dict()`.

Both routes fill it — a variant the runner built (runner/measure.py) and a user's ONNX file
(runner/onnx_input.py) — so the report, the exports and the checks read one shape. The
CSV-friendly flat columns (`file_bytes`, `ms_<artifact>_b<batch>_t<1|all>`, ...) are derived
here from the artifacts, never written by hand.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

SPLITS = ("train", "val", "test")


def thread_counts() -> list[int]:
    """Latency is measured on one thread and on all of the machine's cores."""
    return sorted({1, os.cpu_count() or 1})


@dataclass
class ArtifactRow:
    """One file of a variant, loaded back and measured in its runtime."""

    # onnx_fp32 | onnx_fp16 | onnx_int8 | onnx_int8_static | onnx_int8_weights | compact | msz_runtime
    artifact: str
    runtime: str  # onnxruntime | torch | modelshrink.runtime (the compact file's ONNX graph, no torch)
    file: str  # relative to the run folder
    file_bytes: int
    gzip_bytes: int
    zstd_bytes: int
    test_accuracy: float
    test_macro_f1: float
    weights: str  # how the file stores weights: fp32, int8, "int8 per-channel weight-only", ...
    dense_fp32_bytes: int
    params: int
    nonzeros: int
    compression_x: float | None  # the same seed's baseline dense float32 bytes / file_bytes; None: no baseline
    latency: list[dict[str, Any]] = field(default_factory=list)  # per (batch, threads): median_ms, p90_ms, ...
    memory: dict[str, Any] | None = None  # peak RSS of a fresh process running it; None: not measured
    # per batch on the GPU (ONNX Runtime's CUDA provider): median_ms, p90_ms, ...; None: no GPU figures
    latency_gpu: list[dict[str, Any]] | None = None

    def size_dict(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if k not in ("latency", "memory", "latency_gpu")}

    def single(self) -> dict[str, Any]:
        """Latency of the smallest batch measured (1 but for a file with a fixed batch size), one thread."""
        return min((r for r in self.latency if r["threads"] == 1), key=lambda r: r["batch"])


@dataclass
class VariantRow:
    """Everything measured for one (variant, seed); `primary` names the file a user deploys."""

    export_format: str
    primary: str  # artifact name of the deployable file in the variant's format
    steps: list[dict[str, Any]]
    parameters: int
    nonzeros: int
    distinct_values_max: int
    dense_fp32_bytes: int
    baseline_dense_fp32_bytes: int | None  # the compression_x numerator: same seed's baseline
    metrics: dict[str, dict[str, Any]]  # split → accuracy, macro_f1, confusion_matrix (from the primary file)
    labels: list[str]
    onnx_weights: dict[str, Any]
    # Share of test predictions equal to the reference's: the float torch model a variant came
    # from, or for --onnx input the file as given.
    test_agreement_with_reference: float
    latency_threads: int
    artifacts: list[ArtifactRow]
    baseline_history: list[dict[str, float]] = field(default_factory=list)  # per epoch, for the report
    compact_matches_model: bool | None = None  # loaded weights == written, bit for bit; logits equal to float rounding
    checks: list[dict[str, Any]] = field(default_factory=list)
    checks_failed: int = 0
    not_exported: dict[str, str] = field(default_factory=dict)  # artifact → why this variant has no such file
    compact_val_accuracy: float | None = None  # the compact file's validation accuracy (search chooses by it)
    # hf rows: model.hf.onnx (inputs input_ids + attention_mask): file, bytes, test accuracy, logits vs onnx_fp32
    hf_onnx: dict[str, Any] | None = None

    def artifact(self, name: str) -> ArtifactRow | None:
        return next((a for a in self.artifacts if a.artifact == name), None)

    def to_dict(self) -> dict[str, Any]:
        """The stored row: typed fields, the primary file's figures and the flat per-artifact columns."""
        primary = self.artifact(self.primary)
        if primary is None:  # internal: the measuring code always measures the primary file
            raise ValueError(f"row has no artifact {self.primary!r}")
        compact = self.artifact("compact")
        onnx = [a for a in self.artifacts if a.artifact != "compact"]  # and msz_runtime: its own columns
        return {
            "export_format": self.export_format,
            "steps": self.steps,
            "parameters": self.parameters,
            "nonzeros": self.nonzeros,
            "distinct_values_max": self.distinct_values_max,
            "dense_fp32_bytes": self.dense_fp32_bytes,
            "baseline_dense_fp32_bytes": self.baseline_dense_fp32_bytes,
            "file_bytes": primary.file_bytes,  # the ONNX file a user deploys, in the variant's format
            "file_gzip_bytes": primary.gzip_bytes,
            "file_zstd_bytes": primary.zstd_bytes,
            "compression_x": primary.compression_x,
            "onnx_weights": self.onnx_weights,
            **{f"{s}_accuracy": self.metrics[s]["accuracy"] for s in SPLITS},
            "test_macro_f1": self.metrics["test"]["macro_f1"],
            "test_confusion_matrix": self.metrics["test"]["confusion_matrix"],  # rows: true, columns: predicted
            "labels": self.labels,
            "baseline_history": self.baseline_history,
            "test_agreement_with_reference": self.test_agreement_with_reference,
            # One unpadded input, 1 thread, the deployable file (the full table is in `latency`).
            "latency_ms_p50": primary.single()["median_ms"],
            "latency_ms_p90": primary.single()["p90_ms"],
            "latency_threads": self.latency_threads,
            **self._compact_columns(compact),
            **{f"{a.artifact}_bytes": a.file_bytes for a in onnx},
            **{f"{a.artifact}_test_accuracy": a.test_accuracy for a in onnx},
            **self._flat_latency(),
            "sizes": [a.size_dict() for a in self.artifacts],
            "latency": [{"artifact": a.artifact, "runtime": a.runtime, **r} for a in self.artifacts for r in a.latency],
            "memory": [
                {"artifact": a.artifact, "runtime": a.runtime, **a.memory}
                for a in self.artifacts
                if a.memory is not None
            ],  # fmt: skip
            "artifacts": {"onnx": primary.file, **{a.artifact: a.file for a in self.artifacts}},
            "checks": self.checks,
            "checks_failed": self.checks_failed,
            "not_exported": self.not_exported,
            **({"hf_onnx": self.hf_onnx} if self.hf_onnx is not None else {}),
            **self._gpu_latency(),
        }

    def _gpu_latency(self) -> dict[str, Any]:
        """GPU latency beside the CPU figures: `latency_gpu` and `ms_<artifact>_b<batch>_gpu`; none without a GPU."""
        timed = [(a, r) for a in self.artifacts for r in a.latency_gpu or []]
        if not timed:
            return {}
        return {"latency_gpu": [{"artifact": a.artifact, **r} for a, r in timed],
                **{f"ms_{a.artifact}_b{r['batch']}_gpu": r["median_ms"] for a, r in timed}}  # fmt: skip

    def _compact_columns(self, compact: ArtifactRow | None) -> dict[str, Any]:
        if compact is None:
            return {"compact_bytes": None, "compact_test_accuracy": None}
        return {
            "compact_bytes": compact.file_bytes,
            "compact_gzip_bytes": compact.gzip_bytes,
            "compact_compression_x": compact.compression_x,
            "compact_weights": compact.weights,
            "compact_test_accuracy": compact.test_accuracy,  # torch, the model loaded from the compact file
            "compact_val_accuracy": self.compact_val_accuracy,
            "compact_test_macro_f1": compact.test_macro_f1,
            "compact_matches_model": self.compact_matches_model,
        }

    def _flat_latency(self) -> dict[str, float]:
        """CSV-friendly columns: median ms per artifact, batch and threads (1 or all), peak RSS."""
        most = max(thread_counts())
        out: dict[str, float] = {}
        for a in self.artifacts:
            for r in a.latency:
                t = "1" if r["threads"] == 1 else "all"
                if r["threads"] in (1, most):
                    out[f"ms_{a.artifact}_b{r['batch']}_t{t}"] = r["median_ms"]
                    if most == 1:  # one core: "all threads" is 1 thread
                        out[f"ms_{a.artifact}_b{r['batch']}_tall"] = r["median_ms"]
        for a in self.artifacts:
            if a.memory is not None:
                out[f"peak_rss_mb_{a.artifact}"] = a.memory["peak_rss_mb"]
                if "cold_start_s" in a.memory:
                    out[f"cold_start_s_{a.artifact}"] = a.memory["cold_start_s"]
        return out
