"""Image sources -> one deterministic, sorted list of inputs, each with its sample key and a way to read its bytes.

Four kinds (DECISIONS.md fixes the keys):
- ``folder``: a tree of images at any depth (the Places365 layout); key = relative path without extension.
- ``list``: a text file of paths, one per line (``#`` comments, blank lines skipped); relative paths are relative to
  the list's folder and keys are paths relative to that folder.
- ``datasets``: a Hugging Face ``datasets`` image dataset, a saved folder (``save_to_disk``) or a name that
  ``load_dataset`` knows; key = ``<name>/<split>/<row:09d>`` or ``<name>/<split>/<id column>``.
- ``shards``: WebDataset tars of images (local files, folder, glob or brace pattern); key = ``<set name>/<__key__>``.

Every process builds the same list from the same config, so each knows its jobs without talking to the others; the
list's hash goes into the manifest. A seeded random subset (``sample_count``, the reference recipe's 450,000 of
Places365) keeps the sorted order. A second input whose key is already taken is kept in the list but flagged, and
becomes a ``duplicate_key`` reject: never a silent overwrite.
"""

from __future__ import annotations

import hashlib
import logging
import os
import posixpath
import random
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pseudolabel.config import IMAGE_EXTENSIONS, SourceConfig
from shards.errors import UserError
from shards.format import check_key, key_from_relative_path

logger = logging.getLogger(__name__)

#: Image member extensions in image shards, in order of preference when a sample holds several.
SHARD_IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "ppm", "pgm", "gif")
_DATASET_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")
_LIST_SUFFIXES = (".txt", ".lst", ".list")


class SourceError(UserError, ValueError):
    """A source that cannot be listed; the message says what to fix."""


@dataclass(frozen=True, slots=True)
class InputItem:
    """One input: its sample ``key``, its ``origin`` (path, row or shard member; the json's ``source``), where its
    bytes are (``locator``: a path, a row index, or ``(tar path, offset, size)``), and whether its key is taken."""

    key: str
    origin: str
    locator: Any
    duplicate: bool = False


@dataclass
class SourceListing:
    """The sorted (and sampled) inputs, the reader of their bytes and what the manifest records."""

    items: list[InputItem]
    reader: Any  # picklable: reader(item) -> bytes
    description: dict[str, Any]


class FileReader:
    """Bytes of a file input (folder and list sources)."""

    def __call__(self, item: InputItem) -> bytes:
        with open(item.locator, "rb") as handle:
            return handle.read()


class TarMemberReader:
    """Bytes of an image member inside a tar, read at its recorded offset (no tar parsing in the workers)."""

    def __call__(self, item: InputItem) -> bytes:
        path, offset, size = item.locator
        with open(path, "rb") as handle:
            handle.seek(offset)
            data = handle.read(size)
        if len(data) != size:
            raise OSError(f"{path} ended after {len(data)} of {size} bytes at offset {offset}")
        return data


class DatasetRowReader:
    """Image bytes of a ``datasets`` row. The dataset is opened lazily in each DataLoader worker."""

    def __init__(self, path: str, split: str, image_column: str) -> None:
        self.path, self.split, self.image_column = path, split, image_column
        self._dataset = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_dataset": None}

    def __call__(self, item: InputItem) -> bytes:
        if self._dataset is None:
            self._dataset = open_dataset(self.path, self.split, self.image_column)
        cell = self._dataset[int(item.locator)][self.image_column]
        if cell.get("bytes") is not None:
            return cell["bytes"]
        if cell.get("path"):
            with open(cell["path"], "rb") as handle:
                return handle.read()
        raise OSError(f"row {item.locator} of {self.path} holds neither image bytes nor a path")


def detect_kind(path: str) -> str:
    """``auto``: a saved dataset folder, a folder, a list file, shards, else a hub dataset name."""
    local = Path(path).expanduser()
    if local.is_dir():
        if any((local / marker).exists() for marker in _DATASET_MARKERS):
            return "datasets"
        top = [entry.name.lower() for entry in os.scandir(local) if entry.is_file()]
        if any(name.endswith(".tar") for name in top) and not any(name.endswith(IMAGE_EXTENSIONS) for name in top):
            return "shards"  # a folder of tars and no image beside them
        return "folder"
    if local.is_file():
        if local.suffix.lower() in _LIST_SUFFIXES:
            return "list"
        if local.suffix.lower() == ".tar":
            return "shards"
        raise SourceError(f"source.path {path} is a file but neither a path list ({_LIST_SUFFIXES}) nor a .tar shard")
    if "{" in path or any(char in path for char in "*?[") or path.endswith(".tar"):
        return "shards"
    if path.startswith((".", "/", "~")):
        raise SourceError(f"source.path {path} does not exist")
    return "datasets"


