"""Issue 23 ("Also") / docs *Working offline*: "`--buffer-max-bytes` below `--batch-max-bytes` is refused
at start (every commit would drop its own rows)". A transaction is cut only after it passed
`--batch-max-bytes`, so an accepted setting of equal bounds still drops each commit's own rows."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from streamedge.edge.agent import EdgeAgent
from streamedge.edge.sources import IteratorSource
from streamedge.kafka.settings import KafkaSettings
from streamedge.kafka.topics import TopicLayout
from tests.edge.helpers import sine_readings

_OFFLINE = KafkaSettings(bootstrap_servers="127.0.0.1:9")
_LAYOUT = TopicLayout(prefix="adv23.")


def test_an_accepted_buffer_bound_keeps_each_commits_own_rows(make_agent: Callable[..., EdgeAgent]) -> None:
    agent = make_agent(IteratorSource([]), _OFFLINE, _LAYOUT, buffer_max_bytes=4096, batch_max_bytes=4096,
                       heartbeat_interval_s=3600.0)
    append = agent.outbox.append
    lost: list[tuple[int, int]] = []

    def checking(build: Any, count: int, *args: Any, **kwargs: Any) -> int:
        first = append(build, count, *args, **kwargs)
        depth = agent.outbox.stats().depth
        if count and depth < count:
            lost.append((count, depth))
        return first

    agent.outbox.append = checking  # type: ignore[method-assign]
    agent.process(sine_readings(200))
    dropped = agent.metrics.registry.get_sample_value("streamedge_edge_buffer_dropped_total", {"reason": "size"})
    agent.outbox.close()
    assert not lost, (f"{len(lost)} commits dropped their own rows (rows committed, rows left): {lost[:4]}; "
                      f"dropped by size: {dropped}")
