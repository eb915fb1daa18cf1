"""The framework ceiling: a Faust agent that decodes, re-encodes and produces each message (a
single reading or a reading block), no model.

Same consumption and delivery contract as the real worker (micro-batches via ``take_events``,
an event's offset committable only once the broker acknowledged its batch's results, up to 4
batches in flight), so the comparison isolates what the models, windows and scoring cost. Run as
``python -m streamedge.benchmarks.stream_passthrough BOOTSTRAP PREFIX APP_ID BATCH WAIT_S DATADIR [table]``.

With ``table`` the agent also writes each reading into a Faust table (memory store, changelog
topic), the state option the worker did not take: the difference prices one changelog write per
reading.
"""

from __future__ import annotations

import asyncio
import sys
from collections import deque
from pathlib import Path
from typing import Any

__all__ = ["main"]


def main(argv: list[str]) -> int:
    """Start the pass-through worker (runs until SIGTERM)."""
    import faust

    from streamedge.contracts.reading import Reading, Rejection, parse_message
    from streamedge.kafka.settings import KafkaSettings
    from streamedge.kafka.topics import TopicLayout

    bootstrap, prefix, app_id, batch, wait, datadir = argv[0], argv[1], argv[2], int(argv[3]), float(argv[4]), argv[5]
    kafka = KafkaSettings(bootstrap_servers=bootstrap)
    layout = TopicLayout(prefix=prefix)
    # Faust creates its data folder but not that folder's parents.
    Path(datadir).parent.mkdir(parents=True, exist_ok=True)
    app = faust.App(app_id, broker=kafka.faust_broker_url(), broker_credentials=kafka.faust_credentials(),
                    store="memory://", web_enabled=False, consumer_auto_offset_reset="earliest",
                    autodiscover=False, producer_acks=-1, producer_max_batch_size=512 * 1024,
                    datadir=datadir)
    readings = app.topic(layout.readings, key_serializer="raw", value_serializer="raw")
    with_table = len(argv) > 6 and argv[6] == "table"
    table = app.Table("windows", default=list, partitions=layout.partitions, key_type=str,
                      value_type=list, use_partitioner=True) if with_table else None

    inflight: deque[asyncio.Future[None]] = deque()

    async def settle(events: list[Any], pending: list[Any]) -> None:
        if pending:
            await asyncio.gather(*pending)
        for event in events:
            event.ack()

    async def passthrough(stream: Any) -> None:
        async for events in stream.take_events(batch, within=wait):
            pending = []
            for event in events:
                event.message.incref()
                parsed = parse_message(event.message.value)
                if not isinstance(parsed, Rejection):
                    if table is not None and isinstance(parsed, Reading):
                        window = table[parsed.key][-7:]
                        window.append(list(parsed.values))
                        table[parsed.key] = window
                    value = parsed.to_json()
                    pending.append(await app.producer.send(layout.forecasts, event.message.key, value,
                                                           None, None, None))
            inflight.append(asyncio.ensure_future(settle(events, pending)))
            while len(inflight) > 4 or (inflight and inflight[0].done()):
                await inflight.popleft()

    app.agent(readings, name="passthrough")(passthrough)
    faust.Worker(app, loglevel="WARNING", quiet=True).execute_from_commandline()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
