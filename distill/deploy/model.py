"""The Python API and the one model loader: :class:`DepthModel` for every model the tools run, the picture forms
it accepts, and the one inference path they share.

    from distill import DepthModel
    model = DepthModel.from_pretrained("runs/x/student")  # or model.onnx / .tflite / .pte, a hub id, a teacher
    prediction = model.predict("room.jpg")  # DepthPrediction, float32 (H, W) maps at the picture's size:
    prediction.inverse_depth  # larger = nearer, any model; prediction.metres: a metric model's (.kind says which)

``from_pretrained`` is the loader of every command (predict, evaluate, compare, export, benchmark). It recognises
the model by content (:func:`detect_source`, docs/deploy.md): an exported file by its ending and a student folder by
the ``architecture`` field of its ``config.json`` (both run by the runner :func:`load_runner` picks), a hub id by the
``config.json`` it holds (a student repository is downloaded whole; any other is a transformers depth model), a
transformers depth model folder or hub id as a teacher, built by ``pseudolabel.teachers`` so that a teacher is
scored by the code that labels (the one module of ``distill`` that imports ``pseudolabel``, and only lazily), and
``constant``, the baseline every depth model must beat. ``predict`` (the user's call), ``evaluate``, ``compare`` and
the predict command all go through :meth:`DepthModel.infer`.

``predict`` takes a picture file path, a PIL image, a uint8 (H, W, 3) RGB array (or (H, W) greyscale), a float
tensor (3, H, W) or (N, 3, H, W) RGB in [0, 1], or a list of them. Each becomes an :class:`InputImage` that
remembers its own size, so that every prediction is resized back to the size it came in at.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

from distill.deploy.exported import open_exported
from distill.deploy.runtime import (
    EXPORTED_SUFFIXES,
    PRECISIONS,
    DepthRunner,
    TorchRunner,
    images_to_batch,
    load_picture,
    pick_device,
    picture_to_rgb,
    resize_prediction,
    resolve_kind,
)
from distill.students import is_student_folder
from distill.students.config import STUDENT_SIZE
from shards.cli.config import looks_like_path
from shards.cli.errors import UserError, hub_unreachable, one_line, read_hub_cache_only
from shards.format import LABEL_KINDS, METRIC_DEPTH, RELATIVE_INVERSE_DEPTH, as_inverse_depth
from shards.tools.pictures import colorize_depth

#: What ``predict`` takes; a list of these gives a list of predictions.
ImageLike = Union[str, os.PathLike, Image.Image, np.ndarray, torch.Tensor]

ACCEPTED_INPUTS = (
    "a picture file path, a PIL image, a uint8 (H, W, 3) RGB array, a float tensor (3, H, W) or (N, 3, H, W) RGB "
    "in [0, 1], or a list of them"
)


@dataclass
class InputImage:
    """One input: ``pixels`` uint8 (H, W, 3) RGB, or ``tensor`` float (3, H, W) in [0, 1] (exactly one is set)."""

    pixels: np.ndarray | None = None
    tensor: torch.Tensor | None = None

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the input: the size its prediction is returned at."""
        if self.pixels is not None:
            return int(self.pixels.shape[0]), int(self.pixels.shape[1])
        return int(self.tensor.shape[1]), int(self.tensor.shape[2])


def as_inputs(image: Any) -> tuple[list[InputImage], bool]:
    """The inputs of one ``predict`` call, and whether the caller gets a list back (a list or an (N, 3, H, W)
    tensor) rather than one prediction."""
    if isinstance(image, (list, tuple)):
        if not image:
            raise ValueError("predict got an empty list")
        items = [_one(item) for item in image]
        return [single for group in items for single in group], True
    if isinstance(image, torch.Tensor) and image.dim() == 4:
        return _one(image), True
    return _one(image), False


class PictureNotFoundError(FileNotFoundError):
    """A path given to ``predict`` that names no file; the message says what ``predict`` takes."""


class NotAPictureError(ValueError):
    """An input ``predict`` cannot read as a picture: a URL, a folder, a file that is no picture."""


