"""The local 3-node cluster's layout and ``kafka status|down`` on it, without starting a JVM.

Starting, killing and pausing real nodes is covered by ``tests/test_chaos.py`` and
``tests/test_broker_faults.py``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from streamedge.cli.main import main
from streamedge.kafka.broker import BrokerError, new_cluster_id
from streamedge.kafka.cluster import LocalCluster, free_ports


def _properties(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if line)


def test_three_combined_nodes_form_one_quorum_with_three_replicas(tmp_path: Path) -> None:
    port = free_ports(6)
    cluster = LocalCluster(tmp_path, brokers=3, port=port)
    assert cluster.bootstrap == f"127.0.0.1:{port},127.0.0.1:{port + 2},127.0.0.1:{port + 4}"
    voters = f"1@127.0.0.1:{port + 1},2@127.0.0.1:{port + 3},3@127.0.0.1:{port + 5}"
    for node_id in (1, 2, 3):
        node = cluster.node(node_id)
        node.state_dir.mkdir(parents=True)
        props = _properties(node._write_config())
        assert props["process.roles"] == "broker,controller"
        assert props["node.id"] == str(node_id)
        assert props["controller.quorum.voters"] == voters
        assert props["listeners"] == (f"PLAINTEXT://127.0.0.1:{port + 2 * (node_id - 1)},"
                                      f"CONTROLLER://127.0.0.1:{port + 2 * node_id - 1}")
        for key in ("offsets.topic.replication.factor", "transaction.state.log.replication.factor",
                    "default.replication.factor"):
            assert props[key] == "3"
        assert props["min.insync.replicas"] == props["transaction.state.log.min.isr"] == "2"
    assert len({node.cluster_id for node in cluster.nodes}) == 1


def test_status_and_down_find_the_cluster_that_up_recorded(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    port = free_ports(6)
    (tmp_path / "cluster.json").write_text(json.dumps({"brokers": 3, "port": port, "cluster_id": "x"}))
    assert main(["kafka", "status", "--state-dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("0/3 nodes answering")
    assert f"127.0.0.1:{port + 4}" in out
    assert main(["kafka", "down", "--state-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == "not running"


def test_cluster_ids_never_look_like_an_option() -> None:
    # One random id in 64 starts with "-", which the storage tool would take for a flag.
    assert not [cluster_id for cluster_id in (new_cluster_id() for _ in range(2000)) if cluster_id.startswith("-")]


def test_a_cluster_whose_nodes_do_not_list_every_broker_is_not_up(tmp_path: Path) -> None:
    # A node answers metadata before it knows its peers; ``up`` waits for all three in every
    # node's list, so a client is never told of a controller it has no address for.
    cluster = LocalCluster(tmp_path, brokers=3, port=free_ports(6))
    assert [node.brokers_listed(timeout=0.2) for node in cluster.nodes] == [0, 0, 0]
    with pytest.raises(BrokerError, match=r"list \[0, 0, 0\] brokers, not all 3"):
        cluster._await_every_broker(deadline=time.monotonic())
