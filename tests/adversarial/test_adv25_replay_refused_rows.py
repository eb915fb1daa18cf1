"""Issue 25: one reading format for files, read the same way by the trainer, replay and the agent;
anything that cannot go through is an error that says what to pass (break 1: replay wrote values
the worker could not use and exited 0).

A file the reading contract cannot carry (more features than a reading may hold, times before
1970) is still replayed with exit 0 and "produced 1 message(s)"; every block is refused downstream.
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

_WIDE = "ts," + ",".join(f"c{i}" for i in range(70)) + "\n" + "".join(
    f"{1772323200 + r}," + ",".join(str(r + i) for i in range(70)) + "\n" for r in range(5))
_OLD = "date,v\n19600101,1\n19600102,2\n"


@pytest.mark.parametrize("text", [_WIDE, _OLD], ids=["70-features", "dates-1960"])
def test_replay_refuses_what_the_reading_contract_refuses(
        kafka_settings: KafkaSettings, make_topics: Callable[..., TopicLayout], tmp_path: Path, text: str) -> None:
    layout = make_topics(1)
    path = tmp_path / "file.csv"
    path.write_text(text)
    try:
        code = main(["stream", "replay", "--bootstrap-servers", kafka_settings.bootstrap_servers,
                     "--topic-prefix", layout.prefix, "--file", str(path)])
    except SystemExit as exc:
        code = exc.code
    if code not in (0, None):
        return  # refused: fine
    found = consume_until(kafka_settings, [layout.readings], lambda found: len(found) >= 1, timeout=30)
    assert found
    parsed = parse_message(found[0].value)
    assert isinstance(parsed, ReadingBlock), f"replay exited 0 having written a refused block: {parsed}"
