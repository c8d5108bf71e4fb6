"""The documentation's Python blocks name code that exists: every import line in README.md and docs/*.md runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def import_lines(page: Path) -> list[str]:
    """Top-level ``import x`` / ``from x import y`` lines of the page's ```python blocks, comments dropped."""
    lines = []
    for block in re.findall(r"```python\n(.*?)```", page.read_text(), re.S):
        for line in block.splitlines():
            code = line.split("#")[0].rstrip()
            if re.match(r"^(from \S+ import [^(]+|import \S+)$", code):
                lines.append(code)
    return lines


@pytest.mark.parametrize("page", [page for page in PAGES if import_lines(page)], ids=lambda page: page.name)
def test_every_documented_import_runs(page: Path) -> None:
    failures = []
    for line in import_lines(page):
        try:
            exec(line, {})  # noqa: S102 - the page's own import line
        except ImportError as error:
            failures.append(f"{line}: {error}")
    assert not failures, f"{page.relative_to(ROOT)}:\n" + "\n".join(failures)
