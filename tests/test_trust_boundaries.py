"""Trust boundaries: no device, crafted record or slow server can steer or stall the fleet.

One test (or more) per numbered attack of the issue, named for it; those about Kafka records run
against the real test broker. docs/security.md maps each attack to what stops it and to these tests.

- attack 1: the shared device credential trains the fleet's next model (retraining admission).
- attack 2: a 500-deep ``metrics`` in an otherwise valid record crashed every worker and the edge thread.
- attack 3: the worker decoded model-update junk before checking the key, on the event loop.
- attack 4: invented device ids in heartbeats steer a canary (heartbeat identity).
- attack 5: compaction leaves an old signed record (or a tombstone) as a key's newest.
- attack 6: a device installed with ``edge install`` replayed the whole topic.
- attack 7: the unsigned ``uri`` took the token anywhere; a trickling server held the update thread.
- attack 8: ``models serve`` needed neither a token nor TLS.
- attack 9: the on-disk ledger was trusted unsigned (a forged sequence blocked all updates).
- the parse rule: every handler is fed generated hostile messages, deep nesting inside valid ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka import KafkaProducer
from prometheus_client import CollectorRegistry

from streamedge.cli.main import main
from streamedge.contracts.download import FetchOptions, download, fetch_options, origin
from streamedge.contracts.manifest import MANIFEST_FILE, read_manifest
from streamedge.contracts.model_update import ModelUpdate, parse_model_update
from streamedge.contracts.promotion import LEDGER_FILE, PromotionLedger, PromotionRecord, sign_record
from streamedge.contracts.signing import load_private_key, load_public_key
from streamedge.contracts.untrusted import load_json
from streamedge.edge.updates import FetchedUpdate, UpdateWatcher
from streamedge.errors import ConfigError, ManifestError, VerificationError
from streamedge.kafka.settings import KafkaSettings
from streamedge.kafka.topics import TopicLayout
from streamedge.registry import ModelRegistry
from streamedge.registry_server import RegistryServer
from streamedge.services import updates as worker_updates
from streamedge.services.app import StreamWorker
from streamedge.services.canary import FleetView
from streamedge.services.metrics import StreamMetrics
from streamedge.services.models import ModelSet, load_model
from streamedge.services.processor import Processor
from streamedge.services.settings import StreamSettings
from streamedge.services.updates import ModelFollower
from streamedge.training.tiny import TinyModels
from tests.edge.helpers import make_version, other_key
from tests.services.helpers import install
from tests.streamedge.updates import signed_update

NAME = "tiny-forecaster"
KEY = NAME.encode()
ROUTES = {"s": [NAME]}


# ---------------------------------------------------------------- helpers


def _deep(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def _with_deep_field(update: ModelUpdate, field: str, depth: int) -> bytes:
    """``update``'s message with the manifest's free-form ``field`` nested ``depth`` deep (signature now void)."""
    body = json.loads(update.to_json())
    body["manifest"][field] = "@DEEP@"
    return json.dumps(body).replace('"@DEEP@"', _deep(depth)).encode()


def _publish(kafka: KafkaSettings, topic: str, messages: list[tuple[bytes | None, bytes | None]]) -> None:
    producer = KafkaProducer(**kafka.kafka_python_config(), acks="all", max_request_size=2 * 1024 * 1024)
    try:
        for key, value in messages:
            producer.send(topic, key=key, value=value).get(timeout=30)
    finally:
        producer.close()


def _processor(tiny_models: TinyModels) -> Processor:
    models = ModelSet()
    models.swap(load_model(tiny_models.forecaster, load_public_key(tiny_models.public_key)))
    return Processor(StreamSettings(routes=ROUTES), models, StreamMetrics(CollectorRegistry()))


class _Watched:
    """An edge update thread on a real topic, with every refusal reason and fetched update seen."""

    def __init__(self, kafka: KafkaSettings, topic: str, models: Path, public: Any) -> None:
        self.refused: list[str] = []
        self.event = threading.Condition()
        self.watcher = UpdateWatcher(kafka.kafka_python_config(), topic, NAME, models, public,
                                     PromotionLedger(models, public), timeout_s=2.0, on_refused=self._on_refused)
        self.thread = threading.Thread(target=self.watcher.run, daemon=True)

    def _on_refused(self, reason: str) -> None:
        with self.event:
            self.refused.append(reason)
            self.event.notify_all()

    def wait_refused(self, reason: str, count: int, timeout_s: float = 30.0) -> None:
        with self.event:
            assert self.event.wait_for(lambda: self.refused.count(reason) >= count, timeout_s), self.refused

    def next_fetched(self, timeout_s: float = 30.0) -> FetchedUpdate:
        return self.watcher.fetched.get(timeout=timeout_s)

    def __enter__(self) -> _Watched:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.watcher.stop()
        self.thread.join(timeout=15)


def _worker_settings(tiny_models: TinyModels, model_dir: Path, layout: TopicLayout, tmp_path: Path) -> StreamSettings:
    return StreamSettings(routes=ROUTES, public_key=tiny_models.public_key, model_dir=model_dir,
                          topic_prefix=layout.prefix, data_dir=tmp_path / "data")


# ---------------------------------------------------------------- attack 2 and the parse rule


def test_attack2_deep_metrics_record_stops_neither_a_worker_nor_the_edge_thread(
        kafka_settings: KafkaSettings, make_topics: Callable[..., TopicLayout], tiny_models: TinyModels,
        tmp_path: Path) -> None:
    layout = make_topics(1)
    deep = _with_deep_field(signed_update(tiny_models.forecaster, tiny_models.signing_key, 7), "metrics", 500)
    assert len(deep) < 8000  # a few KB, as reproduced
    _publish(kafka_settings, layout.model_updates, [(KEY, deep)])  # the newest record of a routed key
    model_dir = tmp_path / "models"
    install(model_dir, tiny_models.forecaster, NAME)
    worker = StreamWorker(_worker_settings(tiny_models, model_dir, layout, tmp_path), kafka_settings)
    worker.prepare()  # used to raise RecursionError while building the signing payload
    assert worker.models.describe() == {NAME: 1}
    public = load_public_key(tiny_models.public_key)
    with _Watched(kafka_settings, layout.model_updates, tmp_path / "edge", public) as edge:
        edge.wait_refused("malformed", 1)
        v2 = make_version(tiny_models.forecaster, tmp_path / "v2", 2, tiny_models.signing_key)
        _publish(kafka_settings, layout.model_updates, [(KEY, signed_update(v2, tiny_models.signing_key, 8,
                                                                            inline=True).to_json())])
        fetched = edge.next_fetched()  # the thread lived on: the next real update arrives
        assert fetched.folder is not None and fetched.update.version == 2


@pytest.mark.parametrize("field", ["metrics", "reference_stats", "hyperparameters", "runtimes"])
def test_parse_rule_refuses_deep_nesting_inside_an_otherwise_valid_manifest(
        field: str, tiny_models: TinyModels, tmp_path: Path) -> None:
    update = signed_update(tiny_models.forecaster, tiny_models.signing_key, 3)
    for depth in (40, 500, 5000):
        with pytest.raises(ManifestError, match=r"deeper than|not JSON"):
            parse_model_update(_with_deep_field(update, field, depth), KEY)
    folder = tmp_path / field
    folder.mkdir()
    body = json.loads(update.manifest.to_json())
    body[field] = "@DEEP@"
    (folder / MANIFEST_FILE).write_text(json.dumps(body).replace('"@DEEP@"', _deep(500)))
    with pytest.raises(ManifestError, match="deeper than"):
        read_manifest(folder)
    ok = _with_deep_field(update, field, 20)  # free-form but shallow: still parsed
    assert parse_model_update(ok, KEY).name == NAME


def test_parse_rule_bounds_size_and_depth_before_anything_walks_the_value() -> None:
    with pytest.raises(ManifestError, match="exceeds 10"):
        load_json(b"[" * 11, "x", 10)
    with pytest.raises(ManifestError, match="deeper than 3"):
        load_json(b"[[[[1]]]]", "x", 100, 3)
    with pytest.raises(ManifestError, match="not JSON"):
        load_json(b"[" * 100_000, "x", 1_000_000)  # the decoder's own guard: a refusal, not RecursionError
    with pytest.raises(ManifestError, match="NaN is not a JSON number"):
        load_json(b'{"a": NaN}', "x", 100)
    assert load_json(b'{"a": [1, {"b": 2}]}', "x", 100, 3) == {"a": [1, {"b": 2}]}
    with pytest.raises(ManifestError, match="no model name"):
        parse_model_update(b"{}", b"k" * 257)  # the key is judged before the value is decoded
    with pytest.raises(ManifestError, match="no model name"):
        parse_model_update(b"[" * 10, None)


def test_parse_rule_refuses_a_number_too_large_for_a_float() -> None:
    for text in (b'{"a": 1e999}', b'{"a": -1e999}', b'[1.5e400]'):
        with pytest.raises(ManifestError, match="too large for a float"):
            load_json(text, "x", 100)  # Python's decoder made these inf
    assert load_json(b'{"a": 1.5e308, "b": 1e-999}', "x", 100) == {"a": 1.5e308, "b": 0.0}
    record = json.dumps({"model": NAME, "version": 1, "action": "promote", "sequence": 1, "time": 1.0,
                         "sha256": "0" * 64, "expires": 1.0}).replace('"expires": 1.0', '"expires": 1e999')
    with pytest.raises(ManifestError, match="too large"):
        PromotionRecord.from_dict(load_json(record.encode(), "promotion", 1000))


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                     lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
                     max_leaves=12)
_deep_fields = st.sampled_from(["metrics", "reference_stats", "hyperparameters", "runtimes"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.one_of(st.none(), st.binary(max_size=300), st.integers(1, 60_000).map(lambda n: b"[" * n),
                     st.integers(1, 3000).map(lambda n: _deep(n).encode()), _json.map(lambda v: json.dumps(v).encode())),
       field=_deep_fields, depth=st.integers(1, 800), junk=_json,
       top=st.sampled_from(["version", "manifest", "promotion", "inline", "uri", "action", "name"]))
def test_parse_rule_every_handler_survives_generated_hostile_messages(
        tiny_models: TinyModels, tmp_path: Path, raw: bytes | None, field: str, depth: int, junk: object,
        top: str) -> None:
    public = load_public_key(tiny_models.public_key)
    valid = signed_update(tiny_models.forecaster, tiny_models.signing_key, 2)
    broken = json.loads(valid.to_json())
    broken[top] = junk
    messages = [raw, _with_deep_field(valid, field, depth), json.dumps(broken).encode()]
    processor = _processor(tiny_models)
    follower = ModelFollower(processor, tmp_path / "w", public)
    watcher = UpdateWatcher({}, "unused", NAME, tmp_path / "e", public, PromotionLedger(tmp_path / "e", public))
    view = FleetView(NAME, 60.0)
    for message in messages:
        for key in (KEY, b"other", None):
            assert follower.handle(key, message) in ("rejected", "ignored", "current")
            assert asyncio.run(follower.handle_async(key, message)) in ("rejected", "ignored", "current")
            watcher.handle(key, message)  # never raises
        with contextlib.suppress(ManifestError):  # the only exception it may raise
            parse_model_update(message, KEY)
        heartbeat = message if message is None else message.replace(b'"name"', b'"device_id"')
        view.observe(heartbeat, 0.0)
        view.observe(json.dumps({"type": "heartbeat", "device_id": "d", "model": NAME,
                                 "error": junk}).encode(), 0.0)
        for folder, file in ((tmp_path / "e" / NAME, LEDGER_FILE), (tmp_path / "m", MANIFEST_FILE)):
            folder.mkdir(parents=True, exist_ok=True)
            (folder / file).write_bytes(message or b"")
        assert PromotionLedger(tmp_path / "e", public).get(NAME) is None
        with pytest.raises(ManifestError):
            read_manifest(tmp_path / "m")
        (tmp_path / "e" / NAME / LEDGER_FILE).unlink()
    assert processor.models.describe() == {NAME: 1}
    assert watcher.fetched.empty()


# ---------------------------------------------------------------- attack 3


def test_attack3_worker_checks_the_key_first_and_decodes_off_the_event_loop(
        kafka_settings: KafkaSettings, make_topics: Callable[..., TopicLayout], tiny_models: TinyModels,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    decoded_in: list[str] = []
    real_parse = worker_updates.parse_model_update

    def spy(payload: bytes | None, key: bytes | None = None) -> ModelUpdate:
        decoded_in.append(threading.current_thread().name)
        return real_parse(payload, key)

    monkeypatch.setattr(worker_updates, "parse_model_update", spy)
    junk = b"[" * 999_000  # gzip-cheap, one message under the broker's limit
    follower = ModelFollower(_processor(tiny_models), tmp_path / "w", load_public_key(tiny_models.public_key))

    async def judge() -> tuple[str, str, str]:
        return (threading.current_thread().name, await follower.handle_async(b"other-model", junk),
                await follower.handle_async(KEY, junk))

    loop_thread, foreign, routed = asyncio.run(judge())
    assert (foreign, routed) == ("ignored", "rejected")
    assert len(decoded_in) == 1 and decoded_in[0] != loop_thread  # the foreign key was never decoded
    # At start-up too: junk under other keys is skipped undecoded, the real update still applies.
    layout = make_topics(1)
    v2 = make_version(tiny_models.forecaster, tmp_path / "v2", 2, tiny_models.signing_key)
    _publish(kafka_settings, layout.model_updates, [
        *[(f"junk-{i}".encode(), junk) for i in range(6)], (KEY, junk),
        (KEY, signed_update(v2, tiny_models.signing_key, 2, inline=True).to_json())])
    decoded_in.clear()
    model_dir = tmp_path / "models"
    install(model_dir, tiny_models.forecaster, NAME)
    worker = StreamWorker(_worker_settings(tiny_models, model_dir, layout, tmp_path), kafka_settings)
    worker.prepare()
    assert worker.models.describe() == {NAME: 2}
    # The two messages of the routed key (the newest applied once more), none of the six of other keys.
    assert len(decoded_in) == 3


# ---------------------------------------------------------------- attack 9


def _forged_ledgers(tiny_models: TinyModels, tmp_path: Path) -> list[bytes]:
    real = signed_update(tiny_models.forecaster, tiny_models.signing_key, 1).promotion
    assert real is not None
    huge = PromotionRecord.from_dict({**real.to_dict(), "sequence": (1 << 53) - 1, "signature": None})
    return [json.dumps(huge.to_dict()).encode(),  # unsigned
            json.dumps(sign_record(huge, load_private_key(other_key(tmp_path))).to_dict()).encode(),  # rogue key
            json.dumps({**real.to_dict(), "sequence": (1 << 53) - 1}).encode(),  # a real signature, sequence edited
            _deep(5000).encode()]


def test_attack9_a_forged_ledger_on_disk_blocks_no_update(tiny_models: TinyModels, tmp_path: Path) -> None:
    public = load_public_key(tiny_models.public_key)
    v2 = make_version(tiny_models.forecaster, tmp_path / "v2", 2, tiny_models.signing_key)
    promote_v2 = signed_update(v2, tiny_models.signing_key, 2, inline=True)
    for i, forged in enumerate(_forged_ledgers(tiny_models, tmp_path)):
        worker_dir, edge_dir = tmp_path / f"w{i}", tmp_path / f"e{i}"
        for root in (worker_dir, edge_dir):
            (root / NAME).mkdir(parents=True)
            (root / NAME / LEDGER_FILE).write_bytes(forged)
            assert PromotionLedger(root, public).get(NAME) is None  # no verified record: none at all
        follower = ModelFollower(_processor(tiny_models), worker_dir, public)
        assert follower.handle(KEY, promote_v2.to_json()) == "loaded"
        assert PromotionLedger(worker_dir, public).get(NAME) == promote_v2.promotion  # the forgery is replaced
        watcher = UpdateWatcher({}, "unused", NAME, edge_dir, public, PromotionLedger(edge_dir, public))
        watcher.handle(KEY, promote_v2.to_json())
        fetched = watcher.fetched.get_nowait()
        assert fetched.error is None and fetched.update.version == 2


# ---------------------------------------------------------------- attacks 6 and 5


@pytest.fixture
def history(tiny_models: TinyModels, tmp_path: Path) -> tuple[ModelRegistry, list[ModelUpdate]]:
    """A registry whose topic history is v1 #1, v2 #2, rollback to v1 #3, v3 #4 (the issue's replay)."""
    key = load_private_key(tiny_models.signing_key)
    registry = ModelRegistry(tmp_path / "registry", key)
    for version in (1, 2, 3):
        registry.add(make_version(tiny_models.forecaster, tmp_path / f"src{version}", version,
                                  tiny_models.signing_key), key)
    announced = [registry.promote(NAME, 1), registry.promote(NAME, 2), registry.rollback(NAME),
                 registry.promote(NAME, 3)]
    return registry, announced


