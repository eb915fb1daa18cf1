"""Against the real broker: hostile readings never stop the worker, dead letters always fit, a refused
send never lets an offset be committed, and a truncated rebuild is counted."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from streamedge.kafka.settings import KafkaSettings
from streamedge.kafka.topics import TopicLayout
from streamedge.services.app import StreamWorker
from streamedge.services.records import parse_dead_letter
from streamedge.services.settings import StreamSettings
from streamedge.training.tiny import TINY_WINDOW, TinyModels
from tests.services.conftest import ROUTES
from tests.services.helpers import WorkerProcess, committed_offsets, consume_until, produce, reading
from tests.services.hostile import known_bad

_SEQS = 20


def _set_topic_config(kafka: KafkaSettings, topic: str, configs: dict[str, str]) -> None:
    from kafka import KafkaAdminClient
    from kafka.admin import ConfigResource, ConfigResourceType

    admin = KafkaAdminClient(**kafka.kafka_python_config())
    try:
        admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs=configs)])
    finally:
        admin.close()


def _wait(condition: Callable[[], bool], what: str, worker: WorkerProcess, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: {worker.log.read_text()[-3000:]}"
        time.sleep(0.3)


def _forecast_seqs(kafka: KafkaSettings, layout: TopicLayout, expected: int) -> set[int]:
    found = consume_until(kafka, [layout.forecasts], lambda ms: len({json.loads(m.value)["seq"] for m in ms}) >= expected)
    return {json.loads(m.value)["seq"] for m in found}


def test_hostile_readings_are_dead_lettered_whole_or_summarised_and_nothing_is_lost(
        kafka_settings: KafkaSettings, make_topics: Callable[..., TopicLayout],
        start_worker: Callable[..., WorkerProcess]) -> None:
    layout = make_topics(1)
    app_id = f"app-{layout.prefix}"
    worker = start_worker(layout, app_id)
    shapes = known_bad()
    messages: list[tuple[bytes, bytes | None]] = []
    for seq in range(_SEQS):
        messages.append((b"d0/s", reading("d0", seq)))
        if seq < len(shapes):
            key = b"\xff\xfe/s" if seq % 2 else b"k" * 5000  # invalid UTF-8 keys, an over-long key
            messages.append((key, shapes[seq][1]))
    produce(kafka_settings, layout.readings, messages)

    letters = consume_until(kafka_settings, [layout.dead_letters], lambda ms: len(ms) >= len(shapes))
    assert len(letters) == len(shapes), worker.log.read_text()[-3000:]
    by_offset = {}
    for message in letters:
        assert len(message.value) <= 900_000 and (message.key is None or len(message.key) <= 1024)
        record, _, original = parse_dead_letter(message.value)
        by_offset[record["source"]["offset"]] = (record, original)
    sent = [payload for key, payload in messages if key != b"d0/s"]
    records = [by_offset[offset] for offset in sorted(by_offset)]
    assert [r["reason"] for r, _ in records] == ["bad_json", "bad_json", "too_large", "non_finite", "bad_json",
                                                 "not_utf8", "not_object", "wrong_type", "too_large"]
    for (record, original), payload in zip(records, sent, strict=True):
        if payload is None:
            assert original is None and record["original_size"] is None
            continue
        assert record["original_sha256"] == hashlib.sha256(payload).hexdigest()
        assert original == payload or (record["original_truncated"] and payload.startswith(original or b"?"))
    # The 990 KB reading: measured lost before (its whole-payload dead letter was refused).
    assert records[-1][0]["original_truncated"] is True and records[-1][0]["original_size"] > 980_000

    assert _forecast_seqs(kafka_settings, layout, _SEQS - TINY_WINDOW + 1) == set(range(TINY_WINDOW - 1, _SEQS))
    _wait(lambda: committed_offsets(kafka_settings, app_id, layout.readings).get(0) == len(messages),
          "every offset committed", worker)
    assert worker.proc is not None and worker.proc.poll() is None
    assert worker.metric("streamedge_stream_send_retries_total") == 0


def test_a_refused_send_commits_nothing_turns_unhealthy_exits_and_a_restart_loses_nothing(
        kafka_settings: KafkaSettings, make_topics: Callable[..., TopicLayout],
        start_worker: Callable[..., WorkerProcess]) -> None:
    layout = make_topics(1)
    app_id = f"app-{layout.prefix}"
    # The broker refuses every forecast (each is ~400 bytes): a send that fails for good.
    _set_topic_config(kafka_settings, layout.forecasts, {"max.message.bytes": "100"})
    first = start_worker(layout, app_id, unhealthy_after_s=2, exit_after_s=15)
    produce(kafka_settings, layout.readings, [(b"d0/s", reading("d0", seq)) for seq in range(_SEQS)])

    _wait(lambda: first.health()[0] == 503, "health turned unhealthy", first)
    body = first.health()[1]
    assert body["status"] in ("unhealthy", "stuck") and "acknowledge" in body["failure"]
    _wait(lambda: (first.sample("streamedge_stream_committed_lag_messages", 'partition="0"') or 0) > 0,
          "committed lag reported", first)
    assert first.metric("streamedge_stream_send_retries_total") > 0
    assert first.metric("streamedge_stream_healthy") == 0
    assert first.proc is not None
    code = first.proc.wait(timeout=120)
    assert code != 0, "a stuck worker must exit non-zero"
    # Readings before the first full window produce nothing and may be committed; none after.
    assert committed_offsets(kafka_settings, app_id, layout.readings).get(0, 0) <= TINY_WINDOW - 1

    _set_topic_config(kafka_settings, layout.forecasts, {"max.message.bytes": "1048588"})
    second = start_worker(layout, app_id)
    assert _forecast_seqs(kafka_settings, layout, _SEQS - TINY_WINDOW + 1) == set(range(TINY_WINDOW - 1, _SEQS))
    _wait(lambda: committed_offsets(kafka_settings, app_id, layout.readings).get(0) == _SEQS, "all committed", second)
    assert second.health()[0] == 200


@pytest.mark.parametrize(("cap", "upto", "cause", "missing", "replayed"), [
    (10, 90, "message_cap", 80, 10),
    # The broker has nothing past offset 90: five empty fetches in a row, the rest never comes.
    (1000, 100, "empty_fetches", 10, 90),
    (1000, 90, None, 0, 90),
])
def test_a_truncated_rebuild_is_counted_and_logged_with_its_keys(
        kafka_settings: KafkaSettings, make_topics: Callable[..., TopicLayout], model_dir: Path,
        tiny_models: TinyModels, caplog: pytest.LogCaptureFixture, cap: int, upto: int, cause: str | None,
        missing: int, replayed: int) -> None:
    layout = make_topics(1)
    produce(kafka_settings, layout.readings,
            [(f"d{d}/s".encode(), reading(f"d{d}", seq)) for seq in range(30) for d in range(3)])
    settings = StreamSettings(model_dir=model_dir, public_key=tiny_models.public_key, routes=ROUTES,
                              topic_prefix=layout.prefix, rebuild_max_messages=cap, data_dir=model_dir.parent / "f")
    registry = CollectorRegistry()
    worker = StreamWorker(settings, kafka_settings, registry)
    with caplog.at_level(logging.INFO, logger="streamedge.services.app"):
        asyncio.run(worker._rebuild(0, upto, time.time()))
    value = registry.get_sample_value
    assert value("streamedge_stream_state_rebuild_readings_total") == replayed
    for name in ("message_cap", "empty_fetches"):
        assert value("streamedge_stream_state_rebuild_truncated_total", {"cause": name}) == int(name == cause)
    assert value("streamedge_stream_state_rebuild_truncated_keys_total") == (3 if cause else 0)
    if cause:
        assert (f"PARTIAL rebuild ({cause}): {missing} message(s) before offset {upto} not replayed; 3 key(s)"
                in caplog.text)
    else:
        assert "PARTIAL" not in caplog.text


def test_replay_dlq_skips_hostile_records_and_never_replays_a_truncated_original(
        kafka_settings: KafkaSettings, make_topics: Callable[..., TopicLayout],
        capsys: pytest.CaptureFixture[str]) -> None:
    from streamedge.cli.main import main
    from streamedge.services.records import Source, dead_letter

    layout = make_topics(1)
    good = reading("d0", 3)
    source = Source(layout.readings, 0, 7, 1.7e9, b"d0/s")
    not_letters: list[bytes | None] = [payload for _, payload in known_bad()] + [
        b'{"reason": 1, "original": null}', b'{"reason": "bad_json", "original": 12}',
        b'{"reason": "bad_json", "original": "not base64!"}', b'{"reason": ["x"], "original": "AA=="}']
    truncated = dead_letter(b"x" * 20_000, source, "too_large", "", 1.7e9, max_bytes=4096)
    produce(kafka_settings, layout.dead_letters,
            [(b"\xff", value) for value in not_letters]
            + [(b"d0/s", truncated), (b"d0/s", dead_letter(good, source, "unknown_device", "", 1.7e9))])

    args = ["stream", "replay-dlq", "--bootstrap-servers", kafka_settings.bootstrap_servers,
            "--topic-prefix", layout.prefix]
    assert main(args) == 1  # the truncated original needs a fix: reported, not produced
    out = capsys.readouterr().out
    assert f"skipped {len(not_letters)} message(s) that are not dead letters" in out
    assert "re-injected 1, still invalid 0, without a fix 0, truncated without a fix 1" in out
    replayed = consume_until(kafka_settings, [layout.readings], lambda ms: False, timeout=5)
    assert [(m.key, m.value) for m in replayed] == [(b"d0/s", good)]


def test_item1_a_refused_dead_letter_holds_the_commit_while_later_batches_are_delivered_and_a_restart_delivers_it(
        kafka_settings: KafkaSettings, make_topics: Callable[..., TopicLayout],
        start_worker: Callable[..., WorkerProcess]) -> None:
    """Faust 0.15.3 committed 31 here (its gap check is off by one): the dead letter of offset 20 was lost."""
    layout = make_topics(1)
    app_id = f"app-{layout.prefix}"
    first = start_worker(layout, app_id)
    produce(kafka_settings, layout.readings, [(b"d0/s", reading("d0", seq)) for seq in range(_SEQS)])
    _wait(lambda: committed_offsets(kafka_settings, app_id, layout.readings).get(0) == _SEQS, "first commit", first)

    # The broker now refuses the dead letter of one big malformed reading (offset 20) ...
    _set_topic_config(kafka_settings, layout.dead_letters, {"max.message.bytes": "20000"})
    bad = b"{" + b"x" * 60_000
    produce(kafka_settings, layout.readings, [(b"d0/s", bad)])
    _wait(lambda: first.metric("streamedge_stream_send_retries_total") > 0, "dead letter refused", first)
    # ... while the readings after it (offsets 21-30) are delivered in later batches.
    produce(kafka_settings, layout.readings, [(b"d0/s", reading("d0", seq)) for seq in range(_SEQS, _SEQS + 10)])
    assert _forecast_seqs(kafka_settings, layout, _SEQS + 10 - TINY_WINDOW + 1) == set(
        range(TINY_WINDOW - 1, _SEQS + 10))
    _wait(lambda: first.metric("streamedge_stream_results_total", 'kind="forecasts"') >= _SEQS + 10 - TINY_WINDOW + 1,
          "later forecasts recorded", first)
    # A graceful stop runs Faust's final commit: nothing past the held message may be committed.
    first.stop()
    assert committed_offsets(kafka_settings, app_id, layout.readings).get(0) == _SEQS

    _set_topic_config(kafka_settings, layout.dead_letters, {"max.message.bytes": "1048588"})
    second = start_worker(layout, app_id)
    letters = consume_until(kafka_settings, [layout.dead_letters], lambda ms: len(ms) >= 1)
    assert [parse_dead_letter(m.value)[0]["source"]["offset"] for m in letters] == [_SEQS]
    _wait(lambda: committed_offsets(kafka_settings, app_id, layout.readings).get(0) == _SEQS + 11, "all committed",
          second)
