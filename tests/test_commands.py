"""Every command's surface: one parser and one spelling, help that describes every key, docs/commands.md generated
from the configs, old spellings refused by name, and user errors as one line with exit status 2."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from shards.cli.config import Command, expand_list_flags, looks_like_path
from tests.commands_doc import all_commands, generate, key_rows, schema_sections

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = all_commands()


def _help(command: Command, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("COLUMNS", "10000")  # no wrapping, so each description reads as one string
    with pytest.raises(SystemExit) as stopped:
        command.parse(["--help"])
    assert stopped.value.code == 0
    return " ".join(capsys.readouterr().out.split())


def test_docs_commands_md_is_generated_from_the_configs() -> None:
    page = (ROOT / "docs" / "commands.md").read_text()
    assert page == generate(), "docs/commands.md is stale: run python -m tests.commands_doc > docs/commands.md"


@pytest.mark.parametrize("command", COMMANDS, ids=[command.prog for command in COMMANDS])
def test_help_describes_every_key_and_lists_choices(command: Command, capsys, monkeypatch) -> None:
    text = _help(command, capsys, monkeypatch)
    for key, _, _, description in key_rows(command):
        assert description, f"{command.prog} --{key} has no description (a string under its dataclass field)"
        assert f"--{key}" in text and description in text, key
    for section in schema_sections(command.schema):
        title = " ".join((section.__doc__ or "").split())
        assert not title.startswith(f"{section.__name__}("), f"{section.__name__} needs a docstring: its help title"
        hints = typing.get_type_hints(section)
        for item in dataclasses.fields(section):
            for part in (hints[item.name], *typing.get_args(hints[item.name])):
                if typing.get_origin(part) is typing.Literal:
                    assert all(str(choice) in text for choice in typing.get_args(part)), item.name


def test_keys_are_snake_case() -> None:
    for command in COMMANDS:
        for key, *_ in key_rows(command):
            assert key == key.lower() and "-" not in key, f"{command.prog} --{key}"


def test_architecture_help_names_every_registered_family() -> None:
    from distill.students import ARCHITECTURES
    from distill.students.config import StudentConfig

    command = next(command for command in COMMANDS if command.prog == "distill.py")
    description = dict((key, text) for key, _, _, text in key_rows(command))["student.architecture"]
    assert all(name in description for name in ARCHITECTURES), sorted(ARCHITECTURES)
    assert StudentConfig().architecture in ARCHITECTURES


@dataclasses.dataclass(kw_only=True)
class _Lists:
    """A schema with list keys, for the list-flag expansion."""

    model: list[str]
    shards: list[str] = dataclasses.field(default_factory=list)
    int8: bool = False


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--model", "a", "--model", "b"], ["--model+", "a", "--model+", "b"]),
        (["--model", "[a, b]"], ["--model", "[a, b]"]),
        (["x", "--int8=true", "y"], ["--shards+", "x", "--int8", "true", "--shards+", "y"]),
        (["--int8", "false", "--model=a"], ["--int8", "false", "--model+", "a"]),
    ],
)
def test_repeated_list_flags_and_bare_words_fill_lists(argv, expected) -> None:
    assert expand_list_flags(argv, _Lists, positional="shards") == expected


@pytest.mark.parametrize(
    ("text", "is_path"),
    [("Intel/dpt-large", False), ("user/nyu_depth_v2", False), ("./data", True), ("../x", True),
     ("data/nyu/x", True), ("nyu_depth_v2_labeled.mat", True), ("tests/nosuch", True)],
)
def test_what_looks_like_a_path(text: str, is_path: bool) -> None:
    assert looks_like_path(text) == is_path


@pytest.mark.parametrize(
    "argv",
    [["--n", "2"], ["--seed", "3"], ["--width", "64"], ["--batch-size", "2"], ["--holes"]],
)
def test_old_spellings_are_refused_by_name(argv: list[str], tmp_path: Path, capsys) -> None:
    """The project never released: an old spelling is an unknown key (or a missing value), named in one line."""
    from shards.tools.commands import main

    assert main(["scenes", "--out", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err
    assert argv[0] in err and "deprecated" not in err
    assert not (tmp_path / "rgb").exists()


# ---------------------------------------------------------------------------------------------- user errors


def _run(*argv: str, cwd: Path, debug: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    env.pop("DEPTH_DISTILL_DEBUG", None)
    if debug:
        env["DEPTH_DISTILL_DEBUG"] = "1"
    return subprocess.run([sys.executable, *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bad")
    (root / "empty").mkdir()
    (root / "notes").mkdir()
    (root / "notes" / "readme.txt").write_text("not a picture\n")
    (root / "fake.onnx").write_bytes(b"not a model")
    (root / "picture.png").write_bytes(b"")
    return root


BAD_INPUTS = {
    "predict_missing_model": (
        ["-m", "distill.predict", "--model", "runs/nosuch/student", "picture.png", "--out", "o"],
        "--model runs/nosuch/student: no such student folder or model file",
    ),
    "export_missing_model": (
        ["-m", "distill.export", "--model", "runs/nosuch", "--out", "o.onnx"], "--model runs/nosuch: no such"),
    "export_refuses_onnx": (
        ["-m", "distill.export", "--model", "fake.onnx", "--out", "o.onnx"], "is an exported .onnx file already"),
    "predict_broken_onnx": (
        ["-m", "distill.predict", "--model", "fake.onnx", "picture.png", "--out", "o"],
        "--model fake.onnx: not a readable ONNX model",
    ),
    "benchmark_missing_model": (
        ["-m", "distill.benchmark", "--model", "nosuch", "--out", "b.json"], "--model nosuch: no such folder"),
    "show_empty_folder": (["-m", "shards", "show", "empty", "--out", "g.png"], "no *.tar shards in folder empty"),
    "evaluate_mistyped_data": (
        ["-m", "distill.evaluate", "--model", "constant", "--data", "./data/nyu_labled", "--out", "o"],
        "--data ./data/nyu_labled: no such file or folder",
    ),
    "evaluate_missing_mat": (
        ["-m", "distill.evaluate", "--model", "constant", "--data", "nyu.mat", "--splits", "s.mat", "--out", "o"],
        "nyu.mat: no such file",
    ),
    "evaluate_folder_of_non_images": (
        ["-m", "distill.evaluate", "--model", "constant", "--data", "notes", "--out", "o"],
        "--data notes is a folder of none of the forms",
    ),
    "evaluate_unknown_key": (
        ["-m", "distill.evaluate", "--model", "constant", "--dat", "x", "--out", "o"], "unrecognized arguments: --dat"),
    "evaluate_offline_teacher": (
        ["-m", "distill.evaluate", "--model", "nosuch-org/nosuch-model", "--data", "notes", "--out", "o"],
        "set --model to that folder",
    ),
    "import_rgbd_no_mode": (["-m", "shards", "import-rgbd", "--out", "o"], "give either --images"),
    "import_rgbd_missing_mat": (
        ["-m", "shards", "import-rgbd", "--data", "nyu.mat", "--splits", "s.mat", "--out", "o"], "no such file"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_a_user_error_is_one_line_with_exit_2(bad_inputs: Path, case: str) -> None:
    argv, named = BAD_INPUTS[case]
    completed = _run(*argv, cwd=bad_inputs)
    errors = [line for line in completed.stderr.splitlines() if ": error: " in line]
    assert completed.returncode == 2, completed.stderr
    assert "Traceback" not in completed.stderr + completed.stdout
    assert "usage:" not in completed.stderr
    assert len(errors) == 1 and named in errors[0], completed.stderr


def test_debug_shows_the_traceback_of_a_user_error(bad_inputs: Path) -> None:
    completed = _run("-m", "shards", "show", "empty", "--out", "g.png", cwd=bad_inputs, debug=True)
    assert completed.returncode != 0 and "Traceback" in completed.stderr
