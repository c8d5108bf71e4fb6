"""Run a depth model on pictures, folders and videos: colour-mapped depth pictures, and raw inverse depth on request.

``python -m distill.predict --model <student | model.onnx / .tflite / .pte | teacher> INPUT... --out DIR``

Each picture is resized (bicubic) to the model's input size (a student's is a multiple of 32, 256x192 by default;
the aspect ratio is not kept; a teacher takes the picture at its own size), and the prediction is resized back to
the picture's own size, so every map has the input's resolution. Outputs, for ``photos/a/b.jpg`` under a folder
input ``photos``:

- ``DIR/a/b_depth.png``: the map at the picture's resolution with its colour bar to the right, in the convention of
  every picture here (``shards.tools.pictures``): a metric model's metres on the reversed turbo map, a relative
  model's inverse depth in its own units on turbo, near = warm in both. Each picture spans the 2nd-98th percentiles
  of its own values; ``--shared_scale true`` puts every picture of the run on one scale (the percentiles of them
  all), so that pictures compare;
- ``--save_raw png16``: ``DIR/a/b_inverse_depth.png`` (our 16-bit label code: 0 invalid, 1..65535 linear over the
  range) and ``DIR/a/b_inverse_depth.json`` holding that range; ``--save_raw npy``: ``DIR/a/b_inverse_depth.npy``
  (float32 (H, W)). Values are the student's relative inverse depth (unitless, larger = nearer), resized back
  bicubically and not clamped (a relative output may dip below 0; only the colour pictures clip, for display); a
  student that predicts depth (``prediction: depth``) is written as 1 / metres, clamped at 0.
- a video ``clip.mp4`` gives ``DIR/clip_depth.mp4`` (``--video_out mp4``) or ``DIR/clip_depth/000000.png ...``
  (``--video_out frames``), and raw frames in ``DIR/clip_inverse_depth/``. ``--smooth ema|mean`` averages the
  predictions over frames (less flicker, a little lag); still pictures are never smoothed, and a run that asks for it
  says so once. Video frames stay at the video's size, without a colour bar (their scale follows each frame).

Unreadable inputs are skipped, listed at the end and in ``DIR/skipped.txt``; the exit status is non-zero only if
nothing could be processed.

Videos are read and written with PyAV (the optional ``video`` extra), frames in and out as uint8 RGB (H, W, 3):
torchvision 0.29 has no video API, and PyAV's wheels bundle FFmpeg, so nothing else needs installing.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import ModuleType
from typing import Literal

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from distill.deploy.model import DepthModel, DepthPrediction
from distill.deploy.runtime import IMAGE_EXTENSIONS, Kind, images_to_batch, load_picture, resize_prediction
from shards.cli.config import Command, parse_size, save_resolved_config
from shards.cli.errors import UserError, refuse_filled_folder, run_command
from shards.format import METRIC_DEPTH, RELATIVE_INVERSE_DEPTH, LabelError, as_inverse_depth, encode_label_codes
from shards.tools.pictures import METRES, colorize_depth, image_grid, relative_units

#: File name endings read as videos by ``distill.predict``.
VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg")

#: Codecs tried in order for an output video; libx264 ships in PyAV's wheels, mpeg4 is FFmpeg's own.
OUTPUT_CODECS = ("libx264", "h264", "mpeg4")


logger = logging.getLogger(__name__)

RAW_FORMATS = ("png16", "npy")
SMOOTHING = ("ema", "mean")
VIDEO_OUTPUTS = ("mp4", "frames")
SKIPPED_LIST = "skipped.txt"
#: Percentiles of each map that span the colour scale (as ``colorize_depth``'s default).
COLOUR_PERCENTILES = (2.0, 98.0)


@dataclass(kw_only=True)
class PredictConfig:
    """Depth maps for pictures, folders (recursive) and videos: colour-mapped pictures, and raw relative inverse
    depth on request (docs/deploy.md)."""

    model: str
    """a student folder or hub id, an exported .onnx / .tflite / .pte file, or a teacher folder or hub id"""
    inputs: list[str]
    """pictures, folders (searched recursively) or video files; bare words on the command line"""
    out: str
    """the output folder (the pictures, skipped.txt, config.yaml)"""
    save_raw: Literal["png16", "npy"] | None = None
    """also write raw inverse depth: 16-bit PNG (with its range in a .json) or float32 .npy"""
    shared_scale: bool = False
    """put every still picture of the run on one colour scale (else each spans its own values)"""
    smooth: Literal["ema", "mean"] | None = None
    """videos only: average the predictions over frames"""
    smooth_window: int = 5
    """frames in the moving average (mean)"""
    smooth_alpha: float = 0.5
    """weight of the newest frame (ema)"""
    video_out: Literal["mp4", "frames"] = "mp4"
    """video: an mp4, or a PNG per frame"""
    size: str | None = None
    """the model's input WxH (students; default 256x192; exported files and teachers keep their own)"""
    batch_size: int = 4
    """pictures per forward pass"""
    device: str = "auto"
    """PyTorch device for student folders: auto, cpu, cuda"""
    threads: int | None = None
    """CPU threads (default: the runtime's choice)"""
    kind: Kind | None = None
    """what an exported file outputs when it does not say: relative_inverse_depth or metric_depth (without it
    relative_inverse_depth is assumed, and a warning says so)"""
    overwrite: bool = False
    """write into an --out that already holds files (outputs of the same names are replaced, others stay); without
    it such a folder is refused before the model is loaded, so no earlier output is lost"""


