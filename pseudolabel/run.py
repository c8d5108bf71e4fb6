"""The pseudo-labelling run: every process labels its own jobs and writes its own shards.

Order of events (docs/decisions.md, "Shards and resume"):
1. every process lists the source (same config, same sorted list) and loads the teacher;
2. the main process writes or checks ``manifest.json``, removes unfinished traces, saves the resolved config, and
   broadcasts the pending jobs; after that barrier each rank takes ``pending[rank::world]``;
3. DataLoader workers read, decode, resize, crop and JPEG-encode (rejects flow through as records); the main thread
   runs the teacher on batches; a writer thread encodes the labels (a small thread pool) and writes one
   :class:`~shards.writer.ShardWriter` per job, closing it with its rejects as soon as its last input arrives;
4. the processes' figures are gathered and the main process writes ``summary.json`` and ``rejects.jsonl``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, gather_object
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from pseudolabel.config import PseudolabelConfig
from pseudolabel.jobs import (
    MANIFEST_FORMAT,
    check_or_write_manifest,
    clean_and_scan,
    cut_jobs,
    summarise,
    write_summary,
)
from pseudolabel.labels import LabelBatch
from pseudolabel.preprocess import (
    REJECT_DUPLICATE_KEY,
    REJECT_NO_IMAGE_MEMBER,
    REJECT_READ_ERROR,
    InputRejected,
    preprocess_image,
)
from pseudolabel.sources import InputItem, SourceListing, open_source
from pseudolabel.teachers import BUILTIN_TEACHERS, Teacher, load_teacher
from shards.codec import encode_jpeg, sample_members
from shards.config import save_resolved_config
from shards.format import SampleMeta
from shards.writer import ShardWriter

logger = logging.getLogger(__name__)


class LabelInputs(Dataset):
    """This process's inputs, in job order; each item -> a record with the crop and its JPEG, or a reject."""

    def __init__(self, entries: list[tuple[int, InputItem]], reader, config: PseudolabelConfig) -> None:
        self.entries = entries  # (job id, input)
        self.reader = reader
        self.preprocess = config.preprocess
        self.jpeg_quality = config.output.jpeg_quality

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> dict[str, Any]:
        job, item = self.entries[index]
        record: dict[str, Any] = {"job": job, "key": item.key, "source": item.origin, "reject": None, "image": None}
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


class JobWriter(threading.Thread):
    """Encodes labels and writes shards behind the teacher; one :class:`ShardWriter` per job, closed when its last
    input arrives. Errors surface in the main thread at the next :meth:`submit` or at :meth:`finish`."""

    def __init__(
        self, out_dir: Path, config: PseudolabelConfig, process: int, job_sizes: list[int], teacher: Teacher
    ) -> None:
        super().__init__(name="shard-writer", daemon=True)
        self.out_dir, self.config, self.process, self.job_sizes = out_dir, config, process, job_sizes
        self.teacher_info = {"teacher": teacher.model_id, "teacher_revision": teacher.revision}
        self.kind = teacher.kind
        self.flip_tta = teacher.flip_tta
        self.queue: queue.Queue = queue.Queue(maxsize=config.runtime.queue_batches)
        self.pool = ThreadPoolExecutor(config.runtime.encode_threads, thread_name_prefix="label-encode")
        self.error: BaseException | None = None
        self.labeled = 0
        self.rejected = 0
        self.closed_jobs: list[int] = []
        self._writer: ShardWriter | None = None
        self._job: int | None = None
        self._seen = 0
        self._details: list[dict[str, str]] = []

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

    def run(self) -> None:
        try:
            while (batch := self.queue.get()) is not None:
                self._write_batch(*batch)
        except BaseException as error:  # noqa: BLE001 - handed to the main thread
            self.error = error
            if self._writer is not None:
                self._writer.abort()
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
        accepted = [record for record in records if record["reject"] is None]
        encoded = iter(self.pool.map(self._encode, accepted, [labels] * len(accepted), range(len(accepted))))
        for record in records:
            outcome = next(encoded) if record["reject"] is None else record
            self._start_job(record["job"])
            if outcome.get("reject") is None:
                self._writer.write(outcome)
                self.labeled += 1
            else:
                self._writer.reject(record["key"], outcome["reject"])
                self._details.append(
                    {"key": record["key"], "reason": outcome["reject"], "source": record["source"],
                     "message": outcome.get("message", "")}
                )
                self.rejected += 1
            self._seen += 1
            if self._seen == self.job_sizes[self._job]:
                self._close_job()

    def _start_job(self, job: int) -> None:
        if self._job == job:
            return
        if self._writer is not None:
            expected = self.job_sizes[self._job]
            raise RuntimeError(f"job {self._job} got {self._seen} of {expected} inputs before job {job} started")
        self._writer = ShardWriter(self.out_dir, self.config.output.prefix, self.process, job)
        self._job, self._seen, self._details = job, 0, []

    def _close_job(self) -> None:
        self._writer.close(
            job=self._job, process=self.process, inputs=self.job_sizes[self._job], reject_details=self._details,
            **self.teacher_info,
        )
        self.closed_jobs.append(self._job)
        self._writer, self._job = None, None


