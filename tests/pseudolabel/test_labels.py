"""Batched label coding equals the shard format's own encoder exactly, and builds the same members."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pseudolabel.labels import code_labels, sample_members
from shards.codec import LABEL_CODECS, encode_jpeg, encode_sample
from shards.format import RELATIVE_INVERSE_DEPTH, SampleMeta, encode_label_codes
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


def test_codes_and_ranges_equal_encode_label_codes_exactly():
    depth = maps()
    coded = code_labels(depth)
    assert coded.codes.dtype == np.uint16 and coded.codes.shape == depth.shape
    for index in range(depth.shape[0]):
        codes, label_range = encode_label_codes(depth[index].numpy())
        assert coded.rejects[index] is None
        assert coded.ranges[index] == label_range
        assert np.array_equal(coded.codes[index], codes)


def test_non_finite_and_constant_maps_are_rejected_by_name():
    depth = maps()[:3].clone()
    depth[0, 5, 5] = float("nan")
    depth[1] = 2.5
    depth[2, 0, 0] = float("inf")
    coded = code_labels(depth)
    assert [reject[0] for reject in coded.rejects] == ["non_finite_label", "constant_label", "non_finite_label"]
    assert coded.ranges == [None, None, None] and not coded.codes.any()


@pytest.mark.parametrize("codec", sorted(LABEL_CODECS))
def test_members_equal_encode_sample(codec):
    image = gradient_rgb(128, 96)
    depth = maps()[1].numpy()
    coded = code_labels(torch.from_numpy(depth)[None])
    meta = dict(source="a.png", kind=RELATIVE_INVERSE_DEPTH, source_size=(128, 96), teacher="t", scale=0.5)
    ours = sample_members("a", encode_jpeg(image), coded.codes[0], coded.ranges[0], SampleMeta(**meta), codec)
    theirs = encode_sample("a", image, depth, SampleMeta(**meta), codec=codec)
    assert ours == theirs
