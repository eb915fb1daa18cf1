"""Issue 25: ``stream replay --seq-start N`` resumes a device's numbering. A seq the reading
contract refuses (negative, or past its range) must be refused by replay, not written into blocks
every worker dead-letters while replay exits 0 ("produced 1 message(s)").
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from streamedge.cli.main import main
from streamedge.contracts.reading import ReadingBlock, parse_message
from streamedge.kafka.settings import KafkaSettings
from streamedge.kafka.topics import TopicLayout
from tests.services.helpers import consume_until


@pytest.mark.parametrize("start", ["-5", "99999999999999999999"])
def test_replay_never_writes_a_seq_the_contract_refuses(
        kafka_settings: KafkaSettings, make_topics: Callable[..., TopicLayout], tmp_path: Path, start: str) -> None:
    layout = make_topics(1)
    path = tmp_path / "pump.csv"
    path.write_text("timestamp,device_id,v\n2026-03-01T00:00:00Z,p1,1\n2026-03-01T00:00:01Z,p1,2\n")
    try:
        code = main(["stream", "replay", "--bootstrap-servers", kafka_settings.bootstrap_servers,
                     "--topic-prefix", layout.prefix, "--file", str(path), "--seq-start", start])
    except SystemExit as exc:
        code = exc.code
    if code not in (0, None):
        return  # refused: fine
    found = consume_until(kafka_settings, [layout.readings], lambda found: len(found) >= 1, timeout=30)
    assert found
    parsed = parse_message(found[0].value)
    assert isinstance(parsed, ReadingBlock), f"replay exited 0 having written a refused block: {parsed}"
