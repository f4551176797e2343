"""Latency and peak memory of every artifact of the `seed` preset's variants.

Prints the table of the summary's "Latency and memory" section: per variant and artifact
(ONNX float32/float16/int8 in ONNX Runtime, the compact file in PyTorch), median (p90) ms
at batch 1 and 256 with 1 and all threads, samples per second and peak resident memory,
and where ONNX Runtime's int8 is slower than float32.

    # from a finished run folder (e.g. `modelshrink run --preset seed --out runs/seed`):
    .venv/bin/python benchmarks/latency.py runs/seed
    # or run the seed preset (seed 0) first, into --out:
    MODELSHRINK_DATA=path/to/emotions.csv .venv/bin/python benchmarks/latency.py --out runs/seed0

Wall-clock figures: run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from modelshrink.config import parse_config, read_preset
from modelshrink.report.tables import latency_section
from modelshrink.runner.run import Runner
from modelshrink.store import ResultStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", type=Path, help="a run folder holding results.sqlite")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-latency"), help="where to run the preset")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", default=None, help="emotions.csv (default: $MODELSHRINK_DATA, cache, Hub)")
    args = parser.parse_args()

    t0 = time.perf_counter()
    if args.folder is None:
        raw = read_preset("seed") | {"seeds": [args.seed]}
        if args.data:
            raw["data"] = {**raw.get("data", {}), "path": args.data}
        Runner(parse_config(raw, "preset 'seed'"), args.out).run()
        folder = args.out
    else:
        folder = args.folder
    with ResultStore(folder / "results.sqlite") as store:
        rows = store.rows()
    print(f"# {folder}: {len(rows)} rows, {os.cpu_count()} CPU cores")
    print("\n".join(latency_section(rows)))
    print(f"\nwall {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
