"""Shard fuzzing at scale, and what checking the checksums costs the reader and the writer.

Fuzz: ``--trials`` damaged copies of small shards (6 samples; generated scenes, photo-like frames and two-teacher
samples of format 3, in turn), one corruption each, the corruptions in turn (``shards.tools.testing``: bit flips
anywhere, bit flips inside a member, truncations, zeroed 512-byte blocks, duplicated and deleted members, two labels
swapped (any teacher's), one character of a json field). Per corruption, and per kind of shard: trials, trials where
an unchecked reader gets some sample wrong (``changed``), trials ``verify`` flags, trials where verify missed a
damaged key, samples the checked reader yielded that differ from the original (target 0), and trials whose skipped +
lost count differs from the samples not delivered (target 0).

Cost: 512x384 samples (generated scenes, teacher-like labels, the default codec), with one label and with two; the
exact-mode reader (``build_pipeline(training=False)``, one process, full decode of every label) with and without
``checksums``, alternated over ``--repeats`` passes (medians), the sha256 of a sample's members alone, and the
writer's sealing (``shards.format.seal_sample``: hashing and rewriting the json) per sample.

    python benchmarks/shard_fuzz.py [--trials 1000] [--cost-samples 200] [--repeats 5]

Prints a table and writes ``benchmarks/results/shard_fuzz.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from shards.format import (
    RELATIVE_INVERSE_DEPTH,
    SAMPLE_SIZE,
    ExtraLabel,
    SampleMeta,
    digest,
    encode_sample,
    inverse_depth,
    seal_sample,
)
from shards.reader import build_pipeline
from shards.tools.scenes import render_scene
from shards.tools.testing import CORRUPTIONS, SHARD_KINDS, originals, run_trial, write_template
from shards.writer import ShardWriter

ROOT = Path(__file__).resolve().parents[1]


def fuzz(trials: int, folder: Path) -> tuple[dict[str, dict[str, int]], dict[str, dict[str, int]]]:
    """The table by corruption and the table by kind of shard."""
    templates = {kind: write_template(folder / kind, kind, samples=6, seed=i) for i, kind in enumerate(SHARD_KINDS)}
    truths = {kind: originals(path) for kind, path in templates.items()}
    table: dict[str, Counter] = defaultdict(Counter)
    by_kind: dict[str, Counter] = defaultdict(Counter)
    for index in range(trials):
        corruption = CORRUPTIONS[index % len(CORRUPTIONS)]
        kind = SHARD_KINDS[(index // len(CORRUPTIONS)) % len(SHARD_KINDS)]
        trial = run_trial(templates[kind], truths[kind], folder / "work", corruption, seed=10_000 + index)
        for row in (table[corruption], by_kind[kind]):
            row["trials"] += 1
            row["changed"] += trial.changed
            row["damaged_samples"] += len(trial.damaged)
            row["flagged"] += trial.flagged
            row["changed_but_passed_verify"] += trial.changed and not trial.flagged
            row["missed_keys"] += len(trial.missed)
            row["reader_yielded_damaged"] += trial.yielded_damaged
            row["count_mismatches"] += bool(trial.count_error)
    return {name: dict(row) for name, row in table.items()}, {name: dict(row) for name, row in by_kind.items()}


def cost(samples: int, repeats: int, folder: Path, labels: int = 1) -> dict[str, float]:
    """Per-sample costs of samples holding ``labels`` labels (the second a differently scaled teacher-like map)."""
    distinct = [render_scene(seed, *SAMPLE_SIZE) for seed in range(min(samples, 40))]
    encoded = []
    for index in range(samples):
        scene = distinct[index % len(distinct)]
        inverse = inverse_depth(scene.depth, scene.valid)
        meta = SampleMeta(source=f"scene_{index}", kind=RELATIVE_INVERSE_DEPTH, teacher="bench")
        more = [ExtraLabel.from_depth(inverse * (2.0 + i) + 0.5, RELATIVE_INVERSE_DEPTH, f"bench{i}")
                for i in range(1, labels)]
        encoded.append(encode_sample(f"bench/{index:06d}", scene.image, inverse, meta, valid=scene.valid,
                                     more_labels=more))
    started = time.perf_counter()
    for sample in encoded:
        seal_sample(sample)
    seal_ms = (time.perf_counter() - started) / samples * 1000
    with ShardWriter(folder, "cost", 0, labels) as writer:
        for sample in encoded:
            writer.write(sample)
    sealed = [seal_sample(sample)[0] for sample in encoded]
    member_bytes = [sum(len(v) for k, v in s.items() if not k.startswith("__")) for s in sealed]
    started = time.perf_counter()
    for sample in sealed:
        for name, value in sample.items():
            if not name.startswith("__"):
                digest(value)
    hash_ms = (time.perf_counter() - started) / samples * 1000
    times: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(repeats):
        for checksums in (True, False):
            started = time.perf_counter()
            count = sum(1 for _ in build_pipeline(str(writer.path), training=False, split=False, checksums=checksums))
            assert count == samples
            times[checksums].append((time.perf_counter() - started) / samples * 1000)
    checked, unchecked = statistics.median(times[True]), statistics.median(times[False])
    return {
        "samples": samples,
        "labels": labels,
        "bytes_per_sample": round(float(np.mean(member_bytes))),
        "sha256_ms_per_sample": round(hash_ms, 3),
        "seal_ms_per_sample": round(seal_ms, 3),
        "read_ms_per_sample_checked": round(checked, 3),
        "read_ms_per_sample_unchecked": round(unchecked, 3),
        "read_checking_overhead_percent": round((checked / unchecked - 1) * 100, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--cost-samples", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "shard_fuzz.json"))
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # every damaged sample logs a warning
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        table, by_kind = fuzz(args.trials, Path(folder) / "fuzz")
        fuzz_seconds = time.perf_counter() - started
        reader = {f"{n}_label{'s' if n > 1 else ''}": cost(args.cost_samples, args.repeats, Path(folder) / "cost", n)
                  for n in (1, 2)}
    columns = ["trials", "changed", "damaged_samples", "flagged", "changed_but_passed_verify", "missed_keys",
               "reader_yielded_damaged", "count_mismatches"]
    print("| corruption | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for name in CORRUPTIONS:
        print(f"| {name} | " + " | ".join(str(table[name].get(c, 0)) for c in columns) + " |")
    totals = {c: sum(row.get(c, 0) for row in table.values()) for c in columns}
    print("| all | " + " | ".join(str(totals[c]) for c in columns) + " |")
    print("| shard kind | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for name in SHARD_KINDS:
        print(f"| {name} | " + " | ".join(str(by_kind[name].get(c, 0)) for c in columns) + " |")
    print(json.dumps(reader, indent=1))
    record = {
        "command": "python benchmarks/shard_fuzz.py " + f"--trials {args.trials} --cost-samples {args.cost_samples} "
        f"--repeats {args.repeats}",
        "host": {"machine": platform.machine(), "processor": platform.processor(), "cpus": os.cpu_count()},
        "fuzz_seconds": round(fuzz_seconds, 1),
        "fuzz": table,
        "fuzz_by_shard_kind": by_kind,
        "fuzz_totals": totals,
        "reader_cost": reader,
    }
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
