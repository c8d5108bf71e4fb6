"""The shared config reader: unknown keys named, overrides applied, the resolved YAML reloads to the same config."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

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


def _scene_numbers(folder: Path) -> list[int]:
    return sorted(int(path.stem.split("_")[1]) for path in (folder / "rgb").glob("scene_*.png"))


def test_flags_on_the_command_line_win_wherever_they_stand(tmp_path: Path) -> None:
    """Issue 24: a flag before ``--config`` used to be silently overridden by the file. Through a real command
    (``python -m shards scenes``): the flags win before and after the files, in both spellings of ``--config``; the
    files' other keys apply, a later file over an earlier one."""
    from shards.tools.commands import main

    first, second = tmp_path / "first.yaml", tmp_path / "second.yaml"
    first.write_text(f"out: {tmp_path / 'from_file'}\ncount: 3\nstart: 5\nsize: 64x48\n")
    second.write_text("start: 7\n")
    wanted = tmp_path / "wanted"
    argv = ["scenes", "--out", str(wanted), "--count", "1", "--config", str(first), f"--config={second}"]
    assert main(argv) == 0
    assert _scene_numbers(wanted) == [7] and not (tmp_path / "from_file").exists()
    resolved = yaml.safe_load((wanted / "config.yaml").read_text())
    assert (resolved["out"], resolved["count"], resolved["start"], resolved["size"]) == (str(wanted), 1, 7, "64x48")
    after = tmp_path / "after"
    assert main(["scenes", f"--config={first}", "--start", "2", "--out", str(after)]) == 0
    assert _scene_numbers(after) == [2, 3, 4]


def test_a_flag_before_a_config_file_overrides_it(tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("decay: 0.5\nsection:\n  count: 9\n")
    config, _ = parse_config(Recipe, ["--decay", "0.25", "--config", str(recipe)], prog="t")
    assert (config.decay, config.section.count) == (0.25, 9)
