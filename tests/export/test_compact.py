"""The compact format: bit-exact round trips, encoding choice, real ratios, corrupt files."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from modelshrink.errors import ArtifactError
from modelshrink.export import compact_codec
from modelshrink.export.compact import (
    FORMAT_VERSION,
    MAGIC,
    int8_weight_only,
    load_compact,
    read_compact_header,
    save_compact,
)
from modelshrink.runtime.huffman import huffman_decode

N = 100_000


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _dense(n: int = N, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, generator=_gen(seed))


def _pruned(n: int = N, sparsity: float = 0.5, seed: int = 1) -> torch.Tensor:
    w = _dense(n, seed)
    return torch.where(torch.rand(n, generator=_gen(seed + 100)) < sparsity, torch.zeros_like(w), w)


def _clustered(n: int = N, k: int = 16, seed: int = 2) -> torch.Tensor:
    centroids = torch.randn(k, generator=_gen(seed))
    return centroids[torch.randint(0, k, (n,), generator=_gen(seed + 100))]


def _bits_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-for-bit equality: tells -0.0 from 0.0 and compares NaN payloads."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.is_floating_point():
        width = {2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()]
        return torch.equal(a.view(width), b.view(width))
    return torch.equal(a, b)


def _round_trip(state: dict[str, torch.Tensor], path: Path, meta: dict | None = None) -> dict[str, str]:
    """Save and load `state`; assert bit-exact; return name → "positions+values" coding picked."""
    meta = meta or {"model": "test", "n": 1}
    written = save_compact(state, path, meta)
    assert written == path.stat().st_size
    back, meta_back = load_compact(path)
    assert meta_back == meta
    assert list(back) == list(state)
    for name, tensor in state.items():
        assert _bits_equal(back[name], tensor), name
    return {e["name"]: f"{e['positions']}+{e['values']}" for e in read_compact_header(path)["tensors"]}


def test_round_trip_each_encoding(tmp_path: Path) -> None:
    pruned_clustered = _clustered(k=16)
    pruned_clustered[torch.rand(N, generator=_gen(9)) < 0.5] = 0.0
    very_sparse = _pruned(sparsity=0.97)
    state = {
        "dense": _dense().reshape(100, 1000),
        "sparse": _pruned().reshape(1000, 100),
        "very_sparse": very_sparse,
        "clustered": _clustered().reshape(10, 10, 1000),
        "pruned_clustered": pruned_clustered,
        "ids": torch.arange(-50, 50, dtype=torch.int64),
    }
    encodings = _round_trip(state, tmp_path / "m.mshk")
    assert encodings == {
        "dense": "all+raw",
        "sparse": "bitmask+raw",
        "very_sparse": "delta+raw",  # 3% nonzero: gaps of ~6 bits beat a bit per element
        "clustered": "all+codebook",
        "pruned_clustered": "bitmask+codebook",  # 1 bit of mask + 4-bit index for half: 3 bits/element
        "ids": "all+raw",
    }


def test_round_trip_dtypes_and_special_values(tmp_path: Path) -> None:
    special = torch.tensor([0.0, -0.0, float("nan"), float("inf"), -float("inf"), 1e-45, 3.4e38])
    state = {
        "special_dense": special.repeat(3),
        "special_sparse": torch.cat([special, torch.zeros(200)]),  # -0.0 must survive as a value
        "special_codebook": special.repeat(500),
        "f16": _clustered(1000).half(),
        "bf16": _pruned(1000).bfloat16(),
        "f64": _dense(1000).double(),
        "mask": torch.rand(77, generator=_gen(3)) > 0.5,
        "u8": torch.randint(0, 255, (9,), generator=_gen(4), dtype=torch.uint8),
        "i8": torch.tensor([-128, 0, 127], dtype=torch.int8),
        "i32": torch.tensor([[1, 2], [3, 4]], dtype=torch.int32),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 4),
        "all_zero": torch.zeros(300),
        "constant": torch.full((64,), 0.25),
        "non_contiguous": _dense(200).reshape(10, 20).t(),
    }
    encodings = _round_trip(state, tmp_path / "d.mshk", meta={"nested": {"a": [1, 2.5, "x"]}, "none": None})
    assert encodings["special_sparse"].endswith("+codebook") or encodings["special_sparse"].startswith("delta")
    assert encodings["special_codebook"] == "all+codebook"
    assert encodings["constant"] == "all+codebook"  # k = 1: zero index bits


def test_sixteen_values_use_four_bit_codebook(tmp_path: Path) -> None:
    path = tmp_path / "c.mshk"
    save_compact({"w": _clustered(k=16)}, path, {})
    (entry,) = read_compact_header(path)["tensors"]
    assert (entry["positions"], entry["values"]) == ("all", "codebook")
    assert entry["k"] == 16 and entry["bits"] == 4
    assert entry["raw_nbytes"] == 16 * 4 + N // 2  # codebook + 4-bit indices, before entropy coding


@pytest.mark.parametrize(("k", "bits"), [(2, 1), (3, 2), (17, 5), (256, 8)])
def test_index_width_follows_codebook_size(tmp_path: Path, k: int, bits: int) -> None:
    path = tmp_path / "k.mshk"
    values = torch.arange(k, dtype=torch.float32) * 0.37 - 1.0  # k distinct values, none zero
    values[values == 0] = 5.0
    w = values[torch.randperm(4096, generator=_gen(5)) % k]  # each value used
    save_compact({"w": w}, path, {})
    entry = read_compact_header(path)["tensors"][0]
    assert (entry["values"], entry["k"], entry["bits"]) == ("codebook", k, bits)
    assert _bits_equal(load_compact(path)[0]["w"], w)


def test_more_than_256_values_is_not_a_codebook(tmp_path: Path) -> None:
    path = tmp_path / "k.mshk"
    save_compact({"w": _clustered(n=10_000, k=300)}, path, {})
    assert read_compact_header(path)["tensors"][0]["values"] == "raw"


def test_entropy_coding_keeps_the_smallest_and_each_decodes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "e.mshk"
    skewed = torch.where(torch.rand(N, generator=_gen(7)) < 0.9, 0.5, -0.5)  # 1-bit codebook, skewed bits
    state = {"tiny": torch.tensor([1.5, -2.0]), "skewed": skewed, "dense": _dense(5000)}
    save_compact(state, path, {})
    entries = {e["name"]: e for e in read_compact_header(path)["tensors"]}
    assert entries["tiny"]["entropy"] == "none"  # 8 bytes: any coder's table costs more
    assert entries["skewed"]["entropy"] in ("zstd", "shuffle_zstd") and entries["skewed"]["nbytes"] < N / 8 / 2
    for e in entries.values():
        assert e["nbytes"] <= e["raw_nbytes"]
    # Force each coder on every tensor: all of them decode bit-exactly.
    real = compact_codec.entropy_code
    for coder in ("zstd", "shuffle_zstd"):

        def forced(raw: bytes, lanes: int = 1, coder: str = coder) -> tuple[str, bytes]:
            name, out = real(raw, max(lanes, 2), coders=(coder,))
            return (coder, out) if name == coder else forced_fallback(coder, raw, lanes)

        monkeypatch.setattr(compact_codec, "entropy_code", forced)
        save_compact({k: v for k, v in state.items() if k != "tiny"}, path, {})
        back, _ = load_compact(path)
        assert {e["entropy"] for e in read_compact_header(path)["tensors"]} == {coder}
        assert _bits_equal(back["skewed"], skewed) and _bits_equal(back["dense"], state["dense"])


def forced_fallback(coder: str, raw: bytes, lanes: int) -> tuple[str, bytes]:
    """The coder's output even where it is larger than the raw bytes (entropy_code would keep `none`)."""
    data = compact_codec.shuffle(raw, max(lanes, 2)) if coder == "shuffle_zstd" else raw
    return coder, compact_codec.zstandard.ZstdCompressor().compress(data)


