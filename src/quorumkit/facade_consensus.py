"""The specification's facade, continued: Multi-Paxos and byzantine fault tolerance.

:class:`PaxosSystem` is written in the style of the seed's ``RaftSystem`` (the specification
defines Paxos, Definition 2.2 and Theorem 2.1, but gives no code for it).
:class:`ByzantineSystem` keeps the seed's API (``ByzantineSystem(name, f)``,
``ByzantineNode(id, address, is_byzantine=...)``, ``add_byzantine_node``,
``validate_byzantine_condition``, ``start_consensus``, ``get_byzantine_status`` and its keys)
and none of its code: the nodes run PBFT (:mod:`quorumkit.protocols.pbft`) with Ed25519
signatures, and the nodes marked byzantine really misbehave (``equivocate`` by default).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from quorumkit.errors import ConfigError
from quorumkit.facade import Node, NodeState, ReplicatedSystem

_ROLE_TO_STATE = {
    "leader": NodeState.LEADER,
    "candidate": NodeState.CANDIDATE,
    "follower": NodeState.FOLLOWER,
}


# ----------------------------------------------------------------------------- Multi-Paxos


@dataclass
class PaxosNode(Node):
    """A Multi-Paxos replica of the facade (proposer, acceptor and learner in one process).

    Its fields mirror the live protocol each time the system's status is read."""

    ballot: tuple[int, str] | None = None
    promised: tuple[int, str] | None = None
    commit_index: int = 0
    last_applied: int = 0
    log_length: int = 0
    leader_id: str | None = None


def _ballot(value: Any) -> tuple[int, str] | None:
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return (int(value[0]), str(value[1]))
    return None


class PaxosSystem(ReplicatedSystem):
    """A Multi-Paxos cluster (Definition 2.2) running :mod:`quorumkit.protocols.paxos` on the
    simulator in real time.

    >>> system = PaxosSystem("paxos")                                      # doctest: +SKIP
    >>> for i in range(3): system.add_paxos_node(PaxosNode(f"p{i}", ""))   # doctest: +SKIP
    >>> system.start(); system.propose(("put", "x", "1"))                   # doctest: +SKIP
    """

    protocol = "paxos"

    def __init__(self, name: str, **paxos_options: Any) -> None:
        super().__init__(name, **paxos_options)
        self.paxos_nodes: dict[str, PaxosNode] = {}

    def add_paxos_node(self, node: PaxosNode) -> None:
        self.add_node(node)
        self.paxos_nodes[node.id] = node

    def _members(self) -> list[str]:
        return list(self.paxos_nodes)

    def propose(self, value: Any, timeout_s: float = 5.0) -> Any:
        """Have ``value`` chosen for the next free slot of the replicated log (through the
        distinguished proposer); returns the state machine's result for it."""
        if not self.running:
            self.start()
        return self.submit(value, timeout_s)

    def leader(self) -> str | None:
        """The distinguished proposer, when there is exactly one."""
        sim = self._sim
        return None if sim is None else self._locked(sim.leader)

    def wait_for_leader(self, timeout_s: float = 5.0) -> str:
        if not self.wait_for(lambda: self.leader() is not None, timeout_s):
            raise TimeoutError(f"no distinguished proposer within {timeout_s} s")
        return str(self.leader())

    def chosen(self, node_id: str) -> list[tuple[int, Any]]:
        """``(slot, command)`` of the client commands ``node_id`` learned and applied."""
        sim = self._sim
        if sim is None:
            return []
        return list(self._locked(lambda: sim.applied(node_id)))

    def get_paxos_status(self) -> dict[str, Any]:
        """Per node: state, ballot, promised ballot, commit and applied slots, leader."""
        self._refresh()
        return {
            "nodes": {
                node_id: {
                    "id": node.id,
                    "state": node.state.value,
                    "ballot": node.ballot,
                    "promised": node.promised,
                    "log_length": node.log_length,
                    "commit_index": node.commit_index,
                    "last_applied": node.last_applied,
                    "leader": node.leader_id,
                }
                for node_id, node in self.paxos_nodes.items()
            },
            "leader": self.leader(),
        }

    def _refresh(self) -> None:
        sim = self._sim
        if sim is None:
            return

        def read() -> None:
            for node_id, node in self.paxos_nodes.items():
                st = sim.status(node_id)
                if not st.get("up"):
                    node.state = NodeState.CRASHED
                    continue
                node.state = _ROLE_TO_STATE.get(str(st.get("role")), NodeState.FOLLOWER)
                node.ballot = _ballot(st.get("ballot"))
                node.promised = _ballot(st.get("promised"))
                node.commit_index = int(st.get("commit_index", 0))
                node.last_applied = int(st.get("last_applied", 0))
                node.log_length = int(st.get("log_length", 0))
                leader = st.get("leader")
                node.leader_id = str(leader) if leader is not None else None

        self._locked(read)


# ----------------------------------------------------------------------------- byzantine


@dataclass
class ByzantineNode(Node):
    """A PBFT replica of the facade; ``is_byzantine`` makes it run a byzantine behaviour."""

    is_byzantine: bool = False
    received_messages: dict[str, list[Any]] = field(default_factory=dict)
    consensus_value: Any | None = None
    round_number: int = 0


#: the key under which start_consensus stores its value in the replicated state machine
CONSENSUS_KEY = "consensus"


