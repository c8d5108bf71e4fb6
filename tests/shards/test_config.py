"""The shared config reader: unknown keys named, overrides applied, the resolved YAML reloads to the same config."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from shards.cli.config import load_config, parse_config, save_resolved_config
from shards.cli.errors import UserError


@dataclass
class Section:
    path: str = "data"
    count: int = 3


@dataclass
class Recipe:
    section: Section = field(default_factory=Section)
    decay: float | None = 0.999
    sizes: list[int] = field(default_factory=lambda: [256, 192])


def test_dotted_overrides_and_nulls_survive_the_resolved_yaml(tmp_path: Path) -> None:
    config, resolved = parse_config(Recipe, ["--section.path", "elsewhere", "--decay", "null"], prog="t")
    assert config == Recipe(section=Section(path="elsewhere"), decay=None)
    reloaded = load_config(Recipe, save_resolved_config(resolved, tmp_path))
    assert reloaded == config


def test_an_unknown_key_is_refused_by_name(tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("section:\n  pth: x\n")
    with pytest.raises(UserError, match="'section' does not accept option 'pth'"):
        parse_config(Recipe, ["--config", str(recipe)], prog="t")
