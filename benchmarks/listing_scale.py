"""Startup time and peak memory per labelling process against the number of inputs (issue 17, part 1).

    python benchmarks/listing_scale.py [--sizes N ...] [--list-sizes N ...] [--out FILE]

Two forms of N synthetic inputs: a list file of N paths (in a scrambled order, so the sort does work; the files need
not exist to be listed), and image shards of 1,000 samples (one real shard, hard-linked N / 1,000 times: listing
reads names and sizes only, and a process reads the headers of its own first shard). Each measurement is a fresh
process doing what a labelling process does before its first image: the main process lists the source (for a list
file: the external sort into the on-disk index), builds the jobs and reads its first job's inputs; another process
attaches to that listing and reads its first job's inputs. Reported: seconds, RSS after the imports, and the peak RSS
during the listing (Linux: the peak is reset after the imports through /proc/self/clear_refs), and
a least-squares line through each against N, extrapolated to 62 million inputs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SAMPLES_PER_SHARD = 1000
TARGET = 62_000_000


def make_list(folder: Path, count: int) -> Path:
    path = folder / f"list_{count}" / "images.txt"
    if not path.exists():
        path.parent.mkdir(parents=True)
        step = 7919 if count % 7919 else 7907  # a stride co-prime with count: every index once, scrambled
        with open(path, "w") as handle:
            for start in range(0, count, 100_000):
                handle.writelines(f"img/{(index * step) % count:09d}.jpg\n"
                                  for index in range(start, min(start + 100_000, count)))
    return path


def make_shards(folder: Path, count: int) -> Path:
    import webdataset as wds

    base = folder / "shard_template.tar"
    if not base.exists():
        with wds.TarWriter(str(base)) as sink:
            for index in range(SAMPLES_PER_SHARD):
                sink.write({"__key__": f"{index:06d}", "jpg": b"\xff\xd8\xff\xd9", "txt": b"caption"})
    target = folder / f"shards_{count}"
    if not target.exists():
        target.mkdir()
        for shard in range(count // SAMPLES_PER_SHARD):
            os.link(base, target / f"part-{shard:06d}.tar")
    return target


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as handle:
        line = next(line for line in handle if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024


def child(form: str, path: str, workdir: str, role: str) -> dict:
    """One process's startup; prints its figures as json."""
    sys.path.insert(0, str(ROOT))
    import shards.reader  # noqa: F401 - webdataset (and torch) come with it: counted before the listing
    from pseudolabel.config import SourceConfig
    from pseudolabel.plan import IndexPlan, InputIndex, ShardPlan
    from pseudolabel.sources import attach_source, names_hash, open_source

    imported = _status_mb("VmRSS")
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")  # reset the peak (VmHWM) to the current RSS: the peak below is the listing's
    started = time.perf_counter()
    config = SourceConfig(kind=form, path=path, sample_count=0)
    index_path = Path(workdir) / "index.jsonl"
    description_file = Path(workdir) / "description.json"
    if role == "main":
        listing = open_source(config, index_path)
        description_file.write_text(json.dumps(listing.description))
    else:
        description = json.loads(description_file.read_text())
        shard_names = names_hash(sorted(str(p) for p in Path(path).glob("*.tar"))) if form == "shards" else None
        listing = attach_source(config, description, index_path, shard_names)
    if listing.shards is not None:
        plan = ShardPlan(listing.shards, SAMPLES_PER_SHARD)
    else:
        plan = IndexPlan(InputIndex(listing.index), SAMPLES_PER_SHARD)
    units = plan.pending_units({})
    first = next(plan.jobs(units[1 if role != "main" and len(units) > 1 else 0]))
    assert len(first.items) == SAMPLES_PER_SHARD
    seconds = time.perf_counter() - started
    peak = _status_mb("VmHWM")
    return {"seconds": round(seconds, 3), "peak_rss_mb": round(peak, 1), "rss_after_imports_mb": round(imported, 1),
            "units": len(units)}


def measure(form: str, path: Path, workdir: Path, role: str) -> dict:
    command = [sys.executable, __file__, "--child", form, str(path), str(workdir), role]
    result = subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(result.stdout.strip().splitlines()[-1])


def fit(sizes: list[int], values: list[float]) -> dict:
    slope, intercept = np.polyfit(np.array(sizes, dtype=float), np.array(values, dtype=float), 1)
    return {"per_million": round(slope * 1e6, 4), "at_zero": round(intercept, 3),
            "at_62_million": round(intercept + slope * TARGET, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000, 10_000_000],
                        help="inputs as image shards")
    parser.add_argument("--list-sizes", type=int, nargs="+", default=[100_000, 1_000_000, 10_000_000],
                        help="inputs as list files (the external sort: slower)")
    parser.add_argument("--data", type=Path, default=Path("/tmp/listing_scale"))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/listing_scale.json")
    args = parser.parse_args()
    args.data.mkdir(parents=True, exist_ok=True)
    rows = []
    for form, make, sizes in (("shards", make_shards, args.sizes), ("list", make_list, args.list_sizes)):
        for count in sizes:
            source = make(args.data, count)
            workdir = args.data / f"work_{form}_{count}"
            workdir.mkdir(exist_ok=True)
            for role in ("main", "other"):
                row = {"form": form, "inputs": count, "role": role, **measure(form, source, workdir, role)}
                print(json.dumps(row), flush=True)
                rows.append(row)
    fits = {}
    for form in ("shards", "list"):
        for role in ("main", "other"):
            chosen = [row for row in rows if row["form"] == form and row["role"] == role]
            sizes = [row["inputs"] for row in chosen]
            fits[f"{form}/{role}"] = {"seconds": fit(sizes, [row["seconds"] for row in chosen]),
                                      "peak_rss_mb": fit(sizes, [row["peak_rss_mb"] for row in chosen])}
    record = {"date": time.strftime("%Y-%m-%d"), "cpu_count": os.cpu_count(), "rows": rows, "linear_fits": fits,
              "note": "at_62_million is extrapolated from the fitted line, not measured"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(fits, indent=1))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(child(*sys.argv[2:6])))
    else:
        main()
