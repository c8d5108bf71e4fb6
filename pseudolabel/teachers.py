"""Teachers: a depth model that turns uint8 RGB crops into float relative inverse depth (or metric depth).

``load_teacher(model)`` takes a built-in name (``identity``, for timing the pipeline without a network), a hub id
(``Intel/dpt-hybrid-midas``, ``Intel/dpt-large``, ``depth-anything/Depth-Anything-V2-Small-hf``) or a local folder
holding a transformers depth model (``config.json`` + weights). Every teacher has the same call:
``teacher(images)`` with uint8 (B, H, W, 3) -> float32 (B, H, W) on the CPU, at the input size.

Inside, the teacher runs at its native-aspect network size: the input scaled so its short side is 384, each side
floored to the model's multiple (32 for DPT, the patch size 14 for Depth Anything): 384x512 stays 384x512 for DPT
(through :func:`dpt_depth`, a DPT forward that knows its patch grid) and becomes 378x504 for Depth Anything, whose
output is resized back bicubically. Normalisation (mean, std) comes from the model's image-processor config and is
applied in torch on the batch, so labels do not depend on the processor's PIL or torchvision backend.
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
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from shards.cli.errors import UserError
from shards.format import METRIC_DEPTH, RELATIVE_INVERSE_DEPTH

if TYPE_CHECKING:  # transformers loads only when a transformers teacher does
    from transformers import DPTForDepthEstimation

logger = logging.getLogger(__name__)

#: The short side every teacher runs at (the 384 of MiDaS' 384x384 training and of our 512x384 samples).
TEACHER_SHORT_SIDE = 384

#: Normalisation used when a model folder has no preprocessor_config.json, per transformers model type.
DEFAULT_NORMALISATION = {
    "dpt": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),  # the Intel DPT checkpoints were converted with mean = std = 0.5
    "depth_anything": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),  # ImageNet
}
SUPPORTED_MODEL_TYPES = tuple(DEFAULT_NORMALISATION)
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")
_COMMIT = re.compile(r"snapshots/([0-9a-f]{40})/")


class TeacherNotFoundError(UserError, FileNotFoundError):
    """The teacher's weights are neither in a local folder nor in the Hugging Face cache. The message names the key
    that sets the teacher, ``key``: ``teacher.model`` in pseudolabel, ``--model`` where a command reads it."""

    def __init__(self, template: str, key: str = "teacher.model") -> None:
        super().__init__(template)
        self.template = template
        self.key = key

    def __str__(self) -> str:
        return self.template.replace("{key}", self.key)


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


class Teacher:
    """A depth teacher. ``kind`` is ``relative_inverse_depth`` or ``metric_depth``; ``model_id`` is the hub id or the
    absolute folder; ``revision`` the resolved hub commit, or ``sha256:...`` of a folder's weights.

    ``network`` maps normalised pixels (B, 3, h, w) to (B, h', w'); ``size_multiple`` is what h and w must divide by.
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
        size_multiple: int,
        device: str | torch.device = "cpu",
        flip_tta: bool = False,
        precision: str = "auto",
        short_side: int = TEACHER_SHORT_SIDE,
    ) -> None:
        self.network = network
        self.kind = kind
        self.model_id = model_id
        self.revision = revision
        self.device = torch.device(device)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.size_multiple = size_multiple
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

    def network_size(self, height: int, width: int) -> tuple[int, int]:
        """The (h, w) the network runs at for an input of ``height`` x ``width``: short side scaled to
        ``short_side``, each side floored to ``size_multiple`` (384x512 -> 384x512 for DPT, 378x504 for 14).
        A ``short_side`` of 0 keeps the input size (the identity teacher)."""
        if self.short_side == 0:
            return height, width
        scale = self.short_side / min(height, width)
        multiple = self.size_multiple
        return (
            max(multiple, math.floor(height * scale / multiple) * multiple),
            max(multiple, math.floor(width * scale / multiple) * multiple),
        )

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
            "size_multiple": self.size_multiple,
            "short_side": self.short_side,
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
        pixels = images.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)
        net_height, net_width = self.network_size(height, width)
        if (net_height, net_width) != (height, width):
            pixels = F.interpolate(pixels, (net_height, net_width), mode="bicubic", antialias=True, align_corners=False)
            pixels = pixels.clamp_(0.0, 1.0)
        pixels = (pixels - self.mean) / self.std  # (B, 3, h, w) normalised
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
        if tuple(prediction.shape[-2:]) != (height, width):
            prediction = F.interpolate(prediction[:, None], (height, width), mode="bicubic", align_corners=False)[:, 0]
            prediction = prediction.clamp_(min=0.0)  # bicubic overshoot below the ReLU's zero is not a depth
        return prediction


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
    *, revision=None, device="cpu", flip_tta=False, precision="auto", short_side=TEACHER_SHORT_SIDE
) -> Teacher:
    """A network-free teacher whose map is a cheap function of the image: times decode, resize, encode and write."""
    return IdentityTeacher(
        _no_network, kind=RELATIVE_INVERSE_DEPTH, model_id="identity", revision="builtin", mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0), size_multiple=1, device=device, flip_tta=flip_tta, precision="fp32", short_side=0,
    )


