"""Compare depth models side by side: size, compute, latency on this machine and accuracy on several data sets.

``python -m distill.compare --model A --model B ... --data [NAME=]PATH[:PRESET] ... --out DIR``

Nothing here measures anything in a new way; it puts the project's own measurements in one table:

- parameters and MACs at the input size (``distill.deploy.benchmark``);
- latency at batch 1: students are exported (``distill.deploy.export.export_onnx``, parity-checked) and timed in
  ONNX Runtime fp32, exported files in their own runtime (``.onnx`` ORT, ``.tflite`` LiteRT, ``.pte`` ExecuTorch); each
  is timed by ``distill.benchmark``'s worker, each in its own subprocess, one after
  the other, beside one measurement of this machine's fp32 matmul rate (the compute bound, as ``distill.benchmark``
  reports it);
- the metrics on every ``--data``, scored by ``distill.evaluation`` (``DepthModel.from_pretrained``, ``open_data``,
  ``evaluate``) under each data set's protocol preset (``distill.evaluation.protocols``), with each cell's full report
  kept under ``reports/``.

Outputs in ``--out``: ``compare.md`` (one table, the best value of each column in bold), ``compare.json`` (every
figure, the protocols in full, the machine), ``config.yaml`` (the resolved config) and ``compare.png`` (the same
frames of the first data set: input, ground truth and each model's aligned prediction, one colour scale per row).

Why one module of about 800 lines: it is one idea, one command, read top to bottom as it runs: its config, the inputs
(``[NAME=]MODEL`` and ``[NAME=]PATH[:PRESET]`` specs, their display names, each data set opened exactly as
``python -m distill.evaluate`` opens it), the rows (each model's size, compute and batch-1 latency), the table and
the text of ``compare.md``, the picture, and the command that ties them. No part has a user outside this command.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
import shlex
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distill.deploy.benchmark import unique_names
from distill.deploy.model import CONSTANT_MODEL, DepthModel, detect_source
from distill.deploy.runtime import Kind
from distill.evaluation.evaluate import (
    EvaluateConfig,
    evaluate,
    evaluate_frames,
    negative_scale_note,
    open_checked,
    resolve_protocol,
)
from distill.evaluation.protocols import EIGEN_CROP, EIGEN_FRAME, Protocol, crop_mask, eval_crop, get_protocol
from distill.students.config import STUDENT_SIZE, check_input_size
from shards.cli.config import Command, parse_size, save_resolved_config
from shards.cli.errors import UserError, refuse_filled_folder, run_command
from shards.format import RELATIVE_INVERSE_DEPTH
from shards.tools.pictures import colorize_depth, frame_label, image_grid, picture_key, save_picture
from shards.tools.rgbd import DepthFolder, DepthScaleName

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------------------- the config


@dataclass(kw_only=True)
class CompareConfig:
    """Compare depth models in one table: parameters, MACs, batch-1 latency in each model's runtime on this machine,
    and the metrics on every data set (docs/deploy.md, 'Comparing students')."""

    model: list[str]
    """the models, repeatable: [NAME=]MODEL, MODEL as evaluate's --model; NAME the row name (default: the folder or
    file name)"""
    kind: Kind | None = None
    """what the exported files output when they do not say: relative_inverse_depth or metric_depth (without it
    relative_inverse_depth is assumed, and a warning says so)"""
    data: list[str] = field(default_factory=list)
    """the data sets, repeatable: [NAME=]PATH[:PRESET], PATH as evaluate's --data, PRESET a protocol preset (default:
    reference; a folder whose frames are not 640x480 gets no Eigen crop), NAME the column name"""
    out: str
    """the output folder (compare.md, compare.json, compare.png, reports/, config.yaml)"""
    size: str = "256x192"
    """the students' input WxH (multiples of 32); other models keep their own"""
    limit: int | None = None
    """read at most this many frames of each data set"""
    splits: str | None = None
    """NYU's official splits.mat (for .mat data)"""
    split: str | None = None
    """NYU split (test, train, all) or a datasets split (evaluate's default: test)"""
    depth_scale: float | DepthScaleName | None = None
    """integer depth units per metre of folder data (default 1000), or a dataset's name"""
    batch_size: int = 8
    """evaluation batch size"""
    device: str = "auto"
    """evaluation device: auto (a GPU when there is one), cpu, cuda"""
    latency: bool = True
    """export and time each model (false: skip the timing)"""
    latency_repeats: int = 50
    """timed calls at batch 1 (the median is reported)"""
    latency_warmup: int = 5
    """untimed calls before timing"""
    threads: int | None = None
    """ONNX Runtime and matmul threads (default: the runtime's choice)"""
    matmul_size: int = 2048
    """side of the fp32 matmul that measures the compute bound"""
    matmul_repeats: int = 10
    """timed matmuls (the median is reported)"""
    picture_frames: int = 4
    """frames of the first data set in compare.png (0: no picture)"""
    overwrite: bool = False
    """write into an --out that already holds files (replacing this command's own); without it such a folder is
    refused before any model is loaded, so no earlier comparison is lost"""