def _one(image: Any) -> list[InputImage]:
    if isinstance(image, (str, os.PathLike)):
        return [InputImage(pixels=_picture_file(image))]
    if isinstance(image, Image.Image):
        return [InputImage(pixels=picture_to_rgb(image))]
    if isinstance(image, np.ndarray):
        return [InputImage(pixels=_rgb_array(image))]
    if isinstance(image, torch.Tensor):
        return [InputImage(tensor=single) for single in _float_tensor(image)]
    raise TypeError(f"predict takes {ACCEPTED_INPUTS}; got {type(image).__name__}")


def _picture_file(image: str | os.PathLike) -> np.ndarray:
    """A local picture file as uint8 RGB; a URL, a folder, a missing path or a file PIL cannot read is one error
    naming the input and what ``predict`` takes (not PIL's or the file system's own)."""
    text = str(image)
    if text.startswith(("http://", "https://")):
        raise NotAPictureError(
            f"predict reads local picture files, not URLs ({text}): download the picture first; predict takes "
            f"{ACCEPTED_INPUTS}"
        )
    path = Path(text).expanduser()
    if path.is_dir():
        raise NotAPictureError(f"{text} is a folder: predict takes one picture file per path ({ACCEPTED_INPUTS})")
    if not path.exists():
        raise PictureNotFoundError(f"{text}: no such picture file; predict takes {ACCEPTED_INPUTS}")
    try:
        return load_picture(path)
    except (OSError, ValueError) as error:  # PIL's UnidentifiedImageError, a truncated file, ...
        raise NotAPictureError(
            f"{text} is not a picture this can read ({one_line(error)}); predict takes {ACCEPTED_INPUTS}"
        ) from error


def _rgb_array(array: np.ndarray) -> np.ndarray:
    if array.dtype != np.uint8:
        raise TypeError(
            f"an image array must be uint8 RGB (H, W, 3), got {array.dtype} {array.shape}; for floats in [0, 1] "
            "pass a torch tensor (3, H, W)"
        )
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"an image array must be (H, W, 3) RGB or (H, W) greyscale, got shape {array.shape}")
    return np.ascontiguousarray(array)


def _float_tensor(tensor: torch.Tensor) -> list[torch.Tensor]:
    if not tensor.is_floating_point():
        raise TypeError(f"an image tensor must be float RGB in [0, 1], got {tensor.dtype}")
    batch = tensor[None] if tensor.dim() == 3 else tensor
    if batch.dim() != 4 or batch.shape[1] != 3:
        raise ValueError(f"an image tensor must be (3, H, W) or (N, 3, H, W) RGB, got shape {tuple(tensor.shape)}")
    return list(batch.detach().float().cpu())


def to_model_batch(inputs: list[InputImage], width: int, height: int) -> torch.Tensor:
    """float32 (B, 3, height, width) in [0, 1]: pictures resized as ``images_to_batch`` does (PIL bicubic, the
    export's parity and the predict command's path), float tensors by torch's bicubic (antialiased when shrinking)."""
    batch = torch.empty(len(inputs), 3, height, width, dtype=torch.float32)
    for index, item in enumerate(inputs):
        if item.pixels is not None:
            batch[index] = torch.from_numpy(images_to_batch([item.pixels], width, height)[0])
        elif tuple(item.tensor.shape[1:]) == (height, width):
            batch[index] = item.tensor.clamp(0.0, 1.0)
        else:
            shrinking = height < item.tensor.shape[1] or width < item.tensor.shape[2]
            resized = F.interpolate(
                item.tensor[None], size=(height, width), mode="bicubic", align_corners=False, antialias=shrinking
            )
            batch[index] = resized[0].clamp(0.0, 1.0)
    return batch


#: ``--model constant``: the baseline every depth model must beat. Its inverse depth is 1 everywhere, so after the
#: protocol's per-image alignment it becomes the best single depth for each image.
CONSTANT_MODEL = "constant"
ACCEPTED_MODELS = (
    "a student folder (config.json with our 'architecture' field + model.safetensors) or its hub id, "
    "an exported .onnx file (or .tflite, .pte), "
    "a transformers depth model (a folder whose config.json has a teacher family's model_type, or a hub id "
    f"such as Intel/dpt-hybrid-midas), or '{CONSTANT_MODEL}' (the baseline that predicts one value everywhere)"
)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class NotMetricError(ValueError):
    """``DepthPrediction.metres`` of a relative model's map: it has no metres (its scale and shift are unknown)."""


