"""A run's model as ExecuTorch programs: float32 and int8 (PT2E, XNNPACK) `.pte`, each measured from the file.

For each compact file given (`weights.msz` of a run's variant), the model is rebuilt in PyTorch,
exported with export/executorch.py at batch 1 and the tokenizer's fixed length (float32; int8
calibrated on 8 training batches of 32), loaded back in ExecuTorch's Python runtime and measured:
bytes, test accuracy from the file (the run's split of `--data` / $MODELSHRINK_DATA), latency at
batch 1 (median of 200 calls, 1 thread) and export seconds. The issue's floor: the int8 `.pte`
within 1 point of its float32 file, and (its point) about 4x smaller. For int8 it also prints what the
converted graph holds: the share of weight bytes stored as int8 and each constant left float32.
Lowering the LSTM takes minutes (66 unrolled steps).

    python benchmarks/executorch_ship.py runs/best/models/baseline-seed0/weights.msz [--out /tmp/pte]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from modelshrink.config import DataConfig
from modelshrink.data.tasks import load_task
from modelshrink.export.compact import load_model
from modelshrink.export.executorch import PteClassifier, export_pte
from modelshrink.measure.accuracy import classification_metrics


def program_parts(path: Path) -> str:
    """Where a program's bytes are: constants run outside the delegate (the embedding table, its scales and zero
    points), weights inside the XNNPACK delegate (each stored once by content), and the delegate graphs (their
    size grows with the unrolled time steps). Read with ExecuTorch's own (private) deserializer."""
    from executorch.exir._serialize._program import deserialize_pte_binary

    pte = deserialize_pte_binary(path.read_bytes())
    constants = [len(b.storage) for b in pte.program.constant_buffer if len(b.storage)]
    named = pte.named_data.buffers if pte.named_data is not None else []
    weights = sorted((len(b) for b in named), reverse=True)
    graphs = [len(d.data) for d in pte.program.backend_delegate_data]
    return (f"constants outside the delegate {sum(constants):,} B {constants}; delegate weights {sum(weights):,} B "
            f"(largest {weights[:3]}); {len(graphs)} delegate graphs {sum(graphs):,} B")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", type=Path, help="compact files (weights.msz) of a run")
    ap.add_argument("--out", type=Path, default=Path("/tmp/modelshrink-pte"))
    ap.add_argument("--data", type=Path, default=None, help="emotions CSV (default: $MODELSHRINK_DATA)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    print("| model | program | bytes | test acc (from the file) | Δ vs fp32 (points) | ms b1 | export s |")
    print("|---|---|---:|---:|---:|---:|---:|")
    notes: list[str] = []
    for f in args.files:
        model, meta = load_model(f)
        run_cfg = json.loads((f.parent.parent.parent / "config.json").read_text())
        data = load_task(DataConfig(**{**run_cfg["data"], **({"path": str(args.data)} if args.data else {})}))
        x1 = torch.from_numpy(data.x_train[:1])
        calib = [torch.from_numpy(data.x_train[i : i + 32]) for i in range(0, 32 * 8, 32)]
        accs, sizes = {}, {}
        for mode in ("fp32", "int8"):
            t = time.perf_counter()
            written = export_pte(model, x1, args.out / f.parent.name / f"model.pte_{mode}.pte", mode, calib)  # type: ignore[arg-type]
            path, sizes[mode] = written.path, written.path.stat().st_size
            seconds = time.perf_counter() - t
            clf = PteClassifier(path)
            accs[mode] = classification_metrics(data.y_test, clf.predict_logits(data.x_test), data.num_labels)[
                "accuracy"
            ]
            times = []
            for row in data.x_test[:200]:
                t = time.perf_counter()
                clf.run(row[None])
                times.append((time.perf_counter() - t) * 1e3)
            delta = 100 * (accs[mode] - accs["fp32"])
            print(f"| {f.parent.name} | {mode} | {path.stat().st_size:,} | {100 * accs[mode]:.2f}% | {delta:+.2f} "
                  f"| {statistics.median(times):.3f} | {seconds:.0f} |", flush=True)  # fmt: skip
            notes.append(f"{f.parent.name} {mode} file: {program_parts(path)}")
            if written.weights is not None:  # after the table rows (one line per model would split the table)
                notes.append(
                    f"{f.parent.name} {mode}: {written.weights.describe()}; unrolled: {written.weights.unrolled}"
                )
        verdict = "met" if accs["fp32"] - accs["int8"] <= 0.01 else "NOT met"
        notes.append(f"int8 within 1 point of float32 ({f.parent.name}): {verdict}; "
              f"int8 file {sizes['fp32'] / sizes['int8']:.2f}x smaller")  # fmt: skip
    print("\n".join(["", *notes]), flush=True)


if __name__ == "__main__":
    main()
