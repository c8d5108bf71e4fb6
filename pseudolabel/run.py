"""The labelling run: each process labels its own jobs, image file to shard, and the main process sums up.

One idea, the labelling loop with its two ends, in the order a sample passes: DataLoader workers read each input
of this process's units (:class:`LabelInputs`), decode, resize, crop and JPEG-encode it (rejects flow through as
records); the main thread runs the teacher (each teacher, when ``teacher.model`` lists several: their costs add up)
on each batch; the teachers' maps become 16-bit label codes
(:class:`LabelBatch`: at once in torch where the map already is on a GPU, by ``shards.format.scale_to_codes``, the
format's own formula, so only uint16 codes cross to the host; else per map with ``encode_label_codes`` in the
writer's threads, 0.6-0.8 ms per 512x384 map; ``tests/pseudolabel/test_labels.py`` checks that both give the same
codes); a writer thread behind the teacher (:class:`JobWriter`) makes the members (``shards.format.sample_members``)
(the first teacher's label as the sample's label, the next ones' as ``depth16_<i>`` members) and writes one
:class:`~shards.writer.ShardWriter` per job, closed with its rejects as soon as its last input
arrives (workers interleave, so several jobs may be open at once). Memory is one unit per worker, whatever the size
of the source. With ``runtime.decode_device`` on the teacher's device (``auto`` on a GPU), the workers send the JPEGs
the device decoder takes undecoded, and the main thread decodes, resizes, crops and re-encodes them there before the
teacher runs (:func:`teacher_images`, ``pseudolabel.device_inputs``).

Order of events (docs/decisions.md, "Shards and resume"):
1. every process loads the teachers; the main process lists the source (folders, lists and datasets into the sorted
   on-disk index ``index.jsonl``, image shards by name), writes or checks ``manifest.json``, removes unfinished
   traces, saves the resolved config, and broadcasts the pending units; the others read its index (or list the
   shard names and compare) and check that their manifest agrees; each rank takes ``pending[rank::world]``;
2. the loop above;
3. for image shards the main process turns keys repeated across input shards into ``duplicate_key`` rejects
   (``pseudolabel.plan``); the processes' figures are gathered and it writes ``summary.json`` and ``rejects.jsonl``.
"""

from __future__ import annotations

import functools
import json
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, gather_object
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from tqdm.auto import tqdm

from pseudolabel.config import PseudolabelConfig
from pseudolabel.device_inputs import (
    DEVICE_INPUT,
    FALLBACK,
    FALLBACK_DECODE_ERROR,
    TakesCpuPath,
    plan_device_input,
    teacher_batch,
)
from pseudolabel.plan import (
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    SHARD_MANIFEST_FORMAT,
    SLICE_STRIDE,
    IndexPlan,
    InputIndex,
    InputItem,
    Job,
    Plan,
    ShardPlan,
    check_or_write_manifest,
    clean_and_scan,
    move_index,
    reject_repeated_keys,
    remove_index,
    summarise,
    write_summary,
)
from pseudolabel.preprocess import (
    REJECT_DUPLICATE_KEY,
    REJECT_NO_IMAGE_MEMBER,
    REJECT_READ_ERROR,
    InputRejected,
    preprocess_image,
)
from pseudolabel.sources import SourceListing, attach_source, names_hash, open_source
from pseudolabel.teachers import BUILTIN_TEACHERS, Teacher, load_teacher
from shards.cli.config import save_resolved_config
from shards.cli.errors import UserError
from shards.decode_device import decodes_on_model
from shards.format import (
    REJECT_CONSTANT_LABEL,
    REJECT_NON_FINITE,
    ExtraLabel,
    LabelError,
    SampleMeta,
    encode_jpeg,
    encode_label_codes,
    sample_members,
    scale_to_codes,
)
from shards.writer import ShardWriter

logger = logging.getLogger(__name__)

INDEX_NAME = "index.jsonl"  # the sorted inputs of a folder, list or datasets source (pseudolabel.plan)
_NEW_INDEX = ".index.jsonl.new"  # written by the main process, put in place once the manifest agrees

# --------------------------------------------------------------------------- the inputs, read by the DataLoader workers