@dataclass
class DepthPrediction:
    """One depth map at the input's size, float32 (H, W). ``values`` is the model's output as it is; ``kind`` says
    what that is:

    - ``relative_inverse_depth`` (relative teachers such as MiDaS / DPT, the students distilled from them, and
      ``constant``): unitless inverse depth, larger = nearer, known up to a scale and a shift (some ``a * values + b``
      is 1 / metres; a value at or below 0 is still signal). :attr:`inverse_depth` is ``values``; :attr:`metres`
      raises :class:`NotMetricError`.
    - ``metric_depth`` (metric teachers such as ZoeDepth, a student with ``prediction: depth``): metres.
      :attr:`metres` is ``values``; :attr:`inverse_depth` is 1 / metres.
    """

    values: np.ndarray  # (H, W) float32: relative inverse depth or metres, per ``kind``
    kind: str

    def __post_init__(self) -> None:
        if self.kind not in LABEL_KINDS:
            raise ValueError(f"kind must be {RELATIVE_INVERSE_DEPTH} or {METRIC_DEPTH}, got {self.kind!r}")

    @property
    def is_metric(self) -> bool:
        """True when ``values`` are metres."""
        return self.kind == METRIC_DEPTH

    @property
    def metres(self) -> np.ndarray:
        """Depth in metres, float32 (H, W): ``values`` of a metric model. A relative model's map has no metres:
        :class:`NotMetricError` (a ``ValueError``) says so and what to use instead."""
        if not self.is_metric:
            raise NotMetricError(
                f"this prediction is {self.kind} (larger = nearer, unknown scale and shift), not metres: use "
                ".inverse_depth, fit a scale and shift to depths you know, or load a metric model (a metric "
                "teacher such as Intel/zoedepth-nyu, or a student with prediction: depth)"
            )
        return self.values

    @property
    def inverse_depth(self) -> np.ndarray:
        """Inverse depth, float32 (H, W), larger = nearer, for either kind: ``values`` of a relative model, 1 / metres
        of a metric one (depths at or below 1 mm count as 1 mm: ``shards.format.inverse_depth``)."""
        return as_inverse_depth(self.values, self.kind).astype(np.float32, copy=False)

    def image(self, value_range: tuple[float, float] | None = None) -> Image.Image:
        """The map on the turbo scale (near = warm for either kind), 2nd-98th percentiles unless ``value_range``."""
        coloured = colorize_depth(self.values, value_range=value_range, inverse=self.kind != METRIC_DEPTH)
        return Image.fromarray(np.asarray(coloured))


def detect_source(model: str | os.PathLike, revision: str | None = None) -> tuple[str, str]:
    """(type, location): "onnx" / "tflite" / "pte" (a file), "student" (a folder, downloaded when given a hub id),
    "teacher" (a folder or hub id) or "constant", from the model's content (docs/evaluation.md, "The model");
    anything else is a user error naming the accepted forms."""
    model = str(model)
    if model == CONSTANT_MODEL:
        return CONSTANT_MODEL, CONSTANT_MODEL
    path = Path(model)
    suffix = path.suffix.lower()
    if suffix in EXPORTED_SUFFIXES:
        if not path.is_file():
            raise UserError(f"--model {model}: no such {suffix.lstrip('.').upper()} file")
        return suffix.lstrip("."), model
    if path.is_dir():
        config_path = path / "config.json"
        try:
            record = json.loads(config_path.read_text()) if config_path.is_file() else {}
        except (ValueError, UnicodeDecodeError) as error:
            raise UserError(f"--model {model}: {config_path} is not JSON ({error})") from error
        if "architecture" in record:
            return "student", model
        architectures = record.get("architectures") or []
        from pseudolabel.teachers import TEACHER_FAMILIES  # the one table of teacher families, read lazily (Layout)

        if record.get("model_type") in TEACHER_FAMILIES or any("DepthEstimation" in a for a in architectures):
            return "teacher", model  # the teacher loader refuses a depth family it does not run, by name
        families = ", ".join(TEACHER_FAMILIES)
        raise UserError(
            f"--model {model} is a folder but not a model this command knows (a teacher's model_type is one of "
            f"{families}); accepted: {ACCEPTED_MODELS}"
        )
    if not path.exists() and looks_like_path(model):
        raise UserError(f"--model {model}: no such student folder or model file; accepted: {ACCEPTED_MODELS}")
    if not path.exists() and _HUB_ID.match(model):
        return _hub_source(model, revision)
    raise UserError(f"--model {model} is not a model this command knows; accepted: {ACCEPTED_MODELS}")


