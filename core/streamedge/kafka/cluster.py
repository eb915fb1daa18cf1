"""A local multi-node Apache Kafka cluster (KRaft) on 127.0.0.1, for fault tests and the chaos run.

Every node is a combined controller + broker (``process.roles=broker,controller``): three nodes
form the controller quorum (a majority, 2 of 3, keeps it working) and host the replicas, so any
one node may be killed or paused and the cluster goes on. Node ``i`` (1-based) listens for
clients on ``port + 2 * (i - 1)`` and for the quorum on the port after it: with the default
9092, nodes on 9092/9093, 9094/9095, 9096/9097. Internal topics and new topics get
``replicas`` copies (3) and ``min.insync.replicas=2``, so an ``acks=all`` write survives the
loss of any one node.

State folder layout::

    <state_dir>/cluster.json     node count, first port, cluster id (what ``down``/``status`` read)
    <state_dir>/libs/            broker jars, shared by the nodes
    <state_dir>/node-<i>/        one node's data, config, log and pid file (see LocalBroker)
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from streamedge.kafka.broker import BrokerError, BrokerStatus, LocalBroker, new_cluster_id

if TYPE_CHECKING:
    from streamedge.kafka.security import BrokerSecurity

__all__ = ["ClusterStatus", "LocalCluster", "free_ports", "read_cluster_file"]

_CLUSTER_FILE = "cluster.json"


@dataclass(frozen=True)
class ClusterStatus:
    """Each node's status; ``running`` when every node answers metadata."""

    nodes: list[BrokerStatus]

    @property
    def running(self) -> bool:
        return all(node.running for node in self.nodes)

    @property
    def bootstrap(self) -> str:
        return ",".join(node.bootstrap for node in self.nodes)

    @property
    def detail(self) -> str:
        up = sum(node.running for node in self.nodes)
        lines = [f"{up}/{len(self.nodes)} nodes answering; bootstrap {self.bootstrap}"]
        lines += [f"  node {i}: {node.detail}" for i, node in enumerate(self.nodes, start=1)]
        return "\n".join(lines)


