"""``create_student``: the one factory for students (as timm's ``create_model``)."""

from __future__ import annotations

from distill.students._registry import architecture
from distill.students.base import Student
from distill.students.config import StudentConfig


def create_student(config: StudentConfig | None = None) -> Student:
    """The student ``config`` describes, its ``None`` fields resolved to the family's defaults."""
    config = (config or StudentConfig()).resolved()
    return architecture(config.architecture).build(config)
