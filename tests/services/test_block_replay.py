"""Recorded files replayed as reading blocks: the pure reader, then through a worker on the real broker."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamedge.cli.main import main
from streamedge.contracts.reading import Reading, ReadingBlock, parse_message
from streamedge.kafka.settings import KafkaSettings
from streamedge.kafka.topics import TopicLayout
from streamedge.services.records import parse_dead_letter
from streamedge.services.replay import ReplayFileError, block_payloads, read_series
from streamedge.training.tiny import TINY_WINDOW
from tests.services.helpers import WorkerProcess, consume_until, sine


def _csv(path: Path, samples: int, with_ts: bool) -> Path:
    lines = ["ts,value" if with_ts else "value"]
    lines += [f"{1.7e9 + s},{sine(s)}" if with_ts else f"{sine(s)}" for s in range(samples)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_csv_and_ts_files_become_blocks_that_parse_back(tmp_path: Path) -> None:
    series, _ = read_series(_csv(tmp_path / "a.csv", 10, with_ts=True), "pump")
    payloads = list(block_payloads(series, "s", 4, start_ts=0.0, period=1.0))
    assert [key for key, _ in payloads] == [b"pump/s"] * 3
    blocks = [parse_message(value) for _, value in payloads]
    assert all(isinstance(b, ReadingBlock) for b in blocks)
    assert [(b.seq, len(b)) for b in blocks if isinstance(b, ReadingBlock)] == [(0, 4), (4, 4), (8, 2)]
    last = blocks[-1]
    assert isinstance(last, ReadingBlock) and last.ts.tolist() == [1.7e9 + 8, 1.7e9 + 9]
    singles = [parse_message(v) for _, v in block_payloads(series, "s", 1, 0.0, 1.0)]
    assert all(isinstance(r, Reading) for r in singles) and len(singles) == 10

    ts_file = tmp_path / "x.ts"
    ts_file.write_text("# comment\n@problemName x\n@classLabel true a b\n@data\n1,2,3:4,5,6:a\n7,8:9,10:b\n")
    two, _ = read_series(ts_file, "uea")
    assert [s.device_id for s in two] == ["uea-0", "uea-1"]
    assert two[0].values.tolist() == [[1, 4], [2, 5], [3, 6]]
    (key, value), = block_payloads(two[1:], "gesture", 8, start_ts=100.0, period=0.5)
    block = parse_message(value)
    assert key == b"uea-1/gesture" and isinstance(block, ReadingBlock)
    np.testing.assert_array_equal(block.values, [[7, 9], [8, 10]])
    assert block.ts.tolist() == [100.0, 100.5]


@pytest.mark.parametrize(("name", "text", "match"), [
    ("none.csv", None, "does not exist"),
    ("a.txt", "x", "expected a .csv, .tsv or .ts"),
    ("empty.csv", "ts\n1\n", "no numeric column"),
    ("rows.csv", "value\n", "no data row"),
    ("nodata.ts", "@problemName x\n1,2,3\n", "no series"),
])
def test_unreadable_files_are_one_clear_error(tmp_path: Path, name: str, text: str | None, match: str) -> None:
    path = tmp_path / name
    if text is not None:
        path.write_text(text)
    with pytest.raises(ReplayFileError, match=match):
        read_series(path, "d")


def test_a_replayed_file_in_blocks_is_answered_by_the_worker(
        kafka_settings: KafkaSettings, make_topics: Callable[..., TopicLayout],
        start_worker: Callable[..., WorkerProcess], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    layout = make_topics(3)
    worker = start_worker(layout, "blocks-app", classify_stride=4)
    samples, size = 300, 64
    path = _csv(tmp_path / "pump.csv", samples, with_ts=False)
    common = ["--bootstrap-servers", kafka_settings.bootstrap_servers, "--topic-prefix", layout.prefix]
    assert main(["stream", "replay", *common, "--file", str(path), "--device", "pump", "--block-size", str(size),
                 "--period", "0.001", "--start-ts", "1.7e9"]) == 0
    assert "produced 5 message(s): 300 samples" in capsys.readouterr().out
    bad = tmp_path / "bad.csv"
    bad.write_text("value\n" + "".join(f"{sine(s)}\n" if s != 3 else "?\n" for s in range(10)))
    assert main(["stream", "replay", *common, "--file", str(bad), "--device", "other", "--block-size", "10"]) == 0

    def _done(found: list[Any]) -> bool:
        return sum(1 for m in found if m.topic == layout.forecasts) >= 5 and any(
            m.topic == layout.dead_letters for m in found)

    found = consume_until(kafka_settings, [layout.forecasts, layout.classifications, layout.dead_letters], _done)
    forecasts = [json.loads(m.value) for m in found if m.topic == layout.forecasts]
    assert [f["type"] for f in forecasts] == ["forecast_block"] * 5
    rows = {f["forecast_seq"] + i for f in forecasts for i, row in enumerate(f["forecast"]) if row is not None}
    assert rows == set(range(TINY_WINDOW - 1, samples))
    assert len({f["idempotency_key"] for f in forecasts}) == 5
    classified = {c["seq"] + i for m in found if m.topic == layout.classifications
                  for c in [json.loads(m.value)] for i in c["sample_indexes"]}
    assert classified == {s for s in range(TINY_WINDOW - 1, samples) if s % 4 == 0}
    (letter,) = [parse_dead_letter(m.value)[0] for m in found if m.topic == layout.dead_letters]
    assert (letter["reason"], letter["sample"]) == ("non_finite", 3)
    assert worker.metric("streamedge_stream_readings_consumed_total") == samples + 1


def test_a_replay_whose_sends_fail_says_so_and_exits_non_zero(
        kafka_settings: KafkaSettings, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic

    # A readings topic that takes no message over 1024 bytes: the broker refuses the one block.
    layout = TopicLayout(prefix=f"t{uuid.uuid4().hex[:10]}.", partitions=1)
    admin = KafkaAdminClient(**kafka_settings.kafka_python_config())
    try:
        admin.create_topics([NewTopic(layout.readings, 1, 1, topic_configs={"max.message.bytes": "1024"})])
    finally:
        admin.close()
    path = _csv(tmp_path / "pump.csv", 100, with_ts=False)
    # One message, so the producer sends it in a batch of its own (no batch split and retry).
    assert main(["stream", "replay", "--bootstrap-servers", kafka_settings.bootstrap_servers, "--topic-prefix",
                 layout.prefix, "--file", str(path), "--device", "pump", "--block-size", "100",
                 "--start-ts", "1.7e9"]) == 1
    out, err = capsys.readouterr()
    # flush() returned with the send failed: it used to print "produced 1 message(s)" and exit 0.
    assert "produced 0 message(s): 100 samples" in out
    assert "1 of 1 message(s) failed, first: MessageSizeTooLargeError" in err


_PUMPS = "timestamp,device_id,vibration,temperature\n" + "".join(
    f"2026-03-01T{h:02d}:00:00Z,pump-{p},{h + p / 10},{40 + h}\n" for h in range(6) for p in (1, 2, 3))


def test_a_long_format_file_with_iso_times_becomes_one_series_per_device_at_its_own_times(tmp_path: Path) -> None:
    path = tmp_path / "pumps.csv"
    path.write_text(_PUMPS)
    series, how = read_series(path, "unused")
    assert [s.device_id for s in series] == ["pump-1", "pump-2", "pump-3"]
    assert "ISO 8601" in how
    payloads = list(block_payloads(series, "s", 4, start_ts=0.0, period=1.0, first_seq={"pump-2": 10}))
    blocks = {(key, b.seq): b for key, value in payloads for b in [parse_message(value)]
              if isinstance(b, ReadingBlock)}
    assert sorted(blocks) == [(b"pump-1/s", 0), (b"pump-1/s", 4), (b"pump-2/s", 10), (b"pump-2/s", 14),
                              (b"pump-3/s", 0), (b"pump-3/s", 4)]
    first = blocks[(b"pump-2/s", 10)]
    assert first.ts.tolist() == [1772323200.0 + 3600 * h for h in range(4)]
    np.testing.assert_array_equal(first.values[:, 1], [40, 41, 42, 43])  # the time column is no value


def test_a_text_value_is_an_error_naming_its_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("ts,value\n1,2\n2,oops\n")
    with pytest.raises(ReplayFileError, match=r"bad.csv:3: column 'value': 'oops' is not a number"):
        read_series(path, "d")


def test_replay_continues_a_devices_numbering_from_the_topic(
        kafka_settings: KafkaSettings, make_topics: Callable[..., TopicLayout], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    layout = make_topics(3)
    first, follow_up = tmp_path / "day1.csv", tmp_path / "day2.csv"
    first.write_text(_PUMPS)
    follow_up.write_text("timestamp,device_id,vibration,temperature\n" + "".join(
        f"2026-03-02T{h:02d}:00:00Z,pump-{p},{h},{50 + h}\n" for h in range(3) for p in (1, 3)))
    common = ["stream", "replay", "--bootstrap-servers", kafka_settings.bootstrap_servers, "--topic-prefix",
              layout.prefix, "--block-size", "4"]
    assert main([*common, "--file", str(first)]) == 0
    assert main([*common, "--file", str(follow_up), "--continue"]) == 0
    assert "continuing at seq pump-1: 6, pump-3: 6" in capsys.readouterr().out
    found = consume_until(kafka_settings, [layout.readings], lambda found: len(found) >= 8)
    seqs: dict[str, list[int]] = {}
    for message in found:
        block = parse_message(message.value)
        assert isinstance(block, ReadingBlock)
        seqs.setdefault(block.device_id, []).extend(range(block.seq, block.seq + len(block)))
    assert {d: sorted(s) for d, s in seqs.items()} == {
        "pump-1": list(range(9)), "pump-2": list(range(6)), "pump-3": list(range(9))}


def test_replay_refuses_a_topic_prefix_whose_topics_do_not_exist(
        kafka_settings: KafkaSettings, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from kafka.admin import KafkaAdminClient

    path = tmp_path / "pumps.csv"
    path.write_text(_PUMPS)
    prefix = f"typo{uuid.uuid4().hex[:8]}."
    assert main(["stream", "replay", "--bootstrap-servers", kafka_settings.bootstrap_servers, "--topic-prefix",
                 prefix, "--file", str(path)]) == 1
    assert f"topic '{prefix}readings' does not exist" in capsys.readouterr().err
    admin = KafkaAdminClient(**kafka_settings.kafka_python_config())
    try:
        assert not [t for t in admin.list_topics() if t.startswith(prefix)]
    finally:
        admin.close()


def test_replay_keeps_a_files_stream_and_seq_columns(
        kafka_settings: KafkaSettings, make_topics: Callable[..., TopicLayout], tmp_path: Path) -> None:
    layout = make_topics(3)
    path = tmp_path / "two-streams.csv"
    lines = ["timestamp,device_id,stream,seq,value"]
    lines += [f"2026-03-01T10:00:{i:02d}Z,pump-1,{stream},{100 + i},{i}.5" for i in range(4)
              for stream in ("inlet", "outlet")]
    path.write_text("\n".join(lines) + "\n")
    common = ["stream", "replay", "--bootstrap-servers", kafka_settings.bootstrap_servers,
              "--topic-prefix", layout.prefix, "--file", str(path)]
    assert main([*common, "--seq-start", "5"]) == 2  # the file's seqs are kept: a start would be ignored
    assert main([*common, "--block-size", "4"]) == 0
    found = consume_until(kafka_settings, [layout.readings], lambda found: len(found) >= 2)
    keys: dict[str, list[int]] = {}
    for message in found:
        block = parse_message(message.value)
        assert isinstance(block, ReadingBlock)
        assert message.key == f"{block.device_id}/{block.stream}".encode()
        keys.setdefault(f"{block.device_id}/{block.stream}", []).extend(range(block.seq, block.seq + len(block)))
    assert keys == {"pump-1/inlet": [100, 101, 102, 103], "pump-1/outlet": [100, 101, 102, 103]}


def test_a_files_seq_gap_starts_a_new_block(tmp_path: Path) -> None:
    path = tmp_path / "gap.csv"
    path.write_text("ts,seq,value\n" + "".join(f"{1.7e9 + s},{s},{s}\n" for s in (0, 1, 2, 7, 8)))
    series, _ = read_series(path, "d")
    blocks = [parse_message(value) for _, value in block_payloads(series, "s", 10, 0.0, 1.0)]
    assert [(b.seq, len(b)) for b in blocks if isinstance(b, ReadingBlock)] == [(0, 3), (7, 2)]


_WIDE = "ts," + ",".join(f"c{i}" for i in range(70)) + "\n" + "".join(
    f"{1772323200 + r}," + ",".join(str(r + i) for i in range(70)) + "\n" for r in range(5))


@pytest.mark.parametrize(("text", "flags", "reason"), [
    ("timestamp,device_id,v\n2026-03-01T00:00:00Z,p1,1\n", ["--seq-start", "-5"], "seq -5 is outside"),
    ("timestamp,device_id,v\n2026-03-01T00:00:00Z,p1,1\n", ["--seq-start", "99999999999999999999"], "is outside"),
    (_WIDE, [], "sample has 70 features, 1 to 64 allowed"),
    ("date,v\n19600101,1\n19600102,2\n", [], "ts -315619200.0 is outside"),
], ids=["negative-seq", "huge-seq", "70-features", "dates-1960"])
def test_replay_refuses_what_the_reading_contract_refuses_and_sends_nothing(
        kafka_settings: KafkaSettings, make_topics: Callable[..., TopicLayout], tmp_path: Path,
        capsys: pytest.CaptureFixture[str], text: str, flags: list[str], reason: str) -> None:
    from kafka import KafkaConsumer, TopicPartition

    layout = make_topics(1)
    path = tmp_path / "file.csv"
    path.write_text(text)
    assert main(["stream", "replay", "--bootstrap-servers", kafka_settings.bootstrap_servers,
                 "--topic-prefix", layout.prefix, "--file", str(path), *flags]) == 1
    err = capsys.readouterr().err
    assert "the reading contract refuses it" in err and reason in err and "nothing was sent" in err
    consumer = KafkaConsumer(**kafka_settings.kafka_python_config(), enable_auto_commit=False)
    try:
        partition = TopicPartition(layout.readings, 0)
        assert consumer.end_offsets([partition])[partition] == 0
    finally:
        consumer.close()


def test_continue_on_a_device_with_no_history_ends_at_the_end_offsets_without_noise(
        kafka_settings: KafkaSettings, make_topics: Callable[..., TopicLayout], tmp_path: Path) -> None:
    import subprocess
    import sys
    import time

    layout = make_topics(3)
    path = tmp_path / "pump.csv"
    path.write_text("timestamp,device_id,v\n2026-03-01T00:00:00Z,p1,1\n2026-03-01T00:00:01Z,p1,2\n")
    command = [sys.executable, "-c", "import sys; from streamedge.cli.main import main; sys.exit(main(sys.argv[1:]))",
               "stream", "replay", "--bootstrap-servers", kafka_settings.bootstrap_servers,
               "--topic-prefix", layout.prefix, "--file", str(path), "--continue"]
    started = time.monotonic()
    first = subprocess.run(command, capture_output=True, text=True, timeout=120)
    took = time.monotonic() - started
    assert first.returncode == 0, first.stderr
    assert "continuing at seq p1: 0" in first.stdout
    assert took < 20.0, f"--continue on an empty topic took {took:.1f} s (the consumer's 30 s timeout)"
    again = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "continuing at seq p1: 2" in again.stdout, again.stderr
    assert "group_id is None" not in first.stderr + again.stderr