class LabelInputs(IterableDataset):
    """This process's units, in order, split among the DataLoader workers; see the module docstring."""

    def __init__(self, plan: Plan, units: list, reader, config: PseudolabelConfig, on_model: bool = False) -> None:
        self.plan, self.units, self.reader = plan, units, reader
        self.preprocess = config.preprocess
        self.jpeg_quality = config.output.jpeg_quality
        self.on_model = on_model  # send the JPEGs the device takes undecoded (pseudolabel.device_inputs)

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
            if self.on_model:
                try:
                    record[DEVICE_INPUT] = plan_device_input(data, item.key, self.preprocess)
                    return record
                except TakesCpuPath as routed:
                    record[FALLBACK] = routed.reason
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


# ------------------------------------------------------------------------------------ the teacher's maps -> label codes

Coded = tuple[np.ndarray | None, tuple[float, float] | None, tuple[str, str] | None]  # codes, range, reject


def code_map(depth: np.ndarray) -> Coded:
    """One float map (H, W) -> uint16 codes and (min, max), or a reject ``(reason, message)``.

    A map with a non-finite value is rejected whole (``non_finite_label``): a teacher that produced NaN somewhere is
    not trusted elsewhere. A constant map is ``constant_label``.
    """
    values = np.asarray(depth)
    finite = np.isfinite(values)
    if not finite.all():
        return None, None, (REJECT_NON_FINITE, f"the teacher's map holds {int((~finite).sum())} non-finite values")
    try:
        codes, label_range = encode_label_codes(values)
    except LabelError as error:
        return None, None, (error.reason, str(error))
    return codes, label_range, None


@torch.inference_mode()
def code_batch_on_device(depth: torch.Tensor) -> list[Coded]:
    """float (B, H, W) on its device -> per map what :func:`code_map` gives, computed in one batched pass."""
    values = depth.detach().double()  # (B, H, W)
    finite = torch.isfinite(values).flatten(1).all(dim=1)
    safe = torch.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    low = safe.flatten(1).amin(dim=1)
    high = safe.flatten(1).amax(dim=1)
    storable = finite & (high > low)
    top = torch.where(storable, high, low + 1.0)  # a map not stored still gets a range that divides
    codes = scale_to_codes(safe, low[:, None, None], top[:, None, None])
    codes = codes.to(torch.int32).to(torch.uint16).cpu().numpy()
    coded: list[Coded] = []
    for index, (is_finite, is_storable, minimum, maximum) in enumerate(
        zip(finite.tolist(), storable.tolist(), low.tolist(), high.tolist())
    ):
        if not is_finite:
            bad = int((~torch.isfinite(values[index])).sum())
            coded.append((None, None, (REJECT_NON_FINITE, f"the teacher's map holds {bad} non-finite values")))
        elif not is_storable:
            coded.append((None, None, (REJECT_CONSTANT_LABEL, f"label is constant ({minimum})")))
        else:
            coded.append((codes[index], (float(minimum), float(maximum)), None))
    return coded


class LabelBatch:
    """A batch of teacher maps on its way to the writer, the first teacher's (``depth``) and the next ones' (``more``,
    in teacher order), each (B, H, W): coded at once on a GPU, else coded per map on demand (:meth:`code` runs in the
    writer's threads, beside the next batch's inference)."""

    def __init__(self, depth: torch.Tensor, more: Sequence[torch.Tensor] = ()) -> None:
        self.coded: list[list[Coded]] | None = None
        self.maps: list[np.ndarray] | None = None
        if depth.is_cuda:
            self.coded = [code_batch_on_device(maps) for maps in (depth, *more)]
        else:
            self.maps = [maps.numpy() for maps in (depth, *more)]  # (B, H, W) float32 each

    def code(self, index: int, teacher: int = 0) -> Coded:
        """Map ``index`` of teacher ``teacher`` (0: the first) as codes, range, or a reject."""
        return self.coded[teacher][index] if self.coded is not None else code_map(self.maps[teacher][index])

    @property
    def teachers(self) -> int:
        return len(self.coded if self.coded is not None else self.maps)


# --------------------------------------------------------------------------------------- the writer, behind the teacher

