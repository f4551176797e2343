"""The shipped compact file in the torch-free runtime: bytes, cold start, peak RSS, latency, against the floors.

For every `weights.msz` under a run folder (or the files given), in a fresh process each, the way
an app uses it: import the runtime (numpy, zstandard, onnxruntime and modelshrink.runtime, each
timed apart with the RSS after it, so what dominates is named), load the file (decode the weights,
build the ONNX Runtime session), classify ONE sentence with `Session.predict` (tokenizer included):
cold start = import + load + that first prediction (wall seconds, and the process's CPU seconds, which a
loaded machine inflates far less than wall time). Then the same process classifies a realistic
batch (`--batch` sentences, default 32, from `--texts` / $MODELSHRINK_DATA's text column, else a
built-in list): peak RSS = VmHWM of that process. Batch 256 belongs to latency, not to "loads and
classifies": latency at batch 1 and 256 is timed in this process (median, 1 thread). Each cheap
fix is a `--variant`: `default`, `no-arena` (ONNX Runtime without its CPU memory arena and memory
patterns). A version-2 file is re-saved as version 3 first (`--upgrade-to DIR`, same weights).
Floors (issue 15): file <= 40 KB, peak RSS <= 80 MB, cold start <= 0.5 s (on 2 cores).

    python benchmarks/runtime_ship.py runs/best [--batch 32] [--repeats 3] [--variant default no-arena]
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from modelshrink import runtime
from modelshrink.runtime.container import read_compact_file

FLOOR_BYTES, FLOOR_RSS_MB, FLOOR_COLD_S = 40_000, 80.0, 0.5
SENTENCE = "i feel really happy and grateful for my friends today"
FALLBACK = [SENTENCE, "im feeling a little nervous about tomorrow", "i feel so angry that nobody listened",
            "i was surprised how much i loved it", "i feel lonely and sad tonight"]  # fmt: skip

# The fresh process; argv: path arena(0/1) texts.json. Runs this module's code, never the file's.
_CHILD = r"""
import time
t0 = time.perf_counter()
import json, sys
def rss(key="VmRSS"):
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith(key + ":")) / 1024
out = {"rss_start_mb": rss()}
t = time.perf_counter()
import numpy
out["numpy_s"], out["rss_numpy_mb"] = time.perf_counter() - t, rss()
t = time.perf_counter()
import zstandard
out["zstandard_s"], out["rss_zstandard_mb"] = time.perf_counter() - t, rss()
t = time.perf_counter()
import onnxruntime
out["onnxruntime_s"], out["rss_onnxruntime_mb"] = time.perf_counter() - t, rss()
t = time.perf_counter()
from modelshrink import runtime
from modelshrink.runtime import session as _session
out["modelshrink_runtime_s"], out["rss_imported_mb"] = time.perf_counter() - t, rss()
t1 = time.perf_counter()
out["import_s"] = t1 - t0
sess = runtime.load(sys.argv[1], threads=1, arena=sys.argv[2] == "1")
t2 = time.perf_counter()
out["load_s"], out["rss_loaded_mb"] = t2 - t1, rss()
first = sess.predict([__SENTENCE__]).labels[0]
t3 = time.perf_counter()
out["first_s"], out["cold_start_s"], out["rss_first_mb"] = t3 - t2, t3 - t0, rss("VmHWM")
out["cold_cpu_s"] = time.process_time()  # CPU seconds of the whole process so far (interpreter start-up included)
texts = json.load(open(sys.argv[3]))
sess.predict(texts)
out["peak_rss_mb"], out["batch"] = rss("VmHWM"), len(texts)
out["torch_imported"] = "torch" in sys.modules
print(json.dumps(out))
""".replace("__SENTENCE__", repr(SENTENCE))
VARIANTS = {"default": True, "no-arena": False}


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


def batch_texts(source: Path | None, n: int) -> list[str]:
    """`n` sentences: the first `n` of the CSV's `text` column, or the built-in list repeated."""
    if source is not None and source.is_file():
        with source.open(newline="") as f:
            texts = [row["text"] for row in itertools.islice(csv.DictReader(f), n)]
        if texts:
            return texts
    return [FALLBACK[i % len(FALLBACK)] for i in range(n)]


