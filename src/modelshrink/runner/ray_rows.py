"""Self-contained Ray tasks: a row needs no disk shared with the driver.

A task gets everything through its arguments (Ray's object store: the config, the task's data, the
user's model files and the seed's baseline files, put once by the driver), works in a task-local temporary folder on its
own node, and returns what it made: the baseline's cache files, or the row with its artifact files,
as bytes in the result or staged under an artifact URI (fsspec: `file://`, `s3://`, `gs://`, ...).
The driver writes those files into its run folder and alone writes the store (runner/executors.py).

With `--device cuda` a row task only builds the variant's model on its GPU share and returns it;
the driver writes and measures the files, so every latency of a run is measured on one machine.
"""

from __future__ import annotations

import hashlib
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
from modelshrink.models.builders import ModelConfig
from modelshrink.models.byo import BuildFn, load_build_fn, trusted_build_fn
from modelshrink.runner.measure import ArtifactCache
from modelshrink.runner.pipeline import Stage
from modelshrink.runner.task import RowRunner

Files = dict[str, bytes]  # path relative to the run folder → content
# The user's model files (--weights, an hf folder, a file.py) travel through Ray's object store, read
# whole into the driver's memory once: at most this many bytes together; a bigger model is refused.
MODEL_BYTES_MAX = 2 << 30


@dataclass(frozen=True)
class RaySetup:
    """What every Ray task of a run shares (put in the object store once)."""

    cfg_json: str
    threads: int  # torch threads per task
    token: str  # this run's id: the staging prefix under the artifact URI
    artifacts: str | None = None  # fsspec URI the files go through; None: bytes in the task's result


@dataclass(frozen=True)
class ModelFiles:
    """The user's model files by content, for tasks on nodes that cannot read the driver's paths (put in
    the object store once per run). Each is (file name, content); `folder` maps relative paths to contents."""

    weights: tuple[str, bytes] | None = None  # --weights FILE
    folder: Files | None = None  # --model hf:FOLDER (or hf:ORG/NAME, as the driver's Hub cache holds it)
    build: tuple[str, bytes] | None = None  # --model file.py:function: the file's source


def pack_model(cfg: ModelConfig) -> ModelFiles | None:
    """On the driver: the files the model is read from, or None when it needs none (a built-in model).

    The hf folder is read as `folder_sha256` hashes it (names relative to it, `.cache` left out), so the
    worker's copy has the same fingerprint and the rows the same keys."""
    sources: dict[str, Path] = {}
    if cfg.weights is not None:
        sources["weights"] = Path(cfg.weights)
    if cfg.name == "custom" and cfg.build:
        if cfg.build.startswith("python:"):
            raise ConfigError(f"a build function passed from Python ({cfg.build!r}) cannot travel to Ray's nodes; "
                              "put it in a file and pass --model path/to/file.py:function")  # fmt: skip
        sources["build"] = Path(cfg.build.rpartition(":")[0])
    folder: dict[str, Path] = {}
    if cfg.name == "hf" and cfg.path:
        from modelshrink.models.hf import resolve_folder

        root = resolve_folder(cfg.path)
        folder = {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*"))
                  if p.is_file() and ".cache" not in p.relative_to(root).parts}  # fmt: skip
    if not sources and not folder:
        return None
    total = sum(p.stat().st_size for p in [*sources.values(), *folder.values()])
    if total > MODEL_BYTES_MAX:
        raise ConfigError(
            f"--executor ray sends the model's files to every node through Ray's object store: yours are "
            f"{total / 2**30:.1f} GiB, over the {MODEL_BYTES_MAX / 2**30:.0f} GiB limit; run it on one machine "
            "(in-process or --jobs N), or start from a smaller model"
        )
    one = {k: (p.name, p.read_bytes()) for k, p in sources.items()}
    return ModelFiles(one.get("weights"), {k: p.read_bytes() for k, p in folder.items()} or None, one.get("build"))


