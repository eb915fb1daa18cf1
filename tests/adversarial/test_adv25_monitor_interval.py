"""Issue 25: ``streamedge monitor config`` writes a Prometheus config for the local stack; config
that never misleads. A scrape interval that is no Prometheus duration must be refused, not written
unquoted into a prometheus.yml that Prometheus cannot load (exit 0, "run: prometheus ...").
"""

from __future__ import annotations

from pathlib import Path

import pytest

from streamedge.cli.main import main


@pytest.mark.parametrize("interval", ["banana", "15s\nrule_files: []"])
def test_an_invalid_scrape_interval_is_an_error(tmp_path: Path, interval: str) -> None:
    out = tmp_path / "monitor"
    try:
        code = main(["monitor", "config", "--out", str(out), "--exporter", "none", "--scrape-interval", interval])
    except SystemExit as exc:  # an argparse refusal is fine
        code = exc.code
    assert code not in (0, None), (out / "prometheus.yml").read_text()[:400]
