"""Are two teachers' mean labels closer to the truth than the better teacher's? The demo's scenes and stand-in teacher.

    python benchmarks/teacher_mix.py [--train-scenes 256] [--test-scenes 32] [--steps 400] [--seeds 0 1]
        [--architectures dpt dpt] [--disjoint] [--out benchmarks/results/teacher_mix.json]

1. Renders ``--train-scenes`` generated scenes at 512x384 (``shards.tools.scenes``, seeds from 0, as the demo) and
   fits the demo's stand-in teacher (``demo.teacher.fit_teacher``: the tiny DPT, the project's SSI loss, a fixed
   number of steps) once per seed in ``--seeds``: teachers that differ only by their initial weights and the order
   of their batches; ``--architectures dpt depth_anything`` makes the second a tiny Depth Anything (another family,
   as the real pair DPT-Hybrid + Depth Anything V2). With ``--disjoint`` each teacher sees its own
   ``--train-scenes`` scenes (the first from seed 0, the second from seed ``--train-scenes``), as two real teachers
   trained on different data do.
2. Renders ``--test-scenes`` held-out scenes (seeds from 100,000 with sensor-like holes, as the demo's validation
   scenes) and labels them with both teachers in one run of the labelling stage (``--teacher.model '[A, B]'``): one
   sample, two labels.
3. Scores each sample's labels against the scenes' true depth with the project's metric code
   (``distill.metrics.inverse_depth_metrics``: per-image least-squares scale and shift in inverse depth, 10 m cap,
   every valid pixel): teacher A's label, teacher B's, their ``mean`` as training builds it
   (``distill.training.data.teacher_label``, the code ``data.teachers: mean`` runs) with A listed first (as
   labelled) and with B first (the labels swapped: ``mean`` aligns to the first teacher, whose map then weighs
   more), the expected error of ``random`` (the mean of A's and B's per-image errors: each step draws one of them),
   and a constant map.

Writes ``--out`` (``benchmarks/results/teacher_mix.json``); the work folder goes to ``--work`` (a temporary folder by
default).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before anything imports huggingface_hub

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the demo's teacher fit is not an installed package

from demo.teacher import fit_teacher  # noqa: E402
from distill.metrics import inverse_depth_metrics, mean_metrics  # noqa: E402
from distill.training.data import teacher_label  # noqa: E402
from pseudolabel.cli import main as pseudolabel  # noqa: E402
from shards.format import inverse_depth  # noqa: E402
from shards.reader import build_pipeline  # noqa: E402
from shards.tools.scenes import write_scene_folder  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "teacher_mix.json"
HELD_OUT_SEED = 100_000  # the demo's validation scenes start here: never seen by the teachers
METRICS = ("abs_rel", "delta1", "rmse")


def score(inverse: np.ndarray, depth: np.ndarray, valid: np.ndarray) -> dict[str, float]:
    """One label (H, W), as inverse depth, against true metres: the evaluation's per-image metrics."""
    target = inverse_depth(torch.from_numpy(depth)[None], torch.from_numpy(valid)[None])
    metrics = inverse_depth_metrics(torch.from_numpy(inverse)[None], target, torch.from_numpy(valid)[None],
                                    metric_label=True)
    return {name: float(metrics[name][0]) for name in METRICS}


def label_held_out(teachers: list[Path], test: Path, out: Path) -> None:
    """Both teachers label the held-out pictures in one labelling run (every teacher on every image)."""
    argv = ["--config", str(REPO / "configs" / "pseudolabel" / "demo.yaml"), "--source.path", str(test / "rgb"),
            "--teacher.model", "[" + ", ".join(str(path) for path in teachers) + "]", "--output.dir", str(out),
            "--runtime.progress", "false", "--runtime.num_workers", "0"]
    if pseudolabel(argv) != 0:
        raise RuntimeError(f"labelling failed: {argv}")


def score_samples(shards: Path, test: Path) -> dict[str, list[dict[str, float]]]:
    """Per sample: each teacher's label, the mean, and a constant map, scored against the true depth."""
    names = ("teacher A", "teacher B", "mean (A first)", "mean (B first)", "constant")
    scores: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    for sample in build_pipeline(str(shards), training=False, split=False):
        depth = np.asarray(Image.open(test / "depth" / sample.meta.source), dtype=np.float32) / 1000.0
        valid = depth > 0
        first, second = sample.labels
        mean, kind = teacher_label(sample, "mean")
        swapped, _ = teacher_label(dataclasses.replace(sample, labels=[second, first]), "mean")
        assert kind == "relative_inverse_depth" and first.kind == second.kind == kind
        scores["teacher A"].append(score(first.depth, depth, valid & first.valid))
        scores["teacher B"].append(score(second.depth, depth, valid & second.valid))
        scores["mean (A first)"].append(score(mean.depth, depth, valid & mean.valid))
        scores["mean (B first)"].append(score(swapped.depth, depth, valid & swapped.valid))
        scores["constant"].append(score(np.ones_like(depth), depth, valid))
    return scores


