"""What the folders cannot say about the layout, checked by parsing every import (module level, inside functions and
under ``TYPE_CHECKING``).

Each folder is a layer (``shards/`` the sample contract, ``shards/cli/`` what every command shares, ``shards/tools/``
the tools on shards, ``pseudolabel/``, ``distill/students/``, ``distill/training/``, ``distill/deploy/``,
``distill/evaluation/``, ``demo/``); ``distill``'s own top level holds the entry points (the Python API, the
commands) and, named here, the shared numerics (``align``, ``metrics``). What the folders cannot say is the order
between them, :data:`ALLOWED`, and the crossings allowed only inside a function, :data:`LAZY_CROSSINGS`. No
module imports itself back through others (no import circle).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: The project's code; tests and benchmarks may import anything and are not layers.
CODE = ("shards", "pseudolabel", "distill", "demo")
#: Top-level scripts and the layer they belong to.
SCRIPTS = {"distill.py": "distill", "pseudolabel.py": "pseudolabel"}
#: Modules whose layer is not their folder's: the numerics shared by training and evaluation, and ``python -m
#: shards`` (the tools' entry point at the contract's top).
EXACT_LAYERS = {"distill.align": "distill.numerics", "distill.metrics": "distill.numerics",
                "shards.__main__": "shards.tools"}
_SHARED = {"shards", "shards.cli", "shards.tools"}
#: Layer -> the layers it may import (besides itself). The stages share nothing but ``shards``; the contract imports
#: nothing of ours; evaluation may run deployment's models; ``distill``'s entry points may hand over to any of its
#: layers; the demo runs the whole pipeline.
ALLOWED = {
    "shards": set(),
    "shards.cli": set(),
    "shards.tools": {"shards", "shards.cli"},
    "pseudolabel": {"shards", "shards.cli"},
    "distill.numerics": {"shards"},
    "distill.students": {"distill.numerics", "shards"},
    "distill.training": {"distill.numerics", "distill.students", *_SHARED},
    "distill.deploy": {"distill.numerics", "distill.students", *_SHARED},
    "distill.evaluation": {"distill.deploy", "distill.numerics", "distill.students", *_SHARED},
    "distill": {"distill.training", "distill.evaluation", "distill.deploy", "distill.students", "distill.numerics",
                *_SHARED},
    "demo": {"distill", "distill.training", "distill.evaluation", "distill.deploy", "distill.students",
             "distill.numerics", "pseudolabel", *_SHARED},
}
#: Crossings allowed only inside a function, as (importing module, imported module): the two between the stages (a
#: teacher is run by the code that labels; a teacher file is run by the runners that deploy files), and the export
#: command's int8 accuracy gate, which scores with evaluation.
LAZY_CROSSINGS = {
    ("distill.deploy.model", "pseudolabel.teachers"),
    ("pseudolabel.teachers", "distill.deploy.exported"),
    ("distill.deploy.export", "distill.evaluation.evaluate"),
    ("distill.deploy.export", "distill.evaluation.protocols"),
}
#: A module longer than this says in its docstring why it is one idea (docs/decisions.md, "Contributing").
LONG_MODULE_LINES = 600


def module_name(path: Path, root: Path) -> str:
    """``distill/deploy/model.py`` -> ``distill.deploy.model``; a package's ``__init__`` is the package."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules(root: Path, packages: Iterable[str] = CODE) -> dict[str, Path]:
    """Every module of ``packages`` under ``root``, by dotted name."""
    return {
        module_name(path, root): path for package in packages for path in sorted((root / package).rglob("*.py"))
    }