# ----------------------------------------------------------------------------------------------------------- the inputs


#: A display name in ``NAME=...``: no path separator, so ``runs/lr=0.1/student`` stays a path.
_NAME = re.compile(r"^([\w.+-]+)=(.+)$")
_PRESET = re.compile(r"^[\w+-]+$")


@dataclass(frozen=True)
class DataSpec:
    """One ``--data``: a display name, the path given to :func:`distill.evaluation.evaluate.open_data`, a preset."""

    name: str | None
    path: str
    preset: str | None = None


def _split_name(text: str) -> tuple[str | None, str]:
    match = _NAME.match(text)
    if match is None or Path(text).exists():
        return None, text
    return match.group(1), match.group(2)


def parse_data_spec(text: str) -> DataSpec:
    """``[NAME=]PATH[:PRESET]``: the preset is the text after the last ':' when PATH as a whole does not exist and
    that text is a bare word (so ``https://...`` and existing paths stay whole); an unknown preset is an error."""
    name, rest = _split_name(text)
    preset = None
    if not Path(rest).exists() and ":" in rest:
        head, _, tail = rest.rpartition(":")
        if head and _PRESET.match(tail):
            rest, preset = head, tail
    if preset is not None:
        try:
            get_protocol(preset)  # the presets of distill.evaluation.protocols, whatever they are by now
        except ValueError as error:
            raise UserError(f"--data {text}: {error}") from error
    return DataSpec(name, rest, preset)


def parse_model_spec(text: str) -> tuple[str | None, str]:
    """``[NAME=]MODEL`` -> (name or None, model)."""
    if text == CONSTANT_MODEL:
        return None, text
    return _split_name(text)


def display_names(given: Sequence[str | None], models_or_paths: Sequence[str]) -> list[str]:
    """The given names, else short ones: the file or folder name (a hub id or ``constant`` as it is); where two
    unnamed ones share it (every training run writes ``OUTPUT_DIR/student``), the parent folder's name goes in front
    (``run_a/student``); any name still taken gets ``_2``, ``_3`` ..."""
    paths = [Path(item).resolve() if Path(item).exists() else None for item in models_or_paths]
    short = [path.name if path is not None else item for path, item in zip(paths, models_or_paths)]
    unnamed = [name for name, label in zip(short, given) if label is None]
    names = []
    for label, name, path in zip(given, short, paths):
        if label is None and path is not None and unnamed.count(name) > 1 and path.parent.name:
            name = f"{path.parent.name}/{name}"
        names.append(label or name)
    return unique_names(names)


def folder_name(name: str) -> str:
    """A display name as one safe folder name (reports/<model>/<data>/)."""
    cleaned = re.sub(r"[^\w.+-]", "_", name)
    return cleaned if cleaned.strip(".") else cleaned.replace(".", "_")


@dataclass
class Dataset:
    """One opened ``--data``: the evaluate config that scores it (protocol overrides included), the frame source and
    its protocol for relative models (``distill.evaluation.evaluate.resolve_protocol`` decides per model kind)."""

    name: str
    spec: DataSpec
    config: EvaluateConfig
    source: Any
    protocol: Protocol
    note: str
    count: int = 0
    description: dict[str, Any] = field(default_factory=dict)

    def protocol_for(self, kind: str) -> tuple[Protocol, str]:
        return resolve_protocol(self.config, kind)

    def evaluate_keys(self) -> dict[str, Any]:
        """The keys that ``python -m distill.evaluate`` needs, beside --model and --out, to score this data alone."""
        defaults = EvaluateConfig(model=CONSTANT_MODEL, data=self.config.data, out=".")
        return {"data": self.config.data} | {
            item.name: getattr(self.config, item.name)
            for item in dataclasses.fields(EvaluateConfig)
            if item.name not in ("model", "out", "data")
            and getattr(self.config, item.name) != getattr(defaults, item.name)
        }

    def close(self) -> None:
        if hasattr(self.source, "close"):
            self.source.close()


