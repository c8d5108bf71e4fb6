"""Teachers: a depth model that turns uint8 RGB crops into float relative inverse depth (or metric depth).

``load_teacher(model)`` takes a built-in name (``identity``, for timing the pipeline without a network), a hub id
(``Intel/dpt-hybrid-midas``, ``Intel/dpt-large``, ``depth-anything/Depth-Anything-V2-Small-hf``), a local folder
holding a transformers depth model (``config.json`` + weights), or an exported depth file (``.onnx``, ``.tflite``,
``.pte``: :class:`FileTeacher`, run by the runners ``DepthModel`` uses). Every teacher has the same call:
``teacher(images)`` with uint8 (B, H, W, 3) -> float32 (B, H, W) on the CPU, at the input size.

Inside, each family runs as its authors run it (:data:`RECIPES`, one named reference each), at native aspect: DPT as
transformers' ``DPTImageProcessor`` (size 384 scaled as little as possible, sides rounded to 32, bicubic; a 384x512
crop stays 384x512, through :func:`dpt_depth`, a DPT forward that knows its patch grid) with its bicubic output
resize; Depth Anything as Depth-Anything-V2's ``infer_image`` (both sides at least 518, rounded to 14, OpenCV cubic:
a 384x512 crop runs at 518x686) with its bilinear ``align_corners=True`` output resize. A relative map is never
clamped (its offset is free). ``short_side`` overrides the size only. Normalisation (mean, std) comes from the
model's image-processor config and is applied in torch on the batch. ZoeDepth, Depth Pro and GLPN (metric depth in
metres) run as their own transformers image processor and its ``post_process_depth_estimation`` do
(:class:`ProcessorTeacher`, its steps in :mod:`pseudolabel.families`, which holds the table of accepted families).

One idea, the teacher, though over 600 lines: what a teacher is, how each family (and an exported file) runs, and
how one is loaded and refused belong together (the metric families' steps and the table live in ``families``,
which imports nothing here).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from pseudolabel.families import (
    PROCESSOR_FAMILIES,
    TEACHER_FAMILIES,
    ProcessorSteps,
    depth_pro_inverse_depth,
    family_refusal,
    processor_steps,
    steps_settings,
)
from shards.cli.errors import UserError, hub_unreachable, read_hub_cache_only
from shards.format import METRIC_DEPTH, RELATIVE_INVERSE_DEPTH

if TYPE_CHECKING:  # transformers loads only when a transformers teacher does
    from transformers import DPTForDepthEstimation

logger = logging.getLogger(__name__)

#: Normalisation used when a model folder has no preprocessor_config.json, per transformers model type.
DEFAULT_NORMALISATION = {
    "dpt": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),  # the Intel DPT checkpoints were converted with mean = std = 0.5
    "depth_anything": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),  # ImageNet
}
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")
#: Endings of the exported depth files a teacher may be (``distill.deploy.runtime.EXPORTED_SUFFIXES``, the runners'
#: own list; a test keeps the two equal, since this module may not import distill at its top).
TEACHER_FILE_SUFFIXES = (".onnx", ".tflite", ".pte")
_COMMIT = re.compile(r"snapshots/([0-9a-f]{40})/")


class TeacherModelError(UserError):
    """The model named as the teacher cannot be one. The message names the key that sets the teacher, ``key``:
    ``teacher.model`` in pseudolabel, ``--model`` where a command reads it."""

    def __init__(self, template: str, key: str = "teacher.model") -> None:
        super().__init__(template)
        self.template = template
        self.key = key

    def __str__(self) -> str:
        return self.template.replace("{key}", self.key)


class TeacherNotFoundError(TeacherModelError, FileNotFoundError):
    """The teacher's weights are neither in a local folder nor in the Hugging Face cache."""


#: What a teacher may be, for messages.
ACCEPTED_TEACHERS = (
    f"a transformers depth model (model_type {', '.join(TEACHER_FAMILIES)}): a hub id such as "
    "Intel/dpt-hybrid-midas, or a folder written by save_pretrained (config.json with its model_type + the weights); "
    "an exported depth file (.onnx, .tflite, .pte); "
    "or the built-in identity"
)


def missing_teacher_message(model: str) -> str:
    return (
        f"teacher {model!r} is neither a local model folder nor in the local Hugging Face cache (the hub is "
        f"unreachable or HF_HUB_OFFLINE=1). Pre-download it on a machine with internet: "
        f"`huggingface-cli download {model}` (or `hf download {model}`), then copy the cache (~/.cache/huggingface) "
        f"here; or save the model to a folder (`save_pretrained`) and set {{key}} to that folder."
    )


def compute_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The backbone's autocast dtype: ``auto`` = bf16 on CUDA, none (fp32) on CPU."""
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def _as_float32(value: Any) -> Any:
    """Floating tensors (also inside lists and tuples) cast to float32; anything else unchanged."""
    if isinstance(value, torch.Tensor):
        return value.float() if value.is_floating_point() else value
    if isinstance(value, (list, tuple)):
        return type(value)(_as_float32(item) for item in value)
    if isinstance(value, dict):
        return {name: _as_float32(item) for name, item in value.items()}
    return value