def test_shuffle_zstd_wins_on_float_weights_and_round_trips(tmp_path: Path) -> None:
    for lanes in (2, 4, 8):
        raw = bytes(range(256)) * 3 + b"xyz"  # a tail shorter than one element stays last
        assert compact_codec.unshuffle(compact_codec.shuffle(raw, lanes), lanes) == raw
    # Trained-like float32 weights: small normal values, whose sign/exponent bytes repeat.
    weights = torch.randn(64, 256, generator=_gen(3)) * 0.05
    path = tmp_path / "s.mshk"
    save_compact({"w": weights}, path, {})
    entry = read_compact_header(path)["tensors"][0]
    raw = weights.numpy().tobytes()
    assert entry["entropy"] == "shuffle_zstd" and entry["lanes"] == 4
    assert entry["nbytes"] < len(compact_codec.zstandard.ZstdCompressor(level=19).compress(raw))
    assert _bits_equal(load_compact(path)[0]["w"], weights)


# Written by the version 2 writer (Huffman among its coders: `entropy_code(raw, coders=("huffman",))`, before this
# version removed the encoder) from the tensors of `_v2_tensors`; 5,375 bytes.
V2_FILE = Path(__file__).parent / "data" / "v2-huffman.msz"


def _v2_tensors() -> dict[str, torch.Tensor]:
    skewed = torch.where(torch.rand(4000, generator=_gen(7)) < 0.9, 0.5, -0.5)
    dense = torch.randn(64, 16, generator=_gen(3)) * 0.05
    pick = torch.multinomial(torch.tensor([0.1, 0.6, 0.2, 0.1]), 3000, True, generator=_gen(5))
    return {"skewed": skewed, "dense": dense, "clustered": torch.tensor([-0.1, 0.0, 0.02, 0.3])[pick]}


