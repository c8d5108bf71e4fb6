"""Evaluate a student, its ONNX export or a teacher on NYU Depth v2, DIODE, KITTI (or any RGB + metric depth source).

``python -m distill.evaluate --model M --data D [--splits splits.mat] [--protocol reference] --out DIR``

The model is recognised by content (:mod:`distill.evaluation.models`): an ``.onnx`` file, a student folder, a
transformers depth model folder or hub id (a teacher), or ``constant``; the data by its form
(:mod:`distill.evaluation.sources`). Each frame is resized to the model's input size, the prediction resized back to
the frame's size, then the protocol (:mod:`distill.evaluation.protocols`) aligns it, caps it and scores it per image
with ``distill.metrics``; figures are averaged over images.

Outputs in ``--out``: ``metrics.json`` (protocol in full, model, data, count, means), ``per_image.csv``,
``table_row.md`` (the reference table's layout, then the precision), ``best_median_worst.png``, ``config.yaml`` (the
resolved config) and, with ``--save_predictions true``, ``predictions.npz`` (every raw prediction at the frame's size,
before alignment: the model's output resized with the kernel named in its ``resize`` member, never clamped).

Models run in fp32 unless ``--precision bf16`` or ``fp16`` asks for autocast; the report states which.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import sys
import time
import zipfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from distill.deploy.runtime import pick_device
from distill.evaluation.configs import EVALUATE_SPELLING, DataOptions, EvaluateConfig, ProtocolOptions
from distill.evaluation.models import DepthModel, load_model
from distill.evaluation.protocols import (
    PRESETS,
    Protocol,
    crop_box,
    crop_mask,
    get_protocol,
    predicted_depth,
    resize_images,
    valid_mask,
)
from distill.evaluation.sources import open_data
from distill.metrics import DEPTH_METRICS, batch_depth_metrics, mean_metrics
from shards.argv import parse_size
from shards.config import Command, save_resolved_config
from shards.errors import UserError, run_command
from shards.format import METRIC_DEPTH, LabelError
from shards.nyu import DepthFrame, NyuFormatError
from shards.viz import colorize_depth, error_map, image_grid, save_picture

log = logging.getLogger(__name__)

#: Column headers of the reference table, with the metric each shows.
TABLE_COLUMNS = (
    ("AbsRel", "abs_rel"),
    ("SqRel", "sq_rel"),
    ("RMSE", "rmse"),
    ("RMSE log", "rmse_log"),
    ("δ<1.25", "delta1"),
    ("δ<1.25²", "delta2"),
    ("δ<1.25³", "delta3"),
)


def _batches(source: Any, batch_size: int) -> list[list[int]]:
    return [list(range(start, min(start + batch_size, len(source)))) for start in range(0, len(source), batch_size)]


def _read(source: Any, positions: list[int]) -> list[DepthFrame]:
    return [source[position] for position in positions]


# --------------------------------------------------------------------------------------------- evaluation


@dataclass
class BatchResult:
    raw: torch.Tensor  # (B, H, W) prediction at the frame's size, before alignment
    depth: torch.Tensor  # (B, H, W) float64 predicted metres after the protocol
    target: torch.Tensor  # (B, H, W) ground truth metres
    valid: torch.Tensor  # (B, H, W) bool
    scale: torch.Tensor  # (B,)
    shift: torch.Tensor  # (B,)
    metrics: dict[str, torch.Tensor]  # name -> (B,)


def evaluate_frames(model: DepthModel, protocol: Protocol, frames: Sequence[DepthFrame], device) -> BatchResult:
    """Run the model on frames of one size and score them under the protocol."""
    images = torch.from_numpy(np.stack([frame.image for frame in frames])).to(device)
    target = torch.from_numpy(np.stack([frame.depth for frame in frames])).to(device)
    height, width = target.shape[-2:]
    inputs = images.permute(0, 3, 1, 2).float() / 255.0  # (B, 3, H, W) in [0, 1]
    inputs = resize_images(inputs, model.height, model.width, protocol.input_resize).clamp(0.0, 1.0)
    with torch.inference_mode():
        prediction = model.infer(inputs).to(device=device, dtype=torch.float32)  # (B, h, w)
    # not clamped: a relative prediction's offset is free, so its negative values enter the fit as they are; the
    # protocol clamps only metric depth (non-negative by definition)
    raw = resize_images(prediction[:, None], height, width, protocol.output_resize)[:, 0]
    valid = valid_mask(protocol, target)
    depth, scale, shift = predicted_depth(protocol, raw, model.kind, target, valid)
    metrics = batch_depth_metrics(depth, target, valid)
    return BatchResult(raw, depth, target, valid, scale, shift, metrics)


class PredictionWriter:
    """Streams raw predictions into ``predictions.npz`` (``predictions`` float32 (N, H, W), ``indices``,
    ``names``, ``resize``: the kernel that took each output to the frame's size) without holding them all in memory;
    ``np.load`` reads it back."""

    def __init__(self, path: Path, count: int, resize: str) -> None:
        self.path, self.count, self.written, self.resize = path, count, 0, resize
        self.archive = zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True)
        self.member = None
        self.shape: tuple[int, int] | None = None

    def write(self, raw: np.ndarray) -> None:
        if self.member is None:
            self.shape = raw.shape[1:]
            self.member = self.archive.open("predictions.npy", "w", force_zip64=True)
            header = {"descr": "<f4", "fortran_order": False, "shape": (self.count, *self.shape)}
            np.lib.format.write_array_header_2_0(self.member, header)
        if raw.shape[1:] != self.shape:
            raise ValueError(f"--save_predictions needs frames of one size: {raw.shape[1:]} after {self.shape}")
        self.member.write(np.ascontiguousarray(raw, dtype="<f4").tobytes())
        self.written += len(raw)

    def close(self, indices: list[int], names: list[str]) -> None:
        if self.member is not None:
            self.member.close()
        members = (
            ("indices", np.asarray(indices, dtype=np.int64)), ("names", np.asarray(names)),
            ("resize", np.asarray(self.resize)),
        )
        for name, values in members:
            with self.archive.open(f"{name}.npy", "w") as member:
                np.lib.format.write_array(member, values)
        self.archive.close()
        if self.written != self.count:
            raise RuntimeError(f"{self.path}: wrote {self.written} predictions, expected {self.count}")


def _picture(model: DepthModel, protocol: Protocol, source: Any, rows: list[tuple[str, int]], device) -> np.ndarray:
    """RGB, ground truth, prediction and error of the chosen frames; depth and prediction share each row's scale."""
    pictures, labels = [], []
    results: dict[int, tuple[DepthFrame, BatchResult]] = {}
    for label, position in rows:
        if position not in results:  # with few frames, best, median and worst may be one frame
            frame = source[position]
            results[position] = frame, evaluate_frames(model, protocol, [frame], device)
        frame, result = results[position]
        target = result.target[0].cpu().numpy()
        valid = result.valid[0].cpu().numpy()
        depth = result.depth[0].cpu().numpy()
        low, high = np.percentile(target[valid], [2, 98]) if valid.any() else (0.0, protocol.depth_cap)
        pictures.append(
            [
                frame.image,
                colorize_depth(target, target > 0, (low, high), inverse=False),
                colorize_depth(depth, None, (low, high), inverse=False),
                error_map(depth - target, valid),
            ]
        )
        labels.append(f"{label} {frame.name} AbsRel {float(result.metrics['abs_rel'][0]):.3f}")
    titles = ["RGB", "ground truth (m)", "prediction (m)", "|error| (valid pixels)"]
    return image_grid(pictures, titles=titles, row_labels=labels, cell_height=192)


def table_row(name: str, input_size: tuple[int, int], metrics: dict[str, float], precision: str | None = None) -> str:
    """A markdown table (header + one row) in the reference table's layout; then the precision, when given."""
    header = "| Model | Input | " + " | ".join(title for title, _ in TABLE_COLUMNS) + " |"
    rule = "|" + "---|" * (len(TABLE_COLUMNS) + 2)
    values = " | ".join(f"{metrics.get(key, math.nan):.3f}" for _, key in TABLE_COLUMNS)
    note = f"\nPrecision: {precision}.\n" if precision else ""
    return f"{header}\n{rule}\n| {name} | {input_size[0]}x{input_size[1]} | {values} |\n{note}"


def evaluate(
    model: DepthModel,
    source: Any,
    protocol: Protocol,
    out: Path,
    batch_size: int = 8,
    save_predictions: bool = False,
    device: torch.device | str = "cpu",
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Evaluate every frame of ``source``; write the outputs into ``out``; return the ``metrics.json`` record."""
    out.mkdir(parents=True, exist_ok=True)
    count = len(source)
    if count == 0:
        raise ValueError("the data source holds no frames")
    writer = PredictionWriter(out / "predictions.npz", count, protocol.output_resize) if save_predictions else None
    rows: list[dict[str, Any]] = []
    per_image: dict[str, list[float]] = {name: [] for name in DEPTH_METRICS}
    started = time.perf_counter()
    batches = _batches(source, batch_size)
    with ThreadPoolExecutor(max_workers=1) as reader, tqdm(total=count, desc="evaluate", unit="image") as progress:
        pending = reader.submit(_read, source, batches[0])
        for number, positions in enumerate(batches):
            frames = pending.result()
            if number + 1 < len(batches):
                pending = reader.submit(_read, source, batches[number + 1])
            groups: dict[tuple[int, int], list[int]] = {}
            for offset, frame in enumerate(frames):
                groups.setdefault(frame.depth.shape, []).append(offset)
            for offsets in groups.values():  # frames of one size go through the model together
                result = evaluate_frames(model, protocol, [frames[o] for o in offsets], device)
                if writer is not None:
                    writer.write(result.raw.cpu().numpy())
                valid_pixels = result.valid.sum((1, 2)).cpu()
                for row_number, offset in enumerate(offsets):
                    frame = frames[offset]
                    row = {
                        "position": positions[offset],
                        "index": frame.index,
                        "name": frame.name,
                        "valid_pixels": int(valid_pixels[row_number]),
                        "scale": float(result.scale[row_number]),
                        "shift": float(result.shift[row_number]),
                    }
                    for name in DEPTH_METRICS:
                        row[name] = float(result.metrics[name][row_number])
                        per_image[name].append(row[name])
                    rows.append(row)
            progress.update(len(frames))
    seconds = time.perf_counter() - started
    rows.sort(key=lambda row: row["position"])
    if writer is not None:
        writer.close([row["index"] for row in rows], [row["name"] for row in rows])
    scored = [row for row in rows if not math.isnan(row["abs_rel"])]
    if len(scored) < count:
        log.warning("%d of %d frames have no valid pixel under the protocol: left out", count - len(scored), count)
    means = mean_metrics(per_image)
    record = {
        "protocol": protocol.to_dict(),
        "model": model.describe(),
        "data": source.describe(),
        "count": len(scored),
        "frames_without_valid_pixels": count - len(scored),
        "metrics": means,
        "averaging": "mean over images of per-image metrics",
        "seconds": seconds,
        "images_per_second": count / seconds,
        "device": str(device),
        "precision": model.precision,
        **(extra or {}),
    }
    (out / "metrics.json").write_text(json.dumps(record, indent=2) + "\n")
    with open(out / "per_image.csv", "w", newline="") as file:
        table = csv.DictWriter(file, fieldnames=list(rows[0]))
        table.writeheader()
        table.writerows(rows)
    (out / "table_row.md").write_text(table_row(model.name, (model.width, model.height), means, model.precision))
    if scored:
        ranked = sorted(scored, key=lambda row: row["abs_rel"])
        chosen = [("best", ranked[0]), ("median", ranked[len(ranked) // 2]), ("worst", ranked[-1])]
        picture = _picture(model, protocol, source, [(label, row["position"]) for label, row in chosen], device)
        save_picture(picture, str(out / "best_median_worst.png"))
    return record


# -------------------------------------------------------------------------------------------------- command


#: ``python -m distill.evaluate``: its config and old spellings.
COMMAND = Command("python -m distill.evaluate", EvaluateConfig, EVALUATE_SPELLING)


def resolve_protocol(config: ProtocolOptions, model_kind: str) -> tuple[Protocol, str]:
    """The preset with its overrides; a metric model under the default preset is scored without alignment
    (docs/evaluation.md: the model's kind decides), which the report states."""
    overrides = config.overrides()
    note = "as given"
    if config.protocol is None and model_kind == METRIC_DEPTH and "alignment" not in overrides:
        overrides["alignment"] = "none"
        overrides.setdefault("min_prediction", PRESETS["metric"].min_prediction)
        note = "metric model under the default preset: alignment 'none' (the model's kind decides)"
        log.warning("%s", note)
    try:
        return get_protocol(config.protocol or "reference", **overrides), note
    except ValueError as error:
        raise UserError(str(error)) from error


def open_checked(config: DataOptions, protocol: Protocol, check_crop: bool = True) -> Any:
    """The data source of ``config.data``, refused with a user error when it is empty or (``check_crop``) its
    frames do not fit the protocol's crop."""
    try:
        source = open_data(config, protocol)
        if len(source) == 0:
            raise UserError(f"--data {config.data} holds no frames")
        height, width = source[0].depth.shape
        if check_crop:  # a crop that does not fit the frames stops here
            crop_mask(height, width, crop_box(protocol, height, width))
    except (ValueError, NyuFormatError, LabelError) as error:
        raise UserError(str(error)) from error
    return source


def main(argv: list[str] | None = None) -> int:
    return run_command(_main, argv, COMMAND.prog)


def _main(argv: list[str] | None) -> int:
    config, resolved_yaml = COMMAND.parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    device = pick_device(config.device)
    input_size = parse_size(config.size) if config.size else None
    try:
        model = load_model(
            config.model, device=config.device, input_size=input_size, precision=config.precision, kind=config.kind
        )
    except ValueError as error:
        raise UserError(str(error)) from error
    protocol, note = resolve_protocol(config, model.kind)
    source = open_checked(config, protocol)
    out = Path(config.out)
    save_resolved_config(resolved_yaml, out)
    try:
        record = evaluate(
            model,
            source,
            protocol,
            out,
            batch_size=config.batch_size,
            save_predictions=config.save_predictions,
            device=device,
            extra={"protocol_note": note},
        )
    except (NyuFormatError, LabelError, OSError) as error:  # a frame that is unreadable or not what its source says
        raise UserError(str(error)) from error
    finally:
        if hasattr(source, "close"):
            source.close()
    log.info("%s", json.dumps(record["metrics"]))
    sys.stdout.write(table_row(model.name, (model.width, model.height), record["metrics"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
