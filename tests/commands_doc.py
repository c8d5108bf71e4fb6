"""Generate ``docs/commands.md`` from the commands' configs: ``python -m tests.commands_doc > docs/commands.md``.

One table per command: each key with its type, default and description, as ``--help`` shows them, so the page
cannot drift from the code (``tests/test_commands.py`` compares the two).
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing

from shards.cli.config import Command, build_parser

#: Keys jsonargparse adds to every command.
PARSER_KEYS = ("help", "config", "print_config")


def all_commands() -> list[Command]:
    """Every command of the project, in the order a user meets them."""
    from distill.cli import COMMAND as DISTILL
    from distill.deploy.benchmark import COMMAND as BENCHMARK
    from distill.deploy.export import COMMAND as EXPORT
    from distill.deploy.predict import COMMAND as PREDICT
    from distill.evaluation.compare import COMMAND as COMPARE
    from distill.evaluation.evaluate import COMMAND as EVALUATE
    from pseudolabel.cli import COMMAND as PSEUDOLABEL
    from shards.tools.commands import COMMANDS as SHARDS

    return [*SHARDS.values(), PSEUDOLABEL, DISTILL, EVALUATE, COMPARE, EXPORT, BENCHMARK, PREDICT]


def key_rows(command: Command) -> list[tuple[str, str, str, str]]:
    """(key, type, default, description) of every key the command's parser reads."""
    parser = build_parser(command.schema, command.prog, command.description)
    rows = []
    for action in parser._actions:  # noqa: SLF001 - the parser's own list of options, as --help walks it
        hint = getattr(action, "_typehint", None)
        if action.dest in PARSER_KEYS or hint is None:  # jsonargparse's own keys, and a section's --CONFIG file
            continue
        default = "required" if action.required else _default_text(action.default)
        rows.append((action.dest, type_text(hint), default, " ".join((action.help or "").split())))
    return rows


def type_text(hint: object) -> str:
    """A type as a reader wants it: ``int | null``, ``center | random``, ``list[str]``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return " | ".join(str(arg) for arg in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_text(arg) for arg in args)
    if hint is type(None):
        return "null"
    if origin is list:
        return f"list[{', '.join(type_text(arg) for arg in args)}]"
    return getattr(hint, "__name__", str(hint))


def _default_text(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def schema_sections(schema: type) -> list[type]:
    """The schema and every nested config dataclass, depth first."""
    found = [schema]
    hints = typing.get_type_hints(schema)
    for item in dataclasses.fields(schema):
        if dataclasses.is_dataclass(hints[item.name]):
            found += schema_sections(hints[item.name])
    return found


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;")


def generate() -> str:
    lines = [
        "# Commands and their keys",
        "",
        "Generated from the commands' configs by `python -m tests.commands_doc > docs/commands.md`; "
        "`tests/test_commands.py` fails when this page and the code differ. Every command reads its keys the same "
        "way: `--key value` on the command line, a YAML file of keys with `--config file.yaml` (flags on the "
        "command line override it wherever they stand), nested keys with dots (`--data.batch_size 32`), booleans "
        "as `--key true` or `--key false`, lists as `--key '[a, b]'` or by repeating `--key`. `--print_config` "
        "prints the resolved config; the "
        "commands that write an output save it beside it. A mistake in what you give (a missing file, an unknown "
        "key or model) stops with one line on stderr and exit status 2; `DEPTH_DISTILL_DEBUG=1` shows its "
        "traceback.",
        "",
        "| command | what it does |",
        "|---|---|",
    ]
    commands = all_commands()
    lines += [f"| [`{c.prog}`](#{_anchor(c.prog)}) | {_cell(c.description.split('. ')[0])} |" for c in commands]
    for command in commands:
        lines += ["", f"## {command.prog}", "", command.description, "", "| key | type | default | description |"]
        lines += ["|---|---|---|---|"]
        for key, type_text, default, description in key_rows(command):
            lines.append(f"| `--{key}` | {_cell(type_text)} | {_cell(default)} | {_cell(description)} |")
    return "\n".join(lines) + "\n"


def _anchor(title: str) -> str:
    return "".join(ch for ch in title.lower().replace(" ", "-") if ch.isalnum() or ch in "-_")


if __name__ == "__main__":
    sys.stdout.write(generate())
