"""Tasks: where the data comes from, and how it becomes arrays a model can train on."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from modelshrink.data.images import normalize, pil_to_array, read_image_folder
from modelshrink.data.text import Tokenizer, read_text_csv, split_indices
from modelshrink.errors import ConfigError, DataError
from modelshrink.registry import Registry, load_plugins

log = logging.getLogger(__name__)

DATA_ENV = "MODELSHRINK_DATA"
SPLITS = ("train", "val", "test")
HUB_DATASET = "dair-ai/emotion"


def cache_dir() -> Path:
    return Path(os.environ.get("MODELSHRINK_CACHE", Path.home() / ".cache" / "modelshrink"))


class DataConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    task: str = Field("emotion", description="emotion | text-csv (alias csv) | digits | image-folder | mnist | cifar10")
    path: str | None = Field(
        None,
        description="CSV file, or image-folder's root; emotion also looks at $MODELSHRINK_DATA, the cache, the Hub",
    )
    text_column: str = "text"
    label_column: str = "label"
    vocab_size: int = Field(10_000, ge=3, description="ids in the vocabulary, padding and out-of-vocabulary included")
    max_len: int = Field(66, ge=1, description="tokens per sequence (pre-padded, pre-truncated)")
    split: tuple[float, float, float] = (0.7, 0.15, 0.15)
    split_seed: int = 42
    stratify: bool = False
    subsample: int | None = Field(None, ge=10, description="use a random subset of this many rows (quick runs)")
    # The two image settings are left out of dumps at their defaults, so the config hashes of
    # earlier text runs (run.json, baseline cache) stay the same.
    image_size: int | None = Field(
        None,
        ge=1,
        exclude_if=lambda v: v is None,
        description="image-folder, mnist, cifar10: resize images to this "
        "size x size (default: image-folder 32, mnist and cifar10 keep 28 and 32)",
    )
    grayscale: bool = Field(
        False,
        exclude_if=lambda v: v is False,
        description="image-folder: read images as one grey channel instead of RGB",
    )

    @model_validator(mode="after")
    def _check_split(self) -> DataConfig:
        if any(f <= 0 for f in self.split) or abs(sum(self.split) - 1.0) > 1e-6:
            raise ValueError(f"split must be three positive fractions summing to 1, got {self.split}")
        return self


@dataclass
class TaskData:
    """Arrays for the three splits plus what is needed to use the model on raw input later."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    labels: list[str]
    input_dim: int  # vocabulary size for text, input channels for images
    kind: Literal["text", "image"]
    source: str  # where the data came from, for the record
    preprocessing: dict[str, Any] = field(default_factory=dict)  # saved next to the model
    fingerprint: str = ""  # sha256 of the source file (or a name for built-in data): results keys use it
    # Other encodings of the same examples (same rows, same order, same labels), by name: text read
    # through a model's own tokenizer (hf) also offers "words", the word tokenizer fitted on train, for a
    # distilled student with its own tokenizer (Tang et al. 2019). "" is this encoding itself.
    views: dict[str, TaskData] = field(default_factory=dict)

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    def view(self, name: str) -> TaskData:
        """This data ("") or one of its other encodings (`views`)."""
        if not name:
            return self
        if name not in self.views:
            known = ", ".join(sorted(self.views)) or "none"
            raise ConfigError(f"the data ({self.source}) has no {name!r} encoding (it has: {known}); "
                              "a word-tokenizer student of an hf model needs the text task loaded with the "
                              "model's tokenizer (load_task(cfg.data, text_encoder(cfg.model)))")  # fmt: skip
        return self.views[name]

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(inputs, labels) of one split: "train", "val" or "test"."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; known: {', '.join(SPLITS)}")
        return getattr(self, f"x_{name}"), getattr(self, f"y_{name}")


