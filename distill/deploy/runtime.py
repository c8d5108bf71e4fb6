"""Run a depth model for inference behind one interface, and the contract every exported file and runner keeps.

A runner maps float32 (B, 3, H, W) RGB in [0, 1] to float32 (B, H, W): a student from its folder (PyTorch), or an
exported ``.onnx`` (ONNX Runtime), ``.tflite`` (LiteRT) or ``.pte`` (ExecuTorch) file; which one a ``--model`` gets
is decided by :func:`distill.deploy.model.load_runner`. The contract: input sides are multiples of the encoder's
stride (``distill.students.config.check_input_size``), the graph's input is ``image`` and its output
``inverse_depth``, and the output's ``kind`` (``relative_inverse_depth`` or ``metric_depth``) is what the file states
(our exports write it), else what the caller says (:func:`resolve_kind`); a file that says nothing is named by one
sentence (:func:`unknown_kind_message`). Files from elsewhere run too: the ONNX runner reads its input's name,
layout and type from the graph, the LiteRT runner its layout and quantisation.

Export (parity), predict, evaluation and the benchmark workers share the pre- and post-processing, so it is the same
everywhere: RGB uint8 -> resized bicubically to the model's size -> float [0, 1] (B, 3, H, W); the model returns
(B, 1, H, W) relative inverse depth (or metres), resized back bicubically to the picture's size, not clamped.
Normalisation lives inside the model (and so inside the exported graph). PyTorch is imported only where it is used,
so an ONNX Runtime process (a benchmark worker) does not pay for it.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
from PIL import Image, ImageOps

from distill.students.config import STUDENT_SIZE, check_input_size
from shards.format import LABEL_KINDS, RELATIVE_INVERSE_DEPTH
from shards.images import to_rgb

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

#: Names of the exported graph's input and output (the export contract, see docs/deploy.md).
INPUT_NAME = "image"
OUTPUT_NAME = "inverse_depth"
#: What a model's output holds (``shards.format``'s label kinds), as a config option's type.
Kind = Literal["relative_inverse_depth", "metric_depth"]
#: The file format's key for the output's kind, in the ONNX metadata and the ``<file>.json`` record:
#: relative_inverse_depth, or metric_depth (metres, for students trained with ``prediction: depth``; the output keeps
#: its name ``inverse_depth`` so every runtime binds it the same way).
KIND_KEY = "prediction"
#: ONNX Runtime graph optimisation levels by name; ``all`` is about 3x faster than ``basic`` for the student.
ORT_OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")
#: PyTorch precisions of a student run: ``auto`` = bf16 autocast on CUDA, fp32 elsewhere (predict, benchmarks);
#: evaluation runs fp32 unless asked otherwise (docs/evaluation.md).
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: Endings of the exported model files ``distill.deploy.model.load_runner`` (and so every ``--model``) runs.
EXPORTED_SUFFIXES = (".onnx", ".tflite", ".pte")
#: Picture file endings read by export (calibration) and predict.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm")


def resolve_kind(path: str | os.PathLike, stated: str | None, given: str | None) -> str:
    """The kind of an exported file's output: what the file states (our exports do), else what the caller gives
    (``kind``), else relative inverse depth (published depth models mostly are; whoever opens the file says so, or
    refuses: :func:`distill.deploy.exported.open_exported`). The two disagreeing: an error."""
    for value in (stated, given):
        if value is not None and value not in LABEL_KINDS:
            raise ValueError(f"{path}: output kind must be one of {LABEL_KINDS}, got {value!r}")
    if stated and given and stated != given:
        raise ValueError(f"{path} states that it outputs {stated}, but {given} was given; drop the kind option")
    return stated or given or RELATIVE_INVERSE_DEPTH


def unknown_kind_message(path: str | os.PathLike, key: str) -> str:
    """The one sentence for a model file that does not say what it outputs, ``key`` naming the option that says it
    (``--kind``, ``teacher.kind``, ``kind=``): pseudolabel refuses with it (a metric map stored as relative would be
    a wrong label no check catches), evaluate, predict and ``DepthModel`` add the kind they assume."""
    return (
        f"{path} does not say what it outputs (no '{KIND_KEY}' in its metadata or in {Path(path).name}.json): set "
        f"{key} relative_inverse_depth (a relative model, larger = nearer) or metric_depth (metres)"
    )


def recorded_kind(path: Path) -> str | None:
    """The kind our export recorded beside the file (``<file>.json``), if any."""
    record_path = path.with_name(path.name + ".json")
    if record_path.is_file():
        return json.loads(record_path.read_text()).get(KIND_KEY)
    return None


def load_picture(path: str | os.PathLike) -> np.ndarray:
    """A picture file -> uint8 RGB (H, W, 3): EXIF orientation applied, then :mod:`shards.images`'s one 8-bit rule
    (16-bit greyscale divided by 257 and rounded, not clipped; alpha composited onto white; palette, CMYK and
    greyscale converted)."""
    with Image.open(path) as opened:
        opened.load()
        picture = ImageOps.exif_transpose(opened)
    return picture_to_rgb(picture)


def picture_to_rgb(picture: Image.Image) -> np.ndarray:
    """A PIL image -> uint8 RGB (H, W, 3), converted as :func:`load_picture` converts files (no EXIF step: an
    image already in memory is taken as it is)."""
    return np.asarray(to_rgb(picture))


def images_to_batch(images: list[np.ndarray], width: int, height: int) -> np.ndarray:
    """uint8 RGB pictures (H_i, W_i, 3), any sizes -> float32 (B, 3, height, width) in [0, 1], resized bicubically
    (PIL, antialiased when shrinking; the aspect ratio is not kept: the prediction is resized back)."""
    batch = np.empty((len(images), 3, height, width), dtype=np.float32)
    for index, image in enumerate(images):
        if image.shape[:2] != (height, width):
            image = np.asarray(Image.fromarray(image).resize((width, height), Image.BICUBIC))
        batch[index] = image.transpose(2, 0, 1).astype(np.float32) / 255.0
    return batch


def resize_prediction(
    inverse_depth: np.ndarray, width: int, height: int, non_negative: bool = False
) -> np.ndarray:
    """float32 (h, w) prediction -> (height, width), bicubic (antialiased when shrinking), not clamped: a relative
    prediction's offset is free, so values below 0 are signal. ``non_negative`` (a map non-negative by definition,
    such as 1 / metres of a depth student) clamps bicubic's overshoot below 0."""
    if inverse_depth.shape == (height, width):
        return inverse_depth.astype(np.float32, copy=False)
    import torch
    from torch.nn import functional as F

    source = torch.from_numpy(np.ascontiguousarray(inverse_depth, dtype=np.float32))[None, None]
    shrinking = height < inverse_depth.shape[0] or width < inverse_depth.shape[1]
    resized = F.interpolate(source, size=(height, width), mode="bicubic", align_corners=False, antialias=shrinking)
    return (resized[0, 0].clamp_(min=0.0) if non_negative else resized[0, 0]).numpy()