def _hub_source(repo_id: str, revision: str | None) -> tuple[str, str]:
    """A hub repository holding a student (our ``architecture`` field) is downloaded whole; anything else, or a
    repository that cannot be reached, goes to the teacher loader, whose errors say what to download."""
    from huggingface_hub import hf_hub_download, snapshot_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError

    _check_hub_or_cache(repo_id, revision)
    try:
        config_path = hf_hub_download(repo_id, "config.json", revision=revision)
    except (EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError, OSError):
        return "teacher", repo_id
    if "architecture" in json.loads(Path(config_path).read_text()):
        return "student", snapshot_download(repo_id, revision=revision)
    return "teacher", repo_id


def _check_hub_or_cache(repo_id: str, revision: str | None) -> None:
    """One quick check before a library reaches the hub for ``repo_id`` (which retries for a minute): when the hub
    does not answer, an id in the local cache is read from there (the process goes offline), any other is a user
    error naming both readings of the name."""
    from huggingface_hub import try_to_load_from_cache

    unreachable = hub_unreachable()
    if unreachable is None:
        return
    if not isinstance(try_to_load_from_cache(repo_id, "config.json", revision=revision), str):
        raise UserError(
            f"--model {repo_id} is neither a local path (no such folder) nor reachable on the Hugging Face hub "
            f"({unreachable}), and it is not in the local cache: give the folder or file of the model (a path "
            f"starting with ./ if it is one), or run where the hub is reachable; accepted: {ACCEPTED_MODELS}"
        )
    read_hub_cache_only()


