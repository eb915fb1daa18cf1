"""Attack 7: the minimum download rate is not enforced on a chunked body.

docs/security.md: "A download has an overall deadline (600 s) and, after the first timeout_s, a
minimum rate (16 KiB/s)". The rate is checked only when ``read1`` returns body bytes. A server that
answers ``Transfer-Encoding: chunked`` and trickles the chunk-size line (``0000...``, one byte per
50 ms, each well inside the per-read timeout) returns no body byte at all, so the rate is never
checked and only the overall deadline ends the download: the update thread, and every later
update behind it, rollbacks included, waits the full deadline (600 s by default) per attempt.
"""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from pathlib import Path

from streamedge.contracts.download import FetchOptions, download


def test_a_trickled_chunk_size_line_is_cut_by_the_minimum_rate_not_the_deadline(tmp_path: Path) -> None:
    stop = threading.Event()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    listener.settimeout(0.2)
    port = listener.getsockname()[1]

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                             b"Content-Type: application/octet-stream\r\n\r\n")
                while not stop.wait(0.05):
                    try:
                        conn.sendall(b"0")  # a chunk-size line of leading zeros, never ended
                    except OSError:
                        break

    threading.Thread(target=serve, daemon=True).start()
    done = threading.Event()
    outcome: list[BaseException | bytes] = []

    def fetch() -> None:
        try:
            outcome.append(download(f"http://127.0.0.1:{port}/m/model.tflite", hashlib.sha256(b"m").hexdigest(),
                                    tmp_path, FetchOptions(timeout_s=1.0, deadline_s=60.0)))
        except BaseException as exc:  # noqa: BLE001 - any end is an end
            outcome.append(exc)
        finally:
            done.set()

    began = time.monotonic()
    try:
        threading.Thread(target=fetch, daemon=True).start()
        # timeout_s is 1 s and the server sends 20 bytes/s against a 16 KiB/s minimum: the rate rule
        # should end it a few seconds in, long before the 60 s deadline.
        assert done.wait(10.0), "a 20 byte/s chunked trickle ran past 10 s (only the 60 s deadline would end it)"
        assert "minimum rate" in str(outcome[0]), outcome
    finally:
        stop.set()
        listener.close()
        done.wait(70)
    assert time.monotonic() - began < 70