def open_dataset(spec: DataSpec, name: str, options: CompareConfig) -> Dataset:
    """Open one data source exactly as ``python -m distill.evaluate`` would with the same keys; a folder whose
    frames do not fit the Eigen crop (generated scenes) gets no crop unless a preset was named."""
    config = EvaluateConfig(
        model=CONSTANT_MODEL,
        out=options.out,
        data=spec.path,
        protocol=spec.preset,
        splits=options.splits,
        split=options.split,
        limit=options.limit,
        depth_scale=options.depth_scale,
        batch_size=options.batch_size,
        device=options.device,
    )
    protocol, note = resolve_protocol(config, RELATIVE_INVERSE_DEPTH)
    source = open_checked(config, protocol, check_crop=False)
    frame_shape = tuple(source[0].depth.shape)
    if spec.preset is None and isinstance(source, DepthFolder) and protocol.crop == EIGEN_CROP:
        if frame_shape != EIGEN_FRAME:
            config = dataclasses.replace(config, crop="none")
            protocol, _ = resolve_protocol(config, RELATIVE_INVERSE_DEPTH)
            note = (
                f"folder of {frame_shape[1]}x{frame_shape[0]} frames: the Eigen crop (640x480 frames) does not "
                "apply, so no crop"
            )
            log.info("%s: %s", name, note)
    try:
        crop_mask(*frame_shape, eval_crop(protocol, *frame_shape))
    except ValueError as error:
        if hasattr(source, "close"):
            source.close()
        raise UserError(f"--data {spec.path}: {error}; or name a preset that fits: NAME=PATH:PRESET") from error
    return Dataset(name, spec, config, source, protocol, note, len(source), source.describe())


# ------------------------------------------------------------------------------------------------------------- the rows


#: The latency worker's backend for each kind of timed file -> the runtime's name in the table.
RUNTIME_NAMES = {"ort_fp32": "ONNX Runtime", "litert_fp32": "LiteRT", "executorch_fp32": "ExecuTorch"}


@dataclass
class ModelEntry:
    """One row: what the model is, its size and compute, its latency, and its results per data set."""

    name: str
    model: str
    source: str  # "student" | "onnx" | "teacher" | "constant"
    architecture: str | None = None
    params: int | None = None
    macs: int | None = None
    input_size: tuple[int, int] | None = None  # (W, H)
    timed_file: str | None = None  # the file timed (a student's temporary ONNX export, or the exported file itself)
    timing_backend: str = "ort_fp32"  # the latency worker that runs it (LiteRT, ExecuTorch for .tflite, .pte)
    latency: dict[str, Any] | None = None
    notes: dict[str, str] = field(default_factory=dict)  # why a figure is n/a
    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # data name -> evaluate's record, reduced

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model": self.model,
            "type": self.source,
            "architecture": self.architecture,
            "params": self.params,
            "macs": self.macs,
            "input_size": list(self.input_size) if self.input_size else None,
            "latency": self.latency,
            "notes": self.notes,
            "results": self.results,
        }


def _onnx_input_size(path: str) -> tuple[int | None, int | None]:
    """The (W, H) fixed in an exported graph; None for a dynamic axis."""
    from distill.deploy.runtime import onnx_session

    session = onnx_session(path, providers=["CPUExecutionProvider"], spinning=False)
    height, width = session.get_inputs()[0].shape[2:4]
    return (width if isinstance(width, int) else None), (height if isinstance(height, int) else None)


