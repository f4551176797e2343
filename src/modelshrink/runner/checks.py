"""Pipelines keep earlier gains: check, after every stage and after export, what earlier steps established.

A step establishes properties of the weights it leaves: a pruned tensor set has at least some
sparsity, a clustered tensor at most k distinct values, an N:M-pruned tensor the N:M pattern. A
later step can silently undo them (clustering without `preserve_sparsity` moves the zeros onto a
centroid; a fine-tune without masks regrows weights; an exporter could densify). So after each
stage the runner checks every property declared by the steps before it, and after export it
checks them all again on the files: the compact file by tensor name, the ONNX file by matching
initializers to tensors of the same element count (ONNX renames and may transpose LSTM weights).

Techniques declare properties as typed values on their result (`TechniqueResult.properties`:
`Sparsity`, `DistinctValues`, `NM` in techniques/properties.py); the runner keeps them in the
step's record as `"properties"`, a list of their `to_dict()`s, e.g. `{"property": "sparsity",
"tensors": [...], "min": 0.5}`, and these checks read them back from there.

A failed check does not fail the variant: its measured size, speed and accuracy are still true
of the artifact, and discarding them would hide what happened. Each check is recorded in the
row (`ok: false` with the measured value) and the row's `checks_failed` counts them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from modelshrink.export.compact import load_compact
from modelshrink.runtime.container import read_compact_file
from modelshrink.techniques.properties import NM, DistinctValues, Property, Sparsity, property_from_dict

PER_CHANNEL_NOTE = "per output channel (the file's int8 scales are per channel)"
SPARSITY_TOLERANCE = 1e-3  # absolute: measured sparsity may fall this far below the established level


def declared_properties(step: Mapping[str, Any]) -> list[Property]:
    """The properties one step record establishes (its `properties`; a record without them: none)."""
    return [property_from_dict(p) for p in step.get("properties") or []]


def _label(prop: Property) -> str:
    if isinstance(prop, Sparsity):
        return f"sparsity>={prop.min:.4f}"
    if isinstance(prop, DistinctValues):
        return f"distinct_values<={prop.max}"
    return f"nm={prop.n}:{prop.m}"


def _nm_holds(arr: np.ndarray, n: int, m: int) -> bool:
    """Every group of m along the last axis (the input dimension) has at most n nonzeros."""
    if arr.shape[-1] % m:
        return False
    groups = (arr.reshape(-1, arr.shape[-1] // m, m) != 0).sum(-1)
    return bool((groups <= n).all())


def _conv_rows(arr: np.ndarray) -> np.ndarray:
    return np.moveaxis(arr, 1, -1) if arr.ndim in (3, 4) else arr  # Conv: input channels last


def _evaluate(prop: Property, arrays: list[np.ndarray]) -> tuple[bool, float]:
    """(ok, measured) of one property over the tensors' arrays (already in their torch layout)."""
    if isinstance(prop, Sparsity):
        zeros = sum(int((a == 0).sum()) for a in arrays)
        measured = zeros / max(1, sum(a.size for a in arrays))
        return measured >= prop.min - SPARSITY_TOLERANCE, measured
    if isinstance(prop, DistinctValues):
        measured = max(int(np.unique(a).size) for a in arrays)
        return measured <= prop.max, float(measured)
    held = [_nm_holds(_conv_rows(a), prop.n, prop.m) for a in arrays]
    return all(held), sum(held) / len(held)  # measured: share of tensors with the pattern


def check_state(
    state: Mapping[str, Any],
    steps: Sequence[Mapping[str, Any]],
    after: str,
    channel_axes: Mapping[str, int] | None = None,
) -> list[dict[str, Any]]:
    """Check the properties of `steps` on a name → tensor mapping (a torch state dict or the compact file).

    `channel_axes`: tensors stored as int8 with a scale per channel along that axis (the compact
    file's int8 variants); their distinct values are counted channel by channel (see `_channels`).
    """
    channel_axes = channel_axes or {}
    out = []
    for step in steps:
        for prop in declared_properties(step):
            missing = [t for t in prop.tensors if t not in state]
            record: dict[str, Any] = {"after": after, "established_by": step["kind"], "property": _label(prop)}
            if missing:  # e.g. a later step changed the architecture and renamed the tensor
                out.append({**record, "ok": False, "measured": None, "note": f"tensors gone: {missing}"})
                continue
            arrays = [np.asarray(state[t].detach().cpu() if hasattr(state[t], "detach") else state[t])
                      for t in prop.tensors]  # fmt: skip
            if isinstance(prop, DistinctValues) and any(t in channel_axes for t in prop.tensors):
                arrays = [row for t, a in zip(prop.tensors, arrays, strict=True)
                          for row in (np.moveaxis(a, channel_axes[t], 0) if t in channel_axes else [a])]  # fmt: skip
                record["note"] = PER_CHANNEL_NOTE
            ok, measured = _evaluate(prop, arrays)
            out.append({**record, "ok": ok, "measured": round(measured, 6)})
    return out


