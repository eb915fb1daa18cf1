"""A real single-node Apache Kafka broker (KRaft, broker + controller) on 127.0.0.1.

Started from pinned jars (``pom.xml`` beside this module, fetched once with Maven into
``<state_dir>/libs``) for development, tests and the demo. Listens on loopback only.
State folder layout::

    <state_dir>/libs/          broker jars (cached; refetched when the pom changes)
    <state_dir>/data/          KRaft log dirs (formatted on first start)
    <state_dir>/server.properties, log4j.properties
    <state_dir>/broker.log     broker stdout/stderr
    <state_dir>/broker.pid

``up`` is idempotent (a running broker is left alone; a stale pid file is recovered) and
returns only once the broker answers a Metadata request, not merely when the port opens.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import signal
import socket
import struct
import subprocess
import time
import uuid
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from streamedge.errors import StreamedgeError
from streamedge.kafka._wire import request

if TYPE_CHECKING:
    from streamedge.kafka.security import BrokerSecurity

__all__ = ["BrokerError", "BrokerStatus", "LocalBroker", "min_insync_replicas", "new_cluster_id"]

_POM = "pom.xml"
_METADATA_API_KEY = 3


class BrokerError(StreamedgeError, RuntimeError):
    """The local broker could not be fetched, started or stopped."""


@dataclass(frozen=True)
class BrokerStatus:
    """What ``status`` found: ``running`` means the broker answered a Metadata request."""

    running: bool
    pid: int | None
    bootstrap: str
    detail: str


def new_cluster_id() -> str:
    """A fresh KRaft cluster id (16 random bytes, URL-safe base64 without padding).

    Never starting with ``-`` (one id in 64 would): the storage tool would read it as an option,
    and Kafka's own ``Uuid.randomUuid`` draws again for the same reason.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def min_insync_replicas(replicas: int) -> int:
    """``min.insync.replicas`` for a replication factor: 2 of 3 (one broker may fail), else 1."""
    return 2 if replicas >= 3 else 1


