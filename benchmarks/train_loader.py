"""The training loader's samples/s per worker, from 512x384 shards (target: >= 250 samples/s per worker).

    python benchmarks/train_loader.py [--samples 96] [--passes 3]

Writes ``--samples`` generated scenes at 512x384 as relative-label shards (default label codec), then measures, in
this process (one reader = one DataLoader worker's work): the decode alone (JPEG + 16-bit label), and decode +
the training transform (random resized crop to 256x192 with bilinear image / nearest-exact label, flip, colour
jitter, tensors). Then the full ``build_train_loader`` with 1 and 2 DataLoader workers (batches of 32), whose
figures include the worker start-up. Writes ``benchmarks/results/train_loader.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from distill.training.config import DataConfig
from distill.training.data import TrainTransform, build_train_loader
from shards.format import (
    DEFAULT_LABEL_CODEC,
    LABEL_CODECS,
    RELATIVE_INVERSE_DEPTH,
    SAMPLE_SIZE,
    SampleMeta,
    encode_sample,
    inverse_depth,
)
from shards.reader import build_pipeline
from shards.tools.scenes import render_scene
from shards.writer import ShardWriter

RESULTS = Path(__file__).resolve().parent / "results" / "train_loader.json"


def write_shards(folder: Path, samples: int, codec: str, per_shard: int = 32) -> None:
    width, height = SAMPLE_SIZE
    for shard in range((samples + per_shard - 1) // per_shard):
        with ShardWriter(folder, "bench", 0, shard) as writer:
            for index in range(shard * per_shard, min(samples, (shard + 1) * per_shard)):
                scene = render_scene(index, width, height)
                inverse = inverse_depth(scene.depth, scene.valid).astype(np.float32)
                meta = SampleMeta(source=f"scene:{index}", kind=RELATIVE_INVERSE_DEPTH, source_size=SAMPLE_SIZE)
                key = f"scenes/{index:06d}"
                writer.write(encode_sample(key, scene.image, inverse, meta, valid=scene.valid, codec=codec))


def rate(iterable, count: int) -> float:
    start = time.perf_counter()
    seen = sum(1 for _ in itertools.islice(iterable, count))
    return seen / (time.perf_counter() - start)


def measure(folder: Path, count: int) -> dict[str, float]:
    """samples/s of each stage for the shards in ``folder``."""
    results = {}
    config = DataConfig(train=str(folder), batch_size=32, shuffle_buffer=64)
    rate(build_pipeline(str(folder), training=True, decode=None, shuffle_buffer=64), count)  # warm the page cache
    results["read_raw"] = rate(build_pipeline(str(folder), training=True, decode=None, shuffle_buffer=64), count)
    results["decode"] = rate(build_pipeline(str(folder), training=True, shuffle_buffer=64), count)
    transform = TrainTransform(config, seed=0)
    pipeline = build_pipeline(str(folder), training=True, shuffle_buffer=64, transform=transform)
    results["decode_augment"] = rate(pipeline, count)
    for workers in (1, 2):
        config.num_workers = workers
        batches = count // config.batch_size
        loader = build_train_loader(config, seed=0, epoch=0, batches=batches)
        results[f"loader_{workers}_workers"] = rate(loader, batches) * config.batch_size
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=96)
    parser.add_argument("--passes", type=int, default=3, help="samples read = passes x samples")
    parser.add_argument("--codecs", nargs="+", default=[DEFAULT_LABEL_CODEC, "depth16.npy"], choices=LABEL_CODECS)
    args = parser.parse_args()
    count = args.samples * args.passes
    results = {}
    for codec in args.codecs:
        with tempfile.TemporaryDirectory() as tmp:
            write_shards(Path(tmp), args.samples, codec)
            results[codec] = measure(Path(tmp), count)
    print(f"samples/s from {SAMPLE_SIZE[0]}x{SAMPLE_SIZE[1]} shards ({count} samples read per figure):")
    stages = list(next(iter(results.values())))
    print(f"  {'stage':20s} " + " ".join(f"{codec:>14s}" for codec in results))
    for stage in stages:
        print(f"  {stage:20s} " + " ".join(f"{results[codec][stage]:14.1f}" for codec in results))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "command": "python benchmarks/train_loader.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "samples_per_s": results, "target_per_worker": 250,
    }, indent=1) + "\n")


if __name__ == "__main__":
    main()
