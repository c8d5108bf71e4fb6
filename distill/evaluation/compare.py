"""Compare depth models side by side: size, compute, latency on this machine and accuracy on several data sets.

``python -m distill.compare --model A --model B ... --data [NAME=]PATH[:PRESET] ... --out DIR``

Nothing here measures anything in a new way; it puts the project's own measurements in one table:

- parameters and MACs at the input size (``distill.complexity``);
- ONNX Runtime fp32 latency at batch 1: students are exported (``distill.export.export_onnx``, parity-checked) and
  every model is timed by ``distill.benchmark``'s worker, each in its own subprocess, one after the other, beside
  one measurement of this machine's fp32 matmul rate (the compute bound, as ``distill.benchmark`` reports it);
- the metrics on every ``--data``, scored by ``distill.evaluate`` (``load_model``, ``open_data``, ``evaluate``) under
  each data set's protocol preset (``distill.protocols``), with each cell's full report kept under ``reports/``.

Outputs in ``--out``: ``compare.md`` (one table, the best value of each column in bold), ``compare.json`` (every
figure, the protocols in full, the machine) and ``compare.png`` (the same frames of the first data set: input,
ground truth and each model's aligned prediction, one colour scale per row).
"""

from __future__ import annotations

import argparse
import json
import logging
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

from distill import evaluate as evaluation
from distill.benchmark import unique_names
from distill.compare_report import format_table, markdown_table, write_markdown
from distill.protocols import EIGEN_CROP, EIGEN_FRAME, PRESETS, Protocol, crop_box, crop_mask, get_protocol
from shards.depth_sources import DepthFolder
from shards.format import STUDENT_SIZE
from shards.viz import colorize_depth, image_grid, save_picture

log = logging.getLogger(__name__)

#: Frames of the first data set in ``compare.png``, and the height its tiles are drawn at.
DEFAULT_PICTURE_FRAMES = 4
PICTURE_CELL_HEIGHT = 192
#: A display name in ``NAME=...``: no path separator, so ``runs/lr=0.1/student`` stays a path.
_NAME = re.compile(r"^([\w.+-]+)=(.+)$")
_PRESET = re.compile(r"^[\w+-]+$")

DATA_HELP = (
    "a data source, repeatable: [NAME=]PATH[:PRESET]. PATH is what python -m distill.evaluate --data takes "
    "(nyu_depth_v2_labeled.mat, an rgb/ + depth/ folder, a datasets copy, ...); PRESET a protocol preset "
    f"(distill.protocols: {', '.join(sorted(PRESETS))}); NAME the column name (default: the file or "
    "folder name). Without PRESET the protocol is evaluate's default: 'reference' (a folder whose frames are not "
    "640x480 gets 'reference' without the Eigen crop, reported as reference+custom). A PATH that exists as given is "
    "never split, so a path with ':' or '=' in it still works"
)
MODEL_HELP = (
    "a model, repeatable: [NAME=]MODEL, where MODEL is what python -m distill.evaluate --model takes (a student "
    "folder, an .onnx file, a teacher folder or hub id, or 'constant'); NAME the row name (default: the folder or "
    "file name)"
)


# ------------------------------------------------------------------------------------------------ arguments


@dataclass(frozen=True)
class DataSpec:
    """One ``--data``: a display name, the path given to ``distill.evaluate.open_data`` and an optional preset."""

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
            get_protocol(preset)  # the presets of distill.protocols, whatever they are by now
        except ValueError as error:
            raise ValueError(f"--data {text}: {error}") from error
    return DataSpec(name, rest, preset)


def parse_model_spec(text: str) -> tuple[str | None, str]:
    """``[NAME=]MODEL`` -> (name or None, model)."""
    if text == evaluation.CONSTANT_MODEL:
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


def _folder_name(name: str) -> str:
    """A display name as one safe folder name (reports/<model>/<data>/)."""
    cleaned = re.sub(r"[^\w.+-]", "_", name)
    return cleaned if cleaned.strip(".") else cleaned.replace(".", "_")


def _size(text: str) -> tuple[int, int]:
    width, _, height = text.lower().partition("x")
    return int(width), int(height)


# ---------------------------------------------------------------------------------------------- models: size and time


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
    onnx_path: str | None = None  # the graph timed (a student's temporary export, or the .onnx itself)
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
    from distill.runtime import onnx_session

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
        from distill.complexity import count_macs, count_parameters
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
            entry.onnx_path = _export_for_timing(entry, network, workdir, width, height)
        return
    if entry.source == "onnx":
        graph_width, graph_height = _onnx_input_size(entry.model)
        entry.input_size = (graph_width or width, graph_height or height)
        entry.notes["params"] = entry.notes["macs"] = "an .onnx file: counted only for student folders"
        entry.onnx_path = entry.model if workdir is not None else None
        return
    reason = "a teacher: not exported" if entry.source == "teacher" else "the constant baseline: no network"
    for key in ("params", "macs", "latency"):
        entry.notes[key] = reason