class ByzantineSystem(ReplicatedSystem):
    """A PBFT cluster tolerating ``f`` byzantine replicas (Definitions 3.1-3.3).

    ``start_consensus(value)`` orders ``value`` through PBFT as a client would: the request goes
    to every replica, and the client accepts the outcome once f + 1 replicas report the same
    result. Byzantine replicas run ``behaviour`` (default ``equivocate``).
    """

    protocol = "pbft"

    def __init__(self, name: str, f: int, behaviour: str = "equivocate", **options: Any) -> None:
        if isinstance(f, bool) or not isinstance(f, int) or f < 0:
            raise ConfigError(f"f must be a non-negative integer, got {f!r}")
        super().__init__(name, **options)
        self.f = f
        self.behaviour = behaviour
        self.byzantine_nodes: dict[str, ByzantineNode] = {}
        self.consensus_rounds: dict[int, dict[str, Any]] = {}
        self._seq = 0

    def add_byzantine_node(self, node: ByzantineNode) -> None:
        self.add_node(node)
        self.byzantine_nodes[node.id] = node

    def validate_byzantine_condition(self) -> bool:
        """Theorem 3.1: agreement with f byzantine nodes needs n >= 3f + 1."""
        return len(self.byzantine_nodes) > 3 * self.f

    def _members(self) -> list[str]:
        return list(self.byzantine_nodes)

    def _simulation_options(self) -> dict[str, Any]:
        return {
            **self.options,
            "f": self.f,
            "byzantine": {
                n.id: self.behaviour for n in self.byzantine_nodes.values() if n.is_byzantine
            },
        }

    def start(self) -> None:
        if not self.validate_byzantine_condition():
            n = len(self.byzantine_nodes)
            raise ConfigError(
                f"{n} nodes cannot tolerate f={self.f} byzantine nodes: Theorem 3.1 needs "
                f"n >= 3f + 1 = {3 * self.f + 1} (two quorums of n - f nodes share at least "
                "n - 2f nodes, and that overlap must exceed f so that it holds a correct node)"
            )
        super().start()

    def start_consensus(self, initial_value: Any, timeout_s: float = 10.0) -> Any:
        """Order ``initial_value`` through PBFT; returns the result f + 1 replicas agreed on
        (the seed's method returned nothing and slept; this one waits for the outcome)."""
        if not self.running:
            self.start()
        sim = self._sim
        if sim is None:  # pragma: no cover - start() built it
            raise ConfigError("the system did not start")
        round_id = len(self.consensus_rounds)
        self.consensus_rounds[round_id] = {
            "phase": "pre-prepare",
            "values": {},
            "votes": {},
            "decisions": {},
        }
        self._seq += 1
        op = ("put", CONSENSUS_KEY, initial_value)
        make = getattr(sim.protocol_cls, "client_command", None)
        command = make(sim.config, 1, self._seq, op) if make is not None else op
        needed = sim.protocol_cls.client_replies_needed(len(sim.node_ids), sim.config)
        done = threading.Event()
        answers: dict[str, Any] = {}

        def on_reply(node: str, result: Any) -> None:
            if isinstance(result, dict) and "error" in result:
                return
            answers[node] = result
            if sum(1 for r in answers.values() if r == result) >= needed:
                done.set()

        def send() -> None:
            for node in sim.node_ids:
                sim.client_request(node, command, callback=on_reply)

        self._locked(send)
        if not done.wait(timeout_s):
            raise TimeoutError(f"no {needed} matching replies within {timeout_s} s")
        self.wait_for(lambda: self._honest_agree(initial_value), timeout_s)
        round_info = self.consensus_rounds[round_id]
        round_info["phase"] = "committed"
        round_info["votes"] = dict(answers)
        self._refresh()
        round_info["decisions"] = {
            n.id: n.consensus_value for n in self.byzantine_nodes.values() if not n.is_byzantine
        }
        return initial_value

    def _honest_agree(self, value: Any) -> bool:
        self._refresh()
        return all(
            n.consensus_value == value
            for n in self.byzantine_nodes.values()
            if not n.is_byzantine and n.state is not NodeState.CRASHED
        )

    def get_byzantine_status(self) -> dict[str, Any]:
        """The seed's keys, plus each node's behaviour and the lies it told."""
        self._refresh()
        total_nodes = len(self.byzantine_nodes)
        return {
            "total_nodes": total_nodes,
            "byzantine_nodes": [n.id for n in self.byzantine_nodes.values() if n.is_byzantine],
            "max_byzantine_faults": self.f,
            "byzantine_condition_satisfied": self.validate_byzantine_condition(),
            "nodes": {
                node_id: {
                    "id": node.id,
                    "is_byzantine": node.is_byzantine,
                    "consensus_value": node.consensus_value,
                    "round_number": node.round_number,
                    "behaviour": self.behaviour if node.is_byzantine else None,
                    "lies": node.data.get("lies", 0),
                }
                for node_id, node in self.byzantine_nodes.items()
            },
            "consensus_rounds": self.consensus_rounds,
        }

    def _refresh(self) -> None:
        sim = self._sim
        if sim is None:
            return

        def read() -> None:
            for node_id, node in self.byzantine_nodes.items():
                proto: Any = sim.protocol(node_id)
                if proto is None:
                    node.state = NodeState.CRASHED
                    continue
                st = proto.status()
                node.state = NodeState.LEADER if st.get("role") == "leader" else NodeState.FOLLOWER
                node.round_number = int(st.get("view", 0))
                node.consensus_value = proto.local_read(("get", CONSENSUS_KEY))
                node.data["lies"] = int(getattr(proto, "lies", 0))

        self._locked(read)


def demonstrate_byzantine_fault_tolerance() -> ByzantineSystem:
    """The specification's byzantine demo: four nodes, node4 byzantine (it equivocates); at the
    end every honest node holds the same consensus value."""
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