def run_in_full_precision(module: torch.nn.Module) -> torch.nn.Module:
    """Make ``module`` run in float32 under any surrounding autocast, on float32 copies of its inputs.

    The teacher's head turns features into the map that becomes a 16-bit label. Under bf16 autocast its output has
    8 significant bits: a map holds about a thousand distinct values instead of ~200,000, a median error of ~1%
    (about 200 steps of the 16-bit code). The backbone carries nearly all the FLOPs and tolerates bf16; the head
    does not, so it alone is kept in float32. The weights are not changed, only the forward is wrapped.
    """
    forward = module.forward

    def full_precision_forward(*args: Any, **kwargs: Any) -> Any:
        device_type = next((a.device.type for a in _tensors(args)), "cpu")
        with torch.autocast(device_type=device_type, enabled=False):
            return forward(*_as_float32(args), **_as_float32(kwargs))

    module.forward = full_precision_forward
    return module


def _tensors(values: Any):
    for value in values:
        if isinstance(value, torch.Tensor):
            yield value
        elif isinstance(value, (list, tuple)):
            yield from _tensors(value)


# ------------------------------------------------------------------------- each family as its authors run it
# One named reference per family: the network size its authors' code picks for an input, the kernel that resizes the
# input to it, and the kernel that resizes the map back. ``teacher.short_side`` overrides only ``size``.


@dataclass(frozen=True)
class Recipe:
    """How a family's authors feed their network and return its map (``reference`` names the code followed).

    ``size``: the reference's size parameter (0: the input's own size); ``fit``: how it becomes the network size
    (:data:`FITS`); ``multiple``: what each side is rounded to; ``input_resize``: ``pil_bicubic`` (transformers'
    image processor: torch's uint8 bicubic, antialiased, PIL's kernel) or ``cv2_cubic`` (``cv2.INTER_CUBIC`` on the
    float image, not clamped); ``output_resize``: ``bicubic`` or ``bilinear_align_corners``."""

    reference: str
    size: int
    multiple: int
    fit: str
    input_resize: str
    output_resize: str


def _to_multiple(value: float, multiple: int, at_least: int = 0) -> int:
    """``constrain_to_multiple_of`` of MiDaS, Depth Anything and transformers: rounded (half to even), ceiled when
    that falls below ``at_least``; never below one ``multiple``."""
    rounded = round(value / multiple) * multiple
    if rounded < at_least:
        rounded = math.ceil(value / multiple) * multiple
    return max(multiple, rounded)


def _fit_minimal(height: int, width: int, size: int, multiple: int) -> tuple[int, int]:
    """``keep_aspect_ratio`` of a ``size`` x ``size`` target, scaled as little as possible (DPTImageProcessor, MiDaS'
    ``resize_method="minimal"``): the short side becomes ``size`` for inputs larger than it."""
    scale_height, scale_width = size / height, size / width
    scale = scale_width if abs(1 - scale_width) < abs(1 - scale_height) else scale_height
    return _to_multiple(height * scale, multiple), _to_multiple(width * scale, multiple)


def _fit_lower_bound(height: int, width: int, size: int, multiple: int) -> tuple[int, int]:
    """Depth Anything's ``Resize(keep_aspect_ratio=True, resize_method="lower_bound")``: both sides >= ``size``."""
    scale = max(size / height, size / width)
    return _to_multiple(height * scale, multiple, size), _to_multiple(width * scale, multiple, size)


#: name -> (height, width, size, multiple) -> the network's (h, w).
FITS: dict[str, Callable[[int, int, int, int], tuple[int, int]]] = {
    "minimal": _fit_minimal,
    "lower_bound": _fit_lower_bound,
}

#: Each family's reference, by transformers model type.
RECIPES: dict[str, Recipe] = {
    "dpt": Recipe(
        reference="transformers DPTImageProcessor (size 384, keep_aspect_ratio, ensure_multiple_of 32, bicubic) and "
        "post_process_depth_estimation (bicubic)",
        size=384, multiple=32, fit="minimal", input_resize="pil_bicubic", output_resize="bicubic",
    ),
    "depth_anything": Recipe(
        reference="Depth-Anything-V2 infer_image (input_size 518, Resize lower_bound, ensure_multiple_of 14, "
        "cv2.INTER_CUBIC; output bilinear, align_corners=True)",
        size=518, multiple=14, fit="lower_bound", input_resize="cv2_cubic", output_resize="bilinear_align_corners",
    ),
}

#: The input as given (the identity teacher, test teachers).
AS_GIVEN = Recipe(reference="the input as given", size=0, multiple=1, fit="minimal", input_resize="pil_bicubic",
                  output_resize="bicubic")


