"""The layering rules of DESIGN.md, checked on the source: what each area may import."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# area -> top-level modules it must never import (at any depth, lazily or not)
FORBIDDEN = {
    # KafkaSettings.faust_credentials imports faust inside the method, for stream workers only.
    "streamedge": {"tensorflow", "keras", "edge", "services", "training", "benchmarks", "pandas"},
    "edge": {"tensorflow", "keras", "faust", "aiokafka", "pandas", "services", "training", "benchmarks"},
    "services": {"tensorflow", "keras", "training", "benchmarks", "edge"},
    "training": {"faust", "services", "edge", "benchmarks"},
}
# The CLI imports each area lazily by name (importlib), never with an import statement.


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("area", sorted(FORBIDDEN))
def test_area_respects_dependency_rules(area: str) -> None:
    files = sorted((REPO / area).rglob("*.py"))
    assert files, f"no sources under {area}/"
    violations = {
        str(path.relative_to(REPO)): sorted(_imports(path) & FORBIDDEN[area])
        for path in files
        if _imports(path) & FORBIDDEN[area]
    }
    assert violations == {}
