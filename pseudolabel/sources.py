"""Where the inputs come from: each source kind -> its inputs, each with its sample key and a way to read its bytes.

Four kinds (keys as docs/decisions.md, "The sample", fixes them):
- ``folder``: a tree of images at any depth (the Places365 layout); key = relative path without extension.
- ``list``: a text file of paths, one per line (``#`` comments, blank lines skipped); relative paths are relative to
  the list's folder and keys are paths relative to that folder.
- ``datasets``: a Hugging Face ``datasets`` image dataset, a saved folder (``save_to_disk``) or a name that
  ``load_dataset`` knows; key = ``<name>/<split>/<row:09d>`` or ``<name>/<split>/<id column>``.
- ``shards``: WebDataset tars of images (local files, folder, glob or brace pattern); key = ``<set name>/<__key__>``.

The first three stream into one sorted on-disk index (``pseudolabel.plan``), written once by the main process and
read by offset by every process; the list's hash goes into the manifest. A seeded random subset (``sample_count``, the
reference recipe's 450,000 of Places365) keeps the sorted order. A second input whose key is already taken is kept
but flagged, and becomes a ``duplicate_key`` reject: never a silent overwrite.

Image shards, for collections of tens of millions (img2dataset output and the like), hold no record per image beyond
one shard: a process lists the shard names, the manifest hashes the names with their sizes, and a shard's tar
headers are read only by the process that labels it (the plan cuts it into slices). ``sample_count`` keeps the
samples whose seeded hash of the key falls below ``count / total`` (``total`` counted once by the main process,
streamed): about ``count`` of them, not exactly. Keys repeated across input shards are found after labelling
(``pseudolabel.plan``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import posixpath
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pseudolabel.config import IMAGE_EXTENSIONS, SourceConfig
from pseudolabel.plan import InputIndex, InputItem, write_index
from shards.cli.errors import UserError
from shards.format import check_key, key_from_relative_path

logger = logging.getLogger(__name__)

_DATASET_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")
_LIST_SUFFIXES = (".txt", ".lst", ".list")


class SourceError(UserError, ValueError):
    """A source that cannot be listed; the message says what to fix."""


@dataclass
class SourceListing:
    """What the main process listed: the manifest's record, the reader of an input's bytes, and either the written
    index (``folder``, ``list``, ``datasets``) or the shard set (``shards``)."""

    description: dict[str, Any]
    reader: Any  # picklable: reader(item) -> bytes
    index: Path | None = None
    shards: ShardSet | None = None

    def items(self) -> list[InputItem]:
        """Every input in job order, in memory: for tests and small sources only."""
        if self.index is not None:
            return list(InputIndex(self.index))
        return [item for shard in range(len(self.shards.urls)) for item in self.shards.scan(shard)]


class FileReader:
    """Bytes of a file input (folder and list sources)."""

    def __call__(self, item: InputItem) -> bytes:
        with open(item.locator, "rb") as handle:
            return handle.read()


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


def iter_folder(folder: Path, extensions: list[str]) -> Iterator[list]:
    """``[key, origin, path]`` of every image file under ``folder`` (any depth; hidden files and folders skipped)."""
    if not folder.is_dir():
        raise SourceError(f"source folder {folder} does not exist or is not a folder")
    wanted = {extension.lower() for extension in extensions}
    for root, folders, files in os.walk(folder, followlinks=True):
        folders[:] = [name for name in folders if not name.startswith(".")]
        for name in files:
            if name.startswith(".") or os.path.splitext(name)[1].lower() not in wanted:
                continue
            path = os.path.join(root, name)
            relative = Path(os.path.relpath(path, folder)).as_posix()
            yield [check_key(key_from_relative_path(relative)), relative, path]


def iter_paths_file(list_file: Path) -> Iterator[list]:
    """``[key, origin, path]`` of each path in a list file; keys are relative to the list's folder (every path must
    lie under it). Read line by line."""
    base = list_file.parent.resolve()
    with open(list_file, encoding="utf-8", errors="surrogateescape") as handle:
        for number, line in enumerate(handle, start=1):
            entry = line.strip()
            if not entry or entry.startswith("#"):
                continue
            path = Path(entry).expanduser()
            path = path if path.is_absolute() else base / path
            relative = Path(os.path.relpath(os.path.normpath(path), base)).as_posix()
            if relative.startswith("../"):
                raise SourceError(
                    f"{list_file}:{number}: {entry} lies outside the list file's folder {base}; keys are paths "
                    f"relative to that folder, so put the list file in a folder that holds every listed image"
                )
            yield [check_key(key_from_relative_path(relative)), relative, str(path)]


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


def iter_dataset_rows(config: SourceConfig, name: str) -> tuple[Iterator[list], DatasetRowReader, str]:
    """``[key, origin, row]`` of each row (ids read a batch at a time), the row reader, and the dataset's
    fingerprint (it salts the list hash: another dataset with the same row count is another list)."""
    dataset = open_dataset(config.path, config.split, config.image_column)
    prefix = f"{name}/{config.split}"
    if config.id_column and config.id_column not in dataset.column_names:
        raise SourceError(f"dataset {config.path} has no id column {config.id_column!r}: {dataset.column_names}")

    def rows() -> Iterator[list]:
        if not config.id_column:
            for row in range(len(dataset)):
                yield [check_key(f"{prefix}/{row:09d}"), f"{name}:{config.split}:{row}", row]
            return
        row = 0
        for batch in dataset.select_columns([config.id_column]).iter(batch_size=10_000):
            for value in batch[config.id_column]:
                yield [check_key(f"{prefix}/{_row_id(value)}"), f"{name}:{config.split}:{row}", row]
                row += 1

    reader = DatasetRowReader(config.path, config.split, config.image_column)
    return rows(), reader, dataset._fingerprint


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


# ------------------------------------------------------------------------------------------------- image shards

#: Image member extensions in image shards, in order of preference when a sample holds several.
SHARD_IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "ppm", "pgm", "gif")
_HASH_SPACE = 1 << 64


def list_shard_urls(spec: str) -> list[str]:
    """The input shards, sorted (names only: nothing is opened)."""
    from shards.reader import expand_shard_urls

    try:
        urls = expand_shard_urls(spec)
    except FileNotFoundError as error:
        raise SourceError(str(error)) from error
    for url in urls:
        if not os.path.isfile(url):
            raise SourceError(f"image shards must be local files (random access by offset), got {url}")
    return [os.path.abspath(url) for url in urls]


def names_hash(urls: list[str]) -> str:
    """sha256 of the shard paths: every process compares its own listing with the main process's."""
    return hashlib.sha256("\n".join(urls).encode("utf-8", "surrogateescape")).hexdigest()


