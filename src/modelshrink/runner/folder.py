"""The run folder: what its rows share, the keys of its rows and baselines, and the record that
guards resuming into it.

A run folder holds one experiment: resuming, adding seeds and variants or redefining a variant
(new rows; the old ones are kept as superseded) is fine; changing the data, model or training
is not, since every row of the folder is compared with the same baselines.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import onnxruntime
import torch

import modelshrink
from modelshrink.config import RunConfig, VariantConfig
from modelshrink.data.tasks import TaskData
from modelshrink.device import resolve_device
from modelshrink.errors import ConfigError
from modelshrink.models.builders import model_fingerprint
from modelshrink.models.checkpoint import file_sha256
from modelshrink.store import ResultStore, config_key

RUN_RECORD = "run.json"  # what a run folder's rows share; checked before resuming into the folder
STORE = "results.sqlite"


def environment() -> dict[str, str]:
    """Versions and machine, stored with every row; `git_sha` only when modelshrink runs from its own checkout."""
    env = {"modelshrink": _own_version(), "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
           "machine": f"{platform.machine()} {platform.processor() or platform.system()}",
           "python": platform.python_version(), "cpu": _cpu_model(), "cpu_count": str(os.cpu_count())}  # fmt: skip
    sha = _git_sha()
    if sha:
        env["git_sha"] = sha
    return env


def _own_version() -> str:
    try:
        return importlib.metadata.version("modelshrink")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return modelshrink.__version__


def _git_sha() -> str | None:
    """The commit of the checkout holding this package, or None: an installed copy (site-packages) may sit
    inside some other repository (a user's project with its venv), whose commit says nothing about modelshrink."""
    package = Path(__file__).resolve().parent.parent  # .../src/modelshrink
    try:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel", "--short", "HEAD"], capture_output=True,
                             text=True, cwd=package, timeout=5).stdout.split()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    if len(top) != 2 or Path(top[0]).resolve() / "src" / "modelshrink" != package:
        return None
    return top[1]


def _cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), for the report's environment; "unknown" elsewhere."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def check_writable(out: Path) -> None:
    """Refuse, before any training, a run folder that cannot be created or written; writes nothing."""
    probe = Path(os.path.abspath(out))
    while not probe.exists() and probe != probe.parent:  # the nearest existing folder must take new files
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"cannot write run folder {str(out)!r}: {str(probe)!r} is not a folder; pass another --out")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(
            f"cannot write run folder {str(out)!r}: {str(probe)!r} is not writable; pass a writable --out"
        )


class RunFolder:
    """One experiment's folder: results.sqlite, run.json, baselines/, models/."""

    def __init__(self, out: Path, cfg: RunConfig) -> None:
        self.out, self.cfg = Path(out), cfg
        self._sha256: str | None = None

    @property
    def store_path(self) -> Path:
        return self.out / STORE

    def shared(self, data: TaskData) -> dict[str, Any]:
        """What every row of the folder shares: data and the user's weights (by content, not path), model, training."""
        c = self.cfg
        out = {"data": c.data.model_dump(mode="json", exclude={"path"}), "data_sha256": data.fingerprint,
               "model": c.model.model_dump(mode="json", exclude={"weights", "path"}), "train": c.train.model_dump(mode="json"),
               "latency_threads": c.latency_threads}  # fmt: skip
        # The model's files by content (the user's weights file, or an hf folder), never by path; only
        # when there are such files, so the keys of runs without them stay as they were.
        if (sha := self._model_sha256()) is not None:
            out["model_sha256"] = sha
        return out

    def _model_sha256(self) -> str | None:
        """SHA-256 of the user's weights file or model folder, read once per folder object (shared()
        is called for every row key)."""
        if self._sha256 is None:
            m = self.cfg.model
            self._sha256 = file_sha256(m.weights) if m.weights is not None else model_fingerprint(m) or ""
        return self._sha256 or None

    def row_config(self, data: TaskData, variant: VariantConfig, seed: int) -> dict[str, Any]:
        """The resolved config of one row; its hash is the row's key in the store."""
        return {**self.shared(data), "variant": variant.model_dump(mode="json"), "seed": seed}

    def row_key(self, data: TaskData, variant: VariantConfig, seed: int) -> str:
        return config_key(self.row_config(data, variant, seed))

    def baseline_dir(self, data: TaskData, seed: int) -> Path:
        return self.out / "baselines" / f"seed{seed}-{config_key({**self.shared(data), 'seed': seed})}"

    def model_dir(self, variant: str, seed: int) -> Path:
        return self.out / "models" / f"{variant}-seed{seed}"

    def check(self, data: TaskData) -> None:
        """Refuse a foreign or corrupt store, a device that is absent, an unwritable folder, or a folder
        that holds another experiment; writes nothing."""
        resolve_device(self.cfg.train.device)  # `--device cuda` without one: refused before anything runs
        check_writable(self.out)
        if self.store_path.exists():
            ResultStore(self.store_path, readonly=True, probe=True).close()  # foreign or corrupt: refused, untouched
        old = self._read_record()
        if old is None:
            return
        shared = self.shared(data)
        changed = [k for k, v in shared.items() if old.get(k) != v]
        changed += [k for k in ("model_sha256",) if k in old and k not in shared]  # weights then, none now
        if changed:
            raise ConfigError(
                f"run folder {str(self.out)!r} holds results for a different {', '.join(changed)}; "
                "pass a new --out folder, or the same settings to resume"
            )

    def write_record(self, data: TaskData) -> None:
        """config.json, preprocessing.json and run.json (every variant ever defined in the folder)."""
        old = self._read_record()
        variants = dict(old.get("variants", {})) if old else {}
        variants.update({v.name: v.model_dump(mode="json") for v in self.cfg.variants})
        (self.out / "config.json").write_text(self.cfg.model_dump_json(indent=2))
        (self.out / "preprocessing.json").write_text(json.dumps(data.preprocessing))
        record = {**self.shared(data), "variants": variants}
        (self.out / RUN_RECORD).write_text(json.dumps(record, indent=1, sort_keys=True))

    def _read_record(self) -> dict[str, Any] | None:
        path = self.out / RUN_RECORD
        if not path.is_file():
            return None
        try:
            record: dict[str, Any] = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ConfigError(f"{path} is unreadable ({err}); use a new --out folder") from err
        return record

    def teacher_train_seconds(self, seed: int) -> float | None:
        """Seconds the seed's baseline (the teacher) trained, from its history.json; None if unknown."""
        found = sorted((self.out / "baselines").glob(f"seed{seed}-*/history.json"))
        if len(found) != 1:
            return None
        return round(sum(h["seconds"] for h in json.loads(found[0].read_text())), 2)