def _edge_install(tiny_models: TinyModels, models: Path, source: Path, *extra: str) -> int:
    return main(["edge", "install", str(source), "--model-dir", str(models), "--public-key",
                 str(tiny_models.public_key), *extra])


def test_attack6_edge_install_seeds_the_ledger_so_a_new_device_replays_nothing(
        kafka_settings: KafkaSettings, make_topics: Callable[..., TopicLayout], tiny_models: TinyModels,
        history: tuple[ModelRegistry, list[ModelUpdate]], tmp_path: Path) -> None:
    registry, announced = history
    layout = make_topics(1)
    _publish(kafka_settings, layout.model_updates, [(KEY, u.to_json()) for u in announced])
    models = tmp_path / "device" / "models"
    assert _edge_install(tiny_models, models, registry.path(NAME, 3)) == 0
    public = load_public_key(tiny_models.public_key)
    assert PromotionLedger(models, public).get(NAME) == announced[-1].promotion
    with _Watched(kafka_settings, layout.model_updates, models, public) as edge:
        _publish(kafka_settings, layout.model_updates, [(KEY, b"end of history")])  # a sentinel after #4
        edge.wait_refused("malformed", 1)
        assert edge.refused.count("stale") == 3  # #1-#3 refused; #4 is the installed one
        assert edge.watcher.fetched.empty()  # nothing served but v3: no v1, v2, v1, v3 within a second


