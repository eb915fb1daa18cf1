"""No acknowledgement without delivery, without a broker: Faust's own message reference counting."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import pytest
from faust.types import TP
from faust.types.tuples import ConsumerMessage, Message
from prometheus_client import CollectorRegistry

from streamedge.kafka.settings import KafkaSettings
from streamedge.services.app import StreamWorker
from streamedge.services.delivery import Delivery
from streamedge.services.health import Health
from streamedge.services.metrics import StreamMetrics
from streamedge.services.records import Source
from streamedge.services.settings import StreamSettings
from streamedge.training.tiny import TinyModels
from tests.services.conftest import ROUTES
from tests.services.helpers import reading


class _Consumer:
    """Records the final acks Faust's ``Message.ack`` passes on (what makes an offset committable)."""

    def __init__(self) -> None:
        self.acked: list[int] = []

    def ack(self, message: Message) -> bool:
        self.acked.append(message.offset)
        return True


class _Event:
    """The two things ``take_events`` and the worker use of a Faust event, on a real ``Message``."""

    def __init__(self, consumer: _Consumer, offset: int, value: bytes | None, partition: int = 0) -> None:
        self.consumer = consumer
        self.message = ConsumerMessage("readings", partition, offset, 1.7e9 + offset, 0, [], b"d/s", value, None)
        self.message.incref()  # the stream's own reference, taken when Faust delivers the event

    def ack(self) -> bool:
        return bool(self.message.ack(self.consumer))  # type: ignore[arg-type]


def _take_events_ack(events: list[_Event]) -> None:
    # What faust's Stream.take_events does after the loop body, whether it returned or raised.
    for event in events:
        event.ack()


