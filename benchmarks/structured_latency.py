"""Latency at batch 256: baseline vs structured-pruned vs 50% magnitude-pruned (masked), ONNX Runtime and torch.

Structured pruning cuts rows and columns, so every matrix product is smaller; masked
(unstructured) pruning keeps the dense shapes with zeros in them, which dense CPU kernels
multiply all the same, so it should show no speedup — the table reports what is measured.
All models run side by side in one process, 1 thread, interleaved round by round (so a busy
machine slows them alike); the table gives the median and p90 over rounds and the speedup of
the median against the baseline's. The weights are the reference model's shapes with random
values: dense CPU kernels do the same work for any values (zeros included), so latency does
not need trained weights.

    PYTHONPATH=src .venv/bin/python benchmarks/structured_latency.py [--rounds 30] [--seq-len 66]
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from modelshrink.export.onnx import OnnxClassifier, export_onnx
from modelshrink.models import ModelConfig, build_model
from modelshrink.techniques.base import RunContext
from modelshrink.techniques.prune_magnitude import MagnitudePruneConfig, prune_magnitude
from modelshrink.techniques.prune_structured import StructuredPruneConfig, prune_structured

VOCAB, LABELS, BATCH = 10_000, 6, 256


def variants(ctx: RunContext, base: nn.Module, args: argparse.Namespace) -> dict[str, nn.Module]:
    structured = {
        f"structured units {u}, dims {d}, vocab {v}": StructuredPruneConfig(
            unit_sparsity=u, embed_dim_sparsity=d, vocab_keep=v, epochs=0
        )
        for u, d, v in [(0.5, 0.0, None), (0.5, 0.5, 5000), (0.75, 0.5, 5000)]
    }
    out = {"baseline": base}
    for name, cfg in structured.items():
        out[name] = prune_structured(copy.deepcopy(base), cfg, ctx).model.eval()
    magnitude = MagnitudePruneConfig(final_sparsity=0.5, schedule="constant", epochs=0)
    out["magnitude 50% (masked)"] = prune_magnitude(copy.deepcopy(base), magnitude, ctx).model.eval()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30, help="timed rounds per model (after 3 warm-up rounds)")
    parser.add_argument("--seq-len", type=int, default=66, help="tokens per row (the thesis pads to 66)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.integers(2, VOCAB, size=(BATCH, args.seq_len), dtype=np.int64)  # (B, T) token ids
    base = build_model(ModelConfig(), VOCAB, LABELS).eval()
    ctx = RunContext(example_input=torch.from_numpy(x[:8]), input_dim=VOCAB, num_labels=LABELS,
                     model_config=ModelConfig())  # fmt: skip
    models = variants(ctx, base, args)

    runners: dict[str, dict[str, Callable[[], object]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, model) in enumerate(models.items()):
            path = export_onnx(model, torch.from_numpy(x[:8]), Path(tmp) / f"m{i}.onnx", "fp32")
            sess = OnnxClassifier(path, threads=1)
            xt = torch.from_numpy(x)

            def run_torch(m: nn.Module = model, xt: torch.Tensor = xt) -> object:
                with torch.inference_mode():
                    return m(xt)

            def run_ort(s: OnnxClassifier = sess) -> object:
                return s.session.run(None, {s.input_name: x})

            runners[name] = {"onnxruntime": run_ort, "torch": run_torch}

        times: dict[tuple[str, str], list[float]] = {(n, e): [] for n in runners for e in ("onnxruntime", "torch")}
        for r in range(args.rounds + 3):
            for name, engines in runners.items():
                for engine, fn in engines.items():
                    t0 = time.perf_counter()
                    fn()
                    if r >= 3:  # warm-up rounds not counted
                        times[(name, engine)].append((time.perf_counter() - t0) * 1e3)

    params = {n: sum(p.numel() for p in m.parameters()) for n, m in models.items()}
    nonzero = {n: sum(int((p != 0).sum()) for p in m.parameters()) for n, m in models.items()}
    rows = []
    print(f"batch {BATCH}, {args.seq_len} tokens, 1 thread, {args.rounds} rounds; ms per batch (median / p90)")
    print(f"{'model':44s} {'params':>8s} {'nonzero':>8s} | {'ORT p50':>8s} {'p90':>7s} {'speedup':>7s} | "
          f"{'torch p50':>9s} {'p90':>7s} {'speedup':>7s}")  # fmt: skip
    for name in runners:
        row: dict[str, object] = {"model": name, "parameters": params[name], "nonzeros": nonzero[name]}
        cells = []
        for engine in ("onnxruntime", "torch"):
            t = np.array(times[(name, engine)])
            p50, p90 = float(np.median(t)), float(np.percentile(t, 90))
            speedup = float(np.median(times[("baseline", engine)])) / p50
            row[engine] = {
                "latency_ms_p50": round(p50, 2),
                "latency_ms_p90": round(p90, 2),
                "speedup": round(speedup, 2),
            }
            cells.append(f"{p50:8.2f} {p90:7.2f} {speedup:6.2f}x")
        rows.append(row)
        print(f"{name:44s} {params[name]:8d} {nonzero[name]:8d} | {cells[0]} | {cells[1]}")
    print(json.dumps({"benchmark": "structured_latency", "batch": BATCH, "seq_len": args.seq_len, "threads": 1,
                      "rounds": args.rounds, "rows": rows}))  # fmt: skip


if __name__ == "__main__":
    main()