def build_manifest(config: PseudolabelConfig, listing: SourceListing, teacher: Teacher, job_count: int) -> dict:
    """Everything that decides which sample lands in which shard with which label."""
    return {
        "format": MANIFEST_FORMAT,
        "source": listing.description,
        "jobs": {"samples_per_shard": config.output.samples_per_shard, "count": job_count},
        "preprocess": asdict(config.preprocess),
        "teacher": {**teacher.info(), "precision": teacher.precisions()},
        "output": {
            "prefix": config.output.prefix,
            "label_codec": config.output.label_codec,
            "jpeg_quality": config.output.jpeg_quality,
        },
    }


def _prepare_folder(config: PseudolabelConfig, manifest: dict, job_sizes: list[int], resolved_yaml: str) -> list[int]:
    """Main process: manifest written or checked, unfinished traces removed; returns the pending job ids."""
    out_dir = Path(config.output.dir)
    resuming = check_or_write_manifest(out_dir, manifest)
    done = clean_and_scan(out_dir, config.output.prefix, job_sizes)
    save_resolved_config(resolved_yaml, out_dir)
    pending = [job for job in range(len(job_sizes)) if job not in done]
    logger.info(
        "%s %s: %d jobs, %d done, %d pending", "resuming" if resuming else "starting", out_dir, len(job_sizes),
        len(done), len(pending),
    )
    return pending


def _label(
    accelerator: Accelerator, config: PseudolabelConfig, listing: SourceListing, jobs: list[range], my_jobs: list[int],
    teacher: Teacher,
) -> dict[str, Any]:
    """Label this process's jobs; returns its figures for the summary."""
    entries = [(job, listing.items[position]) for job in my_jobs for position in jobs[job]]
    job_sizes = [len(positions) for positions in jobs]
    runtime = config.runtime
    loader = DataLoader(
        LabelInputs(entries, listing.reader, config),
        batch_size=runtime.batch_size,
        shuffle=False,
        num_workers=runtime.num_workers,
        collate_fn=collate_records,
        prefetch_factor=runtime.prefetch_factor if runtime.num_workers > 0 else None,
        pin_memory=accelerator.device.type == "cuda",
    )
    writer = JobWriter(Path(config.output.dir), config, accelerator.process_index, job_sizes, teacher)
    progress = tqdm(
        total=len(entries), unit="img", dynamic_ncols=True,
        desc=f"labelling (process 0 of {accelerator.num_processes})",
        disable=not (accelerator.is_main_process and runtime.progress),
    )
    figures = {"loader_wait_seconds": 0.0, "teacher_seconds": 0.0, "writer_wait_seconds": 0.0}
    started = time.perf_counter()
    batches = iter(loader)  # workers fork before the writer threads start
    writer.start()
    try:
        while True:
            waited = time.perf_counter()
            batch = next(batches, None)
            figures["loader_wait_seconds"] += time.perf_counter() - waited
            if batch is None:
                break
            labels = None
            if batch["images"] is not None:
                inferred = time.perf_counter()
                labels = LabelBatch(teacher.predict(batch["images"]))  # a GPU codes its maps at once
                figures["teacher_seconds"] += time.perf_counter() - inferred
            figures["writer_wait_seconds"] += writer.submit(batch["records"], labels)
            progress.update(len(batch["records"]))
            progress.set_postfix(rejects=writer.rejected, refresh=False)  # as far as the writer got
        writer.finish()
    except BaseException:
        if writer.is_alive():
            writer.queue.put(None)
            writer.join(timeout=60)
        raise
    finally:
        progress.close()
    seconds = time.perf_counter() - started
    return {
        "process": accelerator.process_index,
        "jobs": writer.closed_jobs,
        "inputs": len(entries),
        "labeled": writer.labeled,
        "rejected": writer.rejected,
        "seconds": round(seconds, 3),
        "images_per_second": round(len(entries) / seconds, 2) if seconds > 0 and entries else None,
        **{name: round(value, 3) for name, value in figures.items()},
    }