def test_attack6_edge_install_refuses_a_record_of_another_version(
        tiny_models: TinyModels, history: tuple[ModelRegistry, list[ModelUpdate]], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    registry, announced = history
    models = tmp_path / "device" / "models"
    assert _edge_install(tiny_models, models, registry.path(NAME, 2)) == 0  # installed, but v2 is not current
    assert "not the installed v2" in capsys.readouterr().err
    assert PromotionLedger(models, load_public_key(tiny_models.public_key)).get(NAME) is None
    record = tmp_path / "record.json"
    record.write_text(json.dumps({**json.loads(announced[-1].to_json())["promotion"], "sequence": 99}))
    assert _edge_install(tiny_models, models, registry.path(NAME, 3), "--promotion", str(record)) == 1
    assert "does not match" in capsys.readouterr().err  # an edited record: its signature fails


def test_attack5_an_old_record_or_tombstone_left_newest_by_compaction_moves_no_subscriber_back(
        kafka_settings: KafkaSettings, make_topics: Callable[..., TopicLayout], tiny_models: TinyModels,
        history: tuple[ModelRegistry, list[ModelUpdate]], tmp_path: Path) -> None:
    registry, announced = history
    layout = make_topics(1)
    # What a writer of the topic can leave as the key's newest after compaction: an old signed
    # record (v1 #1), then a tombstone.
    _publish(kafka_settings, layout.model_updates, [(KEY, announced[0].to_json()), (KEY, None)])
    public = load_public_key(tiny_models.public_key)
    models = tmp_path / "device" / "models"
    assert _edge_install(tiny_models, models, registry.path(NAME, 3)) == 0  # a new device
    with _Watched(kafka_settings, layout.model_updates, models, public) as edge:
        edge.wait_refused("malformed", 1)  # the tombstone, after the old record
        assert edge.refused.count("stale") == 1 and edge.watcher.fetched.empty()
    model_dir = tmp_path / "worker"
    install(model_dir, registry.path(NAME, 3), NAME, 3)
    PromotionLedger(model_dir, public).accept(announced[-1].promotion)  # type: ignore[arg-type]
    worker = StreamWorker(_worker_settings(tiny_models, model_dir, layout, tmp_path), kafka_settings)
    worker.prepare()
    assert worker.models.describe() == {NAME: 3}
    assert PromotionLedger(model_dir, public).get(NAME) == announced[-1].promotion


# ---------------------------------------------------------------- attack 7


class _Recorder(BaseHTTPRequestHandler):
    """Serves ``blob`` and records every Authorization header it is sent."""

    protocol_version = "HTTP/1.1"
    blob = b""
    seen: ClassVar[list[str | None]] = []
    fail_first: ClassVar[list[bool]] = [False]

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def do_GET(self) -> None:
        self.seen.append(self.headers.get("Authorization"))
        if self.fail_first[0]:
            self.fail_first[0] = False
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.blob)))
        self.end_headers()
        self.wfile.write(self.blob)