def prepare_model(entry: ModelEntry, input_size: tuple[int, int], workdir: Path | None) -> None:
    """Fill in the architecture, parameters and MACs, and (with ``workdir``) the ONNX graph to time.

    Students are counted at ``input_size`` and exported there (parity-checked on random pictures, as
    ``distill.benchmark`` does); an ``.onnx`` file is timed as it is (its MACs and parameters are n/a: the graph's
    folded initialisers are not the model's parameters); teachers and ``constant`` are not timed."""
    width, height = input_size
    if entry.source == "student":
        from distill.deploy.benchmark import count_macs, count_parameters
        from distill.students import is_student_folder, load_student

        record = json.loads((Path(entry.model) / "config.json").read_text())
        if not is_student_folder(entry.model):
            raise ValueError(
                f"{entry.model}: config.json names architecture {record.get('architecture')!r}, which "
                "distill.students does not know"
            )
        entry.architecture = str(record.get("architecture"))
        network, _ = load_student(entry.model)
        entry.input_size = (width, height)
        entry.params = count_parameters(network)
        entry.macs = count_macs(network, (1, 3, height, width))
        if workdir is not None:
            entry.timed_file = _export_for_timing(entry, network, workdir, width, height)
        return
    if entry.source == "onnx":
        graph_width, graph_height = _onnx_input_size(entry.model)
        entry.input_size = (graph_width or width, graph_height or height)
        entry.notes["params"] = entry.notes["macs"] = "an .onnx file: counted only for student folders"
        entry.timed_file = entry.model if workdir is not None else None
        return
    if entry.source in ("tflite", "pte"):
        entry.notes["params"] = entry.notes["macs"] = f"a .{entry.source} file: counted only for student folders"
        from distill.deploy.model import load_runner

        runner = load_runner(entry.model, threads=1)
        entry.input_size = (runner.width, runner.height)
        entry.timed_file = entry.model if workdir is not None else None
        entry.timing_backend = "litert_fp32" if entry.source == "tflite" else "executorch_fp32"
        return
    reason = "a teacher: not exported" if entry.source == "teacher" else "the constant baseline: no network"
    for key in ("params", "macs", "latency"):
        entry.notes[key] = reason


def _export_for_timing(
    entry: ModelEntry, network: torch.nn.Module, workdir: Path, width: int, height: int
) -> str | None:
    from distill.deploy.export import ParityError, check_parity
    from distill.deploy.onnx import export_onnx

    path = workdir / f"{folder_name(entry.name)}.onnx"
    export_onnx(network, path, height=height, width=width)
    rng = np.random.default_rng(0)
    pictures = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(3)]
    try:
        check_parity(network, path, {"random": pictures})
    except ParityError as error:
        log.warning("%s: not timed: %s", entry.name, error)
        entry.notes["latency"] = f"the ONNX export failed its parity check: {str(error).splitlines()[0]}"
        return None
    return str(path)


@dataclass
class LatencySettings:
    warmup: int = 5
    repeats: int = 50
    threads: int | None = None
    matmul_size: int = 2048
    matmul_repeats: int = 10


def time_models(entries: Sequence[ModelEntry], settings: LatencySettings) -> dict[str, Any]:
    """This machine's fp32 matmul rate, then every model at batch 1 in its runtime (students and ``.onnx`` in ONNX
    Runtime, ``.tflite`` in LiteRT, ``.pte`` in ExecuTorch; the file's own precision), each in its own
    ``distill.deploy.benchmark`` process, one after the other. Returns the matmul record; fills
    ``entry.latency``."""
    from distill.deploy.benchmark import LATENCY_BATCH, lower_bound_ms, run_worker

    thread_args = ["--threads", str(settings.threads)] if settings.threads else []
    log.info("fp32 matmul %d^3 (the compute bound)", settings.matmul_size)
    matmul = run_worker(
        [
            "--worker",
            "matmul",
            "--matmul_size",
            str(settings.matmul_size),
            "--matmul_repeats",
            str(settings.matmul_repeats),
            *thread_args,
        ]
    )
    for entry in entries:
        if entry.timed_file is None:
            continue
        width, height = entry.input_size
        log.info("%s latency: %s (%dx%d)", entry.timing_backend, entry.name, width, height)
        arguments = ["--worker", entry.timing_backend, "--model", str(entry.timed_file), "--size", f"{width}x{height}"]
        arguments += ["--warmup", str(settings.warmup), "--repeats", str(settings.repeats), "--throughput_repeats", "0"]
        try:
            measured = run_worker([*arguments, *thread_args])[f"batch{LATENCY_BATCH}"]
        except RuntimeError as error:  # one model that cannot run does not take the table down
            log.warning("%s: not timed: %s", entry.name, error)
            entry.notes["latency"] = f"the {entry.timing_backend} worker failed: {str(error).splitlines()[0]}"
            continue
        latency = {"backend": entry.timing_backend, "runtime": RUNTIME_NAMES[entry.timing_backend], **measured}
        if entry.macs is not None:
            latency["lower_bound_ms"] = lower_bound_ms(entry.macs, matmul["flops_per_s_median"])
            latency["ratio_to_lower_bound"] = measured["median_ms"] / latency["lower_bound_ms"]
        else:
            entry.notes["ratio_to_lower_bound"] = "MACs unknown"
        entry.latency = latency
    return matmul


