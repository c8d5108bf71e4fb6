"""Time to draw one picture grid as training logs it to TensorBoard: 4 rows of input | label | prediction at
256x192 (``shards.tools.pictures.colorize_depth`` on each map, then ``shards.tools.pictures.image_grid``).

    python benchmarks/viz_grid.py [--repeats 20]

Prints the median ms (and the picture's size) and writes ``benchmarks/results/viz_grid.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from shards.format import inverse_depth
from shards.tools.pictures import colorize_depth, image_grid
from shards.tools.scenes import render_scene

ROOT = Path(__file__).resolve().parents[1]
ROWS, WIDTH, HEIGHT = 4, 256, 192


def draw(scenes: list) -> np.ndarray:
    """The training log's grid: input, label (inverse depth) and a stand-in prediction on the label's scale."""
    rows = []
    for scene in scenes:
        inverse = inverse_depth(scene.depth, scene.valid)
        value_range = tuple(np.percentile(inverse[scene.valid], [2, 98]))
        prediction = colorize_depth(inverse * 1.05 + 0.01, None, value_range)
        rows.append([scene.image, colorize_depth(inverse, scene.valid, value_range), prediction])
    return image_grid(rows, titles=["input", "label (inverse depth)", "prediction (aligned)"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    scenes = [render_scene(seed, WIDTH, HEIGHT, holes=True) for seed in range(ROWS)]
    picture = draw(scenes)  # warm-up (imports, font cache)
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        picture = draw(scenes)
        times.append((time.perf_counter() - start) * 1e3)
    result = {
        "rows": ROWS,
        "cell": f"{WIDTH}x{HEIGHT}",
        "picture": list(picture.shape),
        "median_ms": round(statistics.median(times), 2),
        "repeats": args.repeats,
        "machine": {"processor": platform.processor() or platform.machine(), "python": platform.python_version()},
    }
    print(f"{ROWS}x3 grid of {WIDTH}x{HEIGHT} cells -> {picture.shape[1]}x{picture.shape[0]} px: "
          f"median {result['median_ms']} ms over {args.repeats}")
    out = ROOT / "benchmarks" / "results" / "viz_grid.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
