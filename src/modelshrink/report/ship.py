""" "What should I ship?" per runtime: the smallest and the fastest file within 1 point, in each runtime.

A variant has several files, each measured in its own runtime (ONNX files in ONNX Runtime, the
compact file in the torch-free runtime `modelshrink.runtime`, `.pte` files in ExecuTorch). For each
runtime, every (variant, file) whose mean test accuracy *from that file* is within 1 point of the
baseline's is a candidate; the pick is the smallest (download bytes) and the fastest (median ms,
batch 1, 1 thread). Each pick shows its download size (the file's bytes: what an app store counts)
and its loaded size (the model's share of resident memory in a fresh process: peak RSS minus the
RSS after importing the runtime) as separate columns, with cold start and peak RSS. A figure a
row does not carry is None ("—"), never 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from modelshrink.report.view import WITHIN, Stat, VariantView, baseline_of, stat_of

# The runtimes the verdict names, in this order, with the words the report uses.
RUNTIMES = {"onnxruntime": "ONNX Runtime", "modelshrink.runtime": "torch-free runtime (modelshrink.runtime)",
            "executorch": "ExecuTorch"}  # fmt: skip
HEADS = ["Runtime", "Pick", "Variant", "File", "Test acc", "Download", "Loaded (model RSS)", "Peak RSS",
         "Latency b1", "Cold start"]  # fmt: skip


@dataclass(frozen=True)
class Candidate:
    """One file of one variant in one runtime, its figures as mean ± std over the variant's seeds."""

    variant: str
    artifact: str
    runtime: str
    accuracy: Stat | None
    download_bytes: Stat | None
    loaded_mb: Stat | None
    peak_rss_mb: Stat | None
    latency_ms: Stat | None
    cold_start_s: Stat | None


def _entry(row: dict[str, Any], key: str, artifact: str, **match: Any) -> dict[str, Any] | None:
    found = [e for e in row.get(key) or [] if isinstance(e, dict) and e.get("artifact") == artifact
             and all(e.get(k) == v for k, v in match.items())]  # fmt: skip
    return found[0] if found else None


def _field(rows: list[dict[str, Any]], key: str, artifact: str, name: str, **match: Any) -> Stat | None:
    return stat_of([(e or {}).get(name) for e in (_entry(r, key, artifact, **match) for r in rows)])


def candidates(v: VariantView) -> list[Candidate]:
    """Every file the variant's rows measured, with its runtime's figures."""
    names: dict[str, str] = {}
    for row in v.ok:
        for s in row.get("sizes") or []:
            if isinstance(s, dict) and s.get("runtime") in RUNTIMES:
                names.setdefault(str(s.get("artifact")), str(s["runtime"]))
    out = []
    for art, runtime in names.items():
        rows = v.ok
        out.append(Candidate(
            v.name, art, runtime, _field(rows, "sizes", art, "test_accuracy"), _field(rows, "sizes", art, "file_bytes"),
            _field(rows, "memory", art, "model_rss_mb"), _field(rows, "memory", art, "peak_rss_mb"),
            _field(rows, "latency", art, "median_ms", batch=1, threads=1),
            _field(rows, "memory", art, "cold_start_s"),
        ))  # fmt: skip
    return out


def picks(views: list[VariantView]) -> list[tuple[str, str, Candidate | None]]:
    """(runtime, "smallest" | "fastest", pick or None) for each runtime some file was measured in."""
    base = baseline_of(views)
    b_acc = base.stat("test_accuracy") if base else None
    if b_acc is None:
        return []
    every = [c for v in views for c in candidates(v)]
    out: list[tuple[str, str, Candidate | None]] = []
    for runtime in RUNTIMES:
        mine = [c for c in every if c.runtime == runtime]
        if not mine:
            continue
        ok = [c for c in mine if c.accuracy is not None and c.accuracy.mean >= b_acc.mean - WITHIN]
        for label, key in (("smallest", "download_bytes"), ("fastest", "latency_ms")):
            measured = [c for c in ok if getattr(c, key) is not None]
            out.append((runtime, label, min(measured, key=lambda c: getattr(c, key).mean) if measured else None))
    return out


def _s(s: Stat | None, fmt: str) -> str:
    return "—" if s is None else fmt.format(s.mean)


def table(views: list[VariantView]) -> list[list[str]]:
    """The verdict's rows as text cells, in HEADS order."""
    rows = []
    for runtime, label, c in picks(views):
        if c is None:
            rows.append([RUNTIMES[runtime], label, "none within 1 point", *["—"] * (len(HEADS) - 3)])
            continue
        acc = "—" if c.accuracy is None else f"{100 * c.accuracy.mean:.2f}%"
        rows.append([RUNTIMES[runtime], label, c.variant, c.artifact, acc, _s(c.download_bytes, "{:,.0f} B"),
                     _s(c.loaded_mb, "{:.1f} MB"), _s(c.peak_rss_mb, "{:.1f} MB"), _s(c.latency_ms, "{:.3f} ms"),
                     _s(c.cold_start_s, "{:.2f} s")])  # fmt: skip
    return rows


def markdown(views: list[VariantView]) -> list[str]:
    """The verdict per runtime as a markdown section (empty when nothing can be compared)."""
    rows = table(views)
    if not rows:
        return []
    return ["", "## What should I ship? (per runtime)", "",
            "Within 1 point of the baseline's test accuracy, measured from each file in its own runtime. Download: "
            "the file's bytes; loaded: the model's share of resident memory in a fresh process (peak RSS minus the "
            "runtime's RSS after import); cold start: import + load + first prediction; latency: batch 1, 1 thread.",
            "", "| " + " | ".join(HEADS) + " |", "|" + "---|" * len(HEADS)] + [
            "| " + " | ".join(r) + " |" for r in rows]  # fmt: skip
