"""The shipped compact file in the torch-free runtime: bytes, cold start, peak RSS, latency, against the floors.

For every `weights.msz` under a run folder (or the files given), in a fresh process each:
cold start = import modelshrink.runtime (numpy, zstandard, onnxruntime) + load (decode the
weights, build the ONNX Runtime session) + the first prediction (batch 1), with each part
timed so what dominates is named; peak RSS (VmHWM) of that process; then latency at batch 1
and 256 (median of timed runs, 1 thread). A version-2 file (written before the graph was
stored) is re-saved as version 3 first (`--upgrade-to DIR`): same weights bit for bit, plus
its graph. Floors (issue 15): file <= 40 KB, peak RSS <= 80 MB, cold start <= 0.5 s.

    python benchmarks/runtime_ship.py runs/best [--upgrade-to /tmp/v3] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from modelshrink import runtime
from modelshrink.measure.memory import peak_rss_mb
from modelshrink.runtime.container import read_compact_file

FLOOR_BYTES, FLOOR_RSS_MB, FLOOR_COLD_S = 40_000, 80.0, 0.5


def upgrade(path: Path, out_dir: Path) -> Path:
    """A version-3 copy of a version-2 file: the same weights (bit for bit) plus the exported graph."""
    import torch

    from modelshrink.export.compact import load_compact, load_model, save_model

    model, meta = load_model(path)
    pre = meta["preprocessing"]
    example = torch.zeros(2, int(pre["tokenizer"]["max_len"]), dtype=torch.int64) if pre["kind"] == "text" else (
        torch.zeros(2, *pre["shape"]))  # fmt: skip
    dst = out_dir / path.parent.name / "weights.msz"
    dst.parent.mkdir(parents=True, exist_ok=True)
    save_model(model, dst, meta["model"], int(meta["input_dim"]), meta["labels"], pre, None, example_input=example)
    old, new = load_compact(path)[0], load_compact(dst)[0]
    assert all(torch.equal(old[k], new[k]) for k in old)  # internal: the re-save must not change a weight
    return dst


def latency_ms(session: runtime.Session, batch: int, shape: tuple[int, ...], dtype: str, runs: int = 30) -> float:
    x = np.zeros((batch, *shape), dtype=dtype)
    for _ in range(3):
        session.run(x)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        session.run(x)
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="+", type=Path, help="run folders or .msz files")
    ap.add_argument("--upgrade-to", type=Path, default=Path("/tmp/modelshrink-v3"), help="where v2 files are re-saved")
    ap.add_argument("--repeats", type=int, default=3, help="fresh processes per file (median)")
    args = ap.parse_args()
    files = sorted(f for p in args.paths for f in ([p] if p.is_file() else p.rglob("weights.msz")))
    print(
        "| file | bytes | cold start s (import / load / first) | peak RSS MB (runtime / model) | ms b1 | ms b256 | floors |"
    )
    print("|---|---|---|---|---|---|---|")
    for f in files:
        header, _ = read_compact_file(f)
        if header["version"] < 3:
            f = upgrade(f, args.upgrade_to)
        session = runtime.load(f)
        pre = session.meta["preprocessing"]
        shape = (int(pre["tokenizer"]["max_len"]),) if pre["kind"] == "text" else tuple(pre["shape"])
        dtype = "int64" if pre["kind"] == "text" else "float32"
        res = [peak_rss_mb("modelshrink.runtime", f, (256, *shape), dtype) for _ in range(args.repeats)]
        med = {k: statistics.median(r[k] for r in res) for k in ("cold_start_s", "import_s", "load_s", "first_run_s",
                                                                   "peak_rss_mb", "runtime_rss_mb", "model_rss_mb")}  # fmt: skip
        assert not any(r["torch_imported"] for r in res)  # internal: the runtime child never imports torch
        size = f.stat().st_size
        ok = size <= FLOOR_BYTES and med["peak_rss_mb"] <= FLOOR_RSS_MB and med["cold_start_s"] <= FLOOR_COLD_S
        print(f"| {f.parent.name} | {size:,} | {med['cold_start_s']:.3f} ({med['import_s']:.3f} / {med['load_s']:.3f} "
              f"/ {med['first_run_s']:.3f}) | {med['peak_rss_mb']:.1f} ({med['runtime_rss_mb']:.1f} / "
              f"{med['model_rss_mb']:.1f}) | {latency_ms(session, 1, shape, dtype):.3f} | "
              f"{latency_ms(session, 256, shape, dtype):.2f} | {'met' if ok else 'not met'} |")  # fmt: skip


if __name__ == "__main__":
    main()