@dataclass(frozen=True)
class Job:
    """One input and where its outputs go: ``stem`` is the output path without suffix, relative to ``--out``."""

    path: Path
    stem: Path
    is_video: bool


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


def collect_jobs(inputs: Sequence[str | os.PathLike]) -> tuple[list[Job], list[Skipped]]:
    """Expand files and folders (recursive, sorted) into jobs; a folder's files keep their relative paths.

    A missing path is skipped; within folders only picture and video file endings are taken. Two inputs that
    would write the same output get ``_2``, ``_3``... rather than overwrite each other.
    """
    jobs: list[Job] = []
    skipped: list[Skipped] = []
    taken: set[Path] = set()
    for given in map(Path, inputs):
        if given.is_dir():
            found = sorted(p for p in given.rglob("*") if p.is_file() and _is_media(p))
            if not found:
                skipped.append(Skipped(str(given), "folder holds no picture or video files"))
            pairs = [(path, path.relative_to(given).with_suffix("")) for path in found]
        elif given.is_file():
            pairs = [(given, Path(given.stem))]
        else:
            skipped.append(Skipped(str(given), "no such file or folder"))
            continue
        for path, stem in pairs:
            unique, number = stem, 1
            while unique in taken:
                number += 1
                unique = stem.with_name(f"{stem.name}_{number}")
            taken.add(unique)
            jobs.append(Job(path, unique, path.suffix.lower() in VIDEO_EXTENSIONS))
    return jobs, skipped