def _export_for_timing(
    entry: ModelEntry, network: torch.nn.Module, workdir: Path, width: int, height: int
) -> str | None:
    from distill.export import ParityError, check_parity, export_onnx

    path = workdir / f"{_folder_name(entry.name)}.onnx"
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
    """This machine's fp32 matmul rate, then every exported model at batch 1 in ONNX Runtime fp32, each in its own
    ``distill.benchmark`` worker process, one after the other. Returns the matmul record; fills ``entry.latency``."""
    from distill.benchmark import LATENCY_BATCH, lower_bound_ms, run_worker

    thread_args = ["--threads", str(settings.threads)] if settings.threads else []
    log.info("fp32 matmul %d^3 (the compute bound)", settings.matmul_size)
    matmul = run_worker(
        [
            "--worker",
            "matmul",
            "--matmul-size",
            str(settings.matmul_size),
            "--matmul-repeats",
            str(settings.matmul_repeats),
            *thread_args,
        ]
    )
    for entry in entries:
        if entry.onnx_path is None:
            continue
        width, height = entry.input_size
        log.info("ORT fp32 latency: %s (%dx%d)", entry.name, width, height)
        arguments = ["--worker", "ort_fp32", "--model", entry.onnx_path, "--height", str(height), "--width", str(width)]
        arguments += ["--warmup", str(settings.warmup), "--repeats", str(settings.repeats), "--throughput-repeats", "0"]
        try:
            measured = run_worker([*arguments, *thread_args])[f"batch{LATENCY_BATCH}"]
        except RuntimeError as error:  # one model that cannot run does not take the table down
            log.warning("%s: not timed: %s", entry.name, error)
            entry.notes["latency"] = f"the ONNX Runtime worker failed: {str(error).splitlines()[0]}"
            continue
        latency = {"backend": "ort_fp32", **measured}
        if entry.macs is not None:
            latency["lower_bound_ms"] = lower_bound_ms(entry.macs, matmul["flops_per_s_median"])
            latency["ratio_to_lower_bound"] = measured["median_ms"] / latency["lower_bound_ms"]
        else:
            entry.notes["ratio_to_lower_bound"] = "MACs unknown"
        entry.latency = latency
    return matmul


# --------------------------------------------------------------------------------------------------- data


@dataclass
class Dataset:
    """One opened ``--data``: evaluate's arguments for it (protocol flags included), the frame source and its
    protocol for relative models (``distill.evaluate.resolve_protocol`` decides per model kind)."""

    name: str
    spec: DataSpec
    args: argparse.Namespace
    source: Any
    protocol: Protocol
    note: str
    evaluate_argv: list[str]
    count: int = 0
    description: dict[str, Any] = field(default_factory=dict)

    def protocol_for(self, model_kind: str) -> tuple[Protocol, str]:
        return evaluation.resolve_protocol(self.args, model_kind)

    def close(self) -> None:
        if hasattr(self.source, "close"):
            self.source.close()


def open_dataset(spec: DataSpec, name: str, options: argparse.Namespace) -> Dataset:
    """Open one data source exactly as ``python -m distill.evaluate`` would with the same flags; a folder whose
    frames do not fit the Eigen crop (generated scenes) gets no crop unless a preset was named."""
    argv = ["--data", spec.path]
    if spec.preset:
        argv += ["--protocol", spec.preset]
    for flag, value in (
        ("--splits", options.splits),
        ("--split", options.split),
        ("--limit", options.limit),
        ("--depth-scale", options.depth_scale),
    ):
        if value is not None:
            argv += [flag, str(value)]

    def parse() -> argparse.Namespace:  # evaluate's own parser: its defaults and protocol flags, as it reads them
        return evaluation.build_parser().parse_args(["--model", "-", "--out", "-", *argv])

    args = parse()
    protocol, note = evaluation.resolve_protocol(args, "relative_inverse_depth")
    source = evaluation.open_data(args, protocol)
    if len(source) == 0:
        raise ValueError(f"--data {spec.path} holds no frames")
    frame_shape = tuple(source[0].depth.shape)
    if spec.preset is None and isinstance(source, DepthFolder) and protocol.crop == EIGEN_CROP:
        if frame_shape != EIGEN_FRAME:
            argv += ["--crop", "none"]
            args = parse()
            protocol, _ = evaluation.resolve_protocol(args, "relative_inverse_depth")
            note = (
                f"folder of {frame_shape[1]}x{frame_shape[0]} frames: the Eigen crop (640x480 frames) does not "
                "apply, so no crop"
            )
            log.info("%s: %s", name, note)
    try:
        crop_mask(*frame_shape, crop_box(protocol, *frame_shape))
    except ValueError as error:
        raise ValueError(f"--data {spec.path}: {error}; or name a preset that fits: NAME=PATH:PRESET") from error
    return Dataset(name, spec, args, source, protocol, note, argv, len(source), source.describe())


# --------------------------------------------------------------------------------------------------- picture


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

    def add(self, name: str, model: evaluation.DepthModel, protocol: Protocol, device: torch.device) -> None:
        results = [evaluation.evaluate_frames(model, protocol, [frame], device) for frame in self.frames]
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


# ---------------------------------------------------------------------------------------------------- command


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
    from distill.runtime import check_input_size, pick_device

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
    """One row per ``--model``, its kind detected as ``distill.evaluate`` detects it."""
    specs = [parse_model_spec(text) for text in texts]
    names = display_names([given for given, _ in specs], [model for _, model in specs])
    return [ModelEntry(name, model, evaluation.detect_model_type(model)) for name, (_, model) in zip(names, specs)]


def _evaluate_model(
    entry: ModelEntry,
    datasets: list[Dataset],
    picture: PictureFrames | None,
    args: argparse.Namespace,
    device: torch.device,
) -> None:
    """One model on every data set through ``distill.evaluate.evaluate``; its frames of the picture as well."""
    input_size = args.input_size if entry.source in ("student", evaluation.CONSTANT_MODEL) else None
    model = evaluation.load_model(entry.model, device=args.device, input_size=input_size)
    entry.input_size = (model.width, model.height)
    for number, dataset in enumerate(datasets):
        protocol, note = dataset.protocol_for(model.kind)
        out = args.out / "reports" / _folder_name(entry.name) / _folder_name(dataset.name)
        record = evaluation.evaluate(
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

    from distill.benchmark import cpu_info

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
