"""Do two memory / cold-start probes at once change what they measure? (runner/timing.py PROBES_AT_ONCE)

Each probe (measure/memory.py) is one fresh single-threaded process that imports its runtime, loads a file
and runs it once. This times every file of a model folder `--repeats` times one probe at a time, then
`--repeats` times with `--at-once` probes running together (the files in the order the runner probes them),
and prints, per file, the median cold start and peak memory of both, and their ratio.

    python benchmarks/probe_overlap.py --folder runs/x/models/baseline-seed0 [--repeats 5] [--at-once 2]

Run it on a quiet machine: it measures the probes, nothing else should run.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

from modelshrink.measure.memory import peak_rss_mb

LENGTH = 64  # padded sentence length of the probe's input (zeros: padding ids)


def files(folder: Path) -> list[tuple[str, Path]]:
    """(runtime, path) of every file the runner probes for a variant."""
    out = [("onnxruntime", p) for p in sorted(folder.glob("model*.onnx"))]
    if (folder / "weights.msz").is_file():
        out += [("torch", folder / "weights.msz"), ("modelshrink.runtime", folder / "weights.msz")]
    return out


def probe(runtime: str, path: Path) -> dict[str, Any]:
    return peak_rss_mb(runtime, path, (256, LENGTH), "int64")


def run() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folder", type=Path, required=True, help="a model folder of a run (models/<variant>-seed<N>)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--at-once", type=int, default=2)
    args = ap.parse_args()
    todo = files(args.folder)
    if not todo:
        raise SystemExit(f"error: {args.folder} holds no model*.onnx or weights.msz; pass a run's models/<name> folder")
    serial: dict[int, list[dict[str, Any]]] = {i: [] for i in range(len(todo))}
    together: dict[int, list[dict[str, Any]]] = {i: [] for i in range(len(todo))}
    t0 = time.perf_counter()
    for _ in range(args.repeats):
        for i, (rt, p) in enumerate(todo):
            serial[i].append(probe(rt, p))
        with cf.ThreadPoolExecutor(args.at_once) as pool:
            futures = {i: pool.submit(probe, rt, p) for i, (rt, p) in enumerate(todo)}
            for i, fut in futures.items():
                together[i].append(fut.result())
    cores = os.cpu_count()
    cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"], capture_output=True,
                         text=True).stdout.strip()  # fmt: skip
    print(f"{len(todo)} files x {args.repeats} repeats, one at a time and {args.at_once} at once; {cores} cores "
          f"({cpu or 'cpu unknown'}); {time.perf_counter() - t0:.0f} s")  # fmt: skip
    print(f"{'file':28} {'runtime':20} {'cold 1 (s)':>10} {'cold N (s)':>10} {'ratio':>6} {'MiB 1':>7} {'MiB N':>7}")
    out = []
    for i, (rt, p) in enumerate(todo):
        c1 = statistics.median(r["cold_start_s"] for r in serial[i])
        cn = statistics.median(r["cold_start_s"] for r in together[i])
        m1 = statistics.median(r["peak_rss_mb"] for r in serial[i])
        mn = statistics.median(r["peak_rss_mb"] for r in together[i])
        print(f"{p.name:28} {rt:20} {c1:>10.3f} {cn:>10.3f} {cn / c1:>6.2f} {m1:>7.1f} {mn:>7.1f}")
        out.append({"file": p.name, "runtime": rt, "cold_start_s_serial": c1, "cold_start_s_together": cn,
                    "peak_rss_mb_serial": m1, "peak_rss_mb_together": mn})  # fmt: skip
    print(json.dumps({"benchmark": "probe_overlap", "at_once": args.at_once, "repeats": args.repeats, "files": out}))


if __name__ == "__main__":
    run()
