"""Issue 23 item 12 and the fault test's rule: "every reading is either delivered as a result or counted
under a named reason". A stop whose drain runs out of `--drain-timeout-s` (here 0 s, an accepted value)
leaves the queued stdin lines unscored, and no counter names them."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

from streamedge.edge.agent import EdgeAgent
from streamedge.edge.sources import IteratorSource
from streamedge.kafka.settings import KafkaSettings
from streamedge.kafka.topics import TopicLayout
from tests.edge.helpers import sine_readings

_OFFLINE = KafkaSettings(bootstrap_servers="127.0.0.1:9")
_LAYOUT = TopicLayout(prefix="adv23.")


def test_queued_lines_left_by_a_short_drain_are_counted(make_agent: Callable[..., EdgeAgent]) -> None:
    payloads = sine_readings(300)
    all_taken = threading.Event()

    def pipe() -> Iterator[bytes]:
        yield from payloads
        all_taken.set()

    source = IteratorSource(pipe(), queue_size=1024)
    assert all_taken.wait(30), "the source did not take the lines in"
    agent = make_agent(source, _OFFLINE, _LAYOUT, drain_timeout_s=0.0, kafka_timeout_s=0.5)
    stop = threading.Event()
    stop.set()                                  # SIGTERM arrives with 300 lines queued
    agent.run(stop)
    registry = agent.metrics.registry
    counted = sum(s.value for m in registry.collect() if m.name == "streamedge_edge_readings"
                  for s in m.samples if s.name.endswith("_total"))
    assert counted == len(payloads), f"{len(payloads) - counted:.0f} of {len(payloads)} queued readings dropped, uncounted"