def _metadata_brokers(host: str, port: int, timeout: float) -> int:
    """Send a Metadata v0 request and return how many brokers the cluster reports."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        response = request(sock, _METADATA_API_KEY, 0, 1, b"streamedge-probe", struct.pack(">i", 0))
    (n_brokers,) = struct.unpack(">i", response[:4])
    return int(n_brokers)


class LocalBroker:
    """Manage one local broker under ``state_dir``.

    Args:
        state_dir: folder for jars, data, logs and the pid file.
        port: client listener port on 127.0.0.1.
        controller_port: KRaft controller listener port on 127.0.0.1.
        heap_mb: JVM max heap; 512 MiB is plenty for tests and the demo.
        node_id: KRaft node id (1 for a single broker).
        quorum_voters: ``controller.quorum.voters`` (``id@host:port,...``); default: this node alone.
        cluster_id: KRaft cluster id every node of one cluster is formatted with; default: a new one.
        replicas: replication factor of the internal topics (offsets, transactions) and the
            default of new topics: 1 for a single broker, 3 in a 3-node cluster (then with
            ``min.insync.replicas=2``).
        libs_dir: jars fetched by someone else (the nodes of a cluster, a test broker's), used as
            they are once fetched: never refetched or removed from here, since a running broker
            may be reading them. Default ``<state_dir>/libs``, fetched and kept to the pom.
        security: SASL_SSL listeners, SCRAM users and the ACL authorizer
            (:mod:`streamedge.kafka.security`) instead of PLAINTEXT; must be given from the first
            start on, since the SCRAM users are created when the storage is formatted.
    """

    def __init__(self, state_dir: Path, port: int = 9092, controller_port: int = 9093, heap_mb: int = 512,
                 *, node_id: int = 1, quorum_voters: str | None = None, cluster_id: str | None = None,
                 replicas: int = 1, libs_dir: Path | None = None, security: BrokerSecurity | None = None) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.port = port
        self.controller_port = controller_port
        self.heap_mb = heap_mb
        self.node_id = node_id
        self.quorum_voters = quorum_voters or f"{node_id}@127.0.0.1:{controller_port}"
        self.cluster_id = cluster_id
        self.replicas = replicas
        self.libs_dir = Path(libs_dir).resolve() if libs_dir is not None else self.state_dir / "libs"
        self._libs_shared = libs_dir is not None
        self.security = security

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def _pid_file(self) -> Path:
        return self.state_dir / "broker.pid"

    @property
    def log_file(self) -> Path:
        return self.state_dir / "broker.log"

    def _read_pid(self) -> int | None:
        try:
            pid = int(self._pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return pid
        return pid

    def _answers(self, timeout: float = 2.0) -> bool:
        if self.security is not None:
            return self.security.probe("127.0.0.1", self.port, timeout)
        try:
            return _metadata_brokers("127.0.0.1", self.port, timeout) >= 1
        except (OSError, struct.error, ValueError):  # ValueError: an answer to another request
            return False

    def brokers_listed(self, timeout: float = 1.0) -> int | None:
        """How many brokers this node's metadata lists now (0 while it does not answer).

        None for a SASL_SSL node: it lists brokers only to a client that has logged in.
        """
        if self.security is not None:
            return None
        try:
            return _metadata_brokers("127.0.0.1", self.port, timeout)
        except (OSError, struct.error, ValueError):
            return 0

    def status(self) -> BrokerStatus:
        """Whether the broker runs and answers metadata."""
        pid = self._read_pid()
        if pid is None:
            return BrokerStatus(False, None, self.bootstrap, "not running")
        if self._answers():
            return BrokerStatus(True, pid, self.bootstrap, f"running (pid {pid}) on {self.bootstrap}")
        return BrokerStatus(False, pid, self.bootstrap, f"process {pid} alive but not answering on {self.bootstrap}")

    def fetch_jars(self) -> Path:
        """Fetch the pinned jars with Maven unless cached for this exact pom; returns the libs folder."""
        libs = self.libs_dir
        pom = resources.files("streamedge.kafka").joinpath(_POM).read_bytes()
        digest = hashlib.sha256(pom).hexdigest()
        marker = libs / ".pom-sha256"
        if marker.is_file() and (self._libs_shared or marker.read_text() == digest):
            return libs
        mvn = shutil.which("mvn")
        if mvn is None:
            raise BrokerError("Maven (mvn) is needed once to fetch the Kafka jars: install maven and Java 17")
        if libs.exists():
            shutil.rmtree(libs)
        libs.mkdir(parents=True)
        pom_path = libs.parent / _POM
        pom_path.write_bytes(pom)
        result = subprocess.run(
            [mvn, "-q", "-B", "-f", str(pom_path), "dependency:copy-dependencies",
             f"-DoutputDirectory={libs}", "-DincludeScope=runtime"],
            capture_output=True, text=True, check=False,
        )
        if result.returncode != 0:
            raise BrokerError(f"Maven could not fetch the Kafka jars: {(result.stdout + result.stderr).strip()[-500:]}")
        marker.write_text(digest)
        return libs

    def _write_config(self) -> Path:
        data = self.state_dir / "data"
        min_isr = min_insync_replicas(self.replicas)
        properties = {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            "controller.quorum.voters": self.quorum_voters,
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(data),
            "num.partitions": "3",
            # Internal topics cannot have more replicas than brokers; with 3, one may fail.
            "offsets.topic.replication.factor": str(self.replicas),
            "transaction.state.log.replication.factor": str(self.replicas),
            "transaction.state.log.min.isr": str(min_isr),
            "share.coordinator.state.topic.replication.factor": str(self.replicas),
            "default.replication.factor": str(self.replicas),
            "min.insync.replicas": str(min_isr),
            # Tests and the demo start consumer groups often; do not wait 3 s for more members.
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "true",
            "log.retention.hours": "24",
        }
        if self.security is not None:
            properties.update(self.security.server_properties(self.port, self.controller_port))
        config = self.state_dir / "server.properties"
        text = "".join(f"{key}={value}\n" for key, value in properties.items())
        if self.security is not None:  # it holds the keystore and inter-broker passwords: 0600 from creation
            from streamedge.kafka.security import write_secret

            write_secret(config, text.encode())
        else:
            config.write_text(text)
        (self.state_dir / "log4j.properties").write_text(
            "log4j.rootLogger=INFO, stdout\n"
            "log4j.appender.stdout=org.apache.log4j.ConsoleAppender\n"
            "log4j.appender.stdout.layout=org.apache.log4j.PatternLayout\n"
            "log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n\n"
            "log4j.logger.kafka=INFO\nlog4j.logger.org.apache.kafka=INFO\n"
        )
        return config

    def _java(self, libs: Path, *args: str) -> list[str]:
        java = shutil.which("java")
        if java is None:
            raise BrokerError("Java 17 (java) is needed to run the Kafka broker")
        return [java, f"-Xmx{self.heap_mb}m", f"-Xms{min(256, self.heap_mb)}m",
                f"-Dlog4j.configuration=file:{self.state_dir / 'log4j.properties'}",
                "-cp", f"{libs}/*", *args]

    def _format(self, libs: Path, config: Path) -> None:
        if (self.state_dir / "data" / "meta.properties").is_file():
            return
        cluster_id = self.cluster_id or new_cluster_id()
        scram = self.security.format_args() if self.security is not None else []
        result = subprocess.run(
            self._java(libs, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(config), *scram),
            capture_output=True, text=True, check=False,
        )
        if result.returncode != 0:
            raise BrokerError(f"formatting KRaft storage failed: {(result.stdout + result.stderr).strip()[-500:]}")

    def up(self, timeout: float = 60.0) -> BrokerStatus:
        """Start the broker (no-op when it already answers) and wait until it serves metadata."""
        process = self.start()
        if process is None:
            return self.status()
        return self.wait(process, timeout)

    def start(self) -> subprocess.Popen[bytes] | None:
        """Launch the broker without waiting for it; None when it already answers.

        The nodes of a cluster are all started before any is waited for: a KRaft node serves
        metadata only once a majority of the controller quorum runs.
        """
        current = self.status()
        if current.running:
            return None
        if current.pid is not None:
            self._terminate(current.pid)
        self._pid_file.unlink(missing_ok=True)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if self._answers(timeout=0.5):
            raise BrokerError(f"port {self.port} already serves another Kafka broker not managed from {self.state_dir}")
        libs = self.fetch_jars()
        config = self._write_config()
        self._format(libs, config)
        with self.log_file.open("ab") as log:
            process = subprocess.Popen(
                self._java(libs, "kafka.Kafka", str(config)),
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )
        self._pid_file.write_text(str(process.pid))
        return process

    def wait(self, process: subprocess.Popen[bytes], timeout: float = 60.0) -> BrokerStatus:
        """Wait until the started ``process`` serves metadata; stop it and raise if it does not."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                self._pid_file.unlink(missing_ok=True)
                raise BrokerError(f"broker exited with {process.returncode}; see {self.log_file}")
            if self._answers(timeout=1.0):
                return self.status()
            time.sleep(0.25)
        self._terminate(process.pid)
        self._pid_file.unlink(missing_ok=True)
        raise BrokerError(f"broker did not answer metadata within {timeout:.0f} s; see {self.log_file}")

    @property
    def pid(self) -> int | None:
        """The broker's process id when it runs (answering or not), else None."""
        return self._read_pid()

    def down(self, timeout: float = 30.0) -> bool:
        """Stop the broker (SIGTERM, then SIGKILL after ``timeout``); returns whether one ran."""
        pid = self._read_pid()
        was_running = pid is not None
        if pid is not None:
            self._terminate(pid, timeout)
        self._pid_file.unlink(missing_ok=True)
        return was_running

    @staticmethod
    def _terminate(pid: int, timeout: float = 30.0) -> None:
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                finished, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                finished = 0
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    return
            if finished == pid:
                return
            time.sleep(0.2)
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
