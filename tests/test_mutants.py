"""The mutation check (``make mutants``, tools/mutants.py): its list still fits the code, and a quick part of it runs here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tools.mutants import MUTANTS, QUICK, REPO, check_fits, copy_tree


def test_every_mutant_still_fits_the_code_and_names_existing_tests(tmp_path: Path) -> None:
    assert len(MUTANTS) >= 11 and set(QUICK) <= {m.name for m in MUTANTS}
    for mutant in MUTANTS:
        assert mutant.tests and all((REPO / t.partition("::")[0]).is_file() for t in mutant.tests), mutant
        check_fits(mutant, tmp_path)  # raises unless each edit's text occurs exactly once


def test_the_copy_holds_the_working_tree_and_shares_the_broker_folder(tmp_path: Path) -> None:
    copy_tree(tmp_path / "tree")
    here = Path(__file__).relative_to(REPO)
    assert (tmp_path / "tree" / here).read_bytes() == Path(__file__).read_bytes()
    assert not (tmp_path / "tree" / ".venv").exists() and not (tmp_path / "tree" / ".git").exists()
    assert (tmp_path / "tree" / ".streamedge").resolve() == (REPO / ".streamedge").resolve()


def test_quick_mutants_are_each_caught_in_a_copy_and_the_working_tree_is_untouched() -> None:
    edited = {REPO / path for m in MUTANTS if m.name in QUICK for path, _, _ in m.edits}
    before = {path: path.read_bytes() for path in edited}
    command = [sys.executable, "-m", "tools.mutants", "--no-baseline", *(f"--only={name}" for name in QUICK)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=1200, check=False)
    lines = done.stdout.strip().splitlines()
    assert lines and lines[-1] == f"mutants: {len(QUICK)} caught of {len(QUICK)}", done.stdout + done.stderr[-3000:]
    assert done.returncode == 0
    assert {path: path.read_bytes() for path in edited} == before