class _Trickle(BaseHTTPRequestHandler):
    """Announces a large body, then sends ``step`` bytes every ``pause_s`` until the client gives up."""

    protocol_version = "HTTP/1.1"
    step, pause_s = 1, 0.05

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(50 * 1024 * 1024))
        self.end_headers()
        try:
            while True:
                self.wfile.write(b"x" * self.step)
                self.wfile.flush()
                time.sleep(self.pause_s)  # the attacker's pacing, not the test's
        except OSError:
            return


@pytest.fixture
def http_server() -> Iterator[Callable[[type[BaseHTTPRequestHandler]], str]]:
    servers: list[ThreadingHTTPServer] = []

    def _start(handler: type[BaseHTTPRequestHandler]) -> str:
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield _start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_attack7_the_token_never_leaves_its_registry_origin(
        http_server: Callable[[type[BaseHTTPRequestHandler]], str], tiny_models: TinyModels, tmp_path: Path) -> None:
    blob = (tiny_models.forecaster / read_manifest(tiny_models.forecaster).model_file).read_bytes()
    _Recorder.blob, _Recorder.seen = blob, []
    registry_url, elsewhere = http_server(_Recorder), http_server(_Recorder)
    token = tmp_path / "token"
    token.write_text("fleet-secret\n")
    options = fetch_options(1 << 20, token, None, 5.0, registry_url)
    digest = read_manifest(tiny_models.forecaster).sha256
    assert download(f"{elsewhere}/m.tflite", digest, tmp_path / "p", options) == blob  # a uri naming another host
    assert download(f"{registry_url}/m.tflite", digest, tmp_path / "p", options) == blob
    assert _Recorder.seen == [None, "Bearer fleet-secret"]
    with pytest.raises(ConfigError, match="needs the registry URL"):
        fetch_options(1 << 20, token, None, 5.0)
    with pytest.raises(ConfigError, match="https only"):
        fetch_options(1 << 20, token, None, 5.0, "http://registry.example:8765")
    assert origin("HTTPS://Registry.Example/models/") == "https://registry.example:443"


