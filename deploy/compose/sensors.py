"""Simulated sensor fleet for deploy/compose: readings into the readings topic, keyed ``device/stream``.

Uses the edge simulator's signal (a sine per device plus noise and rare spikes, stream ``signal``);
every ``--garbage-every`` readings one malformed message is sent too, so the dead-letter path and its
dashboard panel have data. Kafka settings come from ``STREAMEDGE_KAFKA_*`` like every other process.
Touches ``--alive-file`` after every acknowledged batch (the container healthcheck reads its age).

    python sensors.py --topic streamedge.readings --devices 20 --rate 200
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import threading
from pathlib import Path

__all__ = ["main"]

_log = logging.getLogger("sensors")


def main(argv: list[str] | None = None) -> int:
    """Produce readings until SIGTERM/SIGINT (or ``--total`` readings)."""
    from kafka import KafkaProducer

    from streamedge.edge.sources import simulator_payloads
    from streamedge.kafka.settings import KafkaSettings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topic", default="streamedge.readings", help="readings topic")
    parser.add_argument("--devices", type=int, default=20, help="simulated devices (one stream each)")
    parser.add_argument("--rate", type=float, default=200.0, help="readings per second over all devices")
    parser.add_argument("--total", type=int, default=0, help="readings in all (0: endless)")
    parser.add_argument("--garbage-every", type=int, default=500, help="one malformed message per N readings (0: none)")
    parser.add_argument("--alive-file", type=Path, default=Path("/tmp/sensors.alive"), help="touched after each flush")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    producer = KafkaProducer(**KafkaSettings().kafka_python_config(), linger_ms=20)
    sent = 0
    try:
        for payload in simulator_payloads(args.devices, 1, args.rate, args.total):
            if stop.is_set():
                break
            body = json.loads(payload)
            producer.send(args.topic, key=f"{body['device_id']}/{body['stream']}".encode(), value=payload)
            sent += 1
            if args.garbage_every and sent % args.garbage_every == 0:
                producer.send(args.topic, key=b"sim-garbage/signal", value=b'{"device_id": "sim-garbage", "value": ')
            if sent % max(1, int(args.rate) or 100) == 0:
                producer.flush(timeout=30)
                args.alive_file.touch()
                _log.info("sent %d readings", sent)
    finally:
        producer.flush(timeout=30)
        producer.close(timeout=30)
    _log.info("stopped after %d readings", sent)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
