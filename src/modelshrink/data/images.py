"""Image data: folders of image files (one folder per class) read with Pillow, and normalization.

Images become float32 arrays (N, C, H, W). Normalization uses the training split's per-channel
mean and standard deviation only (fit on train, applied to all three splits), like the tokenizer.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from modelshrink.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def pil_to_array(images: Iterable[Any], size: int | None, grayscale: bool) -> np.ndarray:
    """PIL images → uint8 (N, C, H, W); resized to size x size (bilinear) when `size` is given."""
    from PIL import Image

    mode = "L" if grayscale else "RGB"
    arrays = []
    for img in images:
        img = img.convert(mode)
        if size is not None and img.size != (size, size):
            img = img.resize((size, size), Image.Resampling.BILINEAR)
        arr = np.asarray(img, dtype=np.uint8)
        arrays.append(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))  # (C, H, W)
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise DataError(f"images have different sizes {sorted(shapes)[:3]}; set data.image_size to resize them")
    return np.stack(arrays)


def read_image_folder(root: Path, size: int, grayscale: bool) -> tuple[np.ndarray, list[str], list[str]]:
    """Read `root/<class>/<image>` files; return uint8 images (N, C, size, size), labels, class names."""
    from PIL import Image, UnidentifiedImageError

    root = Path(root)
    if not root.is_dir():
        raise DataError(f"image folder {str(root)!r} does not exist or is not a folder; "
                        "pass --data FOLDER holding one sub-folder of images per class")  # fmt: skip
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise DataError(f"image folder {str(root)!r} has {len(classes)} class folders; "
                        "it needs one sub-folder per class, at least 2")  # fmt: skip
    files: list[Path] = []
    labels: list[str] = []
    for name in classes:
        found = image_files(root / name)
        if not found:
            raise DataError(f"class folder {str(root / name)!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        files += found
        labels += [name] * len(found)
    images = []
    for path in files:
        try:
            with Image.open(path) as img:
                img.load()
                images.append(img.copy())
        except (UnidentifiedImageError, OSError) as err:
            raise DataError(f"cannot read image {str(path)!r}: {err}; remove or replace the file") from err
    return pil_to_array(images, size, grayscale), labels, classes


def image_files(folder: Path) -> list[Path]:
    """The image files under `folder`, sorted. Links to folders are followed unless they lead back into a folder
    already read (a loop: refused, as is a link to an image that does not resolve), never silently skipped."""
    found: list[Path] = []
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            raise DataError(f"{dirpath!r} is a symbolic link back into a folder already read (a loop); "
                            "remove or replace the link")  # fmt: skip
        seen.add(real)
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            if not path.is_file():  # a link to nothing, or to itself
                raise DataError(f"image {str(path)!r} is a symbolic link that does not lead to a file; "
                                "remove or replace the link")  # fmt: skip
            found.append(path)
    return sorted(found)


def normalize(x_train: np.ndarray, *others: np.ndarray) -> tuple[list[np.ndarray], dict[str, Any]]:
    """Scale to [0, 1], then standardize each channel with the training split's mean and std."""
    train = x_train.astype(np.float32) / 255.0
    mean = train.mean(axis=(0, 2, 3), keepdims=True)  # (1, C, 1, 1)
    std = train.std(axis=(0, 2, 3), keepdims=True) + 1e-6

    def apply(x: np.ndarray) -> np.ndarray:
        return ((x.astype(np.float32) / 255.0 - mean) / std).astype(np.float32)

    params = {"scale": 1 / 255.0, "mean": mean.ravel().tolist(), "std": std.ravel().tolist()}
    return [apply(x_train), *(apply(x) for x in others)], params
