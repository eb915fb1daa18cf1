"""Issue 25: one reading format for files, read the same way by ``stream replay`` and the edge agent.

The format carries a file's own ``stream`` and ``seq`` columns (never features); the agent keys its
readings by the file's stream and keeps the file's seq. ``stream replay`` must not fold two streams
of one device into one series renumbered from 0 (a series whose times then repeat).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from streamedge.cli.main import main
from streamedge.contracts.reading import ReadingBlock, parse_message
from streamedge.kafka.settings import KafkaSettings
from streamedge.kafka.topics import TopicLayout
from tests.services.helpers import consume_until


def test_replay_keeps_a_files_stream_and_seq_columns(
        kafka_settings: KafkaSettings, make_topics: Callable[..., TopicLayout], tmp_path: Path) -> None:
    layout = make_topics(3)
    path = tmp_path / "two-streams.csv"
    lines = ["timestamp,device_id,stream,seq,value"]
    for i in range(4):
        for stream in ("inlet", "outlet"):
            lines.append(f"2026-03-01T10:00:{i:02d}Z,pump-1,{stream},{100 + i},{i}.5")
    path.write_text("\n".join(lines) + "\n")
    assert main(["stream", "replay", "--bootstrap-servers", kafka_settings.bootstrap_servers,
                 "--topic-prefix", layout.prefix, "--file", str(path), "--block-size", "4"]) == 0
    found = consume_until(kafka_settings, [layout.readings], lambda found: len(found) >= 2, timeout=30)
    keys: dict[str, list[int]] = {}
    for message in found:
        block = parse_message(message.value)
        assert isinstance(block, ReadingBlock), f"replay wrote a block the reading contract refuses: {block}"
        keys.setdefault(f"{block.device_id}/{block.stream}", []).extend(range(block.seq, block.seq + len(block)))
    assert keys == {"pump-1/inlet": [100, 101, 102, 103], "pump-1/outlet": [100, 101, 102, 103]}
