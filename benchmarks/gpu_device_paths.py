"""The GPU suite's sections on decoding where the model runs (issue 28): the device path against today's CPU path,
side by side on the same device in the same run.

- ``decode_equivalence``: generated 683x512 JPEGs (4:2:0 colour, 4:4:4 colour, grey) through both paths on the
  suite's device: decoded pixels against PIL's, the 512x384 crops, the stored JPEGs read back (each against the
  other and against the uncompressed crop, and their bytes), a tiny teacher's 16-bit codes, and the training
  augmentation's images; grey levels as mean, max and the share of pixels that differ. Also the device path's
  images/s for a batch (decode, resize, crop, encode) against today's per-image milliseconds on one core.
- ``labelling_paths``: the whole ``pseudolabel`` stage, compiled DPT-Hybrid (random weights, real size), 8 decode
  workers, ``runtime.decode_device`` cpu then auto (eager too when ``--label-runs`` asks), against the compiled
  teacher alone at the same batch: images/s, the ratio, GPU busy, fallbacks, peak GPU memory.
- ``training_paths``: the reference student's optimizer step alone on device batches, and the whole ``distill``
  loop at 8 workers with ``data.decode_device`` cpu then auto on the labelling section's shards.
"""

from __future__ import annotations

import io
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.gpu_timing import BusySampler, timed_rate

REPO_ROOT = Path(__file__).resolve().parents[1]


def path_settings(suite: Any) -> dict[str, Any]:
    """Inputs, runs and workers of the path sections. A run is ``<workers>[c]-<decode_device>`` (c: the teacher
    compiled); compiled runs first, each written as it ends. On a CPU (``--cpu --tiny``) ``model`` stands for
    ``auto``, which there would take today's path: the device path's code still runs, on CPU tensors."""
    device_path = "auto" if suite.device.type == "cuda" else "model"
    if suite.tiny:
        return {"images": 16, "runs": ["2-cpu", f"2-{device_path}"], "workers": 2, "device_path": device_path}
    return {"images": 4096, "runs": ["8c-cpu", "8c-auto", "8-cpu", "8-auto"], "workers": 8,
            "device_path": device_path}


def difference(ours: np.ndarray | torch.Tensor, theirs: np.ndarray | torch.Tensor) -> dict[str, float]:
    """Grey-level differences of two uint8 (or [0, 255] float) pictures: mean, max, share of pixels that differ."""
    gap = np.abs(np.asarray(ours, dtype=np.float64) - np.asarray(theirs, dtype=np.float64))
    return {"mean": round(float(gap.mean()), 4), "max": round(float(gap.max()), 2),
            "share_differing": round(float((gap > 0.5).mean()), 5)}


def worst(records: list[dict[str, float]]) -> dict[str, float]:
    """Over several pictures: the mean of the means, the largest max, the mean share."""
    return {"mean": round(statistics.mean(r["mean"] for r in records), 4), "max": max(r["max"] for r in records),
            "share_differing": round(statistics.mean(r["share_differing"] for r in records), 5)}


def equivalence_inputs(count: int) -> list[tuple[str, bytes]]:
    """``count`` 683x512 scenes as JPEG q90: mostly 4:2:0 colour (what cameras and Places365 hold), every fourth
    4:4:4, every eighth grey."""
    from PIL import Image

    from shards.tools.scenes import render_scene

    found = []
    for seed in range(count):
        picture = Image.fromarray(render_scene(seed, 683, 512).image)
        options = {"quality": 90, "subsampling": 0 if seed % 4 == 3 else 2}
        picture = picture.convert("L") if seed % 8 == 7 else picture
        buffer = io.BytesIO()
        picture.save(buffer, format="JPEG", **options)
        found.append((f"scene/{seed:04d}", buffer.getvalue()))
    return found


