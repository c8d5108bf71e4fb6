"""Seeded fuzzing of the checksums: every corruption that changes what a careless reader gets is named by verify,
the checked reader never yields a damaged sample, and it counts exactly the samples it did not deliver."""

from __future__ import annotations

import logging
from collections import Counter

import pytest

from shards.tools.testing import CORRUPTIONS, SHARD_KINDS, originals, run_trial, write_template

TRIALS = 320  # 40 per corruption, in turn on generated scenes, photo-like frames and two-teacher samples


@pytest.fixture(scope="module")
def templates(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz")
    made = {kind: write_template(folder / kind, kind, samples=6, seed=index) for index, kind in enumerate(SHARD_KINDS)}
    return folder, {kind: (path, originals(path)) for kind, path in made.items()}


def test_every_damaged_sample_is_named_never_yielded_and_counted(templates):
    folder, made = templates
    logging.disable(logging.WARNING)  # thousands of expected skip warnings
    try:
        changed = Counter()
        for trial_index in range(TRIALS):
            corruption = CORRUPTIONS[trial_index % len(CORRUPTIONS)]
            kind = SHARD_KINDS[(trial_index // len(CORRUPTIONS)) % len(SHARD_KINDS)]
            template, truth = made[kind]
            trial = run_trial(template, truth, folder / "work", corruption, seed=trial_index)
            where = f"trial {trial_index} ({corruption} on {kind})"
            if trial.changed:
                changed[corruption] += 1
                assert trial.flagged, f"{where}: verify passed a shard whose samples {sorted(trial.damaged)} changed"
            assert not trial.missed, f"{where}: verify did not name {sorted(trial.missed)}"
            assert trial.yielded_damaged == 0, f"{where}: the reader yielded a damaged sample"
            assert trial.count_error == 0, f"{where}: {trial.counted} counted, {6 - trial.delivered} not delivered"
    finally:
        logging.disable(logging.NOTSET)
    assert set(changed) == set(CORRUPTIONS)  # every kind of damage really damaged something
