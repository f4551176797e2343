"""The fuzzer's pieces: seed files, hypothesis strategies that damage them, and the bounds each example runs under.

Every example must end in success or in the project's own error (modelshrink.errors.ModelshrinkError), within
TIME_LIMIT_S seconds and MEMORY_LIMIT bytes of allocation: the tracemalloc peak (Python objects, numpy's and
bytes' buffers) and the rise of the process's peak RSS (torch's allocator, which tracemalloc does not see). `make test` runs EXAMPLES examples per target with a fixed seed (derandomize);
`make fuzz` runs MODELSHRINK_FUZZ_EXAMPLES of them with fresh randomness.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import os
import resource
import signal
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml
import zstandard
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from modelshrink.runtime.container import PRELUDE

EXAMPLES = int(os.environ.get("MODELSHRINK_FUZZ_EXAMPLES", "0")) or None  # None: the profile's bounded count
TIME_LIMIT_S = 10.0  # one example; a hang ends here (SIGALRM) and fails the test
MEMORY_LIMIT = 256 << 20  # tracemalloc peak of one example

settings.register_profile(
    "ci", max_examples=60, derandomize=True, deadline=None, database=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)  # fmt: skip
settings.register_profile(
    "fuzz", max_examples=EXAMPLES or 2000, derandomize=False, deadline=None, database=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)  # fmt: skip
PROFILE = "fuzz" if EXAMPLES else "ci"


def fuzz_settings(ci_examples: int) -> settings:
    """`make test`: `ci_examples` fixed-seed examples; `make fuzz`: MODELSHRINK_FUZZ_EXAMPLES random ones."""
    return settings(settings.get_profile(PROFILE), max_examples=EXAMPLES or ci_examples)


COUNTS: dict[str, int] = {}  # target → examples run in this session (for docs/reliability.md)


class Hang(Exception):
    """An example ran past TIME_LIMIT_S."""


@contextlib.contextmanager
def bounded(target: str) -> Iterator[None]:
    """Run one example under the time and memory bounds; count it."""

    def alarm(_sig: int, _frame: object) -> None:
        raise Hang(f"example ran past {TIME_LIMIT_S} s")

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, TIME_LIMIT_S)
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        COUNTS[target] = COUNTS.get(target, 0) + 1
    assert peak <= MEMORY_LIMIT, f"example allocated {peak:,} bytes at its peak, over the {MEMORY_LIMIT:,} limit"
    grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_before  # torch's allocations too
    assert grew <= MEMORY_LIMIT, f"example raised the process's peak memory by {grew:,} bytes"


# -- compact files --------------------------------------------------------------------------------------
@functools.cache
def seed_files() -> dict[str, bytes]:
    """Real small .msz files, one per encoding the writer chooses: dense, pruned (positions), clustered
    (codebook), int8; each carries its ONNX graph, so the torch-free runtime loads it too."""
    import tempfile

    import torch

    from modelshrink.export.compact import int8_weight_only, save_model
    from modelshrink.models.builders import ModelConfig, build_model

    cfg = ModelConfig(name="mlp", hidden=8, image_size=4)
    pre = {"kind": "image", "mean": [0.5], "std": [0.25], "labels": ["x", "y", "z"]}
    out: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("dense", "pruned", "clustered", "int8"):
            torch.manual_seed(0)
            model = build_model(cfg, 1, 3)
            quantized = None
            with torch.no_grad():
                for p in model.parameters():
                    if kind == "pruned":
                        p.mul_(torch.rand_like(p) < 0.2)
                    elif kind == "clustered":
                        p.copy_(torch.round(p * 2) / 2)
            if kind == "int8":
                quantized = int8_weight_only(model)
            path = Path(tmp) / f"{kind}.msz"
            save_model(model, path, cfg.model_dump(mode="json"), 1, ["x", "y", "z"], pre, quantized,
                       example_input=torch.zeros(1, 1, 4, 4))  # fmt: skip
            out[kind] = path.read_bytes()
    return out


def split(data: bytes) -> tuple[int, dict[str, Any], bytes]:
    """(version, header JSON, payload) of a well-formed compact file."""
    _magic, version, _flags, hlen, _crc = PRELUDE.unpack_from(data)
    header = json.loads(zstandard.ZstdDecompressor().decompress(data[PRELUDE.size : PRELUDE.size + hlen]))
    return version, header, data[PRELUDE.size + hlen :]


def seal(version: int, header: Any, payload: bytes, fix_sha: bool = True) -> bytes:
    """A compact file of this header and payload with valid checksums (so the damage reaches the decoder)."""
    import hashlib

    if fix_sha and isinstance(header, dict) and isinstance(header.get("payload"), dict):
        header["payload"]["sha256"] = hashlib.sha256(payload).hexdigest()
    raw = zstandard.ZstdCompressor().compress(json.dumps(header).encode())
    return PRELUDE.pack(b"MSHK", version, 0, len(raw), zlib.crc32(raw)) + raw + payload


EXTREME_INTS = [0, 1, -1, 2, 3, 7, 8, 9, 16, 63, 64, 65, 255, 256, 257, 2**31 - 1, 2**31, 2**32, 2**63 - 1, 2**63,
                10**12, -(2**63), 10**30]  # fmt: skip
EXTREMES = st.one_of(
    st.sampled_from(EXTREME_INTS),
    st.integers(),
    st.sampled_from(
        [
            None,
            True,
            False,
            "",
            "float32",
            "int8",
            "bfloat16",
            "bitmask",
            "delta",
            "all",
            "codebook",
            "raw",
            "zstd",
            "shuffle_zstd",
            "huffman",
            "none",
            [],
            {},
            [10**6, 10**6],
            [0],
            [-1, 4],
            [2**31, 2**31],
            0.5,
            float("nan"),
        ]
    ),  # fmt: skip
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
    st.lists(st.sampled_from(EXTREME_INTS), max_size=4),
)
TENSOR_KEYS = ["name", "dtype", "shape", "offset", "nbytes", "raw_nbytes", "positions", "values", "entropy", "nnz",
               "index_bits", "k", "bits", "lanes", "quant", "axis", "channels"]  # fmt: skip
META_PATHS = [("meta", "input_dim"), ("meta", "labels"), ("meta", "model"), ("meta", "model", "hidden"),
              ("meta", "model", "name"), ("meta", "preprocessing"), ("meta", "preprocessing", "kind"),
              ("meta", "preprocessing", "mean"), ("meta", "weights"), ("payload", "bytes"), ("graph",),
              ("graph", "offset"), ("graph", "nbytes"), ("graph", "raw_nbytes"), ("graph", "external"), ("tensors",),
              ("meta",), ("version",)]  # fmt: skip


def _set(doc: Any, path: tuple[Any, ...], value: Any) -> None:
    for key in path[:-1]:
        if isinstance(doc, dict) and key in doc:
            doc = doc[key]
        elif isinstance(doc, list) and isinstance(key, int) and -len(doc) <= key < len(doc):
            doc = doc[key]
        else:
            return
    if isinstance(doc, dict):
        doc[path[-1]] = value
    elif isinstance(doc, list) and isinstance(path[-1], int) and -len(doc) <= path[-1] < len(doc):
        doc[path[-1]] = value


@st.composite
def damaged_msz(draw: st.DrawFn) -> bytes:
    """A real small .msz, damaged one of several ways (raw bytes, or a resealed header / payload)."""
    seeds = seed_files()
    data = seeds[draw(st.sampled_from(sorted(seeds)))]
    how = draw(st.sampled_from(["flip", "truncate", "insert", "prelude", "header", "header", "header", "payload"]))
    if how == "flip":
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, len(data) - 1))
            data = data[:i] + bytes([data[i] ^ (1 << draw(st.integers(0, 7)))]) + data[i + 1 :]
        return data
    if how == "truncate":
        return data[: draw(st.integers(0, len(data) - 1))]
    if how == "insert":
        i = draw(st.integers(0, len(data)))
        return data[:i] + draw(st.binary(min_size=1, max_size=64)) + data[i:]
    if how == "prelude":  # version, flags, header length, CRC set to extremes
        fields = list(PRELUDE.unpack_from(data))
        i = draw(st.integers(1, 4))
        fields[i] = draw(st.sampled_from([0, 1, 2, 3, 4, 0xFFFF] if i < 3 else [0, 1, 2**31, 2**32 - 1, len(data)]))
        return PRELUDE.pack(*fields) + data[PRELUDE.size :]
    version, header, payload = split(data)
    if how == "payload":  # bytes of the blobs damaged, the SHA-256 made to match
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, len(payload) - 1))
            payload = payload[:i] + bytes([draw(st.integers(0, 255))]) + payload[i + 1 :]
        return seal(version, header, payload)
    for _ in range(draw(st.integers(1, 3))):  # header fields set to extremes, checksums made valid
        tensors = header.get("tensors")  # an earlier mutation may have replaced the list itself
        if draw(st.booleans()) and isinstance(tensors, list) and tensors:
            path: tuple[Any, ...] = ("tensors", draw(st.integers(0, len(tensors) - 1)),
                                     draw(st.sampled_from(TENSOR_KEYS)))  # fmt: skip
        else:
            path = draw(st.sampled_from(META_PATHS))
        _set(header, path, draw(EXTREMES))
    return seal(draw(st.sampled_from([version, version, 2, 3])), header, payload)


# -- configs --------------------------------------------------------------------------------------------
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.sampled_from(EXTREME_INTS),
    st.floats(), st.text(max_size=12),
    st.sampled_from(["baseline", "prune.magnitude", "cluster.kmeans", "quant.int8_dynamic", "lstm", "cnn",
                     "text-csv", "digits", "auto", "cuda", "scratch", "1e400", ".inf", "~", "custom"]),
)  # fmt: skip
KEYS = st.one_of(st.text(max_size=10), st.sampled_from([
    "data", "model", "train", "seeds", "variants", "latency_threads", "name", "steps", "kind", "start", "epochs",
    "batch_size", "lr", "patience", "threads", "device", "path", "task", "subsample", "hidden", "embed_dim",
    "final_sparsity", "clusters", "build", "weights", "from_weights", "text_column", "label_column",
]))  # fmt: skip
TREES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(KEYS, inner, max_size=5)),
    max_leaves=20,
)


@functools.cache
def preset_texts() -> dict[str, tuple[str, dict[str, Any]]]:
    """Each packaged preset's text and its parsed mapping."""
    from importlib import resources

    from modelshrink.config import preset_names

    texts = {n: resources.files("modelshrink.presets").joinpath(f"{n}.yaml").read_text() for n in preset_names()}
    return {n: (t, yaml.load(t, Loader=_LOADER) or {}) for n, t in texts.items()}


