"""Hugging Face Optimum's dynamic int8 file of a fine-tuned transformers folder, beside ours (issue 14).

Optimum exports the folder to ONNX (`ORTModelForSequenceClassification.from_pretrained(folder, export=True)`)
and quantizes it with `ORTQuantizer` and `AutoQuantizationConfig.<this CPU>(is_static=False, per_channel=False)`
(the dynamic int8 configuration of Optimum's quickstart, for the instruction set found in /proc/cpuinfo:
avx512_vnni, avx512, avx2, or arm64). It writes OUT/model_quantized.onnx, which benchmarks/transformer.py
measures with the same code as its own files (`--variants optimum`).

`optimum[onnxruntime]` 2.1.0 pins transformers < 4.58 and tokenizers < 0.23, older than modelshrink's,
so it runs in its own venv (torch held at the project's pin, so pip takes the CPU build on disk):

    python -m venv .venv-optimum
    .venv-optimum/bin/pip install -c constraints.txt 'optimum[onnxruntime]==2.1.0'
    .venv-optimum/bin/python benchmarks/optimum_int8.py --model runs/minilm/finetuned --out runs/minilm/optimum

Without Optimum (it does not import), `--fallback` quantizes the file named by `--onnx` with
`onnxruntime.quantization.quantize_dynamic` on the same recipe (QOperator integer ops, uint8 weights
symmetric, uint8 activations asymmetric, per tensor, full range) and says so.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

ARCHES = ("avx512_vnni", "avx512", "avx2", "arm64")


def cpu_arch() -> str:
    """Optimum's name for this CPU's instruction set (its AutoQuantizationConfig constructors)."""
    if platform.machine().lower() in ("aarch64", "arm64"):
        return "arm64"
    try:
        flags = set(" ".join(line for line in Path("/proc/cpuinfo").read_text().splitlines()
                             if line.startswith("flags")).split())  # fmt: skip
    except OSError:
        flags = set()
    if "avx512_vnni" in flags:
        return "avx512_vnni"
    return "avx512" if "avx512f" in flags else "avx2"


def with_optimum(model: Path, out: Path, arch: str, per_channel: bool) -> dict[str, Any]:
    """Optimum's own export and quantization; returns what was used."""
    import optimum.version
    import transformers
    from optimum.onnxruntime import ORTModelForSequenceClassification, ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    exported = out / "export"
    ort_model = ORTModelForSequenceClassification.from_pretrained(str(model), export=True)
    ort_model.save_pretrained(str(exported))
    qconfig = getattr(AutoQuantizationConfig, arch)(is_static=False, per_channel=per_channel)
    quantizer = ORTQuantizer.from_pretrained(ort_model)
    quantizer.quantize(save_dir=str(out), quantization_config=qconfig)
    return {"tool": f"optimum {optimum.version.__version__}", "transformers": transformers.__version__,
            "config": f"AutoQuantizationConfig.{arch}(is_static=False, per_channel={per_channel})",
            "quantization": {k: str(v) for k, v in vars(qconfig).items()}}  # fmt: skip


def with_ort(onnx_file: Path, out: Path, per_channel: bool) -> dict[str, Any]:
    """The fallback: ONNX Runtime's quantize_dynamic with the settings Optimum's avx2 configuration passes."""
    import onnxruntime
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.registry import IntegerOpsRegistry

    quantize_dynamic(onnx_file, out / "model_quantized.onnx", weight_type=QuantType.QUInt8, per_channel=per_channel,
                     reduce_range=False, op_types_to_quantize=list(IntegerOpsRegistry),
                     extra_options={"WeightSymmetric": True, "ActivationSymmetric": False})  # fmt: skip
    return {"tool": f"onnxruntime {onnxruntime.__version__} quantize_dynamic (Optimum's avx2 recipe)"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, required=True, help="the fine-tuned transformers folder")
    p.add_argument("--out", type=Path, required=True, help="folder for model_quantized.onnx")
    p.add_argument("--arch", choices=ARCHES, default=None, help="instruction set (default: this CPU's)")
    p.add_argument("--per-channel", action="store_true", help="per-channel weights (Optimum's quickstart: off)")
    p.add_argument("--fallback", action="store_true", help="without Optimum: quantize_dynamic on --onnx")
    p.add_argument("--onnx", type=Path, default=None, help="with --fallback: the fp32 ONNX file (3 inputs)")
    args = p.parse_args(argv)
    if not (args.model / "config.json").is_file():
        print(
            f"error: --model {args.model}: no config.json; pass the fine-tuned folder (OUT/finetuned)", file=sys.stderr
        )
        return 2
    if args.fallback and (args.onnx is None or not args.onnx.is_file()):
        print("error: --fallback needs --onnx FILE, the fp32 ONNX file to quantize", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    arch = args.arch or cpu_arch()
    t0 = time.perf_counter()
    if args.fallback:
        info = with_ort(args.onnx, args.out, args.per_channel)
    else:
        try:
            info = with_optimum(args.model, args.out, arch, args.per_channel)
        except ImportError as err:
            print(f"error: Optimum does not import ({err}); install it in its own venv (see this script's "
                  "docstring) or pass --fallback --onnx FILE", file=sys.stderr)  # fmt: skip
            return 2
    info.update(arch=arch, seconds=round(time.perf_counter() - t0, 1), file=str(args.out / "model_quantized.onnx"),
                bytes=(args.out / "model_quantized.onnx").stat().st_size, date=time.strftime("%Y-%m-%d"))  # fmt: skip
    (args.out / "optimum.json").write_text(json.dumps(info, indent=1))
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