def _is_media(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS + VIDEO_EXTENSIONS


class TemporalSmoother:
    """Averages successive maps: ``ema`` (s = alpha * new + (1 - alpha) * s) or ``mean`` (the last ``window``).

    Operates on whatever arrays it is given (inverse depth maps, colour ranges), all of one shape.
    """

    def __init__(self, mode: str, window: int = 5, alpha: float = 0.5) -> None:
        if mode not in SMOOTHING:
            raise ValueError(f"smoothing must be one of {SMOOTHING}, got {mode!r}")
        if window < 1 or not 0.0 < alpha <= 1.0:
            raise ValueError(f"need --smooth_window >= 1 and 0 < --smooth_alpha <= 1 (got {window}, {alpha})")
        self.mode, self.alpha = mode, alpha
        self._recent: deque[np.ndarray] = deque(maxlen=window)
        self._state: np.ndarray | None = None

    def __call__(self, value: np.ndarray) -> np.ndarray:
        value = np.asarray(value, dtype=np.float32)
        if self.mode == "ema":
            self._state = value.copy() if self._state is None else self.alpha * value + (1 - self.alpha) * self._state
            return self._state
        self._recent.append(value)
        return np.mean(np.stack(self._recent), axis=0)


def colour_range(inverse_depth: np.ndarray) -> np.ndarray:
    """(low, high) of the colour scale: the 2nd and 98th percentiles (robust to a few extreme pixels)."""
    return np.percentile(inverse_depth, COLOUR_PERCENTILES).astype(np.float32)


def write_raw(inverse_depth: np.ndarray, path: Path, raw_format: str, source: str) -> None:
    """float32 (H, W) inverse depth -> ``<path>.npy``, or ``<path>.png`` (16-bit code) + ``<path>.json`` (its range)."""
    if raw_format == "npy":
        np.save(path.with_suffix(".npy"), inverse_depth.astype(np.float32))
        return
    try:
        codes, value_range = encode_label_codes(inverse_depth)
    except LabelError:  # a constant map: every pixel gets the first code, the range is that one value
        value = float(inverse_depth.flat[0]) if np.isfinite(inverse_depth).all() else 0.0
        codes, value_range = np.ones(inverse_depth.shape, dtype=np.uint16), (value, value)
    Image.fromarray(codes).save(path.with_suffix(".png"))
    sidecar = {
        "kind": RELATIVE_INVERSE_DEPTH,
        "label_range": list(value_range),
        "code": "0 = invalid; 1..65535 map linearly onto label_range: value = min + (code - 1) / 65534 * (max - min)",
        "size": [int(inverse_depth.shape[1]), int(inverse_depth.shape[0])],
        "resize": "bicubic from the model's output, not clamped",
        "source": source,
    }
    path.with_suffix(".json").write_text(json.dumps(sidecar, indent=2) + "\n")


def depth_picture(values: np.ndarray, kind: str, value_range: tuple[float, float]) -> Image.Image:
    """A prediction (H, W) as its picture: the coloured map at (H, W) with its colour bar to the right, metres on
    the reversed turbo map for a metric model, the model's relative units on turbo otherwise (near = warm)."""
    metric = kind == METRIC_DEPTH
    units = METRES if metric else relative_units("model")
    coloured = colorize_depth(values, value_range=value_range, inverse=not metric, units=units)
    return Image.fromarray(image_grid([[coloured]], cell_height=values.shape[0]))


def _value_sample(values: np.ndarray, count: int = 4096) -> np.ndarray:
    """About ``count`` values spread over the map: each picture weighs the same in a shared scale."""
    flat = values[np.isfinite(values)]
    return flat[:: max(1, flat.size // count)]


def _load(jobs: list[Job], skipped: list[Skipped]) -> list[tuple[Job, np.ndarray]]:
    """The readable pictures of ``jobs``; the others go to ``skipped``."""
    loaded = []
    for job in jobs:
        try:
            loaded.append((job, load_picture(job.path)))
        except Exception as error:  # noqa: BLE001 - any unreadable file is skipped and reported, never fatal
            skipped.append(Skipped(str(job.path), f"unreadable picture: {type(error).__name__}: {error}"))
    return loaded


def _write_raw_and_name(job: Job, prediction: DepthPrediction, out: Path, raw_format: str | None) -> Path:
    """The raw map of one picture written (when asked), and the path its picture goes to."""
    stem = out / job.stem
    stem.parent.mkdir(parents=True, exist_ok=True)
    if raw_format:
        inverse_depth = as_inverse_depth(prediction.values, prediction.kind)  # metres -> 1 / m
        write_raw(inverse_depth, stem.with_name(stem.name + "_inverse_depth"), raw_format, str(job.path))
    return stem.with_name(stem.name + "_depth.png")


def predict_pictures(
    model: DepthModel,
    jobs: list[Job],
    out: Path,
    raw_format: str | None,
    batch_size: int,
    skipped: list[Skipped],
    shared_scale: bool = False,
) -> int:
    """Predict every picture job in batches; returns how many were written. Unreadable ones go to ``skipped``.
    With ``shared_scale`` the maps wait in a temporary folder until every one is known, then are drawn on the
    percentiles of them all."""
    done, waiting, pooled = 0, [], []
    with tempfile.TemporaryDirectory(prefix="predict-") as scratch:
        with tqdm(total=len(jobs), desc="pictures", unit="img", disable=not jobs) as progress:
            for start in range(0, len(jobs), batch_size):
                loaded = _load(jobs[start : start + batch_size], skipped)
                predictions = model.predict([picture for _, picture in loaded], batch_size=batch_size) if loaded else []
                for (job, _), prediction in zip(loaded, predictions):
                    picture_path = _write_raw_and_name(job, prediction, out, raw_format)
                    if shared_scale:  # drawn once every map is known
                        waiting.append((picture_path, Path(scratch) / f"{done}.npy"))
                        np.save(waiting[-1][1], prediction.values)
                        pooled.append(_value_sample(prediction.values))
                    else:
                        value_range = tuple(map(float, colour_range(prediction.values)))
                        depth_picture(prediction.values, prediction.kind, value_range).save(picture_path)
                    done += 1
                progress.update(len(jobs[start : start + batch_size]))
        if waiting:
            value_range = tuple(map(float, colour_range(np.concatenate(pooled))))
            logger.info("one colour scale for %d pictures: %.4g to %.4g", len(waiting), *value_range)
            for picture_path, held in waiting:
                depth_picture(np.load(held), model.kind, value_range).save(picture_path)
    return done


@dataclass
class VideoOptions:
    output: str = "mp4"
    raw_format: str | None = None
    smooth: str | None = None
    window: int = 5
    alpha: float = 0.5
    batch_size: int = 4


def _batches(frames: Iterator[np.ndarray], size: int) -> Iterator[list[np.ndarray]]:
    batch: list[np.ndarray] = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def predict_video(model: DepthModel, job: Job, out: Path, options: VideoOptions) -> int:
    """Predict every frame of one video; returns the number of frames written. Raises if the video cannot be read.

    Smoothing runs on the model-resolution maps in the model's own kind (before resizing back, as a picture's map
    is resized), in frame order; the colour scale is smoothed the same way so that it does not flicker either.
    Frames are drawn as pictures are (metres for a metric model), without a colour bar.
    """
    info = video_info(job.path)
    stem = out / job.stem
    stem.parent.mkdir(parents=True, exist_ok=True)
    depth_smoother = TemporalSmoother(options.smooth, options.window, options.alpha) if options.smooth else None
    range_smoother = TemporalSmoother(options.smooth, options.window, options.alpha) if options.smooth else None
    frames_dir = stem.with_name(stem.name + "_depth")
    raw_dir = stem.with_name(stem.name + "_inverse_depth")
    if options.output == "frames":
        frames_dir.mkdir(parents=True, exist_ok=True)
    if options.raw_format:
        raw_dir.mkdir(parents=True, exist_ok=True)
    writer = VideoWriter(stem.with_name(stem.name + "_depth.mp4"), info.fps) if options.output == "mp4" else None
    count = 0
    try:
        with tqdm(total=info.frames or None, desc=job.path.name, unit="frame") as progress:
            for frames in _batches(read_frames(job.path), options.batch_size):
                size = model.input_size_for(frames[0].shape[1], frames[0].shape[0])  # a teacher: the frame's own
                predictions = model.infer(torch.from_numpy(images_to_batch(frames, *size))).numpy()  # (B, h, w)
                for frame, prediction in zip(frames, predictions):
                    if depth_smoother is not None:
                        prediction = depth_smoother(prediction)
                    values = resize_prediction(
                        prediction, frame.shape[1], frame.shape[0], non_negative=model.kind == METRIC_DEPTH
                    )
                    value_range = colour_range(values)
                    if range_smoother is not None:
                        value_range = range_smoother(value_range)
                    value_range = (float(value_range[0]), float(value_range[1]))
                    colour = colorize_depth(values, value_range=value_range, inverse=model.kind != METRIC_DEPTH)
                    name = f"{count:06d}"
                    if writer is not None:
                        writer.write(colour)
                    else:
                        Image.fromarray(colour).save(frames_dir / f"{name}.png")
                    if options.raw_format:
                        inverse_depth = as_inverse_depth(values, model.kind)  # metres -> 1 / m
                        write_raw(inverse_depth, raw_dir / name, options.raw_format, f"{job.path}#frame={count}")
                    count += 1
                progress.update(len(frames))
    finally:
        if writer is not None:
            writer.close()
    if count == 0:
        raise ValueError("no frame could be decoded")
    return count


# --------------------------------------------------------------------------------------------------------------
# Video files (PyAV)


class VideoSupportMissing(RuntimeError):
    """PyAV is not installed."""


def require_av() -> ModuleType:
    """Import PyAV or say how to install it."""
    try:
        import av
    except ImportError as error:
        raise VideoSupportMissing(
            "video input and output need PyAV: pip install 'depth-distill[video]' (or pip install av)"
        ) from error
    return av


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about its first video stream. ``frames`` is 0 when the container does not know."""

    width: int
    height: int
    fps: float
    frames: int


def video_info(path: str | Path) -> VideoInfo:
    av = require_av()
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError(f"{path} holds no video stream")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.base_rate or Fraction(25)
        return VideoInfo(stream.codec_context.width, stream.codec_context.height, float(rate), int(stream.frames or 0))


def read_frames(path: str | Path) -> Iterator[np.ndarray]:
    """Decode the first video stream frame by frame -> uint8 RGB (H, W, 3)."""
    av = require_av()
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError(f"{path} holds no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            yield frame.to_ndarray(format="rgb24")


class VideoWriter:
    """Encode uint8 RGB frames (H, W, 3) into a video file at a constant frame rate.

    yuv420p (what every player reads) needs even sides: odd frames get one edge row or column repeated.
    """

    def __init__(self, path: str | Path, fps: float, codec: str | None = None, quality_crf: int = 18) -> None:
        self._av = require_av()
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fps = Fraction(fps).limit_denominator(1001) if fps > 0 else Fraction(25)
        self._container = self._av.open(str(self.path), mode="w")
        self._codec = codec or self._first_available_codec()
        self._crf = quality_crf
        self._stream = None
        self.frames_written = 0

    def _first_available_codec(self) -> str:
        for name in OUTPUT_CODECS:
            try:
                self._av.codec.Codec(name, "w")
                return name
            except Exception:  # noqa: BLE001 - PyAV raises several types for a missing encoder
                continue
        raise RuntimeError(f"none of the video encoders {OUTPUT_CODECS} is available in this PyAV build")

    def _open_stream(self, width: int, height: int) -> None:
        self._stream = self._container.add_stream(self._codec, rate=self._fps)
        self._stream.width = width
        self._stream.height = height
        self._stream.pix_fmt = "yuv420p"
        if self._codec in ("libx264", "h264"):
            self._stream.options = {"crf": str(self._crf)}

    def write(self, frame: np.ndarray) -> None:
        frame = _even_sides(np.ascontiguousarray(frame, dtype=np.uint8))
        if self._stream is None:
            self._open_stream(frame.shape[1], frame.shape[0])
        video_frame = self._av.VideoFrame.from_ndarray(frame, format="rgb24")
        for packet in self._stream.encode(video_frame):
            self._container.mux(packet)
        self.frames_written += 1

    def close(self) -> None:
        if self._stream is not None:
            for packet in self._stream.encode():
                self._container.mux(packet)
        self._container.close()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _even_sides(frame: np.ndarray) -> np.ndarray:
    pad_rows = frame.shape[0] % 2
    pad_cols = frame.shape[1] % 2
    if pad_rows or pad_cols:
        frame = np.pad(frame, ((0, pad_rows), (0, pad_cols), (0, 0)), mode="edge")
    return frame


#: ``python -m distill.predict``: its config; bare words are inputs.
COMMAND = Command("python -m distill.predict", PredictConfig, positional="inputs")


def main(argv: list[str] | None = None) -> int:
    """0 when at least one input was processed, 1 when none could be, 2 for a user error or a missing extra."""
    return run_command(_main, argv, COMMAND.prog)


def _main(argv: list[str] | None) -> int:
    config, resolved_yaml = COMMAND.parse(argv)
    if not config.inputs:
        raise UserError("give at least one picture, folder or video to predict (bare words after the keys)")
    if not config.overwrite:
        refuse_filled_folder(config.out, "--out", "pass --overwrite true to write over it")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    width, height = parse_size(config.size) if config.size else (None, None)
    out = Path(config.out)
    jobs, skipped = collect_jobs(config.inputs)
    videos = [job for job in jobs if job.is_video]
    if videos:
        try:
            require_av()
        except VideoSupportMissing as error:
            raise UserError(f"{len(videos)} video input(s) given, but {error}") from error
    input_size = (width, height) if config.size else None
    try:
        model = DepthModel.from_pretrained(
            config.model, device=config.device, input_size=input_size, threads=config.threads, kind=config.kind
        )
    except ValueError as error:  # a size the model cannot take
        raise UserError(str(error)) from error
    save_resolved_config(resolved_yaml, out)
    logger.info("model %s, input %s (W x H); %d input(s)", model.name, model.input_label(), len(jobs))
    pictures = [job for job in jobs if not job.is_video]
    _say_what_does_not_apply(config, pictures, videos)
    processed = predict_pictures(
        model, pictures, out, config.save_raw, config.batch_size, skipped, shared_scale=config.shared_scale
    )
    options = VideoOptions(
        config.video_out, config.save_raw, config.smooth, config.smooth_window, config.smooth_alpha, config.batch_size
    )
    for job in videos:
        try:
            frames = predict_video(model, job, out, options)
            processed += 1
            logger.info("%s: %d frames", job.path, frames)
        except Exception as error:  # noqa: BLE001 - an unreadable video is skipped and reported, never fatal
            skipped.append(Skipped(str(job.path), f"unreadable video: {type(error).__name__}: {error}"))
    return _report(out, processed, skipped)


def _say_what_does_not_apply(config: PredictConfig, pictures: list[Job], videos: list[Job]) -> None:
    """Once per run: options given for one kind of input that the run's other inputs ignore."""
    if config.smooth and pictures:
        logger.warning(
            "--smooth averages the frames of a video: the %d still picture(s) are predicted one by one, unsmoothed",
            len(pictures),
        )
    if config.shared_scale and videos:
        logger.warning(
            "--shared_scale puts the still pictures on one scale: the frames of the %d video(s) keep their own",
            len(videos),
        )


def _report(out: Path, processed: int, skipped: list[Skipped]) -> int:
    skipped_path = out / SKIPPED_LIST
    if skipped:
        skipped_path.write_text("".join(f"{item.path}\t{item.reason}\n" for item in skipped))
        logger.warning("skipped %d input(s) (listed in %s):", len(skipped), skipped_path)
        for item in skipped:
            logger.warning("  %s: %s", item.path, item.reason)
    else:
        skipped_path.unlink(missing_ok=True)
    logger.info("processed %d input(s) -> %s", processed, out)
    if processed == 0:
        print("error: no input could be processed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
