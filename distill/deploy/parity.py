"""The parity check every export runs: PyTorch and ONNX Runtime on the same batches, max |difference| against the
PyTorch output's range. A graph that does not compute what the model computes is a :class:`ParityError`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from distill.deploy.runtime import INPUT_NAME, OUTPUT_NAME, images_to_batch, load_picture, onnx_session

#: Largest accepted max |onnx - torch| as a fraction of the PyTorch output's range (max - min).
PARITY_TOLERANCE = 1e-4
#: Batch sizes the parity check runs at: 1, and one above 1 to exercise the dynamic batch axis.
PARITY_BATCHES = (1, 3)



class ParityError(RuntimeError):
    """The exported graph does not compute what the PyTorch model computes."""




@dataclass
class ParityCase:
    """One input batch compared. ``relative_difference`` = ``max_abs_difference`` / ``output_range``."""

    name: str
    batch: int
    max_abs_difference: float
    output_range: float
    relative_difference: float
    passed: bool


@dataclass
class ParityReport:
    tolerance: float
    cases: list[ParityCase] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(case.passed for case in self.cases)

    @property
    def worst(self) -> ParityCase:
        return max(self.cases, key=lambda case: case.relative_difference)

    def to_dict(self) -> dict:
        return {"tolerance": self.tolerance, "passed": self.passed, "cases": [asdict(case) for case in self.cases]}

    def table(self) -> str:
        lines = [f"{'input':<14} {'batch':>5} {'max |diff|':>11} {'range':>10} {'diff/range':>11}  ok"]
        for case in self.cases:
            lines.append(
                f"{case.name:<14} {case.batch:>5} {case.max_abs_difference:>11.3e} {case.output_range:>10.4g} "
                f"{case.relative_difference:>11.3e}  {'yes' if case.passed else 'NO'}"
            )
        return "\n".join(lines)


def generated_scenes(count: int, width: int, height: int, first_seed: int) -> list[np.ndarray]:
    try:
        from shards.scenes import render_scene
    except ImportError:
        return []
    return [render_scene(first_seed + index, width=width, height=height).image for index in range(count)]


def parity_inputs(
    height: int, width: int, seed: int = 0, pictures: Sequence[str | os.PathLike] = ()
) -> dict[str, list[np.ndarray]]:
    """Named lists of uint8 RGB pictures, at least ``max(PARITY_BATCHES)`` each, the parity check runs on.

    ``random`` (uniform noise: exercises every input value), ``scene`` (generated rooms from ``shards.scenes``) and,
    when the user names picture files (export's ``--parity-image``), ``pictures``: the inputs are the same on every
    machine unless the user adds their own.
    """
    rng = np.random.default_rng(seed)
    need = max(PARITY_BATCHES)
    sets: dict[str, list[np.ndarray]] = {
        "random": [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(need)]
    }
    scenes = generated_scenes(need, width, height, first_seed=seed)
    if scenes:
        sets["scene"] = scenes
    if pictures:
        loaded = [load_picture(path) for path in pictures]
        sets["pictures"] = [loaded[index % len(loaded)] for index in range(need)]
    return sets


def check_parity(
    model: nn.Module,
    onnx_path: str | os.PathLike,
    inputs: dict[str, list[np.ndarray]],
    tolerance: float = PARITY_TOLERANCE,
    raise_on_failure: bool = True,
) -> ParityReport:
    """Run PyTorch (fp32, CPU) and ONNX Runtime on the same batches; compare max |difference| to the output range.

    Raises :class:`ParityError` (unless ``raise_on_failure`` is false) when any case exceeds ``tolerance``.
    """
    session = onnx_session(onnx_path, providers=["CPUExecutionProvider"], spinning=False)
    height, width = session.get_inputs()[0].shape[2:4]
    batches = {
        (name, batch): images_to_batch(pictures[:batch], width, height)  # (B, 3, H, W) in [0, 1]
        for name, pictures in inputs.items()
        for batch in PARITY_BATCHES
    }
    # All of PyTorch first, then all of ONNX Runtime: interleaved, the two thread pools spin against each other
    # (about 10x slower on 2 cores).
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    was_training = model.training
    model.eval().cpu()
    try:
        with torch.no_grad():
            expected = {key: model(torch.from_numpy(images)).numpy() for key, images in batches.items()}
    finally:
        model.train(was_training).to(device)
    report = ParityReport(tolerance=tolerance)
    for (name, batch), images in batches.items():
        (actual,) = session.run([OUTPUT_NAME], {INPUT_NAME: images})
        report.cases.append(_compare(name, batch, expected[(name, batch)], actual, tolerance))
    del session
    if raise_on_failure and not report.passed:
        raise ParityError(failure_message(report, onnx_path))
    return report


def _compare(name: str, batch: int, expected: np.ndarray, actual: np.ndarray, tolerance: float) -> ParityCase:
    if actual.shape != expected.shape:
        return ParityCase(name, batch, float("inf"), 0.0, float("inf"), False)
    difference = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    max_difference = float(difference.max()) if np.isfinite(difference).all() else float("inf")
    output_range = float(expected.max() - expected.min())
    scale = output_range if output_range > 0 else max(float(np.abs(expected).max()), np.finfo(np.float32).tiny)
    relative = max_difference / scale
    return ParityCase(name, batch, max_difference, output_range, relative, relative <= tolerance)


def failure_message(report: ParityReport, onnx_path: str | os.PathLike) -> str:
    worst = report.worst
    return (
        f"ONNX parity check FAILED for {onnx_path}: max |onnx - torch| = {worst.max_abs_difference:.3e} on "
        f"'{worst.name}' at batch {worst.batch}, which is {worst.relative_difference:.3e} of the output range "
        f"{worst.output_range:.4g} (tolerance {report.tolerance:.0e}). The graph does not compute what the model "
        "computes: look for data-dependent Python control flow, in-place ops on inputs, or ops the exporter traces "
        "as constants (try another --opset).\n" + report.table()
    )