def resize_input(images: torch.Tensor, size: tuple[int, int], kernel: str, device: torch.device) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float (B, 3, h, w) in [0, 1] on ``device``, by the recipe's input kernel.

    ``pil_bicubic`` resizes the uint8 image (on the CPU: torch's uint8 kernel, the one transformers' processor runs),
    then scales; ``cv2_cubic`` scales, then resizes the float image with OpenCV's cubic (a = -0.75, not clamped)."""
    same = tuple(images.shape[1:3]) == size
    if kernel == "pil_bicubic" and not same:
        channels_first = images.cpu().permute(0, 3, 1, 2)
        resized = F.interpolate(channels_first, size, mode="bicubic", antialias=True, align_corners=False)
        return resized.to(device, non_blocking=True).float().div_(255.0)
    pixels = images.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)
    if same:
        return pixels
    if kernel == "cv2_cubic":
        return F.interpolate(pixels, size, mode="bicubic", antialias=False, align_corners=False)
    raise ValueError(f"unknown input resize {kernel!r}; expected pil_bicubic or cv2_cubic")


def resize_output(prediction: torch.Tensor, size: tuple[int, int], kernel: str) -> torch.Tensor:
    """The network's map (B, h, w) -> (B, H, W) by the recipe's output kernel (not clamped)."""
    if tuple(prediction.shape[-2:]) == size:
        return prediction
    if kernel == "bicubic":
        return F.interpolate(prediction[:, None], size, mode="bicubic", align_corners=False)[:, 0]
    if kernel == "bilinear_align_corners":
        return F.interpolate(prediction[:, None], size, mode="bilinear", align_corners=True)[:, 0]
    if kernel == "bilinear":
        shrinking = size[0] < prediction.shape[-2] or size[1] < prediction.shape[-1]
        return F.interpolate(prediction[:, None], size, mode="bilinear", align_corners=False, antialias=shrinking)[:, 0]
    raise ValueError(f"unknown output resize {kernel!r}; expected bicubic, bilinear or bilinear_align_corners")


class Teacher:
    """A depth teacher. ``kind`` is ``relative_inverse_depth`` or ``metric_depth``; ``model_id`` is the hub id or the
    absolute folder; ``revision`` the resolved hub commit, or ``sha256:...`` of a folder's weights.

    ``network`` maps normalised pixels (B, 3, h, w) to (B, h', w'); ``recipe`` says how its family's authors run it
    (network size, input and output resize); ``short_side`` overrides the recipe's ``size`` (None: the recipe's).
    """

    def __init__(
        self,
        network: Callable[[torch.Tensor], torch.Tensor],
        *,
        kind: str,
        model_id: str,
        revision: str | None,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
        recipe: Recipe = AS_GIVEN,
        device: str | torch.device = "cpu",
        flip_tta: bool = False,
        precision: str = "auto",
        short_side: int | None = None,
        family: str | None = None,
    ) -> None:
        self.network = network
        self.kind = kind
        self.model_id = model_id
        self.revision = revision
        self.device = torch.device(device)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.recipe = recipe
        self.family = family  # the transformers model type, None for a built-in teacher
        self.flip_tta = flip_tta
        self.precision = precision
        self.autocast_dtype = compute_precision(precision, self.device)
        self.short_side = short_side
        self.fixed_batch: int | None = None  # set by compile()

    def compile(self, batch_size: int, height: int, width: int) -> None:
        """``torch.compile`` the network for batches of ``batch_size`` ``height`` x ``width`` crops (smaller batches
        are padded to it, so the network sees one shape and compiles once, here, before any timing starts). About
        twice the images/s on a GPU (see BENCHMARKS.md); labels agree with the eager network to float rounding."""
        self.network = torch.compile(self.network)
        self.fixed_batch = batch_size
        self.predict(torch.zeros((1, height, width, 3), dtype=torch.uint8))

    @property
    def size(self) -> int:
        """The size parameter that runs: ``short_side`` when given, else the recipe's (DPT 384, Depth Anything 518)."""
        return self.recipe.size if self.short_side is None else self.short_side

    @property
    def size_multiple(self) -> int:
        return self.recipe.multiple

    def network_size(self, height: int, width: int) -> tuple[int, int]:
        """The (h, w) the network runs at for an input of ``height`` x ``width``, by the recipe's fit: for a 384x512
        crop, 384x512 for DPT and 518x686 for Depth Anything. A size of 0 keeps the input size."""
        if self.size == 0:
            return height, width
        return FITS[self.recipe.fit](height, width, self.size, self.recipe.multiple)

    def precisions(self) -> dict[str, str]:
        """The dtype of each part of the labelling path, as recorded in the manifest: the backbone under autocast
        (bf16 on CUDA by default), the head, the output map, its resize and coding always float32."""
        backbone = str(self.autocast_dtype or torch.float32).replace("torch.", "")
        return {"backbone": backbone, "head": "float32", "output": "float32"}

    def info(self) -> dict[str, Any]:
        """What decides the labels: recorded in the manifest and in every shard's stats."""
        return {
            "teacher": self.model_id,
            "teacher_revision": self.revision,
            "kind": self.kind,
            "mean": [round(float(v), 6) for v in self.mean.flatten()],
            "std": [round(float(v), 6) for v in self.std.flatten()],
            "family": self.family,
            "reference": self.recipe.reference,
            "size": self.size,
            "size_fit": self.recipe.fit,
            "size_multiple": self.size_multiple,
            "short_side": self.short_side,
            "input_resize": self.recipe.input_resize,
            "output_resize": self.recipe.output_resize,
            "flip_tta": self.flip_tta,
        }

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 RGB (B, H, W, 3) -> float32 (B, H, W) on the CPU: the teacher's map at the input size."""
        return self.predict(images).cpu()

    @torch.inference_mode()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """As ``__call__``, but the map stays on the teacher's device (the pipeline codes it there)."""
        check_images(images)
        height, width = images.shape[1:3]
        pixels = self.network_input(images)
        batch = pixels.shape[0]
        if self.fixed_batch and batch < self.fixed_batch:  # one shape for a compiled network: pad, drop later
            pixels = torch.cat([pixels, pixels[-1:].expand(self.fixed_batch - batch, -1, -1, -1)])
        if self.flip_tta:
            pixels = torch.cat([pixels, pixels.flip(-1)])
        with self._autocast():
            prediction = self.network(pixels)  # the head runs in float32 (run_in_full_precision)
        prediction = prediction.float()  # (B or 2B, h', w'); a no-op for transformers teachers
        if self.flip_tta:
            padded = prediction.shape[0] // 2
            prediction = torch.cat([prediction[:batch], prediction[padded : padded + batch]])
        else:
            prediction = prediction[:batch]
        if self.flip_tta:
            prediction = (prediction[:batch] + prediction[batch:].flip(-1)) / 2
        return self.network_output(prediction, height, width)

    def network_output(self, prediction: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """The network's map (B, h', w') -> the label map (B, ``height``, ``width``), as the family's authors do."""
        prediction = resize_output(prediction, (height, width), self.recipe.output_resize)
        if self.kind == METRIC_DEPTH:  # metres are non-negative by definition; a relative map's offset is free
            prediction = prediction.clamp_(min=0.0)
        return prediction

    def network_input(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, H, W, 3) -> the normalised (B, 3, h, w) the network sees, on the teacher's device."""
        size = self.network_size(*images.shape[1:3])
        pixels = resize_input(images, size, self.recipe.input_resize, self.device)
        return (pixels - self.mean) / self.std


def check_images(images: torch.Tensor) -> None:
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"a teacher takes uint8 (B, H, W, 3) RGB, got {images.dtype} {tuple(images.shape)}")