class _Broker:
    """A send function that refuses the first ``failures`` attempts of every message."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.attempts: dict[bytes, int] = {}
        self.delivered: list[bytes] = []

    async def send(self, topic: str, key: bytes | None, value: bytes) -> Awaitable[Any]:
        self.attempts[value] = self.attempts.get(value, 0) + 1
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.attempts[value] <= self.failures:
            future.set_exception(RuntimeError("MessageSizeTooLargeError"))
        else:
            self.delivered.append(value)
            future.set_result(None)
        return future


def test_failed_sends_are_retried_and_the_batch_acked_only_after_all_are_delivered() -> None:
    async def _run() -> None:
        consumer, broker = _Consumer(), _Broker(failures=3)
        metrics = StreamMetrics(CollectorRegistry())
        delivery = Delivery(broker.send, metrics, max_inflight=1, backoff_s=0.001)
        events = [_Event(consumer, offset, b"x") for offset in range(3)]
        held = delivery.hold(events)
        _take_events_ack(events)
        assert consumer.acked == []
        delivered: list[bool] = []
        await delivery.deliver(held, [("forecasts", b"k", b"a"), ("forecasts", b"k", b"b")],
                               lambda: delivered.append(True))
        await delivery.deliver(delivery.hold([]), [], lambda: None)  # waits for the first batch
        assert broker.attempts == {b"a": 4, b"b": 4} and sorted(broker.delivered) == [b"a", b"b"]
        assert consumer.acked == [0, 1, 2] and delivered == [True]
        assert metrics.send_retries._value.get() == 6
        assert delivery.oldest_age() == 0.0

    asyncio.run(_run())


def test_an_undelivered_batch_stays_held_and_ages_into_stuck() -> None:
    async def _run() -> None:
        now = [100.0]
        consumer, broker = _Consumer(), _Broker(failures=10**9)
        metrics = StreamMetrics(CollectorRegistry())
        delivery = Delivery(broker.send, metrics, backoff_s=0.001, max_backoff_s=0.001, clock=lambda: now[0])
        health = Health(metrics, unhealthy_after_s=30, exit_after_s=120)
        events = [_Event(consumer, 0, b"x")]
        await delivery.deliver(delivery.hold(events), [("dead_letters", None, b"big")], lambda: None)
        _take_events_ack(events)
        await asyncio.sleep(0.05)
        assert health.update(delivery.oldest_age()) == "ok"
        now[0] += 31
        assert health.update(delivery.oldest_age()) == "unhealthy" and health.report()[0] == 503
        assert metrics.healthy._value.get() == 0
        now[0] += 90
        assert health.update(delivery.oldest_age()) == "stuck"
        assert consumer.acked == [] and broker.delivered == []
        assert broker.attempts[b"big"] > 3

    asyncio.run(_run())


class _App:
    def __init__(self, should_stop: bool = False) -> None:
        self.crashed: list[BaseException] = []
        self.consumer = self
        self.should_stop = should_stop

    def highwater(self, tp: TP) -> int | None:
        return None

    async def crash(self, reason: BaseException) -> None:
        self.crashed.append(reason)


def _worker(model_dir: Path, tiny_models: TinyModels) -> StreamWorker:
    settings = StreamSettings(model_dir=model_dir, public_key=tiny_models.public_key, routes=ROUTES,
                              data_dir=model_dir.parent / "faust")
    return StreamWorker(settings, KafkaSettings(), CollectorRegistry())


@pytest.mark.parametrize("where", ["process", "rebuild"])
def test_an_exception_before_delivery_acks_nothing_and_stops_the_worker(
        model_dir: Path, tiny_models: TinyModels, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    worker = _worker(model_dir, tiny_models)
    worker.create_app()
    worker.reassign([TP(worker.layout.readings, 0)])

    def _fail(*args: object, **kwargs: object) -> None:
        raise RuntimeError(f"bug in {where}")

    if where == "process":
        worker._rebuilt.add(0)
        monkeypatch.setattr(worker.processor, "process", _fail)
    else:
        monkeypatch.setattr(worker, "_rebuild", _fail)
    consumer, app = _Consumer(), _App()
    events = [_Event(consumer, offset, reading("d", offset)) for offset in range(5)]

    async def _run() -> None:
        await worker._handle(app, events)  # type: ignore[arg-type]
        _take_events_ack(events)

    asyncio.run(_run())
    assert consumer.acked == [], "a batch that produced nothing was acknowledged: lost"
    assert len(app.crashed) == 1 and worker.health.report()[0] == 503
    assert f"bug in {where}" in worker.health.report()[1]["failure"]


@pytest.mark.parametrize("app_stopping", [False, True])
def test_a_batch_cancelled_mid_rebuild_acks_nothing_and_exits_unless_the_app_is_stopping(
        model_dir: Path, tiny_models: TinyModels, monkeypatch: pytest.MonkeyPatch, app_stopping: bool) -> None:
    worker = _worker(model_dir, tiny_models)
    worker.create_app()
    worker.reassign([TP(worker.layout.readings, 0)])

    async def _cancelled(*args: object, **kwargs: object) -> None:
        raise asyncio.CancelledError

    monkeypatch.setattr(worker, "_rebuild", _cancelled)
    consumer, app = _Consumer(), _App(should_stop=app_stopping)
    events = [_Event(consumer, offset, reading("d", offset)) for offset in range(5)]

    async def _run() -> None:
        with pytest.raises(asyncio.CancelledError):
            await worker._handle(app, events)  # type: ignore[arg-type]
        _take_events_ack(events)
        await asyncio.sleep(0)  # let a scheduled exit run

    asyncio.run(_run())
    assert consumer.acked == [], "a cancelled batch was acknowledged: lost"
    assert len(app.crashed) == (0 if app_stopping else 1)


def test_a_rebalance_keeps_the_windows_of_kept_partitions(model_dir: Path, tiny_models: TinyModels) -> None:
    worker = _worker(model_dir, tiny_models)
    topic = worker.layout.readings
    worker.reassign([TP(topic, 0), TP(topic, 1)])
    for partition in (0, 1):
        worker._rebuilt.add(partition)
        worker.processor.process([(reading(f"p{partition}", s), Source(topic, partition, s, 1.7e9 + s,
                                                                                 f"p{partition}/s".encode()))
                                  for s in range(5)])
    worker.reassign([TP(topic, 0), TP(topic, 2)])
    kept = worker.processor.store.get("p0/s")
    assert kept is not None and kept.last_seq == 4, "a partition kept across the rebalance lost its windows"
    assert 0 in worker._rebuilt and worker.processor.store.get("p1/s") is None
    assert 2 not in worker._rebuilt and 1 not in worker._rebuilt


def test_item7_windows_dropped_for_a_longer_model_window_make_every_partition_rebuild(
        model_dir: Path, tiny_models: TinyModels) -> None:
    worker = _worker(model_dir, tiny_models)
    topic = worker.layout.readings
    worker.reassign([TP(topic, 0), TP(topic, 1)])
    worker._rebuilt.update({0, 1})
    worker.processor.windows_dropped = True
    asyncio.run(worker._process([]))
    assert worker._rebuilt == set(), "a partition would keep answering from windows too short for the new model"
