"""The layout's rules, checked by parsing every import (module level, inside functions and under ``TYPE_CHECKING``).

The stages share nothing but shards on disk and the ``shards`` library: ``shards`` imports neither stage and
``pseudolabel`` never imports ``distill``. Inside ``distill``, each job is a layer:

- the shared numerics (``align``, ``metrics``, ``losses``) and the students use nothing above them;
- training (the rest of ``distill``'s top level) uses the students and the numerics, never evaluation or deploy;
- deploy uses the students and the numerics, and, lazily and in one module only (the Python API's
  ``DepthModel``), ``pseudolabel.teachers`` (so that a teacher is run by the code that labels);
- evaluation uses all of those (training excepted);
- release (the export command and its checks) sits above evaluation: an int8 export is scored on evaluation data;
- the ``distill`` package itself is the Python API's front door: it may hand ``DepthModel`` over from deploy;
- the ``python -m distill.<command>`` modules only hand over to the job that runs them;
- ``demo/`` may import anything.

No module imports itself back through others (no import circle), and no file is over ``MAX_LINES`` lines.
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
SCRIPTS = {"distill.py": "training", "pseudolabel.py": "pseudolabel"}
NUMERICS = ("distill.align", "distill.metrics", "distill.losses")
COMMANDS = ("distill.evaluate", "distill.compare", "distill.export", "distill.benchmark", "distill.predict")
#: Module prefix -> layer; the longest matching prefix decides.
LAYER_PREFIXES = {
    "shards": "shards",
    "pseudolabel": "pseudolabel",
    "demo": "demo",
    "distill": "training",
    "distill.students": "students",
    "distill.deploy": "deploy",
    "distill.evaluation": "evaluation",
    "distill.deploy.export": "release",
    "distill.deploy.release": "release",
    **{module: "numerics" for module in NUMERICS},
    **{module: "commands" for module in COMMANDS},
}
ALLOWED = {
    "shards": {"shards"},
    "pseudolabel": {"pseudolabel", "shards"},
    "numerics": {"numerics", "shards"},
    "students": {"students", "numerics", "shards"},
    "training": {"training", "students", "numerics", "shards"},
    "deploy": {"deploy", "students", "numerics", "shards"},
    "evaluation": {"evaluation", "deploy", "students", "numerics", "shards"},
    "release": {"release", "evaluation", "deploy", "students", "numerics", "shards"},
    "commands": {"evaluation", "deploy", "release"},
    "api": {"deploy"},
    "demo": {
        "demo", "shards", "pseudolabel", "training", "numerics", "students", "deploy", "evaluation", "release",
        "commands", "api",
    },
}
#: Modules whose layer is their own, not their prefix's: the ``distill`` package is the Python API's front door.
EXACT_LAYERS = {"distill": "api"}
#: The one crossing between the stages: (importing module, imported module), allowed only inside a function.
LAZY_CROSSINGS = {("distill.deploy.model", "pseudolabel.teachers")}

MAX_LINES = 400
#: Files over MAX_LINES that another change in flight splits; each must still be over (else remove it here).
OVER_LIMIT_IN_FLIGHT: dict[str, str] = {}  # path -> why it may stay over the limit for now
#: Folders that hold no project source (environments, caches, outputs).
NOT_SOURCE = {"build", "runs", "demo_out", "demo_out_ci", "out", "data", "node_modules"}


def module_name(path: Path, root: Path) -> str:
    """``distill/evaluation/models.py`` -> ``distill.evaluation.models``; a package's ``__init__`` is the package."""
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


def layer_of(module: str) -> str | None:
    """The layer of a project module (None for third-party ones)."""
    if module in EXACT_LAYERS:
        return EXACT_LAYERS[module]
    matches = [prefix for prefix in LAYER_PREFIXES if module == prefix or module.startswith(prefix + ".")]
    return LAYER_PREFIXES[max(matches, key=len)] if matches else None


def layering_violations(root: Path) -> list[str]:
    modules = project_modules(root)
    files = [(name, path, layer_of(name)) for name, path in modules.items()]
    files += [(f"<{script}>", root / script, layer) for script, layer in SCRIPTS.items() if (root / script).is_file()]
    violations = []
    for name, path, layer in files:
        for imported, lazy in imports_of(path, name, set(modules)):
            target = layer_of(imported)
            if target is None or target in ALLOWED[layer]:
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


def long_files(root: Path, limit: int = MAX_LINES) -> dict[str, int]:
    """Python files of the tree over ``limit`` lines, by path relative to ``root``."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).parts
        if any(part.startswith(".") or part in NOT_SOURCE for part in parts[:-1]):
            continue
        count = len(path.read_text().splitlines())
        if count > limit:
            found[path.relative_to(root).as_posix()] = count
    return found


# ------------------------------------------------------------------------------------------------------- the tree


def test_imports_follow_the_layering() -> None:
    violations = layering_violations(ROOT)
    assert not violations, "layering broken:\n" + "\n".join(violations)


def test_every_project_module_has_a_layer() -> None:
    assert all(layer_of(name) in ALLOWED for name in project_modules(ROOT))


def test_no_import_cycle() -> None:
    cycles = import_cycles(ROOT)
    assert not cycles, "import circles:\n" + "\n".join(" <-> ".join(cycle) for cycle in cycles)


def test_no_file_over_the_line_limit() -> None:
    found = long_files(ROOT)
    unexpected = {path: count for path, count in found.items() if path not in OVER_LIMIT_IN_FLIGHT}
    assert not unexpected, f"files over {MAX_LINES} lines (split them by job): {unexpected}"
    done = sorted(set(OVER_LIMIT_IN_FLIGHT) - set(found))
    assert not done, f"{done} no longer over {MAX_LINES} lines: remove them from OVER_LIMIT_IN_FLIGHT"


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
        ("distill.train", "distill.evaluation.evaluate", False),
        ("distill.train", "distill.deploy.export", False),
        ("distill.train", "distill.students", True),
        ("distill.deploy.export", "distill.data", False),
        ("distill.deploy.export", "distill.evaluation.evaluate", True),
        ("distill.evaluation.compare", "distill.deploy.export", False),
        ("distill.deploy.benchmark", "distill.deploy.release", False),
        ("distill", "distill.deploy.model", True),
        ("distill", "distill.evaluation.evaluate", False),
        ("distill.evaluation.compare", "distill.deploy.benchmark", True),
        ("distill.students.fastdepth", "distill.deploy.runtime", False),
        ("shards.reader", "distill.data", False),
        ("pseudolabel.run", "distill.students", False),
        ("demo.pipeline", "distill.evaluation.evaluate", True),
    ],
)
def test_layers_allow_what_the_rules_say(module: str, imported: str, expected: bool) -> None:
    assert (layer_of(imported) in ALLOWED[layer_of(module)]) is expected


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


def test_cycle_finder_sees_a_circle_through_type_checking(tmp_path: Path) -> None:
    _write(tmp_path, {
        "shards/__init__.py": "",
        "shards/a.py": "from shards.b import thing\n",
        "shards/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from shards.c import other\n",
        "shards/c.py": "import shards.a\n",
        "shards/d.py": "from shards import a\n",
    })
    assert import_cycles(tmp_path, ["shards"]) == [["shards.a", "shards.b", "shards.c"]]


def test_line_counter_sees_a_long_file(tmp_path: Path) -> None:
    long, short = "x = 1\n" * (MAX_LINES + 1), "x = 1\n"
    _write(tmp_path, {"pkg/long.py": long, "pkg/short.py": short, ".venv/big.py": long})
    assert long_files(tmp_path) == {"pkg/long.py": MAX_LINES + 1}
