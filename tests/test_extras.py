"""The install extras: every install hint names an extra that exists, running a file needs no exporter, and the
runtimes' environment (``make test-runtimes``) installs what the export tests need."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from distill.deploy.export import TOOLCHAINS

tomllib = pytest.importorskip("tomllib", reason="Python 3.11+ reads pyproject.toml with its standard library")

ROOT = Path(__file__).resolve().parents[1]
EXTRAS: dict[str, list[str]] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
HINT = re.compile(r"depth-distill\[([a-z0-9,-]+)\]|\.\[([a-z0-9,-]+)\]")  # lower case: EXTRA is a placeholder
#: The exporters, which running a file never needs (litert-torch brings JAX and an older typing-extensions).
EXPORTERS = ("onnx", "litert-torch", "ai-edge-quantizer")


def _package(requirement: str) -> str:
    return re.split(r"[<>=!~\[;\s]", requirement, maxsplit=1)[0].lower()


def _named_extras(text: str) -> set[str]:
    return {name for match in HINT.finditer(text) for group in match.groups() if group for name in group.split(",")}


def test_every_install_hint_names_an_extra_that_exists() -> None:
    files = [*ROOT.glob("distill/**/*.py"), *ROOT.glob("pseudolabel/**/*.py"), *ROOT.glob("shards/**/*.py"),
             ROOT / "README.md", *ROOT.glob("docs/*.md"), ROOT / "Makefile", *ROOT.glob("tests/**/*.py")]
    named = {(path.relative_to(ROOT).as_posix(), extra) for path in files for extra in _named_extras(path.read_text())}
    unknown = sorted((path, extra) for path, extra in named if extra not in EXTRAS)
    assert not unknown, f"install hints naming no extra of pyproject.toml: {unknown}"


def test_running_an_exported_file_needs_no_exporter() -> None:
    for extra in ("onnx", "litert"):
        packages = {_package(requirement) for requirement in EXTRAS[extra]}
        assert packages and not packages & set(EXPORTERS), (extra, packages)
    assert {_package(r) for r in EXTRAS["litert"]} == {"ai-edge-litert"}
    assert {_package(r) for r in EXTRAS["onnx"]} == {"onnxruntime"}


def test_each_export_extra_also_holds_its_runtime_for_the_parity_check() -> None:
    for run, export in (("onnx", "export-onnx"), ("litert", "export-litert")):
        assert {_package(r) for r in EXTRAS[run]} <= {_package(r) for r in EXTRAS[export]}, export


def test_make_test_runtimes_installs_the_phone_formats_export_extras() -> None:
    makefile = (ROOT / "Makefile").read_text()
    (line,) = [line for line in makefile.splitlines() if "$(RT_VENV)/bin/python -m pip install" in line]
    installed = _named_extras(line)
    assert {TOOLCHAINS[format][2] for format in ("tflite", "executorch", "coreml")} <= installed, line
