"""The layering rules of DESIGN.md, checked on the source: what each area may import."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# area -> top-level modules it must never import (at any depth, lazily or not)
_AREAS = ("edge", "services", "training", "benchmarks")
FORBIDDEN = {
    # The shared core: every module of streamedge/ outside the four areas (and the CLI, which
    # imports each area lazily by name). KafkaSettings.faust_credentials imports faust inside the
    # method, for stream workers only.
    "core": {"tensorflow", "keras", "pandas", *(f"streamedge.{a}" for a in _AREAS)},
    "edge": {"tensorflow", "keras", "faust", "aiokafka", "pandas", "streamedge.services", "streamedge.training",
             "streamedge.benchmarks"},
    "services": {"tensorflow", "keras", "streamedge.training", "streamedge.benchmarks", "streamedge.edge"},
    "training": {"faust", "streamedge.services", "streamedge.edge", "streamedge.benchmarks"},
}
# The CLI imports each area lazily by name (importlib), never with an import statement.


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(_top(alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(_top(node.module))
    return found


def _top(module: str) -> str:
    """``tensorflow.lite`` -> ``tensorflow``; ``streamedge.edge.agent`` -> ``streamedge.edge``."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "streamedge" else parts[0]


def _sources(area: str) -> list[Path]:
    package = REPO / "streamedge"
    if area != "core":
        return sorted((package / area).rglob("*.py"))
    return sorted(path for path in package.rglob("*.py")
                  if path.relative_to(package).parts[0] not in _AREAS)


@pytest.mark.parametrize("area", sorted(FORBIDDEN))
def test_area_respects_dependency_rules(area: str) -> None:
    files = _sources(area)
    assert files, f"no sources for {area}"
    violations = {
        str(path.relative_to(REPO)): sorted(_imports(path) & FORBIDDEN[area])
        for path in files
        if _imports(path) & FORBIDDEN[area]
    }
    assert violations == {}