def test_version_2_files_with_huffman_blobs_still_load() -> None:
    header = read_compact_header(V2_FILE)
    assert header["version"] == 2
    assert [e["entropy"] for e in header["tensors"]] == ["huffman", "huffman", "none"]
    back, meta = load_compact(V2_FILE)
    assert meta == {"note": "a version 2 file with Huffman blobs"}
    for name, want in _v2_tensors().items():
        assert _bits_equal(back[name], want), name
    # The torch-free runtime decodes its tensors too, and says what the file lacks to run: an ONNX graph (version 3).
    from modelshrink import runtime
    from modelshrink.runtime import codec, container

    data = V2_FILE.read_bytes()
    payload = data[container.parse_header(data, V2_FILE)[1] :]
    for entry in header["tensors"]:
        assert np.array_equal(codec.as_numpy(entry, payload), back[entry["name"]].numpy()), entry["name"]
    with pytest.raises(ArtifactError, match="version 2 and carries no ONNX graph, so the torch-free runtime cannot"):
        runtime.load(V2_FILE)


def test_huffman_decoder_rejects_bad_tables() -> None:
    with pytest.raises(ValueError, match="code table"):
        huffman_decode(b"\x01", 3)
    with pytest.raises(ValueError, match="prefix code"):
        huffman_decode(bytes([0x11] * 128) + b"\x00", 3)  # 256 codes of 1 bit: not a prefix code
    with pytest.raises(ValueError, match="ends after"):
        huffman_decode(bytes([0x11]) + bytes(127) + b"\x80", 20)  # 1-bit codes for 0 and 1: 8 symbols, not 20


def test_int8_per_channel_round_trip(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Embedding(50, 8), nn.Flatten(), nn.Linear(16, 3))
    reference = {k: v.clone() for k, v in model.state_dict().items()}
    quantized = int8_weight_only(model)
    assert set(quantized) == {"0.weight", "2.weight"}  # biases stay float32
    assert quantized["0.weight"].axis == 1 and quantized["0.weight"].scales.shape == (8,)  # embedding: per feature
    assert quantized["2.weight"].axis == 0 and quantized["2.weight"].scales.shape == (3,)  # linear: per output
    for name, q in quantized.items():
        err = (model.state_dict()[name] - reference[name]).abs().max()
        assert 0 < err <= q.scales.max() / 2 + 1e-7  # rounding error: at most half a step
    path = tmp_path / "q.mshk"
    save_compact(model.state_dict(), path, {}, quantized=quantized)
    back, _ = load_compact(path)
    for name, tensor in model.state_dict().items():
        assert _bits_equal(back[name], tensor), name
    entries = {e["name"]: e for e in read_compact_header(path)["tensors"]}
    assert entries["2.weight"]["quant"] == "int8" and entries["2.weight"]["channels"] == 3
    assert "quant" not in entries["2.bias"]
    # A float tensor that is not exactly its int8 form is refused, not silently rounded.
    with pytest.raises(ArtifactError, match="int8 form"):
        save_compact(reference, tmp_path / "bad.mshk", {}, quantized=quantized)


def test_real_size_ratios(tmp_path: Path) -> None:
    dense_bytes = N * 4
    sizes = {}
    pruned_clustered = _clustered(k=16)
    pruned_clustered[torch.rand(N, generator=_gen(9)) < 0.5] = 0.0
    for name, tensor in {"dense": _dense(), "pruned": _pruned(), "clustered": _clustered(k=16),
                         "pruned_clustered": pruned_clustered}.items():  # fmt: skip
        sizes[name] = save_compact({"w": tensor}, tmp_path / f"{name}.mshk", {})
    # Random float32 mantissas barely compress: the dense file stays near dense size.
    assert 0.8 < sizes["dense"] / dense_bytes < 1.01
    # 50% sparse: 1 bit of mask + half the values = 0.53 of dense before entropy coding.
    assert sizes["pruned"] / dense_bytes < 0.56
    # 16 clusters: 4-bit indices = 1/8 of float32, plus a 64-byte codebook and the header.
    assert sizes["clustered"] / dense_bytes <= 0.15
    # both: 1 bit of mask + 4 bits for half the elements = 3/32.
    assert sizes["pruned_clustered"] / dense_bytes <= 0.11