class DepthModel:
    """A depth model behind one call. ``infer``: float (B, 3, height, width) RGB in [0, 1] -> float32 (B, h, w)
    tensor (relative inverse depth, or metres per ``kind``); ``predict``: any picture form at any size ->
    :class:`DepthPrediction` at that size. ``width`` and ``height`` are None for a teacher, which takes each picture
    at its own size and resizes it, and its map back, as its authors do (:attr:`native_size`)."""

    def __init__(
        self,
        name: str,
        source: str,
        kind: str,
        width: int | None,
        height: int | None,
        forward: Callable[[torch.Tensor], torch.Tensor],
        location: str | None = None,
        runner: Any = None,
        precision: str = "fp32",
    ) -> None:
        if kind not in LABEL_KINDS:
            raise ValueError(f"kind must be {RELATIVE_INVERSE_DEPTH} or {METRIC_DEPTH}, got {kind!r}")
        self.name, self.source, self.kind = name, source, kind
        self.width, self.height = width, height
        self.location = location  # the folder or file it was loaded from
        self.runner = runner  # the runtime's runner (a student's TorchRunner holds the module and its config)
        self.precision = precision  # what the network runs in: fp32, auto, bf16 / fp16 autocast, or "as exported"
        self._forward = forward

    @classmethod
    def from_pretrained(
        cls,
        model: str | os.PathLike,
        *,
        device: str = "auto",
        input_size: tuple[int, int] | None = None,
        threads: int | None = None,
        kind: str | None = None,
        revision: str | None = None,
        precision: str = "auto",
    ) -> DepthModel:
        """Load ``model`` (see the module's docstring for the forms). ``input_size`` (W, H) sets a student folder's
        input size (default 256x192; exported files carry theirs); ``kind`` states the output of an exported file
        that does not say (``relative_inverse_depth`` is assumed otherwise, and a warning says so); ``threads`` caps
        CPU threads; ``precision`` (PyTorch models only): ``auto`` (bf16 autocast on CUDA, fp32 elsewhere), ``fp32``,
        ``bf16`` or ``fp16`` autocast (a teacher's head stays fp32); an exported file runs as exported."""
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        source, location = detect_source(model, revision)
        if source == CONSTANT_MODEL:
            return _constant_model(input_size)
        if source == "teacher":
            if input_size is not None:
                raise UserError(
                    "--size applies to students and constant; a teacher takes each picture at its own size and "
                    "runs at its family's own network size (docs/evaluation.md)"
                )
            return _teacher_model(location, device, revision, precision)
        if source != "student" and precision not in ("auto", "fp32"):
            raise UserError(f"--precision {precision} applies to PyTorch models; an exported file runs as exported")
        width, height = input_size or (None, None)
        try:
            runner = load_runner(
                location, width=width, height=height, device=device, threads=threads, kind=kind, precision=precision
            )
        except ImportError as error:  # the runtime of an exported file is an extra; its message names the install
            raise UserError(f"--model {model}: {error}") from error
        run_precision = precision if source == "student" else "as exported"
        return _runner_model(runner, source, location, run_precision)

    def infer(self, images: torch.Tensor) -> torch.Tensor:
        """float (B, 3, height, width) RGB in [0, 1] at the model's size (a teacher: any size) -> float32
        (B, height', width') tensor on the CPU (a teacher: at the input's size). Every caller (predict, evaluate,
        compare, the predict command) runs the model through here."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"infer takes (B, 3, H, W) RGB, got {tuple(images.shape)}")
        with torch.inference_mode():
            return self._forward(images).float().cpu()

    def predict(self, image: ImageLike | list[ImageLike], batch_size: int = 8) -> DepthPrediction | list:
        """Depth for one input or a list (or an (N, 3, H, W) tensor), each returned at its own size; inputs of any
        sizes are batched ``batch_size`` at a time."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        inputs, many = as_inputs(image)
        predictions: list[DepthPrediction | None] = [None] * len(inputs)
        for start in range(0, len(inputs), batch_size):
            for positions in self._same_input_size(inputs, range(start, min(start + batch_size, len(inputs)))):
                chunk = [inputs[position] for position in positions]
                height, width = chunk[0].size
                maps = self.infer(to_model_batch(chunk, *self.input_size_for(width, height))).numpy()  # (B, h, w)
                for position, item, values in zip(positions, chunk, maps):
                    height, width = item.size
                    resized = resize_prediction(values, width, height, non_negative=self.kind == METRIC_DEPTH)
                    predictions[position] = DepthPrediction(resized, self.kind)
        return predictions if many else predictions[0]

    @property
    def native_size(self) -> bool:
        """True for a teacher: it takes each picture at its own size and resizes it as its authors do."""
        return self.width is None

    def input_size_for(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) a picture of ``width`` x ``height`` is given to :meth:`infer` at: the model's size, or the
        picture's own for a teacher."""
        return (width, height) if self.native_size else (self.width, self.height)

    def input_label(self) -> str:
        """The input size as the tables print it: ``256x192``, or what a teacher runs at."""
        if not self.native_size:
            return f"{self.width}x{self.height}"
        info = self.runner.info()  # a teacher: its size rule (pseudolabel.teachers.RECIPES, or its processor's)
        size = f" {info['size']}" if info["size"] else ""  # 0: the picture's own size, floored to the multiple
        return f"own ({info['size_fit']}{size}, /{info['size_multiple']})"

    def _same_input_size(self, inputs: list[InputImage], positions: range) -> list[list[int]]:
        """``positions`` in batches that share an input size: one batch for a fixed-size model, by picture size for
        a teacher."""
        if not self.native_size:
            return [list(positions)]
        groups: dict[tuple[int, int], list[int]] = {}
        for position in positions:
            groups.setdefault(inputs[position].size, []).append(position)
        return list(groups.values())

    def describe(self) -> dict[str, Any]:
        """The model as reports record it; a teacher's input size is null and ``teacher`` says what runs."""
        record = {"model": self.name, "type": self.source, "kind": self.kind,
                  "input_size": None if self.native_size else [self.width, self.height]}
        if self.source == "teacher":
            record["teacher"] = self.runner.info()
        return record

    def save_pretrained(self, folder: str | os.PathLike, **card: Any) -> Path:
        """Write a student as a hub-ready folder: ``config.json``, ``model.safetensors`` and a model card
        ``README.md``; ``card`` takes :class:`distill.deploy.hub.CardFacts`' fields (teacher, data, ...)."""
        from distill.deploy.hub import save_pretrained

        return save_pretrained(self, folder, **card)

    def push_to_hub(self, repo_id: str, **options: Any) -> str:
        """Save (as :meth:`save_pretrained`) and upload to the hub repository ``repo_id``; returns the commit URL.
        ``options``: ``private``, ``token``, ``commit_message``, ``revision`` and the model card's facts."""
        from distill.deploy.hub import push_to_hub

        return push_to_hub(self, repo_id, **options)

    def __repr__(self) -> str:
        return f"DepthModel({self.name!r}, {self.kind}, {self.input_label()})"


