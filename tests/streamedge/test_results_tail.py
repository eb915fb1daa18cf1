"""``streamedge results tail`` reads the results topics of the real broker, filtered by device."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from streamedge.cli.main import main
from streamedge.contracts.reading import Reading
from streamedge.kafka.settings import KafkaSettings
from streamedge.kafka.topics import TopicLayout
from streamedge.services.records import Source, dead_letter, result
from tests.services.helpers import produce


def _forecast(device: str, seq: int) -> tuple[bytes, bytes]:
    reading = Reading(device_id=device, stream="s", ts=1772323200.0 + seq, values=(1.0,), seq=seq)
    source = Source("readings", 0, seq, 1772323200.0)
    return reading.key.encode(), result("forecast", reading, source, "pump-lstm", 3, {"forecast": [[1.5]]}, 0.0)


def test_tail_prints_a_devices_results_and_dead_letters_then_exits(
        kafka_settings: KafkaSettings, make_topics: Callable[..., TopicLayout],
        capsys: pytest.CaptureFixture[str]) -> None:
    layout = make_topics(3)
    produce(kafka_settings, layout.forecasts, [_forecast(d, s) for s in range(3) for d in ("pump-1", "pump-2")])
    letter = dead_letter(b"{not json", Source(layout.readings, 1, 7, 0.0, b"pump-2/s"), "malformed", "bad JSON", 0.0)
    produce(kafka_settings, layout.dead_letters, [(b"pump-2/s", letter)])
    common = ["--bootstrap-servers", kafka_settings.bootstrap_servers, "--topic-prefix", layout.prefix]

    assert main(["results", "tail", *common, "--device", "pump-1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and all(line.startswith("forecast  pump-1/s  seq=") for line in lines)
    assert "pump-lstm v3" in lines[0] and '"forecast":[[1.5]]' in lines[0]

    assert main(["results", "tail", *common, "--json", "--max", "2"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(records) == 2 and all(r["type"] == "forecast" for r in records)

    assert main(["results", "tail", *common, "--topic", "dead-letters", "--device", "pump-2"]) == 0
    assert capsys.readouterr().out.strip() == "dead-letters  pump-2  malformed: bad JSON"


def test_tail_of_a_missing_topic_is_one_clear_error(kafka_settings: KafkaSettings,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["results", "tail", "--bootstrap-servers", kafka_settings.bootstrap_servers,
                 "--topic-prefix", "nosuchprefix."]) == 1
    assert "topic 'nosuchprefix.forecasts' does not exist" in capsys.readouterr().err
