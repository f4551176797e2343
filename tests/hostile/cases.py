"""The hostile-input corpus: each case makes its input files in a folder and gives the CLI arguments.

Every case must end with exit code 2, one output line that names the value (`value`) and the
remedy (`remedy`), no traceback, and nothing written: the case's folder, which holds an earlier
run folder with its store, is byte-for-byte the same afterwards. docs/reliability.md is the table
of these cases and the messages they produced (tests/hostile/test_corpus.py keeps it current).
"""

from __future__ import annotations

import json
import os
import pickle
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import zstandard
from onnx import TensorProto, helper

from modelshrink.data.synthetic import write_synthetic_csv


@dataclass(frozen=True)
class Case:
    id: str
    group: str
    input: str  # what the hostile input is, for the doc
    make: Callable[[Path], list[str]]  # writes files under the folder, returns the CLI arguments
    value: str  # the message names the value ...
    remedy: str  # ... and what to do


RUN = "run"  # the earlier run folder every case points --out at (its store must stay unchanged)


def _run(d: Path, *args: str) -> list[str]:
    return ["run", "--out", str(d / RUN), "--epochs", "1", *args]


def _csv(content: bytes | str, *args: str) -> Callable[[Path], list[str]]:
    def make(d: Path) -> list[str]:
        p = d / "data.csv"
        p.write_bytes(content if isinstance(content, bytes) else content.encode())
        return _run(d, "--task", "text-csv", "--data", str(p), *args)

    return make


def _good_csv(d: Path) -> Path:
    return write_synthetic_csv(d / "good.csv", 60)


def _yaml(text: str) -> Callable[[Path], list[str]]:
    def make(d: Path) -> list[str]:
        (d / "c.yaml").write_text(text)
        return _run(d, "--task", "text-csv", "--data", str(_good_csv(d)), "--config", str(d / "c.yaml"))

    return make


def _flags(*args: str) -> Callable[[Path], list[str]]:
    return lambda d: _run(d, "--task", "text-csv", "--data", str(_good_csv(d)), *args)


def _model(src: str) -> Callable[[Path], list[str]]:
    def make(d: Path) -> list[str]:
        (d / "m.py").write_text(src)
        return _flags("--model", f"{d / 'm.py'}:build")(d)

    return make


# -- artifacts: a real small .msz, then damaged ---------------------------------------------------------
def real_msz(path: Path) -> Path:
    """A real compact file of a tiny text model, as `modelshrink run` writes it."""
    import torch

    from modelshrink.export.compact import save_model
    from modelshrink.models.builders import ModelConfig, build_model

    cfg = ModelConfig(embed_dim=4, hidden=4)
    torch.manual_seed(0)  # the same bytes every time: the doc quotes sizes from this file
    model = build_model(cfg, 32, 2)
    pre = {"kind": "text", "tokenizer": {"vocab_size": 32, "max_len": 8, "word_index": {"a": 2}}, "labels": ["x", "y"]}
    save_model(model, path, cfg.model_dump(mode="json"), 32, ["x", "y"], pre)
    return path


def _eval(damage: Callable[[bytes], bytes]) -> Callable[[Path], list[str]]:
    def make(d: Path) -> list[str]:
        p = real_msz(d / "model.msz")
        p.write_bytes(damage(p.read_bytes()))
        return ["eval", str(p), "--data", str(_good_csv(d))]

    return make


def _flip(b: bytes) -> bytes:
    i = len(b) * 3 // 4
    return b[:i] + bytes([b[i] ^ 0x10]) + b[i + 1 :]


def _prelude(version: int, header: dict | bytes) -> bytes:
    raw = header if isinstance(header, bytes) else zstandard.ZstdCompressor().compress(json.dumps(header).encode())
    return struct.pack("<4sHHII", b"MSHK", version, 0, len(raw), zlib.crc32(raw)) + raw


def _huge_header(_b: bytes) -> bytes:
    entry = {"name": "w", "dtype": "float32", "shape": [10**6, 10**6], "offset": 0, "nbytes": 4,
             "positions": "dense", "values": "raw", "entropy": "none"}  # fmt: skip
    return _prelude(2, {"meta": {}, "payload": {"size": 4, "sha256": "0" * 64}, "tensors": [entry]}) + b"\0" * 4


