"""Read and write videos with PyAV (the optional ``video`` extra): frames in and out as uint8 RGB (H, W, 3).

torchvision 0.29 has no video API; PyAV's wheels bundle FFmpeg, so nothing else needs installing.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import ModuleType

import numpy as np

#: File name endings read as videos by ``distill.predict``.
VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg")

#: Codecs tried in order for an output video; libx264 ships in PyAV's wheels, mpeg4 is FFmpeg's own.
OUTPUT_CODECS = ("libx264", "h264", "mpeg4")


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