class TextEncoder(Protocol):
    """A model's own tokenizer (models.hf): replaces the word tokenizer fitted on the training split."""

    max_len: int
    labels: list[str] | None  # the model's label names (its head's order) when it brings a trained head
    vocab_size: int

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...  # (N, max_len) int64, pre-padded with 0
    def to_dict(self) -> dict[str, Any]: ...


# Set by `load_task(cfg, encoder)` while the loader runs: a context variable, so the loaders keep
# their one-argument signature and a thread loading other data is not affected.
_ENCODER: ContextVar[TextEncoder | None] = ContextVar("modelshrink_text_encoder", default=None)


@contextmanager
def _encoding_with(encoder: TextEncoder | None) -> Iterator[None]:
    token = _ENCODER.set(encoder)
    try:
        yield
    finally:
        _ENCODER.reset(token)


TaskLoader = Callable[[DataConfig], TaskData]
TASKS: Registry[TaskLoader] = Registry("task")


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _text_task(texts: list[str], labels: list[str], cfg: DataConfig, source: str, fingerprint: str) -> TaskData:
    if cfg.subsample is not None and cfg.subsample < len(texts):
        keep = np.random.default_rng(cfg.split_seed).choice(len(texts), cfg.subsample, replace=False)
        texts = [texts[i] for i in sorted(keep)]
        labels = [labels[i] for i in sorted(keep)]
    train, val, test = split_indices(labels, cfg.split, cfg.split_seed, cfg.stratify)
    names = sorted(set(labels))
    encoder = _ENCODER.get()
    if encoder is not None:  # the model's own tokenizer; its head's label order when the names fit it
        if encoder.labels and set(names) <= set(encoder.labels):
            names = list(encoder.labels)
        label_id = {name: i for i, name in enumerate(names)}
        y = np.array([label_id[lab] for lab in labels], dtype=np.int64)
        x = encoder.encode(texts)
        return TaskData(
            x[train], y[train], x[val], y[val], x[test], y[test], labels=names, input_dim=encoder.vocab_size,
            kind="text", source=source, fingerprint=fingerprint,
            preprocessing={"kind": "text", "labels": names, "hf_tokenizer": encoder.to_dict()},
            views={"words": _word_task(texts, y, names, (train, val, test), cfg, source, fingerprint)},
        )  # fmt: skip
    label_id = {name: i for i, name in enumerate(names)}
    y = np.array([label_id[lab] for lab in labels], dtype=np.int64)
    return _word_task(texts, y, names, (train, val, test), cfg, source, fingerprint)


def _word_task(
    texts: list[str], y: np.ndarray, names: list[str], splits: tuple[np.ndarray, np.ndarray, np.ndarray],
    cfg: DataConfig, source: str, fingerprint: str,
) -> TaskData:  # fmt: skip
    """Texts through the built-in word tokenizer (cfg.vocab_size, cfg.max_len) fitted on the training split."""
    train, val, test = splits
    # Fit on the training split only: the thesis fit on all text, test included (a leak).
    tok = Tokenizer(cfg.vocab_size, cfg.max_len).fit([texts[i] for i in train])

    def enc(idx: np.ndarray) -> np.ndarray:
        return tok.encode([texts[i] for i in idx])

    return TaskData(
        enc(train), y[train], enc(val), y[val], enc(test), y[test],
        labels=names, input_dim=cfg.vocab_size, kind="text", source=source,
        preprocessing={"kind": "text", "labels": names, "tokenizer": tok.to_dict()}, fingerprint=fingerprint,
    )  # fmt: skip


def resolve_emotion_csv(path: str | None) -> tuple[Path, str]:
    """Find the emotion CSV: --data, then $MODELSHRINK_DATA, then the cache, then the Hub."""
    if path:
        return Path(path), "--data"
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env), f"${DATA_ENV}"
    cached = cache_dir() / "emotion.csv"
    if cached.is_file():
        return cached, "cache"
    try:
        return _download_emotion(cached), f"Hugging Face Hub ({HUB_DATASET})"
    except Exception as err:  # noqa: BLE001 - any failure (no package, no network) gets the same advice
        raise DataError(
            f"no emotion data found ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
            f"pass --data PATH, set {DATA_ENV}=PATH, put the CSV at {cached}, "
            f"or install the 'hub' extra (pip install 'modelshrink[hub]') on a machine with a network"
        ) from err