def _zstd_bomb(_b: bytes) -> bytes:
    bomb = zstandard.ZstdCompressor(level=3).compress(b"{" + b" " * (128 << 20))  # 128 MB of JSON whitespace
    return _prelude(2, bomb)


# -- ONNX files -----------------------------------------------------------------------------------------
def _onnx_model(inputs: int = 1, outputs: int = 1, init: TensorProto | None = None) -> onnx.ModelProto:
    ins = [helper.make_tensor_value_info(f"x{i}", TensorProto.INT64, [None, 16]) for i in range(inputs)]
    outs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])][:outputs]
    w = init or helper.make_tensor("w", TensorProto.FLOAT, [16, 2], np.zeros(32, np.float32))
    nodes = [
        helper.make_node("Cast", ["x0"], ["xf"], to=TensorProto.FLOAT),
        helper.make_node("MatMul", ["xf", "w"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "g", ins, outs, [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _onnx(model: Callable[[Path], onnx.ModelProto]) -> Callable[[Path], list[str]]:
    def make(d: Path) -> list[str]:
        (d / "m").mkdir()
        p = d / "m" / "model.onnx"
        p.write_bytes(model(d).SerializeToString())
        return _flags("--onnx", str(p))(d)

    return make


def _no_outputs() -> onnx.ModelProto:
    """A graph that computes and outputs nothing; its input takes any row shape, so only the outputs are wrong."""
    x = helper.make_tensor_value_info("x", TensorProto.INT64, [None, None])
    return helper.make_model(helper.make_graph([], "g", [x], []), opset_imports=[helper.make_opsetid("", 17)])


def _external(location: Callable[[Path], str]) -> Callable[[Path], onnx.ModelProto]:
    def model(d: Path) -> onnx.ModelProto:
        (d / "secret").write_bytes(b"\1" * 128)  # what a traversal would read: must never be opened
        w = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[16, 2])
        w.data_location = TensorProto.EXTERNAL
        w.external_data.add(key="location", value=location(d))
        return _onnx_model(init=w)

    return model


def _huge_tensor(_d: Path) -> onnx.ModelProto:
    w = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[10**6, 10**6])  # 4 TB declared, no data
    return _onnx_model(init=w)


# -- image folders --------------------------------------------------------------------------------------
def _images(build: Callable[[Path], None]) -> Callable[[Path], list[str]]:
    def make(d: Path) -> list[str]:
        root = d / "imgs"
        root.mkdir()
        build(root)
        return _run(d, "--task", "image-folder", "--data", str(root), "--model", "cnn")

    return make


def _png(path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (10, 20, 30)).save(path)


def _two_classes(root: Path) -> None:
    for c in ("a", "b"):
        for i in range(3):
            _png(root / c / f"{i}.png")


def _unreadable(root: Path) -> None:
    _two_classes(root)
    (root / "a" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")


def _symlink_loop(root: Path) -> None:
    _two_classes(root)
    os.symlink(root, root / "a" / "loop")
    os.symlink(root / "b" / "x.png", root / "b" / "x.png.lnk.png")  # dangling: itself missing
    os.symlink(root / "b" / "self.png", root / "b" / "self.png")  # a link to itself


def _many_classes() -> str:
    return "text,label\n" + "\n".join(f"word{i} other,c{i}" for i in range(10_000))


def _floats() -> str:
    return "text,label\n" + "\n".join(f"some text {i},{i * 0.37:.3f}" for i in range(60))


def _locked(d: Path) -> list[str]:
    import fcntl

    (d / RUN / ".lock").touch()
    fd = os.open(d / RUN / ".lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another run holds the folder (released at close)
    _LOCKS.append(fd)
    return _flags()(d)


_LOCKS: list[int] = []


def _out_is_file(d: Path) -> list[str]:
    (d / "afile").write_text("x")
    return ["run", "--out", str(d / "afile" / "run"), "--epochs", "1", "--task", "text-csv", "--data",
            str(_good_csv(d))]  # fmt: skip


def _foreign_store(d: Path) -> list[str]:
    (d / "other").mkdir()
    (d / "other" / "results.sqlite").write_bytes(b"not a database at all, but a text file\n" * 10)
    return ["run", "--out", str(d / "other"), "--epochs", "1", "--task", "text-csv", "--data", str(_good_csv(d))]


_LAUGHS = (
    "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    + "".join(f"{b}: &{b} [{', '.join([f'*{a}'] * 10)}]\n" for a, b in zip("abcdefg", "bcdefgh", strict=True))
    + "train: {epochs: *h}\n"
)  # the "billion laughs": 10^8 values from 80 aliases
GOOD_HEAD = "text,label\n"
CASES: list[Case] = [
    # CSVs
    Case("csv-empty", "csv", "an empty file", _csv(b""), "data.csv", "header row"),
    Case("csv-header-only", "csv", "a header and no rows", _csv(GOOD_HEAD), "no data rows", "add"),
    Case("csv-binary", "csv", "random binary bytes", _csv(bytes(range(256)) * 40), "binary", "text CSV"),
    Case(
        "csv-utf16",
        "csv",
        "UTF-16 text",
        _csv("text,label\nhello there,a\nbye now,b\n".encode("utf-16")),
        "UTF-16",
        "UTF-8",
    ),  # fmt: skip
    Case("csv-nul", "csv", "NUL bytes inside a text", _csv(b"text,label\nhel\x00lo,a\nbye,b\n"), "NUL", "text CSV"),
    Case(
        "csv-one-class",
        "csv",
        "every row the same label",
        _csv(GOOD_HEAD + "\n".join(f"text {i},same" for i in range(40))),
        "'same'",
        "at least 2",
    ),  # fmt: skip
    Case(
        "csv-10000-classes",
        "csv",
        "10,000 distinct labels, one row each",
        _csv(_many_classes()),
        "10000 classes",
        "label column",
    ),  # fmt: skip
    Case("csv-float-labels", "csv", "a label column of floats", _csv(_floats()), "floats", "--label-column"),
    Case(
        "csv-empty-texts",
        "csv",
        "every text empty",
        _csv(GOOD_HEAD + "\n".join(f",{'ab'[i % 2]}" for i in range(40))),
        "empty",
        "--text-column",
    ),  # fmt: skip
    Case(
        "csv-100mb-line",
        "csv",
        "a 100 MB line",
        _csv(b"text,label\n" + b"x" * (100 << 20) + b",a\nshort,b\n"),
        "longer than",
        "split",
    ),  # fmt: skip
    Case(
        "csv-unbalanced-quotes",
        "csv",
        "an opening quote never closed",
        _csv(GOOD_HEAD + 'fine,a\n"never closed,b\nmore,a\n'),
        "EOF inside string",
        "quote is closed",
    ),  # fmt: skip
    Case(
        "csv-no-label-column", "csv", "no column named label", _csv("text,cls\na,b\n"), "'label'", "--label-column"
    ),  # fmt: skip
    Case(
        "csv-is-folder",
        "csv",
        "--data a folder",
        lambda d: _run(d, "--task", "text-csv", "--data", str(d)),
        "folder",
        "CSV file",
    ),  # fmt: skip
    Case(
        "csv-missing",
        "csv",
        "--data a file that does not exist",
        lambda d: _run(d, "--task", "text-csv", "--data", str(d / "nope.csv")),
        "nope.csv",
        "existing",
    ),  # fmt: skip
    # configs
    Case("cfg-unknown-key", "config", "a misspelt key", _yaml("train:\n  epochz: 3\n"), "epochz", "spelling"),
    Case(
        "cfg-wrong-type",
        "config",
        "a word where a number goes",
        _yaml("train:\n  batch_size: many\n"),
        "many",
        "integer",
    ),  # fmt: skip
    Case("cfg-negative", "config", "a negative learning rate", _yaml("train:\n  lr: -1\n"), "-1", "greater than"),
    Case("cfg-nan", "config", "a NaN learning rate", _yaml("train:\n  lr: .nan\n"), "nan", "finite decimal"),
    Case("cfg-inf", "config", "an infinite batch size", _yaml("train:\n  batch_size: .inf\n"), "inf", "whole number"),
    Case("cfg-inf-float", "config", "an infinite learning rate", _yaml("train:\n  lr: .inf\n"), "inf", "decimal"),
    Case(
        "cfg-inf-step",
        "config",
        "an infinite cluster count in a step",
        _yaml("variants:\n  - name: v\n    steps: [{kind: cluster.kmeans, clusters: .inf}]\n"),
        "steps.0.clusters",
        "whole number",
    ),  # fmt: skip
    Case(
        "cfg-steps-dict",
        "config",
        "a step list that is a dict",
        _yaml("variants:\n  - name: v\n    steps: {kind: prune.magnitude}\n"),
        "dict",
        "list",
    ),  # fmt: skip
    Case(
        "cfg-unknown-technique",
        "config",
        "a technique that does not exist",
        _yaml("variants:\n  - name: v\n    steps: [{kind: prune.magic}]\n"),
        "prune.magic",
        "known",
    ),  # fmt: skip
    Case(
        "cfg-duplicate-variants",
        "config",
        "two variants with one name",
        _yaml("variants:\n  - {name: v}\n  - {name: v}\n"),
        "v",
        "unique",
    ),  # fmt: skip
    Case("cfg-yaml-bomb", "config", "YAML aliases expanding to 10^8 values", _yaml(_LAUGHS), "100,000", "aliases"),
    Case(
        "cfg-yaml-alias-loop", "config", "a YAML alias inside itself", _yaml("train: &t {x: *t}\n"), "itself", "aliases"
    ),
    Case(
        "cfg-yaml-deep",
        "config",
        "lists nested 1,000 deep",
        _yaml("seeds: " + "[" * 1000 + "]" * 1000),
        "deeply",
        "flatter",
    ),  # fmt: skip
    Case("cfg-no-seeds", "config", "an empty seed list", _yaml("seeds: []\n"), "seeds", "at least 1"),
    Case("cfg-yaml-syntax", "config", "YAML that does not parse", _yaml("train: [1, 2\n"), "c.yaml", "YAML"),
    Case("cfg-yaml-list", "config", "a YAML list at the top", _yaml("- 1\n- 2\n"), "c.yaml", "mapping"),
    Case(
        "cfg-missing-file",
        "config",
        "--config a file that does not exist",
        lambda d: _flags("--config", str(d / "none.yaml"))(d),
        "none.yaml",
        "existing",
    ),  # fmt: skip
    Case("cfg-unknown-preset", "config", "a preset that does not exist", _flags("--preset", "nope"), "nope", "known"),
    Case("flag-jobs-0", "config", "--jobs 0", _flags("--jobs", "0"), "0", "--jobs 1"),
    Case(
        "flag-row-timeout-negative", "config", "--row-timeout -5", _flags("--row-timeout", "-5"), "-5", "positive"
    ),  # fmt: skip
    Case("flag-row-timeout-nan", "config", "--row-timeout nan", _flags("--row-timeout", "nan"), "nan", "positive"),
    # artifacts
    Case(
        "msz-truncated", "artifact", "a .msz cut in half", _eval(lambda b: b[: len(b) // 2]), "truncated", "model.msz"
    ),  # fmt: skip
    Case("msz-bit-flip", "artifact", "a .msz with one bit flipped", _eval(_flip), "checksum", "model.msz"),
    Case(
        "msz-wrong-version",
        "artifact",
        "a .msz of format version 99",
        _eval(lambda b: b[:4] + b"\x63\x00" + b[6:]),
        "99",
        "upgrade",
    ),  # fmt: skip
    Case(
        "msz-pickle",
        "artifact",
        "a pickle named .msz",
        _eval(lambda _b: pickle.dumps({"a": 1})),
        "model.msz",
        "written by modelshrink",
    ),  # fmt: skip
    Case(
        "msz-zstd-bomb", "artifact", "a header that decompresses to 128 MB", _eval(_zstd_bomb), "header", "model.msz"
    ),  # fmt: skip
    Case(
        "msz-huge-tensor",
        "artifact",
        "a header that claims 10^12 elements",
        _eval(_huge_header),
        "model.msz",
        "corrupt",
    ),  # fmt: skip
    Case("msz-empty", "artifact", "an empty .msz", _eval(lambda _b: b""), "model.msz", "truncated"),
    Case(
        "msz-missing",
        "artifact",
        "eval of a file that does not exist",
        lambda d: ["eval", str(d / "no.msz"), "--data", str(_good_csv(d))],
        "no.msz",
        "pass a compact file",
    ),  # fmt: skip
    # models
    Case(
        "model-build-raises",
        "model",
        "build() raising",
        _model("def build(input_dim, num_labels):\n    raise RuntimeError('boom')\n"),
        "boom",
        "m.py",
    ),  # fmt: skip
    Case(
        "model-not-module",
        "model",
        "build() returning a non-Module",
        _model("def build(input_dim, num_labels):\n    return 42\n"),
        "int",
        "nn.Module",
    ),  # fmt: skip
    Case(
        "model-wrong-shape",
        "model",
        "a model whose output has the wrong shape",
        _model(
            "import torch\ndef build(input_dim, num_labels):\n    return torch.nn.Sequential("
            "torch.nn.Embedding(input_dim, 4), torch.nn.Flatten(), torch.nn.LazyLinear(7))\n"
        ),
        "7",
        "must return",
    ),  # fmt: skip
    Case(
        "model-syntax-error", "model", "a model file that does not parse", _model("def build(:\n"), "m.py", "import"
    ),  # fmt: skip
    Case(
        "model-missing-function", "model", "a model file without the function", _model("x = 1\n"), "build", "m.py"
    ),  # fmt: skip
    # ONNX
    Case(
        "onnx-two-inputs", "onnx", "a graph with two inputs", _onnx(lambda _d: _onnx_model(inputs=2)), "2 inputs", "one"
    ),  # fmt: skip
    Case(
        "onnx-no-outputs",
        "onnx",
        "a graph with no outputs",
        _onnx(lambda _d: _no_outputs()),
        "model.onnx",
        "classifier",
    ),  # fmt: skip
    Case(
        "onnx-traversal",
        "onnx",
        "external data at ../../secret",
        _onnx(_external(lambda _d: "../../secret")),
        "../../secret",
        "beside the .onnx",
    ),  # fmt: skip
    Case(
        "onnx-absolute",
        "onnx",
        "external data at an absolute path",
        _onnx(_external(lambda d: str(d / "secret"))),
        "secret",
        "beside the .onnx",
    ),  # fmt: skip
    Case(
        "onnx-huge-tensor",
        "onnx",
        "a tensor declaring 10^12 floats with no data",
        _onnx(_huge_tensor),
        "1000000",
        "corrupt",
    ),  # fmt: skip
    Case("onnx-not-onnx", "onnx", "a text file named .onnx", _onnx(lambda _d: _NotOnnx()), "model.onnx", "pass"),
    # image folders
    Case("images-no-classes", "images", "an empty image folder", _images(lambda _r: None), "0 class", "sub-folder"),
    Case(
        "images-unreadable",
        "images",
        "a file named .png that is not an image",
        _images(_unreadable),
        "bad.png",
        "remove or replace",
    ),  # fmt: skip
    Case(
        "images-symlink-loop",
        "images",
        "a symlink loop and self-links",
        _images(_symlink_loop),
        "loop",
        "remove or replace the link",
    ),  # fmt: skip
    # run folders
    Case("out-locked", "run folder", "a run folder another run holds", _locked, "in use", "wait"),
    Case("out-under-file", "run folder", "--out inside a regular file", _out_is_file, "afile", "--out"),
    Case(
        "out-foreign-store",
        "run folder",
        "a results.sqlite that is not a database",
        _foreign_store,
        "results.sqlite",
        "--out",
    ),  # fmt: skip
]


class _NotOnnx:
    def SerializeToString(self) -> bytes:  # noqa: N802 - as onnx.ModelProto's
        return b"this is plain text, not a protobuf\n" * 3


# Holes this corpus found and that are not fixed yet (issue 18): each case fails today, so it is
# marked xfail(strict=True) and passes the day its hole is fixed, when it must leave this list.
KNOWN_HOLES: dict[str, str] = {}
# Cases not run in the default suite: they do not fail fast today.
SLOW_HOLES: dict[str, str] = {}
