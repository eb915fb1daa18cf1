"""The CLI's parser class: a typo in a subcommand's flags is reported by that subcommand.

Plain argparse lets a subcommand hand unknown flags up to the top-level parser, which prints the
top-level usage, or first reports a required flag as missing when the typo was that flag
(``--fil`` for ``--file``). :class:`CommandParser` checks the flags of a leaf command before
parsing: an unknown one is an error with that command's usage and the nearest valid flag.
"""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Sequence
from typing import Any

__all__ = ["CommandParser"]


class CommandParser(argparse.ArgumentParser):
    """``ArgumentParser`` whose leaf commands refuse unknown flags themselves (subparsers inherit the class)."""

    def _is_leaf(self) -> bool:
        return not any(isinstance(a, argparse._SubParsersAction) or a.nargs == argparse.REMAINDER
                       for a in self._actions)

    def parse_known_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                         namespace: argparse.Namespace | None = None) -> tuple[argparse.Namespace, list[str]]:
        if args is not None and self._is_leaf():
            self._check_flags(list(args))
        return super().parse_known_args(args, namespace)

    def _check_flags(self, args: list[str]) -> None:
        for token in args:
            if token == "--":
                return
            if not token.startswith("-") or token == "-" or self._negative_number_matcher.match(token):
                continue
            parsed: Any = self._parse_optional(token)
            if parsed is not None and parsed[0] is None:
                flag = token.split("=", 1)[0]
                known = [s for a in self._actions for s in a.option_strings if s.startswith("--")]
                near = difflib.get_close_matches(flag, known, n=1, cutoff=0.6)
                self.error(f"unrecognized argument {flag}" + (f"; did you mean {near[0]}?" if near else ""))
