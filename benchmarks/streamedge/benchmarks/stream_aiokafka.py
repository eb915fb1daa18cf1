"""The client ceiling: a raw aiokafka consume-produce loop, no Faust, no model.

Decodes each message with :func:`~streamedge.contracts.reading.parse_message` (a single reading or
a reading block), re-encodes it and produces it to the forecasts topic, with the worker's delivery
contract: a batch's offsets are committed only once the broker acknowledged (``acks=all``) every
message it and every earlier batch produced, with up to four batches awaiting acknowledgement while
the next is read (the worker's in-flight depth). What Faust adds on top of this loop is the gap between this ceiling and the
Faust pass-through agent. Run as
``python -m streamedge.benchmarks.stream_aiokafka BOOTSTRAP PREFIX GROUP BATCH`` (until SIGTERM).
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections import deque
from typing import Any

__all__ = ["main"]

# Same producer batch as the worker (services.app): one micro-batch's results in few requests.
_PRODUCER_BATCH_BYTES = 512 * 1024
# Batches awaiting acknowledgement at once, as in the worker (services.app._MAX_INFLIGHT).
_MAX_INFLIGHT = 4


async def _run(bootstrap: str, prefix: str, group: str, batch: int) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    from streamedge.contracts.reading import Rejection, parse_message
    from streamedge.kafka.settings import KafkaSettings
    from streamedge.kafka.topics import TopicLayout

    kafka = KafkaSettings(bootstrap_servers=bootstrap)
    layout = TopicLayout(prefix=prefix)
    config = kafka.aiokafka_config()
    consumer = AIOKafkaConsumer(layout.readings, **config, group_id=group, enable_auto_commit=False,
                                auto_offset_reset="earliest", max_partition_fetch_bytes=4 * 1024 * 1024)
    producer = AIOKafkaProducer(**config, acks="all", max_batch_size=_PRODUCER_BATCH_BYTES, linger_ms=1)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await consumer.start()
    await producer.start()
    # (acknowledgements of one batch, the offsets its commit makes), oldest first
    inflight: deque[tuple[asyncio.Future[Any], dict[Any, int]]] = deque()
    try:
        while not stop.is_set():
            fetched = await consumer.getmany(timeout_ms=100, max_records=batch)
            pending: list[Any] = []
            offsets: dict[Any, int] = {}
            for tp, records in fetched.items():
                for message in records:
                    parsed = parse_message(message.value)
                    if not isinstance(parsed, Rejection):
                        pending.append(await producer.send(layout.forecasts, parsed.to_json(), key=message.key))
                if records:
                    offsets[tp] = records[-1].offset + 1
            if offsets:
                inflight.append((asyncio.gather(*pending), offsets))
            # Like the worker's Delivery: up to _MAX_INFLIGHT batches await acknowledgement while the
            # next is read; a batch's offsets are committed once it and every earlier one were acknowledged.
            while len(inflight) > _MAX_INFLIGHT or (inflight and inflight[0][0].done()):
                acks, done = inflight.popleft()
                await acks
                await consumer.commit(done)
    finally:
        await producer.stop()
        await consumer.stop()


def main(argv: list[str]) -> int:
    """Run the loop until SIGTERM."""
    asyncio.run(_run(argv[0], argv[1], argv[2], int(argv[3])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
