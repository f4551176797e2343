"""How long `write_report` takes for a 50-row store (target: ≤ 10 s on a laptop-class CPU).

Builds a synthetic store (10 variants × 5 seeds, made-up numbers: this times the report,
not a technique), then writes the report three times and prints each time and the median.

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/report_speed.py [--variants 10 --seeds 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from modelshrink.report.html import write_report  # imports matplotlib and jinja2 before the timing
from modelshrink.report.synthetic import write_synthetic_store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp)
        names = ["baseline"] + [f"variant-{i}" for i in range(1, args.variants)]
        write_synthetic_store(run, names, list(range(args.seeds)), failed={names[-1]: "RuntimeError: synthetic"})
        times, cpu = [], []
        for i in range(args.repeat):
            t0, c0 = time.perf_counter(), time.process_time()
            paths = write_report(run)
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
            # CPU time of this process: what the wall time would be with a core to itself.
            print(f"run {i + 1}: {times[-1]:.2f} s wall, {cpu[-1]:.2f} s CPU")
        html = paths[0].stat().st_size
        print(f"rows: {args.variants * args.seeds}; report.html {html / 1024:.0f} KB, {len(paths) - 4} PNG figures")
        print(
            f"median write_report: {statistics.median(times):.2f} s wall, {statistics.median(cpu):.2f} s CPU "
            "(target ≤ 10 s; on a busy machine the CPU time is the fairer figure)"
        )


if __name__ == "__main__":
    main()
