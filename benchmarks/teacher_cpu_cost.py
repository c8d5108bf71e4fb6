"""The CPU labelling cost of each teacher family's tiny test model at the family's own settings.

    python benchmarks/teacher_cpu_cost.py [--images 32] [--repeats 5] [--threads 2]

For each tiny random teacher of ``pseudolabel.tiny_teacher`` (DPT, DPT-Hybrid, Depth Anything and the other families
it builds), saved with ``save_pretrained`` and loaded through ``load_teacher`` like a download, at its family's own
size (no ``teacher.short_side``):

1. the teacher alone: images/s on a batch of 8 generated 512x384 crops (uint8, fp32 on the CPU), median of
   ``--repeats`` calls after one warm-up, with the network's input size;
2. the whole ``pseudolabel`` stage (decode, resize, crop, teacher, label coding, shard writing) on ``--images``
   generated 683x512 JPEGs, 0 DataLoader workers: images/s of the one process.

Depth Anything is also run with ``teacher.short_side 384`` (lower bound 384: 392x518; before issue 25 it ran at
378x504) for the ratio. The
models are tiny (0.1-0.3 M parameters): the figures measure the resizes and the network's input size, not a real
teacher's FLOPs. Results: printed and written to ``benchmarks/results/teacher_cpu_cost.json``.
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
import torch  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.pseudolabel_pipeline import make_inputs  # noqa: E402
from pseudolabel.teachers import load_teacher  # noqa: E402
from pseudolabel.tiny_teacher import ARCHITECTURES, save_tiny_teacher  # noqa: E402
from shards.tools.scenes import render_scene  # noqa: E402

#: (architecture, short_side override): each family at its own size, and Depth Anything at its old one.
RUNS = [(architecture, None) for architecture in ARCHITECTURES] + [("depth_anything", 384)]


def teacher_rate(folder: Path, short_side: int | None, repeats: int) -> dict:
    """Images/s of the teacher alone on 8 generated 512x384 crops, and its network input size."""
    teacher = load_teacher(str(folder), precision="fp32", short_side=short_side)
    crops = torch.from_numpy(np.stack([render_scene(seed, 512, 384).image for seed in range(8)]))
    teacher(crops)  # warm-up
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        teacher(crops)
        seconds.append(time.perf_counter() - started)
    info = teacher.info()
    return {
        "network_input": list(teacher.network_size(384, 512)),
        "teacher_images_per_s": round(len(crops) / statistics.median(seconds), 1),
        "input_resize": info.get("input_resize"),
        "output_resize": info.get("output_resize"),
    }


def stage_rate(folder: Path, short_side: int | None, inputs: Path, out: Path) -> float:
    """Images/s of the whole pseudolabel stage (one process, 0 workers) with this teacher."""
    from pseudolabel.config import PseudolabelConfig
    from pseudolabel.run import run
    from shards.cli.config import parse_config

    argv = ["--source.path", str(inputs), "--source.sample_count", "0", "--teacher.model", str(folder),
            "--teacher.precision", "fp32", "--output.dir", str(out), "--runtime.num_workers", "0",
            "--runtime.batch_size", "8", "--runtime.progress", "false", "--runtime.log_level", "WARNING"]
    if short_side is not None:
        argv += ["--teacher.short_side", str(short_side)]
    config, resolved = parse_config(PseudolabelConfig, argv, prog="pseudolabel.py")
    summary = run(config, resolved)
    return summary["this_run"]["processes"][0]["images_per_second"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=32, help="inputs for each whole-stage run")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls of the teacher alone")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--out", default=str(REPO_ROOT / "benchmarks" / "results" / "teacher_cpu_cost.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="teacher_cpu_cost_"))
    make_inputs(work / "inputs", args.images)
    rows = {}
    for architecture, short_side in RUNS:
        folder = work / "teachers" / architecture
        if not folder.exists():
            save_tiny_teacher(folder, architecture)
        name = architecture if short_side is None else f"{architecture}_short_side_{short_side}"
        row = teacher_rate(folder, short_side, args.repeats)
        row["stage_images_per_s"] = stage_rate(folder, short_side, work / "inputs", work / f"out_{name}")
        rows[name] = row
        print(f"{name:34s} network {row['network_input']}  teacher {row['teacher_images_per_s']:7.1f}/s  "
              f"stage {row['stage_images_per_s']:6.1f}/s", flush=True)
    record = {
        "machine": {"processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                    "torch_threads": args.threads, "python": platform.python_version(), "torch": torch.__version__,
                    "load_average_before": [round(v, 2) for v in load_before],
                    "load_average_after": [round(v, 2) for v in os.getloadavg()]},
        "images": args.images,
        "runs": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