def imports_of(path: Path, name: str, known: set[str]) -> list[tuple[str, bool]]:
    """Dotted modules imported by a file (all of them: module level, in functions, under ``TYPE_CHECKING``), each
    with whether the import sits inside a function. ``from package import name`` counts as importing
    ``package.name`` when that is a module of ``known``, else ``package``; relative imports are resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                found.extend((alias.name, in_function) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                for alias in child.names:
                    submodule = f"{base}.{alias.name}"
                    found.append((submodule if submodule in known else base, in_function))
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(tree, False)
    return found


def layer_of(module: str, root: Path = ROOT) -> str | None:
    """The layer of a project module: its folder (a package is its own folder), unless :data:`EXACT_LAYERS` names
    it; None for third-party modules."""
    if module.split(".")[0] not in CODE:
        return None
    if module in EXACT_LAYERS:
        return EXACT_LAYERS[module]
    parts = module.split(".")
    return module if (root / Path(*parts)).is_dir() else ".".join(parts[:-1]) or module


def layering_violations(root: Path) -> list[str]:
    modules = project_modules(root)
    files = [(name, path, layer_of(name, root)) for name, path in modules.items()]
    files += [(f"<{script}>", root / script, layer) for script, layer in SCRIPTS.items() if (root / script).is_file()]
    violations = []
    for name, path, layer in files:
        for imported, lazy in imports_of(path, name, set(modules)):
            target = layer_of(imported, root)
            if target is None or target == layer or target in ALLOWED[layer]:
                continue
            if lazy and (name, imported) in LAZY_CROSSINGS:
                continue
            how = " (inside a function)" if lazy else ""
            violations.append(f"{path.relative_to(root)} ({layer}) imports {imported} ({target}){how}")
    return violations


def import_cycles(root: Path, packages: Iterable[str] = CODE) -> list[list[str]]:
    """Circles among the project's modules, one per strongly connected component (Tarjan), each as a path."""
    modules = project_modules(root, packages)
    graph = {
        name: sorted({imported for imported, _ in imports_of(path, name, set(modules)) if imported in modules})
        for name, path in modules.items()
    }
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph[node]:
                components.append(sorted(component))

    for node in graph:
        if node not in index:
            connect(node)
    return components


def long_modules_without_reason(root: Path, limit: int = LONG_MODULE_LINES) -> list[str]:
    """Project modules over ``limit`` lines whose docstring does not say why they are one idea."""
    found = []
    for path in project_modules(root).values():
        text = path.read_text()
        if len(text.splitlines()) > limit and "one idea" not in (ast.get_docstring(ast.parse(text)) or "").lower():
            found.append(f"{path.relative_to(root)} ({len(text.splitlines())} lines)")
    return found


# ------------------------------------------------------------------------------------------------------- the tree


def test_imports_follow_the_layering() -> None:
    violations = layering_violations(ROOT)
    assert not violations, "layering broken:\n" + "\n".join(violations)


def test_every_project_module_has_a_layer() -> None:
    unknown = {name: layer_of(name) for name in project_modules(ROOT) if layer_of(name) not in ALLOWED}
    assert not unknown, f"folders without a rule in ALLOWED: {unknown}"


def test_no_import_cycle() -> None:
    cycles = import_cycles(ROOT)
    assert not cycles, "import circles:\n" + "\n".join(" <-> ".join(cycle) for cycle in cycles)


def test_a_long_module_says_why_it_is_one_idea() -> None:
    found = long_modules_without_reason(ROOT)
    assert not found, f"over {LONG_MODULE_LINES} lines without 'one idea' in the docstring: {found}"


# --------------------------------------------------------------------------------------- the checks themselves


def _write(root: Path, files: dict[str, str]) -> None:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_imports_are_read_at_every_level(tmp_path: Path) -> None:
    _write(tmp_path, {
        "distill/__init__.py": "",
        "distill/students/__init__.py": "",
        "distill/students/config.py": "",
        "distill/x.py": (
            "import os\nfrom typing import TYPE_CHECKING\nfrom distill.students import config\n"
            "if TYPE_CHECKING:\n    from distill.deploy import runtime\n"
            "def f():\n    import pseudolabel.teachers\n"
        ),
    })
    found = imports_of(tmp_path / "distill/x.py", "distill.x", set(project_modules(tmp_path, ["distill"])))
    assert ("distill.students.config", False) in found  # a submodule named in a from-import
    assert ("distill.deploy", False) in found  # under TYPE_CHECKING: still an import
    assert ("pseudolabel.teachers", True) in found


