"""Attack 7: the download's overall deadline must hold whatever the server does.

A hostile registry (or whoever the unsigned ``uri`` points at) answers the model request with a
redirect to ``ftp://``; urllib follows it, and the FTP control connection is not among the sockets
the deadline shuts down. An FTP server trickling its welcome line then holds the download (and the
update thread behind it) far past ``deadline_s``.
"""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading
from pathlib import Path

from streamedge.contracts.download import FetchOptions, download


def test_a_redirect_to_a_trickling_ftp_server_cannot_hold_a_download_past_its_deadline(tmp_path: Path) -> None:
    stop = threading.Event()
    ftp = socket.socket()
    ftp.bind(("127.0.0.1", 0))
    ftp.listen(4)
    ftp.settimeout(0.2)
    ftp_port = ftp.getsockname()[1]
    trickling = threading.Event()

    def trickle() -> None:  # a welcome line, one byte every 100 ms (well inside the per-read timeout)
        while not stop.is_set():
            try:
                conn, _ = ftp.accept()
            except TimeoutError:
                continue
            with conn:
                trickling.set()
                while not stop.wait(0.1):
                    try:
                        conn.sendall(b"2")
                    except OSError:
                        break

    class Redirect(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(302)
            self.send_header("Location", f"ftp://127.0.0.1:{ftp_port}/model.tflite")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threads = [threading.Thread(target=trickle, daemon=True), threading.Thread(target=web.serve_forever, daemon=True)]
    for thread in threads:
        thread.start()
    done = threading.Event()
    outcome: list[BaseException | bytes] = []

    def fetch() -> None:
        try:
            outcome.append(download(f"http://127.0.0.1:{web.server_port}/m/model.tflite",
                                    hashlib.sha256(b"model").hexdigest(), tmp_path,
                                    FetchOptions(timeout_s=1.0, deadline_s=2.0)))
        except BaseException as exc:  # noqa: BLE001 - any end is an end
            outcome.append(exc)
        finally:
            done.set()

    try:
        threading.Thread(target=fetch, daemon=True).start()
        assert trickling.wait(10), "the download never reached the FTP server"
        # deadline_s is 2 s: give it five times that
        assert done.wait(10.0), "a 2 s deadline did not end a download redirected to a trickling ftp:// server"
    finally:
        stop.set()
        web.shutdown()
        web.server_close()
        ftp.close()
        done.wait(15)
