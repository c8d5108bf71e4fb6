"""Benchmark test splits kept out of training and model selection.

Every import of evaluation data marks its samples (``eval_split`` in the sample json, ``shards.format``); the
training and validation readers screen each raw sample with :class:`EvalSplitGuard` before decoding and stop at the
first marked one, unless ``data.allow_eval_split`` is true.
"""

from __future__ import annotations

import json

from shards.format import marked_eval_split


class EvalSplitError(ValueError):
    """A training or validation reader met a sample of a benchmark's evaluation split (a ValueError: the training
    command prints it as a usage error)."""


class EvalSplitGuard:
    """Reader screen (``build_pipeline(screen=...)``): refuses a sample whose json marks it as part of an evaluation
    split, naming its shard and the key that allows it. A class, not a closure: DataLoader workers pickle it."""

    def __init__(self, role: str) -> None:
        self.role = role  # "training" or "validation", for the message

    def __call__(self, raw: dict) -> None:
        try:
            record = json.loads(raw["json"])
        except (KeyError, ValueError):
            return  # not a readable record: the decoder counts it as damaged
        split = marked_eval_split(record) if isinstance(record, dict) else None
        if split is not None:
            raise EvalSplitError(
                f"{raw.get('__url__')}: sample {raw.get('__key__')!r} belongs to the evaluation split {split!r}, "
                f"which {self.role} does not read (a model must not train or be selected on its test set). Take "
                "these shards out of --data.train / --data.val, or set --data.allow_eval_split true to read them "
                "anyway (the resolved config and the reports then say so)"
            )


def eval_split_screen(allow_eval_split: bool, role: str) -> EvalSplitGuard | None:
    """The screen of a ``role`` reader: none where ``data.allow_eval_split`` is true."""
    return None if allow_eval_split else EvalSplitGuard(role)