def summarise(scores: dict[str, list[dict[str, float]]]) -> dict:
    """Means per labeller, ``random``'s expected figures, and whether (and on how many images) each order of the mean
    is at least as close as the better single teacher."""
    table = {name: mean_metrics({key: [row[key] for row in rows] for key in METRICS}) for name, rows in scores.items()}
    pairs = list(zip(scores["teacher A"], scores["teacher B"]))
    table["random (expected)"] = mean_metrics({key: [(a[key] + b[key]) / 2 for a, b in pairs] for key in METRICS})
    better = min(("teacher A", "teacher B"), key=lambda name: table[name]["abs_rel"])
    verdicts = {}
    for order in ("mean (A first)", "mean (B first)"):
        verdicts[order] = {
            "abs_rel_at_most_better_single": table[order]["abs_rel"] <= table[better]["abs_rel"],
            "images_at_most_better_single": sum(m["abs_rel"] <= row["abs_rel"]
                                                for m, row in zip(scores[order], scores[better])),
            "images_at_most_both": sum(m["abs_rel"] <= min(a["abs_rel"], b["abs_rel"])
                                       for m, (a, b) in zip(scores[order], pairs)),
        }
    return {"table": table, "better_single_teacher": better, "images": len(pairs), "mean_against_better": verdicts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-scenes", type=int, default=256)
    parser.add_argument("--test-scenes", type=int, default=32)
    parser.add_argument("--steps", type=int, default=400, help="teacher fitting steps (the demo's 400)")
    parser.add_argument("--seeds", type=int, nargs=2, default=[0, 1], help="the two teachers' seeds")
    parser.add_argument("--architectures", nargs=2, default=["dpt", "dpt"], choices=["dpt", "depth_anything"],
                        help="the two teachers' families (the demo's tiny DPT; a tiny Depth Anything)")
    parser.add_argument("--disjoint", action="store_true", help="fit each teacher on its own scenes")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    work = args.work or Path(tempfile.mkdtemp(prefix="teacher_mix_"))
    started = time.perf_counter()
    folders = [work / (f"train_{i}" if args.disjoint else "train") for i in range(2)]
    for i, folder in enumerate(folders[:2 if args.disjoint else 1]):
        write_scene_folder(folder, args.train_scenes, seed=i * args.train_scenes, width=512, height=384)
    write_scene_folder(work / "test", args.test_scenes, seed=HELD_OUT_SEED, width=512, height=384, holes=True)
    fits = {seed: fit_teacher(folder, work / f"teacher_{seed}", args.steps, limit=args.train_scenes, seed=seed,
                              architecture=architecture)
            for seed, folder, architecture in zip(args.seeds, folders, args.architectures)}
    teachers = [work / f"teacher_{seed}" for seed in args.seeds]
    label_held_out(teachers, work / "test", work / "shards")
    result = summarise(score_samples(work / "shards", work / "test"))
    result.update(
        command="python benchmarks/teacher_mix.py " + " ".join(
            f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
            for k, v in vars(args).items() if k not in ("work", "disjoint", "out")) + (
            f" --out {args.out.resolve().relative_to(REPO) if args.out.resolve().is_relative_to(REPO) else args.out}"
            ) + (
            " --disjoint" if args.disjoint else ""),
        seeds=args.seeds, teacher_fits={str(seed): fit for seed, fit in fits.items()}, seconds=round(
            time.perf_counter() - started, 1), date=time.strftime("%Y-%m-%d"), machine=f"{platform.machine()}, "
        f"{os.cpu_count()} cores, torch {torch.__version__}",
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'labels':<20} {'AbsRel':>8} {'delta1':>8} {'RMSE (m)':>9}")
    for name, row in result["table"].items():
        print(f"{name:<20} {row['abs_rel']:8.4f} {row['delta1']:8.4f} {row['rmse']:9.4f}")
    for order, verdict in result["mean_against_better"].items():
        print(f"{order} AbsRel <= the better single teacher ({result['better_single_teacher']}): "
              f"{verdict['abs_rel_at_most_better_single']}; per image: {verdict['images_at_most_better_single']} of "
              f"{result['images']} (<= both: {verdict['images_at_most_both']})")
    print(f"{result['seconds']} s")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
