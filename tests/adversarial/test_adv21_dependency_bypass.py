"""Issue 21: dependency rules that cannot be bypassed. The rule checker of the suite must flag
(1) a forbidden package loaded through an aliased ``import_module`` inside a function, which the
run-time ``sys.modules`` check never executes, and (2) a module-level import of a package that is
allowed only lazily (the named lazy exceptions must stay lazy)."""

from __future__ import annotations

from pathlib import Path

from tests import test_dependency_rules as rules


def _walk(tmp_path: Path, probes: dict[str, str], folder: str) -> dict[str, list[str]]:
    saved = {name: rules.MODULES.get(name) for name in probes}
    for name, text in probes.items():
        path = tmp_path / f"{name.replace('.', '_')}.py"
        path.write_text(text)
        rules.MODULES[name] = path
    try:
        return rules.walk(list(probes), rules.FORBIDDEN[folder])
    finally:
        for name, old in saved.items():
            if old is None:
                rules.MODULES.pop(name)
            else:
                rules.MODULES[name] = old


def test_aliased_import_module_inside_a_function_is_caught(tmp_path: Path) -> None:
    probe = ("from importlib import import_module as _load\n\n\n"
             "def _tensorflow():\n    return _load(\"tensorflow\")\n")
    found = _walk(tmp_path, {"streamedge.services._probe_alias": probe}, "services")
    assert found, "a worker module loading tensorflow via an aliased import_module passes the rule check"


def test_a_lazy_exception_moved_to_module_level_is_caught(tmp_path: Path) -> None:
    # streamedge.paths may look streamedge.data up lazily; importing it at module level makes every
    # device and worker need the training distribution.
    probe = "import streamedge.data  # noqa: F401\n\n\ndef data_dir():\n    return None\n"
    found = _walk(tmp_path, {"streamedge.paths": probe}, "edge")
    assert found, "core's paths importing the training-only data package at module level passes the rule check"