def section_decode_equivalence(suite: Any) -> dict[str, Any]:
    from pseudolabel.config import PreprocessConfig
    from pseudolabel.device_inputs import crops_on_device, plan_device_input
    from pseudolabel.preprocess import preprocess_image
    from shards.format import decode_jpeg, encode_jpeg
    from shards.tensor_images import decode_jpegs, encode_jpegs

    inputs = equivalence_inputs(4 if suite.tiny else 64)
    config = PreprocessConfig()
    today = [preprocess_image(data, key, config) for key, data in inputs]
    planned = [plan_device_input(data, key, config) for key, data in inputs]
    decoded = decode_jpegs([data for _, data in inputs], suite.device)
    crops = crops_on_device(planned, suite.device)
    stored = encode_jpegs(crops, 95)
    stored_today = [encode_jpeg(before.image, 95) for before in today]
    records: dict[str, Any] = {"device": str(suite.device), "inputs": len(inputs)}
    records["decoded_vs_pil"] = worst([difference(picture.permute(1, 2, 0).cpu(), decode_jpeg(data))
                                       for picture, (_, data) in zip(decoded, inputs)])
    records["crop_vs_today"] = worst([difference(crop.permute(1, 2, 0).cpu(), before.image)
                                      for crop, before in zip(crops, today)])
    records["stored_jpeg_vs_today"] = worst([difference(decode_jpeg(ours), decode_jpeg(theirs))
                                             for ours, theirs in zip(stored, stored_today)])
    records["stored_jpeg_vs_crop"] = worst([difference(decode_jpeg(ours), crop.permute(1, 2, 0).cpu())
                                            for ours, crop in zip(stored, crops)])
    records["today_stored_jpeg_vs_crop"] = worst([difference(decode_jpeg(theirs), before.image)
                                                  for theirs, before in zip(stored_today, today)])
    records["stored_bytes_ratio"] = round(sum(map(len, stored)) / sum(map(len, stored_today)), 3)
    records["label_code_steps"] = label_code_steps(suite, [before.image for before in today], crops)
    records["training_images"] = training_equivalence(suite, stored_today[:8])
    records["speed"] = decode_speed(suite, inputs, planned, config)
    records["note"] = ("grey levels: mean, max, share of pixels differing; stored JPEGs read back by PIL; the device "
                       "encodes 4:4:4 on a GPU (torchvision's nvJPEG setting), 4:2:0 on a CPU")
    return records


def label_code_steps(suite: Any, today: list[np.ndarray], crops: list[torch.Tensor]) -> dict[str, float]:
    """A tiny float32 teacher on both paths' crops, on the suite's device: 16-bit code steps apart."""
    from pseudolabel.run import code_map
    from pseudolabel.teachers import load_teacher
    from pseudolabel.tiny_teacher import save_tiny_teacher

    folder = save_tiny_teacher(suite.work / "tiny_dpt", "dpt")
    teacher = load_teacher(str(folder), device=suite.device, precision="fp32")
    maps_today = teacher(torch.from_numpy(np.stack(today)))
    maps_device = teacher(torch.stack(crops).permute(0, 2, 3, 1).contiguous())
    medians, largest = [], 0
    for depth_today, depth_device in zip(maps_today, maps_device):
        codes_today, _, _ = code_map(depth_today.numpy())
        codes_device, _, _ = code_map(depth_device.numpy())
        steps = np.abs(codes_today.astype(np.int64) - codes_device)
        medians.append(float(np.median(steps)))
        largest = max(largest, int(steps.max()))
    return {"median_of_medians": statistics.median(medians), "worst_median": max(medians), "max": largest}


def training_equivalence(suite: Any, jpegs: list[bytes]) -> dict[str, float]:
    """Today's ``TrainTransform`` on the CPU against the device augmentation with the same draws, in grey levels."""
    from distill.training.config import DataConfig
    from distill.training.data import TrainTransform
    from distill.training.device_augment import augment_on_device
    from shards.format import RELATIVE_INVERSE_DEPTH, DepthSample, SampleMeta, decode_jpeg

    config = DataConfig(train="unused")
    transform, twin = TrainTransform(config, seed=7), TrainTransform(config, seed=7)
    rng = np.random.default_rng([7, 0, 0, 1])  # the twin of the transform's generator (rank 0, worker 0)
    meta = SampleMeta(source="scene", kind=RELATIVE_INVERSE_DEPTH)
    today, draws = [], []
    for index, data in enumerate(jpegs):
        image = decode_jpeg(data).copy()
        depth = np.ones(image.shape[:2], dtype=np.float32)
        today.append(transform(DepthSample(f"k{index}", image, depth, depth > 0, meta))["image"])
        box = twin.random_box(rng, (image.shape[1], image.shape[0]))
        flip = bool(rng.uniform() < twin.flip)
        draws.append((box, flip, tuple(float(np.float32(rng.uniform(1 - x, 1 + x))) for x in twin.jitter)))
    boxes, flips, jitter = (torch.tensor([draw[index] for draw in draws]) for index in range(3))
    size = tuple(int(v) for v in config.size)
    ours = augment_on_device(jpegs, boxes, flips, jitter, size, suite.device).cpu()
    return difference(ours * 255, torch.stack(today) * 255)


