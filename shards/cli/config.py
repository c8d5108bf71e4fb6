"""Read a command's config: a dataclass schema, a YAML recipe (``--config``) and dotted overrides.

jsonargparse does the work: it rejects an unknown key by name, prints the resolved config (``--print_config``) and,
with docstring parsing on, shows each field's description (the string under the field) in ``--help``. Every command
of the project, the two stages and the tools alike, reads its command line here, so they all spell options the same
way: snake_case keys, nested keys with dots (``--data.batch_size``), booleans as ``--int8 true``, a list key repeated
(``--model A --model B``) or as bare words where the command says so (``shards verify DIR``). A bad command line is a
:class:`shards.cli.errors.UserError`: one line, exit 2, no usage block.

Not part of the data contract: the stages share nothing through this module but the parser (no config key, no
format), and a shard written or read anywhere never depends on it. It lives in ``shards`` because that is the one
package every application may import.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

import yaml
from jsonargparse import ActionConfigFile, ArgumentParser, Namespace, set_parsing_settings

from shards.cli.errors import UserError, one_line

Config = TypeVar("Config")

#: The flag naming a YAML file of keys; every one is read before the other flags (:func:`expand_list_flags`).
CONFIG_FLAG = "--config"

# Field descriptions come from the string literal under each dataclass field (docstring-parser reads them).
set_parsing_settings(docstring_parse_attribute_docstrings=True)


def build_parser(schema: type, prog: str, description: str) -> ArgumentParser:
    parser = ArgumentParser(prog=prog, description=description, exit_on_error=False, allow_abbrev=False)
    parser.add_argument(CONFIG_FLAG, action=ActionConfigFile,
                        help="a YAML file of keys; flags on the command line override it wherever they stand")
    parser.add_class_arguments(schema, nested_key=None, fail_untyped=True)
    return parser


def parse_config(
    schema: type[Config],
    argv: list[str] | None,
    prog: str,
    description: str = "",
    positional: str | None = None,
) -> tuple[Config, str]:
    """Parse ``argv`` into an instance of ``schema``; returns it and the resolved config as YAML.

    Raises :class:`UserError` for an unknown key, a value of the wrong type or one the schema refuses."""
    argv = expand_list_flags(sys.argv[1:] if argv is None else argv, schema, positional)
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
    """One command of the project: its name as typed, its config schema and the list key bare words fill (if any).
    The description is ``about``, else the schema's docstring; ``docs/commands.md`` is generated from these."""

    prog: str
    schema: type
    positional: str | None = None
    about: str = ""

    @property
    def description(self) -> str:
        return " ".join((self.about or self.schema.__doc__ or "").split())

    def parse(self, argv: list[str] | None) -> tuple:
        """``(config, resolved_yaml)``; a bad command line raises :class:`UserError`."""
        return parse_config(self.schema, argv, self.prog, self.description, self.positional)


#: Flags of jsonargparse that take no value (``--print_config`` takes one only as ``--print_config=...``).
_NO_VALUE = ("-h", "--help", "--print_config")


def list_keys(schema: type) -> set[str]:
    """The schema's top-level keys whose type is a list (they take repeated flags and bare words)."""
    hints = typing.get_type_hints(schema)
    keys = set()
    for item in dataclasses.fields(schema):
        hint = hints[item.name]
        parts = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
        if any(typing.get_origin(part) is list for part in parts):
            keys.add(item.name)
    return keys


def expand_list_flags(argv: Sequence[str], schema: type, positional: str | None = None) -> list[str]:
    """``argv`` as jsonargparse reads it: every ``--config FILE`` (or ``--config=FILE``) first, in its order, so that a
    flag overrides the files wherever it stands (jsonargparse applies arguments left to right, and a file read after a
    flag would silently undo it); a repeated list flag (``--model A --model B``) appends (``--model+ A --model+ B``);
    a bare word fills the ``positional`` list key (``shards verify DIR``)."""
    lists = list_keys(schema)
    tokens = list(argv)
    configs: list[str] = []
    out: list[str] = []
    position = 0
    while position < len(tokens):
        token = tokens[position]
        position += 1
        if not token.startswith("-") or token == "-":
            out += [token] if positional is None else [f"--{positional}+", token]  # unrecognised: jsonargparse says so
            continue
        flag, has_value, value = token.partition("=")
        if flag in _NO_VALUE:
            out.append(token)
            continue
        if not has_value:
            if position >= len(tokens):
                out.append(flag)  # jsonargparse says it expects a value
                continue
            value, position = tokens[position], position + 1
        if flag == CONFIG_FLAG:
            configs += [flag, value]
            continue
        if flag[2:] in lists and not value.lstrip().startswith("["):
            flag += "+"
        out += [flag, value]
    return configs + out


def parse_size(text: str, key: str = "--size") -> tuple[int, int]:
    """``"256x192"`` -> (256, 192): width then height, as every command writes a size."""
    width, separator, height = text.lower().partition("x")
    if not separator or not width.strip().isdigit() or not height.strip().isdigit():
        raise UserError(f"{key} {text!r} is not WIDTHxHEIGHT in pixels, e.g. {key} 256x192")
    return int(width), int(height)


def looks_like_path(text: str) -> bool:
    """True when ``text`` is meant as a local path rather than a hub id (``user/name``): it starts with ``./``,
    ``../``, ``/`` or ``~``, has more than one slash, a first component that exists here, or a file extension."""
    if text.startswith(("./", "../", "/", "~", ".\\")) or text.count("/") > 1:
        return True
    if Path(text.split("/", 1)[0]).exists() and "/" in text:
        return True
    suffix = Path(text).suffix[1:]
    return suffix.isalpha() and 1 <= len(suffix) <= 5
