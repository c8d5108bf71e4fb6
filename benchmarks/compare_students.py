"""Students under one bounded training budget, then one comparison table, in two ranking modes (issues 9 and 27).

    make demo                                                   # once: scenes, the demo teacher, pseudo-label shards
    python benchmarks/compare_students.py --demo demo_out [--steps 300] [--work runs/compare_students]
    python benchmarks/compare_students.py --demo demo_out --labels pseudo exact --seeds 3 --students PHONE_TABLE \
        --steps 120 --size 160x128 --diode-scenes 0 --latency false --picture_frames 0 --name compare_phone \
        --work runs/compare_phone

1. Trains each student of ``--students`` (:data:`RECIPES`: its recipe file in configs/distill, architecture and loss
   as written, plus the row's own overrides; ``PHONE_TABLE`` names the four students of :data:`PHONE_TABLE`) once
   per seed and per kind of label, with one budget shared by all (the demo's optimisation: batch 8, AdamW lr 2e-3,
   20 warm-up steps, ``--steps`` steps at ``--size``, no EMA, RANDOM INIT: no ImageNet weights offline), each run
   through the training command in its own process, timed. The labels (``--labels``), on the same 400 training
   scenes of the demo:

   - ``pseudo``: the demo teacher's pseudo-labels (``demo_out/shards/pseudo``). Every student learns the teacher's
     errors too, and all of them land near the teacher: this mode says each recipe trains, not which learns best.
   - ``exact``: the scenes' exact depth, a perfect teacher, imported once with ``python -m shards import-rgbd``
     from ``demo_out/scenes/train`` (metric depth; the loss converts it to inverse depth). Nothing caps the students
     but their architecture and the budget, so this mode ranks them by what they can learn.

2. Runs ``python -m distill.compare`` on every trained student, the demo teacher and the constant baseline, with
   ONNX Runtime latency unless ``--latency false``, on held-out generated scenes that no training step saw: the
   demo's test scenes in the official NYU layout (``reference`` protocol) and ``--diode-scenes`` scenes written in
   DIODE's released layout at 1024x768 with sensor-like holes as the mask (``diode_indoor`` protocol).

3. Writes the ranking: per student and kind of label, AbsRel and δ1 on the NYU-layout scenes as mean ± sample
   standard deviation over the seeds (``<name>_ranking.md`` / ``.json``).

Results go to ``benchmarks/results/<name>.*`` (``--name``, default ``compare_students``; the picture, when drawn,
to ``docs/images/<name>.png``), the training times to ``<name>_training.json``. Run it on a quiet machine when the
latency column matters: it is a timing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"

#: Row name -> (recipe file, the row's own overrides). Students that predict metres (the metric recipes) need metric
#: labels; here every student learns relative inverse depth, so each recipe is its pseudo-label variant.
RECIPES: dict[str, tuple[str, list[str]]] = {
    "fastdepth": ("configs/distill/places365_fastdepth.yaml", []),
    "fastdepth_minimal": ("configs/distill/places365_fastdepth_minimal.yaml", []),
    "fastdepth_minimal_nearest": (
        "configs/distill/places365_fastdepth_minimal.yaml", ["--student.upsample", "nearest"]),
    "fastdepth_original": ("configs/distill/fastdepth_original.yaml", []),
    "resnet18_additive": ("configs/distill/resnet18_additive_distill.yaml", []),
    "deeplabv3_resnet50": ("configs/distill/deeplabv3_distill.yaml", []),
    "rt_monodepth": ("configs/distill/rt_monodepth_distill.yaml", []),
    "rt_monodepth_s": ("configs/distill/rt_monodepth_s_distill.yaml", []),
}
#: The students of issue 27's table (README, BENCHMARKS "A student for the chips it runs on"): the reference, the
#: phone recipe, the original FastDepth, and the phone encoder with the original FastDepth's nearest upsampling.
PHONE_TABLE = ("fastdepth", "fastdepth_minimal", "fastdepth_original", "fastdepth_minimal_nearest")
#: Issue 9's table: every family's recipe.
ISSUE9_TABLE = ("fastdepth", "fastdepth_original", "resnet18_additive", "deeplabv3_resnet50", "rt_monodepth",
                "rt_monodepth_s")
LABELS = ("pseudo", "exact")
DIODE_SEED = 300_000  # the demo uses seeds below 300,000 (train 0.., val 100000.., test 200000..)
NYU_COLUMN = "scenes_nyu_layout"


@dataclass(frozen=True)
class Budget:
    """What every run gets: the same steps, batch, size, scenes and seeds."""

    steps: int
    batch: int
    size: tuple[int, int]  # (width, height)
    seeds: int
    scenes: int  # training scenes (the demo's)


def training_overrides(train: Path, val: Path, budget: Budget, seed: int) -> list[str]:
    """The budget every recipe gets: the demo's data and optimisation settings (configs/distill/demo.yaml)."""
    width, height = budget.size
    return [
        "--student.pretrained", "false", "--student.pretrained_file", "null",
        "--data.train", str(train), "--data.train_weights", "null",
        "--data.val", str(val), "--data.size", f"[{width}, {height}]", "--data.batch_size", str(budget.batch),
        "--data.val_batch_size", "16", "--data.num_workers", "1", "--data.shuffle_buffer", "256",
        "--data.epoch_steps", "100", "--optim.lr", "0.002", "--optim.warmup_steps", "20",
        "--train.steps", str(budget.steps), "--train.seed", str(seed), "--train.ema_decay", "null",
        "--checkpoint.every", str(budget.steps), "--checkpoint.keep", "1", "--log.every", "25",
        "--log.images_every", "0", "--log.val_every", "0", "--log.tensorboard", "false",
    ]