_BUILD_FNS: dict[tuple[str, str], BuildFn] = {}  # (build ref, SHA-256 of its source) → imported in this worker


def unpack_model(cfg: ModelConfig, files: ModelFiles, into: Path) -> ModelConfig:
    """In a task: the user's model files written under `into`, and the model config pointed at them.

    The row's identity does not change: the weights and the hf folder are keyed by content (their paths
    are not part of it), and a file.py model keeps its `build` reference: the function imported from
    the copy is registered under it (models/byo.py trusted_build_fn), as if the driver's file had been
    imported here. The user named that file on the driver's command line; that is why it runs here."""
    into.mkdir(parents=True, exist_ok=True)
    update: dict[str, Any] = {}
    if files.weights is not None:
        update["weights"] = str(_write(into / "weights", files.weights[0], files.weights[1]))
    if files.folder is not None:
        write_files(into / "hf", files.folder)
        update["path"] = str(into / "hf")
    if files.build is not None and cfg.build:
        name, source = files.build
        key = (cfg.build, hashlib.sha256(source).hexdigest())
        if key not in _BUILD_FNS:  # once per worker process and file content
            local = _write(into / "build", name, source)
            _BUILD_FNS[key] = load_build_fn(f"{local}:{cfg.build.rpartition(':')[2]}")
        trusted_build_fn(cfg.build, _BUILD_FNS[key], cfg.build)
    return cfg.model_copy(update=update)


def _write(folder: Path, name: str, content: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(content)
    return folder / name


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
def task_rows(setup: RaySetup, model: ModelFiles | None) -> Iterator[RowRunner]:
    """A RowRunner whose run folder is a temporary folder on this node, removed afterwards; the user's
    model files (if any) are copied into it, under `given/`."""
    import torch

    torch.set_num_threads(setup.threads)
    cfg = RunConfig.model_validate_json(setup.cfg_json)
    with tempfile.TemporaryDirectory(prefix="modelshrink-task-") as tmp:
        if model is not None:
            cfg = cfg.model_copy(update={"model": unpack_model(cfg.model, model, Path(tmp) / "given")})
        rows = RowRunner(cfg, Path(tmp), log=lambda _m: None)
        rows.cache = _CACHE
        yield rows


def baseline_task(setup: RaySetup, data: TaskData, model: ModelFiles | None, seed: int) -> Files | list[str]:
    """Train (or load) the seed's baseline in a temporary folder; its cache files for the driver
    (none when the user's weights are measured as given: every row loads them again)."""
    with task_rows(setup, model) as rows:
        rows.baseline(data, seed)
        folder = rows.folder.baseline_dir(data, seed)
        return stage_files(setup, read_files(rows.folder.out, folder) if folder.is_dir() else {})


def row_task(
    setup: RaySetup, data: TaskData, model: ModelFiles | None, baseline: Files, variant_json: str, seed: int
) -> tuple[str, dict[str, Any], Files | list[str]]:
    """One (variant, seed) from the seed's baseline files: its row and its artifact files."""
    variant = VariantConfig.model_validate_json(variant_json)
    with task_rows(setup, model) as rows:
        write_files(rows.folder.out, baseline)
        status, result = rows.run(data, variant, seed, {("baseline",): rows.baseline(data, seed)})
        folder = rows.folder.model_dir(variant.name, seed)
        files = read_files(rows.folder.out, folder) if folder.is_dir() else {}
        where = node_info()
        result.update(measured_on=where, trained_on=where)
        return status, result, stage_files(setup, files)


def stage_task(
    setup: RaySetup, data: TaskData, model: ModelFiles | None, baseline: Files, variant_json: str, seed: int
) -> tuple[str, Stage | dict[str, Any], dict[str, Any]]:
    """--device cuda: the variant's model only, built on this task's GPU share (the driver measures it)."""
    variant = VariantConfig.model_validate_json(variant_json)
    with task_rows(setup, model) as rows:
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