_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # generation only: the parser under test is the project's
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


@st.composite
def yaml_texts(draw: st.DrawFn) -> str:
    """YAML text: a random tree dumped, a real preset with a value or a character changed, or random text."""
    how = draw(st.sampled_from(["tree", "tree", "preset-value", "preset-text", "text"]))
    if how == "tree":
        return yaml.dump(draw(st.dictionaries(KEYS, TREES, max_size=5)), Dumper=_DUMPER, allow_unicode=True)
    presets = preset_texts()
    text, parsed = presets[draw(st.sampled_from(sorted(presets)))]
    if how == "preset-value":  # a value of the parsed preset replaced by a random subtree
        doc = copy.deepcopy(parsed)
        paths = list(_paths(doc))
        if paths:
            _set(doc, draw(st.sampled_from(paths)), draw(TREES))
        return yaml.dump(doc, Dumper=_DUMPER, allow_unicode=True)
    if how == "preset-text":  # characters of the preset's text replaced, removed or inserted
        for _ in range(draw(st.integers(1, 5))):
            i = draw(st.integers(0, len(text)))
            text = text[:i] + draw(st.text(max_size=3)) + text[i + draw(st.integers(0, 3)) :]
        return text
    return draw(st.text(max_size=200))


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    for k, v in items:
        yield (*prefix, k)
        yield from _paths(v, (*prefix, k))


def only_own_errors(fn: Callable[[], object]) -> None:
    """Run fn; anything but success or a ModelshrinkError (the user's one-line, exit-2 errors) fails."""
    from modelshrink.errors import ModelshrinkError

    with contextlib.suppress(ModelshrinkError):
        fn()