class IdentityTeacher(Teacher):
    """A network-free teacher for timing the pipeline: its 'depth' is the green channel / 255, one cheap op.
    Flip TTA would average a map with its own mirror image of the mirrored input, the same map: it is skipped."""

    @torch.inference_mode()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        check_images(images)
        return images.to(self.device, non_blocking=True)[..., 1].float().div_(255.0)


def _no_network(pixels: torch.Tensor) -> torch.Tensor:
    raise AssertionError("the identity teacher has no network")


def build_identity_teacher(
    *, revision=None, device="cpu", flip_tta=False, precision="auto", short_side=None
) -> Teacher:
    """A network-free teacher whose map is a cheap function of the image: times decode, resize, encode and write.
    It sees the input as given (``short_side`` does not apply)."""
    return IdentityTeacher(
        _no_network, kind=RELATIVE_INVERSE_DEPTH, model_id="identity", revision="builtin", mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0), recipe=AS_GIVEN, device=device, flip_tta=flip_tta, precision="fp32",
    )


#: Teachers that are not transformers checkpoints, by name. Anything else is a hub id or a folder.
BUILTIN_TEACHERS: dict[str, Callable[..., Teacher]] = {"identity": build_identity_teacher}


# ---------------------------------------------------------------------------------------- an exported file as teacher
# A depth model the user has as a file (.onnx, .tflite, .pte) runs through the runners DepthModel uses
# (``distill.deploy.exported``: input size, layout and quantisation read from the file), reached lazily through the
# one crossing from pseudolabel into distill (docs/decisions.md, "Teachers"). A file cannot always say what it
# outputs; then ``teacher.kind`` must: a metric map stored as relative would be a wrong label no later check catches.

#: How a file teacher is fed and read back: the crop as it is when the file's size is free; else stretched to the
#: file's fixed size (bicubic, aspect not kept), the map resized back bilinearly.
FILE_RECIPE = Recipe(
    reference="the file's own runtime (ONNX Runtime, LiteRT, ExecuTorch) as DepthModel runs it: a fixed-size file "
    "gets the crop stretched bicubically to its size (aspect not kept), its map resized back bilinearly",
    size=0, multiple=1, fit="file", input_resize="pil_image_bicubic", output_resize="bilinear",
)