#: Teachers that are not transformers checkpoints, by name. Anything else is a hub id or a folder.
BUILTIN_TEACHERS: dict[str, Callable[..., Teacher]] = {"identity": build_identity_teacher}


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

#: DPT inputs must be a multiple of this: 16-pixel patches, then a stride-2 reassemble at the deepest level.
DPT_SIZE_MULTIPLE = 32


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
    short_side: int = TEACHER_SHORT_SIDE,
) -> Teacher:
    """A DPT or Depth Anything checkpoint from a local folder or the hub (cache)."""
    from transformers import AutoConfig, AutoModelForDepthEstimation, DPTForDepthEstimation
    from transformers.utils import cached_file

    folder = Path(model).expanduser()
    local = folder.is_dir()
    if not local and (model.startswith((".", "/", "~")) or model.count("/") > 1 or os.sep != "/" and os.sep in model):
        raise TeacherNotFoundError(
            f"teacher folder {model} does not exist: set {{key}} to a folder holding config.json and the "
            f"weights (written by save_pretrained), or to a hub id such as Intel/dpt-hybrid-midas"
        )
    source = str(folder.resolve()) if local else model
    try:
        config = AutoConfig.from_pretrained(source, revision=revision)
    except OSError as error:
        raise TeacherNotFoundError(missing_teacher_message(model)) from error
    if config.model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(
            f"teacher {model!r} is a {config.model_type!r} model; supported: {list(SUPPORTED_MODEL_TYPES)} "
            f"(e.g. Intel/dpt-hybrid-midas, Intel/dpt-large, depth-anything/Depth-Anything-V2-Small-hf)"
        )
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
    run_in_full_precision(network_model.head)  # the head and the map in float32 whatever teacher.precision says
    mean, std = _normalisation(source, revision, config.model_type)
    kind = RELATIVE_INVERSE_DEPTH
    if config.model_type == "depth_anything" and getattr(config, "depth_estimation_type", "relative") == "metric":
        kind = METRIC_DEPTH
    if isinstance(network_model, DPTForDepthEstimation):
        network = _Bound(dpt_depth, network_model)
        multiple = DPT_SIZE_MULTIPLE
    else:
        network = _Bound(_stock_depth, network_model)
        multiple = int(config.patch_size)
    logger.info("teacher %s (revision %s, %s) on %s", source, resolved_revision, kind, device)
    return Teacher(
        network, kind=kind, model_id=source, revision=resolved_revision, mean=mean, std=std, size_multiple=multiple,
        device=device, flip_tta=flip_tta, precision=precision, short_side=short_side,
    )


def _stock_depth(model: torch.nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    return model(pixel_values=pixel_values).predicted_depth


class _Bound:
    """``function(model, pixels)`` with the model bound; keeps the model reachable as ``.model``."""

    def __init__(self, function: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor], model: torch.nn.Module):
        self.function = function
        self.model = model

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.function(self.model, pixels)


def load_teacher(
    model: str,
    *,
    revision: str | None = None,
    device: str | torch.device = "cpu",
    flip_tta: bool = False,
    precision: str = "auto",
    short_side: int = TEACHER_SHORT_SIDE,
) -> Teacher:
    """The teacher named ``model``: a built-in name (``identity``), a hub id or a local folder.

    ``short_side``: the network runs with the input's short side scaled to this (384, MiDaS' resolution), each side
    floored to the model's multiple. A hub id must already be in the local Hugging Face cache when the hub is
    unreachable; otherwise this raises :class:`TeacherNotFoundError` saying how to download it. Never substitutes
    random weights.
    """
    builder = BUILTIN_TEACHERS.get(model)
    if builder is not None:
        return builder(revision=revision, device=device, flip_tta=flip_tta, precision=precision, short_side=short_side)
    return load_transformers_teacher(
        model, revision=revision, device=device, flip_tta=flip_tta, precision=precision, short_side=short_side
    )