# ------------------------------------------------------------------------------------------------------------ the table


NOT_AVAILABLE = "n/a"
#: Per data set: (header, metric key, which is best); also the columns of ``compare.md``.
DATA_COLUMNS = (("AbsRel", "abs_rel", "min"), ("δ1", "delta1", "max"), ("RMSE", "rmse", "min"))


def _fmt(value: float | None, digits: int) -> str:
    return NOT_AVAILABLE if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def table_columns(datasets: Sequence[str]) -> list[tuple[str, str, int]]:
    """(header, best = "min" / "max" / "", digits) of every column of ``compare.md``, in order."""
    columns = [
        ("Model", "", 0),
        ("Architecture", "", 0),
        ("Input", "", 0),
        ("Params (M)", "min", 3),
        ("MACs (G)", "min", 3),
        ("Runtime", "", 0),
        ("Batch-1 ms", "min", 2),
        ("x compute bound", "min", 2),
    ]
    for dataset in datasets:
        columns += [(f"{dataset} {header}", best, 3) for header, _, best in DATA_COLUMNS]
    return columns


def table_values(entry: ModelEntry, datasets: Sequence[str]) -> list[Any]:
    """The raw values of one row, in ``table_columns`` order (None = n/a)."""
    latency = entry.latency or {}
    size = f"{entry.input_size[0]}x{entry.input_size[1]}" if entry.input_size else NOT_AVAILABLE
    size = entry.notes.get("input_size", size)
    values: list[Any] = [
        entry.name,
        entry.architecture or NOT_AVAILABLE,
        size,
        entry.params / 1e6 if entry.params is not None else None,
        entry.macs / 1e9 if entry.macs is not None else None,
        latency.get("runtime", NOT_AVAILABLE),
        latency.get("median_ms"),
        latency.get("ratio_to_lower_bound"),
    ]
    for dataset in datasets:
        metrics = entry.results.get(dataset, {}).get("metrics", {})
        values += [metrics.get(key) for _, key, _ in DATA_COLUMNS]
    return values


