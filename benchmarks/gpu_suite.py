"""Every GPU figure the pipeline promises, in one run of a few minutes on one GPU, with no download.

    python benchmarks/gpu_suite.py --out benchmarks/results/gpu_suite_<date>.json
    python benchmarks/gpu_suite.py --cpu --tiny --out /tmp/suite.json     # the same code in seconds (CI)

Sections, each with its own time budget, each written to the JSON as soon as it ends (a failing section records
its error and the next one runs):
- ``teachers``: teacher images/s on 384x512 crops, each family at its own size (DPT 384x512, Depth Anything 518x686:
  its authors' lower bound 518; ``--tiny``: short side 96), with the bf16 backbone and float32 head,
  batch 16 and 64, for DPT-Hybrid, DPT-Large and Depth Anything V2 Small / Base / Large built at their real sizes
  with random weights (same FLOPs as the trained ones; the parameter counts are asserted); ``channels_last`` and
  ``torch.compile`` tried on the reference teacher (DPT-Hybrid) at its faster batch; peak GPU memory of each.
- ``label_precision``: the label map of the bf16-backbone default and of a fully bf16 network against a full
  float32 run of the same teacher on the same images: distinct values and relative error.
- ``labelling``: the whole ``pseudolabel`` stage on generated 683x512 JPEGs with 0, 8 and 16 decode workers:
  images/s and the GPU's busy fraction (NVML), so a user sees how many CPU cores one GPU needs; then two teachers in
  one run (``--teacher.model '[DPT-Hybrid, Depth Anything V2 Small]'``, every image labelled by both) beside Depth
  Anything V2 Small alone, at the most decode workers: what labelling with several teachers costs.
- ``training``: the reference student at 256x192, batch 256, bf16, ``channels_last``: optimizer steps/s on device
  batches with and without ``torch.compile``, and with the per-step host reads of the old loop against none; the
  training loader alone at 8 and 16 workers; the whole ``distill`` loop on the labelling section's shards.
- ``decode_equivalence``, ``labelling_paths``, ``training_paths`` (``benchmarks/gpu_device_paths.py``): images
  decoded where the model runs against today's CPU path, side by side: pixels, stored JPEGs and labels of both
  paths on the device; the labelling stage at 8 workers (compiled teacher, then eager) and the training loop at 8
  workers with ``decode_device`` cpu and auto, against the teacher alone and the optimizer step alone; peak memory.
  The issue-28 check: ``--sections decode_equivalence labelling_paths training_paths`` (about 6 minutes).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.gpu_device_paths import (  # noqa: E402
    section_decode_equivalence,
    section_labelling_paths,
    section_training_paths,
)
from benchmarks.gpu_timing import BusySampler, timed_rate  # noqa: E402
from benchmarks.gpu_training import section_training  # noqa: E402
from benchmarks.pseudolabel_pipeline import make_inputs  # noqa: E402
from pseudolabel.teachers import load_teacher  # noqa: E402
from pseudolabel.tiny_teacher import (  # noqa: E402
    REFERENCE_TEACHERS,
    build_random_teacher,
    reference_config,
    save_teacher,
    tiny_config,
)

#: The tiny stand-in (``pseudolabel.tiny_teacher`` architecture) of each reference teacher in ``--tiny`` mode.
TINY_TEACHERS = {"dpt_hybrid": "dpt_hybrid", "dpt_large": "dpt", "depth_anything_v2_small": "depth_anything"}


class Suite:
    """Settings that differ between the real run and ``--tiny``, the device, and the JSON being written."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.tiny = args.tiny
        self.device = torch.device("cpu" if args.cpu or not torch.cuda.is_available() else "cuda")
        self.out = Path(args.out)
        self.work = Path(tempfile.mkdtemp(prefix="gpu_suite_"))
        self.size = (96, 128) if self.tiny else (384, 512)  # teacher input (H, W)
        self.short_side = 96 if self.tiny else None  # None: each family's own size (Depth Anything 518)
        self.batches = (2, 4) if self.tiny else (16, 64)
        self.teachers = list(TINY_TEACHERS) if self.tiny else list(REFERENCE_TEACHERS)
        self.label_images = 16 if self.tiny else 2048
        self.label_runs = args.label_runs or (["0", "2"] if self.tiny else ["0", "8", "16", "8c", "16c"])
        self.student_size = (128, 96) if self.tiny else (256, 192)  # (W, H)
        self.student_batch = 4 if self.tiny else 256
        self.student = {"pretrained": False}  # the reference student; tiny: a small timm test encoder
        if self.tiny:
            self.student.update(encoder="test_efficientnet", decoder_widths=[32, 24, 16, 16, 8])
        self.loader_workers = (0, 2) if self.tiny else (8, 16)
        self.compile_backend = "eager" if self.tiny else "inductor"  # tiny: the code path, not the compiler
        self.results: dict[str, Any] = {"environment": environment(self.device), "tiny": self.tiny, "sections": {}}

    def seconds(self, real: float) -> float:
        """A time budget: ``real`` seconds on the GPU, a token amount in tiny mode."""
        return 0.2 if self.tiny else real

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def reset_peak(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

    def peak_gib(self) -> float | None:
        return round(torch.cuda.max_memory_allocated() / 2**30, 2) if self.device.type == "cuda" else None

    def write(self) -> None:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.out.write_text(json.dumps(self.results, indent=2) + "\n")


def environment(device: torch.device) -> dict[str, Any]:
    import transformers

    name = torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu"
    return {"date": datetime.date.today().isoformat(), "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "cpu_count": os.cpu_count(), "device": name}


def teacher_folder(suite: Suite, name: str) -> Path:
    """A saved random-weight teacher (real size, or its tiny stand-in), loaded later like a downloaded one."""
    folder = suite.work / "teachers" / name
    if not folder.exists():
        config = tiny_config(TINY_TEACHERS[name]) if suite.tiny else reference_config(name)
        with torch.device(suite.device):  # initialise on the GPU: a 343 M model builds in seconds there
            model = build_random_teacher(config)
        millions = round(sum(p.numel() for p in model.parameters()) / 1e6, 1)
        if not suite.tiny and millions != REFERENCE_TEACHERS[name][1]:
            raise AssertionError(f"{name}: {millions} M parameters, expected {REFERENCE_TEACHERS[name][1]} M")
        save_teacher(model.cpu(), folder)
        del model
    return folder


def section_teachers(suite: Suite) -> dict[str, Any]:
    height, width = suite.size
    records: dict[str, Any] = {}
    for name in suite.teachers:
        folder = teacher_folder(suite, name)
        teacher = load_teacher(str(folder), device=suite.device, short_side=suite.short_side)
        record: dict[str, Any] = {
            "parameters_m": round(sum(p.numel() for p in teacher.network.model.parameters()) / 1e6, 1),
            "network_size": list(teacher.network_size(height, width)),
            "precisions": teacher.precisions(),
        }
        for batch in suite.batches:
            images = torch.randint(0, 256, (batch, height, width, 3), dtype=torch.uint8, device=suite.device)
            suite.reset_peak()
            rate = timed_rate(suite, lambda t=teacher, x=images: t.predict(x), batch, suite.seconds(4))
            record[f"batch_{batch}"] = {**rate, "peak_gib": suite.peak_gib()}
        records[name] = record
        del teacher
        shutil.rmtree(folder)  # keep the disk for the next one
    reference = suite.teachers[0]
    best = max(suite.batches, key=lambda b: records[reference][f"batch_{b}"]["items_per_s"])
    records[f"{reference}_tuned"] = tuned_teacher(suite, reference, best)
    return records


def tuned_teacher(suite: Suite, name: str, batch: int) -> dict[str, Any]:
    """``channels_last`` and ``torch.compile`` on one teacher and batch (the compile time is reported)."""
    height, width = suite.size
    images = torch.randint(0, 256, (batch, height, width, 3), dtype=torch.uint8, device=suite.device)
    teacher = load_teacher(str(teacher_folder(suite, name)), device=suite.device, short_side=suite.short_side)
    results: dict[str, Any] = {"batch": batch}
    teacher.network.model.to(memory_format=torch.channels_last)
    suite.reset_peak()
    results["channels_last"] = {**timed_rate(suite, lambda: teacher.predict(images), batch, suite.seconds(6)),
                                "peak_gib": suite.peak_gib()}
    teacher.network = torch.compile(teacher.network, backend=suite.compile_backend)
    started = time.perf_counter()
    teacher.predict(images)
    suite.synchronize()
    results["compile_seconds"] = round(time.perf_counter() - started, 1)
    suite.reset_peak()
    results["channels_last_compiled"] = {
        **timed_rate(suite, lambda: teacher.predict(images), batch, suite.seconds(6)), "peak_gib": suite.peak_gib()
    }
    return results


def section_label_precision(suite: Suite) -> dict[str, Any]:
    """The bf16 backbone + float32 head default, and a fully bf16 network, against float32 on the same images."""
    from shards.tools.scenes import render_scene

    name = suite.teachers[0]
    folder = teacher_folder(suite, name)
    height, width = suite.size
    images = torch.stack([torch.from_numpy(render_scene(seed, width, height).image)
                          for seed in range(4 if suite.tiny else 16)])
    maps = {}
    for precision in ("fp32", "bf16"):
        teacher = load_teacher(str(folder), device=suite.device, short_side=suite.short_side, precision=precision)
        maps[precision] = torch.cat([teacher(chunk) for chunk in images.split(4)])
        if precision == "bf16":
            del teacher.network.model.head.forward  # the old behaviour: the head under bf16 autocast too
            maps["bf16_head"] = torch.cat([teacher(chunk) for chunk in images.split(4)])
    reference = maps["fp32"]
    span = (reference.flatten(1).amax(1) - reference.flatten(1).amin(1)).clamp(min=1e-12)[:, None, None]
    records: dict[str, Any] = {"teacher": name, "images": len(images)}
    runs = {"bf16_backbone_fp32_head": maps["bf16"], "bf16_everywhere": maps["bf16_head"], "fp32": reference}
    for label, values in runs.items():
        relative = ((values - reference).abs() / reference.abs().clamp(min=1e-6)).flatten()
        code_steps = ((values - reference).abs() / span * 65534).flatten()
        records[label] = {
            "distinct_values_per_map": int(statistics.median(torch.unique(m).numel() for m in values)),
            "median_relative_error": float(relative.median()),
            "p99_relative_error": float(relative.quantile(0.99)) if relative.numel() < 2**24 else None,
            "median_error_in_16bit_code_steps": float(code_steps.median()),
        }
    return records


def label_run(suite: Suite, inputs: Path, teachers: list[Path], workers: int, output: Path,
              compiled: bool = False) -> dict[str, Any]:
    """One ``pseudolabel`` run (its own config parser and run) of ``teachers`` (one, or several in one run) over
    ``inputs``: images/s, the GPU's busy fraction, and where the time went."""
    from pseudolabel.config import PseudolabelConfig
    from pseudolabel.run import run
    from shards.cli.config import parse_config

    model = str(teachers[0]) if len(teachers) == 1 else "[" + ", ".join(str(folder) for folder in teachers) + "]"
    argv = [
        "--source.path", str(inputs), "--source.sample_count", "0", "--teacher.model", model,
        "--output.dir", str(output), "--output.samples_per_shard", "256" if not suite.tiny else "8",
        "--runtime.batch_size", str(suite.batches[-1]), "--runtime.num_workers", str(workers),
        "--runtime.progress", "false", "--runtime.log_level", "WARNING",
        "--runtime.compile_teacher", "true" if compiled else "false",
    ]
    if suite.tiny:
        argv += ["--teacher.short_side", "96"]
    config, resolved = parse_config(PseudolabelConfig, argv, prog="pseudolabel.py")
    sampler = BusySampler(suite.device)
    sampler.start()
    summary = run(config, resolved)
    sampler.stop.set()
    process = summary["this_run"]["processes"][0]
    return {
        "images_per_s": process["images_per_second"], "labeled": summary["labeled"],
        "rejected": summary["rejected"], "gpu_busy_fraction": sampler.fraction(),
        "teacher_seconds": process["teacher_seconds"],
        "teacher_share_of_wall": round(process["teacher_seconds"] / process["seconds"], 3),
        "loader_wait_s": process["loader_wait_seconds"], "writer_wait_s": process["writer_wait_seconds"],
    }


#: The two-teacher labelling run (issue 26): the reference teacher and Depth Anything V2 Small on every image.
TWO_TEACHERS = ("dpt_hybrid", "depth_anything_v2_small")


def section_labelling(suite: Suite) -> dict[str, Any]:
    """``pseudolabel`` end to end on generated Places365-sized JPEGs: the reference teacher by decode workers (and
    compiled), then DPT-Hybrid + Depth Anything V2 Small in one run beside Depth Anything alone, at the most
    workers of an uncompiled run: several teachers cost the sum of their times."""
    inputs = suite.work / "inputs"
    make_inputs(inputs, suite.label_images, unique=12 if suite.tiny else 48)
    folder = teacher_folder(suite, suite.teachers[0])
    records: dict[str, Any] = {"images": suite.label_images, "input_size": [683, 512]}
    for run_name in suite.label_runs:  # decode workers, "c": the teacher compiled (runtime.compile_teacher)
        workers, compiled = int(run_name.rstrip("c")), run_name.endswith("c")
        output = suite.work / f"labels_{run_name}"
        record = label_run(suite, inputs, [folder], workers, output, compiled)
        records[f"workers_{workers}" + ("_compiled" if compiled else "")] = record
        suite.results["shards_for_training"] = str(output)
    workers = max(int(name) for name in suite.label_runs if not name.endswith("c"))
    pair = [teacher_folder(suite, name) for name in TWO_TEACHERS]
    alone = label_run(suite, inputs, pair[1:], workers, suite.work / "labels_second_alone")
    together = label_run(suite, inputs, pair, workers, suite.work / "labels_two_teachers")
    records["two_teachers"] = {
        "teachers": list(TWO_TEACHERS), "workers": workers, "together": together, f"{TWO_TEACHERS[1]}_alone": alone,
        f"{TWO_TEACHERS[0]}_alone": f"workers_{workers}",  # the reference teacher's run above
    }
    return records


SECTIONS = {
    "teachers": section_teachers,
    "label_precision": section_label_precision,
    "labelling": section_labelling,
    "training": section_training,
    "decode_equivalence": section_decode_equivalence,
    "labelling_paths": section_labelling_paths,
    "training_paths": section_training_paths,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even where a GPU is present")
    parser.add_argument("--tiny", action="store_true", help="tiny models and data: the code path in seconds")
    parser.add_argument("--sections", nargs="+", choices=list(SECTIONS), default=list(SECTIONS))
    parser.add_argument("--label-runs", nargs="+", help="labelling runs: decode workers, 'c' = compiled teacher")
    args = parser.parse_args(argv)
    suite = Suite(args)
    failures = 0
    try:
        for name in [name for name in SECTIONS if name in args.sections]:
            started = time.perf_counter()
            print(f"[gpu_suite] {name} ...", flush=True)
            try:
                record = SECTIONS[name](suite)
            except Exception as error:  # noqa: BLE001 - recorded, and the next section still runs
                traceback.print_exc()
                record, failures = {"error": f"{type(error).__name__}: {error}"}, failures + 1
            record["seconds"] = round(time.perf_counter() - started, 1)
            suite.results["sections"][name] = record
            suite.write()
            print(f"[gpu_suite] {name}: {json.dumps(record)}", flush=True)
    finally:
        shutil.rmtree(suite.work, ignore_errors=True)
    suite.results.pop("shards_for_training", None)
    suite.write()
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
