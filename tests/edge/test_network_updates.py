"""Models over the network: the registry's HTTP server, the resumable download, devices updated over HTTP and inline."""

from __future__ import annotations

import hashlib
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from streamedge.contracts.download import FetchOptions, download, origin
from streamedge.contracts.signing import load_private_key, load_public_key
from streamedge.edge.agent import EdgeAgent
from streamedge.edge.models import ModelStore
from streamedge.edge.sources import IteratorSource, simulator_payloads
from streamedge.errors import VerificationError
from streamedge.kafka.model_updates import publish_model_update
from streamedge.kafka.settings import KafkaSettings
from streamedge.kafka.topics import TopicLayout
from streamedge.registry import ModelRegistry
from streamedge.registry_server import RegistryServer
from streamedge.training.tiny import TinyModels
from tests.edge.helpers import make_version

NAME = "tiny-forecaster"
TOKEN = "fleet-token-1"


@pytest.fixture
def registry(tiny_models: TinyModels, tmp_path: Path) -> ModelRegistry:
    """A registry holding the tiny forecaster v1, v2 (another signed copy) and v3, v1 promoted."""
    key = load_private_key(tiny_models.signing_key)
    registry = ModelRegistry(tmp_path / "registry", key)
    for version in (1, 2, 3):
        registry.add(make_version(tiny_models.forecaster, tmp_path / f"src{version}", version, tiny_models.signing_key,
                                  created_at=f"v{version}"), key)
    registry.promote(NAME, 1)
    return registry


@pytest.fixture
def server(registry: ModelRegistry) -> Iterator[RegistryServer]:
    """The registry served over HTTP on a free port, bearer token required."""
    served = RegistryServer(registry, "127.0.0.1", 0, token=TOKEN, insecure=True)  # loopback: plain HTTP
    served.start()
    yield served
    served.stop()


