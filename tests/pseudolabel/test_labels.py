"""Label coding equals the shard format's own encoder exactly (both paths), and builds the same members."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pseudolabel.run import LabelBatch, code_batch_on_device, code_map
from shards.format import (
    LABEL_CODECS,
    RELATIVE_INVERSE_DEPTH,
    SampleMeta,
    encode_jpeg,
    encode_label_codes,
    encode_sample,
    sample_members,
)
from tests.pseudolabel.conftest import gradient_rgb


def maps() -> torch.Tensor:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:96, 0:128]
    smooth = 1.0 / (1.0 + 0.02 * x + 0.01 * y)
    noisy = rng.random((96, 128)) * 37.5
    tiny_range = 5.0 + rng.random((96, 128)) * 1e-4  # float32 steps near a code step
    ties = np.round(rng.random((96, 128)) * 8) / 8  # values that hit .5 exactly after scaling
    with_zeros = np.where(rng.random((96, 128)) < 0.3, 0.0, rng.random((96, 128)))  # ReLU zeros are valid
    return torch.from_numpy(np.stack([smooth, noisy, tiny_range, ties, with_zeros]).astype(np.float32))


def coded_both_ways(depth: torch.Tensor) -> dict[str, list]:
    return {"numpy": [code_map(one) for one in depth.numpy()], "torch": code_batch_on_device(depth)}


@pytest.mark.parametrize("path", ["numpy", "torch"])
def test_codes_and_ranges_equal_encode_label_codes_exactly(path):
    depth = maps()
    for index, (codes, label_range, reject) in enumerate(coded_both_ways(depth)[path]):
        expected_codes, expected_range = encode_label_codes(depth[index].numpy())
        assert reject is None and label_range == expected_range
        assert codes.dtype == np.uint16 and np.array_equal(codes, expected_codes)


@pytest.mark.parametrize("path", ["numpy", "torch"])
def test_non_finite_and_constant_maps_are_rejected_by_name(path):
    depth = maps()[:3].clone()
    depth[0, 5, 5] = float("nan")
    depth[1] = 2.5
    depth[2, 0, 0] = float("inf")
    coded = coded_both_ways(depth)[path]
    assert [reject[0] for _, _, reject in coded] == ["non_finite_label", "constant_label", "non_finite_label"]
    assert all(codes is None and label_range is None for codes, label_range, _ in coded)


def test_a_cpu_batch_is_coded_per_map_on_demand():
    batch = LabelBatch(maps())
    assert batch.coded is None
    assert np.array_equal(batch.code(1)[0], encode_label_codes(maps()[1].numpy())[0])


@pytest.mark.parametrize("codec", sorted(LABEL_CODECS))
def test_members_equal_encode_sample(codec):
    image = gradient_rgb(128, 96)
    depth = maps()[1].numpy()
    codes, label_range, _ = code_map(depth)
    meta = dict(source="a.png", kind=RELATIVE_INVERSE_DEPTH, source_size=(128, 96), teacher="t", scale=0.5)
    ours = sample_members("a", encode_jpeg(image), codes, label_range, SampleMeta(**meta), codec)
    theirs = encode_sample("a", image, depth, SampleMeta(**meta), codec=codec)
    assert ours == theirs
