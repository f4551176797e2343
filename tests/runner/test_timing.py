"""runner/timing.py: a variant's files are timed one at a time, then probed (memory, cold start) a few at once."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from modelshrink.runner import timing
from modelshrink.runner.row import ArtifactRow


def _row(name: str) -> ArtifactRow:
    return ArtifactRow(name, "onnxruntime", name, 1, 1, 1, 1.0, 1.0, "fp32", 4, 1, 1, None)


@pytest.mark.full_measure
def test_every_latency_comes_before_the_probes_and_probes_overlap_at_most_probes_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[tuple[str, str]] = []
    lock, running, peak = threading.Lock(), [0], [0]

    def probe(runtime: str, path: Path, shape: tuple[int, ...], dtype: str) -> dict[str, Any]:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
            events.append(("probe", path.name))
        time.sleep(0.05)  # long enough for the pool to start the next probes meanwhile
        with lock:
            running[0] -= 1
        return {"peak_rss_mb": float(len(path.name)), "cold_start_s": 0.1}

    monkeypatch.setattr(timing, "peak_rss_mb", probe)
    monkeypatch.setattr(timing, "PROBES_AT_ONCE", 2)
    monkeypatch.setattr(timing, "LATENCY_BUDGET_S", 0.001)
    files = []
    for i, content in enumerate([b"a", b"b", b"c", b"d", b"a"]):  # the last has the first's bytes: probed once
        path = tmp_path / f"f{i}.onnx"
        path.write_bytes(content)
        art = timing.Artifact(f"f{i}", "onnxruntime", path, "fp32", lambda x: x,
                              lambda n, i=i: (lambda xb: events.append(("latency", f"f{i}"))),
                              ((2, 4), "int64"), (1,))  # fmt: skip
        files.append((_row(f"f{i}"), art))
    data = SimpleNamespace(x_test=np.ones((8, 4), dtype=np.int64))
    cache = timing.ArtifactCache()
    timing.time_files(files, data, cache)  # type: ignore[arg-type]
    kinds = [k for k, _ in events]
    assert kinds.index("probe") > max(i for i, k in enumerate(kinds) if k == "latency")  # no latency beside a probe
    assert sorted(n for k, n in events if k == "probe") == ["f0.onnx", "f1.onnx", "f2.onnx", "f3.onnx"]
    assert peak[0] == 2  # two at once, never more
    assert [r.memory["peak_rss_mb"] for r, _ in files] == [7.0] * 5  # the duplicate reads the first's probe
    assert all(r.latency and {x["threads"] for x in r.latency} >= {1} for r, _ in files)


@pytest.mark.full_measure
def test_a_failing_probe_fails_the_timing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from modelshrink.errors import ArtifactError

    def probe(*_a: Any) -> dict[str, Any]:
        raise ArtifactError("memory measurement of x in onnxruntime failed: boom")

    monkeypatch.setattr(timing, "peak_rss_mb", probe)
    monkeypatch.setattr(timing, "LATENCY_BUDGET_S", 0.001)
    path = tmp_path / "m.onnx"
    path.write_bytes(b"x")
    art = timing.Artifact("m", "onnxruntime", path, "fp32", lambda x: x, lambda n: (lambda xb: None),
                          ((2, 4), "int64"), (1,))  # fmt: skip
    with pytest.raises(ArtifactError, match="boom"):
        timing.time_files([(_row("m"), art)], SimpleNamespace(x_test=np.ones((4, 4), np.int64)),  # type: ignore[arg-type]
                          timing.ArtifactCache())  # fmt: skip
