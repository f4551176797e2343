"""Self-contained Ray tasks: a row needs no disk shared with the driver.

A task gets everything through its arguments (Ray's object store: the config, the task's data and
the seed's baseline files, put once by the driver), works in a task-local temporary folder on its
own node, and returns what it made: the baseline's cache files, or the row with its artifact files,
as bytes in the result or staged under an artifact URI (fsspec: `file://`, `s3://`, `gs://`, ...).
The driver writes those files into its run folder and alone writes the store (runner/executors.py).

With `--device cuda` a row task only builds the variant's model on its GPU share and returns it;
the driver writes and measures the files, so every latency of a run is measured on one machine.
"""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelshrink.config import RunConfig, VariantConfig
from modelshrink.data.tasks import TaskData
from modelshrink.errors import ConfigError
from modelshrink.runner.measure import ArtifactCache
from modelshrink.runner.pipeline import Stage
from modelshrink.runner.task import RowRunner

Files = dict[str, bytes]  # path relative to the run folder → content


@dataclass(frozen=True)
class RaySetup:
    """What every Ray task of a run shares (put in the object store once)."""

    cfg_json: str
    threads: int  # torch threads per task
    token: str  # this run's id: the staging prefix under the artifact URI
    artifacts: str | None = None  # fsspec URI the files go through; None: bytes in the task's result
    weights_name: str | None = None  # file name of the user's --weights, sent as bytes beside the setup


_CACHE = ArtifactCache()  # latency of files already timed in this worker process


def node_info() -> dict[str, Any]:
    """The node a task ran on: host name, Ray node id, and its accelerator when it used one."""
    info: dict[str, Any] = {"host": socket.gethostname()}
    try:
        import ray

        info["ray_node_id"] = ray.get_runtime_context().get_node_id()
    except Exception:  # not in a Ray worker (the driver measuring): the host name says it
        info["ray_node_id"] = None
    return info


def read_files(root: Path, under: Path) -> Files:
    """Every file below `under`, by its path relative to `root`."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(under.rglob("*")) if p.is_file()}


def write_files(root: Path, files: Files) -> None:
    """Files into `root` (each written to a temporary name, then renamed: no half file on a crash)."""
    for rel, content in files.items():
        path = root / rel
        if Path(rel).is_absolute() or ".." in Path(rel).parts:  # internal: tasks send run-folder paths only
            raise ValueError(f"refusing to write {rel!r} outside the run folder")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".part")
        tmp.write_bytes(content)
        tmp.replace(path)


def check_artifact_uri(uri: str) -> None:
    """Refuse an artifact URI fsspec cannot open here, before anything runs; writes nothing."""
    import fsspec

    protocol, _, rest = uri.partition("://")
    if not rest:
        raise ConfigError(f"--artifacts must be a URI such as file:///shared/stage or s3://bucket/prefix, got {uri!r}")
    if protocol == "file" and not rest.startswith("/"):
        raise ConfigError(f"--artifacts {uri!r}: a file:// URI needs an absolute path (file:///path)")
    try:
        fsspec.filesystem(protocol)
    except (ImportError, ValueError) as err:
        raise ConfigError(f"--artifacts {uri!r}: fsspec cannot open {protocol}:// here ({err}); "
                          f"install its driver (s3fs for s3://, gcsfs for gs://) on the driver and every node") from err  # fmt: skip


def _staged(setup: RaySetup, rel: str) -> str:
    return f"{setup.artifacts.rstrip('/')}/{setup.token}/{rel}"  # type: ignore[union-attr]


def stage_files(setup: RaySetup, files: Files) -> Files | list[str]:
    """A task's files for the driver: as they are (bytes in the result), or written under the
    artifact URI and named (the driver fetches them)."""
    if setup.artifacts is None:
        return files
    import fsspec

    for rel, content in files.items():
        with fsspec.open(_staged(setup, rel), "wb", auto_mkdir=True) as f:
            f.write(content)
    return sorted(files)


def fetch_files(setup: RaySetup, sent: Files | list[str]) -> Files:
    """On the driver: a task's files, from its result or from the artifact URI (then removed there)."""
    if isinstance(sent, dict):
        return sent
    import fsspec

    out: Files = {}
    for rel in sent:
        fs, path = fsspec.core.url_to_fs(_staged(setup, rel))
        out[rel] = fs.cat_file(path)
        fs.rm(path)
    return out


def remove_staging(setup: RaySetup) -> None:
    """The run's staging prefix under the artifact URI, once the driver holds every file."""
    if setup.artifacts is None:
        return
    import fsspec

    fs, path = fsspec.core.url_to_fs(f"{setup.artifacts.rstrip('/')}/{setup.token}")
    if fs.exists(path):
        fs.rm(path, recursive=True)


@contextmanager
def _task_rows(setup: RaySetup, weights: bytes | None) -> Iterator[RowRunner]:
    """A RowRunner whose run folder is a temporary folder on this node, removed afterwards."""
    import torch

    torch.set_num_threads(setup.threads)
    cfg = RunConfig.model_validate_json(setup.cfg_json)
    with tempfile.TemporaryDirectory(prefix="modelshrink-task-") as tmp:
        if weights is not None:  # the user's --weights, by content: the same row keys (they hash content)
            local = Path(tmp) / "given" / (setup.weights_name or "weights.safetensors")
            local.parent.mkdir()
            local.write_bytes(weights)
            cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"weights": str(local)})})
        rows = RowRunner(cfg, Path(tmp), log=lambda _m: None)
        rows.cache = _CACHE
        yield rows


def baseline_task(setup: RaySetup, data: TaskData, weights: bytes | None, seed: int) -> Files | list[str]:
    """Train (or load) the seed's baseline in a temporary folder; its cache files for the driver
    (none when the user's weights are measured as given: every row loads them again)."""
    with _task_rows(setup, weights) as rows:
        rows.baseline(data, seed)
        folder = rows.folder.baseline_dir(data, seed)
        return stage_files(setup, read_files(rows.folder.out, folder) if folder.is_dir() else {})


def row_task(
    setup: RaySetup, data: TaskData, weights: bytes | None, baseline: Files, variant_json: str, seed: int
) -> tuple[str, dict[str, Any], Files | list[str]]:
    """One (variant, seed) from the seed's baseline files: its row and its artifact files."""
    variant = VariantConfig.model_validate_json(variant_json)
    with _task_rows(setup, weights) as rows:
        write_files(rows.folder.out, baseline)
        status, result = rows.run(data, variant, seed, {("baseline",): rows.baseline(data, seed)})
        folder = rows.folder.model_dir(variant.name, seed)
        files = read_files(rows.folder.out, folder) if folder.is_dir() else {}
        where = node_info()
        result.update(measured_on=where, trained_on=where)
        return status, result, stage_files(setup, files)


def stage_task(
    setup: RaySetup, data: TaskData, weights: bytes | None, baseline: Files, variant_json: str, seed: int
) -> tuple[str, Stage | dict[str, Any], dict[str, Any]]:
    """--device cuda: the variant's model only, built on this task's GPU share (the driver measures it)."""
    variant = VariantConfig.model_validate_json(variant_json)
    with _task_rows(setup, weights) as rows:
        write_files(rows.folder.out, baseline)
        where = {**node_info(), **_accelerator(rows.cfg.train.device)}
        status, stage = rows.stage(data, variant, seed, {("baseline",): rows.baseline(data, seed)})
        return status, stage, where


def _accelerator(device: str) -> dict[str, Any]:
    import torch

    from modelshrink.device import resolve_device

    dev = resolve_device(device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else None
    return {"device": str(dev), "gpu": name, "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
