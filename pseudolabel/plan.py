"""Which inputs each job holds, what a finished shard may claim, and what is left to do.

Two plans, one interface. :class:`IndexPlan` (folders, lists, datasets): job ``j`` is inputs
``[j * size, (j + 1) * size)`` of the sorted index, and the unit handed to a process is one job. :class:`ShardPlan`
(image shards): the unit is one input shard, header-scanned by the process that takes it and cut into slices of at
most ``size`` inputs; slice ``s`` of shard ``i`` is job ``i * SLICE_STRIDE + s``, and its stats json records the slice
and how many the shard has, so the main process knows what is done without reading any input shard.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pseudolabel.index import InputIndex, InputItem
from pseudolabel.shard_source import SLICE_STRIDE, ShardSet


@dataclass(frozen=True)
class DoneJob:
    """A finished job as the main process found it: its shard and what its stats json says about its inputs."""

    path: Path
    inputs: int
    slice: int | None = None
    slices: int | None = None


@dataclass(frozen=True)
class Job:
    """One job of a unit: its id, the stats fields that describe its inputs (``inputs`` first), and the inputs."""

    job: int
    info: dict[str, Any]
    items: list[InputItem]


class IndexPlan:
    """Jobs of consecutive inputs of the on-disk index."""

    def __init__(self, index: InputIndex, job_size: int) -> None:
        self.index, self.job_size = index, job_size
        self.count = -(-len(index) // job_size)

    def _range(self, job: int) -> tuple[int, int]:
        return job * self.job_size, min((job + 1) * self.job_size, len(self.index))

    def check_done(self, job: int, stats: dict[str, Any]) -> str | None:
        if job >= self.count:
            return f"job {job} does not exist in a list of {self.count} jobs"
        start, stop = self._range(job)
        if stats.get("inputs") != stop - start:
            return f"stats say {stats.get('inputs')} inputs, job {job} has {stop - start}"
        return None

    def pending_units(self, done: dict[int, DoneJob]) -> list[int]:
        return [job for job in range(self.count) if job not in done]

    def unit_inputs(self, units: list[int]) -> int | None:
        return sum(stop - start for start, stop in map(self._range, units))

    def jobs(self, unit: int) -> Iterator[Job]:
        start, stop = self._range(unit)
        yield Job(unit, {"inputs": stop - start}, self.index.read(start, stop))

    def completion(self, done: dict[int, DoneJob]) -> tuple[bool, int]:
        """(every job done, the number of inputs)."""
        return len(done) == self.count, len(self.index)


class ShardPlan:
    """Input shards cut into slices; see the module docstring."""

    def __init__(self, shards: ShardSet, job_size: int) -> None:
        self.shards, self.job_size = shards, job_size

    def check_done(self, job: int, stats: dict[str, Any]) -> str | None:
        shard, piece = divmod(job, SLICE_STRIDE)
        if shard >= len(self.shards.urls):
            return f"job {job} is of input shard {shard}, and the source has {len(self.shards.urls)}"
        slices = stats.get("slices")
        if stats.get("slice") != piece or not isinstance(slices, int) or piece >= slices:
            return f"stats name slice {stats.get('slice')} of {slices}, job {job} is slice {piece}"
        return None

    def _done_slices(self, done: dict[int, DoneJob]) -> dict[int, tuple[int, set[int]]]:
        """Input shard -> (its slice count as its stats say, the slices done)."""
        found: dict[int, tuple[int, set[int]]] = {}
        for job, record in done.items():
            shard, piece = divmod(job, SLICE_STRIDE)
            slices, pieces = found.setdefault(shard, (int(record.slices or 1), set()))
            pieces.add(piece)
        return found

    def pending_units(self, done: dict[int, DoneJob]) -> list[tuple[int, tuple[int, ...]]]:
        """(input shard, its slices already done) for every shard with a slice left."""
        found = self._done_slices(done)
        units = []
        for shard in range(len(self.shards.urls)):
            slices, pieces = found.get(shard, (None, set()))
            if slices is None or not set(range(slices)) <= pieces:
                units.append((shard, tuple(sorted(pieces))))
        return units

    def unit_inputs(self, units: list) -> int | None:
        return None  # unknown until each shard's headers are read

    def jobs(self, unit: tuple[int, tuple[int, ...]]) -> Iterator[Job]:
        shard, skip = unit
        items = self.shards.scan(shard)
        slices = max(1, -(-len(items) // self.job_size))
        if slices > SLICE_STRIDE:
            raise ValueError(f"{self.shards.urls[shard]} holds {len(items)} samples: more than {SLICE_STRIDE} slices "
                             f"of output.samples_per_shard={self.job_size}; raise output.samples_per_shard")
        for piece in range(slices):
            if piece in skip:
                continue
            part = items[piece * self.job_size : (piece + 1) * self.job_size]
            info = {"inputs": len(part), "input_shard": self.shards.urls[shard], "slice": piece, "slices": slices}
            yield Job(shard * SLICE_STRIDE + piece, info, part)

    def completion(self, done: dict[int, DoneJob]) -> tuple[bool, int]:
        """(every slice of every input shard done, the inputs of the slices done)."""
        found = self._done_slices(done)
        complete = len(found) == len(self.shards.urls) and all(
            set(range(slices)) <= pieces for slices, pieces in found.values())
        return complete, sum(record.inputs for record in done.values())


Plan = IndexPlan | ShardPlan