class DepthRunner(Protocol):
    """Anything that maps a float32 batch (B, 3, H, W) in [0, 1] to float32 (B, H, W) inverse depth, or metres
    where ``kind`` is ``metric_depth``."""

    width: int
    height: int
    name: str
    kind: str

    def __call__(self, batch: np.ndarray) -> np.ndarray: ...


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of a run in ``precision`` on ``device``; None: plain fp32, no autocast."""
    import torch

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def pick_device(device: str = "auto") -> torch.device:
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class TorchRunner:
    """A student from its folder, in eval mode; channels_last on CPU (faster there: BENCHMARKS.md, student latency);
    under autocast in ``precision`` (:func:`autocast_dtype`), the output always float32."""

    def __init__(
        self, folder: str | os.PathLike, width: int | None = None, height: int | None = None, device: str = "auto",
        precision: str = "auto",
    ) -> None:
        import torch

        from distill.students import load_student

        self.device = pick_device(device)
        self.precision = precision
        self.autocast_dtype = autocast_dtype(precision, self.device)
        from distill.students import student_output_kind

        model, self.config = load_student(folder, device=self.device)
        self.kind = student_output_kind(self.config)  # relative_inverse_depth, or metric_depth (metres)
        self.model = model.to(memory_format=torch.channels_last)
        self.width, self.height = width or STUDENT_SIZE[0], height or STUDENT_SIZE[1]
        check_input_size(self.width, self.height)
        self.name = f"torch:{Path(folder).name}"

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self._predict(torch.from_numpy(batch))

    def _predict(self, batch: torch.Tensor) -> np.ndarray:
        import torch

        images = batch.to(self.device).contiguous(memory_format=torch.channels_last)
        if self.autocast_dtype is not None:
            with torch.autocast(self.device.type, dtype=self.autocast_dtype):
                output = self.model(images)
        else:
            output = self.model(images)
        return output[:, 0].float().cpu().numpy()  # (B, H, W)


def onnx_session(
    path: str | os.PathLike | bytes,
    threads: int | None = None,
    optimization: str = "all",
    providers: list[str] | None = None,
    spinning: bool = True,
) -> Any:
    """An ONNX Runtime session with the full graph optimisation (``ORT_ENABLE_ALL``) by default.

    ``spinning=False`` stops idle worker threads from busy-waiting: slower per call, but polite in a process that
    also runs PyTorch (parity checks, evaluation); timing runs keep the default."""
    try:
        import onnxruntime as ort
    except ImportError as error:
        raise ImportError("running a .onnx needs ONNX Runtime: pip install 'depth-distill[onnx]'") from error
    levels = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    if optimization not in levels:
        raise ValueError(f"ONNX Runtime optimisation must be one of {ORT_OPTIMIZATION_LEVELS}, got {optimization!r}")
    options = ort.SessionOptions()
    options.graph_optimization_level = levels[optimization]
    options.log_severity_level = 3  # warnings about unused initialisers etc. are noise for users
    if threads:
        options.intra_op_num_threads = threads
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    if providers is None:
        available = ort.get_available_providers()
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    model = path if isinstance(path, bytes) else str(path)  # a file, or a serialised graph
    return ort.InferenceSession(model, sess_options=options, providers=providers)


#: ONNX tensor element types a runner feeds and reads: float pictures in [0, 1], or raw 8-bit pixels.
_ONNX_TYPES = {"tensor(float)": np.float32, "tensor(uint8)": np.uint8}


@dataclass
class OnnxRunner:
    """An exported depth model run by ONNX Runtime. Everything is read from the graph: its one input (our export
    names it ``image``; any name is taken), the layout (N, 3, H, W) or (N, H, W, 3), the element type (float RGB in
    [0, 1], or raw uint8 pixels), the size (``dynamic`` when H and W are free: then ``width`` / ``height``, default
    256x192, are the size it is run at), and the output (``inverse_depth`` in our export, else the one output).
    Idle threads do not spin: the runner shares its process with PyTorch work (resizing, metrics), and spinning pools
    fight over the cores."""

    path: Path
    width: int
    height: int
    name: str
    session: Any
    kind: str = RELATIVE_INVERSE_DEPTH  # from the graph's "prediction" metadata (our export writes it)
    stated_kind: str | None = None  # what the file itself says it outputs (None: it does not say)
    dynamic: bool = False  # H and W are free in the graph
    input_name: str = INPUT_NAME
    output_name: str = OUTPUT_NAME
    channels_last: bool = False
    input_type: Any = np.float32

    @classmethod
    def open(
        cls,
        path: str | os.PathLike,
        width: int | None = None,
        height: int | None = None,
        threads: int | None = None,
        kind: str | None = None,
    ) -> OnnxRunner:
        session = onnx_session(path, threads=threads, spinning=False)
        inputs, outputs = session.get_inputs(), session.get_outputs()
        if len(inputs) != 1:
            raise ValueError(f"{path}: a depth model has one input (a picture batch), found {[i.name for i in inputs]}")
        shape, element = inputs[0].shape, inputs[0].type
        if len(shape) != 4 or 3 not in (shape[1], shape[3]) or element not in _ONNX_TYPES:
            raise ValueError(
                f"{path}: input {inputs[0].name} {element} {shape} is not an RGB picture batch (N, 3, H, W) or "
                f"(N, H, W, 3) of float or uint8"
            )
        channels_last = shape[3] == 3 and shape[1] != 3
        graph_height, graph_width = (shape[1], shape[2]) if channels_last else (shape[2], shape[3])
        graph_width = graph_width if isinstance(graph_width, int) else None
        graph_height = graph_height if isinstance(graph_height, int) else None
        if (width and graph_width and width != graph_width) or (height and graph_height and height != graph_height):
            raise ValueError(
                f"{path} was exported for {graph_width}x{graph_height} (W x H); export again with "
                f"--size {width or graph_width}x{height or graph_height} to run at that size"
            )
        dynamic = graph_width is None or graph_height is None
        final_width = graph_width or width or STUDENT_SIZE[0]
        final_height = graph_height or height or STUDENT_SIZE[1]
        if dynamic:  # a size we choose keeps the students' contract; a fixed graph's size is the file's own
            check_input_size(final_width, final_height)
        names = [output.name for output in outputs]
        output_name = OUTPUT_NAME if OUTPUT_NAME in names else names[0]
        stated = session.get_modelmeta().custom_metadata_map.get(KIND_KEY) or recorded_kind(Path(path))
        return cls(
            Path(path), final_width, final_height, f"onnx:{Path(path).name}", session,
            resolve_kind(path, stated, kind), stated, dynamic, inputs[0].name, output_name, channels_last,
            _ONNX_TYPES[element],
        )

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """float32 (B, 3, H, W) in [0, 1] -> float32 (B, h, w); raw pixels for an 8-bit input (x * 255, rounded)."""
        values = np.asarray(batch, dtype=np.float32)
        if self.channels_last:
            values = values.transpose(0, 2, 3, 1)
        if self.input_type == np.uint8:
            values = np.clip(np.rint(values * 255.0), 0, 255)
        (output,) = self.session.run(
            [self.output_name], {self.input_name: np.ascontiguousarray(values, dtype=self.input_type)}
        )
        return single_maps(np.asarray(output, dtype=np.float32), self.path)


def single_maps(output: np.ndarray, path: str | os.PathLike) -> np.ndarray:
    """A runtime's output for a batch of B pictures, (B, 1, h, w), (B, h, w) or (B, h, w, 1) -> (B, h, w); the map
    may be smaller than the input (it is resized later)."""
    if output.ndim == 4 and output.shape[1] == 1:
        return output[:, 0]
    if output.ndim == 4 and output.shape[3] == 1:
        return output[..., 0]
    if output.ndim == 3:
        return output
    raise ValueError(f"{path}: output of shape {output.shape} is not one depth map per picture")
