"""modelshrink.runtime: run a compact file (`weights.msz`) without PyTorch.

    from modelshrink import runtime
    session = runtime.load("weights.msz")          # ONNX Runtime session, weights decoded in memory
    out = session.predict(["i feel great today"])  # the file's own tokenizer / image scaling
    out.labels, out.probabilities

Needs only numpy, zstandard and onnxruntime (the `modelshrink-runtime` distribution installs just
these); nothing here imports torch or the rest of modelshrink. `load` and `Session` are imported
lazily, so the file-format readers (which export/compact.py shares) do not pull in ONNX Runtime.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from modelshrink.runtime.session import Prediction, Session, load

__all__ = ["Prediction", "Session", "load"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from modelshrink.runtime import session

        return getattr(session, name)
    raise AttributeError(f"module 'modelshrink.runtime' has no attribute {name!r}")
