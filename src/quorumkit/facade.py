"""The seed-compatible API of the specification, over the real simulator.

The specification (``shared/seed``) gives classes and methods that users and teaching material
call: ``DistributedSystem``, ``Node``, ``NodeState``, ``Message``, ``MessageType`` and their
methods and status keys. This module keeps that API and none of the sketch's code: messages
travel through :class:`quorumkit.sim.Simulation` along the communication graph (a message to a
node with no path to it is dropped and counted, Theorem 1.1), the simulation runs in real time
in one background thread, and every delivered message reaches its receiver exactly once.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import networkx as nx

from quorumkit.errors import ConfigError
from quorumkit.model.topology import Topology
from quorumkit.protocol import Context, Protocol
from quorumkit.sim.core import Simulation
from quorumkit.sim.realtime import RealtimeDriver


class NodeState(Enum):
    """Node states of the specification."""

    FOLLOWER = "follower"
    CANDIDATE = "candidate"
    LEADER = "leader"
    CRASHED = "crashed"


class MessageType(Enum):
    """Message types of the specification."""

    HEARTBEAT = "heartbeat"
    VOTE_REQUEST = "vote_request"
    VOTE_RESPONSE = "vote_response"
    APPEND_ENTRIES = "append_entries"
    APPEND_RESPONSE = "append_response"
    PROPOSE = "propose"
    ACCEPT = "accept"
    LEARN = "learn"


@dataclass
class Message:
    """A message of the specification's facade (``id`` is generated when empty)."""

    id: str
    type: MessageType
    sender: str
    receiver: str
    data: Any
    timestamp: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        if not self.id:
            self.id = str(uuid.uuid4())


@dataclass
class Node:
    """A node of the specification's facade (Definition 1.2, plus an address and data)."""

    id: str
    address: str
    state: NodeState = NodeState.FOLLOWER
    neighbors: set[str] = field(default_factory=set)
    data: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.id:
            self.id = str(uuid.uuid4())


class _Mailbox(Protocol):
    """The protocol behind :class:`DistributedSystem`: hand every delivered message up."""

    name = "facade-mailbox"

    def on_start(self, ctx: Context) -> None:
        pass

    def on_message(self, ctx: Context, src: str, msg: Any) -> None:
        self.config(self.node_id, msg)


