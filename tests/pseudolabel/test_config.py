"""The config schema: every recipe loads, overrides work, unknown keys and bad values stop by name."""

from __future__ import annotations

import pytest

from pseudolabel.config import PseudolabelConfig
from shards.cli.config import load_config, parse_config
from shards.cli.errors import UserError
from tests.pseudolabel.conftest import REPO_ROOT

RECIPES = sorted((REPO_ROOT / "configs" / "pseudolabel").glob("*.yaml"))


def test_every_recipe_is_there():
    names = {path.stem for path in RECIPES}
    assert {"places365_dpt_hybrid", "dpt_large", "depth_anything_v2_small", "smoke"} <= names


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda path: path.stem)
def test_recipe_loads_against_the_schema(recipe):
    config = load_config(PseudolabelConfig, recipe)
    assert isinstance(config, PseudolabelConfig)
    assert (config.preprocess.width, config.preprocess.height) == (512, 384)


def test_defaults_are_the_reference_recipe():
    reference = load_config(PseudolabelConfig, REPO_ROOT / "configs/pseudolabel/places365_dpt_hybrid.yaml")
    assert reference == PseudolabelConfig()
    assert reference.teacher.model == "Intel/dpt-hybrid-midas"
    assert reference.source.sample_count == 450_000


def test_dotted_overrides_win_over_the_recipe():
    config, resolved = parse_config(
        PseudolabelConfig,
        ["--config", str(REPO_ROOT / "configs/pseudolabel/smoke.yaml"), "--source.path", "/images",
         "--teacher.model", "Intel/dpt-large", "--output.dir", "/shards", "--runtime.batch_size", "3"],
        prog="pseudolabel.py",
    )
    assert (config.source.path, config.teacher.model, config.output.dir) == ("/images", "Intel/dpt-large", "/shards")
    assert config.runtime.batch_size == 3
    assert "model: Intel/dpt-large" in resolved


def test_unknown_key_is_rejected_by_name():
    with pytest.raises(UserError, match="source.pth"):
        parse_config(PseudolabelConfig, ["--source.pth", "/images"], prog="pseudolabel.py")


@pytest.mark.parametrize(
    ("flag", "value", "named"),
    [("--preprocess.crop", "diagonal", "preprocess.crop"), ("--output.prefix", "a-b", "output.prefix"),
     ("--output.samples_per_shard", "0", "output.samples_per_shard"), ("--source.kind", "ftp", "source.kind")],
)
def test_bad_values_stop_naming_the_key(flag, value, named, capsys):
    from pseudolabel.cli import main

    assert main([flag, value]) == 2
    assert named in capsys.readouterr().err
