"""Students: one config, one factory, one folder format, for every registered family.

Each family's module registers itself with :func:`register_student` (as timm's ``@register_model``); the families are
imported the first time one is looked up (:func:`distill.students.config.architectures`), so
``create_student(StudentConfig(architecture=...))`` can build any of them:

- ``fastdepth`` (default): MobileNetV3-Large FastDepth, the reference recipe (:mod:`distill.students.fastdepth`).
  With ``encoder: mobilenetv3_large_minimal_100`` (``base.TIMM_ENCODER_VARIANTS``) it is the phone recipe.
- ``resnet_additive``: ResNet-18 with a light additive decoder (:mod:`distill.students.resnet_additive`).
- ``deeplabv3``: torchvision's DeepLabv3-ResNet50 as a regressor (:mod:`distill.students.deeplab`).
- ``rt_monodepth`` / ``rt_monodepth_s``: RT-MonoDepth and its small variant (:mod:`distill.students.rt_monodepth`).

Every student keeps one contract (:mod:`distill.students.base`): RGB float in [0, 1], (B, 3, H, W) with H and W
multiples of 32, normalised inside, -> (B, 1, H, W) inverse depth, or metres for a ``prediction: depth`` student.
``save_student`` / ``load_student`` (:mod:`distill.students.folder`) move a student through a folder.

The names below are loaded on first use, so that ``import distill.students.config`` (and the training config that
holds a :class:`StudentConfig`) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

#: Public name -> the module of this package that defines it.
_HOMES = {
    "ARCHITECTURES": "config", "Architecture": "config", "INPUT_MULTIPLE": "config",
    "STUDENT_ARCHITECTURE": "config", "StudentConfig": "config", "create_student": "config",
    "register_student": "config", "student_output_kind": "config",
    "Student": "base", "missing_weights_message": "base",
    "CONFIG_NAME": "folder", "WEIGHTS_NAME": "folder", "is_student_folder": "folder", "load_student": "folder",
    "read_student_config": "folder", "save_student": "folder",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f"{__name__}.{_HOMES[name]}")
    if name == "ARCHITECTURES":
        return module.architectures()  # the table with every family registered
    return getattr(module, name)
