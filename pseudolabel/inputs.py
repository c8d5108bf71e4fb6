"""The two ends of a labelling process's pipeline: the inputs it reads and the shards it writes.

:class:`LabelInputs` is an iterable dataset over this process's units of work (``pseudolabel.plan``): each DataLoader
worker takes every n-th unit, reads its jobs' inputs (a slice of the on-disk index, or one input shard's headers) and
yields one record per input, with the crop and its JPEG, or a reject. Memory is one unit per worker, whatever the size
of the source. :class:`JobWriter` writes behind the teacher: one :class:`~shards.writer.ShardWriter` per job, closed
with its rejects as soon as its last input arrives (workers interleave, so several jobs may be open at once).
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from pseudolabel.config import PseudolabelConfig
from pseudolabel.index import InputItem
from pseudolabel.labels import LabelBatch
from pseudolabel.plan import Job, Plan
from pseudolabel.preprocess import (
    REJECT_DUPLICATE_KEY,
    REJECT_NO_IMAGE_MEMBER,
    REJECT_READ_ERROR,
    InputRejected,
    preprocess_image,
)
from pseudolabel.teachers import Teacher
from shards.codec import encode_jpeg, sample_members
from shards.format import SampleMeta
from shards.writer import ShardWriter


class LabelInputs(IterableDataset):
    """This process's units, in order, split among the DataLoader workers; see the module docstring."""

    def __init__(self, plan: Plan, units: list, reader, config: PseudolabelConfig) -> None:
        self.plan, self.units, self.reader = plan, units, reader
        self.preprocess = config.preprocess
        self.jpeg_quality = config.output.jpeg_quality

    def __iter__(self):
        worker = get_worker_info()
        units = self.units if worker is None else self.units[worker.id :: worker.num_workers]
        for unit in units:
            for job in self.plan.jobs(unit):
                if not job.items:  # an input shard none of whose samples the seeded sample keeps
                    yield {"job": job.job, "info": job.info, "key": None, "source": None, "reject": None,
                           "image": None, "empty_job": True}
                for item in job.items:
                    yield self.record(job, item)

    def record(self, job: Job, item: InputItem) -> dict[str, Any]:
        record: dict[str, Any] = {"job": job.job, "info": job.info, "key": item.key, "source": item.origin,
                                  "reject": None, "image": None}
        try:
            if item.duplicate:
                raise InputRejected(REJECT_DUPLICATE_KEY, f"key {item.key!r} is taken by an earlier input")
            if item.locator is None:
                raise InputRejected(REJECT_NO_IMAGE_MEMBER, "the shard sample holds no image member")
            try:
                data = self.reader(item)
            except OSError as error:
                raise InputRejected(REJECT_READ_ERROR, f"{type(error).__name__}: {error}") from None
            crop = preprocess_image(data, item.key, self.preprocess)
        except InputRejected as rejected:
            record.update(reject=rejected.reason, message=str(rejected))
            return record
        record.update(
            image=crop.image,
            jpg=encode_jpeg(crop.image, self.jpeg_quality),
            source_size=crop.source_size,
            scale=crop.scale,
            crop_box=crop.crop_box,
            extra=crop.extra,
        )
        return record


