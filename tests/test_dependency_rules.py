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
# streamedge.data ships with the training distribution: a device or a worker does not have it.
FORBIDDEN: dict[str, set[str]] = {
    "core": {"tensorflow", "keras", "tf_keras", "pandas", "faust", "aiokafka", "streamedge.edge", "streamedge.services",
             "streamedge.training", "streamedge.data", "streamedge.benchmarks", "streamedge.demo"},
    "edge": {"tensorflow", "keras", "tf_keras", "faust", "aiokafka", "pandas", "streamedge.services",
             "streamedge.training", "streamedge.data", "streamedge.benchmarks", "streamedge.demo"},
    "services": {"tensorflow", "keras", "tf_keras", "streamedge.training", "streamedge.data", "streamedge.edge",
                 "streamedge.benchmarks", "streamedge.demo"},
    "training": {"faust", "aiokafka", "streamedge.services", "streamedge.edge", "streamedge.benchmarks",
                 "streamedge.demo"},
}
FOLDERS = ("core", "edge", "services", "training", "benchmarks", "demo")
# The lazy exceptions, named here so that no other can hide: KafkaSettings.faust_credentials imports
# faust inside the method, for stream workers only; paths.data_dir looks the training-only data
# package up and says what to install when it is absent; the CLI runs two areas by name (the canary
# watcher of the services, the demo), as it registers every area's commands.
ALLOWED_LAZY = {("streamedge.kafka.settings", "faust"), ("streamedge.paths", "streamedge.data"),
                ("streamedge.cli.canary_cmd", "streamedge.services.canary"), ("streamedge.cli.demo_cmd", "streamedge.demo")}


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


_DYNAMIC = {"import_module", "__import__", "find_spec"}


def imports_of(module: str) -> set[str]:
    """Absolute names ``module`` imports (``from a import b`` yields ``a`` and ``a.b``), including
    ``importlib.import_module("name")``, ``__import__("name")`` and ``find_spec("name")`` with a
    literal name (the CLI's area table, whose names sit in a dict, is the documented exception)."""
    tree = ast.parse(MODULES[module].read_text(), filename=str(MODULES[module]))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, node)
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if name in _DYNAMIC:
                found.add(node.args[0].value)
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
                if any(current == where and _hits(target, {what}) for where, what in ALLOWED_LAZY):
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
    """The checker itself: a relative import, a lazy import two modules away, an import by name and
    the training-only data package are each caught."""
    probes = {
        "streamedge.services._probe_rel": "from ..training import models\n",
        "streamedge.services._probe_chain": "from streamedge.contracts import _probe_bad\n",
        "streamedge.contracts._probe_bad": "def load():\n    import tensorflow\n",
        "streamedge.services._probe_dynamic": "import importlib\nTF = lambda: importlib.import_module('tensorflow')\n",
        "streamedge.services._probe_data": "import streamedge.data\n",
    }
    for name, text in probes.items():
        path = tmp_path / f"{name.rsplit('.', 1)[1]}.py"
        path.write_text(text)
        MODULES[name] = path
    try:
        found = walk([name for name in probes if name.startswith("streamedge.services.")], FORBIDDEN["services"])
    finally:
        for name in probes:
            MODULES.pop(name)
    assert found == {
        "streamedge.services._probe_rel": ["streamedge.services._probe_rel -> streamedge.training",
                                           "streamedge.services._probe_rel -> streamedge.training.models"],
        "streamedge.services._probe_chain": ["streamedge.contracts._probe_bad -> tensorflow"],
        "streamedge.services._probe_dynamic": ["streamedge.services._probe_dynamic -> tensorflow"],
        "streamedge.services._probe_data": ["streamedge.services._probe_data -> streamedge.data"],
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
