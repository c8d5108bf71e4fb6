"""Read a command's config: a dataclass schema, a YAML recipe (``--config``) and dotted overrides.

jsonargparse does the work: it rejects an unknown key by name, prints the resolved config (``--print_config``) and,
with docstring parsing on, shows each field's description (the string under the field) in ``--help``. Every command
of the project, the two stages and the tools alike, reads its command line here, so they all spell options the same
way: snake_case keys, nested keys with dots (``--data.batch_size``), booleans as ``--int8 true``. Old spellings are
translated, with a warning, by :mod:`shards.argv`. A bad command line is a :class:`shards.errors.UserError`: one line,
exit 2, no usage block.

Not part of the data contract: the stages share nothing through this module but the parser (no config key, no
format), and a shard written or read anywhere never depends on it. It lives in ``shards`` because that is the one
package every application may import.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path
from typing import TypeVar

import yaml
from jsonargparse import ActionConfigFile, ArgumentParser, Namespace, set_parsing_settings

from shards.argv import Spelling, rewrite_argv
from shards.errors import UserError, one_line

Config = TypeVar("Config")

# Field descriptions come from the string literal under each dataclass field (docstring-parser reads them).
set_parsing_settings(docstring_parse_attribute_docstrings=True)


def build_parser(schema: type, prog: str, description: str) -> ArgumentParser:
    parser = ArgumentParser(prog=prog, description=description, exit_on_error=False, allow_abbrev=False)
    parser.add_argument("--config", action=ActionConfigFile, help="a YAML file of keys; later flags override it")
    parser.add_class_arguments(schema, nested_key=None, fail_untyped=True)
    return parser


def parse_config(
    schema: type[Config],
    argv: list[str] | None,
    prog: str,
    description: str = "",
    spelling: Spelling | None = None,
) -> tuple[Config, str]:
    """Parse ``argv`` into an instance of ``schema``; returns it and the resolved config as YAML.

    Raises :class:`UserError` for an unknown key, a value of the wrong type or one the schema refuses."""
    import sys

    argv = rewrite_argv(sys.argv[1:] if argv is None else argv, schema, prog, spelling)
    parser = build_parser(schema, prog, description or (schema.__doc__ or ""))
    try:
        namespace = parser.parse_args(argv)
    except argparse.ArgumentError as error:
        raise UserError(f"{argument_error(str(error))} (see {prog} --help)") from error
    namespace.pop("config", None)
    # Every key, nulls included: jsonargparse's dump drops None values, and a recipe that sets a key to null
    # (e.g. `train.ema_decay: null`) would then reload as the default.
    resolved_yaml = yaml.safe_dump(namespace.as_dict(), sort_keys=False)
    try:
        return instantiate(parser, schema, namespace), resolved_yaml
    except ValueError as error:  # a check in a dataclass's __post_init__: the message names the key
        raise UserError(str(error)) from error


def argument_error(message: str) -> str:
    """jsonargparse's multi-line type error as one line: ``--key: expected TYPE, got VALUE``."""
    required = re.search(r"the following arguments are required: (.*)", message)
    if required:
        keys = ", ".join(f"--{name.strip()}" for name in required.group(1).split(","))
        return f"missing required key{'s' if ',' in keys else ''}: {keys}"
    key = re.search(r'Parser key "([^"]+)"', message)
    given = re.search(r"(?:Given value|Got value): (.*)", message)
    if key is None or given is None:
        return one_line(message)
    expected = re.search(r"Subtypes: \[(.*)\]", message) or re.search(r"Expected a (.*?)\. Got value", message)
    wanted = expected.group(1) if expected else "another type"
    wanted = re.sub(r"<class '(\w+)'>", r"\1", wanted).replace("typing.", "").replace("NoneType", "null")
    return f"--{key.group(1)}: expected {wanted}, got {given.group(1).strip()!r}"


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


def save_config_beside(resolved_yaml: str, output_file: str | Path) -> Path:
    """The resolved config of a command whose output is one file: ``<file>.config.yaml`` beside it."""
    output = Path(output_file)
    return save_resolved_config(resolved_yaml, output.parent, f"{output.name}.config.yaml")


@dataclasses.dataclass(frozen=True)
class Command:
    """One command of the project: its name as typed, its config schema and its old spellings. The description is
    ``about``, else the schema's docstring; ``docs/commands.md`` is generated from these."""

    prog: str
    schema: type
    spelling: Spelling | None = None
    about: str = ""

    @property
    def description(self) -> str:
        return " ".join((self.about or self.schema.__doc__ or "").split())

    def parse(self, argv: list[str] | None) -> tuple:
        """``(config, resolved_yaml)``; a bad command line raises :class:`UserError`."""
        return parse_config(self.schema, argv, self.prog, self.description, self.spelling)