def format_table(entries: Sequence[ModelEntry], datasets: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """Header and cells; in each numeric column with at least two values the best (as displayed) is in bold."""
    columns = table_columns(datasets)
    values = [table_values(entry, datasets) for entry in entries]
    cells = [
        [value if not digits else _fmt(value, digits) for value, (_, _, digits) in zip(row, columns)] for row in values
    ]
    for index, (_, best, _) in enumerate(columns):
        shown = [float(row[index]) for row in cells if best and row[index] != NOT_AVAILABLE]
        if len(shown) < 2:
            continue
        target = min(shown) if best == "min" else max(shown)
        for row in cells:
            if row[index] != NOT_AVAILABLE and float(row[index]) == target:
                row[index] = f"**{row[index]}**"
    return [header for header, _, _ in columns], cells


def markdown_table(header: list[str], cells: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines) + "\n"


def write_markdown(record: dict[str, Any], header: list[str], cells: list[list[str]]) -> str:
    """``compare.md``: the machine, the command, each data set's protocol, then the one table."""
    machine = record["machine"]
    lines = ["# Model comparison", "", f"Command: `{record['command']}`", ""]
    dots = ", ".join(machine["int8_dot_product"]) or "none"
    lines.append(
        f"Machine: {machine['processor']}, {machine['logical_cores']} logical cores, AVX2 "
        f"{'yes' if machine['avx2'] else 'no'}, int8 dot-product {dots}; torch {machine['torch']}, onnxruntime "
        f"{machine['onnxruntime']}; evaluation on {record['settings']['device']}."
    )
    latency = record["settings"]["latency"]
    if latency is None:
        lines.append("Latency: not measured (--latency false).")
    else:
        matmul = record["matmul"]
        lines.append(
            "Latency: each model in its runtime (student folders exported to ONNX, and .onnx files, in ONNX Runtime "
            "with ORT_ENABLE_ALL; .tflite in the LiteRT interpreter; .pte in ExecuTorch; an exported file runs at its "
            f"own precision), CPU, batch 1, median of {latency['repeats']} calls after "
            f"{latency['warmup']} warm-up, threads {latency['threads'] or 'default'}; each model in its own "
            f"subprocess, one after the other (distill.benchmark's worker). Compute bound = 2 x MACs / "
            f"{matmul['flops_per_s_median'] / 1e9:.1f} GFLOP/s (fp32 matmul {matmul['size']}^3, median, this "
            f"machine, the faster engine: {matmul.get('engine', 'torch')}); 'x compute bound' = latency / bound. "
            "MACs count every kernel tap, padding included (DeepLab's ASPP dilations 12/24/36 reach past a small "
            "feature map, where direct convolution skips those taps), so a ratio below 1 is possible."
        )
    lines.append("")
    width, height = record["settings"]["input_size"]
    size = "" if (width, height) == STUDENT_SIZE else f" (students: add `--size {width}x{height}`)"
    for data in record["datasets"]:
        frames = f"{data['count']} frame" + ("s" if data["count"] != 1 else "")
        note = f" ({data['note']})" if data["note"] != "as given" else ""
        keys = [word for key, value in data["evaluate_keys"].items() for word in (f"--{key}", str(value))]
        command = f"python -m distill.evaluate --model MODEL {shlex.join(keys)} --out DIR"
        lines.append(
            f"- **{data['name']}**: `{data['path']}`, {frames}, protocol `{data['protocol']['name']}`{note}; "
            f"each cell as `{command}`{size}"
        )
    for entry in record["models"]:
        for data_name, result in entry["results"].items():
            if result["protocol"]["name"] != _dataset(record, data_name)["protocol"]["name"] or (
                result["protocol_note"] != "as given"
            ):
                lines.append(
                    f"- {entry['name']} on {data_name}: protocol `{result['protocol']['name']}` "
                    f"({result['protocol_note']})"
                )
            if result["negative_scale_frames"]:
                note = negative_scale_note(result["negative_scale_frames"], result["count"])
                lines.append(f"- {entry['name']} on {data_name}: {note}")
    lines += [
        "",
        "Bold: the best value of each column (lowest; highest for δ1) where at least two models have one. "
        "Metrics: per-image means over the frames (docs/evaluation.md); RMSE in metres. n/a: not applicable to that "
        "model (compare.json says why).",
        "",
        markdown_table(header, cells),
    ]
    return "\n".join(lines)


def _dataset(record: dict[str, Any], name: str) -> dict[str, Any]:
    return next(data for data in record["datasets"] if data["name"] == name)


# ---------------------------------------------------------------------------------------------------------- the picture


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


def draw_picture(frames: PictureFrames, names: Sequence[str], protocol: Protocol) -> tuple[np.ndarray, dict[str, Any]]:
    """Rows = frames, labelled by their names; columns = RGB, ground truth, each model's aligned prediction (metres).
    Ground truth and the predictions of one row share its scale (2nd-98th percentile of the valid ground truth, as
    evaluate draws); holes grey, pixels outside the evaluation crop dimmed and hatched. Returns the picture and what
    it says beside the pictures (columns, rows, colour bars, legend)."""
    titles = ["RGB", "ground truth (m)", *names]
    rows = []
    for row, frame in enumerate(frames.frames):
        target = np.asarray(frame.depth, dtype=np.float64)
        height, width = target.shape
        outside = ~crop_mask(height, width, eval_crop(protocol, height, width)).numpy()
        valid = np.isfinite(target) & (target > 0)
        scored = valid & ~outside
        low, high = np.percentile(target[scored], [2, 98]) if scored.any() else (0.0, protocol.depth_cap)
        tiles = [frame.image, colorize_depth(target, valid, (low, high), inverse=False, outside=outside)]
        tiles += [
            colorize_depth(frames.predictions[name][row], None, (low, high), inverse=False, outside=outside)
            for name in names
        ]
        rows.append(tiles)
    labels = [frame_label(frame.name) for frame in frames.frames]
    key = {"columns": titles, "rows": labels, **picture_key(rows)}
    return image_grid(rows, titles=titles, row_labels=labels, cell_height=PICTURE_CELL_HEIGHT), key


# ---------------------------------------------------------------------------------------------------------- the command


#: ``python -m distill.compare``: its config.
COMMAND = Command("python -m distill.compare", CompareConfig)


def main(argv: list[str] | None = None) -> int:
    return run_command(_main, argv, COMMAND.prog)


def _main(argv: list[str] | None) -> int:
    from distill.deploy.runtime import pick_device

    argv = list(sys.argv[1:] if argv is None else argv)
    config, resolved_yaml = COMMAND.parse(argv)
    if not config.overwrite:
        refuse_filled_folder(config.out, "--out", "pass --overwrite true to write over it")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    size = parse_size(config.size)
    out = Path(config.out)
    device = pick_device(config.device)
    datasets: list[Dataset] = []
    scratch = tempfile.TemporaryDirectory(prefix="compare-onnx-")  # students' ONNX exports, timed then dropped
    try:
        entries, data_names = _open_inputs(config, size, datasets, Path(scratch.name))
        matmul = _time_latency(entries, config)
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
        record["picture"] = _save_picture(picture, entries, datasets[0], out / "compare.png")
    else:
        (out / "compare.png").unlink(missing_ok=True)  # an earlier run's (--overwrite): not of these models
    (out / "compare.json").write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    (out / "compare.md").write_text(write_markdown(record, header, cells))
    sys.stdout.write(markdown_table(header, cells))
    return 0


def _open_inputs(
    config: CompareConfig, size: tuple[int, int], datasets: list[Dataset], scratch: Path
) -> tuple[list[ModelEntry], list[str]]:
    """Every model's row, sized (and exported into ``scratch`` when it is timed), and every data set opened into
    ``datasets`` (the caller closes them, also those opened before a failure): a bad one is a user error before
    anything is timed or scored. Returns the rows and the data sets' display names."""
    try:
        check_input_size(*size)
        entries = _model_entries(config.model)
        data_specs = [parse_data_spec(text) for text in config.data]
        data_names = display_names([spec.name for spec in data_specs], [spec.path for spec in data_specs])
        for spec, name in zip(data_specs, data_names):
            datasets.append(open_dataset(spec, name, config))
        for entry in entries:  # sizes (and exports) first: nothing is timed or evaluated before all are known
            prepare_model(entry, size, None if not config.latency else scratch)
    except ValueError as error:
        raise UserError(str(error)) from error
    return entries, data_names


def _time_latency(entries: list[ModelEntry], config: CompareConfig) -> dict[str, Any] | None:
    """The matmul record after timing every model (:func:`time_models`), or None with ``--latency false``."""
    if not config.latency:
        for entry in entries:
            entry.notes.setdefault("latency", "--latency false")
        return None
    settings = LatencySettings(
        config.latency_warmup, config.latency_repeats, config.threads, config.matmul_size, config.matmul_repeats
    )
    return time_models(entries, settings)


def _save_picture(picture: PictureFrames, entries: list[ModelEntry], first: Dataset, path: Path) -> dict[str, Any]:
    """``compare.png`` drawn and saved; returns what ``compare.json`` says of it."""
    drawn, key = draw_picture(picture, [entry.name for entry in entries], first.protocol)
    save_picture(drawn, str(path))
    return {
        "file": path.name,
        "data": first.name,
        "positions": picture.positions,
        "frames": [str(frame.name) for frame in picture.frames],
        **key,
        "cell_height": PICTURE_CELL_HEIGHT,
        "size": [int(drawn.shape[1]), int(drawn.shape[0])],
    }


def _model_entries(texts: Sequence[str]) -> list[ModelEntry]:
    """One row per ``--model``, its kind detected as ``python -m distill.evaluate`` detects it."""
    specs = [parse_model_spec(text) for text in texts]
    names = display_names([given for given, _ in specs], [model for _, model in specs])
    return [ModelEntry(name, model, detect_source(model)[0]) for name, (_, model) in zip(names, specs)]


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
    model = DepthModel.from_pretrained(  # scored in fp32, as evaluate scores by default
        entry.model, device=config.device, input_size=input_size, kind=config.kind, precision="fp32"
    )
    entry.input_size = None if model.native_size else (model.width, model.height)
    if model.native_size:  # a teacher takes each frame whole (docs/evaluation.md, "A teacher's row")
        entry.notes["input_size"] = model.input_label()
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
            "negative_scale_frames": record["negative_scale_frames"],
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
