"""The compact file's entropy coders on the seed preset's files, and an ANS coder for codebook indices.

Runs the seed preset's variants on the real emotion data (one seed; training shortened: the weights keep the
reference model's shapes, their statistics are those of a briefly trained model), or takes an existing run's
files (--files), then rewrites each weights.msz with the writer's coders (none | zstd | shuffle_zstd, per tensor
the smallest) and prints per file: bytes, encode seconds, decode seconds (load_compact, best of 3) and the peak
RSS of a fresh process that imports modelshrink and loads the file (its own baseline subtracted).

--ans (needs `pip install constriction`, which the project does not depend on) adds, per tensor holding sub-byte
codebook indices, the bytes with those indices coded by constriction's ANS coder under their own frequencies
(4 bytes per frequency stored; the rest of the blob as the writer codes it), the entropy bound, the bytes of zstd
over the same indices stored one per byte (not a coding this format version has), and ANS's encode/decode times
against zstd's decode, plus the peak RSS importing constriction adds to the runtime's codec.

Version 2's writer (none | zstd | huffman) is measured by this script as of commit 4bf0934, before the Huffman
encoder was removed (docs/compact-format.md has its figures).

    MODELSHRINK_DATA=path/to/emotions.csv .venv/bin/python benchmarks/compact_coders.py [--epochs 2] [--ans]
    .venv/bin/python benchmarks/compact_coders.py --files RUN/models/*-seed0/weights.msz [--ans]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import zstandard

from modelshrink.config import parse_config, read_preset
from modelshrink.export import compact, compact_codec
from modelshrink.runner import timing as measure_timing
from modelshrink.runner.run import Runner
from modelshrink.runtime import container
from modelshrink.runtime.codec import STORAGE, _positions, entropy_decode, unpack_bits

SETS = {"after": compact_codec.ENTROPY_WRITTEN}  # this version's writer
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
    parser.add_argument("--ans", action="store_true", help="also constriction's ANS on codebook indices")
    args = parser.parse_args()
    if args.ans:
        try:
            import constriction  # noqa: F401
        except ImportError:
            raise SystemExit("--ans needs constriction: pip install constriction") from None
        print(f"peak RSS that importing constriction adds to the runtime's codec: {ans_import_rss_mib():.1f} MiB")
    base_rss = peak_rss_kib(None)
    print(f"peak RSS of importing modelshrink alone: {base_rss / 1024:.1f} MiB (subtracted below)")
    print(f"{'file':28} {'set':7} {'bytes':>10} {'encode s':>9} {'decode s':>9} {'RSS +MiB':>9}  coders picked")
    if args.files:
        with tempfile.TemporaryDirectory() as tmp:
            for src in args.files:
                measure(src, src.parent.name, Path(tmp), base_rss)
                if args.ans:
                    measure_ans(src)
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
    measure_timing.LATENCY_BUDGET_S = 0.01
    measure_timing.MEASURE_MEMORY = False
    with tempfile.TemporaryDirectory() as tmp:
        rows = Runner(cfg, Path(tmp) / "run", log=lambda m: None).run()
        for row in rows:
            src = Path(tmp) / "run" / "models" / f"{row['variant']}-seed0" / "weights.msz"
            if src.is_file():
                measure(src, row["variant"], Path(tmp), base_rss)
                if args.ans:
                    measure_ans(src)


def measure(src: Path, label: str, tmp: Path, base_rss: int) -> None:
    """One line per coder set for the compact file `src`."""
    for name, coders in SETS.items():
        dst = tmp / f"{label}-{name}.msz"
        size, enc = recode(src, dst, coders)
        picked = sorted({e["entropy"] for e in compact.read_compact_header(dst)["tensors"]})
        rss = (peak_rss_kib(dst) - base_rss) / 1024
        print(f"{label:28} {name:7} {size:>10,} {enc:>9.3f} {decode_seconds(dst):>9.3f} {rss:>9.1f}  "
              f"{','.join(picked)}", flush=True)  # fmt: skip


def _zstd(raw: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=compact_codec.ZSTD_LEVEL, write_content_size=True).compress(raw)


def _indices(e: dict, raw: bytes) -> tuple[bytes, np.ndarray]:
    """(the blob's bytes before its codebook indices, the indices) of one codebook entry's decoded blob."""
    pre = 4 * int(e["channels"]) if "channels" in e else 0
    item = (STORAGE["int8"] if e.get("quant") else STORAGE[e["dtype"]]).itemsize
    _, m, pos = _positions(e, raw[pre:], math.prod(e["shape"]))
    start = pre + pos + int(e["k"]) * item
    return raw[:start], unpack_bits(raw[start:], m, int(e["bits"])).astype(np.int32)


def measure_ans(path: Path) -> None:
    """Per tensor with sub-byte codebook indices: its bytes now, with ANS-coded indices, and the entropy bound."""
    import constriction

    data = path.read_bytes()
    header, start = container.parse_header(data, path)
    payload, now_total, ans_total = data[start:], 0, 0
    for e in header["tensors"]:
        if e["values"] != "codebook" or int(e["bits"]) >= 8:
            continue
        blob = payload[e["offset"] : e["offset"] + e["nbytes"]]
        t0 = time.perf_counter()
        raw = entropy_decode(e["entropy"], blob, e["raw_nbytes"], int(e.get("lanes", 1)))
        zstd_dec = time.perf_counter() - t0
        rest, idx = _indices(e, raw)
        rest_bytes = min(len(rest), len(_zstd(rest))) if rest else 0
        freq = np.bincount(idx, minlength=int(e["k"])).astype(np.float64)
        t0 = time.perf_counter()
        coder = constriction.stream.stack.AnsCoder()
        coder.encode_reverse(idx, constriction.stream.model.Categorical(freq, perfect=False))
        words = coder.get_compressed()
        enc = time.perf_counter() - t0
        t0 = time.perf_counter()
        model = constriction.stream.model.Categorical(freq, perfect=False)
        back = constriction.stream.stack.AnsCoder(words).decode(model, idx.size)
        dec = time.perf_counter() - t0
        if not np.array_equal(back, idx):
            raise SystemExit(f"{path}: {e['name']}: ANS did not decode its indices back")
        p = freq[freq > 0] / idx.size
        bound = rest_bytes + idx.size * float(-(p * np.log2(p)).sum()) / 8
        ans = rest_bytes + 4 * int(e["k"]) + 4 * len(words)
        byte_idx = len(_zstd(rest + idx.astype(np.uint8).tobytes()))  # indices one per byte, then zstd
        now_total, ans_total = now_total + int(e["nbytes"]), ans_total + min(ans, int(e["nbytes"]))
        print(f"  {e['name'][:30]:30} k={e['k']:>3} bits={e['bits']} now {e['entropy']:12} {e['nbytes']:>8,}  "
              f"ANS {ans:>8,} ({100 * (ans / e['nbytes'] - 1):+.1f} %)  bound {bound:>9,.0f}  "
              f"zstd of byte indices {byte_idx:>8,} ({100 * (byte_idx / e['nbytes'] - 1):+.1f} %)  ANS enc "
              f"{enc * 1e3:.1f} ms dec {dec * 1e3:.1f} ms, zstd dec {zstd_dec * 1e3:.1f} ms", flush=True)  # fmt: skip
    if now_total:
        print(f"  {path.parent.name}: {len(data):,} bytes; ANS where smaller saves {now_total - ans_total:,} bytes "
              f"({100 * (now_total - ans_total) / len(data):.2f} % of the file)", flush=True)  # fmt: skip


def ans_import_rss_mib() -> float:
    code = ("import modelshrink.runtime.codec;{imp}"
            "print(next(int(ln.split()[1]) for ln in open('/proc/self/status') if ln.startswith('VmHWM')))")  # fmt: skip
    rss = [int(subprocess.run([sys.executable, "-c", code.format(imp=imp)], capture_output=True, text=True,
                              check=True).stdout) for imp in ("", "import constriction;")]  # fmt: skip
    return (rss[1] - rss[0]) / 1024


if __name__ == "__main__":
    main()
