"""Where training runs (`--device auto|cpu|cuda|mps`) and whether it uses mixed precision.

Only training runs there: the baseline's training, fine-tuning, distillation, QAT. Models come
back to the CPU before export, and accuracy and latency are measured from the exported files
in ONNX Runtime on the CPU, so a row's figures do not depend on where it trained (its weights
do: see docs/byo.md on what is bit-reproducible on a GPU).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Literal

import torch

from modelshrink.errors import ConfigError

DeviceName = Literal["auto", "cpu", "cuda", "mps"]
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda", "mps")


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(name: str) -> torch.device:
    """The torch device for `name`; `auto` is CUDA, then MPS, then the CPU. Refuses one that is absent."""
    if name not in DEVICES:
        raise ConfigError(f"unknown --device {name!r}; known: {', '.join(DEVICES)}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if _mps_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "--device cuda, but torch sees no CUDA GPU here (torch.cuda.is_available() is False); "
            "use --device cpu, or --device auto to take a GPU only when there is one"
        )
    if name == "mps" and not _mps_available():
        raise ConfigError("--device mps, but torch sees no Apple GPU (MPS) here; use --device cpu or --device auto")
    return torch.device(name)


def autocast(device: torch.device) -> AbstractContextManager[object]:
    """bf16 autocast on a CUDA GPU that supports it; off elsewhere (CPU training stays float32, as before).

    bf16 keeps float32's exponent range, so no loss scaling is needed (fp16 would need a GradScaler);
    MPS stays float32 because its autocast covers fewer ops in torch 2.x.
    """
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def precision(device: torch.device) -> str:
    """The name of what `autocast` uses on `device`, for the row."""
    return "bf16-autocast" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
