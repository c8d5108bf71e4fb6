"""Read a stage's config: a dataclass schema, a YAML recipe (``--config``) and dotted overrides.

jsonargparse does the work: it rejects an unknown key by name (``Group 'source' does not accept option
'pth'``, exit 2) and prints the resolved config. Shared by both stages so they parse configs the same way.

Not part of the data contract: the stages share nothing through this module but the parser (no config key, no
format), and a shard written or read anywhere never depends on it. It lives in ``shards`` because that is the one
package both stages may import.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TypeVar

import yaml
from jsonargparse import ActionConfigFile, ArgumentParser, Namespace

Config = TypeVar("Config")


def build_parser(schema: type, prog: str, description: str) -> ArgumentParser:
    parser = ArgumentParser(prog=prog, description=description, exit_on_error=True)
    parser.add_argument("--config", action=ActionConfigFile, help="a YAML recipe; later flags override it")
    parser.add_class_arguments(schema, nested_key=None, fail_untyped=True)
    return parser


def parse_config(schema: type[Config], argv: list[str] | None, prog: str, description: str = "") -> tuple[Config, str]:
    """Parse ``argv`` into an instance of ``schema``; returns it and the resolved config as YAML."""
    parser = build_parser(schema, prog, description or (schema.__doc__ or ""))
    namespace = parser.parse_args(argv)
    namespace.pop("config", None)
    # Every key, nulls included: jsonargparse's dump drops None values, and a recipe that sets a key to null
    # (e.g. `train.ema_decay: null`) would then reload as the default.
    resolved_yaml = yaml.safe_dump(namespace.as_dict(), sort_keys=False)
    return instantiate(parser, schema, namespace), resolved_yaml


def instantiate(parser: ArgumentParser, schema: type[Config], namespace: Namespace) -> Config:
    built = parser.instantiate(namespace)
    return schema(**{f.name: built[f.name] for f in dataclasses.fields(schema) if f.name in built})


def load_config(schema: type[Config], path: str | Path) -> Config:
    """A recipe file -> its dataclass, with the same checks as the command line (used by tests and tools)."""
    config, _ = parse_config(schema, ["--config", str(path)], prog=schema.__name__)
    return config


def save_resolved_config(resolved_yaml: str, folder: str | Path, name: str = "config.yaml") -> Path:
    """Write the resolved config beside an output, so every result says how it was made."""
    path = Path(folder) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(resolved_yaml)
    return path
