"""A device is mostly aarch64: the edge distribution's exact pins resolve to wheels for one (issue 23).

Asks pip (PyPI, through pip's own cache) for the pins of ``streamedge-edge`` and ``streamedge-core``
as binary wheels for CPython 3.11 on ``manylinux_2_27_aarch64`` (glibc 2.27, the oldest device
glibc named in docs/edge.md), with the closure they pull in; a pin that only has an sdist or needs
a newer glibc fails. The extras need newer glibc (their aarch64 wheels say so) and are resolved at
that level. The emulated run of the agent on these wheels is ``deploy/edge/arm-smoke.sh``.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

_REPO = Path(__file__).resolve().parents[2]


def _platforms(glibc_minor: int) -> list[str]:
    """What pip on an aarch64 device with glibc 2.<minor> accepts: every manylinux level up to its own."""
    return [f"manylinux_2_{m}_aarch64" for m in range(glibc_minor, 16, -1)] + ["manylinux2014_aarch64"]


def _pins(folder: str, extra: str | None = None) -> list[str]:
    project = tomllib.loads((_REPO / folder / "pyproject.toml").read_text())["project"]
    pins = project["optional-dependencies"][extra] if extra else project["dependencies"]
    return [pin for pin in pins if not pin.startswith("streamedge-")]


def _download(pins: list[str], glibc_minor: int, dest: Path) -> dict[str, str]:
    """``pip download`` of ``pins`` and their dependencies as aarch64/cp311 wheels; ``{name: version}`` fetched."""
    platforms = [arg for tag in _platforms(glibc_minor) for arg in ("--platform", tag)]
    done = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--only-binary=:all:",
         *platforms, "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311", "--abi", "abi3",
         "--abi", "none", "--dest", str(dest), *pins],
        capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, f"pip could not resolve {pins} to aarch64 wheels: {done.stderr[-3000:]}"
    files = sorted(p.name for p in dest.iterdir())
    assert all(name.endswith(".whl") for name in files), files
    for name in files:  # every compiled wheel is for aarch64 and CPython 3.11 (or the stable ABI)
        tags = name[:-4].split("-")[-3:]
        assert tags[2] == "any" or "aarch64" in tags[2], name
        assert tags[1] in ("cp311", "abi3", "none"), name
    return {_normal(name.split("-")[0]): name.split("-")[1] for name in files}


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _assert_pinned(pins: list[str], fetched: dict[str, str]) -> None:
    for pin in pins:
        name, version = pin.split("==")
        assert fetched.get(_normal(name)) == version, f"{pin}: fetched {fetched}"


def test_edge_pins_resolve_to_aarch64_wheels_for_glibc_2_27(tmp_path: Path) -> None:
    pins = _pins("edge") + _pins("core")
    assert pins and all("==" in pin for pin in pins), pins  # exact pins only
    fetched = _download(pins, 27, tmp_path)
    _assert_pinned(pins, fetched)
    assert {"ai-edge-litert", "numpy", "orjson", "cryptography", "pydantic-core"} <= set(fetched)


def test_edge_extras_resolve_to_aarch64_wheels_at_their_glibc(tmp_path: Path) -> None:
    # tflite-runtime 2.14 publishes manylinux_2_34 aarch64 wheels, pyarrow 21 manylinux_2_28 (docs/edge.md, "ARM").
    for extra, glibc_minor in (("tflite", 34), ("parquet", 28)):
        pins = _pins("edge", extra)
        _assert_pinned(pins, _download(pins, glibc_minor, tmp_path / extra))
