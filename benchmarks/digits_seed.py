"""Time `modelshrink run --task digits --preset seed` end to end, offline (issue 8: ≤ 3 minutes on 2 cores).

Usage: PYTHONPATH=src python benchmarks/digits_seed.py [OUT_FOLDER]
Prints the wall and CPU time and the summary table the run wrote. The seed preset's LSTM reads text,
so `--task digits` runs the image default model (cnn-small) with the seed preset's variants.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from modelshrink.cli import main


def run(out: Path) -> tuple[float, float]:
    """Wall seconds and CPU seconds (all threads of this process) of the run."""
    t0, c0 = time.perf_counter(), time.process_time()
    code = main(["run", "--task", "digits", "--preset", "seed", "--out", str(out)])
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    if code != 0:
        raise SystemExit(f"modelshrink run exited with {code}")
    return seconds, cpu


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tmp) / "digits-seed"
        seconds, cpu = run(out)
        print((out / "summary.md").read_text())
        # On a shared machine the wall time includes waiting for other processes; CPU time does not
        # (it is the work done, summed over threads: wall time alone on 2 cores is at most about this).
        print(f"modelshrink run --task digits --preset seed: {seconds:.1f} s wall, {cpu:.1f} s CPU (limit 180 s)")
