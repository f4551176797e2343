"""Image tasks: image-folder (Pillow), mnist and cifar10 through a fake `datasets` module, text-csv alias."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from modelshrink.data.synthetic import write_synthetic_csv
from modelshrink.data.tasks import TASK_INPUT, TASKS, DataConfig, load_task
from modelshrink.errors import ConfigError, DataError


def _folder(root: Path, per_class: int = 12, size: int = 10) -> Path:
    rng = np.random.default_rng(0)
    for c, name in enumerate(["cats", "dogs"]):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 100, (size, size, 3)) + 120 * c  # dogs are brighter
            Image.fromarray(pixels.astype(np.uint8)).save(root / name / f"{i}.png")
    return root


def test_image_folder_resizes_and_normalizes_with_train_statistics(tmp_path: Path) -> None:
    data = load_task(DataConfig(task="image-folder", path=str(_folder(tmp_path / "imgs")), image_size=6))
    assert data.kind == "image" and data.labels == ["cats", "dogs"] and data.input_dim == 3
    assert data.x_train.shape[1:] == (3, 6, 6) and data.x_train.dtype == np.float32
    assert len(data.y_train) + len(data.y_val) + len(data.y_test) == 24
    # Standardized with the training split's own statistics: mean 0, std 1 per channel there.
    np.testing.assert_allclose(data.x_train.mean(axis=(0, 2, 3)), 0.0, atol=1e-4)
    np.testing.assert_allclose(data.x_train.std(axis=(0, 2, 3)), 1.0, atol=1e-3)
    assert len(data.preprocessing["mean"]) == 3 and data.preprocessing["shape"] == [3, 6, 6]
    assert len(data.fingerprint) == 64
    grey = load_task(DataConfig(task="image-folder", path=str(tmp_path / "imgs"), grayscale=True))
    assert grey.x_train.shape[1:] == (1, 32, 32)  # default size 32


def test_image_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs a folder"):
        load_task(DataConfig(task="image-folder"))
    with pytest.raises(DataError, match="does not exist"):
        load_task(DataConfig(task="image-folder", path=str(tmp_path / "nope")))
    (tmp_path / "one" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match="1 class folders"):
        load_task(DataConfig(task="image-folder", path=str(tmp_path / "one")))
    root = _folder(tmp_path / "bad", per_class=3)
    (root / "cats" / "broken.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match="broken.png"):
        load_task(DataConfig(task="image-folder", path=str(root)))


class _FakeSplit:
    def __init__(self, images: list[Image.Image], labels: list[int], names: list[str], column: str) -> None:
        self.features = {"label": types.SimpleNamespace(names=names)}
        self._cols = {column: images, "label": labels}

    def __getitem__(self, column: str) -> list:
        return self._cols[column]


def _fake_datasets(monkeypatch: pytest.MonkeyPatch, mode: str, size: int, column: str) -> list[str]:
    rng = np.random.default_rng(0)
    names = [f"class{i}" for i in range(3)]
    asked: list[str] = []

    def load_dataset(name: str) -> dict[str, _FakeSplit]:
        asked.append(name)
        shape = (size, size) if mode == "L" else (size, size, 3)
        splits = {}
        for split, n in (("train", 40), ("test", 20)):
            labels = [int(i) for i in rng.integers(0, 3, n)]
            imgs = [Image.fromarray(rng.integers(0, 255, shape).astype(np.uint8), mode) for _ in labels]
            splits[split] = _FakeSplit(imgs, labels, names, column)
        return splits

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    return asked


@pytest.mark.parametrize(("task", "hub", "mode", "size", "column", "channels"),
                         [("mnist", "ylecun/mnist", "L", 28, "image", 1),
                          ("cifar10", "uoft-cs/cifar10", "RGB", 32, "img", 3)])  # fmt: skip
def test_hub_image_tasks_through_datasets(
    monkeypatch: pytest.MonkeyPatch, task: str, hub: str, mode: str, size: int, column: str, channels: int
) -> None:
    asked = _fake_datasets(monkeypatch, mode, size, column)
    data = load_task(DataConfig(task=task))
    assert asked == [hub]
    assert data.x_train.shape[1:] == (channels, size, size) and data.input_dim == channels
    assert len(data.y_train) + len(data.y_val) + len(data.y_test) == 60  # both Hub splits pooled
    assert data.labels == ["class0", "class1", "class2"] and TASK_INPUT[task] == "image"
    small = load_task(DataConfig(task=task, image_size=8, subsample=30))
    assert (
        small.x_train.shape[1:] == (channels, 8, 8) and len(small.y_train) + len(small.y_val) + len(small.y_test) == 30
    )


def test_hub_image_task_without_network_names_the_offline_remedy(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(name: str) -> None:
        raise ConnectionError("no network")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=offline))
    with pytest.raises(DataError, match="cannot load ylecun/mnist.*--task digits"):
        load_task(DataConfig(task="mnist"))


def test_text_csv_and_its_csv_alias(tmp_path: Path) -> None:
    csv = write_synthetic_csv(tmp_path / "t.csv", n=60)
    a = load_task(DataConfig(task="text-csv", path=str(csv)))
    b = load_task(DataConfig(task="csv", path=str(csv)))
    assert a.kind == b.kind == "text" and np.array_equal(a.x_train, b.x_train)
    assert {"text-csv", "csv", "emotion", "digits", "image-folder", "mnist", "cifar10"} <= set(TASKS)
    with pytest.raises(ConfigError, match="task 'text-csv' needs a file"):
        load_task(DataConfig(task="text-csv"))


def test_links_to_images_and_folders_count_once_and_loops_are_refused(tmp_path: Path) -> None:
    import os

    from modelshrink.data.images import image_files

    root = _folder(tmp_path / "imgs", per_class=3)
    classes = sorted(p for p in root.iterdir() if p.is_dir())
    first, second = classes[0], classes[1]
    extra = tmp_path / "extra"
    extra.mkdir()
    Image.new("RGB", (10, 10)).save(extra / "more.png")
    os.symlink(extra, first / "linked")  # a link to another folder: followed
    os.symlink(next(second.glob("*.png")), first / "alias.png")  # a link to an image: read
    assert len(image_files(first)) == 3 + 2
    os.symlink(first, first / "linked" / "back")  # leads back into the class folder: a loop
    with pytest.raises(DataError, match="loop"):
        image_files(first)
    os.unlink(first / "linked" / "back")
    os.symlink(second / "gone.png", second / "dangling.png")
    with pytest.raises(DataError, match="dangling.png.*remove or replace the link"):
        image_files(second)
