"""The seed-compatible facade: the specification's API over the real simulator.

The specification's demo is run exactly as the specification writes it (it sleeps two seconds
of wall-clock time: the facade runs the simulator in real time in a background thread).
"""

from __future__ import annotations

import time

import pytest

from quorumkit import (
    DistributedSystem,
    Message,
    MessageType,
    Node,
    NodeState,
    RaftNode,
    RaftSystem,
)

SEED_STATUS_KEYS = {"name", "node_count", "connection_count", "is_connected", "nodes"}
SEED_NODE_KEYS = {"id", "address", "state", "neighbor_count"}
SEED_RAFT_KEYS = {
    "id",
    "state",
    "current_term",
    "voted_for",
    "log_length",
    "commit_index",
    "last_applied",
}


def demonstrate_raft():
    """演示Raft算法 -- the specification's demo, verbatim but for comments."""
    raft_system = RaftSystem("Raft集群")
    nodes = [
        RaftNode("node1", "192.168.1.10:8080"),
        RaftNode("node2", "192.168.1.11:8080"),
        RaftNode("node3", "192.168.1.12:8080"),
        RaftNode("node4", "192.168.1.13:8080"),
        RaftNode("node5", "192.168.1.14:8080"),
    ]
    for node in nodes:
        raft_system.add_raft_node(node)
    for i in range(len(nodes)):
        for j in range(i + 1, len(nodes)):
            raft_system.add_connection(nodes[i].id, nodes[j].id)
    raft_system.start()
    raft_system.start_election("node1")
    time.sleep(2)
    status = raft_system.get_raft_status()
    print(f"Raft状态: {status}")
    return raft_system


def test_the_specifications_raft_demo_ends_with_one_agreed_leader_and_equal_terms():
    system = demonstrate_raft()
    try:
        status = system.get_raft_status()["nodes"]
        assert set(status) == {"node1", "node2", "node3", "node4", "node5"}
        for st in status.values():
            assert SEED_RAFT_KEYS <= set(st)
        leaders = [n for n, st in status.items() if st["state"] == "leader"]
        assert len(leaders) == 1, status
        assert {st["leader"] for st in status.values()} == {leaders[0]}
        assert len({st["current_term"] for st in status.values()}) == 1
        assert all(st["commit_index"] >= 1 for st in status.values())
        assert system.submit(("put", "x", "1")) is None
        assert system.submit(("get", "x")) == "1"
    finally:
        system.stop()


def test_the_package_demo_function_is_the_same_demo():
    from quorumkit import demonstrate_raft as packaged

    system = packaged()
    try:
        states = [n.state for n in system.raft_nodes.values()]
        assert states.count(NodeState.LEADER) == 1
    finally:
        system.stop()


def test_distributed_system_delivers_messages_along_the_graph_and_reports_the_seed_keys():
    """Definition 1.1 and Theorem 1.1: messages travel along paths of the graph; a node with
    no path to the sender receives nothing. The seed's processor lost messages; this does not."""
    ds = DistributedSystem("ds")
    for i in range(1, 5):
        ds.add_node(Node(f"node{i}", f"10.0.0.{i}:80"))
    ds.add_connection("node1", "node2")
    ds.add_connection("node2", "node3")
    ds.send_message(Message("", MessageType.PROPOSE, "node1", "node3", {"v": 1}))  # before start
    ds.start()
    try:
        ds.broadcast_message(Message("", MessageType.HEARTBEAT, "node1", "", {"beat": 1}))
        assert ds.wait_for(lambda: len(ds.received_messages("node3")) == 2, 5)
        assert [m.type for m in ds.received_messages("node2")] == [MessageType.HEARTBEAT]
        assert ds.received_messages("node4") == []  # no path: Theorem 1.1 does not apply
        status = ds.get_system_status()
        assert SEED_STATUS_KEYS <= set(status)
        assert status["node_count"] == 4 and status["connection_count"] == 2
        assert status["is_connected"] is False
        assert all(SEED_NODE_KEYS <= set(n) for n in status["nodes"].values())
        assert status["messages"]["undeliverable"] == 1
    finally:
        ds.stop()


def test_handle_message_hook_sees_every_delivery_exactly_once():
    seen: list[str] = []

    class Counting(DistributedSystem):
        def _handle_message(self, node_id, message):
            seen.append(message.id)

    ds = Counting("c")
    for i in range(1, 4):
        ds.add_node(Node(f"n{i}", "addr"))
    ds.add_connection("n1", "n2")
    ds.add_connection("n2", "n3")
    ds.add_connection("n1", "n3")
    ds.start()
    try:
        for k in range(20):
            ds.send_message(Message(f"m{k}", MessageType.PROPOSE, "n1", "n2", k))
        assert ds.wait_for(lambda: len(seen) == 20, 5)
        time.sleep(0.05)
        assert sorted(seen) == sorted(f"m{k}" for k in range(20))
    finally:
        ds.stop()


def test_facade_errors_are_clear():
    ds = DistributedSystem("e")
    with pytest.raises(ValueError, match="at least one node"):
        ds.start()
    rs = RaftSystem("r")
    rs.add_raft_node(RaftNode("a", "x"))
    with pytest.raises(ValueError, match="unknown Raft node"):
        rs.start_election("zzz")
