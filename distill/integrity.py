"""How many training samples were damaged or lost: worker counts gathered, logged per interval, and a limit.

Each training reader (a DataLoader worker, or the training process itself) counts in a ``shards`` ``SkipCounter``
the samples it read, skipped as damaged and lost to a broken tar. Its cumulative counts ride along with every batch
(``batch["reads"]``, attached in ``distill.data``); the loader takes them off in the training process and keeps the
latest of each reader here, in the :class:`ReadTally` of the run's data config. At each log interval
:func:`log_data_integrity` sums the interval over every process, returns the scalars to log, and stops the run when
more than ``data.max_damaged_fraction`` of the samples read so far was damaged or lost, naming the worst shards.
"""

from __future__ import annotations

import weakref
from collections import Counter
from typing import Any

import torch

from shards.tarstream import LOST_TAR_ENDED, LOST_TAR_ERROR, over_limit

#: Reasons in a fixed order, so that every process reduces the same vector.
SKIP_REASONS = ("checksum", "decode", "error")
LOST_REASONS = (LOST_TAR_ERROR, LOST_TAR_ENDED)
READS_FIELD = "reads"


class DamagedDataError(RuntimeError):
    """Too large a share of the training samples is damaged or lost; the message names the shards to check."""


class ReadTally:
    """The latest cumulative counts of every reader of one run, and the run's totals over every process."""

    def __init__(self) -> None:
        self._latest: dict[str, dict[str, Any]] = {}
        self._taken = torch.zeros(1 + len(SKIP_REASONS) + len(LOST_REASONS), dtype=torch.int64)
        self.run = torch.zeros_like(self._taken)  # summed over processes, the same on every rank

    def record(self, reads: dict[str, Any]) -> None:
        """One batch's counts of its reader (cumulative for that reader, so the latest replaces the earlier)."""
        self._latest[reads["reader"]] = reads

    def vector(self) -> torch.Tensor:
        """This process's totals: [read, skipped by reason..., lost by reason...]."""
        skipped, lost, read = Counter(), Counter(), 0
        for reads in self._latest.values():
            read += reads["read"]
            skipped.update(reads["skipped"])
            lost.update(reads["lost"])
        values = [read, *(skipped[name] for name in SKIP_REASONS), *(lost[name] for name in LOST_REASONS)]
        return torch.tensor(values, dtype=torch.int64)

    def take_interval(self) -> torch.Tensor:
        """This process's counts since the last call."""
        now = self.vector()
        interval, self._taken = now - self._taken, now
        return interval

    def shards(self) -> Counter:
        """Shard -> samples skipped or lost, in this process."""
        total: Counter = Counter()
        for reads in self._latest.values():
            total.update(reads["shards"])
        return total


_TALLIES: dict[int, ReadTally] = {}


def tally_for(config: object) -> ReadTally:
    """The tally of the run whose data config is ``config`` (one per run, however many loaders it builds)."""
    key = id(config)
    if key not in _TALLIES:
        _TALLIES[key] = ReadTally()
        weakref.finalize(config, _TALLIES.pop, key, None)
    return _TALLIES[key]


def interval_scalars(interval: torch.Tensor, run: torch.Tensor) -> dict[str, float]:
    """``data/...`` scalars: this interval's samples read, skipped and lost (by reason), and the run's damaged share."""
    read, skipped, lost = _split(interval)
    run_read, run_skipped, run_lost = _split(run)
    damaged = sum(run_skipped.values()) + sum(run_lost.values())
    scalars = {"data/read": read, "data/skipped": sum(skipped.values()), "data/lost": sum(lost.values())}
    scalars.update({f"data/skipped_{name}": value for name, value in skipped.items()})
    scalars.update({f"data/lost_{name}": value for name, value in lost.items()})
    scalars["data/damaged_fraction"] = damaged / max(run_read + sum(run_lost.values()), 1.0)
    return scalars


def log_data_integrity(accelerator: Any, data_config: Any) -> dict[str, float]:
    """Every process calls this at a log interval: the interval's counts summed over processes, as scalars.

    Raises :class:`DamagedDataError` on every process at once when the run's damaged share exceeds
    ``data.max_damaged_fraction``."""
    tally = tally_for(data_config)
    interval = tally.take_interval().to(accelerator.device)
    interval = accelerator.reduce(interval, reduction="sum").cpu()
    tally.run += interval
    scalars = interval_scalars(interval, tally.run)
    run_read, run_skipped, run_lost = _split(tally.run)
    damaged = int(sum(run_skipped.values()) + sum(run_lost.values()))
    total = int(run_read + sum(run_lost.values()))
    if over_limit(damaged, total, data_config.max_damaged_fraction):
        from accelerate.utils import gather_object

        worst: Counter = Counter()
        for shards in gather_object([tally.shards()]):
            worst.update(shards)
        raise DamagedDataError(damaged_message(damaged, total, data_config, worst))
    return scalars


def damaged_message(damaged: int, total: int, data_config: Any, worst: Counter) -> str:
    named = "\n  ".join(f"{url}: {count} sample(s)" for url, count in worst.most_common(10)) or "(none named)"
    sets = " ".join(data_config.train_sets())
    return (
        f"{damaged} of {total} training samples read so far were damaged or lost, more than "
        f"data.max_damaged_fraction = {data_config.max_damaged_fraction:.2%}. Worst shards:\n  {named}\n"
        f"Find every damaged sample with: python -m shards verify {sets}\n"
        "then rewrite the set without them (python -m shards repair DIR --out NEW) or relabel those shards."
    )


def postfix(scalars: dict[str, float]) -> dict[str, int]:
    """Progress-bar fields: this interval's skipped and lost samples (shown only when there are any)."""
    shown = {name: int(scalars.get(f"data/{name}", 0)) for name in ("skipped", "lost")}
    return {name: value for name, value in shown.items() if value}


def _split(vector: torch.Tensor) -> tuple[float, dict[str, float], dict[str, float]]:
    values = [float(value) for value in vector]
    skipped = dict(zip(SKIP_REASONS, values[1 : 1 + len(SKIP_REASONS)]))
    lost = dict(zip(LOST_REASONS, values[1 + len(SKIP_REASONS) :]))
    return values[0], skipped, lost
