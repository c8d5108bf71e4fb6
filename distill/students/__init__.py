"""Students: one config, one factory, one folder format, for every registered family.

Each family's module registers itself with :func:`register_student` (as timm's ``@register_model``); importing this
package imports every family, so ``create_student(StudentConfig(architecture=...))`` can build any of them:

- ``fastdepth`` (default): MobileNetV3-Large FastDepth, the reference recipe (:mod:`distill.students.fastdepth`).
- ``resnet_additive``: ResNet-18 with a light additive decoder (:mod:`distill.students.resnet_additive`).
- ``deeplabv3``: torchvision's DeepLabv3-ResNet50 as a regressor (:mod:`distill.students.deeplab`).
- ``rt_monodepth`` / ``rt_monodepth_s``: RT-MonoDepth and its small variant (:mod:`distill.students.rt_monodepth`).

Every student keeps one contract (:mod:`distill.students.base`): RGB float in [0, 1], (B, 3, H, W) with H and W
multiples of 32, normalised inside, -> (B, 1, H, W) inverse depth, or metres for a ``prediction: depth`` student.
``save_student`` / ``load_student`` (:mod:`distill.students.folder`) move a student through a folder.
"""

# The families: imported for their registration (each decorates its class with register_student).
from distill.students import deeplab, fastdepth, resnet_additive, rt_monodepth  # noqa: F401
from distill.students._factory import create_student
from distill.students._registry import ARCHITECTURES, Architecture, register_student
from distill.students.base import Student, missing_weights_message
from distill.students.config import STUDENT_ARCHITECTURE, StudentConfig, student_output_kind
from distill.students.folder import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    is_student_folder,
    load_student,
    read_student_config,
    save_student,
)
from shards.format import INPUT_MULTIPLE

__all__ = [
    "ARCHITECTURES", "CONFIG_NAME", "INPUT_MULTIPLE", "STUDENT_ARCHITECTURE", "WEIGHTS_NAME", "Architecture",
    "Student", "StudentConfig", "create_student", "is_student_folder", "load_student", "missing_weights_message",
    "read_student_config", "register_student", "save_student", "student_output_kind",
]
