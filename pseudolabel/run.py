"""The pseudo-labelling run: every process labels its own jobs and writes its own shards.

Order of events (docs/decisions.md, "Shards and resume"):
1. every process loads the teacher; the main process lists the source (folders, lists and datasets into the sorted
   on-disk index ``index.jsonl``, image shards by name), writes or checks ``manifest.json``, removes unfinished
   traces, saves the resolved config, and broadcasts the pending units; the others read its index (or list the
   shard names and compare) and check that their manifest agrees; each rank takes ``pending[rank::world]``;
2. DataLoader workers read, decode, resize, crop and JPEG-encode (rejects flow through as records); the main thread
   runs the teacher on batches; a writer thread encodes the labels and writes one shard per job
   (``pseudolabel.inputs``);
3. for image shards the main process turns keys repeated across input shards into ``duplicate_key`` rejects
   (``pseudolabel.dedupe``); the processes' figures are gathered and it writes ``summary.json`` and
   ``rejects.jsonl``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, gather_object
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from pseudolabel.config import PseudolabelConfig
from pseudolabel.dedupe import reject_repeated_keys
from pseudolabel.index import InputIndex, move_index, remove_index
from pseudolabel.inputs import JobWriter, LabelInputs, collate_records
from pseudolabel.jobs import (
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    SHARD_MANIFEST_FORMAT,
    check_or_write_manifest,
    clean_and_scan,
    summarise,
    write_summary,
)
from pseudolabel.labels import LabelBatch
from pseudolabel.plan import IndexPlan, Plan, ShardPlan
from pseudolabel.shard_source import SLICE_STRIDE, names_hash
from pseudolabel.sources import SourceListing, attach_source, open_source
from pseudolabel.teachers import BUILTIN_TEACHERS, Teacher, load_teacher
from shards.config import save_resolved_config

logger = logging.getLogger(__name__)


INDEX_NAME = "index.jsonl"  # the sorted inputs of a folder, list or datasets source (pseudolabel.index)
_NEW_INDEX = ".index.jsonl.new"  # written by the main process, put in place once the manifest agrees


def build_manifest(config: PseudolabelConfig, source: dict[str, Any], teacher: Teacher) -> dict:
    """Everything that decides which sample lands in which shard with which label."""
    size = config.output.samples_per_shard
    if source["kind"] == "shards":
        form, jobs = SHARD_MANIFEST_FORMAT, {"samples_per_shard": size, "unit": "input shard",
                                             "slice_stride": SLICE_STRIDE}
    else:
        form, jobs = MANIFEST_FORMAT, {"samples_per_shard": size, "count": -(-source["inputs"] // size)}
    return {
        "format": form,
        "source": source,
        "jobs": jobs,
        "preprocess": asdict(config.preprocess),
        "teacher": {**teacher.info(), "precision": teacher.precisions()},
        "output": {
            "prefix": config.output.prefix,
            "label_codec": config.output.label_codec,
            "jpeg_quality": config.output.jpeg_quality,
        },
    }


def make_plan(config: PseudolabelConfig, listing: SourceListing) -> Plan:
    if listing.shards is not None:
        return ShardPlan(listing.shards, config.output.samples_per_shard)
    return IndexPlan(InputIndex(listing.index), config.output.samples_per_shard)


def _stored_source(out_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((out_dir / MANIFEST_NAME).read_text()).get("source")
    except (OSError, ValueError, AttributeError):
        return None


def _prepare_folder(config: PseudolabelConfig, teacher: Teacher, resolved_yaml: str) -> dict[str, Any]:
    """Main process: list the source, write or check the manifest, put the index in place, remove unfinished
    traces; returns what every process needs (the manifest, the pending units, the shard names' hash)."""
    out_dir = Path(config.output.dir)
    new_index = out_dir / _NEW_INDEX
    try:
        listing = open_source(config.source, new_index, _stored_source(out_dir))
        manifest = build_manifest(config, listing.description, teacher)
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


def _label(
    accelerator: Accelerator, config: PseudolabelConfig, listing: SourceListing, plan: Plan, my_units: list,
    teacher: Teacher,
) -> dict[str, Any]:
    """Label this process's units; returns its figures for the summary."""
    runtime = config.runtime
    loader = DataLoader(
        LabelInputs(plan, my_units, listing.reader, config),
        batch_size=runtime.batch_size,
        num_workers=min(runtime.num_workers, len(my_units)),  # a worker without a unit would only idle
        collate_fn=collate_records,
        prefetch_factor=runtime.prefetch_factor if min(runtime.num_workers, len(my_units)) > 0 else None,
        pin_memory=accelerator.device.type == "cuda",
    )
    writer = JobWriter(Path(config.output.dir), config, accelerator.process_index, teacher)
    progress = tqdm(
        total=plan.unit_inputs(my_units), unit="img", dynamic_ncols=True,
        desc=f"labelling (process 0 of {accelerator.num_processes})",
        disable=not (accelerator.is_main_process and runtime.progress),
    )
    figures = {"loader_wait_seconds": 0.0, "teacher_seconds": 0.0, "writer_wait_seconds": 0.0}
    inputs = 0
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
            counted = sum(1 for record in batch["records"] if not record.get("empty_job"))
            inputs += counted
            progress.update(counted)
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
        "jobs": sorted(writer.closed_jobs),
        "inputs": inputs,
        "labeled": writer.labeled,
        "rejected": writer.rejected,
        "seconds": round(seconds, 3),
        "images_per_second": round(inputs / seconds, 2) if seconds > 0 and inputs else None,
        **{name: round(value, 3) for name, value in figures.items()},
    }


