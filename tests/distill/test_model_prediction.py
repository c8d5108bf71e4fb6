"""What a ``DepthPrediction`` holds, by the model's kind: ``.values`` as the model gives them, ``.inverse_depth``
for any model, ``.metres`` for a metric one (a relative one raises ``NotMetricError``), as the README's snippet uses
them."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from distill import DepthModel, DepthPrediction, NotMetricError  # noqa: E402
from shards.format import METRIC_DEPTH, RELATIVE_INVERSE_DEPTH, inverse_depth  # noqa: E402
from shards.tools.scenes import render_scene  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PICTURE = render_scene(2, width=120, height=90).image  # uint8 (90, 120, 3)


def test_a_relative_model_gives_inverse_depth_and_refuses_metres(save_tiny_student: Callable[..., Path]) -> None:
    depth = DepthModel.from_pretrained(save_tiny_student("relative"), input_size=(96, 64)).predict(PICTURE)
    assert depth.kind == RELATIVE_INVERSE_DEPTH and not depth.is_metric
    assert depth.inverse_depth.shape == (90, 120) and depth.inverse_depth.dtype == np.float32
    np.testing.assert_array_equal(depth.inverse_depth, depth.values)
    with pytest.raises(NotMetricError, match=r"relative_inverse_depth .*not metres: use \.inverse_depth.*metric model"):
        _ = depth.metres
    assert issubclass(NotMetricError, ValueError)


@pytest.mark.parametrize("source", ["student", "teacher"])
def test_a_metric_model_gives_metres_directly(
    source: str, save_tiny_student: Callable[..., Path], tmp_path: Path
) -> None:
    """A student trained on metres and a metric teacher (a tiny random ZoeDepth, the README's example family)."""
    if source == "student":
        model = DepthModel.from_pretrained(save_tiny_student("metric", prediction="depth"), input_size=(96, 64))
    else:
        from pseudolabel.tiny_teacher import save_tiny_teacher

        model = DepthModel.from_pretrained(save_tiny_teacher(tmp_path / "tiny-zoedepth", "zoedepth"))
    depth = model.predict(PICTURE)
    assert depth.kind == METRIC_DEPTH and depth.is_metric
    assert depth.metres is depth.values and depth.metres.shape == (90, 120) and depth.metres.min() >= 0
    np.testing.assert_allclose(depth.inverse_depth, inverse_depth(depth.values), rtol=1e-6)
    assert depth.inverse_depth.dtype == np.float32


def test_a_prediction_of_an_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="kind must be"):
        DepthPrediction(np.zeros((2, 2), np.float32), "depth")
