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
# watcher of the services, the demo), as it registers every area's commands. Each is allowed only
# inside a function: the same import at module level is a violation (every importer would need it).
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
_DYNAMIC_HOMES = {"importlib", "importlib.util", "builtins"}


def _dynamic_names(tree: ast.Module) -> set[str]:
    """The names that call an import by name in this module: the usual ones and every alias of them
    (``from importlib import import_module as _load``, ``_load = importlib.import_module``)."""
    names = set(_DYNAMIC)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in _DYNAMIC_HOMES:
            names.update(alias.asname or alias.name for alias in node.names if alias.name in _DYNAMIC)
    for node in ast.walk(tree):  # assignments may chain aliases: settle them in a second pass
        if isinstance(node, ast.Assign) and _called_name(node.value) in names:
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


def _called_name(func: ast.expr) -> str:
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""


def _is_lazy(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    """Whether ``node`` sits inside a function (runs when called, not when its module is imported)."""
    while node in parents:
        node = parents[node]
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            return True
    return False


def imports(module: str) -> dict[str, bool]:
    """Absolute names ``module`` imports (``from a import b`` yields ``a`` and ``a.b``) -> whether
    every import of that name is lazy (inside a function). Imports by name count too:
    ``importlib.import_module("name")``, ``__import__("name")``, ``find_spec("name")`` and any alias
    of them, with a literal name (the CLI's area table, whose names sit in a dict, is the documented
    exception)."""
    tree = ast.parse(MODULES[module].read_text(), filename=str(MODULES[module]))
    parents = {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
    dynamic = _dynamic_names(tree)
    found: dict[str, bool] = {}
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, node)
            names = [target, *(f"{target}.{alias.name}" for alias in node.names)]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str) and _called_name(node.func) in dynamic:
            names = [node.args[0].value]
        lazy = _is_lazy(node, parents)
        for name in names:
            found[name] = found.get(name, True) and lazy
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
            for target, lazy in imports(current).items():
                if lazy and any(current == where and _hits(target, {what}) for where, what in ALLOWED_LAZY):
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


def _walk_probes(tmp_path: Path, probes: dict[str, str], folder: str) -> dict[str, list[str]]:
    """:func:`walk` over ``probes`` (module name -> source), each standing in for that module."""
    saved = {name: MODULES.get(name) for name in probes}
    for name, text in probes.items():
        path = tmp_path / f"{name.replace('.', '_')}.py"
        path.write_text(text)
        MODULES[name] = path
    try:
        return walk(list(probes), FORBIDDEN[folder])
    finally:
        for name, old in saved.items():
            if old is None:
                MODULES.pop(name)
            else:
                MODULES[name] = old


@pytest.mark.parametrize("probe", [
    "from importlib import import_module as _load\n\n\ndef _tensorflow():\n    return _load(\"tensorflow\")\n",
    "import importlib\n_load = importlib.import_module\n_again = _load\n\n\ndef tf():\n    return _again('tensorflow')\n",
    "from builtins import __import__ as _imp\n\n\ndef tf():\n    return _imp('tensorflow')\n",
])
def test_rule_check_catches_a_forbidden_import_through_an_alias_of_import_module(tmp_path: Path, probe: str) -> None:
    """Inside a function the run-time ``sys.modules`` check never executes it: the source check must see it."""
    found = _walk_probes(tmp_path, {"streamedge.services._probe_alias": probe}, "services")
    assert found == {"streamedge.services._probe_alias": ["streamedge.services._probe_alias -> tensorflow"]}


def test_rule_check_refuses_a_lazy_exception_moved_to_module_level(tmp_path: Path) -> None:
    """paths may look streamedge.data up inside a function; at module level every device and worker would need it."""
    probe = "import streamedge.data  # noqa: F401\n\n\ndef data_dir():\n    return None\n"
    found = _walk_probes(tmp_path, {"streamedge.paths": probe}, "edge")
    assert found == {"streamedge.paths": ["streamedge.paths -> streamedge.data"]}
    lazy = "def data_dir():\n    import streamedge.data\n    return streamedge.data\n"
    assert _walk_probes(tmp_path, {"streamedge.paths": lazy}, "edge") == {}


# What each deployable's process may never load, and which modules make up that deployable.
RUNTIME: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "worker": (("core", "services"), ("tensorflow", "keras", "streamedge.training", "streamedge.data")),
    "device": (("core", "edge"), ("tensorflow", "keras", "faust", "aiokafka", "pandas", "streamedge.services",
                                  "streamedge.training", "streamedge.data")),
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