@pytest.mark.parametrize(
    ("module", "imported", "expected"),
    [
        ("distill.training.train", "distill.evaluation.evaluate", False),
        ("distill.training.train", "distill.deploy.export", False),
        ("distill.training.train", "distill.students", True),
        ("distill.deploy.export", "distill.training.data", False),
        ("distill.deploy.export", "distill.evaluation.evaluate", False),  # lazily only: LAZY_CROSSINGS
        ("distill.evaluation.compare", "distill.deploy.export", True),
        ("distill.deploy.benchmark", "distill.deploy.export", True),
        ("distill", "distill.deploy.model", True),
        ("distill.evaluate", "distill.evaluation.evaluate", True),
        ("distill.evaluation.compare", "distill.deploy.benchmark", True),
        ("distill.students.fastdepth", "distill.deploy.runtime", False),
        ("shards.reader", "distill.training.data", False),
        ("pseudolabel.run", "distill.students", False),
        ("demo.pipeline", "distill.evaluation.evaluate", True),
        ("shards.writer", "shards.cli.errors", False),
        ("shards.reader", "shards.tools.verify", False),
        ("shards.tools.verify", "shards.reader", True),
        ("pseudolabel.run", "shards.tools.pictures", False),
        ("distill.metrics", "distill.students", False),
        ("distill.students.base", "distill.align", True),
    ],
)
def test_layers_allow_what_the_rules_say(module: str, imported: str, expected: bool) -> None:
    assert (layer_of(imported) in ALLOWED[layer_of(module)] | {layer_of(module)}) is expected


def test_the_teacher_crossing_is_allowed_lazily_and_in_one_module_only(tmp_path: Path) -> None:
    lazy = "def load():\n    from pseudolabel.teachers import load_teacher\n"
    _write(tmp_path, {
        "distill/deploy/model.py": lazy,
        "distill/evaluation/evaluate.py": lazy,
        "distill/deploy/runtime.py": "from pseudolabel.teachers import load_teacher\n",
        "shards/x.py": "",
        "pseudolabel/teachers.py": "",
        "demo/x.py": "",
    })
    violations = layering_violations(tmp_path)
    assert len(violations) == 2, violations
    assert any(v.startswith("distill/evaluation/evaluate.py") for v in violations)
    assert any(v.startswith("distill/deploy/runtime.py") for v in violations)


def test_a_teacher_file_reaches_the_runners_lazily_and_from_teachers_only(tmp_path: Path) -> None:
    lazy = "def load():\n    from distill.deploy.exported import open_exported\n"
    _write(tmp_path, {
        "pseudolabel/teachers.py": lazy,
        "pseudolabel/run.py": lazy,
        "pseudolabel/plan.py": "from distill.deploy.exported import open_exported\n",
        "distill/deploy/exported.py": "",
        "distill/deploy/runtime.py": "",
        "pseudolabel/families.py": "def f():\n    from distill.deploy.runtime import OnnxRunner\n",
    })
    violations = layering_violations(tmp_path)
    assert len(violations) == 3, violations
    assert not any(v.startswith("pseudolabel/teachers.py") for v in violations)


def test_the_accuracy_gate_reaches_evaluation_lazily_and_from_export_only(tmp_path: Path) -> None:
    lazy = "def gate():\n    from distill.evaluation.evaluate import evaluate\n"
    _write(tmp_path, {
        "distill/deploy/export.py": lazy,
        "distill/deploy/benchmark.py": lazy,
        "distill/deploy/predict.py": "from distill.evaluation.evaluate import evaluate\n",
        "distill/evaluation/evaluate.py": "",
    })
    violations = layering_violations(tmp_path)
    assert len(violations) == 2, violations
    assert any(v.startswith("distill/deploy/benchmark.py") for v in violations)
    assert any(v.startswith("distill/deploy/predict.py") for v in violations)


def test_cycle_finder_sees_a_circle_through_type_checking(tmp_path: Path) -> None:
    _write(tmp_path, {
        "shards/__init__.py": "",
        "shards/a.py": "from shards.b import thing\n",
        "shards/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from shards.c import other\n",
        "shards/c.py": "import shards.a\n",
        "shards/d.py": "from shards import a\n",
    })
    assert import_cycles(tmp_path, ["shards"]) == [["shards.a", "shards.b", "shards.c"]]


def test_a_long_module_without_its_reason_is_found(tmp_path: Path) -> None:
    body = "x = 1\n" * (LONG_MODULE_LINES + 1)
    _write(tmp_path, {
        "shards/long.py": '"""A module."""\n' + body,
        "shards/explained.py": '"""Long, and one idea: the sample format."""\n' + body,
        "shards/short.py": "x = 1\n",
    })
    assert long_modules_without_reason(tmp_path) == [f"shards/long.py ({LONG_MODULE_LINES + 2} lines)"]
