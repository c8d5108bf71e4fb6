"""How fast the pseudo-labelling pipeline runs without the teacher, and what that means on a GPU machine.

    python benchmarks/pseudolabel_pipeline.py [--images 240] [--workers 0 1 2] [--tiny-images 24]

1. Stage costs on one core, per image (medians): read + decode + resize + crop of a Places365-sized JPEG
   (683x512; resizing with torch's uint8 antialiased bicubic, and with PIL's for comparison), JPEG encode of the
   512x384 crop, label coding (16-bit codes; with ``shards.format.encode_label_codes`` for comparison) and
   compression with the default codec, tar write.
2. The whole stage with the ``identity`` teacher (a cheap function of the image instead of a network), so only decode,
   resize, encode and write are timed, in images/s per process for each DataLoader worker count.
3. The whole stage with the tiny random DPT teacher at 512x384 (CPU).
4. The DPT-Hybrid target on one H100, estimated from its FLOPs, and the CPU cores the pipeline needs for it.

Results: printed and written to ``benchmarks/results/pseudolabel_pipeline.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from pseudolabel.config import PreprocessConfig  # noqa: E402
from pseudolabel.preprocess import preprocess_image, resize_and_crop  # noqa: E402
from pseudolabel.run import code_map  # noqa: E402
from shards.format import (  # noqa: E402  # noqa: E402
    DEFAULT_LABEL_CODEC,
    RELATIVE_INVERSE_DEPTH,
    SampleMeta,
    encode_jpeg,
    encode_label_codes,
    inverse_depth,
    sample_members,  # noqa: E402
)
from shards.tools.scenes import render_scene  # noqa: E402
from shards.writer import ShardWriter  # noqa: E402

PLACES_SIZE = (683, 512)  # Places365 "large" images: short side 512
DPT_HYBRID_GMAC = 173  # per 384x512 image (measured with torch's FlopCounterMode)
H100_BF16_DENSE_TFLOPS = 989  # SXM, dense (no sparsity)
UTILISATION_RANGE = (0.25, 0.40)  # plausible share of peak for a ViT-B + ResNet + conv decoder in eager bf16
CORES_ON_THE_GPU_MACHINE = 16


def make_inputs(folder: Path, count: int, unique: int = 12) -> list[Path]:
    """``count`` JPEGs (q90) at 683x512 from ``unique`` generated scenes, each copy shifted so no two are equal."""
    folder.mkdir(parents=True, exist_ok=True)
    scenes = [render_scene(seed, *PLACES_SIZE) for seed in range(unique)]
    paths = []
    for index in range(count):
        scene = scenes[index % unique]
        image = np.roll(scene.image, shift=7 * (index // unique), axis=1)
        path = folder / f"{index // 100:02d}" / f"{index:06d}.jpg"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(image).save(path, quality=90)
        paths.append(path)
    return paths


def median_ms(function, items) -> float:
    times = []
    for item in items:
        started = time.perf_counter()
        function(item)
        times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 3)


def stage_costs(paths: list[Path], folder: Path) -> dict[str, float]:
    """Per-image milliseconds on one core for each step the pipeline does outside the teacher."""
    import torch

    torch.set_num_threads(1)
    config = PreprocessConfig(jpeg_draft=False)
    originals = [Image.open(path).convert("RGB") for path in paths[:48]]
    arrays = [np.array(image) for image in originals]
    crops = [preprocess_image(path.read_bytes(), path.stem, config).image for path in paths[:48]]
    smooth = [inverse_depth(render_scene(seed, 512, 384).depth).astype(np.float32) for seed in range(4)]  # teacher-like
    rng = np.random.default_rng(0)
    noisy = [depth + rng.normal(0, 0.05, depth.shape).astype(np.float32) for depth in smooth]  # worst case
    coded = [code_map(depth) for depth in smooth]
    noisy_coded = [code_map(depth) for depth in noisy]

    def compress(codes_range):
        meta = SampleMeta(source="x.jpg", kind=RELATIVE_INVERSE_DEPTH)
        return sample_members("x", b"", codes_range[0], codes_range[1], meta, DEFAULT_LABEL_CODEC)

    members = compress(coded[0])
    sample = {**members, "jpg": encode_jpeg(crops[0])}
    writer = ShardWriter(folder, "bench", 0, 0)
    counter = iter(range(10**9))

    def write(_):
        writer.write({**sample, "__key__": f"k{next(counter)}"})

    def decode(path):
        with Image.open(path) as image:
            image.load()

    def pil_resize_crop(image):
        image.resize((512, 384), Image.Resampling.BICUBIC, box=(0, 0, image.height * 4 / 3, image.height))

    def resize_crop(array):
        resize_and_crop(array, (512, 384), (0, 0, 512, 384))

    costs = {
        "read_decode_ms": median_ms(decode, paths[:48]),
        "resize_crop_ms": median_ms(resize_crop, arrays),
        "resize_crop_with_pil_ms": median_ms(pil_resize_crop, originals),
        "read_decode_resize_crop_ms": median_ms(lambda path: preprocess_image(path.read_bytes(), "k", config),
                                                paths[:48]),
        "jpeg_encode_ms": median_ms(encode_jpeg, crops),
        "label_code_ms": median_ms(code_map, smooth * 6),
        "label_code_with_encode_label_codes_ms": median_ms(encode_label_codes, smooth * 6),
        "label_compress_smooth_ms": median_ms(compress, coded * 6),
        "label_compress_noisy_ms": median_ms(compress, noisy_coded * 6),
        "tar_write_ms": median_ms(write, range(48)),
        "sample_bytes_smooth": sum(len(v) for k, v in sample.items() if k != "__key__"),
    }
    writer.close()
    torch.set_num_threads(os.cpu_count() or 1)
    costs["cpu_ms_per_image"] = round(
        costs["read_decode_resize_crop_ms"] + costs["jpeg_encode_ms"] + costs["label_compress_smooth_ms"]
        + costs["tar_write_ms"], 3
    )  # on a GPU machine the codes are computed on the GPU (label_code_ms is the CPU fallback)
    return costs


def run_stage(source: Path, out: Path, teacher: str, workers: int, count: int, extra: list[str]) -> dict:
    from pseudolabel.cli import main

    arguments = [
        "--source.path", str(source), "--source.sample_count", str(count), "--teacher.model", teacher,
        "--teacher.precision", "fp32", "--output.dir", str(out), "--output.samples_per_shard", "64",
        "--runtime.num_workers", str(workers), "--runtime.batch_size", "16", "--runtime.progress", "false",
        "--runtime.log_level", "WARNING", *extra,
    ]
    if main(arguments) != 0:
        raise RuntimeError(f"pseudolabel failed: {arguments}")
    summary = json.loads((out / "summary.json").read_text())
    process = summary["this_run"]["processes"][0]
    return {
        "teacher": teacher,
        "workers": workers,
        "images": summary["this_run"]["inputs"],
        "images_per_second": summary["images_per_second"],
        "seconds": summary["seconds"],
        "loader_wait_seconds": process["loader_wait_seconds"],
        "teacher_seconds": process["teacher_seconds"],
        "writer_wait_seconds": process["writer_wait_seconds"],
    }


def gpu_target() -> dict:
    flops = 2 * DPT_HYBRID_GMAC * 1e9
    peak = H100_BF16_DENSE_TFLOPS * 1e12 / flops
    low, high = (peak * share for share in UTILISATION_RANGE)
    return {
        "dpt_hybrid_gflop_per_image": round(flops / 1e9),
        "h100_peak_images_per_second": round(peak),
        "estimated_images_per_second": [round(low), round(high)],
        "measured": False,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=240, help="inputs for the identity-teacher runs")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--tiny-images", type=int, default=24, help="inputs for the tiny-teacher run (0 = skip)")
    parser.add_argument("--out", default=str(REPO_ROOT / "benchmarks" / "results" / "pseudolabel_pipeline.json"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        paths = make_inputs(scratch / "images", args.images)
        stages = stage_costs(paths, scratch / "stage_shards")
        runs = [run_stage(scratch / "images", scratch / f"identity_{w}", "identity", w, args.images, [])
                for w in args.workers]
        if args.tiny_images:
            from pseudolabel.tiny_teacher import save_tiny_teacher

            teacher = save_tiny_teacher(scratch / "tiny_teacher", "dpt")
            runs.append(run_stage(scratch / "images", scratch / "tiny", str(teacher), 1, args.tiny_images, []))
    target = gpu_target()
    per_core = 1000 / stages["cpu_ms_per_image"]
    target["pipeline_images_per_second_per_core"] = round(per_core, 1)
    target["cores_needed"] = [round(rate / per_core, 1) for rate in target["estimated_images_per_second"]]
    target["cores_on_the_machine"] = CORES_ON_THE_GPU_MACHINE
    results = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "command": "python benchmarks/pseudolabel_pipeline.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "stages_one_core": stages,
        "runs": runs,
        "gpu_target": target,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
