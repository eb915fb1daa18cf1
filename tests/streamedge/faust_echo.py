"""A minimal Faust app for the aiokafka round-trip test: upper-cases every value it reads.

Run as ``python -m tests.streamedge.faust_echo worker``; topics and broker come from env vars
(this is a test fixture process, so reading the environment at import is its whole job).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import faust

app = faust.App(
    os.environ["ECHO_APP_ID"],
    broker=f"kafka://{os.environ['ECHO_BROKER']}",
    store="memory://",
    web_enabled=False,
    topic_partitions=1,
)
source = app.topic(os.environ["ECHO_IN"], value_serializer="raw")
sink = app.topic(os.environ["ECHO_OUT"], value_serializer="raw")


@app.agent(source)
async def echo(stream: AsyncIterator[bytes]) -> None:
    async for value in stream:
        await sink.send(value=value.upper())


if __name__ == "__main__":
    app.main()
