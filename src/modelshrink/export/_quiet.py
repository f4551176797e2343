"""Silence exporter/quantizer chatter (torch, onnx, ONNX Runtime) so a CLI progress bar stays clean."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator

# Logger families that print progress, warnings or graph dumps during export/quantization.
_NOISY_PREFIXES = ("torch", "onnx", "onnxscript", "onnx_ir")


class _DropLibraryWarnings(logging.Filter):
    """Drop below-error records that ONNX Runtime's quantizer logs on the root logger."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or "onnxruntime" not in record.pathname


def _noisy_loggers() -> list[logging.Logger]:
    # torch sets levels on many of its own loggers (torch._dynamo, torch.fx...), so raising
    # the parent's level is not enough; loggers created later inherit from the parents.
    names = [n for n in logging.root.manager.loggerDict if n.split(".")[0] in _NOISY_PREFIXES]
    return [logging.getLogger(n) for n in sorted(set(names) | set(_NOISY_PREFIXES))]


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence exporter/quantizer chatter so a CLI progress bar stays clean; errors still raise.

    Changes process-wide logging and warning state for the duration: not thread-safe.
    """
    saved = {logger: logger.level for logger in _noisy_loggers()}
    root_filter = _DropLibraryWarnings()
    logging.getLogger().addFilter(root_filter)
    for logger in saved:
        logger.setLevel(logging.CRITICAL)
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),  # the dynamo exporter prints progress lines
            contextlib.redirect_stderr(io.StringIO()),  # torch.export prints partial graphs on failure
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.getLogger().removeFilter(root_filter)
        for logger, level in saved.items():
            logger.setLevel(level)
