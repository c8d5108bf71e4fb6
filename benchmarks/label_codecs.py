"""Label codec benchmark: ms to encode and decode, bytes per sample, for every codec in ``LABEL_CODECS`` and the
usual alternatives (PIL PNG at compress levels 1 and 6, OpenCV PNG), on realistic 512x384 16-bit labels.

Labels: the inverse depth of generated scenes (smooth surfaces, sharp occlusion edges, as a teacher's output
is smooth with edges), and, when ``DEPTH_DISTILL_REAL_SAMPLE`` names the real NYU frame's folder (see
``tests/real_sample.py``), its ground-truth inverse depth and FastDepth's prediction, upsampled bicubically to
512x384. Every codec must give the codes back exactly.

    python benchmarks/label_codecs.py [--repeats 15] [--scenes 6]

Prints a table and writes ``benchmarks/results/label_codecs.json``: medians over repeats, then over the labels of
each group (generated scenes; the real NYU frame), since their sizes differ by 6x: analytic scene depth is piecewise
smooth, a real map carries fine texture.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shards.format import (  # noqa: E402  # noqa: E402
    DEFAULT_LABEL_CODEC,
    LABEL_CODECS,
    SAMPLE_SIZE,
    decode_jpeg,
    encode_jpeg,
    encode_label_codes,
    inverse_depth,
)
from shards.tools.scenes import render_scene  # noqa: E402
from tests.real_sample import real_sample_folder  # noqa: E402


def _pil_png(level: int) -> tuple[Callable[[np.ndarray], bytes], Callable[[bytes], np.ndarray]]:
    def encode(codes: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(codes).save(buffer, format="PNG", compress_level=level)
        return buffer.getvalue()

    def decode(data: bytes) -> np.ndarray:
        with Image.open(io.BytesIO(data)) as picture:
            return np.asarray(picture, dtype=np.uint16)

    return encode, decode


def _cv2_png(level: int) -> tuple[Callable[[np.ndarray], bytes], Callable[[bytes], np.ndarray]]:
    import cv2

    def encode(codes: np.ndarray) -> bytes:
        ok, data = cv2.imencode(".png", codes, [cv2.IMWRITE_PNG_COMPRESSION, level])
        assert ok
        return data.tobytes()

    def decode(data: bytes) -> np.ndarray:
        return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)

    return encode, decode


def candidates() -> dict[str, tuple[Callable, Callable]]:
    table = {name: (codec.encode, codec.decode) for name, codec in LABEL_CODECS.items()}
    table["PIL PNG level 1"] = _pil_png(1)
    table["PIL PNG level 6"] = _pil_png(6)
    try:
        table["OpenCV PNG level 1"] = _cv2_png(1)
        table["OpenCV PNG level 3 (default)"] = _cv2_png(3)
    except ImportError:
        pass
    return table


def _resize(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return np.asarray(Image.fromarray(values.astype(np.float32)).resize(size, Image.Resampling.BICUBIC))


def labels(scene_count: int) -> dict[str, np.ndarray]:
    """Name -> uint16 codes (384, 512)."""
    width, height = SAMPLE_SIZE
    found = {}
    for seed in range(scene_count):
        scene = render_scene(1000 + seed, width, height)
        found[f"scene {1000 + seed}"] = encode_label_codes(inverse_depth(scene.depth))[0]
    folder, why = real_sample_folder()
    if folder is None:
        print(f"{why}: generated scenes only", file=sys.stderr)
        return found
    for name in ("depth.npy", "fastdepth_pred.npy"):
        depth = np.load(folder / name)
        found[f"NYU {name}"] = encode_label_codes(_resize(inverse_depth(depth), (width, height)))[0]
    return found


def _median_ms(function: Callable, argument: object, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function(argument)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000.0


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--scenes", type=int, default=6)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "label_codecs.json"))
    args = parser.parse_args(argv)
    load_at_start = os.getloadavg()[0]  # the machine is shared: say how busy it was

    maps = labels(args.scenes)
    rows = []
    for name, (encode, decode) in candidates().items():
        per_label = []
        for label_name, codes in maps.items():
            data = encode(codes)
            if not np.array_equal(decode(data), codes):
                raise AssertionError(f"{name} is not lossless on {label_name}")
            per_label.append(
                (_median_ms(encode, codes, args.repeats), _median_ms(decode, data, args.repeats), len(data))
            )
        encode_ms, decode_ms, sizes = zip(*per_label)
        groups = {"scenes": [i for i, n in enumerate(maps) if n.startswith("scene")],
                  "nyu": [i for i, n in enumerate(maps) if n.startswith("NYU")]}
        row = {"codec": name, "default": name == DEFAULT_LABEL_CODEC}
        for group, members in groups.items():
            if members:
                row[f"encode_ms_{group}"] = round(statistics.median(encode_ms[i] for i in members), 3)
                row[f"decode_ms_{group}"] = round(statistics.median(decode_ms[i] for i in members), 3)
                row[f"kb_{group}"] = round(statistics.median(sizes[i] for i in members) / 1000, 1)
        row["kb_per_label"] = {label: round(size / 1000, 1) for label, size in zip(maps, sizes)}
        rows.append(row)
    image = render_scene(1000, *SAMPLE_SIZE).image
    jpeg = encode_jpeg(image)
    reference = {
        "codec": "JPEG q95 (the image, for scale)",
        "encode_ms_scenes": round(_median_ms(encode_jpeg, image, args.repeats), 3),
        "decode_ms_scenes": round(_median_ms(decode_jpeg, jpeg, args.repeats), 3),
        "kb_scenes": round(len(jpeg) / 1000, 1),
    }
    result = {
        "benchmark": "label_codecs",
        "command": "python benchmarks/label_codecs.py " + " ".join(argv or []),
        "machine": f"{platform.machine()}, {os.cpu_count()}-core CPU (load average recorded separately)",
        "load_average_1min": {"start": load_at_start, "end": os.getloadavg()[0]},
        "label_size": list(SAMPLE_SIZE),
        "labels": list(maps),
        "repeats": args.repeats,
        "rows": rows,
        "jpeg_reference": reference,
    }
    groups = [group for group in ("scenes", "nyu") if f"kb_{group}" in rows[0]]
    header = "".join(f" {'enc ms ' + g:>12s} {'dec ms ' + g:>12s} {'KB ' + g:>10s}" for g in groups)
    print(f"{'codec':30s}{header}")
    for row in [*rows, reference]:
        figures = "".join(
            f" {row.get(f'encode_ms_{g}', float('nan')):12.2f} {row.get(f'decode_ms_{g}', float('nan')):12.2f}"
            f" {row.get(f'kb_{g}', float('nan')):10.1f}"
            for g in groups
        )
        print(f"{row['codec']:30s}{figures}{'  (default)' if row.get('default') else ''}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
