"""Compare depth models side by side: size, compute, latency on this machine and accuracy on several data sets.

``python -m distill.compare --model A --model B ... --data [NAME=]PATH[:PRESET] ... --out DIR``

Nothing here measures anything in a new way; it puts the project's own measurements in one table:

- parameters and MACs at the input size (``distill.deploy.complexity``);
- latency at batch 1: students are exported (``distill.deploy.export.export_onnx``, parity-checked) and timed in
  ONNX Runtime fp32, exported files in their own runtime (``.onnx`` ORT, ``.tflite`` LiteRT, ``.pte`` ExecuTorch); each
  is timed by ``distill.benchmark``'s worker, each in its own subprocess, one after
  the other, beside one measurement of this machine's fp32 matmul rate (the compute bound, as ``distill.benchmark``
  reports it);
- the metrics on every ``--data``, scored by ``distill.evaluation`` (``load_model``, ``open_data``, ``evaluate``)
  under each data set's protocol preset (``distill.evaluation.protocols``), with each cell's full report kept under
  ``reports/``.

Outputs in ``--out``: ``compare.md`` (one table, the best value of each column in bold), ``compare.json`` (every
figure, the protocols in full, the machine), ``config.yaml`` (the resolved config) and ``compare.png`` (the same
frames of the first data set: input, ground truth and each model's aligned prediction, one colour scale per row).
"""

from __future__ import annotations

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
    Dataset,
    display_names,
    folder_name,
    open_dataset,
    parse_data_spec,
    parse_model_spec,
)
from distill.evaluation.compare_models import LatencySettings, ModelEntry, prepare_model, time_models
from distill.evaluation.compare_report import format_table, markdown_table, write_markdown
from distill.evaluation.configs import COMPARE_SPELLING, CompareConfig
from distill.evaluation.evaluate import evaluate, evaluate_frames
from distill.evaluation.models import CONSTANT_MODEL, DepthModel, detect_model_type, load_model
from distill.evaluation.protocols import Protocol
from shards.argv import parse_size
from shards.config import Command, save_resolved_config
from shards.errors import UserError, run_command
from shards.viz import colorize_depth, image_grid, save_picture

log = logging.getLogger(__name__)

#: Frames of the first data set in ``compare.png``, and the height its tiles are drawn at.
DEFAULT_PICTURE_FRAMES = 4
PICTURE_CELL_HEIGHT = 192

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



#: ``python -m distill.compare``: its config and old spellings.
COMMAND = Command("python -m distill.compare", CompareConfig, COMPARE_SPELLING)


def main(argv: list[str] | None = None) -> int:
    return run_command(_main, argv, COMMAND.prog)


def _main(argv: list[str] | None) -> int:
    from distill.deploy.runtime import check_input_size, pick_device

    argv = list(sys.argv[1:] if argv is None else argv)
    config, resolved_yaml = COMMAND.parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    size = parse_size(config.size)
    out = Path(config.out)
    device = pick_device(config.device)
    datasets: list[Dataset] = []
    scratch = tempfile.TemporaryDirectory(prefix="compare-onnx-")  # students' ONNX exports, timed then dropped
    try:
        try:
            check_input_size(*size)
            entries = _model_entries(config.model)
            data_specs = [parse_data_spec(text) for text in config.data]
            data_names = display_names([spec.name for spec in data_specs], [spec.path for spec in data_specs])
            for spec, name in zip(data_specs, data_names):
                datasets.append(open_dataset(spec, name, config))
            for entry in entries:  # sizes (and exports) first: nothing is timed or evaluated before all are known
                prepare_model(entry, size, None if not config.latency else Path(scratch.name))
        except ValueError as error:
            raise UserError(str(error)) from error
        matmul = None
        if not config.latency:
            for entry in entries:
                entry.notes.setdefault("latency", "--latency false")
        else:
            settings = LatencySettings(
                config.latency_warmup, config.latency_repeats, config.threads, config.matmul_size,
                config.matmul_repeats,
            )
            matmul = time_models(entries, settings)
        save_resolved_config(resolved_yaml, out)
        picture = PictureFrames.choose(datasets[0], config.picture_frames) if datasets else None
        for number, entry in enumerate(entries, 1):
            log.info("model %d of %d: %s", number, len(entries), entry.name)
            _evaluate_model(entry, datasets, picture, config, size, device)
    finally:
        for dataset in datasets:
            dataset.close()
        scratch.cleanup()
    record = _record(entries, datasets, matmul, config, size, argv, device)
    header, cells = format_table(entries, data_names)
    record["table"] = {"header": header, "rows": cells}
    if picture is not None and picture.frames:
        drawn, titles = draw_picture(picture, [entry.name for entry in entries], datasets[0].protocol.depth_cap)
        save_picture(drawn, str(out / "compare.png"))
        record["picture"] = {
            "file": "compare.png",
            "data": datasets[0].name,
            "positions": picture.positions,
            "frames": [str(frame.name) for frame in picture.frames],
            "columns": titles,
            "cell_height": PICTURE_CELL_HEIGHT,
            "size": [int(drawn.shape[1]), int(drawn.shape[0])],
        }
    (out / "compare.json").write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    (out / "compare.md").write_text(write_markdown(record, header, cells))
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
    config: CompareConfig,
    size: tuple[int, int],
    device: torch.device,
) -> None:
    """One model on every data set through :func:`distill.evaluation.evaluate.evaluate`; its picture frames too."""
    input_size = size if entry.source in ("student", CONSTANT_MODEL) else None
    model = load_model(entry.model, device=config.device, input_size=input_size, kind=config.kind)
    entry.input_size = (model.width, model.height)
    for number, dataset in enumerate(datasets):
        protocol, note = dataset.protocol_for(model.kind)
        out = Path(config.out) / "reports" / folder_name(entry.name) / folder_name(dataset.name)
        record = evaluate(
            model,
            dataset.source,
            protocol,
            out,
            batch_size=config.batch_size,
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
            "report": str(out.relative_to(config.out)),
        }
        if number == 0 and picture is not None and picture.frames:
            picture.add(entry.name, model, protocol, device)


def _record(
    entries: list[ModelEntry],
    datasets: list[Dataset],
    matmul: dict | None,
    config: CompareConfig,
    size: tuple[int, int],
    argv: list[str],
    device: torch.device,
) -> dict[str, Any]:
    import platform

    import onnxruntime

    from distill.deploy.benchmark import cpu_info

    latency = (
        None
        if not config.latency
        else {
            "backend": "ort_fp32",
            "batch": 1,
            "warmup": config.latency_warmup,
            "repeats": config.latency_repeats,
            "threads": config.threads,
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
            "input_size": list(size),
            "limit": config.limit,
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
                "evaluate_keys": d.evaluate_keys(),
                "data": d.description,
            }
            for d in datasets
        ],
        "models": [entry.to_dict() for entry in entries],
    }


if __name__ == "__main__":
    sys.exit(main())
