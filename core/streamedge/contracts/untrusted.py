"""The one parse rule for untrusted JSON: bounded in size and depth before any code walks it.

Model-update records, manifests, promotion records, ledger files and heartbeats all come from
someone who may be hostile. :func:`load_json` is the only way they are decoded:

1. the size is checked before a byte is decoded (``max_bytes``);
2. the C decoder runs under its own recursion guard (a nesting deep enough to exhaust it is a
   refusal, never a crash);
3. the decoded value's nesting depth is measured by an iterative walk (no recursion) and
   refused above ``max_depth``, before any recursive code (``dataclasses.asdict``, the signing
   payload's ``json.dumps``) ever sees it;
4. ``NaN``, ``Infinity`` and ``-Infinity`` are refused: they are not JSON and no signature
   payload can hold them; so is a number too large for a float (``1e999``), which Python's
   decoder would otherwise turn into ``inf``.

:func:`check_depth` applies rule 3 to values built in code (a manifest's free-form fields).
Every failure is a :class:`~streamedge.errors.ManifestError` naming ``what`` was refused.
"""

from __future__ import annotations

import json
import math
from typing import Any, Final

from streamedge.errors import ManifestError

__all__ = ["MAX_DEPTH", "check_depth", "depth_of", "load_json"]

# Deepest nesting any streamedge message needs is 4 (update > manifest > metrics > {split: {...}});
# 32 leaves room for free-form metrics while keeping every recursive walk far from Python's limit.
MAX_DEPTH: Final = 32


def _no_constant(name: str) -> Any:
    raise ManifestError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ManifestError(f"number {text[:40]} is too large for a float")
    return value


def depth_of(value: Any, limit: int = MAX_DEPTH) -> int:
    """Nesting depth of a JSON-like value (a scalar is 0), measured iteratively; stops past ``limit``."""
    if not isinstance(value, dict | list | tuple):
        return 0
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]  # containers only: scalars never enter the stack
    while stack:
        item, depth = stack.pop()
        if depth > deepest:
            deepest = depth
            if deepest > limit:
                return deepest
        for child in item.values() if isinstance(item, dict) else item:
            if isinstance(child, dict | list | tuple):
                stack.append((child, depth + 1))
    return deepest


def check_depth(value: Any, what: str, max_depth: int = MAX_DEPTH) -> None:
    """Raise :class:`ManifestError` when ``value`` nests deeper than ``max_depth``."""
    if depth_of(value, max_depth) > max_depth:
        raise ManifestError(f"{what} nests deeper than {max_depth} levels")


def load_json(payload: bytes | str, what: str, max_bytes: int, max_depth: int = MAX_DEPTH) -> Any:
    """Decode untrusted JSON under the parse rule above.

    Args:
        payload: the untrusted bytes.
        what: names the input in error messages (``"model update"``, ``"heartbeat"``).
        max_bytes: largest payload decoded.
        max_depth: deepest nesting accepted.

    Raises:
        ManifestError: too large, not JSON, too deep or holding a non-finite constant; nothing else.
    """
    if len(payload) > max_bytes:
        raise ManifestError(f"{what} of {len(payload)} bytes exceeds {max_bytes}")
    try:
        value = json.loads(payload, parse_constant=_no_constant, parse_float=_finite_float)
    except ManifestError:
        raise
    except (ValueError, RecursionError, TypeError) as exc:  # invalid UTF-8, over-long integers included
        raise ManifestError(f"{what} is not JSON: {type(exc).__name__}: {str(exc)[:200]}") from exc
    check_depth(value, what, max_depth)
    return value