def exact_depth_shards(demo: Path, work: Path) -> Path:
    """The demo's training scenes with their exact depth (millimetre PNGs) as metric_depth shards, imported once."""
    out = work / "exact_shards"
    if not any(out.glob("*.tar")):
        scenes = demo / "scenes" / "train"
        command = [sys.executable, "-m", "shards", "import-rgbd", "--images", str(scenes / "rgb"),
                   "--depths", str(scenes / "depth"), "--depth_scale", "1000", "--out", str(out)]
        print("=== exact depth: " + " ".join(command), flush=True)
        subprocess.run(command, cwd=REPO, check=True)
    return out


def run_name(student: str, labels: str, seed: int, budget: Budget) -> str:
    """The run's folder and row name; a single pseudo-label seed keeps issue 9's plain student names."""
    if budget.seeds == 1 and labels == "pseudo":
        return student
    return f"{student}.{labels}.s{seed}"


def train_all(students: list[str], shards: dict[str, Path], val: Path, work: Path, budget: Budget) -> dict:
    """Every (student, labels, seed) run in its own process; a finished run is kept, an interrupted one resumes."""
    timings = {}
    for labels, train in shards.items():
        for seed in range(budget.seeds):
            for student in students:
                name = run_name(student, labels, seed, budget)
                out = work / name
                if (out / "student" / "model.safetensors").is_file():
                    print(f"=== {name}: already trained in {out}", flush=True)
                    continue
                recipe, overrides = RECIPES[student]
                command = [sys.executable, "distill.py", "--config", recipe, *overrides,
                           *training_overrides(train, val, budget, seed), "--output.dir", str(out),
                           "--resume", "latest"]
                print(f"=== {name}: {' '.join(command)}", flush=True)
                started = time.perf_counter()
                subprocess.run(command, cwd=REPO, check=True)
                timings[name] = {"student": student, "recipe": recipe, "overrides": overrides, "labels": labels,
                                 "seed": seed, "steps": budget.steps,
                                 "seconds": round(time.perf_counter() - started, 1)}
    return timings