def check_compact(path: Path, steps: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Check the properties on a compact file's tensors, by name (int8 ones per channel)."""
    state, _ = load_compact(path)
    header, _ = read_compact_file(path)
    axes = {str(e["name"]): int(e["axis"]) for e in header["tensors"] if e.get("quant") == "int8"}
    return check_state(state, steps, after="export:compact", channel_axes=axes)


def _channels(arr: np.ndarray, scale: np.ndarray | None) -> np.ndarray | None:
    """(channels, values) of a weight quantized with a scale per output channel, else None.

    ORT puts the output channel last (MatMul's (K, N) with N scales; DynamicQuantizeLSTM's
    (directions, input, 4·hidden) with (directions, 4·hidden) scales). Each channel's codes are
    its own grid, so "at most k distinct values" holds per channel there, not across the tensor.
    """
    if scale is None or scale.size <= 1:
        return None
    rows = np.moveaxis(arr, -1, 1 if scale.ndim == 2 and arr.ndim == 3 else 0)
    return rows.reshape(scale.size, -1)


def _onnx_weights(path: Path) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """The ≥2-D weight initializers; quantized ones minus their zero point, so a zero weight reads 0.

    Each comes with its per-channel rows (see `_channels`) when its int8 scale is per channel.
    ORT's quantizer names a quantized weight `<w>_quantized` beside `<w>_zero_point` (and scale);
    it nudges the zero point so that float 0 is stored exactly as the zero point.
    """
    model = onnx.load(str(path), load_external_data=False)
    inits = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    out: list[tuple[np.ndarray, np.ndarray | None]] = []
    for name, arr in inits.items():
        if arr.ndim < 2:
            continue
        if arr.dtype in (np.float32, np.float16, np.float64):
            out.append((arr, None))
        elif arr.dtype in (np.int8, np.uint8) and name.endswith("_quantized"):
            base = name.removesuffix("_quantized")
            zero_point, scale = inits.get(base + "_zero_point"), inits.get(base + "_scale")
            if zero_point is None and arr.dtype == np.int8:
                codes = arr.astype(np.int32)  # symmetric int8: zero point 0
            # One zero point (or per-channel ones that are all equal); per-channel zero points that
            # differ are left out, so the tensor is reported unmatched rather than misread.
            elif zero_point is not None and np.all(zero_point == zero_point.reshape(-1)[0]):
                codes = arr.astype(np.int32) - int(zero_point.reshape(-1)[0])
            else:
                continue
            out.append((codes, _channels(codes, scale)))
    return out


def _as_torch_layout(arr: np.ndarray, shapes: list[tuple[int, ...]], prop: Property) -> np.ndarray:
    """`arr` in a torch tensor's layout; for an N:M check, whichever candidate shape and 2-D
    orientation holds the pattern (ORT's quantized LSTM stores W transposed; its gate order
    differs from torch's, but rows stay rows, so the pattern along the input dimension survives)."""
    if not isinstance(prop, NM):
        return arr.reshape(shapes[0])
    layouts = [arr.reshape(s) for s in shapes] + [arr.reshape(s[::-1]).T for s in shapes if len(s) == 2]
    return next((a for a in layouts if _nm_holds(_conv_rows(a), prop.n, prop.m)), layouts[0])


def check_onnx(
    path: Path, reference: Mapping[str, Any], steps: Sequence[Mapping[str, Any]], after: str = "export:onnx"
) -> list[dict[str, Any]]:
    """Check the properties on an ONNX file's weight initializers.

    ONNX names differ from torch's (LSTM weights become W/R), so a tensor is matched to the
    initializer with its element count. When several torch tensors share a count, they match
    only if all of them belong to the property (then the group is checked together); a tensor
    that cannot be matched gives `ok: null` with a note, never a guess.
    """
    by_size: dict[int, list[tuple[np.ndarray, np.ndarray | None]]] = {}
    for arr, rows in _onnx_weights(path):
        by_size.setdefault(arr.size, []).append((arr, rows))
    ref_sizes: dict[int, list[str]] = {}
    for name, t in reference.items():
        if getattr(t, "dim", lambda: 0)() >= 2:
            ref_sizes.setdefault(t.numel(), []).append(name)
    out = []
    for step in steps:
        for prop in declared_properties(step):
            record: dict[str, Any] = {"after": after, "established_by": step["kind"], "property": _label(prop)}
            arrays, unmatched, per_channel = [], [], False
            for size in sorted({reference[t].numel() for t in prop.tensors if t in reference}):
                names = ref_sizes.get(size, [])
                found = by_size.get(size, [])
                if len(found) == len(names) and set(names) <= set(prop.tensors):
                    shapes = list(dict.fromkeys(tuple(reference[n].shape) for n in names))
                    for arr, rows in found:
                        if isinstance(prop, DistinctValues) and rows is not None:
                            arrays += list(rows)  # k values per channel: each channel has its own grid
                            per_channel = True
                        else:
                            arrays.append(_as_torch_layout(arr, shapes, prop))
                else:
                    unmatched += [n for n in names if n in prop.tensors]
            unmatched += [t for t in prop.tensors if t not in reference]
            if unmatched or not arrays:
                out.append({**record, "ok": None, "measured": None,
                            "note": f"no unambiguous ONNX initializer for {unmatched}"})  # fmt: skip
                continue
            if per_channel:
                record["note"] = PER_CHANNEL_NOTE
            ok, measured = _evaluate(prop, arrays)
            out.append({**record, "ok": ok, "measured": round(measured, 6)})
    return out


def failed(checks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c for c in checks if c["ok"] is False]
