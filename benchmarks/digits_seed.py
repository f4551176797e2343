"""Time `modelshrink run --task digits --preset seed` end to end, offline (issue 8: ≤ 3 minutes on 2 cores).

Usage: PYTHONPATH=src python benchmarks/digits_seed.py [OUT_FOLDER] [--threads N]
(--threads N adds `--config` with `train: {threads: N}`: on a machine shared with other jobs,
torch's 2 training threads spin-wait for each other; 1 thread gives a CPU time that estimates
the run alone.)
Prints the wall and CPU time and the summary table the run wrote. The seed preset's LSTM reads text,
so `--task digits` runs the image default model (cnn-small) with the seed preset's variants.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from modelshrink.cli import main


def run(out: Path, threads: int | None = None) -> tuple[float, float]:
    """Wall seconds and CPU seconds (all threads of this process) of the run."""
    argv = ["run", "--task", "digits", "--preset", "seed", "--out", str(out)]
    if threads is not None:
        override = out.parent / f"threads{threads}.yaml"
        override.parent.mkdir(parents=True, exist_ok=True)
        override.write_text(f"train: {{threads: {threads}}}\n")
        argv += ["--config", str(override)]
    t0, c0 = time.perf_counter(), time.process_time()
    code = main(argv)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    if code != 0:
        raise SystemExit(f"modelshrink run exited with {code}")
    return seconds, cpu


if __name__ == "__main__":
    args = sys.argv[1:]
    threads = int(args.pop(args.index("--threads") + 1)) if "--threads" in args else None
    args = [a for a in args if a != "--threads"]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args[0]) if args else Path(tmp) / "digits-seed"
        seconds, cpu = run(out, threads)
        print((out / "summary.md").read_text())
        # On a shared machine the wall time includes waiting for other processes; CPU time does not
        # (it is the work done, summed over threads: wall time alone on 2 cores is at most about this).
        how = f" (train.threads={threads})" if threads else ""
        print(f"modelshrink run --task digits --preset seed{how}: {seconds:.1f} s wall, {cpu:.1f} s CPU (limit 180 s)")