def _download_emotion(dest: Path) -> Path:
    import datasets  # optional dependency, only needed for the download

    log.info("no local emotion data; downloading %s from the Hugging Face Hub into %s", HUB_DATASET, dest)
    # The Hub client logs every retry as a warning; the one error that matters is raised below.
    for name in ("huggingface_hub", "datasets"):
        logging.getLogger(name).setLevel(logging.ERROR)
    ds = datasets.load_dataset(HUB_DATASET)
    names = ds["train"].features["label"].names
    frames = [ds[split].to_pandas() for split in ("train", "validation", "test")]
    import pandas as pd

    df = pd.concat(frames, ignore_index=True)
    df["label"] = [names[i] for i in df["label"]]
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".tmp")
    df[["text", "label"]].to_csv(tmp, index=False)
    tmp.replace(dest)
    log.info("downloaded %s (%d rows) to %s", HUB_DATASET, len(df), dest)
    return dest


@TASKS.register("emotion")
def load_emotion(cfg: DataConfig) -> TaskData:
    """Six-emotion English tweets (dair-ai/emotion), the thesis's task."""
    path, how = resolve_emotion_csv(cfg.path)
    texts, labels = read_text_csv(path, cfg.text_column, cfg.label_column)
    return _text_task(texts, labels, cfg, f"{path} ({how})", _file_sha256(path))


@TASKS.register("text-csv")
def load_csv(cfg: DataConfig) -> TaskData:
    """Any text-classification CSV (--data, --text-column, --label-column)."""
    if not cfg.path:
        raise ConfigError(f"task {cfg.task!r} needs a file: pass --data PATH")
    texts, labels = read_text_csv(Path(cfg.path), cfg.text_column, cfg.label_column)
    return _text_task(texts, labels, cfg, cfg.path, _file_sha256(Path(cfg.path)))


@TASKS.register("digits")
def load_digits(cfg: DataConfig) -> TaskData:
    """scikit-learn's bundled 8x8 handwritten digits: runs with no network and no file."""
    import sklearn
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]  # (N, 1, 8, 8) in [0, 1]
    y = d.target.astype(np.int64)
    names = [str(i) for i in range(10)]
    train, val, test = split_indices([names[i] for i in y], cfg.split, cfg.split_seed, cfg.stratify)
    return TaskData(
        x[train], y[train], x[val], y[val], x[test], y[test],
        labels=names, input_dim=1, kind="image", source="sklearn.datasets.load_digits",
        preprocessing={"kind": "image", "labels": names, "scale": 1 / 16.0, "shape": [1, 8, 8]},
        fingerprint=f"sklearn.datasets.load_digits {sklearn.__version__}",
    )  # fmt: skip


TASKS.add("csv", load_csv)  # the name before text-csv; kept so configs keep working

# What each task gives a model, and the model a run uses when the config names one for the other kind.
TASK_INPUT: dict[str, Literal["text", "image"]] = {
    "emotion": "text", "text-csv": "text", "csv": "text",
    "digits": "image", "image-folder": "image", "mnist": "image", "cifar10": "image",
}  # fmt: skip
# 16 channels: on digits, cnn-small reaches 91% validation accuracy in 6 epochs (8 channels: 50% in 3).
DEFAULT_MODEL: dict[str, dict[str, Any]] = {"text": {"name": "lstm"}, "image": {"name": "cnn-small", "channels": 16}}


