"""Why ``depth16.dzst`` keeps its 2-D predictor: bytes and undo time of the 2-D, raster 1-D and vertical predictors.

    python benchmarks/label_predictors.py [--repeats 200]

Each predictor's residual goes through the same zigzag, byte planes and zstd level 1 as ``depth16.dzst``
(``shards.format``). Labels: the real NYU frame's inverse depth upsampled to 512x384 (when
``DEPTH_DISTILL_REAL_SAMPLE`` names its folder, see ``tests/real_sample.py``) and three generated scenes. Times:
the prefix sums that undo each predictor on a 512x384 uint16 array (the 2-D one needs a horizontal and a vertical
sum, the others one), median of ``--repeats``. Writes
``benchmarks/results/label_predictors.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import zstandard
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shards import codec  # noqa: E402
from shards.format import encode_label_codes, inverse_depth  # noqa: E402
from shards.tools.scenes import render_scene  # noqa: E402
from tests.real_sample import real_sample_folder  # noqa: E402


def _planes(residual: np.ndarray) -> bytes:
    signed = residual.view(np.int16)
    zigzag = ((signed << 1) ^ (signed >> 15)).view(np.uint16)
    little = zigzag.astype("<u2").view(np.uint8).reshape(-1, 2)
    return little[:, 1].tobytes() + little[:, 0].tobytes()


def raster_residual(codes: np.ndarray) -> np.ndarray:
    flat = codes.reshape(-1)
    residual = flat.copy()
    residual[1:] -= flat[:-1]
    return residual


def vertical_residual(codes: np.ndarray) -> np.ndarray:
    residual = codes.copy()
    residual[1:] -= codes[:-1]
    return residual


def labels() -> dict[str, np.ndarray]:
    found = {}
    folder, why = real_sample_folder()
    if folder is None:
        print(f"{why}: generated scenes only", file=sys.stderr)
    else:
        depth = np.load(folder / "depth.npy").astype(np.float32)
        depth = np.asarray(Image.fromarray(depth).resize((512, 384), Image.BICUBIC))
        found["nyu"] = encode_label_codes(inverse_depth(depth))[0]
    for seed in range(3):
        scene = render_scene(seed, 512, 384)
        inverse = inverse_depth(scene.depth, scene.valid)
        found[f"scene{seed}"] = encode_label_codes(inverse, scene.valid)[0]
    return found


def median_ms(call, repeats: int) -> float:
    call()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - start)
    return 1e3 * statistics.median(seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "label_predictors.json")
    args = parser.parse_args(argv)
    zstd = zstandard.ZstdCompressor(level=1)
    sizes = {}
    for name, codes in labels().items():
        sizes[name] = {
            "2d": len(zstd.compress(codec._delta_planes(codes))),
            "raster_1d": len(zstd.compress(_planes(raster_residual(codes)))),
            "vertical": len(zstd.compress(_planes(vertical_residual(codes)))),
        }
        print(name, sizes[name])
    values = np.random.default_rng(0).integers(0, 65536, (384, 512), dtype=np.uint16)

    def undo_2d() -> np.ndarray:
        out = np.cumsum(values, axis=1, dtype=np.uint16)
        for row in range(1, out.shape[0]):
            np.add(out[row - 1], out[row], out=out[row])
        return out

    times = {
        "2d": median_ms(undo_2d, args.repeats),
        "one_prefix_sum": median_ms(lambda: np.cumsum(values.reshape(-1), dtype=np.uint16), args.repeats),
    }
    print("undo ms", times)
    args.out.write_text(json.dumps({"bytes": sizes, "undo_ms": times}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