@pytest.mark.parametrize(("step", "reason"), [(1, "minimum rate"), (4096, "deadline")])
def test_attack7_a_trickling_server_cannot_hold_a_download(
        http_server: Callable[[type[BaseHTTPRequestHandler]], str], tmp_path: Path, step: int, reason: str) -> None:
    handler = type("Trickle", (_Trickle,), {"step": step})
    url = http_server(handler) + "/m.tflite"
    options = FetchOptions(max_bytes=64 * 1024 * 1024, timeout_s=0.5, deadline_s=1.5, min_rate_bps=2048)
    outcome: queue.Queue[BaseException | None] = queue.Queue()

    def fetch() -> None:
        try:
            download(url, "0" * 64, tmp_path, options)
            outcome.put(None)
        except BaseException as exc:
            outcome.put(exc)

    threading.Thread(target=fetch, daemon=True).start()
    error = outcome.get(timeout=20)  # the old download never returned
    assert isinstance(error, VerificationError) and reason in str(error)
    partial = tmp_path / f".partial-{'0' * 64}"
    assert not partial.exists() or partial.stat().st_size <= options.max_bytes


def test_attack7_a_failed_fetch_is_tried_again_with_backoff_and_partials_stay_bounded(
        http_server: Callable[[type[BaseHTTPRequestHandler]], str], tiny_models: TinyModels, tmp_path: Path) -> None:
    public = load_public_key(tiny_models.public_key)
    manifest = read_manifest(tiny_models.forecaster)
    _Recorder.blob, _Recorder.seen = (tiny_models.forecaster / manifest.model_file).read_bytes(), []
    url = http_server(_Recorder) + "/v1/"
    v2 = make_version(tiny_models.forecaster, tmp_path / "v2", 2, tiny_models.signing_key)
    update = signed_update(v2, tiny_models.signing_key, 2, uri=url)
    stale_partial = tmp_path / "e" / NAME / f".partial-{'f' * 64}"
    stale_partial.parent.mkdir(parents=True)
    stale_partial.write_bytes(b"left by an earlier failed fetch")
    for attempt_of in ("edge", "worker"):
        _Recorder.fail_first[0] = True  # the registry answers 404 once (restarting), then serves
        root = tmp_path / ("e" if attempt_of == "edge" else "w")
        watcher = UpdateWatcher({}, "unused", NAME, root, public, PromotionLedger(root, public))
        follower = ModelFollower(_processor(tiny_models), root, public)
        retries = watcher.retries if attempt_of == "edge" else follower.retries
        if attempt_of == "edge":
            watcher.handle(KEY, update.to_json())
            assert watcher.fetched.get_nowait().error is not None
        else:
            assert asyncio.run(follower.handle_async(KEY, update.to_json())) == "rejected"
        now = time.monotonic()
        assert retries.due(now) == []  # not at once: after a pause
        due = retries.due(now + 2.0)
        assert due == [(KEY, update.to_json())]
        for key, value in due:
            if attempt_of == "edge":
                watcher.handle(key, value)
                fetched = watcher.fetched.get_nowait()
                assert fetched.error is None and fetched.folder is not None
            else:
                assert asyncio.run(follower.handle_async(key, value)) == "loaded"
        assert retries.due(now + 3600) == []
    assert not stale_partial.exists()  # a new download removes partials of other hashes
    first, again = retries.failed("m", b"m", b"x", 0.0), retries.failed("m", b"m", b"x", 0.0)
    assert (first, again) == (2.0, 4.0) and retries.failed("m", b"m", b"y", 0.0) == 2.0


# ---------------------------------------------------------------- attack 8


