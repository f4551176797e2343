"""Bring your own model: a build function from a Python file (`--model file.py:build`) or from the API.

The function receives a `ModelInputs` (the task's input and label info) and returns an
`nn.Module` taking the task's arrays: (B, T) int64 token ids for text, (B, C, H, W) float
images. Running the user's file is the point of `--model` (it is their code, named on their
command line); model *weights* are still only ever loaded from safetensors/ONNX, never pickle.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from modelshrink.errors import ConfigError


@dataclass(frozen=True)
class ModelInputs:
    """What a build function is given."""

    input_dim: int  # vocabulary size (text: token ids 0..input_dim-1, 0 is padding) or input channels (images)
    num_labels: int  # width of the logits the model must return


BuildFn = Callable[[ModelInputs], nn.Module]
# Build functions handed to the Python API (modelshrink.compare): the run config records their
# name ("module:qualname"), the callable itself lives here for the life of the process.
_IN_PROCESS: dict[str, BuildFn] = {}


def register_build_fn(fn: BuildFn) -> str:
    """Make `fn` buildable through `ModelConfig(name="custom", build=<returned name>)` in this process."""
    if not callable(fn):
        raise ConfigError(f"build_fn must be a function returning an nn.Module, got {type(fn).__name__}")
    ref = f"python:{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', type(fn).__name__)}"
    _IN_PROCESS[ref] = fn
    return ref


def load_build_fn(ref: str) -> BuildFn:
    """Resolve 'path/to/file.py:function' (or a name from `register_build_fn`) to the function."""
    if ref in _IN_PROCESS:
        return _IN_PROCESS[ref]
    if ref.startswith("python:"):
        raise ConfigError(f"build function {ref!r} was registered in another process; pass the function again")
    path_text, sep, fn_name = ref.rpartition(":")
    if not sep or not path_text or not fn_name:
        raise ConfigError(f"--model must look like path/to/file.py:function, got {ref!r}")
    path = Path(path_text)
    if not path.is_file():
        raise ConfigError(f"--model file {path_text!r} does not exist; pass an existing .py file, e.g. models.py:build")
    # Named from the file's path by a stable hash (str hashes differ per process): a --jobs worker and the
    # driver name it alike, so a model trained in the worker unpickles in the driver.
    name = f"modelshrink_user_model_{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"--model file {path_text!r} is not a Python file; pass a .py file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling-free introspection look modules up here
    saved, sys.dont_write_bytecode = sys.dont_write_bytecode, True  # no __pycache__ beside the user's file
    try:
        spec.loader.exec_module(module)
    except Exception as err:  # the user's code failed on import: show where
        raise ConfigError(f"--model file {path_text!r} failed to import: {type(err).__name__}: {err}") from err
    finally:
        sys.dont_write_bytecode = saved
    fn = getattr(module, fn_name, None)
    if fn is None or not callable(fn):
        found = sorted(n for n, v in vars(module).items() if inspect.isfunction(v) and v.__module__ == name)
        raise ConfigError(
            f"--model file {path_text!r} has no function {fn_name!r}; functions in it: {', '.join(found) or 'none'}"
        )
    _IN_PROCESS[ref] = fn  # named by this process's user: a compact file built by it may now rebuild here
    return fn  # type: ignore[no-any-return]


def trusted_build_fn(ref: str, fn: BuildFn | None, path: object) -> None:
    """A compact file of a `custom` model names the user's build function. Loading it may call that function
    only when this process already holds it (the run that built the model, or `fn` passed by the caller):
    a file alone never makes modelshrink import a Python file it names."""
    from modelshrink.errors import ArtifactError

    if fn is not None:
        _IN_PROCESS[ref] = fn
    elif ref not in _IN_PROCESS:
        raise ArtifactError(
            f"{path} holds a model built by your code ({ref!r}); loading a file never runs code it names: pass "
            "the function (load_model(path, build_fn=build)), or run the file's graph with modelshrink.runtime"
        )


def _takes_two(fn: Callable[..., object]) -> bool:
    """Whether `fn` takes (input_dim, num_labels) — two required positional parameters — rather than one ModelInputs."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # a builtin or C function: call it the documented way
        return False
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(p.kind in positional and p.default is inspect.Parameter.empty for p in params) == 2


def build_custom(ref: str, input_dim: int, num_labels: int) -> nn.Module:
    """Call the build function and check it returned an nn.Module."""
    fn = load_build_fn(ref)
    try:  # build(inputs: ModelInputs), or build(input_dim, num_labels)
        two = _takes_two(fn)
        model = fn(input_dim, num_labels) if two else fn(ModelInputs(input_dim=input_dim, num_labels=num_labels))  # type: ignore[call-arg]
    except Exception as err:  # the user's function failed: say which and how it was called
        raise ConfigError(
            f"build function {ref!r} raised {type(err).__name__}: {err}; fix it in {ref.rsplit(':', 1)[0]!r} "
            "(it is called as build(ModelInputs(input_dim, num_labels)) or build(input_dim, num_labels))"
        ) from err
    if not isinstance(model, nn.Module):
        raise ConfigError(
            f"build function {ref!r} returned {type(model).__name__}, not a torch.nn.Module; "
            "return the model object itself (e.g. `return nn.Sequential(...)`)"
        )
    return model