def _image_task(
    x: np.ndarray, labels: list[str], names: list[str], cfg: DataConfig, source: str, fingerprint: str
) -> TaskData:
    """uint8 images (N, C, H, W) → split, normalized with the training split's statistics."""
    if cfg.subsample is not None and cfg.subsample < len(x):
        keep = np.sort(np.random.default_rng(cfg.split_seed).choice(len(x), cfg.subsample, replace=False))
        x, labels = x[keep], [labels[i] for i in keep]
    train, val, test = split_indices(labels, cfg.split, cfg.split_seed, cfg.stratify)
    label_id = {name: i for i, name in enumerate(names)}
    y = np.array([label_id[lab] for lab in labels], dtype=np.int64)
    (x_train, x_val, x_test), norm = normalize(x[train], x[val], x[test])
    return TaskData(
        x_train, y[train], x_val, y[val], x_test, y[test], labels=names, input_dim=int(x.shape[1]), kind="image",
        source=source, preprocessing={"kind": "image", "labels": names, "shape": list(x.shape[1:]), **norm},
        fingerprint=fingerprint,
    )  # fmt: skip


@TASKS.register("image-folder")
def load_image_folder(cfg: DataConfig) -> TaskData:
    """Images in one sub-folder per class (--data FOLDER), read with Pillow, resized to image_size."""
    if not cfg.path:
        raise ConfigError("task 'image-folder' needs a folder: pass --data FOLDER (one sub-folder per class)")
    x, labels, names = read_image_folder(Path(cfg.path), cfg.image_size or 32, cfg.grayscale)
    digest = hashlib.sha256(x.tobytes() + "\n".join(labels).encode()).hexdigest()
    return _image_task(x, labels, names, cfg, cfg.path, digest)


def _hub_images(cfg: DataConfig, hub_name: str, image_column: str, grayscale: bool) -> TaskData:
    """An image data set from the Hugging Face Hub (`datasets`); all its splits pooled, then split our way."""
    try:
        import datasets  # optional dependency, and it needs a network the first time

        for name in ("huggingface_hub", "datasets"):
            logging.getLogger(name).setLevel(logging.ERROR)
        ds = datasets.load_dataset(hub_name)
    except Exception as err:  # noqa: BLE001 - no package, no network: the same advice
        raise DataError(
            f"cannot load {hub_name} ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
            f"task {cfg.task!r} needs the 'datasets' package (pip install 'modelshrink[hub]') and a network once; "
            "offline, use --task digits or --task image-folder"
        ) from err
    images: list[Any] = []
    ids: list[int] = []
    names: list[str] = []
    for split in sorted(ds):  # every split the Hub offers; our own split_seed split follows
        part = ds[split]
        names = list(part.features["label"].names)
        images += list(part[image_column])
        ids += [int(i) for i in part["label"]]
    x = pil_to_array(images, cfg.image_size, grayscale)
    labels = [names[i] for i in ids]
    digest = hashlib.sha256(x.tobytes() + np.asarray(ids, dtype=np.int64).tobytes()).hexdigest()
    return _image_task(x, labels, names, cfg, f"Hugging Face Hub ({hub_name})", digest)


@TASKS.register("mnist")
def load_mnist(cfg: DataConfig) -> TaskData:
    """MNIST handwritten digits (28x28 grey) through the `datasets` library; needs a network once."""
    return _hub_images(cfg, "ylecun/mnist", "image", grayscale=True)


@TASKS.register("cifar10")
def load_cifar10(cfg: DataConfig) -> TaskData:
    """CIFAR-10 (32x32 colour, 10 classes) through the `datasets` library; needs a network once."""
    return _hub_images(cfg, "uoft-cs/cifar10", "img", grayscale=False)


def load_task(cfg: DataConfig, encoder: TextEncoder | None = None) -> TaskData:
    """The task's data; text through `encoder` (a model's own tokenizer) when given."""
    with _encoding_with(encoder):
        data = TASKS.get(cfg.task)(cfg)
    if data.kind == "text":
        log.info("data: %s; %d/%d/%d rows", data.source, len(data.y_train), len(data.y_val), len(data.y_test))
    return data


load_plugins("modelshrink.tasks")  # tasks other installed packages declare; each adds its TASK_INPUT entry too
