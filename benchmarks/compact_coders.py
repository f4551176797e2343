"""The compact file's entropy coders, before and after byte-shuffle + zstd, on the seed preset's files.

Runs the seed preset's variants on the real emotion data (one seed; training shortened: the weights keep the
reference model's shapes, their statistics are those of a briefly trained model), then rewrites each
variant's weights.msz with each coder set, per tensor the smallest:

    before  none | zstd | huffman          (format version 2's writer)
    after   none | zstd | shuffle_zstd     (this version's writer)
    all     none | zstd | shuffle_zstd | huffman

and prints per file and set: bytes, encode seconds, decode seconds (load_compact, best of 3) and the peak RSS
of a fresh process that imports modelshrink and loads the file (its own baseline subtracted).

    MODELSHRINK_DATA=path/to/emotions.csv .venv/bin/python benchmarks/compact_coders.py [--epochs 2]
    .venv/bin/python benchmarks/compact_coders.py --files RUN/models/*-seed0/weights.msz   # an existing run's files
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import zstandard

from modelshrink.config import parse_config, read_preset
from modelshrink.export import compact, compact_codec
from modelshrink.runner import measure as measure_variant
from modelshrink.runner.run import Runner
from modelshrink.runtime import container
from modelshrink.runtime.codec import entropy_decode

SETS = {
    "before": ("none", "zstd", "huffman"),
    "after": ("none", "zstd", "shuffle_zstd"),
    "all": ("none", "zstd", "shuffle_zstd", "huffman"),
}
# VmHWM (the peak resident set of this process's memory image), not ru_maxrss: ru_maxrss survives exec and so
# reports the forking parent's size when that was larger.
RSS = "from modelshrink.export.compact import load_compact;{load}" + (
    "print(next(int(ln.split()[1]) for ln in open('/proc/self/status') if ln.startswith('VmHWM')))"
)


def recode(src: Path, dst: Path, coders: tuple[str, ...]) -> tuple[int, float]:
    """`src` rewritten with `coders` (same tensors, same raw blobs); returns (bytes, encode seconds)."""
    data = src.read_bytes()
    header, start = container.parse_header(data, src)
    header.pop("graph", None)  # the recoded file holds the tensors only: the coders are what is compared
    payload = data[start:]
    blobs, entries, offset, seconds = [], [], 0, 0.0
    for e in header["tensors"]:
        blob = payload[e["offset"] : e["offset"] + e["nbytes"]]
        raw = entropy_decode(e["entropy"], blob, e["raw_nbytes"], int(e.get("lanes", 1)))
        e = {k: v for k, v in e.items() if k != "lanes"}
        lanes = compact_codec._lanes(e, e)
        t0 = time.perf_counter()
        name, coded = compact_codec.entropy_code(raw, lanes, coders)
        seconds += time.perf_counter() - t0
        e.update(entropy=name, offset=offset, nbytes=len(coded), **({"lanes": lanes} if name == "shuffle_zstd" else {}))
        entries.append(e)
        blobs.append(coded)
        offset += len(coded)
    body = b"".join(blobs)
    header.update(tensors=entries, payload={"bytes": len(body), "sha256": hashlib.sha256(body).hexdigest()})
    hjson = zstandard.ZstdCompressor(level=19, write_content_size=True).compress(json.dumps(header).encode())
    prelude = container.PRELUDE.pack(container.MAGIC, container.FORMAT_VERSION, 0, len(hjson), zlib.crc32(hjson))
    dst.write_bytes(prelude + hjson + body)
    return dst.stat().st_size, seconds


def decode_seconds(path: Path) -> float:
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        compact.load_compact(path)
        best = min(best, time.perf_counter() - t0)
    return best


def peak_rss_kib(path: Path | None) -> int:
    load = f"load_compact({str(path)!r});" if path else ""
    out = subprocess.run([sys.executable, "-c", RSS.format(load=load)], capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2, help="baseline epochs; each technique fine-tunes 1 epoch")
    parser.add_argument("--data", default=None, help="emotions.csv (default: $MODELSHRINK_DATA, cache, Hub)")
    parser.add_argument("--files", type=Path, nargs="+", help="measure these compact files instead of training")
    args = parser.parse_args()
    base_rss = peak_rss_kib(None)
    print(f"peak RSS of importing modelshrink alone: {base_rss / 1024:.1f} MiB (subtracted below)")
    print(f"{'file':28} {'set':7} {'bytes':>10} {'encode s':>9} {'decode s':>9} {'RSS +MiB':>9}  coders picked")
    if args.files:
        with tempfile.TemporaryDirectory() as tmp:
            for src in args.files:
                measure(src, src.parent.name, Path(tmp), base_rss)
        return
    preset = read_preset("seed")
    variants = [{**v, "steps": [{**s, "epochs": 1} if "epochs" in s else s for s in v["steps"]]}
                for v in preset["variants"]]  # fmt: skip
    for v in variants:  # the polynomial schedule must end within the one epoch
        for s in v["steps"]:
            if s.get("schedule") == "polynomial":
                s.update(begin_step=0, end_step=300, frequency=50)
    cfg = parse_config({"data": {"task": "emotion", **({"path": args.data} if args.data else {})},
                        "train": {"epochs": args.epochs}, "seeds": [0], "variants": variants})  # fmt: skip
    measure_variant.LATENCY_BUDGET_S = 0.01
    measure_variant.MEASURE_MEMORY = False
    with tempfile.TemporaryDirectory() as tmp:
        rows = Runner(cfg, Path(tmp) / "run", log=lambda m: None).run()
        for row in rows:
            src = Path(tmp) / "run" / "models" / f"{row['variant']}-seed0" / "weights.msz"
            if src.is_file():
                measure(src, row["variant"], Path(tmp), base_rss)


def measure(src: Path, label: str, tmp: Path, base_rss: int) -> None:
    """One line per coder set for the compact file `src`."""
    for name, coders in SETS.items():
        dst = tmp / f"{label}-{name}.msz"
        size, enc = recode(src, dst, coders)
        picked = sorted({e["entropy"] for e in compact.read_compact_header(dst)["tensors"]})
        rss = (peak_rss_kib(dst) - base_rss) / 1024
        print(f"{label:28} {name:7} {size:>10,} {enc:>9.3f} {decode_seconds(dst):>9.3f} {rss:>9.1f}  "
              f"{','.join(picked)}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