def list_folder(folder: Path, extensions: list[str]) -> list[InputItem]:
    """Every image file under ``folder`` (any depth, hidden files and folders skipped), by relative path."""
    if not folder.is_dir():
        raise SourceError(f"source folder {folder} does not exist or is not a folder")
    wanted = {extension.lower() for extension in extensions}
    items = []
    for root, folders, files in os.walk(folder, followlinks=True):
        folders[:] = [name for name in folders if not name.startswith(".")]
        for name in files:
            if name.startswith(".") or os.path.splitext(name)[1].lower() not in wanted:
                continue
            path = os.path.join(root, name)
            relative = Path(os.path.relpath(path, folder)).as_posix()
            items.append(InputItem(key=check_key(key_from_relative_path(relative)), origin=relative, locator=path))
    return items


def list_paths_file(list_file: Path) -> list[InputItem]:
    """The paths in a list file; keys are relative to the list's folder (every path must lie under it)."""
    base = list_file.parent.resolve()
    items = []
    for number, line in enumerate(list_file.read_text().splitlines(), start=1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        path = Path(entry).expanduser()
        path = path if path.is_absolute() else base / path
        relative = Path(os.path.relpath(os.path.normpath(path), base)).as_posix()
        if relative.startswith("../"):
            raise SourceError(
                f"{list_file}:{number}: {entry} lies outside the list file's folder {base}; keys are paths relative "
                f"to that folder, so put the list file in a folder that holds every listed image"
            )
        items.append(InputItem(key=check_key(key_from_relative_path(relative)), origin=relative, locator=str(path)))
    return items


def open_dataset(path: str, split: str, image_column: str):
    """A ``datasets.Dataset`` whose image column yields ``{"bytes", "path"}`` (we decode, so rejects are ours)."""
    import datasets

    local = Path(path).expanduser()
    try:
        if local.is_dir() and any((local / marker).exists() for marker in _DATASET_MARKERS):
            dataset = datasets.load_from_disk(str(local))
            if isinstance(dataset, datasets.DatasetDict):
                if split not in dataset:
                    raise SourceError(f"{path} has splits {sorted(dataset)}, not {split!r}: set source.split")
                dataset = dataset[split]
        else:
            dataset = datasets.load_dataset(path, split=split)
    except (FileNotFoundError, ConnectionError, OSError) as error:
        raise SourceError(
            f"dataset {path!r} (split {split!r}) is neither a saved dataset folder nor in the local datasets cache: "
            f"on a machine with internet run `huggingface-cli download --repo-type dataset {path}` or "
            f"`python -c \"import datasets; datasets.load_dataset('{path}', split='{split}').save_to_disk('DIR')\"` "
            f"and set source.path to DIR ({type(error).__name__}: {error})"
        ) from error
    if image_column not in dataset.column_names:
        raise SourceError(
            f"dataset {path} has columns {dataset.column_names}, no {image_column!r}: set source.image_column"
        )
    return dataset.cast_column(image_column, datasets.Image(decode=False))


def _row_id(value: Any) -> str:
    text = str(value).strip().replace("\\", "/").strip("/")
    folder, name = posixpath.split(text)
    name = name.replace(".", "_")
    return posixpath.join(folder, name) if folder else name


def list_dataset_rows(config: SourceConfig, name: str) -> tuple[list[InputItem], DatasetRowReader, str]:
    dataset = open_dataset(config.path, config.split, config.image_column)
    prefix = f"{name}/{config.split}"
    if config.id_column:
        if config.id_column not in dataset.column_names:
            raise SourceError(f"dataset {config.path} has no id column {config.id_column!r}: {dataset.column_names}")
        ids = [_row_id(value) for value in dataset[config.id_column]]
        keys = [f"{prefix}/{identifier}" for identifier in ids]
    else:
        keys = [f"{prefix}/{row:09d}" for row in range(len(dataset))]
    items = [
        InputItem(key=check_key(key), origin=f"{name}:{config.split}:{row}", locator=row)
        for row, key in enumerate(keys)
    ]
    reader = DatasetRowReader(config.path, config.split, config.image_column)
    return items, reader, dataset._fingerprint


def _split_member(name: str) -> tuple[str, str] | None:
    """WebDataset's rule: the key is the member path up to the first dot of its file name."""
    folder, file_name = posixpath.split(name)
    if "." not in file_name:
        return None
    stem, extension = file_name.split(".", 1)
    return (posixpath.join(folder, stem) if folder else stem), extension


def list_shard_images(spec: str, name: str) -> list[InputItem]:
    """One input per sample in local image shards: its preferred image member's offset and size."""
    from shards.reader import expand_shard_urls

    try:
        urls = expand_shard_urls(spec)
    except FileNotFoundError as error:
        raise SourceError(str(error)) from error
    items = []
    for url in urls:
        if not os.path.isfile(url):
            raise SourceError(f"image shards must be local files (random access by offset), got {url}")
        members: dict[str, dict[str, tarfile.TarInfo]] = {}
        with tarfile.open(url) as tar:
            for member in tar:  # header scan: no member is decompressed or decoded
                split = _split_member(member.name) if member.isfile() else None
                if split is not None:
                    members.setdefault(split[0], {})[split[1].lower()] = member
        for sample_key, by_extension in members.items():
            image = next((by_extension[ext] for ext in SHARD_IMAGE_EXTENSIONS if ext in by_extension), None)
            key = check_key(f"{name}/{sample_key}")
            origin = f"{url}#{sample_key}"
            locator = (os.path.abspath(url), image.offset_data, image.size) if image is not None else None
            items.append(InputItem(key=key, origin=origin, locator=locator))
    return items


def default_name(config: SourceConfig, kind: str) -> str:
    """The key prefix of a datasets or shard source when ``source.name`` is not set."""
    if config.name:
        return config.name.strip("/")
    path = config.path.rstrip("/")
    if kind == "datasets" and not Path(path).expanduser().exists():
        return path  # a hub name, e.g. org/dataset
    local = Path(path).expanduser()
    if kind == "shards" and not local.is_dir():
        local = Path(path.split("{")[0]).parent if "{" in path or "*" in path else local.parent
    return local.resolve().name or "images"


def sample_items(items: list[InputItem], count: int, seed: int) -> list[InputItem]:
    """A seeded random subset of ``count`` inputs, in the original (sorted) order; all of them when count is 0."""
    if count == 0 or count >= len(items):
        if count > len(items):
            logger.warning("source.sample_count %d > %d inputs: taking every input", count, len(items))
        return items
    chosen = sorted(random.Random(seed).sample(range(len(items)), count))
    return [items[index] for index in chosen]


def flag_duplicates(items: list[InputItem]) -> list[InputItem]:
    """Keep the first input of each key; later ones are flagged and become ``duplicate_key`` rejects."""
    seen: set[str] = set()
    flagged = []
    for item in items:
        if item.key in seen:
            item = InputItem(item.key, item.origin, item.locator, duplicate=True)
        seen.add(item.key)
        flagged.append(item)
    return flagged


def list_hash(items: list[InputItem], salt: str = "") -> str:
    """sha256 over the keys and origins, in order: equal lists, equal jobs."""
    digest = hashlib.sha256(salt.encode())
    for item in items:
        digest.update(f"{item.key}\t{item.origin}\n".encode())
    return digest.hexdigest()


def open_source(config: SourceConfig) -> SourceListing:
    """List, sort, sample and flag the inputs of ``config``. The same config gives the same list everywhere."""
    kind = detect_kind(config.path) if config.kind == "auto" else config.kind
    fingerprint = ""
    if kind == "folder":
        items, reader = list_folder(Path(config.path).expanduser(), config.extensions), FileReader()
    elif kind == "list":
        items, reader = list_paths_file(Path(config.path).expanduser()), FileReader()
    elif kind == "datasets":
        items, reader, fingerprint = list_dataset_rows(config, default_name(config, kind))
    elif kind == "shards":
        items, reader = list_shard_images(config.path, default_name(config, kind)), TarMemberReader()
    else:
        raise SourceError(f"unknown source.kind {kind!r}")
    if not items:
        raise SourceError(f"source {config.path} ({kind}) holds no inputs")
    items.sort(key=lambda item: (item.key, item.origin))
    listed = len(items)
    items = flag_duplicates(sample_items(items, config.sample_count, config.sample_seed))
    local = Path(config.path).expanduser()
    description = {
        "kind": kind,
        "path": str(local.resolve()) if local.exists() else config.path,
        "name": default_name(config, kind) if kind in ("datasets", "shards") else None,
        "split": config.split if kind == "datasets" else None,
        "image_column": config.image_column if kind == "datasets" else None,
        "id_column": config.id_column if kind == "datasets" else None,
        "listed": listed,
        "inputs": len(items),
        "sample_count": config.sample_count,
        "sample_seed": config.sample_seed,
        "list_hash": list_hash(items, salt=fingerprint),
    }
    logger.info("source %s (%s): %d inputs of %d listed", config.path, kind, len(items), listed)
    return SourceListing(items=items, reader=reader, description=description)
