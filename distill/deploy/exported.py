"""Open any exported depth file (``.onnx``, ``.tflite``, ``.pte``) with its format's runner, and the one rule for a
file that does not say what it outputs.

Every reader of a model file comes here: ``DepthModel`` (so evaluate, compare, predict, export's gate and the
benchmarks) through :func:`distill.deploy.model.load_runner`, and the labelling stage, whose file teacher runs
through the same runners (the one crossing from ``pseudolabel`` into ``distill``, lazily: docs/decisions.md,
"Teachers"). The runners read the input size, layout and quantisation from the file; what the output holds cannot
always be read: our exports state it (:data:`distill.deploy.runtime.KIND_KEY`), a file from elsewhere usually does
not. Then the caller's ``kind`` decides; without one, :func:`open_exported` either assumes relative inverse depth and
says so (``assume_kind=True``: a prediction can be looked at and thrown away) or refuses (labels are stored and
trained on: a metric map read as relative would be a wrong label no later check catches). The sentence is the same
(:func:`distill.deploy.runtime.unknown_kind_message`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from distill.deploy.runtime import (
    EXPORTED_SUFFIXES,
    DepthRunner,
    OnnxRunner,
    images_to_batch,
    recorded_kind,
    unknown_kind_message,
)
from shards.cli.errors import UserError, one_line

logger = logging.getLogger(__name__)

#: What a user of a file needs from here: open it, and feed it pictures as DepthModel does (``images_to_batch``).
__all__ = ["EXPORTED_SUFFIXES", "UnknownKindError", "images_to_batch", "open_exported", "stated_kind"]


class UnknownKindError(UserError):
    """A model file that does not say what it outputs, opened where the kind may not be assumed."""


def stated_kind(runner: DepthRunner) -> str | None:
    """What the file itself says it outputs: the ONNX graph's metadata, or the ``<file>.json`` record our export
    writes beside every file; None when it says nothing."""
    return getattr(runner, "stated_kind", None) or recorded_kind(Path(runner.path))


def _open(path: Path, width: int | None, height: int | None, threads: int | None, kind: str | None) -> DepthRunner:
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        try:
            return OnnxRunner.open(path, width=width, height=height, threads=threads, kind=kind)
        except (ImportError, ValueError):
            raise
        except Exception as error:  # onnxruntime's own errors for a file that is not a model: InvalidProtobuf, ...
            raise ValueError(f"not a readable ONNX model ({one_line(error)[:300]})") from error
    if suffix == ".tflite":
        from distill.deploy.litert import TfliteRunner

        return TfliteRunner(path, width=width, height=height, threads=threads, kind=kind)
    from distill.deploy.executorch_pte import PteRunner

    return PteRunner(path, width=width, height=height, threads=threads, kind=kind)


def open_exported(
    path: str | os.PathLike,
    *,
    width: int | None = None,
    height: int | None = None,
    threads: int | None = None,
    kind: str | None = None,
    model_key: str = "--model",
    kind_key: str = "--kind",
    assume_kind: bool = True,
) -> DepthRunner:
    """The runner of an exported file (``EXPORTED_SUFFIXES``). ``width`` / ``height`` apply to a graph whose size is
    free (a fixed file's size is its own: a different one is an error); ``kind`` states the output of a file that
    does not say (it must agree with one that does). A file of unknown kind without ``kind``: a warning naming the
    assumed ``relative_inverse_depth`` (``assume_kind``), else :class:`UnknownKindError`. A file the runtime cannot
    read is a :class:`UserError` naming ``model_key``; a missing runtime stays an ``ImportError`` naming its extra."""
    path = Path(path)
    if path.suffix.lower() not in EXPORTED_SUFFIXES or not path.is_file():
        raise UserError(f"{model_key} {path}: no such {' / '.join(EXPORTED_SUFFIXES)} file")
    try:
        runner = _open(path, width, height, threads, kind)
    except ValueError as error:  # our checks (names, layout, size, a contradicting kind) or an unreadable file
        raise UserError(f"{model_key} {path}: {one_line(error)}") from error
    if kind is None and stated_kind(runner) is None:
        message = unknown_kind_message(path, kind_key)
        if not assume_kind:
            raise UnknownKindError(message)
        logger.warning("%s; assuming %s", message, runner.kind)
    return runner