class FileTeacher(Teacher):
    """An exported depth file run by its format's runner (numpy in and out, on the CPU): ``network_size`` is the
    file's fixed size (the crop's own when the graph's size is free); the crop reaches it as ``DepthModel`` feeds a
    picture (``images_to_batch``: PIL's bicubic on the uint8 image, ``pil_image_bicubic``) and the map comes back
    bilinearly (:data:`FILE_RECIPE`)."""

    def __init__(self, runner: Any, *, kind: str, model_id: str, revision: str, flip_tta: bool = False) -> None:
        super().__init__(
            _RunnerNetwork(runner), kind=kind, model_id=model_id, revision=revision, mean=(0.0, 0.0, 0.0),
            std=(1.0, 1.0, 1.0), recipe=FILE_RECIPE, device="cpu", flip_tta=flip_tta, precision="fp32",
        )
        self.runner = runner

    @property
    def fixed_size(self) -> tuple[int, int] | None:
        """(height, width) the file takes, or None when its size is free (a dynamic ONNX graph)."""
        return None if getattr(self.runner, "dynamic", False) else (self.runner.height, self.runner.width)

    def network_size(self, height: int, width: int) -> tuple[int, int]:
        return self.fixed_size or (height, width)

    def network_input(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, H, W, 3) -> float32 (B, 3, h, w) in [0, 1] at the file's size, as DepthModel feeds it."""
        from distill.deploy.exported import images_to_batch  # the same crossing as the runner's (Teachers)

        height, width = self.network_size(*images.shape[1:3])
        return torch.from_numpy(images_to_batch(list(images.cpu().numpy()), width, height))

    def compile(self, batch_size: int, height: int, width: int) -> None:
        raise UserError("runtime.compile_teacher applies to PyTorch teachers; a teacher file runs as exported: "
                        "leave runtime.compile_teacher false")

    def precisions(self) -> dict[str, str]:
        return {"backbone": "as exported", "head": "as exported", "output": "float32"}

    def info(self) -> dict[str, Any]:
        """:meth:`Teacher.info`'s fields, and the file's own: its format, runtime and fixed size (W, H; null: free)."""
        fixed = self.fixed_size
        return {
            **super().info(),
            "format": Path(self.model_id).suffix.lstrip(".").lower(),
            "runtime": self.runner.name.split(":", 1)[0],
            "file_size": None if fixed is None else [fixed[1], fixed[0]],
        }


class _RunnerNetwork:
    """A runner (numpy float32 (B, 3, h, w) in [0, 1] -> (B, h', w')) as a teacher's network on torch tensors."""

    def __init__(self, runner: Any) -> None:
        self.runner = runner

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.runner(pixels.float().cpu().numpy()).astype("float32", copy=False))


