"""ONNX Runtime dynamic int8 recipes side by side on trained models: which keeps the float32 file's predictions.

`quant.int8_dynamic` (export/onnx_quant.py) chose its settings from this: weight type, 7-bit or full range,
one scale per tensor or per output channel. Each recipe quantizes the same float32 ONNX file; test accuracy and
agreement with the float32 file's argmax are read on the test rows, in batches of 256 (dynamic int8 quantizes
activations per batch, so the batch composition matters a little).

The files are models of benchmarks/transformer.py's run folders (`--out`): MiniLM's own
(`finetune/models/baseline-seed0/model.onnx`, its WordPiece rows) and the LSTM students'
(`students/models/*/model.onnx`, the word tokenizer's rows: `--view words`).

    MODELSHRINK_DATA=path/to/emotions.csv python benchmarks/int8_recipes.py --out runs/minilm \\
        runs/minilm/finetune/models/baseline-seed0/model.onnx
    ... --view words runs/minilm/students/models/kd-lstm-seed{0,1,2}/model.onnx
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

RECIPES: dict[str, dict[str, Any]] = {
    "int8, 7-bit, per tensor (ours before 2026-12-01)": {"weight_type": "QInt8", "reduce_range": True},
    "int8, 8-bit, per tensor": {"weight_type": "QInt8", "reduce_range": False},
    "uint8 symmetric, 8-bit, per tensor (Optimum's avx2)": {
        "weight_type": "QUInt8", "reduce_range": False, "extra_options": {"WeightSymmetric": True}},
    "int8, 7-bit, per channel (ours)": {"weight_type": "QInt8", "reduce_range": True, "per_channel": True},
    "int8, 8-bit, per channel": {"weight_type": "QInt8", "reduce_range": False, "per_channel": True},
}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("files", type=Path, nargs="+", help="float32 ONNX files (one input: our pre-padded rows)")
    p.add_argument("--out", type=Path, required=True, help="benchmarks/transformer.py's --out (its data and split)")
    p.add_argument("--view", default="", help="the rows' encoding: '' (the model's tokenizer) or 'words'")
    args = p.parse_args(argv)
    logging.getLogger().setLevel(logging.ERROR)  # ORT's quantizer advises pre-processing on every call
    import transformer as bench
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from modelshrink.export.onnx_run import OnnxClassifier
    from modelshrink.runner.job import prepare

    opts = bench.parse_args(["--out", str(args.out)])
    cfg = bench.stage_config("transformer", ["baseline"], args.out / "finetuned", opts)
    with tempfile.TemporaryDirectory() as tmp:
        data = prepare(cfg, Path(tmp) / "run").view(args.view)
        for src in args.files:
            ref = OnnxClassifier(src, threads=2).predict_logits(data.x_test).argmax(1)
            print(f"{src}: float32 {src.stat().st_size:,} bytes, test {100 * np.mean(ref == data.y_test):.2f} %")
            for name, recipe in RECIPES.items():
                dst, t0 = Path(tmp) / "int8.onnx", time.perf_counter()
                kw = {**recipe, "weight_type": getattr(QuantType, recipe["weight_type"])}
                quantize_dynamic(str(src), str(dst), **kw)
                pred = OnnxClassifier(dst, threads=2).predict_logits(data.x_test).argmax(1)
                print(f"  {name}: {dst.stat().st_size:,} bytes, test {100 * np.mean(pred == data.y_test):.2f} %, "
                      f"agrees with float32 on {100 * np.mean(pred == ref):.2f} % ({time.perf_counter() - t0:.0f} s)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