class DistributedSystem:
    """DS = (N, C, P) (Definition 1.1): nodes, a communication graph, and a running network.

    ``start()`` builds a :class:`~quorumkit.sim.Simulation` over the nodes and the links added
    so far and runs it in real time; messages sent before ``start()`` are sent when it starts.
    Each delivered message is handed to :meth:`_handle_message` and kept in
    :meth:`received_messages`.
    """

    #: network delay of the facade's simulated links, seconds
    delay_min_s = 0.001
    delay_max_s = 0.005

    def __init__(self, name: str) -> None:
        self.name = name
        self.nodes: dict[str, Node] = {}
        self.network: nx.Graph = nx.Graph()
        self.running = False
        self.threads: list[threading.Thread] = []
        self.seed = 0
        self._sim: Simulation | None = None
        self._driver: RealtimeDriver | None = None
        self._pending: list[Message] = []
        self._received: dict[str, list[Message]] = {}
        self._lock = threading.RLock()
        self._sent = 0
        self._undeliverable = 0

    # -- the seed's API ---------------------------------------------------------------------
    def add_node(self, node: Node) -> None:
        """Add a node (before ``start()``)."""
        if self.running:
            raise ConfigError("add nodes before start(): the running network is fixed")
        self.nodes[node.id] = node
        self.network.add_node(node.id)
        self._received.setdefault(node.id, [])

    def add_connection(self, node1_id: str, node2_id: str) -> None:
        """Link two known nodes (unknown ids are ignored, as in the specification)."""
        if node1_id in self.nodes and node2_id in self.nodes and node1_id != node2_id:
            self.network.add_edge(node1_id, node2_id)
            self.nodes[node1_id].neighbors.add(node2_id)
            self.nodes[node2_id].neighbors.add(node1_id)
            if self._sim is not None:
                sim = self._sim
                self._locked(lambda: sim.topology.add_link(node1_id, node2_id))

    def send_message(self, message: Message) -> None:
        """Send ``message`` from its sender to its receiver along the communication graph."""
        if message.receiver not in self.nodes:
            return
        if message.sender not in self.nodes:
            raise ConfigError(f"unknown sender {message.sender!r}")
        with self._lock:
            self._sent += 1
            if self._sim is None:
                self._pending.append(message)
                return
        sim = self._sim
        self._locked(lambda: sim.inject(message.sender, message.receiver, message))

    def broadcast_message(self, message: Message) -> None:
        """Send a copy of ``message`` to every node but its sender."""
        for node_id in self.nodes:
            if node_id != message.sender:
                self.send_message(
                    Message(
                        id="",
                        type=message.type,
                        sender=message.sender,
                        receiver=node_id,
                        data=message.data,
                    )
                )

    def start(self) -> None:
        """Start the network: a simulation over the current graph, run in real time."""
        if self.running:
            return
        if not self.nodes:
            raise ConfigError("add at least one node before start()")
        self._sim = self._build_simulation()
        self._driver = RealtimeDriver(self._sim)
        self.running = True
        pending, self._pending = self._pending, []
        for message in pending:
            self._sim.inject(message.sender, message.receiver, message)
        self._driver.start()

    def stop(self) -> None:
        """Stop the network (the state stays readable)."""
        self.running = False
        if self._driver is not None:
            self._driver.stop()
            if self._driver.error is not None:
                raise self._driver.error

    def _handle_message(self, node_id: str, message: Message) -> None:
        """Hook: called for every message delivered to ``node_id``. Subclasses dispatch here."""

    def get_system_status(self) -> dict[str, Any]:
        """The specification's status keys, plus ``messages`` counters."""
        stats = self._sim.stats if self._sim is not None else {}
        return {
            "name": self.name,
            "node_count": len(self.nodes),
            "connection_count": self.network.number_of_edges(),
            "is_connected": bool(self.network.number_of_nodes()) and nx.is_connected(self.network),
            "nodes": {
                node_id: {
                    "id": node.id,
                    "address": node.address,
                    "state": node.state.value,
                    "neighbor_count": len(node.neighbors),
                }
                for node_id, node in self.nodes.items()
            },
            "messages": {
                "sent": self._sent,
                "delivered": sum(len(v) for v in self._received.values()),
                "undeliverable": stats.get("dropped_partition", 0),
            },
        }

    # -- quorumkit additions ----------------------------------------------------------------
    def received_messages(self, node_id: str) -> list[Message]:
        """Messages delivered to ``node_id`` so far, in delivery order."""
        with self._lock:
            return list(self._received.get(node_id, []))

    def wait_for(self, predicate: Any, timeout_s: float = 5.0) -> bool:
        """Wait (in real time) until ``predicate()`` holds; the facade runs in real time."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.005)
        return bool(predicate())

    @property
    def simulation(self) -> Simulation | None:
        """The simulation behind the running system (lock it with :meth:`locked`)."""
        return self._sim

    def locked(self, fn: Any) -> Any:
        """Run ``fn()`` with the running simulation locked against the driver thread."""
        return self._locked(fn)

    def _locked(self, fn: Any) -> Any:
        if self._driver is None:
            return fn()
        with self._driver.lock:
            return fn()

    def _deliver(self, node_id: str, message: Any) -> None:
        with self._lock:
            self._received.setdefault(node_id, []).append(message)
        self._handle_message(node_id, message)

    def _build_simulation(self) -> Simulation:
        ids = list(self.nodes)
        return Simulation(
            _Mailbox,
            nodes=ids,
            seed=self.seed,
            config=self._deliver,
            topology=Topology.from_graph(self.network),
            delay_min=self.delay_min_s,
            delay_max=self.delay_max_s,
            trace="off",
        )


# ----------------------------------------------------------------------------- Raft facade


@dataclass
class LogEntry:
    """A log entry as the specification shows it (index counted from 1 here, as in the
    paper)."""

    term: int
    index: int
    command: Any
    timestamp: float = field(default_factory=time.time)


@dataclass
class RaftNode(Node):
    """A Raft node of the specification's facade. Its fields mirror the live protocol state
    of :class:`quorumkit.protocols.raft.RaftNode` each time the system's status is read."""

    current_term: int = 0
    voted_for: str | None = None
    log: list[LogEntry] = field(default_factory=list)
    commit_index: int = 0
    last_applied: int = 0
    next_index: dict[str, int] = field(default_factory=dict)
    match_index: dict[str, int] = field(default_factory=dict)
    election_timeout: float = 0.0
    last_heartbeat: float = 0.0
    leader_id: str | None = None


_ROLE_TO_STATE = {
    "follower": NodeState.FOLLOWER,
    "pre-candidate": NodeState.FOLLOWER,
    "candidate": NodeState.CANDIDATE,
    "leader": NodeState.LEADER,
}


