"""The load generator: readings for a fleet of simulated devices, sent to Kafka at a set rate.

Rounds: each round every device sends one message of ``block_size`` consecutive samples (a
single reading when it is 1, a reading block otherwise), so a device's sequence numbers and
event times stay in order within its partition. Drift, anomalies and malformed messages are
decided by seeded generators in event time, so the same settings send the same bytes; only a
``duration_s`` stop depends on the wall clock.

The last round of a ``count`` run is cut short so that exactly ``count`` readings are sent.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streamedge.contracts.identity import sign_message
from streamedge.contracts.reading import MAX_BLOCK_BYTES, MAX_READING_BYTES
from streamedge.errors import ConfigError
from streamedge.kafka.settings import KafkaSettings
from streamedge.simulate.garbage import GARBAGE_KINDS, garbage_payload
from streamedge.simulate.settings import SimulateSettings
from streamedge.simulate.sources import GeneratorSource, ReplaySource, SampleSource, SineSource

__all__ = ["SimulationReport", "Tally", "compose", "open_source", "simulate"]

_LOG = logging.getLogger(__name__)
# Producer linger: short, so a paced round is on the wire well inside its slot (10 ms for 100
# devices at 10,000 readings/s); bigger bursts still fill 512 KiB batches at once.
_LINGER_MS = 2
# A spike of this many source scales is far outside a sine of amplitude 1 scale plus noise.
_ANOMALY_SCALES = 6.0


@dataclass
class Tally:
    """What was composed so far, by kind.

    Attributes:
        messages: good messages (single readings and blocks).
        normal, drifted, anomalies: samples by kind; they sum to the readings sent. A sample
            that is both drifted and an anomaly counts as an anomaly.
        garbage: malformed messages by the rejection reason they are built to cause.
    """

    messages: int = 0
    normal: int = 0
    drifted: int = 0
    anomalies: int = 0
    garbage: Counter[str] = field(default_factory=Counter)

    @property
    def readings(self) -> int:
        """Samples sent in good messages."""
        return self.normal + self.drifted + self.anomalies


@dataclass(frozen=True)
class SimulationReport:
    """The outcome of one run: what was sent, what the broker acknowledged, how fast.

    Attributes:
        readings, messages, normal, drifted, anomalies, garbage: as in :class:`Tally`.
        delivered: messages (good and malformed) the broker acknowledged.
        failed: messages whose delivery failed.
        elapsed_s: wall-clock seconds from the first send to the last acknowledgement.
        sustained_rate: readings per second over ``elapsed_s``.
        peak_rate: readings handed to the producer in the busiest whole wall-clock second
            (0 when the run lasted under a second).
        topic: where they went.
    """

    readings: int
    messages: int
    normal: int
    drifted: int
    anomalies: int
    garbage: dict[str, int]
    delivered: int
    failed: int
    elapsed_s: float
    sustained_rate: float
    peak_rate: float
    topic: str

    @property
    def garbage_total(self) -> int:
        """Malformed messages sent."""
        return sum(self.garbage.values())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready copy, with ``garbage_total``."""
        return {
            "topic": self.topic, "readings": self.readings, "messages": self.messages, "normal": self.normal,
            "drifted": self.drifted, "anomalies": self.anomalies, "garbage": dict(sorted(self.garbage.items())),
            "garbage_total": self.garbage_total, "delivered": self.delivered, "failed": self.failed,
            "elapsed_s": round(self.elapsed_s, 3), "sustained_rate": round(self.sustained_rate, 1),
            "peak_rate": round(self.peak_rate, 1),
        }


def open_source(settings: SimulateSettings) -> SampleSource:
    """The value source the settings name: generator, replay table, or the built-in sines."""
    if settings.generator is not None:
        return GeneratorSource(settings.generator, settings.devices, settings.seed)
    if settings.replay is not None:
        return ReplaySource(settings.replay, settings.devices)
    return SineSource(settings.devices, settings.n_features, settings.seed)


def compose(settings: SimulateSettings, source: SampleSource, start_ts: float,
            tally: Tally) -> Iterator[list[tuple[bytes, bytes]]]:
    """Rounds of ``(key, value)`` messages, counting each into ``tally`` as it is composed.

    Stops after ``settings.count`` readings, or never when ``count`` is None.

    Raises:
        ConfigError: a message would exceed the reading contract's size limit.
    """
    rng = np.random.default_rng([settings.seed, 4])
    devices, block, period = settings.devices, settings.block_size, settings.period
    names = [f"{settings.device_prefix}-{i}" for i in range(devices)]
    keys = [f"{name}/{settings.stream}".encode() for name in names]
    limit = MAX_READING_BYTES if block == 1 else MAX_BLOCK_BYTES
    first = 0
    while settings.count is None or tally.readings < settings.count:
        remaining = None if settings.count is None else settings.count - tally.readings
        per_device = _split(remaining, devices, block)
        values = source.samples(first, block)
        offsets = (first + np.arange(block)) * period
        drifted = np.zeros(block, dtype=bool) if settings.drift_at_s is None else offsets >= settings.drift_at_s
        values = values + drifted[np.newaxis, :, np.newaxis] * (settings.drift_shift * source.scale)
        spikes = rng.random((devices, block)) < settings.anomalies
        signs = np.where(rng.random((devices, block)) < 0.5, -1.0, 1.0)
        values = values + (spikes * signs)[:, :, np.newaxis] * (_ANOMALY_SCALES * source.scale)
        values = np.round(values, 6)
        garbage = rng.random(devices) < settings.garbage
        kinds = rng.integers(0, len(GARBAGE_KINDS), devices)
        ts0 = start_ts + first * period
        messages: list[tuple[bytes, bytes]] = []
        for device, n in enumerate(per_device):
            if n == 0:
                break
            payload = _encode(names[device], settings.stream, first, ts0, period, values[device, :n], block > 1)
            if len(payload) > limit:
                raise ConfigError(f"a message of {len(payload)} bytes exceeds the contract's {limit}: "
                                  "lower the block size")
            messages.append((keys[device], payload))
            tally.messages += 1
            spiked = int(spikes[device, :n].sum())
            late = int(drifted[:n].sum()) - int((spikes[device, :n] & drifted[:n]).sum())
            tally.anomalies += spiked
            tally.drifted += late
            tally.normal += n - spiked - late
            if garbage[device]:
                kind = GARBAGE_KINDS[int(kinds[device])]
                messages.append((keys[device], garbage_payload(kind, names[device], settings.stream, ts0, first)))
                tally.garbage[kind] += 1
        first += block
        yield messages