def read_cluster_file(state_dir: Path) -> dict[str, object] | None:
    """The ``cluster.json`` of ``state_dir`` (written by ``up``), or None where there is none."""
    try:
        data = json.loads((Path(state_dir) / _CLUSTER_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class LocalCluster:
    """Manage ``brokers`` combined controller+broker nodes under ``state_dir``.

    Args:
        state_dir: the cluster's folder (layout above).
        brokers: node count (3 for the fault-tolerant layout; 1 works too).
        port: client port of node 1; node ``i`` uses ``port + 2 * (i - 1)`` and the next port.
        heap_mb: JVM max heap per node.
        libs_dir: jars fetched elsewhere, used as they are (tests share the ones of their
            single broker); default ``<state_dir>/libs``, fetched once for the cluster.
        security: SASL_SSL and ACLs on every node (one CA, broker certificate and set of SCRAM
            users for all of them), as for :class:`LocalBroker`.
    """

    def __init__(self, state_dir: Path, brokers: int = 3, port: int = 9092, heap_mb: int = 384,
                 libs_dir: Path | None = None, security: BrokerSecurity | None = None) -> None:
        if brokers < 1:
            raise BrokerError(f"a cluster needs at least one broker, got {brokers}")
        self.state_dir = Path(state_dir).resolve()
        self.brokers = brokers
        self.port = port
        self.heap_mb = heap_mb
        self.libs_dir = Path(libs_dir).resolve() if libs_dir is not None else self.state_dir / "libs"
        self._own_libs = libs_dir is None
        self.security = security
        known = read_cluster_file(self.state_dir)
        self.cluster_id = str(known["cluster_id"]) if known and "cluster_id" in known else new_cluster_id()
        voters = ",".join(f"{i}@127.0.0.1:{self._ports(i)[1]}" for i in range(1, brokers + 1))
        self.nodes = [
            LocalBroker(self.state_dir / f"node-{i}", *self._ports(i), heap_mb=heap_mb, node_id=i,
                        quorum_voters=voters, cluster_id=self.cluster_id, replicas=min(3, brokers),
                        libs_dir=self.libs_dir, security=security)
            for i in range(1, brokers + 1)
        ]

    def _ports(self, node_id: int) -> tuple[int, int]:
        client = self.port + 2 * (node_id - 1)
        return client, client + 1

    @property
    def bootstrap(self) -> str:
        """``host:port`` of every node, comma-separated."""
        return ",".join(node.bootstrap for node in self.nodes)

    def node(self, node_id: int) -> LocalBroker:
        """Node ``node_id`` (1-based, the KRaft node id)."""
        return self.nodes[node_id - 1]

    def status(self) -> ClusterStatus:
        """Every node's status."""
        return ClusterStatus([node.status() for node in self.nodes])

    def up(self, timeout: float = 120.0) -> ClusterStatus:
        """Start every node that is not running, then wait until all of them serve metadata and list each other."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / _CLUSTER_FILE).write_text(json.dumps(
            {"brokers": self.brokers, "port": self.port, "cluster_id": self.cluster_id}))
        if self._own_libs:
            # Fetched (and kept to the pom) here, once; the nodes take them as they are.
            LocalBroker(self.state_dir).fetch_jars()
        deadline = time.monotonic() + timeout
        started = [(node, node.start()) for node in self.nodes]
        for node, process in started:
            if process is not None:
                node.wait(process, max(1.0, deadline - time.monotonic()))
        self._await_every_broker(deadline)
        return self.status()

    def _await_every_broker(self, deadline: float) -> None:
        """Wait until every node's metadata lists all the brokers.

        A node answers metadata before it has learned of its peers; a client bootstrapped from it
        would then be told of a controller or leader it has no address for. SASL_SSL nodes list
        brokers only after a login, so for them this returns at once.
        """
        while True:
            listed = [node.brokers_listed() for node in self.nodes]
            if all(count is None or count >= self.brokers for count in listed):
                return
            if time.monotonic() > deadline:
                logs = ", ".join(str(node.log_file) for node in self.nodes)
                raise BrokerError(f"the nodes list {listed} brokers, not all {self.brokers}, in time; see {logs}")
            time.sleep(0.25)

    def down(self, timeout: float = 30.0) -> bool:
        """Stop every node (a paused one is resumed first); returns whether any ran."""
        # Signal every node first: a node stopped while its peers are already gone would wait for
        # a controller quorum that no longer exists.
        for node in self.nodes:
            self.resume(node.node_id)
            self._signal(node.node_id, signal.SIGTERM)
        stopped = False
        for node in self.nodes:
            stopped = node.down(timeout) or stopped
        return stopped

    def restart(self, node_id: int, timeout: float = 120.0) -> BrokerStatus:
        """Start node ``node_id`` again (after a kill) and wait until it serves metadata."""
        return self.node(node_id).up(timeout)

    def kill(self, node_id: int) -> None:
        """SIGKILL node ``node_id`` (no shutdown, no flush), as a crash or a pulled plug would."""
        self._signal(node_id, signal.SIGKILL)
        node = self.node(node_id)
        pid = node.pid
        if pid is not None:
            _reap(pid)
        (node.state_dir / "broker.pid").unlink(missing_ok=True)

    def pause(self, node_id: int) -> None:
        """SIGSTOP node ``node_id``: it keeps its sockets but answers nothing, like a long GC pause."""
        self._signal(node_id, signal.SIGSTOP)

    def resume(self, node_id: int) -> None:
        """SIGCONT node ``node_id`` (no-op when it is not paused or not running)."""
        self._signal(node_id, signal.SIGCONT)

    def _signal(self, node_id: int, signum: signal.Signals) -> None:
        pid = self.node(node_id).pid
        if pid is None:
            return
        try:
            os.killpg(pid, signum)
        except ProcessLookupError:
            return


def free_ports(count: int) -> int:
    """A port ``p`` such that ``p .. p + count - 1`` are free on 127.0.0.1 now (for a cluster: ``2 * brokers``)."""
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base: int = probe.getsockname()[1]
        if base + count < 65000 and all(_port_free(base + i) for i in range(count)):
            return base
    raise RuntimeError(f"no {count} consecutive free ports found on 127.0.0.1")


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _reap(pid: int) -> None:
    """Collect a killed child so it leaves no zombie (a no-op for another process's child)."""
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        return