def _get(url: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_server_token_ranges_etag_and_nothing_else(server: RegistryServer, registry: ModelRegistry) -> None:
    url = f"{server.url}/models/{NAME}/2/model.tflite"
    blob = (registry.path(NAME, 2) / "model.tflite").read_bytes()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert _get(url)[0] == 401
    assert _get(url, Authorization="Bearer wrong")[0] == 401
    status, headers, body = _get(url, **auth)
    assert status == 200 and body == blob and headers["ETag"] == f'"{hashlib.sha256(blob).hexdigest()}"'
    assert _get(url, **auth, **{"If-None-Match": headers["ETag"]})[0] == 304
    status, headers206, body = _get(url, **auth, Range="bytes=10-19")
    assert (status, body, headers206["Content-Range"]) == (206, blob[10:20], f"bytes 10-19/{len(blob)}")
    assert _get(url, **auth, Range="bytes=-5")[2] == blob[-5:]
    assert _get(url, **auth, Range=f"bytes={len(blob)}-")[0] == 416
    status, _, body = _get(url, **auth, Range="bytes=10-", **{"If-Range": '"stale"'})
    assert (status, body) == (200, blob)  # a changed file is sent whole
    assert _get(f"{server.url}/models/{NAME}/2/manifest.json", **auth)[0] == 200
    for path in (f"/models/{NAME}/2/../../{NAME}/promotions.json", f"/models/{NAME}/promotions.json",
                 f"/models/{NAME}/9/model.tflite", f"/models/{NAME}/2/metrics.json", "/models/%2e%2e/1/model.tflite",
                 "/etc/passwd"):
        assert _get(server.url + path, **auth)[0] == 404, path
    assert _get(f"{server.url}/healthz")[0] == 200


def test_download_from_the_registry_resumes_a_partial_file(server: RegistryServer, registry: ModelRegistry,
                                                           tmp_path: Path) -> None:
    url = f"{server.url}/models/{NAME}/2/model.tflite"
    blob = (registry.path(NAME, 2) / "model.tflite").read_bytes()
    digest = hashlib.sha256(blob).hexdigest()
    partial = tmp_path / f".partial-{digest}"
    options = FetchOptions(token=TOKEN, token_origin=origin(server.url), timeout_s=5)
    for kept in (blob[: len(blob) // 3], blob):  # half-way, and already complete (the server answers 416)
        partial.write_bytes(kept)
        assert download(url, digest, tmp_path, options) == blob
        assert not partial.exists()
    with pytest.raises(VerificationError, match="HTTP 401"):
        download(url, digest, tmp_path, FetchOptions(token="wrong", token_origin=origin(server.url), timeout_s=5))


class _Flaky(BaseHTTPRequestHandler):
    """Serves ``blob`` with ranges, but the first full response stops halfway (a dropped link)."""

    protocol_version = "HTTP/1.1"
    blob = b""
    requests: ClassVar[list[str | None]] = []

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def do_GET(self) -> None:
        wanted = self.headers.get("Range")
        type(self).requests.append(wanted)
        start = int(wanted.removeprefix("bytes=").rstrip("-")) if wanted else 0
        self.send_response(206 if wanted else 200)
        self.send_header("Content-Length", str(len(self.blob) - start))
        self.end_headers()
        if len(type(self).requests) == 1:
            self.wfile.write(self.blob[: len(self.blob) // 2])
            self.close_connection = True
            return
        self.wfile.write(self.blob[start:])


def test_download_resumes_caps_and_checks_the_hash(tmp_path: Path) -> None:
    blob = bytes(range(256)) * 1000
    digest = hashlib.sha256(blob).hexdigest()
    _Flaky.blob, _Flaky.requests = blob, []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/m"
    try:
        assert download(url, digest, tmp_path, FetchOptions(timeout_s=5)) == blob
        assert _Flaky.requests == [None, f"bytes={len(blob) // 2}-"]  # the second request resumed
        assert not list(tmp_path.glob(".partial-*"))
        with pytest.raises(VerificationError, match="cap"):
            download(url, digest, tmp_path, FetchOptions(max_bytes=len(blob) - 1, timeout_s=5))
        with pytest.raises(VerificationError, match="sha256"):
            download(url, "0" * 64, tmp_path, FetchOptions(timeout_s=5))
        assert not list(tmp_path.glob(".partial-*"))
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.parametrize("reply", [
    b"garbage\r\n\r\n",  # no status line
    "HTTP/1.1 200 OK\r\nContent-Length: \u00b2\r\n\r\nxx".encode("latin-1"),  # a length int() chokes on
    b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: a\r\n" % i for i in range(101)) + b"\r\n",  # too many headers
], ids=["status", "length", "headers"])
def test_a_server_answering_garbage_is_a_verification_error(tmp_path: Path, reply: bytes) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def answer() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                conn.sendall(reply)

    threading.Thread(target=answer, daemon=True).start()
    try:
        with pytest.raises(VerificationError, match="after 4 attempts"):
            download(f"http://127.0.0.1:{server.getsockname()[1]}/m", "0" * 64, tmp_path, FetchOptions(timeout_s=2))
    finally:
        stop.set()
        server.close()


def _wait_serving(agents: list[EdgeAgent], version: int, timeout_s: float = 60.0) -> float:
    start = time.monotonic()
    while not all(a.predictor is not None and a.predictor.version == version for a in agents):
        assert time.monotonic() - start < timeout_s, [a.predictor.version if a.predictor else None for a in agents]
        time.sleep(0.05)
    return time.monotonic() - start


def test_devices_without_the_registry_folder_update_over_http_and_inline(
        registry: ModelRegistry, server: RegistryServer, kafka_settings: KafkaSettings, tiny_models: TinyModels,
        make_topics: Callable[..., TopicLayout], make_agent: Callable[..., EdgeAgent], tmp_path: Path) -> None:
    layout = make_topics(1)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    # Ten devices: the first five start from v1 installed by hand in their own folders, the other
    # five with no model at all.
    public = load_public_key(tiny_models.public_key)
    for i in range(5):
        ModelStore(tmp_path / f"device-{i}" / "models", public).install(registry.path(NAME, 1))
    agents = [
        make_agent(IteratorSource(simulator_payloads(keys=1, rate=200.0), queue_size=64), kafka_settings, layout,
                   device_id=f"dev-{i}", model_dir=tmp_path / f"device-{i}" / "models", model_name=NAME,
                   buffer_path=tmp_path / f"device-{i}" / "buffer.sqlite", model_updates=True,
                   registry_token_file=token_file, registry_url=server.url)
        for i in range(10)
    ]
    assert all(agent.predictor is None for agent in agents[5:])
    stop = threading.Event()
    threads = [threading.Thread(target=a.run, args=(stop,), daemon=True) for a in agents]
    for thread in threads:
        thread.start()
    try:
        over_http = registry.promote(NAME, 2, base_url=server.url, inline=False)
        assert over_http.inline is None and over_http.uri.startswith("http://")
        publish_model_update(kafka_settings, layout, over_http)
        http_s = _wait_serving(agents, 2)
        dead_url = "http://127.0.0.1:9"  # nothing listens: only the inline bytes can deliver v3
        inline = registry.promote(NAME, 3, base_url=dead_url)
        assert inline.inline is not None
        publish_model_update(kafka_settings, layout, inline)
        inline_s = _wait_serving(agents, 3)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    for i, agent in enumerate(agents):
        assert agent.store.versions(NAME) == ([1, 2, 3] if i < 5 else [2, 3])
        assert agent.ledger.get(NAME) == registry.record(NAME)
        applied = agent.metrics.registry.get_sample_value("streamedge_edge_model_updates_total", {"outcome": "applied"})
        assert applied == 2, i
    # Over HTTP a device reads the message (manifest and URI) and downloads the model file alone.
    model_bytes = (registry.path(NAME, 2) / over_http.manifest.model_file).stat().st_size
    http_bytes = len(over_http.to_json()) + model_bytes
    print(f"\npromote -> 10 devices serving: {http_s:.2f} s over HTTP ({http_bytes / 1000:.1f} KB per device: "
          f"{len(over_http.to_json()) / 1000:.1f} KB message + {model_bytes / 1000:.1f} KB model), "
          f"{inline_s:.2f} s inline ({len(inline.to_json()) / 1000:.1f} KB per device: the message)")