class ReplicatedSystem(DistributedSystem):
    """A cluster running one of quorumkit's consensus protocols on the simulator, in real time,
    in a background thread (the base of the Raft, Paxos and byzantine facades)."""

    protocol = "raft"

    def __init__(self, name: str, **options: Any) -> None:
        super().__init__(name)
        self.options = options

    def _members(self) -> list[str]:
        return list(self.nodes)

    def _simulation_options(self) -> dict[str, Any]:
        return dict(self.options)

    def _build_simulation(self) -> Simulation:
        return Simulation(
            self.protocol,
            nodes=self._members(),
            seed=self.seed,
            topology=Topology.from_graph(self.network),
            delay_min=self.delay_min_s,
            delay_max=self.delay_max_s,
            trace="off",
            check_invariants=True,
            **self._simulation_options(),
        )

    def submit(self, command: Any, timeout_s: float = 5.0) -> Any:
        """Replicate ``command`` through the current leader and wait for its result."""
        sim = self._sim
        if sim is None:
            raise ConfigError("start() the system first")
        done = threading.Event()
        box: dict[str, Any] = {}

        def attempt() -> None:
            leader = sim.leader() or next(iter(self._members()))
            sim.client_request(str(leader), command, callback=on_reply)

        def on_reply(node: str, result: Any) -> None:
            if isinstance(result, dict) and result.get("error") in (
                "not_leader",
                "down",
                "overloaded",
                "leader_changed",
            ):
                sim.call_after(0.05, attempt)
                return
            box["result"] = result
            done.set()

        self._locked(attempt)
        if not done.wait(timeout_s):
            raise TimeoutError(f"no reply within {timeout_s} s")
        return box.get("result")


class RaftSystem(ReplicatedSystem):
    """A Raft cluster (Definition 2.3) with the specification's API, running the real Raft of
    :mod:`quorumkit.protocols.raft` on the simulator, in real time, in a background thread."""

    protocol = "raft"

    def __init__(self, name: str, **raft_options: Any) -> None:
        super().__init__(name, **raft_options)
        self.raft_nodes: dict[str, RaftNode] = {}
        self.raft_options = raft_options

    def add_raft_node(self, node: RaftNode) -> None:
        self.add_node(node)
        self.raft_nodes[node.id] = node

    def _members(self) -> list[str]:
        return list(self.raft_nodes)

    def start_election(self, node_id: str) -> None:
        """Make ``node_id`` campaign now (a forced election, like a leadership transfer: voters
        do not ignore it for having heard from a leader recently)."""
        if node_id not in self.raft_nodes:
            raise ConfigError(f"unknown Raft node {node_id!r}")
        if not self.running:
            self.start()
        sim = self._sim
        if sim is None:  # pragma: no cover - start() just built it
            raise ConfigError("the system did not start")

        def campaign(proto: Any, ctx: Any) -> None:
            if proto.role.value != "leader":
                proto.become_candidate(ctx, transfer=True)

        self._locked(lambda: sim.invoke(node_id, campaign))

    def get_raft_status(self) -> dict[str, Any]:
        """The specification's per-node Raft status keys (plus ``leader``)."""
        self._refresh_nodes()
        return {
            "nodes": {
                node_id: {
                    "id": node.id,
                    "state": node.state.value,
                    "current_term": node.current_term,
                    "voted_for": node.voted_for,
                    "log_length": len(node.log),
                    "commit_index": node.commit_index,
                    "last_applied": node.last_applied,
                    "leader": node.leader_id,
                }
                for node_id, node in self.raft_nodes.items()
            }
        }

    def _refresh_nodes(self) -> None:
        sim = self._sim
        if sim is None:
            return

        def read() -> None:
            for node_id, node in self.raft_nodes.items():
                proto: Any = sim.protocol(node_id)
                if proto is None:
                    node.state = NodeState.CRASHED
                    continue
                node.state = _ROLE_TO_STATE[proto.role.value]
                node.current_term = proto.current_term
                node.voted_for = proto.voted_for
                node.commit_index = proto.commit_index
                node.last_applied = proto.last_applied
                node.leader_id = proto.leader_id
                log = proto.log
                node.log = [
                    LogEntry(e.term, log.snapshot_index + 1 + i, e.command)
                    for i, e in enumerate(log.entries)
                ]
                node.next_index = {p: pr.next for p, pr in proto.progress.items()}
                node.match_index = {p: pr.match for p, pr in proto.progress.items()}

        self._locked(read)


def demonstrate_raft() -> RaftSystem:
    """The specification's Raft demo: five nodes, node1 campaigns, two seconds later every
    node follows one leader in one term."""
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
