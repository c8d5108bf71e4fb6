"""The distillation stage: shards -> student; evaluation, export, predict.

The Python API is one class: ``from distill import DepthModel`` (:mod:`distill.deploy.model`), whose ``predict``
gives :class:`DepthPrediction` maps (``.inverse_depth`` for any model; ``.metres`` for a metric one, where a relative
one raises :class:`NotMetricError`); loaded lazily so that ``import distill.<module>`` stays as light as the module
itself.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DepthModel", "DepthPrediction", "NotMetricError"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from distill.deploy import model

        return getattr(model, name)
    raise AttributeError(f"module 'distill' has no attribute {name!r}")
