"""Compare depth models side by side: size, compute, latency on this machine and accuracy on several data sets.

``python -m distill.compare --model A --model B ... --data [NAME=]PATH[:PRESET] ... --out DIR``

Nothing here measures anything in a new way; it puts the project's own measurements in one table:

- parameters and MACs at the input size (``distill.deploy.complexity``);
- ONNX Runtime fp32 latency at batch 1: students are exported (``distill.deploy.export.export_onnx``,
  parity-checked) and every model is timed by ``distill.benchmark``'s worker, each in its own subprocess, one after
  the other, beside one measurement of this machine's fp32 matmul rate (the compute bound, as ``distill.benchmark``
  reports it);
- the metrics on every ``--data``, scored by ``distill.evaluation`` (``load_model``, ``open_data``, ``evaluate``)
  under each data set's protocol preset (``distill.evaluation.protocols``), with each cell's full report kept under
  ``reports/``.

Outputs in ``--out``: ``compare.md`` (one table, the best value of each column in bold), ``compare.json`` (every
figure, the protocols in full, the machine) and ``compare.png`` (the same frames of the first data set: input,
ground truth and each model's aligned prediction, one colour scale per row).
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distill.evaluation.compare_inputs import (
    DATA_HELP,
    MODEL_HELP,
    Dataset,
    display_names,
    folder_name,
    open_dataset,
    parse_data_spec,
    parse_model_spec,
)
from distill.evaluation.compare_models import LatencySettings, ModelEntry, prepare_model, time_models
from distill.evaluation.compare_report import format_table, markdown_table, write_markdown
from distill.evaluation.evaluate import evaluate, evaluate_frames
from distill.evaluation.models import CONSTANT_MODEL, DepthModel, detect_model_type, load_model
from distill.evaluation.protocols import Protocol
from shards.format import STUDENT_SIZE
from shards.viz import colorize_depth, image_grid, save_picture

log = logging.getLogger(__name__)

#: Frames of the first data set in ``compare.png``, and the height its tiles are drawn at.
DEFAULT_PICTURE_FRAMES = 4
PICTURE_CELL_HEIGHT = 192

def _size(text: str) -> tuple[int, int]:
    width, _, height = text.lower().partition("x")
    return int(width), int(height)



@dataclass
class PictureFrames:
    """The frames of the first data set drawn in ``compare.png`` and, per model, the aligned predicted depth."""

    positions: list[int]
    frames: list[Any]
    predictions: dict[str, list[np.ndarray]] = field(default_factory=dict)  # model name -> K (H, W) metres

    @classmethod
    def choose(cls, dataset: Dataset, count: int) -> PictureFrames:
        total = len(dataset.source)
        positions = sorted({int(p) for p in np.linspace(0, total - 1, min(count, total)).round()}) if count > 0 else []
        return cls(positions, [dataset.source[p] for p in positions])

    def add(self, name: str, model: DepthModel, protocol: Protocol, device: torch.device) -> None:
        results = [evaluate_frames(model, protocol, [frame], device) for frame in self.frames]
        self.predictions[name] = [result.depth[0].float().cpu().numpy() for result in results]


def draw_picture(frames: PictureFrames, names: Sequence[str], depth_cap: float) -> tuple[np.ndarray, list[str]]:
    """Rows = frames; columns = RGB, ground truth, each model's aligned prediction (metres). Ground truth and the
    predictions of one row share its scale (2nd-98th percentile of the valid ground truth, as evaluate draws)."""
    titles = ["RGB", "ground truth (m)", *names]
    rows = []
    for row, frame in enumerate(frames.frames):
        target = np.asarray(frame.depth, dtype=np.float64)
        valid = np.isfinite(target) & (target > 0)
        low, high = np.percentile(target[valid], [2, 98]) if valid.any() else (0.0, depth_cap)
        tiles = [frame.image, colorize_depth(target, valid, (low, high), inverse=False)]
        tiles += [colorize_depth(frames.predictions[name][row], None, (low, high), inverse=False) for name in names]
        rows.append(tiles)
    tile_width = max(1, round(frames.frames[0].image.shape[1] * PICTURE_CELL_HEIGHT / frames.frames[0].image.shape[0]))
    fitting = max(4, tile_width // 7)  # characters of PIL's default font that fit a tile
    titles = [title if len(title) <= fitting else title[: fitting - 2] + ".." for title in titles]
    labels = [str(frame.name) for frame in frames.frames]
    return image_grid(rows, titles=titles, row_labels=labels, cell_height=PICTURE_CELL_HEIGHT), titles



def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m distill.compare",
        description="Compare depth models in one table: parameters, MACs, ONNX Runtime fp32 latency on this "
        "machine, and metrics on every --data (docs/deploy.md, 'Comparing students').",
        epilog="example: python -m distill.compare --model runs/a/student --model fast=runs/b/student "
        "--model constant --data nyu=data/nyu_depth_v2_labeled.mat:reference --splits data/splits.mat "
        "--data scenes=data/scenes --out reports/compare",
    )
    parser.add_argument("--model", action="append", required=True, metavar="[NAME=]MODEL", help=MODEL_HELP)
    parser.add_argument("--data", action="append", default=[], metavar="[NAME=]PATH[:PRESET]", help=DATA_HELP)
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument(
        "--input-size", type=_size, default=STUDENT_SIZE, metavar="WxH", help="student input WxH (default 256x192)"
    )
    parser.add_argument("--limit", type=int, help="use only the first N frames of each data set")
    parser.add_argument("--splits", help="the official NYU splits.mat (for .mat data)")
    parser.add_argument("--split", help="NYU split (test, train, all) or a datasets split (evaluate's default: test)")
    parser.add_argument("--depth-scale", type=float, help="integer depth units per metre (folder default 1000)")
    parser.add_argument("--batch-size", type=int, default=8, help="evaluation batch size")
    parser.add_argument("--device", default="auto", help="evaluation device: auto (GPU when there is one), cpu, cuda")
    parser.add_argument("--no-latency", action="store_true", help="skip the export and the timing")
    parser.add_argument("--latency-repeats", type=int, default=50, help="timed calls at batch 1 (median reported)")
    parser.add_argument("--latency-warmup", type=int, default=5, help="untimed calls before timing")
    parser.add_argument("--threads", type=int, help="ONNX Runtime and matmul threads (default: the runtime's choice)")
    parser.add_argument("--matmul-size", type=int, default=2048, help="side of the fp32 matmul for the compute bound")
    parser.add_argument("--matmul-repeats", type=int, default=10)
    parser.add_argument(
        "--picture-frames",
        type=int,
        default=DEFAULT_PICTURE_FRAMES,
        help="frames of the first data set in compare.png (0: no picture)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    from distill.deploy.runtime import check_input_size, pick_device

    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    device = pick_device(args.device)
    datasets: list[Dataset] = []
    scratch = tempfile.TemporaryDirectory(prefix="compare-onnx-")  # students' ONNX exports, timed then dropped
    try:
        try:
            check_input_size(*args.input_size)
            entries = _model_entries(args.model)
            data_specs = [parse_data_spec(text) for text in args.data]
            data_names = display_names([spec.name for spec in data_specs], [spec.path for spec in data_specs])
            for spec, name in zip(data_specs, data_names):
                datasets.append(open_dataset(spec, name, args))
            for entry in entries:  # sizes (and exports) first: nothing is timed or evaluated before all are known
                prepare_model(entry, args.input_size, None if args.no_latency else Path(scratch.name))
        except (ValueError, FileNotFoundError) as error:
            parser.error(str(error))
        matmul = None
        if args.no_latency:
            for entry in entries:
                entry.notes.setdefault("latency", "--no-latency")
        else:
            settings = LatencySettings(
                args.latency_warmup, args.latency_repeats, args.threads, args.matmul_size, args.matmul_repeats
            )
            matmul = time_models(entries, settings)
        args.out.mkdir(parents=True, exist_ok=True)
        picture = PictureFrames.choose(datasets[0], args.picture_frames) if datasets else None
        for number, entry in enumerate(entries, 1):
            log.info("model %d of %d: %s", number, len(entries), entry.name)
            _evaluate_model(entry, datasets, picture, args, device)
    finally:
        for dataset in datasets:
            dataset.close()
        scratch.cleanup()
    record = _record(entries, datasets, matmul, args, argv, device)
    header, cells = format_table(entries, data_names)
    record["table"] = {"header": header, "rows": cells}
    if picture is not None and picture.frames:
        drawn, titles = draw_picture(picture, [entry.name for entry in entries], datasets[0].protocol.depth_cap)
        save_picture(drawn, str(args.out / "compare.png"))
        record["picture"] = {
            "file": "compare.png",
            "data": datasets[0].name,
            "positions": picture.positions,
            "frames": [str(frame.name) for frame in picture.frames],
            "columns": titles,
            "cell_height": PICTURE_CELL_HEIGHT,
            "size": [int(drawn.shape[1]), int(drawn.shape[0])],
        }
    (args.out / "compare.json").write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    (args.out / "compare.md").write_text(write_markdown(record, header, cells))
    sys.stdout.write(markdown_table(header, cells))
    return 0


def _model_entries(texts: Sequence[str]) -> list[ModelEntry]:
    """One row per ``--model``, its kind detected as ``python -m distill.evaluate`` detects it."""
    specs = [parse_model_spec(text) for text in texts]
    names = display_names([given for given, _ in specs], [model for _, model in specs])
    return [ModelEntry(name, model, detect_model_type(model)) for name, (_, model) in zip(names, specs)]


def _evaluate_model(
    entry: ModelEntry,
    datasets: list[Dataset],
    picture: PictureFrames | None,
    args: argparse.Namespace,
    device: torch.device,
) -> None:
    """One model on every data set through :func:`distill.evaluation.evaluate.evaluate`; its picture frames too."""
    input_size = args.input_size if entry.source in ("student", CONSTANT_MODEL) else None
    model = load_model(entry.model, device=args.device, input_size=input_size)
    entry.input_size = (model.width, model.height)
    for number, dataset in enumerate(datasets):
        protocol, note = dataset.protocol_for(model.kind)
        out = args.out / "reports" / folder_name(entry.name) / folder_name(dataset.name)
        record = evaluate(
            model,
            dataset.source,
            protocol,
            out,
            batch_size=args.batch_size,
            device=device,
            extra={"protocol_note": note},
        )
        entry.results[dataset.name] = {
            "metrics": record["metrics"],
            "count": record["count"],
            "frames_without_valid_pixels": record["frames_without_valid_pixels"],
            "protocol": record["protocol"],
            "protocol_note": note,
            "model": record["model"],
            "precision": record["precision"],
            "report": str(out.relative_to(args.out)),
        }
        if number == 0 and picture is not None and picture.frames:
            picture.add(entry.name, model, protocol, device)


def _record(
    entries: list[ModelEntry],
    datasets: list[Dataset],
    matmul: dict | None,
    args: argparse.Namespace,
    argv: list[str],
    device: torch.device,
) -> dict[str, Any]:
    import platform

    import onnxruntime

    from distill.deploy.benchmark import cpu_info

    latency = (
        None
        if args.no_latency
        else {
            "backend": "ort_fp32",
            "batch": 1,
            "warmup": args.latency_warmup,
            "repeats": args.latency_repeats,
            "threads": args.threads,
            "each_model_in_own_subprocess": True,
        }
    )
    return {
        "command": shlex.join(["python", "-m", "distill.compare", *argv]),
        "machine": {
            **cpu_info(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__,
        },
        "settings": {
            "input_size": list(args.input_size),
            "limit": args.limit,
            "device": str(device),
            "latency": latency,
        },
        "matmul": matmul,
        "datasets": [
            {
                "name": d.name,
                "path": d.spec.path,
                "preset": d.spec.preset,
                "count": d.count,
                "protocol": d.protocol.to_dict(),
                "note": d.note,
                "evaluate_argv": d.evaluate_argv,
                "data": d.description,
            }
            for d in datasets
        ],
        "models": [entry.to_dict() for entry in entries],
    }


if __name__ == "__main__":
    sys.exit(main())