def fresh_process(path: Path, arena: bool, texts_file: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    argv = [sys.executable, "-c", _CHILD, str(path), "1" if arena else "0", str(texts_file)]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


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


def dominant(med: dict[str, float]) -> str:
    """What dominates cold start and peak RSS, from the child's timed parts."""
    parts = {k: med[f"{k}_s"] for k in ("numpy", "zstandard", "onnxruntime", "modelshrink_runtime", "load", "first")}
    top = max(parts, key=parts.__getitem__)
    rss = {"interpreter": med["rss_start_mb"], "numpy": med["rss_numpy_mb"] - med["rss_start_mb"],
           "onnxruntime": med["rss_onnxruntime_mb"] - med["rss_zstandard_mb"],
           "session+batch": med["peak_rss_mb"] - med["rss_imported_mb"]}  # fmt: skip
    top_rss = max(rss, key=rss.__getitem__)
    return f"cold: {top} {parts[top]:.2f} s; RSS: {top_rss} {rss[top_rss]:.0f} MB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="+", type=Path, help="run folders or .msz files")
    ap.add_argument("--upgrade-to", type=Path, default=Path("/tmp/modelshrink-v3"), help="where v2 files are re-saved")
    ap.add_argument("--repeats", type=int, default=3, help="fresh processes per file (median)")
    ap.add_argument("--batch", type=int, default=32, help="sentences classified after the first (peak RSS)")
    ap.add_argument("--texts", type=Path, default=None, help="CSV with a text column (default: $MODELSHRINK_DATA)")
    ap.add_argument("--variant", nargs="+", choices=sorted(VARIANTS), default=["default", "no-arena"])
    args = ap.parse_args()
    files = sorted(f for p in args.paths for f in ([p] if p.is_file() else p.rglob("weights.msz")))
    env_data = os.environ.get("MODELSHRINK_DATA")
    texts_file = args.upgrade_to / "batch_texts.json"
    texts_file.parent.mkdir(parents=True, exist_ok=True)
    texts_file.write_text(json.dumps(batch_texts(args.texts or (Path(env_data) if env_data else None), args.batch)))
    print(f"| file | variant | bytes | cold start s (CPU s) (import: numpy / zstd / ort / runtime; load; first) | peak RSS MB "
          f"(imported / batch {args.batch}) | ms b1 | ms b256 | dominant | floors |")  # fmt: skip
    print("|---|---|---:|---|---|---:|---:|---|---|")
    for f in files:
        header, _ = read_compact_file(f)
        if header["version"] < 3:
            f = upgrade(f, args.upgrade_to)
        size = f.stat().st_size
        for variant in args.variant:
            arena = VARIANTS[variant]
            res = [fresh_process(f, arena, texts_file) for _ in range(args.repeats)]
            assert not any(r["torch_imported"] for r in res)  # internal: the runtime child never imports torch
            med = {k: statistics.median(r[k] for r in res) for k in res[0] if k != "torch_imported"}
            session = runtime.load(f, threads=1, arena=arena)
            pre = session.meta["preprocessing"]
            shape = (int(pre["tokenizer"]["max_len"]),) if pre["kind"] == "text" else tuple(pre["shape"])
            dtype = "int64" if pre["kind"] == "text" else "float32"
            ok = size <= FLOOR_BYTES and med["peak_rss_mb"] <= FLOOR_RSS_MB and med["cold_start_s"] <= FLOOR_COLD_S
            print(f"| {f.parent.name} | {variant} | {size:,} | {med['cold_start_s']:.3f} ({med['cold_cpu_s']:.3f}) ({med['numpy_s']:.3f} / "
                  f"{med['zstandard_s']:.3f} / {med['onnxruntime_s']:.3f} / {med['modelshrink_runtime_s']:.3f}; "
                  f"{med['load_s']:.3f}; {med['first_s']:.3f}) | {med['peak_rss_mb']:.1f} "
                  f"({med['rss_imported_mb']:.1f} / {med['peak_rss_mb'] - med['rss_imported_mb']:.1f}) | "
                  f"{latency_ms(session, 1, shape, dtype):.3f} | {latency_ms(session, 256, shape, dtype):.2f} | "
                  f"{dominant(med)} | {'met' if ok else 'not met'} |")  # fmt: skip


if __name__ == "__main__":
    main()
