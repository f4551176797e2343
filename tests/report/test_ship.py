"""The per-runtime verdict: smallest and fastest file within 1 point, in each runtime, from the rows' own figures."""

from __future__ import annotations

from typing import Any

import numpy as np

from modelshrink.report import ship
from modelshrink.report.synthetic import synthetic_row
from modelshrink.report.tables import summary_markdown
from modelshrink.report.view import build_views


def _art(artifact: str, runtime: str, nbytes: int, acc: float, ms: float, rss: float | None = None) -> dict[str, Any]:
    return {"artifact": artifact, "runtime": runtime, "file_bytes": nbytes, "test_accuracy": acc, "ms": ms, "rss": rss}


def _row(variant: str, acc: float, arts: list[dict[str, Any]], seed: int = 0) -> dict[str, Any]:
    steps = [] if variant == "baseline" else [{"kind": "prune.magnitude"}]
    return {
        "variant": variant, "seed": seed, "status": "ok", "test_accuracy": acc, "file_bytes": arts[0]["file_bytes"],
        "config": {"variant": {"name": variant, "start": "baseline", "steps": steps}},
        "sizes": [{**{k: a[k] for k in ("artifact", "runtime", "file_bytes", "test_accuracy")}, "weights": "fp32",
                   "gzip_bytes": a["file_bytes"], "compression_x": 1.0, "params": 1, "nonzeros": 1} for a in arts],
        "latency": [{"artifact": a["artifact"], "runtime": a["runtime"], "batch": b, "threads": 1,
                     "median_ms": a["ms"] * b, "p90_ms": a["ms"] * b, "samples_per_s": 1e3 / a["ms"]} for a in arts for b in (1, 256)],
        "memory": [{"artifact": a["artifact"], "runtime": a["runtime"], "peak_rss_mb": 50 + a["rss"],
                    "model_rss_mb": a["rss"], "cold_start_s": 0.3} for a in arts if a["rss"] is not None],
    }  # fmt: skip


def _rows() -> list[dict[str, Any]]:
    return [
        _row("baseline", 0.90, [_art("onnx_fp32", "onnxruntime", 1_300_000, 0.90, 0.10, 9.0),
                                _art("msz_runtime", "modelshrink.runtime", 1_200_000, 0.90, 0.07, 8.0),
                                _art("executorch_fp32", "executorch", 1_350_000, 0.90, 0.20)]),
        # int8 ONNX: smallest ONNX file within 1 point; its msz is smaller but 2 points worse
        _row("small", 0.895, [_art("onnx_int8", "onnxruntime", 350_000, 0.895, 0.08, 3.0),
                              _art("msz_runtime", "modelshrink.runtime", 30_000, 0.88, 0.09, 1.0),
                              _art("executorch_int8", "executorch", 400_000, 0.893, 0.05)]),
        _row("pruned", 0.899, [_art("onnx_fp32", "onnxruntime", 1_300_000, 0.899, 0.05, 9.0),
                               _art("msz_runtime", "modelshrink.runtime", 600_000, 0.899, 0.11, 4.0)]),
    ]  # fmt: skip


def test_picks_per_runtime_use_each_files_own_accuracy() -> None:
    got = {(rt, label): (c.variant, c.artifact) for rt, label, c in ship.picks(build_views(_rows())) if c}
    assert got[("onnxruntime", "smallest")] == ("small", "onnx_int8")
    assert got[("onnxruntime", "fastest")] == ("pruned", "onnx_fp32")
    # The 30 KB msz is 2 points below: not a candidate; the pruned one is the smallest within 1 point.
    assert got[("modelshrink.runtime", "smallest")] == ("pruned", "msz_runtime")
    assert got[("modelshrink.runtime", "fastest")] == ("baseline", "msz_runtime")
    assert got[("executorch", "smallest")] == ("small", "executorch_int8")  # -0.7 points: within 1
    assert got[("executorch", "fastest")] == ("small", "executorch_int8")


def test_table_has_download_and_loaded_columns_and_dashes_for_missing() -> None:
    rows = ship.table(build_views(_rows()))
    assert "Download" in ship.HEADS and "Loaded (model RSS)" in ship.HEADS
    small_onnx = next(r for r in rows if r[0] == "ONNX Runtime" and r[1] == "smallest")
    assert small_onnx[5] == "350,000 B" and small_onnx[6] == "3.0 MB" and small_onnx[7] == "53.0 MB"
    et = next(r for r in rows if r[0] == "ExecuTorch" and r[1] == "fastest")
    assert et[6] == "—" and et[7] == "—" and et[8] == "0.050 ms"  # memory not measured: a dash, never 0


def test_no_runtime_section_without_sizes_and_summary_names_it() -> None:
    rows = _rows()
    assert ship.markdown(build_views([{**r, "sizes": []} for r in rows])) == []
    text = "\n".join(ship.markdown(build_views(rows)))
    assert "What should I ship? (per runtime)" in text and "torch-free runtime" in text
    rng = np.random.default_rng(0)
    full = [{**synthetic_row(r["variant"], 0, [], rng), **r} for r in rows]  # every column the summary reads
    assert "What should I ship? (per runtime)" in summary_markdown(full)