def _split(remaining: int | None, devices: int, block: int) -> list[int]:
    """Samples per device this round: full blocks, the last round cut to ``remaining``."""
    if remaining is None or remaining >= devices * block:
        return [block] * devices
    return [max(0, min(block, remaining - i * block)) for i in range(devices)]


def _encode(device: str, stream: str, seq: int, ts: float, period: float, values: np.ndarray[Any, Any],
            as_block: bool) -> bytes:
    samples: list[Any] = values[:, 0].tolist() if values.shape[1] == 1 else values.tolist()
    if not as_block:
        body: dict[str, Any] = {"device_id": device, "stream": stream, "ts": ts, "value": samples[0], "seq": seq}
    else:
        body = {"device_id": device, "stream": stream, "seq": seq, "ts": ts, "period": period, "values": samples}
    return json.dumps(body, separators=(",", ":")).encode()


class _Delivery:
    """Counts broker acknowledgements and failures (callbacks run on the producer's thread)."""

    def __init__(self) -> None:
        self.delivered = 0
        self.failed = 0

    def ok(self, _metadata: Any) -> None:
        self.delivered += 1

    def error(self, exc: BaseException) -> None:
        if self.failed == 0:
            _LOG.error("delivery failed: %s", exc)
        self.failed += 1


def simulate(kafka: KafkaSettings, topic: str, settings: SimulateSettings,
             source: SampleSource | None = None, device_keys: dict[str, bytes] | None = None) -> SimulationReport:
    """Send the readings ``settings`` describe to ``topic``; returns what was sent and delivered.

    With ``device_keys`` (device id -> enrolled key, :mod:`streamedge.contracts.identity`), each
    message of a device holding a key is signed as that device would sign it (``streamedge-auth``
    header); messages of other devices go unsigned.

    Blocks until every message is acknowledged or has failed (idempotent producer, acks=all).

    Raises:
        ConfigError: bad source files or an oversized block.
    """
    from kafka import KafkaProducer
    from kafka.errors import KafkaTimeoutError
    from kafka.partitioner.default import murmur2

    source = source if source is not None else open_source(settings)
    start_ts = settings.start_ts if settings.start_ts is not None else round(time.time(), 3)
    tally, delivery = Tally(), _Delivery()
    producer = KafkaProducer(acks="all", enable_idempotence=True, linger_ms=_LINGER_MS, batch_size=512 * 1024,
                             max_request_size=1_048_576,
                             **kafka.kafka_python_config())
    try:
        partitions = sorted(producer.partitions_for(topic))
    except KafkaTimeoutError as exc:
        producer.close()
        raise ConfigError(f"topic {topic} not found on {kafka.bootstrap_servers}") from exc
    # The default partitioner's choice (murmur2 of the key, as the Java client), computed once per
    # device: hashing every message's key in pure Python costs more than the send itself.
    partition_of: dict[bytes, int] = {}
    per_second: Counter[int] = Counter()
    sent = 0
    started = time.monotonic()
    try:
        for messages in compose(settings, source, start_ts, tally):
            before, sent = sent, tally.readings
            if settings.rate > 0:
                # Each round owns the next (its readings / rate) seconds of the schedule and is
                # handed over at the start of its slot: N readings are then due within N / rate
                # seconds, the last round's slot left for its delivery.
                ahead = before / settings.rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
            for key, value in messages:
                partition = partition_of.get(key)
                if partition is None:
                    partition = partition_of[key] = partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]
                signer = device_keys.get(key.split(b"/", 1)[0].decode()) if device_keys else None
                headers = sign_message(value, signer) if signer is not None else None
                future = producer.send(topic, key=key, value=value, partition=partition, headers=headers)
                future.add_callback(delivery.ok).add_errback(delivery.error)
            per_second[int(time.monotonic() - started)] += sent - before
            if settings.duration_s is not None and time.monotonic() - started >= settings.duration_s:
                break
        sending_s = time.monotonic() - started
        producer.flush()
        elapsed = max(time.monotonic() - started, 1e-9)
    finally:
        producer.close()
    return SimulationReport(
        readings=tally.readings, messages=tally.messages, normal=tally.normal, drifted=tally.drifted,
        anomalies=tally.anomalies, garbage=dict(tally.garbage), delivered=delivery.delivered, failed=delivery.failed,
        elapsed_s=elapsed, sustained_rate=tally.readings / elapsed, peak_rate=_peak(per_second, sending_s), topic=topic,
    )


def _peak(per_second: Counter[int], sending_s: float) -> float:
    """Most readings handed over in one whole wall-clock second (the last, partial one left out)."""
    whole = [count for second, count in per_second.items() if second < int(sending_s)]
    return float(max(whole, default=0))
