"""Sources: folder trees, path lists, datasets and image shards give sorted inputs with the documented keys
(docs/decisions.md)."""

from __future__ import annotations

import pytest
import webdataset as wds
from PIL import Image

from pseudolabel.config import SourceConfig
from pseudolabel.plan import list_hash
from pseudolabel.sources import SourceError, SourceListing, detect_kind, open_source
from tests.pseudolabel.conftest import encode, gradient_rgb


@pytest.fixture
def listed(tmp_path):
    """``open_source`` with its index in a fresh folder each call."""
    calls = iter(range(1000))

    def list_source(config: SourceConfig) -> SourceListing:
        return open_source(config, tmp_path / f"index{next(calls)}" / "index.jsonl")

    return list_source


def png(seed: int = 0) -> bytes:
    return encode(Image.fromarray(gradient_rgb(64, 48, seed=seed)), "PNG")


@pytest.fixture
def image_tree(tmp_path):
    """A Places365-like tree: nested folders, mixed extensions, a non-image, a hidden folder, a dotted name."""
    root = tmp_path / "places"
    files = ["b/bedroom/00000002.jpg", "a/airfield/00000001.JPG", "a/airfield/00000003.png",
             "c/v1.2/shot.final.png", "c/readme.txt", ".cache/x.png"]
    for index, name in enumerate(files):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(png(index))
    return root


def test_folder_tree_is_listed_sorted_with_path_keys(image_tree, listed):
    listing = listed(SourceConfig(path=str(image_tree), sample_count=0))
    assert [item.key for item in listing.items()] == [
        "a/airfield/00000001", "a/airfield/00000003", "b/bedroom/00000002", "c/v1.2/shot_final"]
    assert listing.items()[0].origin == "a/airfield/00000001.JPG"
    assert listing.reader(listing.items()[0]) == (image_tree / "a/airfield/00000001.JPG").read_bytes()
    assert listing.description["kind"] == "folder" and listing.description["inputs"] == 4


def test_duplicate_keys_are_flagged_never_overwritten(image_tree, listed):
    (image_tree / "a/airfield/00000001.png").write_bytes(png(9))  # same key as 00000001.JPG
    items = listed(SourceConfig(path=str(image_tree), sample_count=0)).items()
    same = [item for item in items if item.key == "a/airfield/00000001"]
    assert [item.duplicate for item in same] == [False, True]
    assert same[0].origin == "a/airfield/00000001.JPG"


def test_seeded_sample_is_reproducible_and_sorted(tmp_path, listed):
    root = tmp_path / "many"
    root.mkdir()
    for index in range(30):
        (root / f"{index:03d}.png").write_bytes(b"x")
    pick = [listed(SourceConfig(path=str(root), sample_count=10, sample_seed=seed)) for seed in (1, 1, 2)]
    keys = [[item.key for item in listing.items()] for listing in pick]
    assert keys[0] == keys[1] == sorted(keys[0]) and len(keys[0]) == 10
    assert keys[0] != keys[2]
    assert pick[0].description["list_hash"] == pick[1].description["list_hash"] != pick[2].description["list_hash"]
    assert pick[0].description["listed"] == 30


def test_list_file_keys_are_relative_to_its_folder(image_tree, listed):
    listing_file = image_tree / "lists" / "train.txt"
    listing_file.parent.mkdir()
    listing_file.write_text(f"# training images\n../b/bedroom/00000002.jpg\n\n{image_tree}/a/airfield/00000003.png\n")
    with pytest.raises(SourceError, match="outside the list file's folder"):
        listed(SourceConfig(path=str(listing_file), sample_count=0))
    listing_file = image_tree / "train.txt"
    listing_file.write_text(f"b/bedroom/00000002.jpg\n{image_tree}/a/airfield/00000003.png\n")
    listing = listed(SourceConfig(path=str(listing_file), sample_count=0))
    assert listing.description["kind"] == "list"
    assert [item.key for item in listing.items()] == ["a/airfield/00000003", "b/bedroom/00000002"]


@pytest.fixture
def saved_dataset(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = {"image": [{"bytes": png(seed), "path": None} for seed in range(5)], "id": [f"img.{i}" for i in range(5)]}
    dataset = datasets.Dataset.from_dict(rows).cast_column("image", datasets.Image())
    folder = tmp_path / "tiny_set"
    datasets.DatasetDict({"train": dataset}).save_to_disk(str(folder))
    return folder


def test_datasets_rows_keyed_by_row_or_id_column(saved_dataset, listed):
    listing = listed(SourceConfig(path=str(saved_dataset), sample_count=0))
    assert listing.description["kind"] == "datasets"
    assert [item.key for item in listing.items()][:2] == ["tiny_set/train/000000000", "tiny_set/train/000000001"]
    assert listing.reader(listing.items()[3]) == png(3)
    by_id = listed(SourceConfig(path=str(saved_dataset), id_column="id", name="mine", sample_count=0))
    assert by_id.items()[0].key == "mine/train/img_0"
    with pytest.raises(SourceError, match="splits"):
        listed(SourceConfig(path=str(saved_dataset), split="test", sample_count=0))


def test_missing_hub_dataset_says_how_to_download(listed):
    with pytest.raises(SourceError, match="huggingface-cli download --repo-type dataset"):
        listed(SourceConfig(kind="datasets", path="no-such-org/no-such-dataset", sample_count=0))


@pytest.fixture
def image_shards(tmp_path):
    folder = tmp_path / "webimages"
    folder.mkdir()
    for shard in range(2):
        with wds.TarWriter(str(folder / f"images-{shard:06d}.tar")) as sink:
            for index in range(3):
                sink.write({"__key__": f"s{shard}/{index:04d}", "jpg": png(shard * 3 + index), "cls": b"1"})
            sink.write({"__key__": f"s{shard}/caption_only", "txt": b"no image here"})
    return folder


def test_image_shards_are_read_by_offset_and_keyed_by_set_name(image_shards, listed):
    listing = listed(SourceConfig(path=str(image_shards), sample_count=0))
    assert listing.description["kind"] == "shards"
    keys = [item.key for item in listing.items()]
    assert keys[:2] == ["webimages/s0/0000", "webimages/s0/0001"] and len(keys) == 8
    assert listing.reader(listing.items()[1]) == png(1)
    caption_only = next(item for item in listing.items() if item.key.endswith("caption_only"))
    assert caption_only.locator is None  # becomes a no_image_member reject
    named = listed(SourceConfig(path=str(image_shards / "images-{000000..000001}.tar"), name="set",
                                     sample_count=0))
    assert named.items()[0].key == "set/s0/0000"


def test_auto_kind_detection(image_tree, image_shards, tmp_path):
    assert detect_kind(str(image_tree)) == "folder"
    assert detect_kind(str(image_shards)) == "shards"
    assert detect_kind(str(image_shards / "images-*.tar")) == "shards"
    (tmp_path / "paths.txt").write_text("")
    assert detect_kind(str(tmp_path / "paths.txt")) == "list"
    assert detect_kind("org/name") == "datasets"
    with pytest.raises(SourceError, match="does not exist"):
        detect_kind("./missing/folder")


def test_list_hash_changes_with_the_list(image_tree, listed):
    items = listed(SourceConfig(path=str(image_tree), sample_count=0)).items()
    assert list_hash(items) == list_hash(list(items)) != list_hash(items[:-1])
