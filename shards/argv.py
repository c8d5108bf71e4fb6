"""The command line before jsonargparse reads it: old flag names, bare boolean flags, repeated list flags and
positional arguments rewritten into the one spelling (``--snake_case value``), with a warning for each old form.

Old names keep working for one release: each rewrite prints ``PROG: --old is deprecated: write --new ...`` on
stderr. Not deprecated, only translated: ``--model A --model B`` for a list key becomes ``--model+ A --model+ B``
(jsonargparse's append), and bare words become the command's positional key (``verify DIR`` -> ``--shards+ DIR``).
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

#: Flags of jsonargparse that take no value (``--print_config`` takes one only as ``--print_config=...``).
_NO_VALUE = ("-h", "--help", "--print_config")


@dataclass(frozen=True)
class Spelling:
    """How a command's old command line maps onto its config.

    ``renames``: old flag -> new flag (``"--student": "--model"``); an old flag that meant a value maps to
    ``"--new value"`` (``"--no-latency": "--latency false"``). Kebab-case spellings of the config's keys
    (``--batch-size``) are recognised without being listed. ``size_pair``: the default (width, height) when the old
    ``--width``/``--height`` pair is merged into ``--size WxH``; None where the command never had them.
    ``positional``: the list key that bare words fill."""

    renames: Mapping[str, str] = field(default_factory=dict)
    size_pair: tuple[int, int] | None = None
    positional: str | None = None


def field_kinds(schema: type) -> tuple[set[str], set[str], set[str]]:
    """The schema's top-level keys, its boolean keys and its list keys."""
    hints = typing.get_type_hints(schema)
    keys, booleans, lists = set(), set(), set()
    for item in dataclasses.fields(schema):
        keys.add(item.name)
        hint = hints[item.name]
        parts = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, _union_type()) else (hint,)
        if bool in parts:
            booleans.add(item.name)
        if any(typing.get_origin(part) is list for part in parts):
            lists.add(item.name)
    return keys, booleans, lists


def _union_type() -> type:
    import types

    return types.UnionType


def rewrite_argv(argv: Sequence[str], schema: type, prog: str, spelling: Spelling | None = None) -> list[str]:
    """``argv`` in the one spelling; prints a deprecation warning on stderr for each old form it meets."""
    spelling = spelling or Spelling()
    keys, booleans, lists = field_kinds(schema)
    tokens = list(argv)
    out: list[str] = []
    size: dict[str, str] = {}
    position = 0
    while position < len(tokens):
        token = tokens[position]
        position += 1
        if not token.startswith("-") or token == "-":
            if spelling.positional is None:
                out.append(token)  # jsonargparse names it as unrecognised
            else:
                out += [f"--{spelling.positional}+", token]
            continue
        flag, has_value, value = token.partition("=")
        if flag in _NO_VALUE:
            out.append(token)
            continue
        if spelling.size_pair is not None and flag in ("--width", "--height"):
            if not has_value and position < len(tokens):
                value, position = tokens[position], position + 1
            size[flag[2:]] = value
            continue
        new_flag, implied = _new_name(flag, spelling.renames, keys, prog)
        key = new_flag[2:].split(".")[0].rstrip("+")
        if implied is not None:
            out += [new_flag, implied]
            continue
        if not has_value:
            if key in booleans and (position >= len(tokens) or tokens[position].startswith("--")):
                warn(prog, f"a bare {new_flag} is deprecated: write {new_flag} true")
                value = "true"
            elif position < len(tokens):
                value, position = tokens[position], position + 1
            else:
                out.append(new_flag)  # jsonargparse says it expects a value
                continue
        if key in lists and "." not in new_flag and not new_flag.endswith("+") and not _is_list_text(value):
            new_flag += "+"
        out += [new_flag, value]
    if size:
        width = size.get("width", str(spelling.size_pair[0]))
        height = size.get("height", str(spelling.size_pair[1]))
        given = " ".join(f"--{name} {size[name]}" for name in ("width", "height") if name in size)
        warn(prog, f"{given} is deprecated: write --size {width}x{height}")
        out += ["--size", f"{width}x{height}"]
    return out


def _new_name(flag: str, renames: Mapping[str, str], keys: set[str], prog: str) -> tuple[str, str | None]:
    """The new flag for an old one (and the value it implied, for old flags that took none)."""
    if flag in renames:
        new, _, implied = renames[flag].partition(" ")
        warn(prog, f"{flag} is deprecated: write {renames[flag] if implied else new}")
        return new, implied or None
    snake = flag[:2] + flag[2:].replace("-", "_")
    if snake != flag and snake[2:].split(".")[0].rstrip("+") in keys:
        warn(prog, f"{flag} is deprecated: write {snake}")
        return snake, None
    return flag, None


def _is_list_text(value: str) -> bool:
    return value.lstrip().startswith("[")


def warn(prog: str, message: str) -> None:
    print(f"{prog}: {message} (the old spelling goes in the next release)", file=sys.stderr)


def parse_size(text: str, key: str = "--size") -> tuple[int, int]:
    """``"256x192"`` -> (256, 192): width then height, as every command writes a size."""
    from shards.errors import UserError

    width, separator, height = text.lower().partition("x")
    if not separator or not width.strip().isdigit() or not height.strip().isdigit():
        raise UserError(f"{key} {text!r} is not WIDTHxHEIGHT in pixels, e.g. {key} 256x192")
    return int(width), int(height)


def looks_like_path(text: str) -> bool:
    """True when ``text`` is meant as a local path rather than a hub id (``user/name``): it starts with ``./``,
    ``../``, ``/`` or ``~``, has more than one slash, a first component that exists here, or a file extension."""
    from pathlib import Path

    if text.startswith(("./", "../", "/", "~", ".\\")) or text.count("/") > 1:
        return True
    if Path(text.split("/", 1)[0]).exists() and "/" in text:
        return True
    suffix = Path(text).suffix[1:]
    return suffix.isalpha() and 1 <= len(suffix) <= 5