def collate_records(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack the accepted crops into uint8 (B', H, W, 3); keep every record (rejects included) in order."""
    crops = [record.pop("image") for record in records]
    accepted = [crop for crop in crops if crop is not None]
    images = torch.from_numpy(np.stack(accepted)) if accepted else None
    return {"images": images, "records": records}


def is_accepted(record: dict[str, Any]) -> bool:
    return record["reject"] is None and not record.get("empty_job")


class _OpenJob:
    def __init__(self, writer: ShardWriter, info: dict[str, Any]) -> None:
        self.writer, self.info, self.seen, self.details = writer, info, 0, []


class JobWriter(threading.Thread):
    """Encodes labels and writes shards behind the teacher; one :class:`ShardWriter` per job, closed when its last
    input arrives. Errors surface in the main thread at the next :meth:`submit` or at :meth:`finish`."""

    def __init__(self, out_dir: Path, config: PseudolabelConfig, process: int, teacher: Teacher) -> None:
        super().__init__(name="shard-writer", daemon=True)
        self.out_dir, self.config, self.process = out_dir, config, process
        self.teacher_info = {"teacher": teacher.model_id, "teacher_revision": teacher.revision}
        self.kind = teacher.kind
        self.flip_tta = teacher.flip_tta
        self.queue: queue.Queue = queue.Queue(maxsize=config.runtime.queue_batches)
        self.pool = ThreadPoolExecutor(config.runtime.encode_threads, thread_name_prefix="label-encode")
        self.error: BaseException | None = None
        self.labeled = 0
        self.rejected = 0
        self.closed_jobs: list[int] = []
        self._open: dict[int, _OpenJob] = {}

    def submit(self, records: list[dict[str, Any]], labels: LabelBatch | None) -> float:
        """Hand a labelled batch over; returns the seconds spent waiting for room in the queue."""
        started = time.perf_counter()
        while True:
            if self.error is not None:
                raise RuntimeError("the shard writer failed") from self.error
            try:
                self.queue.put((records, labels), timeout=0.5)
                return time.perf_counter() - started
            except queue.Full:
                continue

    def finish(self) -> None:
        self.queue.put(None)
        self.join()
        self.pool.shutdown()
        if self.error is not None:
            raise RuntimeError("the shard writer failed") from self.error
        if self._open:
            job, state = next(iter(self._open.items()))
            for state_left in self._open.values():
                state_left.writer.abort()
            raise RuntimeError(f"job {job} got {state.seen} of {state.info['inputs']} inputs")

    def run(self) -> None:
        try:
            while (batch := self.queue.get()) is not None:
                self._write_batch(*batch)
        except BaseException as error:  # noqa: BLE001 - handed to the main thread
            self.error = error
            for state in self._open.values():
                state.writer.abort()
            self._open.clear()
            while self.queue.get() is not None:  # let a blocked submit() return and see the error
                pass

    def _encode(self, record: dict[str, Any], labels: LabelBatch, index: int) -> dict[str, Any]:
        codes, label_range, reject = labels.code(index)
        if reject is not None:
            return {"reject": reject[0], "message": reject[1]}
        meta = SampleMeta(
            source=record["source"],
            kind=self.kind,
            source_size=tuple(record["source_size"]),
            scale=float(record["scale"]),
            crop_box=tuple(record["crop_box"]),
            teacher=self.teacher_info["teacher"],
            teacher_revision=self.teacher_info["teacher_revision"],
            jpeg_quality=self.config.output.jpeg_quality,
            extra={**record["extra"], "flip_tta": self.flip_tta},
        )
        return sample_members(record["key"], record["jpg"], codes, label_range, meta, self.config.output.label_codec)

    def _write_batch(self, records: list[dict[str, Any]], labels: LabelBatch | None) -> None:
        accepted = [record for record in records if is_accepted(record)]
        encoded = iter(self.pool.map(self._encode, accepted, [labels] * len(accepted), range(len(accepted))))
        for record in records:
            state = self._state(record)
            if record.get("empty_job"):
                self._close(record["job"])
                continue
            outcome = next(encoded) if is_accepted(record) else record
            if outcome.get("reject") is None:
                state.writer.write(outcome)
                self.labeled += 1
            else:
                state.writer.reject(record["key"], outcome["reject"])
                state.details.append(
                    {"key": record["key"], "reason": outcome["reject"], "source": record["source"],
                     "message": outcome.get("message", "")}
                )
                self.rejected += 1
            state.seen += 1
            if state.seen == state.info["inputs"]:
                self._close(record["job"])

    def _state(self, record: dict[str, Any]) -> _OpenJob:
        job = record["job"]
        if job not in self._open:
            writer = ShardWriter(self.out_dir, self.config.output.prefix, self.process, job)
            self._open[job] = _OpenJob(writer, record["info"])
        return self._open[job]

    def _close(self, job: int) -> None:
        state = self._open.pop(job)
        state.writer.close(job=job, process=self.process, reject_details=state.details, **state.info,
                           **self.teacher_info)
        self.closed_jobs.append(job)