def _self_signed(folder: Path) -> tuple[Path, Path]:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_attack8_models_serve_needs_a_token_and_tls_unless_insecure(
        history: tuple[ModelRegistry, list[ModelUpdate]], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    registry, _ = history
    cert, key = _self_signed(tmp_path)
    for token, certfile in ((None, None), ("t", None), (None, cert)):
        with pytest.raises(ConfigError, match="needs a token and TLS"):
            RegistryServer(registry, "127.0.0.1", 0, token, certfile, key if certfile else None)
    assert main(["models", "serve", "--registry", str(registry.root), "--port", "0"]) == 1
    assert "needs a token and TLS" in capsys.readouterr().err
    for server in (RegistryServer(registry, "127.0.0.1", 0, "t", cert, key),
                   RegistryServer(registry, "127.0.0.1", 0, insecure=True)):
        server.start()
        server.stop()
        assert server.url.startswith("https://" if server.token else "http://")


def test_attack8_the_registry_fsyncs_its_promotions_before_a_record_leaves(
        tiny_models: TinyModels, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = load_private_key(tiny_models.signing_key)
    registry = ModelRegistry(tmp_path / "registry", key)
    registry.add(tiny_models.forecaster, key)
    synced: list[str] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    registry.promote(NAME, 1)
    folder = (tmp_path / "registry" / NAME).resolve()
    assert str(folder / "promotions.tmp") in synced and str(folder) in synced



# ---------------------------------------------------------------- attack 1


def _levels(kafka: KafkaSettings, topic: str, devices: dict[str, tuple[float, int]]) -> None:
    """Publish ``n`` readings at ``level`` (plus a small seeded wobble) for each ``device: (level, n)``."""
    from tests.services.helpers import produce, reading

    rng = np.random.default_rng(7)
    produce(kafka, topic, [(f"{device}/s".encode(), reading(device, seq, float(level + rng.normal(0.0, 5.0))))
                           for device, (level, n) in devices.items() for seq in range(n)])


def test_attack1_retraining_admits_only_enrolled_devices_within_their_share_and_the_data_check(
        kafka_settings: KafkaSettings, make_topics: Callable[..., TopicLayout], tiny_models: TinyModels) -> None:
    from streamedge.training.admission import AdmissionPolicy, admit
    from streamedge.training.kafka_source import replay_topic

    layout = make_topics(1)
    fleet = {f"d{i}": (275.0, 100) for i in range(4)}
    # The shared device credential: an invented id with far more (and far off) readings, an
    # enrolled device pushing the same level, and one enrolled device flooding plausible data.
    _levels(kafka_settings, layout.readings, {**fleet, "ghost": (2234.0, 800), "d3": (2234.0, 100),
                                              "d2": (280.0, 900)})
    replayed = replay_topic(kafka_settings, layout.readings, streams={"s"})
    champion = read_manifest(tiny_models.forecaster).replace(normalisation={"mean": [275.0], "std": [60.0]})
    open_mean = float(np.concatenate(replayed.series).mean())
    assert open_mean > 1000  # what the retrain learnt before: normalisation mean 275 -> over 1,000
    enrolled = admit(replayed, champion, AdmissionPolicy(frozenset(fleet)))
    assert enrolled.refused["ghost"] == "not enrolled"
    assert "standard deviations" in enrolled.refused["d3"]  # enrolled but far from every other device
    assert enrolled.max_share() <= 0.5 + 1e-9 and enrolled.capped["d2"] > 0
    assert abs(float(np.concatenate(enrolled.data.series).mean()) - 275.0) < 10
    # Without an enrolment file the data check still refuses the far-off invented device.
    assert "ghost" in admit(replayed, champion, AdmissionPolicy()).refused
    lonely = admit(replayed, champion, AdmissionPolicy(frozenset({"d0"})))
    assert lonely.data.series == [] and "at least 2" in lonely.refused["d0"]  # one device cannot be bounded


# ---------------------------------------------------------------- attack 4


def test_attack1_retraining_learns_only_readings_signed_by_the_device_they_name(
        kafka_settings: KafkaSettings, make_topics: Callable[..., TopicLayout], tmp_path: Path) -> None:
    from streamedge.contracts.identity import enrol, load_enrolment, sign_message
    from streamedge.training.kafka_source import replay_topic

    layout = make_topics(1)
    keys = {device: enrol(tmp_path / "enrolment", device) for device in ("d0", "d1")}
    genuine = [(f"d{i}", seq, 275.0, keys[f"d{i}"]) for i in (0, 1) for seq in range(30)]
    # d1 (enrolled, holding the shared credential) speaks for d0: signed with its own key, and
    # unsigned; and for an id nobody enrolled.
    forged = [("d0", seq, 2234.0, keys["d1"]) for seq in range(30, 60)] + \
             [("d0", seq, 2234.0, None) for seq in range(60, 90)] + [("ghost", seq, 2234.0, keys["d1"]) for seq in range(30)]
    producer = KafkaProducer(**kafka_settings.kafka_python_config())
    try:
        for device, seq, level, key in genuine + forged:
            value = json.dumps({"device_id": device, "stream": "s", "ts": 1.7e9 + seq, "value": level,
                                "seq": seq}).encode()
            producer.send(layout.readings, key=f"{device}/s".encode(), value=value,
                          headers=sign_message(value, key) if key is not None else None)
        producer.flush(timeout=30)
    finally:
        producer.close()
    open_replay = replay_topic(kafka_settings, layout.readings, streams={"s"})
    assert float(np.concatenate(open_replay.series).mean()) > 1000  # the forgeries, learnt as d0 and ghost
    checked = replay_topic(kafka_settings, layout.readings, streams={"s"}, enrolment=load_enrolment(tmp_path / "enrolment"))
    assert checked.ids == ["d0/s", "d1/s"] and [len(s) for s in checked.series] == [30, 30]
    assert float(np.concatenate(checked.series).mean()) == 275.0
    assert any(f"'unauthenticated': {len(forged)}" in note for note in checked.report.notes)


def test_attack4_heartbeats_count_only_when_signed_by_the_enrolled_device_itself(
        kafka_settings: KafkaSettings, make_topics: Callable[..., TopicLayout], tiny_models: TinyModels,
        history: tuple[ModelRegistry, list[ModelUpdate]], tmp_path: Path) -> None:
    from streamedge.contracts.identity import enrol, load_enrolment, sign_event
    from streamedge.services.canary import CanaryPolicy, CanaryWatcher
    from tests.services.helpers import consume_until

    registry, _ = history
    registry.promote(NAME, 2, target="canary:50")  # v2 staged, v3 the fleet version
    enrolment_file = tmp_path / "enrolment"
    keys = {device: enrol(enrolment_file, device) for device in ("c1", "f1")}
    enrolment = load_enrolment(enrolment_file)

    now = time.time()  # heartbeats are judged fresh by their signed ts

    def heartbeat(device: str, version: int, mae: float, key: bytes | None, seq: int = 1) -> bytes:
        body = {"type": "heartbeat", "device_id": device, "model": NAME, "seq": seq, "ts": now + seq,
                "version": version, "error": {"mae": mae, "count": 500}}
        return json.dumps(sign_event(body, key) if key is not None else body).encode()

    genuine = [heartbeat("c1", 2, 9.0, keys["c1"]), heartbeat("f1", 3, 1.0, keys["f1"])]  # the canary is worse
    # Suppress the rollback: three invented canary devices reporting a good error, and one
    # pretending to be f1 (signed with c1's key); then force one: a replay of c1's heartbeat.
    forged = [*(heartbeat(f"ghost-{i}", 2, 0.5, None) for i in range(3)), heartbeat("f1", 3, 50.0, keys["c1"], 2),
              heartbeat("c1", 2, 9.0, keys["c1"])]
    layout = make_topics(1)
    _publish(kafka_settings, layout.edge_telemetry, [(None, m) for m in genuine + forged])
    messages = consume_until(kafka_settings, [layout.edge_telemetry], lambda ms: len(ms) >= 7, timeout=30)
    for trusted in (None, enrolment):
        published: list[ModelUpdate] = []
        watcher = CanaryWatcher(registry, NAME, load_private_key(tiny_models.signing_key), published.append,
                                CanaryPolicy(min_samples=10), enrolment=trusted)
        for message in messages:
            watcher.observe(message.value)
        rolled_back = watcher.check()
        if trusted is None:
            assert rolled_back is None  # the forged ids out-voted the real canary device
        else:
            assert rolled_back is not None and published == [rolled_back]
            assert watcher.view.unauthenticated == 5 and registry.canary(NAME) is None


def test_attack4_the_agent_signs_its_heartbeats_with_its_enrolled_key(
        tiny_models: TinyModels, tmp_path: Path) -> None:
    from streamedge.contracts.identity import load_enrolment
    from streamedge.edge.agent import EdgeAgent
    from streamedge.edge.models import ModelStore
    from streamedge.edge.settings import EdgeSettings
    from streamedge.edge.sources import IteratorSource

    enrolment, key = tmp_path / "enrolment", tmp_path / "pump-7.key"
    command = ["edge", "enrol", "pump-7", "--enrolment", str(enrolment), "--key-out", str(key)]
    assert main(command) == 0
    assert main(command) == 1  # enrolled already: one key per device
    assert (enrolment.stat().st_mode & 0o777, key.stat().st_mode & 0o777) == (0o600, 0o600)
    public = load_public_key(tiny_models.public_key)
    ModelStore(tmp_path / "models", public).install(tiny_models.forecaster)
    settings = EdgeSettings(device_id="pump-7", model_dir=tmp_path / "models", public_key=tiny_models.public_key,
                            buffer_path=tmp_path / "buffer.sqlite", metrics_port=0, model_updates=False,
                            log_format="text", device_key_file=key)
    agent = EdgeAgent(settings, KafkaSettings(bootstrap_servers="127.0.0.1:9"), TopicLayout(prefix="unused."),
                      IteratorSource(iter(()), queue_size=4), public, CollectorRegistry())
    try:
        agent.heartbeat()
        agent.heartbeat()
        beats = [row.value for row in agent.outbox.peek(10)]
    finally:
        agent.outbox.close()
    view = FleetView(NAME, 60.0, enrolment=load_enrolment(enrolment))
    assert len(beats) == 2 and all(view.observe(beat, 0.0) is not None for beat in beats)
    edited = json.loads(beats[1])
    edited["seq"] += 5  # a fresh seq, but not what the device signed
    assert view.observe(json.dumps(edited).encode(), 0.0) is None
    assert view.observe(beats[1], 0.0) is None and view.unauthenticated == 2  # and a replay


def test_attack4_a_heartbeat_replayed_after_the_watcher_restarts_is_refused(tmp_path: Path) -> None:
    from streamedge.contracts.identity import enrol, load_enrolment, sign_event

    key = enrol(tmp_path / "enrolment", "c1")
    enrolment = load_enrolment(tmp_path / "enrolment")
    signed_at = 1.8e9
    beat = json.dumps(sign_event({"type": "heartbeat", "device_id": "c1", "model": NAME, "seq": 7, "ts": signed_at,
                                  "version": 2, "error": {"mae": 0.5, "count": 500}}, key)).encode()
    first = FleetView(NAME, 120.0, enrolment=enrolment, wall_clock=lambda: signed_at + 1)
    assert first.observe(beat, 0.0) is not None
    assert first.observe(beat, 1.0) is None  # a replay to the same watcher: its seq is used
    # The watcher restarts (its seq memory is empty) and the captured heartbeat is sent again
    # later: the signed ts, not the lost seq, refuses it.
    restarted = FleetView(NAME, 120.0, enrolment=enrolment, wall_clock=lambda: signed_at + 600)
    assert restarted.observe(beat, 0.0) is None and restarted.unauthenticated == 1
    ahead = json.dumps(sign_event({**json.loads(beat), "seq": 8, "ts": signed_at + 1200}, key)).encode()
    assert restarted.observe(ahead, 0.0) is None  # nor a heartbeat signed for the future
    fresh = json.dumps(sign_event({**json.loads(beat), "seq": 8, "ts": signed_at + 590}, key)).encode()
    assert restarted.observe(fresh, 0.0) is not None


def test_attack4_enrolment_and_key_files_are_left_0600_even_when_they_existed(tmp_path: Path) -> None:
    enrolment, key = tmp_path / "enrolment", tmp_path / "pump-7.key"
    for path in (enrolment, key):
        path.touch(mode=0o644)
        path.chmod(0o644)  # a copy or a touch: readable by every user of the host
    assert main(["edge", "enrol", "pump-7", "--enrolment", str(enrolment), "--key-out", str(key)]) == 0
    assert (enrolment.stat().st_mode & 0o777, key.stat().st_mode & 0o777) == (0o600, 0o600)
    assert len(key.read_text().strip()) == 64 and "pump-7" in enrolment.read_text()


class _Redirect(BaseHTTPRequestHandler):
    """Answers every request with a redirect to ``target``, recording the Authorization it was sent."""

    target = ""
    seen: ClassVar[list[str | None]] = []

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def do_GET(self) -> None:
        self.seen.append(self.headers.get("Authorization"))
        self.send_response(302)
        self.send_header("Location", self.target + self.path)
        self.send_header("Content-Length", "0")
        self.end_headers()


def test_attack7_the_token_never_follows_a_redirect_to_another_host(
        http_server: Callable[[type[BaseHTTPRequestHandler]], str], tiny_models: TinyModels, tmp_path: Path) -> None:
    """Before: urllib copied the Authorization header onto the redirected request, to any host."""
    blob = (tiny_models.forecaster / read_manifest(tiny_models.forecaster).model_file).read_bytes()
    _Recorder.blob, _Recorder.seen = blob, []
    elsewhere = http_server(_Recorder)
    _Redirect.target, _Redirect.seen = elsewhere, []
    registry_url = http_server(_Redirect)
    token = tmp_path / "token"
    token.write_text("fleet-secret\n")
    options = fetch_options(1 << 20, token, None, 5.0, registry_url)
    digest = read_manifest(tiny_models.forecaster).sha256
    assert download(f"{registry_url}/m.tflite", digest, tmp_path / "p", options) == blob
    assert (_Redirect.seen, _Recorder.seen) == (["Bearer fleet-secret"], [None])


class _SlowHeaders(BaseHTTPRequestHandler):
    """Sends its status line, then one header line every ``pause_s``: each read is quick, the whole never ends."""

    pause_s = 0.2

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def do_GET(self) -> None:
        try:
            self.wfile.write(b"HTTP/1.1 200 OK\r\n")
            for n in range(10_000):
                self.wfile.write(b"X-Pad-%d: 1\r\n" % n)
                self.wfile.flush()
                time.sleep(self.pause_s)  # the attacker's pacing, not the test's
        except OSError:
            return


def test_attack7_a_server_trickling_its_headers_cannot_hold_a_download(
        http_server: Callable[[type[BaseHTTPRequestHandler]], str], tmp_path: Path) -> None:
    """Before: the deadline was checked between body reads only; header lines 0.5 s apart held it for minutes."""
    url = http_server(_SlowHeaders) + "/m.tflite"
    options = FetchOptions(max_bytes=1 << 20, timeout_s=1.0, deadline_s=1.5, min_rate_bps=0)
    outcome: queue.Queue[BaseException | None] = queue.Queue()

    def fetch() -> None:
        try:
            download(url, "0" * 64, tmp_path, options)
            outcome.put(None)
        except BaseException as exc:
            outcome.put(exc)

    threading.Thread(target=fetch, daemon=True).start()
    error = outcome.get(timeout=60)  # the old download was still reading headers
    assert isinstance(error, VerificationError) and "deadline" in str(error)


def test_attack9_a_fifo_in_place_of_the_ledger_is_counted_as_none_without_hanging(
        tiny_models: TinyModels, tmp_path: Path) -> None:
    """Before: the ledger was opened blocking, and a FIFO put there held the reader for good."""
    import os

    ledger = PromotionLedger(tmp_path, load_public_key(tiny_models.public_key))
    (tmp_path / NAME).mkdir()
    os.mkfifo(tmp_path / NAME / "promotion.json")
    outcome: queue.Queue[object] = queue.Queue()
    threading.Thread(target=lambda: outcome.put(ledger.get(NAME)), daemon=True).start()
    assert outcome.get(timeout=30) is None
