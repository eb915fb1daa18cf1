"""Hostile buffer paths (issue 23): a folder, another program's SQLite database, a read-only file or
folder. Each stops ``streamedge edge run`` at start with exit status 1 and one clear line on stderr,
no traceback, and leaves what it found as it was (another program's database is never renamed as
corrupt nor written to).

The agent runs as a real process. Run as root, the process gives up the capabilities that let root
write anything (``CAP_DAC_OVERRIDE``, ``CAP_DAC_READ_SEARCH``, from its bounding set before exec),
so a read-only mode binds it as it binds a device's service user.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from streamedge.edge.buffer import Outbox
from streamedge.training.tiny import TinyModels
from tests.edge.helpers import sine_readings, write_jsonl

_PR_CAPBSET_DROP, _CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH = 24, 1, 2


def _as_unprivileged() -> None:
    """In the child before exec: drop root's permission bypass (a no-op for another user)."""
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def _folder_state(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.iterdir())}


def _edge_run(tmp_path: Path, model_dir: Path, public_key: Path, buffer: Path) -> subprocess.CompletedProcess[str]:
    source = write_jsonl(tmp_path / "readings.jsonl", sine_readings(20))
    return subprocess.run(
        [sys.executable, "-m", "streamedge.cli.main", "edge", "run", "--device-id", "dev-1", "--model-dir",
         str(model_dir), "--public-key", str(public_key), "--buffer-path", str(buffer), "--source", "file",
         "--source-path", str(source), "--metrics-port", "0", "--model-updates", "false", "--log-format", "text",
         "--bootstrap-servers", "127.0.0.1:9", "--kafka-timeout-s", "1", "--drain-timeout-s", "1"],
        capture_output=True, text=True, timeout=120, check=False, preexec_fn=_as_unprivileged,
        env={**os.environ, "STREAMEDGE_HOME": str(tmp_path / "home")})


def _a_folder(place: Path) -> Path:
    (place / "buffer-dir").mkdir()
    return place / "buffer-dir"


def _foreign_database(place: Path) -> Path:
    path = place / "app.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE users (name TEXT)")
    db.execute("INSERT INTO users VALUES ('ada')")
    db.commit()
    db.close()
    return path


def _foreign_clashing_database(place: Path) -> Path:
    """Tables named like the buffer's, with other columns."""
    path = place / "clash.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE outbox (payload TEXT)")
    db.execute("CREATE TABLE meta (a, b, c)")
    db.commit()
    db.close()
    return path


def _read_only_buffer(place: Path) -> Path:
    path = place / "buffer.sqlite"
    outbox = Outbox(path)
    outbox.append(lambda seq: [("t", None, b"kept")], 1)
    outbox.close()
    for file in place.iterdir():
        file.chmod(0o444)
    return path


def _read_only_folder(place: Path) -> Path:
    place.chmod(0o555)
    return place / "buffer.sqlite"


@pytest.mark.parametrize(("make", "says"), [
    (_a_folder, "is a folder"),
    (_foreign_database, "another schema (table users)"),
    (_foreign_clashing_database, "another schema (table meta, table outbox)"),
    (_read_only_buffer, "the file is read-only"),
    (_read_only_folder, "is not writable"),
], ids=["folder", "foreign_schema", "foreign_schema_same_table_names", "read_only_file", "read_only_folder"])
def test_hostile_buffer_path_is_a_clear_error_and_exit_1(make: Callable[[Path], Path], says: str, tmp_path: Path,
                                                        model_dir: Path, tiny_models: TinyModels) -> None:
    place = tmp_path / "place"
    place.mkdir()
    buffer = make(place)
    before = _folder_state(place)
    try:
        done = _edge_run(tmp_path, model_dir, tiny_models.public_key, buffer)
    finally:
        place.chmod(0o755)
    assert done.returncode == 1, (done.returncode, done.stderr[-2000:])
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("streamedge: error:")]
    assert len(errors) == 1 and says in errors[0] and str(buffer) in errors[0], done.stderr[-2000:]
    assert _folder_state(place) == before  # nothing renamed, written or added beside it
