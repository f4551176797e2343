"""A user's trained weights for a model modelshrink builds: `--weights FILE` beside `--model`.

Read are `.safetensors` files (no code can run on load) and `.pt` / `.pth` state dicts through
`torch.load(..., weights_only=True)` only, which refuses anything but tensors and plain
containers. A whole pickled model (`torch.save(model)`) is refused with the remedy: save
`model.state_dict()` instead. Each refusal is one ConfigError line naming the file.
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from modelshrink.errors import ConfigError

SUFFIXES = (".safetensors", ".pt", ".pth")
# Containers other tools wrap a state dict in (Lightning, common training scripts).
_WRAPPERS = ("state_dict", "model_state_dict", "model")
_SHOWN = 4  # mismatches named in an error


def file_sha256(path: str | Path) -> str:
    """The file's SHA-256: a run's identity holds it, so a changed checkpoint is a new experiment."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_path(path: Path) -> None:
    if path.suffix not in SUFFIXES:
        raise ConfigError(
            f"--weights {str(path)!r}: unknown extension {path.suffix or '(none)'!r}; "
            f"pass a {', '.join(SUFFIXES)} file of the model's state_dict"
        )
    if not path.is_file():
        raise ConfigError(f"--weights file {str(path)!r} does not exist; pass the path of a saved state_dict")


def _unwrap(obj: object, path: Path) -> dict[str, torch.Tensor]:
    """The state dict inside what torch.load returned: itself, or one of the usual wrappers."""
    if isinstance(obj, Mapping) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        inner = next((obj[k] for k in _WRAPPERS if isinstance(obj.get(k), Mapping)), None)
        obj = inner if inner is not None else obj
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        got = type(obj).__name__ if not isinstance(obj, Mapping) else "a mapping that is not all tensors"
        raise ConfigError(
            f"--weights {str(path)!r} holds {got}, not a state dict; save it with torch.save(model.state_dict(), path)"
        )
    return {str(k): v for k, v in obj.items()}


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a `.safetensors` file or a `.pt`/`.pth` state dict (weights_only), on the CPU."""
    path = Path(path)
    _check_path(path)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as err:
            raise ConfigError(f"--weights {str(path)!r} is not a readable safetensors file: {err}") from err
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:  # weights_only refused a class: a whole model, an optimizer, ...
        raise ConfigError(
            f"--weights {str(path)!r} holds pickled objects, not only tensors (a whole model?); "
            "save model.state_dict() instead: torch.save(model.state_dict(), path)"
        ) from err
    except (RuntimeError, OSError, EOFError) as err:
        raise ConfigError(f"--weights {str(path)!r} is not a readable torch file: {err}") from err
    return _unwrap(obj, path)


def _mismatches(model: nn.Module, state: Mapping[str, torch.Tensor]) -> list[str]:
    """What keeps `state` from loading into `model`: missing and unexpected keys, different shapes."""
    own = model.state_dict()
    missing = [f"missing {k}" for k in own if k not in state]
    extra = [f"unexpected {k}" for k in state if k not in own]
    shapes = [f"{k}: file {list(v.shape)} vs model {list(own[k].shape)}"
              for k, v in state.items() if k in own and v.shape != own[k].shape]  # fmt: skip
    return shapes + missing + extra


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load the file's state dict into `model` (strict: every key and shape must match); returns `model`."""
    state = read_state_dict(path)
    if any(k.startswith("module.") for k in state) and not any(k.startswith("module.") for k in model.state_dict()):
        state = {k.removeprefix("module."): v for k, v in state.items()}  # saved from DataParallel/DDP
    problems = _mismatches(model, state)
    if problems:
        more = f" (and {len(problems) - _SHOWN} more)" if len(problems) > _SHOWN else ""
        raise ConfigError(
            f"--weights {str(path)!r} does not fit the model: {'; '.join(problems[:_SHOWN])}{more}; "
            "pass weights saved from this model (same --model and sizes)"
        )
    own = model.state_dict()
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})
    return model