class _OpenJob:
    def __init__(self, writer: ShardWriter, info: dict[str, Any]) -> None:
        self.writer, self.info, self.seen, self.details = writer, info, 0, []


class JobWriter(threading.Thread):
    """Encodes labels and writes shards behind the teacher; one :class:`ShardWriter` per job, closed when its last
    input arrives. Errors surface in the main thread at the next :meth:`submit` or at :meth:`finish`."""

    def __init__(self, out_dir: Path, config: PseudolabelConfig, process: int, teacher: Teacher,
                 more_teachers: Sequence[Teacher] = ()) -> None:
        super().__init__(name="shard-writer", daemon=True)
        self.out_dir, self.config, self.process = out_dir, config, process
        self.teachers = [teacher, *more_teachers]  # the first one's label is the sample's label
        self.teacher_info = shard_teacher_info(self.teachers)
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
        """One accepted input -> its members, every teacher's label in them; a map any teacher cannot store rejects
        the sample (a sample holds every teacher's label or is not written), named by teacher."""
        coded = [labels.code(index, teacher) for teacher in range(labels.teachers)]
        for position, (_, _, reject) in enumerate(coded):
            if reject is not None:
                by = f"teacher {position} ({self.teachers[position].model_id}): " if len(coded) > 1 else ""
                return {"reject": reject[0], "message": by + reject[1]}
        first = self.teachers[0]
        meta = SampleMeta(
            source=record["source"],
            kind=first.kind,
            source_size=tuple(record["source_size"]),
            scale=float(record["scale"]),
            crop_box=tuple(record["crop_box"]),
            teacher=first.model_id,
            teacher_revision=first.revision,
            jpeg_quality=self.config.output.jpeg_quality,
            extra={**record["extra"], "flip_tta": self.flip_tta},
        )
        more = [ExtraLabel(codes, label_range, teacher.kind, teacher.model_id)
                for (codes, label_range, _), teacher in zip(coded[1:], self.teachers[1:])]
        (codes, label_range, _) = coded[0]
        return sample_members(record["key"], record["jpg"], codes, label_range, meta, self.config.output.label_codec,
                              more)

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


# -------------------------------------------------------------------------------------------------------------- the run

def shard_teacher_info(teachers: Sequence[Teacher]) -> dict[str, Any]:
    """Who labelled a shard, for its stats json and the summary: the first teacher (``teacher``,
    ``teacher_revision``, as with one teacher), and with several, ``teachers``, each one's id, revision and kind."""
    first = teachers[0]
    info: dict[str, Any] = {"teacher": first.model_id, "teacher_revision": first.revision}
    if len(teachers) > 1:
        info["teachers"] = [{"teacher": teacher.model_id, "teacher_revision": teacher.revision, "kind": teacher.kind}
                            for teacher in teachers]
    return info


def teacher_record(teacher: Teacher, config: PseudolabelConfig) -> dict[str, Any]:
    """One teacher as the manifest holds it: what decides its labels, and the (h, w) it runs at for the crop."""
    return {
        **teacher.info(),
        "network_input": list(teacher.network_size(config.preprocess.height, config.preprocess.width)),  # (h, w)
        "precision": teacher.precisions(),
    }


