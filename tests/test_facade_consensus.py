"""The facade's Multi-Paxos and byzantine systems, in the style of the seed's RaftSystem.

The specification's byzantine demo runs as the specification writes it (it sleeps three
seconds of wall-clock time: the facade runs the simulator in real time in a thread).
"""

from __future__ import annotations

import time

import pytest

from quorumkit import (
    ByzantineNode,
    ByzantineSystem,
    ConfigError,
    PaxosNode,
    PaxosSystem,
)

SEED_BYZANTINE_KEYS = {
    "total_nodes",
    "byzantine_nodes",
    "max_byzantine_faults",
    "byzantine_condition_satisfied",
    "nodes",
    "consensus_rounds",
}
SEED_BYZANTINE_NODE_KEYS = {"id", "is_byzantine", "consensus_value", "round_number"}


def demonstrate_byzantine_fault_tolerance():
    """演示拜占庭容错 -- the specification's demo, verbatim but for comments."""
    byzantine_system = ByzantineSystem("拜占庭系统", f=1)
    nodes = [
        ByzantineNode("node1", "192.168.1.10:8080", is_byzantine=False),
        ByzantineNode("node2", "192.168.1.11:8080", is_byzantine=False),
        ByzantineNode("node3", "192.168.1.12:8080", is_byzantine=False),
        ByzantineNode("node4", "192.168.1.13:8080", is_byzantine=True),
    ]
    for node in nodes:
        byzantine_system.add_byzantine_node(node)
    for i in range(len(nodes)):
        for j in range(i + 1, len(nodes)):
            byzantine_system.add_connection(nodes[i].id, nodes[j].id)
    byzantine_system.start()
    byzantine_system.start_consensus("初始值")
    time.sleep(3)
    status = byzantine_system.get_byzantine_status()
    print(f"拜占庭系统状态: {status}")
    return byzantine_system


def test_the_specifications_byzantine_demo_ends_with_honest_agreement_despite_real_lies():
    system = demonstrate_byzantine_fault_tolerance()
    try:
        status = system.get_byzantine_status()
        assert SEED_BYZANTINE_KEYS <= set(status)
        assert status["byzantine_nodes"] == ["node4"]
        assert status["byzantine_condition_satisfied"] is True
        honest = {n: s for n, s in status["nodes"].items() if not s["is_byzantine"]}
        assert len(honest) == 3
        for s in status["nodes"].values():
            assert SEED_BYZANTINE_NODE_KEYS <= set(s)
        assert {s["consensus_value"] for s in honest.values()} == {"初始值"}
        # the byzantine node really misbehaved (equivocating), and it was tolerated
        assert status["nodes"]["node4"]["behaviour"] == "equivocate"
        assert status["nodes"]["node4"]["lies"] > 0
    finally:
        system.stop()


def test_the_package_ships_the_same_byzantine_demo():
    from quorumkit import demonstrate_byzantine_fault_tolerance as shipped

    system = shipped()
    try:
        values = {
            s["consensus_value"]
            for s in system.get_byzantine_status()["nodes"].values()
            if not s["is_byzantine"]
        }
        assert values == {"初始值"}
    finally:
        system.stop()


def test_three_nodes_cannot_tolerate_one_byzantine_node_and_the_error_says_why():
    system = ByzantineSystem("too small", f=1)
    for i in range(3):
        system.add_byzantine_node(ByzantineNode(f"b{i}", ""))
    assert system.validate_byzantine_condition() is False
    with pytest.raises(ConfigError, match=r"Theorem 3\.1.*3f \+ 1"):
        system.start_consensus("x")
    with pytest.raises(ValueError):  # the seed raised ValueError; ConfigError is one
        system.start()


def test_paxos_system_chooses_values_in_order_and_reports_ballots():
    system = PaxosSystem("paxos")
    for i in range(1, 4):
        system.add_paxos_node(PaxosNode(f"p{i}", f"10.0.0.{i}:7000"))
    for a in range(1, 4):
        for b in range(a + 1, 4):
            system.add_connection(f"p{a}", f"p{b}")
    system.start()
    try:
        leader = system.wait_for_leader()
        system.propose(("put", "x", "1"))
        system.propose(("append", "x", "2"))
        assert system.propose(("get", "x")) == "12"
        status = system.get_paxos_status()
        assert status["leader"] == leader
        lead = status["nodes"][leader]
        assert lead["state"] == "leader"
        assert lead["ballot"] is not None and lead["ballot"][1] == leader
        assert system.wait_for(
            lambda: all(
                [c for _, c in system.chosen(n)] == [("put", "x", "1"), ("append", "x", "2")]
                for n in ("p1", "p2", "p3")
            ),
            5.0,
        )
    finally:
        system.stop()