def decode_speed(suite: Any, inputs: list[tuple[str, bytes]], planned: list, config: Any) -> dict[str, float]:
    """The device path's decode + resize + crop + encode per batch, and today's per image on one core."""
    from pseudolabel.device_inputs import crops_on_device
    from pseudolabel.preprocess import preprocess_image
    from shards.format import encode_jpeg
    from shards.tensor_images import encode_jpegs

    batch = planned[: suite.batches[-1]]
    device_rate = timed_rate(suite, lambda: encode_jpegs(crops_on_device(batch, suite.device), 95), len(batch),
                             suite.seconds(4))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    started = time.perf_counter()
    for key, data in inputs:
        encode_jpeg(preprocess_image(data, key, config).image, 95)
    cpu_ms = (time.perf_counter() - started) * 1000 / len(inputs)
    torch.set_num_threads(threads)
    return {"device_batch": len(batch), "device_images_per_s": device_rate["items_per_s"],
            "cpu_path_ms_per_image_one_core": round(cpu_ms, 2)}


def teacher_alone(suite: Any, folder: Path, compiled: bool) -> dict[str, Any]:
    """The teacher's images/s on uint8 batches already on the device, at the labelling batch size (compiled as
    ``runtime.compile_teacher`` compiles it)."""
    from pseudolabel.teachers import load_teacher

    height, width = (96, 128) if suite.tiny else (384, 512)
    batch = suite.batches[-1]
    teacher = load_teacher(str(folder), device=suite.device, short_side=suite.short_side)
    started = time.perf_counter()
    if compiled:
        teacher.compile(batch, height, width)
    compile_seconds = round(time.perf_counter() - started, 1)
    images = torch.randint(0, 256, (batch, height, width, 3), dtype=torch.uint8, device=suite.device)
    suite.reset_peak()
    rate = timed_rate(suite, lambda: teacher.predict(images), batch, suite.seconds(6))
    return {**rate, "batch": batch, "compile_seconds": compile_seconds if compiled else None,
            "peak_gib": suite.peak_gib()}


def section_labelling_paths(suite: Any) -> dict[str, Any]:
    from benchmarks.gpu_suite import teacher_folder
    from benchmarks.pseudolabel_pipeline import make_inputs

    settings = path_settings(suite)
    inputs = suite.work / "path_inputs"
    make_inputs(inputs, settings["images"], unique=12 if suite.tiny else 48)
    folder = teacher_folder(suite, suite.teachers[0])
    records: dict[str, Any] = {"images": settings["images"], "input_size": [683, 512], "batch": suite.batches[-1]}
    for compiled in sorted({name.partition("-")[0].endswith("c") for name in settings["runs"]}, reverse=True):
        records[f"teacher_alone_{'compiled' if compiled else 'eager'}"] = teacher_alone(suite, folder, compiled)
    for run_name in settings["runs"]:
        workers, _, decode_device = run_name.partition("-")
        compiled = workers.endswith("c")
        record = labelling_run(suite, inputs, folder, run_name, int(workers.rstrip("c")), compiled, decode_device)
        alone = records[f"teacher_alone_{'compiled' if compiled else 'eager'}"]["items_per_s"]
        record["share_of_teacher_alone"] = round(record["images_per_s"] / alone, 3) if record["images_per_s"] else None
        records[run_name] = record
        suite.results["sections"]["labelling_paths"] = records  # what is measured survives a cut-off run
        suite.write()
    return records


def labelling_run(suite: Any, inputs: Path, folder: Path, name: str, workers: int, compiled: bool,
                  decode_device: str) -> dict[str, Any]:
    from pseudolabel.config import PseudolabelConfig
    from pseudolabel.run import run
    from shards.cli.config import parse_config

    output = suite.work / f"path_labels_{name}"
    argv = [
        "--source.path", str(inputs), "--source.sample_count", "0", "--teacher.model", str(folder),
        "--output.dir", str(output), "--output.samples_per_shard", "256" if not suite.tiny else "8",
        "--runtime.batch_size", str(suite.batches[-1]), "--runtime.num_workers", str(workers),
        "--runtime.progress", "false", "--runtime.log_level", "WARNING",
        "--runtime.compile_teacher", "true" if compiled else "false", "--runtime.decode_device", decode_device,
    ]
    if suite.tiny:
        argv += ["--teacher.short_side", "96"]
    config, resolved = parse_config(PseudolabelConfig, argv, prog="pseudolabel.py")
    sampler = BusySampler(suite.device)
    sampler.start()
    summary = run(config, resolved)
    sampler.stop.set()
    process = summary["this_run"]["processes"][0]
    suite.results["shards_for_training"] = str(output)
    return {
        "images_per_s": process["images_per_second"], "labeled": summary["labeled"],
        "rejected": summary["rejected"], "gpu_busy_fraction": sampler.fraction(),
        "decode": summary["this_run"]["decode"], "peak_gpu_gib": process.get("peak_gpu_gib"),
        "teacher_share_of_wall": round(process["teacher_seconds"] / process["seconds"], 3),
        "loader_wait_s": process["loader_wait_seconds"], "writer_wait_s": process["writer_wait_seconds"],
    }