def test_overwrites_atomically(tmp_path: Path) -> None:
    path = tmp_path / "m.mshk"
    save_compact({"a": _dense(10)}, path, {"v": 1})
    save_compact({"b": _dense(20)}, path, {"v": 2})
    state, meta = load_compact(path)
    assert list(state) == ["b"] and meta == {"v": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["m.mshk"]  # no temp files left


def test_unwritable_inputs_raise(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="complex64"):
        save_compact({"z": torch.zeros(2, dtype=torch.complex64)}, tmp_path / "z.mshk", {})
    with pytest.raises(ArtifactError, match="JSON"):
        save_compact({"a": torch.zeros(2)}, tmp_path / "m.mshk", {"obj": object()})
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def good_file(tmp_path: Path) -> Path:
    path = tmp_path / "good.mshk"
    save_compact({"w": _clustered(n=5000), "b": _dense(50), "s": _pruned(n=5000)}, path, {"m": 1})
    return path


def _write_variant(path: Path, data: bytes) -> Path:
    out = path.with_name("bad.mshk")
    out.write_bytes(data)
    return out


def test_wrong_magic(good_file: Path) -> None:
    data = good_file.read_bytes()
    with pytest.raises(ArtifactError, match="not a modelshrink compact file.*magic"):
        load_compact(_write_variant(good_file, b"PK\x03\x04" + data[4:]))


@pytest.mark.parametrize("version", [1, FORMAT_VERSION + 1])
def test_other_version(good_file: Path, version: int) -> None:
    data = bytearray(good_file.read_bytes())
    struct.pack_into("<H", data, len(MAGIC), version)
    hint = "re-export" if version < FORMAT_VERSION else "upgrade"
    with pytest.raises(
        ArtifactError, match=f"version {version}; this modelshrink reads versions 2, {FORMAT_VERSION}.*{hint}"
    ):
        load_compact(_write_variant(good_file, bytes(data)))


@pytest.mark.parametrize("keep", [0, 3, 10, 40, -7])
def test_truncated(good_file: Path, keep: int) -> None:
    data = good_file.read_bytes()
    match = "not a modelshrink" if keep < 4 and keep >= 0 else "truncated"
    with pytest.raises(ArtifactError, match=match):
        load_compact(_write_variant(good_file, data[:keep]))


def test_corrupt_header_and_payload(good_file: Path) -> None:
    data = good_file.read_bytes()
    header_flip = bytearray(data)
    header_flip[20] ^= 0x01
    with pytest.raises(ArtifactError, match="header checksum"):
        load_compact(_write_variant(good_file, bytes(header_flip)))
    payload_flip = bytearray(data)
    payload_flip[-20] ^= 0xFF
    with pytest.raises(ArtifactError, match="corrupt: payload checksum .SHA-256. mismatch"):
        load_compact(_write_variant(good_file, bytes(payload_flip)))
    with pytest.raises(ArtifactError, match="follow the payload"):
        load_compact(_write_variant(good_file, data + b"\x00"))


def test_pickle_file_is_refused_and_not_run(tmp_path: Path) -> None:
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self) -> tuple:
            return (marker.write_text, ("pwned",))

    path = tmp_path / "evil.msz"
    path.write_bytes(pickle.dumps(Evil()))
    torch.save({"w": torch.zeros(3)}, tmp_path / "torch.pt")
    for bad in (path, tmp_path / "torch.pt"):
        with pytest.raises(ArtifactError, match="not a modelshrink compact file"):
            load_compact(bad)
    assert not marker.exists()


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="nope.mshk"):
        load_compact(tmp_path / "nope.mshk")


def test_entropy_code_in_two_threads_codes_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    """A big tensor's two zstd codings run at once; the file's bytes are those of one after the other."""
    raw = torch.randn(300_000).numpy().tobytes()  # 1.2 MB of float32: above PARALLEL_BYTES
    assert len(raw) >= compact_codec.PARALLEL_BYTES
    together = compact_codec.entropy_code(raw, lanes=4)
    monkeypatch.setattr(compact_codec, "PARALLEL_BYTES", 1 << 40)
    one_by_one = compact_codec.entropy_code(raw, lanes=4)
    assert together == one_by_one and together[0] == "shuffle_zstd" and len(together[1]) < len(raw)