def _file_revision(path: Path) -> str:
    """``sha256:<16 hex>`` of the file's bytes, so a changed file under the same name is noticed on resume."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return f"sha256:{digest.hexdigest()[:16]}"


def load_file_teacher(
    model: str, *, kind: str | None, flip_tta: bool = False, precision: str = "auto", short_side: int | None = None
) -> Teacher:
    """An exported file as a teacher. ``kind`` states what it outputs; required when the file does not say (our
    exports do), refused in one line without it; it must agree with a file that says."""
    from distill.deploy.exported import open_exported  # the one crossing into distill (docs/decisions.md, Teachers)

    if short_side is not None:
        raise UserError(f"teacher.short_side {short_side} sets the size of dpt and depth_anything; a teacher file "
                        "runs at its own size: leave teacher.short_side unset")
    if precision not in ("auto", "fp32"):
        raise UserError(f"teacher.precision {precision} applies to PyTorch teachers; a teacher file runs as "
                        "exported: leave teacher.precision auto")
    path = Path(model).expanduser()
    try:
        runner = open_exported(path, kind=kind, model_key="teacher.model", kind_key="teacher.kind", assume_kind=False)
    except ImportError as error:  # the file's runtime is an extra; the message names the install
        raise UserError(f"teacher.model {model}: {error}") from error
    logger.info("teacher file %s (%s, %s, %dx%d%s)", path, runner.name, runner.kind, runner.width, runner.height,
                ", size free" if getattr(runner, "dynamic", False) else "")
    return FileTeacher(runner, kind=runner.kind, model_id=str(path.resolve()), revision=_file_revision(path),
                       flip_tta=flip_tta)


def _folder_revision(folder: Path) -> str | None:
    """``sha256:<16 hex>`` over the config and weight files, so a retrained teacher in the same folder is noticed."""
    digest = hashlib.sha256()
    found = False
    for name in ("config.json", *_WEIGHT_FILES):
        path = folder / name
        if path.is_file():
            found = found or name != "config.json"
            digest.update(name.encode())
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 22), b""):
                    digest.update(block)
    return f"sha256:{digest.hexdigest()[:16]}" if found else None


def _normalisation(model: str, revision: str | None, model_type: str) -> tuple[tuple, tuple]:
    """(mean, std) from the model's preprocessor_config.json; the model type's default where it has none."""
    from transformers.utils import cached_file

    path = None
    with contextlib.suppress(OSError):
        path = cached_file(
            model, "preprocessor_config.json", revision=revision, _raise_exceptions_for_missing_entries=False
        )
    if path is None:
        logger.info("%s has no preprocessor_config.json: using the %s default normalisation", model, model_type)
        return DEFAULT_NORMALISATION[model_type]
    record = json.loads(Path(path).read_text())
    mean, std = record.get("image_mean"), record.get("image_std")
    if not record.get("do_normalize", True):
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    if mean is None or std is None:
        return DEFAULT_NORMALISATION[model_type]
    mean = tuple(mean) if isinstance(mean, (list, tuple)) else (mean,) * 3
    std = tuple(std) if isinstance(std, (list, tuple)) else (std,) * 3
    return mean, std


# ------------------------------------------------------------------------------ DPT's forward that knows its grid
# transformers 5.x ``DPTForDepthEstimation`` assumes a square patch grid: on the plain-ViT path (``Intel/dpt-large``)
# the neck reshapes the tokens to ``sqrt(N) x sqrt(N)`` (a 384x512 input raises ``shape '[2, 27, 27, 32]' is
# invalid``), and the hybrid path (``Intel/dpt-hybrid-midas``) refuses any size but ``config.image_size``. MiDaS itself
# ran these models at native aspect, with the position embeddings interpolated to the patch grid. :func:`dpt_depth`
# runs the same modules in the same order as the stock forward (embeddings, encoder layers, neck, head), only (a) the
# hybrid embeddings' size check is skipped, (b) the position embeddings are interpolated to the real
# ``(H / 16, W / 16)`` grid by the model's own ``_resize_pos_embed``, and (c) the neck is told the grid. On square
# inputs it equals the stock forward (``tests/pseudolabel/test_dpt_grid.py`` proves it for the ViT and the hybrid).
# DPT inputs must be a multiple of 32 (``RECIPES["dpt"]``): 16-pixel patches, then a stride-2 reassemble at the
# deepest level.


def patch_grid(model: DPTForDepthEstimation, height: int, width: int) -> tuple[int, int]:
    """(rows, columns) of the ViT token grid for an input of ``height`` x ``width`` pixels."""
    patch_size = model.config.patch_size
    if height % patch_size or width % patch_size:
        raise ValueError(f"DPT input {height}x{width} is not a multiple of the patch size {patch_size}")
    return height // patch_size, width // patch_size


def _hybrid_embeddings(model: DPTForDepthEstimation, pixel_values: torch.Tensor, grid: tuple[int, int]):
    """``DPTViTHybridEmbeddings.forward`` without its square-size check: tokens (B, 1 + h*w, C) and the BiT
    stage-1 and stage-2 feature maps that the neck uses directly."""
    embeddings = model.dpt.embeddings
    position_embeddings = embeddings._resize_pos_embed(embeddings.position_embeddings, *grid)
    backbone_output = embeddings.backbone(pixel_values)
    features = backbone_output.feature_maps[-1]  # (B, C, h, w) at stride 16
    if tuple(features.shape[-2:]) != grid:
        raise ValueError(f"hybrid backbone gave a {tuple(features.shape[-2:])} feature map, expected the grid {grid}")
    intermediate = [backbone_output.feature_maps[index] for index in embeddings.residual_feature_map_index]
    tokens = embeddings.projection(features).flatten(2).transpose(1, 2)
    cls_tokens = embeddings.cls_token.expand(tokens.shape[0], -1, -1)
    tokens = torch.cat((cls_tokens, tokens), dim=1) + position_embeddings
    return tokens, intermediate


def dpt_depth(model: DPTForDepthEstimation, pixel_values: torch.Tensor) -> torch.Tensor:
    """Normalised pixels (B, 3, H, W), H and W multiples of 32 -> predicted depth (B, H, W), the head's output.

    Models with a separate backbone (``config.backbone_config`` and not hybrid, e.g. BEiT or DINOv2 DPTs) already
    pass the grid to the neck, so they take the stock forward.
    """
    if getattr(model, "backbone", None) is not None:
        return model(pixel_values).predicted_depth
    config = model.config
    grid = patch_grid(model, pixel_values.shape[-2], pixel_values.shape[-1])
    if config.is_hybrid:
        tokens, neck_inputs = _hybrid_embeddings(model, pixel_values, grid)
        wanted_layers = set(config.backbone_out_indices[2:])  # the first two neck inputs are BiT feature maps
    else:
        tokens = model.dpt.embeddings(pixel_values).last_hidden_states  # interpolates its position embeddings
        neck_inputs = []
        wanted_layers = set(config.backbone_out_indices)
    for index, layer in enumerate(model.dpt.encoder.layer):
        tokens = layer(tokens)
        if index in wanted_layers:
            neck_inputs.append(tokens)
    features = model.neck(neck_inputs, *grid)
    return model.head(features)


def load_transformers_teacher(
    model: str, *, revision: str | None = None, device: str | torch.device = "cpu", flip_tta: bool = False,
    precision: str = "auto",
    short_side: int | None = None,
) -> Teacher:
    """A DPT or Depth Anything checkpoint from a local folder or the hub (cache), run as its family's
    :data:`RECIPES` says (``short_side`` overrides the recipe's size)."""
    from transformers import AutoConfig, AutoModelForDepthEstimation, DPTForDepthEstimation
    from transformers.utils import cached_file

    folder = Path(model).expanduser()
    local = folder.is_dir()
    if not local and (model.startswith((".", "/", "~")) or model.count("/") > 1 or os.sep != "/" and os.sep in model):
        raise TeacherNotFoundError(
            f"teacher folder {model} does not exist: set {{key}} to a folder holding config.json and the "
            f"weights (written by save_pretrained), or to a hub id such as Intel/dpt-hybrid-midas"
        )
    if local:
        _check_teacher_folder(folder, model)
    elif hub_unreachable() is not None:  # one quick check, not a minute of retries: the cache only from here on
        read_hub_cache_only()
    source = str(folder.resolve()) if local else model
    try:
        config = AutoConfig.from_pretrained(source, revision=revision)
    except OSError as error:
        raise TeacherNotFoundError(missing_teacher_message(model)) from error
    refusal = family_refusal(model, config.model_type)
    if refusal is not None:
        raise TeacherModelError(refusal)
    try:
        network_model = AutoModelForDepthEstimation.from_pretrained(source, revision=revision)
    except OSError as error:
        raise TeacherNotFoundError(missing_teacher_message(model)) from error
    if local:
        resolved_revision = _folder_revision(folder)
    else:
        config_path = cached_file(source, "config.json", revision=revision)
        match = _COMMIT.search(Path(config_path).as_posix()) if config_path else None
        resolved_revision = match.group(1) if match else revision
    network_model = network_model.to(device).eval()
    if config.model_type in PROCESSOR_FAMILIES:
        return processor_teacher(
            network_model, source, revision, resolved_revision, device=device, flip_tta=flip_tta,
            precision=precision, short_side=short_side,
        )
    full_precision_heads(network_model)  # the head and the map in float32 whatever teacher.precision says
    mean, std = _normalisation(source, revision, config.model_type)
    kind = TEACHER_FAMILIES[config.model_type].kind
    if config.model_type == "depth_anything" and getattr(config, "depth_estimation_type", "relative") == "metric":
        kind = METRIC_DEPTH
    if isinstance(network_model, DPTForDepthEstimation):
        network = _Bound(dpt_depth, network_model)
    else:
        network = _Bound(_stock_depth, network_model)
    logger.info("teacher %s (revision %s, %s) on %s", source, resolved_revision, kind, device)
    return Teacher(
        network, kind=kind, model_id=source, revision=resolved_revision, mean=mean, std=std,
        recipe=RECIPES[config.model_type], device=device, flip_tta=flip_tta, precision=precision,
        short_side=short_side, family=config.model_type,
    )


def _check_teacher_folder(folder: Path, model: str) -> None:
    """A local folder holds a transformers model's config.json: a student folder (our ``architecture`` field, which
    ``distill`` writes) or a folder of no known model stops here, by name, not with transformers' traceback."""
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise TeacherNotFoundError(f"{{key}} {model} is a folder without config.json; give {ACCEPTED_TEACHERS}")
    try:
        record = json.loads(config_path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise TeacherModelError(f"{{key}} {model}: {config_path} is not JSON ({error})") from error
    if isinstance(record, dict) and "architecture" in record:
        raise TeacherModelError(
            f"{{key}} {model} is a student folder (config.json with our 'architecture' field, written by distill), not "
            f"a teacher: students are scored with python -m distill.evaluate; a teacher is {ACCEPTED_TEACHERS}"
        )
    if not isinstance(record, dict) or "model_type" not in record:
        raise TeacherModelError(
            f"{{key}} {model}: its config.json has no model_type, so it is not a transformers model; give "
            f"{ACCEPTED_TEACHERS}"
        )
    refusal = family_refusal(model, str(record["model_type"]))
    if refusal is not None:  # before transformers reads it: an unknown model_type would be its traceback
        raise TeacherModelError(refusal)


def _stock_depth(model: torch.nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    return model(pixel_values=pixel_values).predicted_depth


class _Bound:
    """``function(model, pixels)`` with the model bound; keeps the model reachable as ``.model``."""

    def __init__(self, function: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor], model: torch.nn.Module):
        self.function = function
        self.model = model

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.function(self.model, pixels)


class ProcessorTeacher(Teacher):
    """A family whose own transformers image processor is the reference (ZoeDepth, Depth Pro, GLPN): ``steps``
    (:mod:`pseudolabel.families`) do its ``preprocess`` and its ``post_process_depth_estimation`` on the batch."""

    def __init__(self, network: Callable[[torch.Tensor], torch.Tensor], *, steps: ProcessorSteps, **options: Any):
        mean, std = steps.mean or (0.0, 0.0, 0.0), steps.std or (1.0, 1.0, 1.0)
        super().__init__(network, mean=mean, std=std, **options)
        self.steps = steps

    def network_size(self, height: int, width: int) -> tuple[int, int]:
        return self.steps.network_size(height, width)

    def network_input(self, images: torch.Tensor) -> torch.Tensor:
        return self.steps.prepare(images, self.device)

    def network_output(self, prediction: torch.Tensor, height: int, width: int) -> torch.Tensor:
        return self.steps.restore(prediction, height, width).clamp_(min=0.0)  # metres: bicubic overshoot below 0

    def info(self) -> dict[str, Any]:
        """:meth:`Teacher.info`'s fields, the size rule and kernels the processor's, and its settings."""
        settings = steps_settings(self.steps)
        reference = f"transformers {settings['processor']} and its post_process_depth_estimation"
        return {**super().info(), **self.steps.recipe(), "reference": reference, "processor": settings}


def processor_teacher(
    network_model: torch.nn.Module, source: str, revision: str | None, resolved_revision: str | None, *,
    device: str | torch.device, flip_tta: bool, precision: str, short_side: int | None,
) -> Teacher:
    """A ZoeDepth, Depth Pro or GLPN teacher at its image processor's settings (``preprocessor_config.json``, or the
    processor's defaults where there is none); metric depth in metres."""
    from transformers import AutoImageProcessor

    model_type = network_model.config.model_type
    if short_side is not None:
        raise UserError(
            f"teacher.short_side {short_side} sets the size of dpt and depth_anything; a {model_type} teacher runs at "
            f"its image processor's settings (its preprocessor_config.json): leave teacher.short_side unset"
        )
    if model_type == "depth_pro" and network_model.fov_model is None:
        raise TeacherModelError(
            f"{{key}} {source} is a Depth Pro model without its field-of-view model (use_fov_model false): its depth "
            f"is in metres only given the camera's focal length, which images to label do not have"
        )
    full_precision_heads(network_model)
    try:
        processor = AutoImageProcessor.from_pretrained(source, revision=revision)
    except OSError:  # no preprocessor_config.json: the processor's own defaults, as transformers would use
        logger.info("%s has no preprocessor_config.json: using the %s processor's defaults", source, model_type)
        processor = _default_processor(model_type)
    function = depth_pro_inverse_depth if model_type == "depth_pro" else _stock_depth
    logger.info("teacher %s (revision %s, %s) on %s", source, resolved_revision, METRIC_DEPTH, device)
    return ProcessorTeacher(
        _Bound(function, network_model), steps=processor_steps(model_type, processor), kind=METRIC_DEPTH,
        model_id=source, revision=resolved_revision, device=device, flip_tta=flip_tta, precision=precision,
        family=model_type,
    )


def full_precision_heads(network_model: torch.nn.Module) -> None:
    """Each head of the model's family (:data:`TEACHER_FAMILIES`) runs in float32 (:func:`run_in_full_precision`)."""
    for head in TEACHER_FAMILIES[network_model.config.model_type].heads:
        run_in_full_precision(network_model.get_submodule(head))


def _default_processor(model_type: str) -> Any:
    import transformers

    return getattr(transformers, TEACHER_FAMILIES[model_type].processor)()


def load_teacher(
    model: str,
    *,
    revision: str | None = None,
    device: str | torch.device = "cpu",
    flip_tta: bool = False,
    precision: str = "auto",
    short_side: int | None = None,
    kind: str | None = None,
) -> Teacher:
    """The teacher named ``model``: a built-in name (``identity``), an exported file (``.onnx``, ``.tflite``,
    ``.pte``), a hub id or a local folder.

    The network runs as its family's authors run it (:data:`RECIPES`: DPT at short side 384, Depth Anything at
    lower bound 518); ``short_side`` overrides that size (None: the family's own). A hub id must already be in the
    local Hugging Face cache when the hub is unreachable; otherwise this raises :class:`TeacherNotFoundError` saying
    how to download it. Never substitutes random weights. ``kind`` states what a file teacher outputs (required when
    the file does not say); for any other teacher it must be what the teacher outputs, or None.
    """
    if Path(model).suffix.lower() in TEACHER_FILE_SUFFIXES:
        return load_file_teacher(model, kind=kind, flip_tta=flip_tta, precision=precision, short_side=short_side)
    builder = BUILTIN_TEACHERS.get(model)
    if builder is not None:
        teacher = builder(revision=revision, device=device, flip_tta=flip_tta, precision=precision,
                          short_side=short_side)
    else:
        teacher = load_transformers_teacher(
            model, revision=revision, device=device, flip_tta=flip_tta, precision=precision, short_side=short_side
        )
    if kind is not None and kind != teacher.kind:
        raise UserError(
            f"teacher.kind {kind}: {model} outputs {teacher.kind} (its config says so); teacher.kind states what a "
            f"teacher file outputs when the file does not say: leave it unset for {model}"
        )
    return teacher