def run(config: PseudolabelConfig, resolved_yaml: str) -> dict[str, Any] | None:
    """Label ``config.source`` into ``config.output.dir``. Returns the summary on the main process, else None."""
    accelerator = Accelerator()
    try:
        return _run(accelerator, config, resolved_yaml)
    finally:
        accelerator.end_training()


def _decide(accelerator: Accelerator, config: PseudolabelConfig, teacher: Teacher, resolved_yaml: str
            ) -> tuple[SourceListing, dict[str, Any]]:
    """The main process lists and prepares the folder; the others wait for its word, then attach to its listing
    and check that they would build the same manifest (same teacher files, same shards)."""
    message: list[Any] = [None]
    listing = None
    if accelerator.is_main_process:
        try:
            decided = _prepare_folder(config, teacher, resolved_yaml)
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
        if build_manifest(config, listing.description, teacher) != decided["manifest"]:
            raise RuntimeError(
                f"process {accelerator.process_index} loads another teacher or other settings than the main "
                "process: every node must see the same source and teacher files"
            )
    return listing, decided


def _run(accelerator: Accelerator, config: PseudolabelConfig, resolved_yaml: str) -> dict[str, Any] | None:
    if not accelerator.is_main_process:
        logging.getLogger("pseudolabel").setLevel(logging.WARNING)
        if config.teacher.model not in BUILTIN_TEACHERS:  # one "Loading weights" bar, from the main process
            from transformers.utils import logging as transformers_logging

            transformers_logging.disable_progress_bar()
    teacher = load_teacher(
        config.teacher.model, revision=config.teacher.revision, device=accelerator.device,
        flip_tta=config.teacher.flip_tta, precision=config.teacher.precision, short_side=config.teacher.short_side,
    )
    if config.runtime.compile_teacher:
        teacher.compile(config.runtime.batch_size, config.preprocess.height, config.preprocess.width)
    listing, decided = _decide(accelerator, config, teacher, resolved_yaml)
    plan = make_plan(config, listing)
    accelerator.wait_for_everyone()
    my_units = decided["pending"][accelerator.process_index :: accelerator.num_processes]
    started = time.perf_counter()
    figures = _label(accelerator, config, listing, plan, my_units, teacher)
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
        "processes": every_process,
    }
    summary = summarise(out_dir, config.output.prefix, plan, this_run)
    summary["teacher"] = teacher.model_id
    summary["teacher_revision"] = teacher.revision
    summary = write_summary(out_dir, summary)
    if not summary["complete"]:
        logger.error("the output is incomplete: %d labeled + %d rejected of %d inputs", summary["labeled"],
                     summary["rejected"], summary["inputs"])
    return summary
