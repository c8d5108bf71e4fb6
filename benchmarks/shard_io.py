"""Shard I/O benchmark: write and read throughput (samples/s per process) and bytes per sample, for 1,000 samples
of 512x384 per label codec; plus the training-side read (decode, random crop to 256x192, horizontal flip) per worker.

Samples are generated scenes (``shards.tools.scenes``) with teacher-like labels (relative inverse depth, smooth with
sharp occlusion edges); 100 distinct scenes are cycled under distinct keys, so rendering does not dominate.

    python benchmarks/shard_io.py [--samples 1000] [--codecs depth16.dzst,depth16.png] [--workers 0]

Write = ``encode_sample`` (JPEG q95 + label) + ``ShardWriter`` (tmp, fsync, rename, stats), one process.
Read = ``build_pipeline(training=False)`` iterated in one process (tar reading + full decode: JPEG and label).
Training read = ``build_pipeline(training=True)`` (resampled, shuffle buffer of 500) + crop + flip, steady state
(timed from the first sample, once the buffer is full), one process, or a DataLoader with ``--workers N`` (reported
per worker). distill's own loader (its transform) is measured by ``benchmarks/train_loader.py``.
Prints a table and writes ``benchmarks/results/shard_io.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from distill.students.config import STUDENT_SIZE
from shards.format import (
    DEFAULT_LABEL_CODEC,
    LABEL_CODECS,
    RELATIVE_INVERSE_DEPTH,
    SAMPLE_SIZE,
    DepthSample,
    SampleMeta,
    encode_sample,
    inverse_depth,
)
from shards.reader import build_pipeline
from shards.tools.scenes import render_scene
from shards.writer import ShardWriter, read_stats

ROOT = Path(__file__).resolve().parents[1]
DISTINCT_SCENES = 100


class RandomCropFlip:
    """The training-side work per sample after decoding: a random 256x192 crop and a random horizontal flip.
    A class, not a closure, so DataLoader workers can pickle it."""

    def __init__(self, seed: int = 0, size: tuple[int, int] = STUDENT_SIZE) -> None:
        self.rng = np.random.default_rng(seed)
        self.width, self.height = size

    def __call__(self, sample: DepthSample) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        height, width = sample.depth.shape
        top = int(self.rng.integers(0, height - self.height + 1))
        left = int(self.rng.integers(0, width - self.width + 1))
        window = (slice(top, top + self.height), slice(left, left + self.width))
        image, depth, valid = sample.image[window], sample.depth[window], sample.valid[window]
        if self.rng.random() < 0.5:
            image, depth, valid = image[:, ::-1], depth[:, ::-1], valid[:, ::-1]
        return np.ascontiguousarray(image), np.ascontiguousarray(depth), np.ascontiguousarray(valid)


def teacher_like_scenes(count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(image uint8 (384, 512, 3), relative inverse depth float32 (384, 512)) of ``count`` generated scenes."""
    scenes = []
    for seed in range(count):
        scene = render_scene(5000 + seed, *SAMPLE_SIZE)
        scenes.append((scene.image, inverse_depth(scene.depth).astype(np.float32)))
    return scenes


def write_shard(folder: Path, codec: str, samples: int, scenes: list) -> dict:
    start = time.perf_counter()
    with ShardWriter(folder, codec.replace(".", "_"), 0, 0) as writer:
        for index in range(samples):
            image, label = scenes[index % len(scenes)]
            meta = SampleMeta(source=f"scene_{index % len(scenes)}.png", kind=RELATIVE_INVERSE_DEPTH, teacher="bench")
            writer.write(encode_sample(f"bench/{index:06d}", image, label, meta, codec=codec))
    seconds = time.perf_counter() - start  # the context manager closed it: fsync, rename, stats json
    stats = read_stats(writer.path)
    return {"path": str(writer.path), "seconds": seconds, "bytes": stats["bytes"]}


def read_all(path: str) -> tuple[int, float]:
    start = time.perf_counter()
    count = sum(1 for _ in build_pipeline(path, training=False, split=False))
    return count, time.perf_counter() - start


def training_read(path: str, samples: int, workers: int) -> tuple[int, float]:
    """Steady-state rate: the clock starts at the first sample, once the shuffle buffer (500) is full."""
    pipeline = build_pipeline(path, training=True, transform=RandomCropFlip(), shuffle_buffer=500)
    if workers == 0:
        iterator = iter(pipeline.with_epoch(samples + 1))
    else:
        import torch

        pipeline = pipeline.with_epoch(samples // workers + 1)
        iterator = iter(torch.utils.data.DataLoader(pipeline, batch_size=None, num_workers=workers, prefetch_factor=4))
    next(iterator)  # filling the shuffle buffer and starting workers is not throughput
    start = time.perf_counter()
    count = sum(1 for _ in iterator)
    return count, time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--codecs", default=",".join(LABEL_CODECS), help="comma list of label codecs")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers for the training read (0: inline)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "shard_io.json"))
    args = parser.parse_args(argv)
    load_at_start = os.getloadavg()[0]  # the machine is shared: say how busy it was

    scenes = teacher_like_scenes(min(DISTINCT_SCENES, args.samples))
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for codec in args.codecs.split(","):
            written = write_shard(Path(folder), codec, args.samples, scenes)
            count, read_seconds = read_all(written["path"])
            assert count == args.samples, f"read {count} of {args.samples}"
            trained, train_seconds = training_read(written["path"], args.samples, args.workers)
            per_worker = trained / train_seconds / max(args.workers, 1)
            rows.append({
                "codec": codec,
                "default": codec == DEFAULT_LABEL_CODEC,
                "write_samples_per_s": round(args.samples / written["seconds"], 1),
                "read_samples_per_s": round(count / read_seconds, 1),
                "training_read_samples_per_s_per_worker": round(per_worker, 1),
                "kb_per_sample": round(written["bytes"] / args.samples / 1000, 1),
            })
            Path(written["path"]).unlink()
    result = {
        "benchmark": "shard_io",
        "command": "python benchmarks/shard_io.py " + " ".join(argv or []),
        "machine": f"{platform.machine()}, {os.cpu_count()}-core CPU (load average recorded separately)",
        "load_average_1min": {"start": load_at_start, "end": os.getloadavg()[0]},
        "samples": args.samples,
        "sample_size": list(SAMPLE_SIZE),
        "training_crop": list(STUDENT_SIZE),
        "workers": args.workers,
        "rows": rows,
    }
    print(f"{'codec':14s} {'write/s':>9s} {'read/s':>9s} {'train read/s/worker':>20s} {'KB/sample':>10s}")
    for row in rows:
        print(
            f"{row['codec']:14s} {row['write_samples_per_s']:9.1f} {row['read_samples_per_s']:9.1f} "
            f"{row['training_read_samples_per_s_per_worker']:20.1f} {row['kb_per_sample']:10.1f}"
            + ("  (default)" if row["default"] else "")
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
