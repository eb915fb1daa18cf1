"""Third-party log noise: a worker's log over a normal rebalance holds what an operator must see, not
the Kafka client's transient coordinator and fetch complaints (streamedge.cli.quiet)."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable

from streamedge.cli.quiet import TRANSIENT, TransientFilter
from streamedge.kafka.settings import KafkaSettings
from streamedge.kafka.topics import TopicLayout
from tests.services.helpers import WorkerProcess, produce, reading

_NOISE = re.compile(r"coordinator dead|Failed fetch messages|Group Coordinator Request failed|Heartbeat failed|"
                    r"No active partitions|will rejoin")


def _record(name: str, msg: str, level: int = logging.WARNING) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, ("g",), None)


def test_transient_client_errors_are_held_back_until_they_persist_then_shown_once_a_minute() -> None:
    now = [0.0]
    quiet = TransientFilter(TRANSIENT, grace_s=30.0, every_s=60.0, clock=lambda: now[0])
    dead = "Marking the coordinator dead (node %s)for group %s."
    shown = []
    for second in range(0, 200, 2):  # a coordinator that stays dead for 200 s, one line every 2 s
        now[0] = float(second)
        record = _record("aiokafka.consumer.group_coordinator", dead)
        if quiet.filter(record):
            shown.append((second, record.msg))
    assert [s for s, _ in shown] == [30, 90, 150]
    assert shown[0][1].endswith("(recurring for 30 s; 15 like it held back)")
    # Quiet for longer than the grace: the next one is a new, transient episode again.
    now[0] = 300.0
    assert not quiet.filter(_record("aiokafka.consumer.group_coordinator", dead))


def test_what_an_operator_must_see_passes_at_once() -> None:
    quiet = TransientFilter(TRANSIENT, clock=lambda: 0.0)
    for name, msg in (("aiokafka.consumer.group_coordinator", "Attempt to join group failed due to fatal error: %s"),
                      ("aiokafka.consumer.fetcher", "Unexpected error while fetching %s"),
                      ("streamedge.services.app", "Marking the coordinator dead"),  # not the client's own logger
                      ("aiokafka.consumer.fetcher", "Failed fetch messages from %s: %s")):
        record = _record(name, msg, logging.ERROR)
        assert quiet.filter(record) == (msg != "Failed fetch messages from %s: %s"), (name, msg)


def _rebuilt(worker: WorkerProcess) -> set[str]:
    return set(re.findall(r"partition (\d+): (?:rebuilt windows|PARTIAL rebuild)", worker.log.read_text()))


class _Readings:
    """The next reading of 30 keys (every partition) at each call, so each new assignment is rebuilt."""

    def __init__(self, kafka: KafkaSettings, topic: str) -> None:
        self.kafka, self.topic, self.seq = kafka, topic, 0

    def send(self) -> None:
        produce(self.kafka, self.topic, [(f"k{k}/s".encode(), reading(f"k{k}", self.seq)) for k in range(30)])
        self.seq += 1


def _until(what: str, check: Callable[[], bool], workers: list[WorkerProcess], readings: _Readings,
           timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, (what, [w.log.read_text()[-3000:] for w in workers])
        readings.send()
        time.sleep(0.3)


def test_a_normal_rebalance_leaves_no_client_noise_in_the_workers_log(
        kafka_settings: KafkaSettings, make_topics: Callable[..., TopicLayout],
        start_worker: Callable[..., WorkerProcess]) -> None:
    layout = make_topics(3)
    readings = _Readings(kafka_settings, layout.readings)
    app_id = f"noise-{layout.prefix}"
    first = start_worker(layout, app_id)
    _until("the first worker's assignment", lambda: _rebuilt(first) == {"0", "1", "2"}, [first], readings)
    second = start_worker(layout, app_id)  # joins: partitions move between live workers
    _until("the rebalance", lambda: bool(_rebuilt(second)), [first, second], readings)
    second.stop()  # leaves: the first takes its partitions back
    _until("the second rebalance", lambda: first.log.read_text().count("rebuilt windows") > 3, [first, second],
           readings)
    first.stop()
    for worker in (first, second):
        text = worker.log.read_text()
        assert "rebuilt windows" in text  # the log is the worker's, INFO lines included
        noise = [line for line in text.splitlines() if _NOISE.search(line)]
        assert not noise, noise[:10]
