"""The layering rules of DESIGN.md: what each deployable may import, checked two ways.

1. On the source: the module graph of each distribution folder, following absolute and relative
   imports (lazy ones inside functions too) through every streamedge module they reach, must not
   reach a forbidden module. The CLI imports areas by name (importlib), never with a statement.
2. At run time: a fresh interpreter imports every module of a deployable and ``sys.modules`` must
   hold none of the forbidden packages (what a worker or a device really loads).

The packaging is the first guard (each folder's ``pyproject.toml`` declares only what it may use, see
``test_wheel.py``); these are the second.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# Distribution folder -> the modules its code (and every streamedge module it imports) must never reach.
FORBIDDEN: dict[str, set[str]] = {
    "core": {"tensorflow", "keras", "pandas", "faust", "aiokafka", "streamedge.edge", "streamedge.services",
             "streamedge.training", "streamedge.benchmarks", "streamedge.demo"},
    "edge": {"tensorflow", "keras", "faust", "aiokafka", "pandas", "streamedge.services", "streamedge.training",
             "streamedge.benchmarks", "streamedge.demo"},
    "services": {"tensorflow", "keras", "streamedge.training", "streamedge.edge", "streamedge.benchmarks",
                 "streamedge.demo"},
    "training": {"faust", "aiokafka", "streamedge.services", "streamedge.edge", "streamedge.benchmarks",
                 "streamedge.demo"},
}
FOLDERS = ("core", "edge", "services", "training", "benchmarks", "demo")
# KafkaSettings.faust_credentials imports faust inside the method, for stream workers only: the one
# lazy exception, named here so that no other can hide.
ALLOWED_LAZY = {("streamedge.kafka.settings", "faust")}


def _module_files() -> dict[str, Path]:
    """Every streamedge module of the workspace: dotted name -> file."""
    found: dict[str, Path] = {}
    for folder in FOLDERS:
        root = REPO / folder
        for path in sorted((root / "streamedge").rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


MODULES = _module_files()


def _resolve(module: str, node: ast.ImportFrom) -> str:
    """The absolute name an ``ImportFrom`` refers to, relative imports included."""
    if node.level == 0:
        return node.module or ""
    is_package = MODULES[module].name == "__init__.py"
    base = module.split(".")
    base = base if is_package else base[:-1]
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def imports_of(module: str) -> set[str]:
    """Absolute names ``module`` imports (``from a import b`` yields ``a`` and ``a.b``)."""
    tree = ast.parse(MODULES[module].read_text(), filename=str(MODULES[module]))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, node)
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


def _hits(name: str, forbidden: set[str]) -> set[str]:
    return {f for f in forbidden if name == f or name.startswith(f + ".")}


def walk(own: list[str], forbidden: set[str]) -> dict[str, list[str]]:
    """For each module in ``own``: the forbidden imports it reaches through the streamedge module graph."""
    violations: dict[str, list[str]] = {}
    for start in own:
        seen, stack, bad = {start}, [start], set()
        while stack:
            current = stack.pop()
            for target in imports_of(current):
                if (current, target.split(".")[0]) in ALLOWED_LAZY:
                    continue
                if _hits(target, forbidden):
                    bad.add(f"{current} -> {target}")
                elif target in MODULES and target not in seen:
                    seen.add(target)
                    stack.append(target)
        if bad:
            violations[start] = sorted(bad)
    return violations


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_module_graph_respects_dependency_rules(folder: str) -> None:
    own = [m for m, p in MODULES.items() if p.is_relative_to(REPO / folder)]
    assert len(own) > 5, f"no sources for {folder}"
    assert walk(own, FORBIDDEN[folder]) == {}


def test_rule_check_follows_relative_imports_and_imports_of_imports(tmp_path: Path) -> None:
    """The checker itself: a relative import, and a lazy import two modules away, are both caught."""
    probes = {
        "streamedge.services._probe_rel": "from ..training import models\n",
        "streamedge.services._probe_chain": "from streamedge.contracts import _probe_bad\n",
        "streamedge.contracts._probe_bad": "def load():\n    import tensorflow\n",
    }
    for name, text in probes.items():
        path = tmp_path / f"{name.rsplit('.', 1)[1]}.py"
        path.write_text(text)
        MODULES[name] = path
    try:
        found = walk(["streamedge.services._probe_rel", "streamedge.services._probe_chain"], FORBIDDEN["services"])
    finally:
        for name in probes:
            MODULES.pop(name)
    assert found == {
        "streamedge.services._probe_rel": ["streamedge.services._probe_rel -> streamedge.training",
                                           "streamedge.services._probe_rel -> streamedge.training.models"],
        "streamedge.services._probe_chain": ["streamedge.contracts._probe_bad -> tensorflow"],
    }


# What each deployable's process may never load, and which modules make up that deployable.
RUNTIME: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "worker": (("core", "services"), ("tensorflow", "keras", "streamedge.training")),
    "device": (("core", "edge"), ("tensorflow", "keras", "faust", "aiokafka", "pandas", "streamedge.services",
                                  "streamedge.training")),
}

_IMPORT_ALL = """
import importlib, json, sys
for name in json.loads(sys.argv[1]):
    importlib.import_module(name)
print(json.dumps(sorted(m for m in json.loads(sys.argv[2]) if m in sys.modules)))
"""


@pytest.mark.parametrize("deployable", sorted(RUNTIME))
def test_deployable_imports_nothing_forbidden_at_run_time(deployable: str) -> None:
    folders, forbidden = RUNTIME[deployable]
    names = sorted(m for m, p in MODULES.items()
                   if any(p.is_relative_to(REPO / f) for f in folders) and not m.endswith("__main__"))
    assert len(names) > 20, names
    done = subprocess.run([sys.executable, "-c", _IMPORT_ALL, json.dumps(names), json.dumps(forbidden)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout) == []
