"""How easy the code base is to enter: modules per package, the longest functions, the modules over 600 lines.

    python benchmarks/code_layout.py [--out benchmarks/results/code_layout.json]

Counts the tracked modules of the three packages (``git ls-files``, as the issue "One concept, one place" counts
them) and every function's length in lines, outside ``tests/``. The path of one label through the files is
``tests/test_label_path.py``'s to measure.
"""

from __future__ import annotations

import argparse
import ast
import json
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("shards", "pseudolabel", "distill")
#: Code that is not a test: the packages, the demo and the benchmarks.
CODE = (*PACKAGES, "demo", "benchmarks")


def tracked(patterns: list[str]) -> list[str]:
    listing = subprocess.run(["git", "ls-files", *patterns], cwd=ROOT, capture_output=True, text=True, check=True)
    return [path for path in listing.stdout.split() if (ROOT / path).is_file()]


def function_lengths(paths: list[str]) -> list[tuple[int, str]]:
    """(lines, ``path:line name``) of every function and method, longest first."""
    found = []
    for path in paths:
        for node in ast.walk(ast.parse((ROOT / path).read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                found.append((node.end_lineno - node.lineno + 1, f"{path}:{node.lineno} {node.name}"))
    return sorted(found, reverse=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "code_layout.json"))
    args = parser.parse_args()
    modules = tracked([f"{package}/*.py" for package in PACKAGES])
    lines = {path: len((ROOT / path).read_text().splitlines()) for path in modules}
    functions = function_lengths(tracked([f"{folder}/*.py" for folder in CODE]))
    result = {
        "modules": len(modules),
        "modules_per_package": {package: sum(path.startswith(package + "/") for path in modules)
                                for package in PACKAGES},
        "lines": sum(lines.values()),
        "modules_over_600_lines": {path: count for path, count in sorted(lines.items()) if count > 600},
        "longest_functions": [{"lines": count, "where": where} for count, where in functions[:8]],
        "functions_over_60_lines": sum(count > 60 for count, _ in functions),
        "functions_over_80_lines": sum(count > 80 for count, _ in functions),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
