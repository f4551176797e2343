"""One run at a time per run folder: a second `modelshrink run` on a folder in use refuses.

An advisory lock (flock, through the `filelock` package) on `<folder>/.lock`, held while rows are
written. The kernel releases it when the process ends, killed or not, so a crashed run never
leaves the folder locked; the empty file itself stays.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import filelock

from modelshrink.errors import ConfigError

LOCK = ".lock"


@contextmanager
def folder_lock(out: Path) -> Iterator[None]:
    """Hold the run folder's lock (creating the folder); ConfigError at once when another run holds it."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"cannot create run folder {str(out)!r} ({err.strerror}); pass a writable --out") from err
    lock = filelock.FileLock(out / LOCK, timeout=0)
    try:
        lock.acquire()
    except filelock.Timeout as err:
        raise ConfigError(
            f"run folder {str(out)!r} is in use by another modelshrink run (it holds {LOCK}); "
            "wait for that run to finish, or pass another --out"
        ) from err
    except OSError as err:
        raise ConfigError(f"cannot write to run folder {str(out)!r} ({err.strerror}); pass a writable --out") from err
    try:
        yield
    finally:
        lock.release()