def write_diode_scenes(root: Path, count: int) -> Path:
    """Held-out generated scenes (seeds from :data:`DIODE_SEED`) as a DIODE ``val/indoors`` tree: holes -> mask 0."""
    from shards.tools.rgbd import write_diode_scan
    from shards.tools.scenes import render_scene

    if (root / "val" / "indoors").is_dir():
        return root
    for index in range(count):
        scene = render_scene(DIODE_SEED + index, 1024, 768, holes=True)
        valid = scene.valid & (scene.depth > 0)
        write_diode_scan(root, "val", "indoors", (index, 0, 0, 0), scene.image, scene.depth * valid, valid)
    return root


def mean_sd(values: list[float]) -> tuple[float, float | None]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else None)


def ranking(compare: dict, students: list[str], labels: list[str], budget: Budget) -> dict:
    """AbsRel and δ1 on the NYU-layout scenes per student and kind of label: mean and sd over the seeds."""
    metrics = {row["name"]: row["results"][NYU_COLUMN]["metrics"] for row in compare["models"]}
    rows = []
    for student in students:
        row = {"student": student, "recipe": RECIPES[student][0], "overrides": RECIPES[student][1]}
        for kind in labels:
            runs = [metrics[run_name(student, kind, seed, budget)] for seed in range(budget.seeds)]
            for metric in ("abs_rel", "delta1"):
                mean, sd = mean_sd([run[metric] for run in runs])
                row[f"{kind}_{metric}"] = {"mean": mean, "sd": sd, "seeds": [run[metric] for run in runs]}
        rows.append(row)
    teacher = metrics.get("teacher", {})
    return {"budget": asdict(budget), "labels": labels, "rows": rows,
            "teacher": {k: teacher.get(k) for k in ("abs_rel", "delta1")},
            "constant": {k: metrics.get("constant", {}).get(k) for k in ("abs_rel", "delta1")}}