def shard_list_hash(urls: list[str]) -> str:
    """sha256 over each shard's path and size, in order: what the manifest compares on a rerun."""
    digest = hashlib.sha256()
    for url in urls:
        digest.update(f"{url}\t{os.path.getsize(url)}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def _split_member(name: str) -> tuple[str, str] | None:
    """WebDataset's rule: the key is the member path up to the first dot of its file name."""
    folder, file_name = posixpath.split(name)
    if "." not in file_name:
        return None
    stem, extension = file_name.split(".", 1)
    return (posixpath.join(folder, stem) if folder else stem), extension


def _members(url: str) -> dict[str, dict[str, tarfile.TarInfo]]:
    """Sample key -> extension -> member, by a header scan (no member is read)."""
    members: dict[str, dict[str, tarfile.TarInfo]] = {}
    with tarfile.open(url) as tar:
        for member in tar:
            split = _split_member(member.name) if member.isfile() else None
            if split is not None:
                members.setdefault(split[0], {})[split[1].lower()] = member
    return members


def count_samples(urls: list[str]) -> int:
    """Samples in every shard, one shard at a time (what ``sample_count`` is a fraction of)."""
    return sum(len(_members(url)) for url in urls)


@dataclass
class ShardSet:
    """The input shards and the seeded sample; :meth:`scan` lists one shard's kept inputs, sorted by key."""

    urls: list[str]
    name: str
    sample_count: int = 0
    sample_seed: int = 0
    total: int | None = None  # samples in every shard; counted only when sampling

    @property
    def threshold(self) -> int | None:
        """Keys hashing below this are kept; None keeps every sample."""
        if self.sample_count == 0 or self.total is None or self.sample_count >= self.total:
            return None
        return self.sample_count * _HASH_SPACE // self.total

    def keep(self, key: str) -> bool:
        threshold = self.threshold
        if threshold is None:
            return True
        seeded = hashlib.sha256(f"{self.sample_seed}\0{key}".encode("utf-8", "surrogateescape")).digest()
        return int.from_bytes(seeded[:8], "big") < threshold

    def scan(self, shard: int) -> list[InputItem]:
        """The kept inputs of one shard: each sample's preferred image member's offset and size (None: no image)."""
        url = self.urls[shard]
        items = []
        for sample_key, by_extension in _members(url).items():
            key = check_key(f"{self.name}/{sample_key}")
            if not self.keep(key):
                continue
            image = next((by_extension[ext] for ext in SHARD_IMAGE_EXTENSIONS if ext in by_extension), None)
            locator = (url, image.offset_data, image.size) if image is not None else None
            items.append(InputItem(key=key, origin=f"{url}#{sample_key}", locator=locator))
        items.sort(key=lambda item: item.key)
        return items

    def describe(self, path: str, previous: dict[str, Any] | None = None) -> dict[str, Any]:
        """The manifest's source record. Sampling needs the number of samples: counted here (streamed, nothing kept)
        unless ``previous`` (the stored manifest's source) counted the same shards of the same sizes."""
        names_and_sizes = shard_list_hash(self.urls)
        if self.sample_count and self.total is None:
            if previous and previous.get("shard_list_hash") == names_and_sizes and previous.get("sample_total"):
                self.total = int(previous["sample_total"])
            else:
                self.total = count_samples(self.urls)
        return {
            "kind": "shards",
            "path": path,
            "name": self.name,
            "shards": len(self.urls),
            "shard_list_hash": names_and_sizes,
            "sample_count": self.sample_count,
            "sample_seed": self.sample_seed,
            "sample_total": self.total,
        }


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


# -------------------------------------------------------------------------------------- listing and attaching

def _kind(config: SourceConfig) -> str:
    kind = detect_kind(config.path) if config.kind == "auto" else config.kind
    if kind not in ("folder", "list", "datasets", "shards"):
        raise SourceError(f"unknown source.kind {kind!r}")
    return kind


def _resolved_path(config: SourceConfig) -> str:
    local = Path(config.path).expanduser()
    return str(local.resolve()) if local.exists() else config.path


def _shard_set(config: SourceConfig) -> ShardSet:
    urls = list_shard_urls(config.path)
    return ShardSet(urls, default_name(config, "shards"), config.sample_count, config.sample_seed)


def open_source(config: SourceConfig, index_path: Path, previous: dict[str, Any] | None = None) -> SourceListing:
    """Main process: list ``config``'s inputs. Folders, lists and datasets are sorted, sampled and flagged into the
    index at ``index_path``; image shards are listed by name (``previous``: the stored manifest's source record,
    whose sample total is reused for the same shards). The same config gives the same list everywhere."""
    kind = _kind(config)
    if kind == "shards":
        shards = _shard_set(config)
        description = shards.describe(_resolved_path(config), previous)
        kept = "every sample" if shards.threshold is None else f"~{config.sample_count} of {shards.total} samples"
        logger.info("source %s (shards): %d shards, %s", config.path, len(shards.urls), kept)
        return SourceListing(description=description, reader=TarMemberReader(), shards=shards)
    fingerprint = ""
    if kind == "folder":
        records, reader = iter_folder(Path(config.path).expanduser(), config.extensions), FileReader()
    elif kind == "list":
        records, reader = iter_paths_file(Path(config.path).expanduser()), FileReader()
    else:
        records, reader, fingerprint = iter_dataset_rows(config, default_name(config, kind))
    index_path.parent.mkdir(parents=True, exist_ok=True)
    written = write_index(records, index_path, config.sample_count, config.sample_seed, salt=fingerprint)
    if not written.listed:
        raise SourceError(f"source {config.path} ({kind}) holds no inputs")
    description = {
        "kind": kind,
        "path": _resolved_path(config),
        "name": default_name(config, kind) if kind == "datasets" else None,
        "split": config.split if kind == "datasets" else None,
        "image_column": config.image_column if kind == "datasets" else None,
        "id_column": config.id_column if kind == "datasets" else None,
        "listed": written.listed,
        "inputs": written.inputs,
        "sample_count": config.sample_count,
        "sample_seed": config.sample_seed,
        "list_hash": written.list_hash,
    }
    logger.info("source %s (%s): %d inputs of %d listed", config.path, kind, written.inputs, written.listed)
    return SourceListing(description=description, reader=reader, index=index_path)


def attach_source(config: SourceConfig, description: dict[str, Any], index_path: Path, shard_names: str | None
                  ) -> SourceListing:
    """Other processes: the main process's listing, read from the index it wrote, or this node's own listing of
    the shard names, checked against the main process's (``shard_names``: its :func:`names_hash`)."""
    if description["kind"] != "shards":
        reader = (DatasetRowReader(config.path, config.split, config.image_column)
                  if description["kind"] == "datasets" else FileReader())
        if not Path(str(index_path)).exists():
            raise SourceError(f"the main process's input index {index_path} is not visible here: every node must "
                              "see the same output.dir (a shared folder)")
        return SourceListing(description=description, reader=reader, index=index_path)
    shards = _shard_set(config)
    if names_hash(shards.urls) != shard_names:
        raise SourceError(f"this node lists other shards under {config.path} than the main process: every node "
                          "must see the same input shards")
    shards.total = description.get("sample_total")
    return SourceListing(description=description, reader=TarMemberReader(), shards=shards)
