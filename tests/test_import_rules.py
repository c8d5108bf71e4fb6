"""The stages share nothing but shards on disk and the `shards` library (DESIGN.md): checked by parsing imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("shards", "pseudolabel", "distill")
FORBIDDEN = {"shards": {"pseudolabel", "distill"}, "pseudolabel": {"distill"}, "distill": {"pseudolabel"}}
# The one allowed crossing: the evaluation command builds a teacher through pseudolabel, lazily inside a function.
ALLOWED_LAZY = {("distill", "evaluate.py", "pseudolabel")}


def imports_of(path: Path) -> list[tuple[str, bool]]:
    """Top-level package names imported by a file, each with whether the import sits inside a function."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                found.extend((alias.name.split(".")[0], in_function) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                found.append((child.module.split(".")[0], in_function))
            visit(child, nested)

    visit(tree, False)
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_package_imports_follow_the_layering(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no python files in {package}/"
    violations = []
    for path in files:
        for imported, lazy in imports_of(path):
            if imported not in FORBIDDEN[package]:
                continue
            if lazy and (package, path.name, imported) in ALLOWED_LAZY:
                continue
            violations.append(f"{path.relative_to(ROOT)} imports {imported}{' (lazily)' if lazy else ''}")
    assert not violations, "layering broken:\n" + "\n".join(violations)


def test_rule_checker_sees_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import os\nfrom distill.students import create_student\ndef f():\n    import pseudolabel.teachers\n")
    assert ("distill", False) in imports_of(bad)
    assert ("pseudolabel", True) in imports_of(bad)