def _teacher_model(model: str, device: str, revision: str | None, precision: str) -> DepthModel:
    # The one crossing into pseudolabel (docs/decisions.md, "Layout"), lazily and here only: a teacher is measured by
    # the code that labels.
    from pseudolabel.teachers import TeacherModelError, load_teacher

    try:  # ``precision`` is the backbone's; a teacher's head always runs in fp32
        teacher = load_teacher(model, device=pick_device(device), revision=revision, precision=precision)
    except TeacherModelError as error:
        error.key = "--model"  # the commands' name for the model (the pseudolabel stage says teacher.model)
        raise
    kind = METRIC_DEPTH if teacher.kind == METRIC_DEPTH else RELATIVE_INVERSE_DEPTH

    def forward(images: torch.Tensor) -> torch.Tensor:
        # The picture at its own size, as the 8-bit pixels it was read as (a picture's x / 255 back to x, exactly);
        # the teacher resizes it to its network size and its map back to this size, once, as its authors do.
        pixels = (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1)  # (B, H, W, 3)
        return torch.as_tensor(teacher(pixels), dtype=torch.float32)

    # no fixed size (docs/evaluation.md, "A teacher's row"): each picture goes in whole
    return DepthModel(f"teacher:{model}", "teacher", kind, None, None, forward, model, teacher, precision)


def load_runner(
    model: str | os.PathLike,
    width: int | None = None,
    height: int | None = None,
    device: str = "auto",
    threads: int | None = None,
    precision: str = "auto",
    kind: str | None = None,
) -> DepthRunner:
    """A student folder (``config.json`` + ``model.safetensors``) or an exported file (``EXPORTED_SUFFIXES``, opened by
    :func:`distill.deploy.exported.open_exported`) -> a runner. ``precision`` applies to a student folder (an exported
    file runs as exported); ``kind`` states the output of a file that does not say what it outputs (without it
    ``relative_inverse_depth`` is assumed, and a warning says so); anything else is a user error naming ``--model``."""
    path = Path(model)
    if path.is_file() and path.suffix.lower() in EXPORTED_SUFFIXES:  # says which kind it assumed, where it must
        return open_exported(path, width=width, height=height, threads=threads, kind=kind)
    if path.is_dir() and is_student_folder(path):
        if threads:
            torch.set_num_threads(threads)
        runner = TorchRunner(path, width=width, height=height, device=device, precision=precision)
        resolve_kind(path, runner.kind, kind)  # a student says what it outputs; a contradicting kind is an error
        return runner
    what = "no such file or folder" if not path.exists() else "neither an exported file nor a student folder"
    raise UserError(
        f"--model {model}: {what}; give an exported .onnx / .tflite / .pte file or a student folder (config.json "
        "with our 'architecture' marker + model.safetensors, as written by training or distill.students.save_student)"
    )


def _runner_model(runner: Any, source: str, location: str, precision: str) -> DepthModel:
    """A student folder or an exported file, run by its runtime's runner (numpy in and out)."""

    def forward(images: torch.Tensor) -> torch.Tensor:
        output = runner(images.float().cpu().numpy())  # (B, H, W)
        return torch.from_numpy(np.asarray(output, dtype=np.float32))

    size = (runner.width, runner.height)
    return DepthModel(runner.name, source, runner.kind, *size, forward, location, runner, precision)


def _constant_model(input_size: tuple[int, int] | None) -> DepthModel:
    """``constant``: inverse depth 1 everywhere, at ``input_size`` (default the students' 256x192)."""

    def forward(images: torch.Tensor) -> torch.Tensor:
        return torch.ones(images.shape[0], images.shape[2], images.shape[3], dtype=torch.float32)

    width, height = input_size or STUDENT_SIZE
    return DepthModel(CONSTANT_MODEL, CONSTANT_MODEL, RELATIVE_INVERSE_DEPTH, width, height, forward)
