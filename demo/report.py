"""The demo's closing summary: where everything is, the results table, the picture, the time each step took."""

from __future__ import annotations

import json
import os
from pathlib import Path

#: Columns of the results table: (title, key in metrics.json, lower is better).
COLUMNS = (
    ("AbsRel", "abs_rel", True),
    ("SqRel", "sq_rel", True),
    ("RMSE (m)", "rmse", True),
    ("RMSE log", "rmse_log", True),
    ("δ1", "delta1", False),
    ("δ2", "delta2", False),
    ("δ3", "delta3", False),
)


def results_table(out: Path, models: dict[str, str]) -> tuple[str, dict[str, dict[str, float]]]:
    """A markdown table of every evaluated model's metrics (best per column in bold) and the raw figures."""
    figures: dict[str, dict[str, float]] = {}
    for name in models:
        record = json.loads((out / "eval" / name.replace(" ", "_") / "metrics.json").read_text())
        figures[name] = record["metrics"] | {"count": record["count"], "images_per_second": record["images_per_second"]}
    best = {}
    for _, key, lower in COLUMNS:
        values = [figures[name][key] for name in figures if name != "teacher"]
        best[key] = min(values) if lower else max(values)
    lines = ["| model | " + " | ".join(title for title, _, _ in COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for name, metrics in figures.items():
        cells = []
        for _, key, _ in COLUMNS:
            text = f"{metrics[key]:.3f}"
            cells.append(f"**{text}**" if name != "teacher" and metrics[key] == best[key] else text)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines), figures


def _load_average() -> str:
    """The machine's load at the end of the run (1, 5 and 15 minutes): how busy it was while the demo ran."""
    try:
        return " / ".join(f"{value:.1f}" for value in os.getloadavg()) + " (1 / 5 / 15 min)"
    except OSError:  # not every platform keeps one
        return "unknown"


def write_summary(out: Path, models: dict[str, str], steps: list[dict], seconds: float, require_win: bool) -> str:
    """Write ``summary.md`` and ``summary.json`` into ``out``; return the markdown."""
    table, figures = results_table(out, models)
    student, constant, untrained = figures["student"], figures["constant"], figures["untrained student"]
    beats = student["abs_rel"] < min(constant["abs_rel"], untrained["abs_rel"])
    benchmark_path = out / "export" / "benchmark.json"
    benchmark = json.loads(benchmark_path.read_text()) if benchmark_path.exists() else {}
    lines = [
        "# Demo summary",
        "",
        f"Whole run: {seconds / 60:.1f} minutes. Held-out test scenes: {student['count']} frames in the official NYU "
        "layout, reference protocol (raw depth, Eigen crop, per-image least-squares scale and shift on inverse "
        "depth, 10 m cap).",
        f"Machine: {os.cpu_count()} CPUs, load average {_load_average()}; torch threads "
        f"{os.environ.get('OMP_NUM_THREADS', 'default')}, OpenMP wait policy "
        f"{os.environ.get('OMP_WAIT_POLICY', 'default')}"
        " (the figures depend on the thread count, not on the machine's speed or load).",
        "",
        table,
        "",
        f"The student {'beats' if beats else 'does NOT beat'} both baselines on AbsRel "
        f"({student['abs_rel']:.3f} vs constant {constant['abs_rel']:.3f}, untrained {untrained['abs_rel']:.3f}).",
        "The teacher row is not a baseline: the student learns from its labels.",
        "",
        "## Where things are",
        f"- shards: `{out / 'shards' / 'pseudo'}` (pseudo-labels), `{out / 'shards' / 'val'}` (ground truth); "
        f"picture `{out / 'shards_pseudo.png'}`",
        f"- checkpoints and TensorBoard logs: `{out / 'distill'}`; the student: `{out / 'distill' / 'student'}`",
        f"- picture of held-out scenes (input, ground truth, teacher, student): `{out / 'demo_picture.png'}`",
        f"- evaluation reports: `{out / 'eval'}` (metrics.json, per_image.csv, best_median_worst.png per model)",
        f"- ONNX and latency: `{out / 'export'}`; predictions: `{out / 'predict'}`",
        "",
        "## Steps",
        "| step | command | seconds |",
        "|---|---|---|",
        *[f"| {step['title']} | `{step['command']}` | {step['seconds']} |" for step in steps],
    ]
    markdown = "\n".join(lines) + "\n"
    (out / "summary.md").write_text(markdown)
    record = {"minutes": seconds / 60, "metrics": figures, "student_beats_baselines": beats, "steps": steps,
              "benchmark": benchmark}
    (out / "summary.json").write_text(json.dumps(record, indent=2) + "\n")
    if require_win and not beats:
        raise SystemExit("the demo's student did not beat both baselines: see " + str(out / "summary.md"))
    return markdown
