"""No acknowledgement without delivery: a batch's events are held until the broker acked its output.

Contract, per micro-batch:

1. :meth:`Delivery.hold` takes an extra reference on every event *before* anything can fail
   (window rebuild, validation, inference): Faust's ``take_events`` acks the events when the loop
   body ends, normally or by an exception, and that ack alone can no longer make an offset
   committable.
2. :meth:`Delivery.deliver` sends every message the batch produced. A message whose send fails
   (raised by ``send`` or by its acknowledgement future) is sent again with exponential backoff,
   for as long as the process lives; messages already acknowledged are not sent again.
3. Only when every message was acknowledged are the batch's events acked (their offsets become
   committable) and ``on_delivered`` called.

A batch that is never delivered (the broker refuses its messages, or processing raised before
:meth:`Delivery.deliver`) keeps its events held: the committed offset cannot pass them, and
:meth:`Delivery.oldest_age` grows until the worker declares itself stuck (:mod:`services.health`).
Up to ``max_inflight`` batches await acknowledgement while the next one is processed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from streamedge.services.metrics import StreamMetrics

__all__ = ["Delivery", "HeldBatch", "Holdable", "Message", "Send"]

_log = logging.getLogger(__name__)

# One message to produce: (topic name, key, value).
Message = tuple[str, bytes | None, bytes]
# Starts one send; the returned awaitable resolves when the broker acknowledged it.
Send = Callable[[str, bytes | None, bytes], Awaitable[Awaitable[Any]]]


class _Referenced(Protocol):
    def incref(self) -> None: ...


class Holdable(Protocol):
    """What a Faust event offers: its message's reference count and the final ack."""

    @property
    def message(self) -> _Referenced: ...

    def ack(self) -> bool: ...


@dataclass(eq=False)
class HeldBatch:
    """The events of one batch, held since ``since`` (monotonic seconds)."""

    events: Sequence[Holdable]
    since: float
    attempts: int = field(default=0)


class Delivery:
    """Holds batches until delivered; retries failed sends with backoff.

    Args:
        send: starts one send (Faust: ``app.producer.send``).
        metrics: counts retries.
        max_inflight: batches that may await acknowledgement at once.
        backoff_s, max_backoff_s: first and longest wait between two attempts, seconds.
        clock: monotonic seconds.
    """

    def __init__(self, send: Send, metrics: StreamMetrics, max_inflight: int = 4, backoff_s: float = 0.1,
                 max_backoff_s: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._send = send
        self.metrics = metrics
        self.max_inflight = max_inflight
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.clock = clock
        self._held: list[HeldBatch] = []
        self._inflight: deque[asyncio.Future[None]] = deque()

    def hold(self, events: Sequence[Holdable]) -> HeldBatch:
        """Take a reference on every event of a batch; call before any processing."""
        for event in events:
            event.message.incref()
        held = HeldBatch(events, self.clock())
        self._held.append(held)
        return held

    def oldest_age(self) -> float:
        """Seconds the oldest undelivered batch has been held (0 when none)."""
        if not self._held:
            return 0.0
        return max(0.0, self.clock() - min(h.since for h in self._held))

    async def deliver(self, held: HeldBatch, messages: Sequence[Message], on_delivered: Callable[[], None]) -> None:
        """Send ``messages`` in the background; ack ``held`` and call ``on_delivered`` once all are acked.

        Returns when fewer than ``max_inflight`` batches await acknowledgement.
        """
        self._inflight.append(asyncio.ensure_future(self._settle(held, list(messages), on_delivered)))
        while len(self._inflight) > self.max_inflight or (self._inflight and self._inflight[0].done()):
            await self._inflight.popleft()

    async def _settle(self, held: HeldBatch, messages: list[Message], on_delivered: Callable[[], None]) -> None:
        while messages:
            failed: list[tuple[Message, BaseException]] = []
            started: list[tuple[Message, Awaitable[Any]]] = []
            for message in messages:
                try:
                    started.append((message, await self._send(*message)))
                except Exception as exc:  # any failure to start a send means: not delivered, try again
                    failed.append((message, exc))
            results = await asyncio.gather(*(ack for _, ack in started), return_exceptions=True)
            for (message, _), outcome in zip(started, results, strict=True):
                if isinstance(outcome, asyncio.CancelledError):
                    raise outcome
                if isinstance(outcome, BaseException):
                    failed.append((message, outcome))
            messages = [message for message, _ in failed]
            if messages:
                held.attempts += 1
                self.metrics.send_retries.inc(len(messages))
                wait = min(self.max_backoff_s, self.backoff_s * 2 ** (held.attempts - 1))
                topic, error = failed[0][0][0], failed[0][1]
                _log.warning("%d message(s) not acknowledged (first: %s: %s: %s); attempt %d, retrying in %.1f s",
                             len(messages), topic, type(error).__name__, error, held.attempts, wait)
                await asyncio.sleep(wait)
        for event in held.events:
            event.ack()
        self._held.remove(held)
        on_delivered()