def run(config: PseudolabelConfig, resolved_yaml: str) -> dict[str, Any] | None:
    """Label ``config.source`` into ``config.output.dir``. Returns the summary on the main process, else None."""
    accelerator = Accelerator()
    try:
        return _run(accelerator, config, resolved_yaml)
    finally:
        accelerator.end_training()


def _run(accelerator: Accelerator, config: PseudolabelConfig, resolved_yaml: str) -> dict[str, Any] | None:
    if not accelerator.is_main_process:
        logging.getLogger("pseudolabel").setLevel(logging.WARNING)
        if config.teacher.model not in BUILTIN_TEACHERS:  # one "Loading weights" bar, from the main process
            from transformers.utils import logging as transformers_logging

            transformers_logging.disable_progress_bar()
    listing = open_source(config.source)
    jobs = cut_jobs(len(listing.items), config.output.samples_per_shard)
    job_sizes = [len(positions) for positions in jobs]
    teacher = load_teacher(
        config.teacher.model, revision=config.teacher.revision, device=accelerator.device,
        flip_tta=config.teacher.flip_tta, precision=config.teacher.precision, short_side=config.teacher.short_side,
    )
    if config.runtime.compile_teacher:
        teacher.compile(config.runtime.batch_size, config.preprocess.height, config.preprocess.width)
    manifest = build_manifest(config, listing, teacher, len(jobs))
    message: list[Any] = [None]
    if accelerator.is_main_process:
        try:
            message = [{"pending": _prepare_folder(config, manifest, job_sizes, resolved_yaml), "manifest": manifest}]
        except Exception as error:  # every rank must hear about it, or they wait at the barrier forever
            message = [{"error": error}]
    broadcast_object_list(message)
    decided = message[0]
    if "error" in decided:
        raise decided["error"]
    if decided["manifest"] != manifest:
        raise RuntimeError(
            f"process {accelerator.process_index} lists other inputs or another teacher than the main process: "
            "every node must see the same source and teacher files"
        )
    accelerator.wait_for_everyone()
    my_jobs = decided["pending"][accelerator.process_index :: accelerator.num_processes]
    started = time.perf_counter()
    figures = _label(accelerator, config, listing, jobs, my_jobs, teacher)
    every_process = gather_object([figures])
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        return None
    seconds = time.perf_counter() - started
    processed = sum(process["inputs"] for process in every_process)
    this_run = {
        "world_size": accelerator.num_processes,
        "jobs": sum(len(process["jobs"]) for process in every_process),
        "inputs": processed,
        "labeled": sum(process["labeled"] for process in every_process),
        "rejected": sum(process["rejected"] for process in every_process),
        "seconds": round(seconds, 3),
        "processes": every_process,
    }
    summary = summarise(Path(config.output.dir), config.output.prefix, job_sizes, this_run)
    summary["teacher"] = teacher.model_id
    summary["teacher_revision"] = teacher.revision
    summary = write_summary(Path(config.output.dir), summary)
    if not summary["complete"]:
        logger.error("the output is incomplete: %d labeled + %d rejected of %d inputs", summary["labeled"],
                     summary["rejected"], summary["inputs"])
    return summary