def ranking_table(result: dict) -> str:
    def cell(value: dict) -> str:
        return f"{value['mean']:.3f}" + (f" ± {value['sd']:.3f}" if value["sd"] is not None else "")

    names = {"pseudo": "pseudo-labels", "exact": "exact depth"}
    header = "| student |" + "".join(f" AbsRel ({names[k]}) | δ1 ({names[k]}) |" for k in result["labels"])
    lines = [header, "|---|" + "---|---|" * len(result["labels"])]
    for row in result["rows"]:
        cells = "".join(f" {cell(row[f'{k}_abs_rel'])} | {cell(row[f'{k}_delta1'])} |" for k in result["labels"])
        lines.append(f"| {row['student']} |{cells}")
    budget = result["budget"]
    lines.append("")
    lines.append(f"Budget: {budget['steps']} steps, batch {budget['batch']}, {budget['size'][0]}x{budget['size'][1]}, "
                 f"{budget['scenes']} training scenes, {budget['seeds']} seed(s), random init; mean ± sd over seeds. "
                 f"Teacher (pseudo-labels' source) AbsRel {result['teacher']['abs_rel']:.3f}, constant "
                 f"{result['constant']['abs_rel']:.3f}.")
    return "\n".join(lines)


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", type=Path, default=REPO / "demo_out", help="a finished `make demo` output folder")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "compare_students")
    parser.add_argument("--name", default="compare_students", help="results file names: benchmarks/results/NAME.*")
    parser.add_argument("--students", nargs="+", default=list(ISSUE9_TABLE),
                        help=f"rows of RECIPES ({', '.join(RECIPES)}), or PHONE_TABLE")
    parser.add_argument("--labels", nargs="+", choices=LABELS, default=["pseudo"], help="pseudo, exact or both")
    parser.add_argument("--seeds", type=int, default=1, help="training runs per student and kind of label")
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps per run (the demo's budget)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", default="256x192", help="training and evaluation input WxH (multiples of 32)")
    parser.add_argument("--latency", choices=("true", "false"), default="true", help="ONNX Runtime latency column")
    parser.add_argument("--latency_repeats", type=int, default=50)
    parser.add_argument("--diode-scenes", type=int, default=24, help="held-out scenes in the DIODE layout")
    parser.add_argument("--picture_frames", type=int, default=4, help="frames in the picture (0: none)")
    args = parser.parse_args(argv)
    if args.students == ["PHONE_TABLE"]:
        args.students = list(PHONE_TABLE)
    unknown = [name for name in args.students if name not in RECIPES]
    if unknown:
        parser.error(f"unknown students {unknown}; known: {', '.join(RECIPES)} or PHONE_TABLE")
    for needed in (demo_path := args.demo.resolve(), demo_path / "shards" / "pseudo", demo_path / "teacher",
                   demo_path / "nyu", demo_path / "scenes" / "train"):
        if not needed.exists():
            parser.error(f"{needed} is missing: run `make demo` (or python -m demo --out {args.demo}) first")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    demo = args.demo.resolve()
    width, height = (int(side) for side in args.size.lower().split("x"))
    scenes = len(list((demo / "scenes" / "train" / "rgb").glob("*.png")))
    budget = Budget(args.steps, args.batch, (width, height), args.seeds, scenes)
    args.work.mkdir(parents=True, exist_ok=True)
    shards = {kind: (demo / "shards" / "pseudo" if kind == "pseudo" else exact_depth_shards(demo, args.work))
              for kind in args.labels}
    timings_path = args.work / "training.json"
    timings = json.loads(timings_path.read_text()) if timings_path.is_file() else {}
    timings.update(train_all(args.students, shards, demo / "shards" / "val", args.work, budget))
    timings_path.write_text(json.dumps(timings, indent=2) + "\n")

    nyu = demo / "nyu"
    compare_out = args.work / "compare"
    command = [sys.executable, "-m", "distill.compare", "--out", str(compare_out), "--overwrite", "true",
               "--size", args.size, "--latency", args.latency, "--latency_repeats", str(args.latency_repeats),
               "--picture_frames", str(args.picture_frames), "--splits", str(nyu / "splits.mat"),
               "--data", f"{NYU_COLUMN}={nyu / 'nyu_depth_v2_labeled.mat'}:reference"]
    if args.diode_scenes:
        diode = write_diode_scenes(args.work / "diode_scenes", args.diode_scenes)
        command += ["--data", f"scenes_diode_layout={diode}:diode_indoor"]
    for kind in args.labels:
        for seed in range(budget.seeds):
            for student in args.students:
                name = run_name(student, kind, seed, budget)
                command += ["--model", f"{name}={args.work / name / 'student'}"]
    command += ["--model", f"teacher={demo / 'teacher'}", "--model", "constant"]
    print("=== compare: " + " ".join(command), flush=True)
    subprocess.run(command, cwd=REPO, check=True)

    RESULTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(compare_out / "compare.md", RESULTS / f"{args.name}.md")
    shutil.copy(compare_out / "compare.json", RESULTS / f"{args.name}.json")
    if (compare_out / "compare.png").is_file():
        shutil.copy(compare_out / "compare.png", REPO / "docs" / "images" / f"{args.name}.png")
    (RESULTS / f"{args.name}_training.json").write_text(json.dumps(timings, indent=2) + "\n")
    ranked = ranking(json.loads((compare_out / "compare.json").read_text()), args.students, args.labels, budget)
    (RESULTS / f"{args.name}_ranking.json").write_text(json.dumps(ranked, indent=2) + "\n")
    (RESULTS / f"{args.name}_ranking.md").write_text(ranking_table(ranked) + "\n")
    print((compare_out / "compare.md").read_text())
    print(ranking_table(ranked))
    return 0


if __name__ == "__main__":
    sys.exit(main())