def section_training_paths(suite: Any) -> dict[str, Any]:
    from distill.students import StudentConfig, create_student
    from distill.training.losses import build_loss
    from distill.training.train import build_optimizer

    width, height = suite.student_size
    batch = suite.student_batch
    records: dict[str, Any] = {"size": [width, height], "batch": batch}
    loss_fn = build_loss()
    image = torch.rand(batch, 3, height, width, device=suite.device).contiguous(memory_format=torch.channels_last)
    target = torch.rand(batch, 1, height, width, device=suite.device) + 0.1
    valid = torch.ones_like(target, dtype=torch.bool)
    torch.manual_seed(0)
    model = create_student(StudentConfig(**suite.student)).to(suite.device, memory_format=torch.channels_last)
    optimizer = build_optimizer(model, 1e-3, (0.9, 0.999), 1e-4, suite.device)

    def step() -> None:
        with torch.autocast(suite.device.type, dtype=torch.bfloat16):
            prediction = model(image)
        loss_fn(prediction.float(), target, valid, image, None)["loss"].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    suite.reset_peak()
    records["step_alone"] = {**timed_rate(suite, step, batch, suite.seconds(8)), "peak_gib": suite.peak_gib()}
    shards = suite.results.get("shards_for_training")
    if shards is None:
        raise RuntimeError("the labelling_paths section wrote no shards to train on")
    settings = path_settings(suite)
    for decode_device in ("cpu", settings["device_path"]):
        records[f"loop_{decode_device}"] = training_loop(suite, shards, decode_device)
        loop_rate = records[f"loop_{decode_device}"]["images_per_s_after_first_interval"]
        records[f"loop_{decode_device}"]["share_of_step_alone"] = (
            round(statistics.median(loop_rate) / records["step_alone"]["items_per_s"], 3) if loop_rate else None
        )
    return records


def training_loop(suite: Any, shards: str, decode_device: str) -> dict[str, Any]:
    """The real ``distill.py`` in its own process (Accelerate's precision is fixed per process)."""
    width, height = suite.student_size
    steps = 6 if suite.tiny else 90
    output = suite.work / f"distill_{decode_device}"
    argv = ["--data.train", shards, "--data.size", json.dumps([width, height]), "--data.batch_size",
            str(suite.student_batch), "--data.shuffle_buffer", "64" if suite.tiny else "1000",
            "--data.num_workers", str(path_settings(suite)["workers"]), "--data.decode_device", decode_device,
            "--train.steps", str(steps), "--log.every", str(steps // 3), "--log.images_every", "0",
            "--log.tensorboard", "false", "--checkpoint.every", str(10 * steps), "--optim.warmup_steps", "1",
            "--output.dir", str(output)]
    for key, value in suite.student.items():
        argv += [f"--student.{key}", value if isinstance(value, str) else json.dumps(value)]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
              "--mixed_precision", "bf16" if suite.device.type == "cuda" else "no", "--dynamo_backend", "no"]
    if suite.device.type == "cpu":
        launch.append("--cpu")
    sampler = BusySampler(suite.device)
    sampler.start()
    subprocess.run([*launch, str(REPO_ROOT / "distill.py"), *argv], check=True, cwd=REPO_ROOT)
    sampler.stop.set()
    metrics = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    return {
        "steps": metrics[-1]["step"], "loader_workers": path_settings(suite)["workers"],
        "images_per_s_after_first_interval": [round(m["train/samples_per_s"], 1) for m in metrics[1:]],
        "gpu_busy_fraction": sampler.fraction(), "decode_device": decode_device,
        "peak_gpu_gib": metrics[-1].get("train/peak_gpu_gib"),
    }
