"""The table of student families, filled by :func:`register_student` as each family's module is imported.

A family registers itself (as timm's ``@register_model``): its module decorates its network class with the name the
configs use and the defaults of the fields a config leaves ``None``. Nothing here imports a family or the config,
so the families, :mod:`distill.students.config` and the factory can all import this module without a circle; the
package's ``__init__`` imports every family, so the table is full once ``distill.students`` is imported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from torch import nn

__all__ = ["ARCHITECTURES", "Architecture", "architecture", "register_student"]


@dataclass(frozen=True)
class Architecture:
    """How to build one family, and its defaults for the fields left ``None``."""

    build: Callable[[Any], nn.Module]  # StudentConfig (resolved) -> the network
    check: Callable[[Any], None]  # raises ValueError on a config the family cannot build
    encoder: str | None  # None: the architecture has no swappable encoder
    imagenet_encoder: bool  # ImageNet weights exist for the encoder (``pretrained`` defaults to True)
    decoder_widths: list[int]
    upsample: str
    output_activation: str


#: name -> family, in registration order; filled by :func:`register_student`.
ARCHITECTURES: dict[str, Architecture] = {}

BuildT = TypeVar("BuildT", bound=Callable[..., nn.Module])


def register_student(
    name: str,
    *,
    check: Callable[[Any], None],
    encoder: str | None,
    imagenet_encoder: bool,
    decoder_widths: list[int],
    upsample: str,
    output_activation: str,
) -> Callable[[BuildT], BuildT]:
    """Class (or builder) decorator: make ``name`` buildable by ``create_student`` with these defaults."""

    def decorate(build: BuildT) -> BuildT:
        if name in ARCHITECTURES:
            raise ValueError(f"student architecture {name!r} is registered twice")
        ARCHITECTURES[name] = Architecture(
            build, check, encoder, imagenet_encoder, list(decoder_widths), upsample, output_activation
        )
        return build

    return decorate


def architecture(name: str) -> Architecture:
    """The family called ``name``; an unknown name is an error that lists the known ones."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown student architecture {name!r}; known: {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[name]