def build_manifest(config: PseudolabelConfig, source: dict[str, Any], teachers: Sequence[Teacher]) -> dict:
    """Everything that decides which sample lands in which shard with which labels. ``teacher`` is the first
    teacher (as with one); with several, ``teachers`` lists every one in order, so a resume with another list,
    order or teacher is refused like a resume with another teacher."""
    size = config.output.samples_per_shard
    if source["kind"] == "shards":
        form, jobs = SHARD_MANIFEST_FORMAT, {"samples_per_shard": size, "unit": "input shard",
                                             "slice_stride": SLICE_STRIDE}
    else:
        form, jobs = MANIFEST_FORMAT, {"samples_per_shard": size, "count": -(-source["inputs"] // size)}
    manifest = {
        "format": form,
        "source": source,
        "jobs": jobs,
        "preprocess": asdict(config.preprocess),
        "teacher": teacher_record(teachers[0], config),
        "output": {
            "prefix": config.output.prefix,
            "label_codec": config.output.label_codec,
            "jpeg_quality": config.output.jpeg_quality,
        },
    }
    if len(teachers) > 1:  # a one-teacher folder keeps the manifest it always had, so it resumes
        manifest["teachers"] = [teacher_record(teacher, config) for teacher in teachers]
    return manifest


def make_plan(config: PseudolabelConfig, listing: SourceListing) -> Plan:
    if listing.shards is not None:
        return ShardPlan(listing.shards, config.output.samples_per_shard)
    return IndexPlan(InputIndex(listing.index), config.output.samples_per_shard)


def _stored_source(out_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((out_dir / MANIFEST_NAME).read_text()).get("source")
    except (OSError, ValueError, AttributeError):
        return None


def _prepare_folder(config: PseudolabelConfig, teachers: Sequence[Teacher], resolved_yaml: str) -> dict[str, Any]:
    """Main process: list the source, write or check the manifest, put the index in place, remove unfinished
    traces; returns what every process needs (the manifest, the pending units, the shard names' hash)."""
    out_dir = Path(config.output.dir)
    new_index = out_dir / _NEW_INDEX
    try:
        listing = open_source(config.source, new_index, _stored_source(out_dir))
        manifest = build_manifest(config, listing.description, teachers)
        resuming = check_or_write_manifest(out_dir, manifest)
    except BaseException:
        remove_index(new_index)
        raise
    if listing.index is not None:
        move_index(new_index, out_dir / INDEX_NAME)
        listing.index = out_dir / INDEX_NAME
    plan = make_plan(config, listing)
    done = clean_and_scan(out_dir, config.output.prefix, plan.check_done)
    save_resolved_config(resolved_yaml, out_dir)
    pending = plan.pending_units(done)
    logger.info("%s %s: %d jobs done, %d %s pending", "resuming" if resuming else "starting", out_dir, len(done),
                len(pending), "input shards" if listing.shards is not None else "jobs")
    shard_names = names_hash(listing.shards.urls) if listing.shards is not None else None
    return {"pending": pending, "manifest": manifest, "shard_names": shard_names, "listing": listing}


def _input_loader(config: PseudolabelConfig, listing: SourceListing, plan: Plan, my_units: list, pin_memory: bool,
                  on_model: bool) -> DataLoader:
    """The DataLoader over this process's units: its workers read, decode, crop and JPEG-encode (``on_model``: only
    what the device decoder does not take)."""
    runtime = config.runtime
    workers = min(runtime.num_workers, len(my_units))  # a worker without a unit would only idle
    return DataLoader(
        LabelInputs(plan, my_units, listing.reader, config, on_model),
        batch_size=runtime.batch_size,
        num_workers=workers,
        collate_fn=collate_records,
        prefetch_factor=runtime.prefetch_factor if workers > 0 else None,
        pin_memory=pin_memory,
    )


def teacher_images(batch: dict[str, Any], on_model: bool, config: PseudolabelConfig, device: torch.device,
                   decoded: Counter) -> torch.Tensor | None:
    """The batch's teacher input: the workers' crops, or (``on_model``) the device path's batch
    (:func:`pseudolabel.device_inputs.teacher_batch`); ``decoded`` counts where each input was decoded (``device``)
    and why the others took today's path (the ``fallback`` reasons)."""
    if not on_model:
        return batch["images"]
    records = batch["records"]
    planned = sum(1 for record in records if record.get(DEVICE_INPUT) is not None)
    images = teacher_batch(records, batch["images"], device, config.preprocess, config.output.jpeg_quality)
    reasons = Counter(record[FALLBACK] for record in records if FALLBACK in record)
    decoded["device"] += planned - reasons[FALLBACK_DECODE_ERROR]
    decoded.update(reasons)
    return images


def batch_too_large(device: torch.device, count: int, config: PseudolabelConfig) -> UserError:
    return UserError(f"a batch of {count} images does not fit in the memory of {device}: lower runtime.batch_size "
                     f"(now {config.runtime.batch_size})")


def _feed_writer(batches: Iterator[dict[str, Any]], teachers: Sequence[Teacher], writer: JobWriter, progress: tqdm,
                 images_of: Callable[[dict[str, Any]], torch.Tensor | None]) -> tuple[int, dict[str, float]]:
    """Run every teacher on every batch (``images_of`` gives its input) and hand their maps to the writer; returns
    the inputs and where the time went (``teacher_seconds``: the teachers' time, summed: several teachers cost the
    sum of each; ``decode_seconds``: the device path's decoding in this thread)."""
    figures = {"loader_wait_seconds": 0.0, "decode_seconds": 0.0, "teacher_seconds": 0.0, "writer_wait_seconds": 0.0}
    inputs = 0
    while True:
        waited = time.perf_counter()
        batch = next(batches, None)
        figures["loader_wait_seconds"] += time.perf_counter() - waited
        if batch is None:
            return inputs, figures
        decoding = time.perf_counter()
        images = images_of(batch)
        figures["decode_seconds"] += time.perf_counter() - decoding
        labels = None
        if images is not None:
            inferred = time.perf_counter()
            maps = [teacher.predict(images) for teacher in teachers]
            labels = LabelBatch(maps[0], maps[1:])  # a GPU codes its maps at once
            figures["teacher_seconds"] += time.perf_counter() - inferred
        figures["writer_wait_seconds"] += writer.submit(batch["records"], labels)
        counted = sum(1 for record in batch["records"] if not record.get("empty_job"))
        inputs += counted
        progress.update(counted)
        progress.set_postfix(rejects=writer.rejected, refresh=False)  # as far as the writer got


def _label(
    accelerator: Accelerator, config: PseudolabelConfig, listing: SourceListing, plan: Plan, my_units: list,
    teachers: Sequence[Teacher],
) -> dict[str, Any]:
    """Label this process's units; returns its figures for the summary (with where inputs were decoded, the
    fallbacks by reason, and the peak GPU memory)."""
    device = accelerator.device
    on_model = decodes_on_model(config.runtime.decode_device, device)
    loader = _input_loader(config, listing, plan, my_units, pin_memory=device.type == "cuda", on_model=on_model)
    decoded: Counter = Counter()
    images_of = functools.partial(teacher_images, on_model=on_model, config=config, device=device, decoded=decoded)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    writer = JobWriter(Path(config.output.dir), config, accelerator.process_index, teachers[0], teachers[1:])
    progress = tqdm(
        total=plan.unit_inputs(my_units), unit="img", dynamic_ncols=True,
        desc=f"labelling (process 0 of {accelerator.num_processes})",
        disable=not (accelerator.is_main_process and config.runtime.progress),
    )
    started = time.perf_counter()
    batches = iter(loader)  # workers fork before the writer threads start
    writer.start()
    try:
        inputs, figures = _feed_writer(batches, teachers, writer, progress, images_of)
        writer.finish()
    except torch.cuda.OutOfMemoryError:
        if writer.is_alive():
            writer.queue.put(None)
            writer.join(timeout=60)
        raise batch_too_large(device, config.runtime.batch_size, config) from None
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
        "jobs": sorted(writer.closed_jobs),
        "inputs": inputs,
        "labeled": writer.labeled,
        "rejected": writer.rejected,
        "seconds": round(seconds, 3),
        "images_per_second": round(inputs / seconds, 2) if seconds > 0 and inputs else None,
        **{name: round(value, 3) for name, value in figures.items()},
        "decode_device": device.type if on_model else "cpu",
        "decoded_on_device": decoded.pop("device", 0),
        "fallbacks": dict(sorted(decoded.items())),
        "peak_gpu_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None,
    }


def decode_figures(every_process: list[dict[str, Any]]) -> dict[str, Any]:
    """Where this run decoded its inputs, summed over processes: the device, how many the device decoded, and how
    many took today's path by reason (``pseudolabel.device_inputs``)."""
    fallbacks: Counter = Counter()
    for process in every_process:
        fallbacks.update(process["fallbacks"])
    return {"device": sorted({process["decode_device"] for process in every_process}),
            "decoded_on_device": sum(process["decoded_on_device"] for process in every_process),
            "fallbacks": dict(sorted(fallbacks.items()))}


def run(config: PseudolabelConfig, resolved_yaml: str) -> dict[str, Any] | None:
    """Label ``config.source`` into ``config.output.dir``. Returns the summary on the main process, else None."""
    accelerator = Accelerator()
    try:
        return _run(accelerator, config, resolved_yaml)
    finally:
        accelerator.end_training()


def _decide(accelerator: Accelerator, config: PseudolabelConfig, teachers: Sequence[Teacher], resolved_yaml: str
            ) -> tuple[SourceListing, dict[str, Any]]:
    """The main process lists and prepares the folder; the others wait for its word, then attach to its listing
    and check that they would build the same manifest (same teacher files, same shards)."""
    message: list[Any] = [None]
    listing = None
    if accelerator.is_main_process:
        try:
            decided = _prepare_folder(config, teachers, resolved_yaml)
            listing = decided.pop("listing")
            message = [decided]
        except Exception as error:  # every rank must hear about it, or they wait at the barrier forever
            message = [{"error": error}]
    broadcast_object_list(message)
    decided = message[0]
    if "error" in decided:
        raise decided["error"]
    if listing is None:
        out_dir = Path(config.output.dir)
        listing = attach_source(config.source, decided["manifest"]["source"], out_dir / INDEX_NAME,
                                decided["shard_names"])
        if build_manifest(config, listing.description, teachers) != decided["manifest"]:
            raise RuntimeError(
                f"process {accelerator.process_index} loads another teacher or other settings than the main "
                "process: every node must see the same source and teacher files"
            )
    return listing, decided


def load_teachers(config: PseudolabelConfig, device: torch.device) -> list[Teacher]:
    """Every teacher of ``teacher.model``, in order, each with its own ``kind`` and ``revision``
    (:meth:`~pseudolabel.config.TeacherConfig.each`) and the shared settings; compiled when asked."""
    settings = config.teacher
    teachers = [
        load_teacher(model, revision=revision, device=device, flip_tta=settings.flip_tta,
                     precision=settings.precision, short_side=settings.short_side, kind=kind)
        for model, revision, kind in zip(settings.models(), settings.each("revision"), settings.each("kind"))
    ]
    if config.runtime.compile_teacher:
        for teacher in teachers:
            teacher.compile(config.runtime.batch_size, config.preprocess.height, config.preprocess.width)
    return teachers


def _run(accelerator: Accelerator, config: PseudolabelConfig, resolved_yaml: str) -> dict[str, Any] | None:
    if not accelerator.is_main_process:
        logging.getLogger("pseudolabel").setLevel(logging.WARNING)
        if any(model not in BUILTIN_TEACHERS for model in config.teacher.models()):  # one "Loading weights" bar
            from transformers.utils import logging as transformers_logging

            transformers_logging.disable_progress_bar()
    teachers = load_teachers(config, accelerator.device)
    listing, decided = _decide(accelerator, config, teachers, resolved_yaml)
    plan = make_plan(config, listing)
    accelerator.wait_for_everyone()
    my_units = decided["pending"][accelerator.process_index :: accelerator.num_processes]
    started = time.perf_counter()
    figures = _label(accelerator, config, listing, plan, my_units, teachers)
    every_process = gather_object([figures])
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        return None
    out_dir = Path(config.output.dir)
    if listing.shards is not None:
        reject_repeated_keys(out_dir, config.output.prefix, plan.check_done)
    seconds = time.perf_counter() - started
    processed = sum(process["inputs"] for process in every_process)
    this_run = {
        "world_size": accelerator.num_processes,
        "jobs": sum(len(process["jobs"]) for process in every_process),
        "inputs": processed,
        "labeled": sum(process["labeled"] for process in every_process),
        "rejected": sum(process["rejected"] for process in every_process),
        "seconds": round(seconds, 3),
        "decode": decode_figures(every_process),
        "processes": every_process,
    }
    summary = summarise(out_dir, config.output.prefix, plan, this_run)
    summary.update(shard_teacher_info(teachers))
    summary = write_summary(out_dir, summary)
    if not summary["complete"]:
        logger.error("the output is incomplete: %d labeled + %d rejected of %d inputs", summary["labeled"],
                     summary["rejected"], summary["inputs"])
    return summary
