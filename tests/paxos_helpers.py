"""Shared helpers of the Multi-Paxos tests (no test functions here).

* protocol level: :class:`DrivenPaxosNode` on the recording ``FakeContext`` of the Raft tests
  (every send, timer, reply and storage write, in order), fed hand-made messages;
* cluster level: a checked :class:`~quorumkit.sim.core.Simulation` of ``paxos`` and a few
  waits over it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from quorumkit.protocols.paxos import (
    Accept,
    PaxosConfig,
    PaxosNode,
    Prepare,
    Promise,
    Role,
    SlotEntry,
    Value,
)
from quorumkit.sim.core import Simulation
from raft_helpers import FakeContext, FlushesAfterEachInput

THREE = ("n1", "n2", "n3")
FIVE = ("n1", "n2", "n3", "n4", "n5")


class DrivenPaxosNode(FlushesAfterEachInput, PaxosNode):
    """A PaxosNode driven directly by tests, flushing after every input (see the mixin)."""


def cmd(i: int) -> Value:
    """A distinct client command value."""
    return Value(("put", "k", i))


def entry(round_: int, node: str, value: Value) -> SlotEntry:
    return SlotEntry((round_, node), value)


def new_node(
    node_id: str = "n1",
    members: Sequence[str] = THREE,
    *,
    seed: int = 0,
    **options: Any,
) -> tuple[DrivenPaxosNode, FakeContext]:
    """A freshly started node on a recording FakeContext (outputs of the start cleared)."""
    node = DrivenPaxosNode(node_id, members, PaxosConfig.from_options(**options))
    ctx = FakeContext(node_id, members, seed)
    node.on_start(ctx)
    ctx.clear()
    return node, ctx


def restart(node: PaxosNode, ctx: FakeContext) -> tuple[DrivenPaxosNode, FakeContext]:
    """A crash and restart of ``node``: a new object recovers from what ``ctx`` stored."""
    fresh = DrivenPaxosNode(node.node_id, node.members, node.cfg)
    ctx.storage.crash()
    fresh.on_recover(ctx, ctx.storage.load())
    ctx.clear()
    return fresh, ctx


def campaign(node: PaxosNode, ctx: FakeContext) -> Prepare:
    """Fire the election timer: the node becomes a candidate; return its Prepare."""
    node.on_timer(ctx, "election")
    assert node.role is Role.CANDIDATE
    prepares = [m for _, m in ctx.take(Prepare)]
    assert prepares, "a candidate sends Prepare"
    return prepares[0]


def make_leader(
    node: PaxosNode,
    ctx: FakeContext,
    reports: dict[str, tuple[tuple[int, SlotEntry], ...]] | None = None,
    commits: dict[str, int] | None = None,
) -> None:
    """Run phase 1 on ``node``: campaign, then feed it a Promise from peers (with the given
    accepted reports and decided prefixes) until it leads. What it sent as the new leader (its
    Accepts and first Heartbeat) stays in ``ctx.sent``."""
    prepare = campaign(node, ctx)
    reports = reports or {}
    commits = commits or {}
    peers = [p for p in node.members if p != node.node_id]
    ordered = [p for p in peers if p in reports] + [p for p in peers if p not in reports]
    for peer in ordered:
        node.on_message(
            ctx, peer, Promise(prepare.ballot, commits.get(peer, 0), reports.get(peer, ()))
        )
        if node.role is Role.LEADER:
            break
    assert node.role is Role.LEADER


def accepts(ctx: FakeContext, dst: str | None = None) -> dict[int, Value]:
    """Slot -> value of the Accepts ``ctx`` sent (to ``dst`` if given), removed from it."""
    out: dict[int, Value] = {}
    for d, m in ctx.take(Accept):
        if dst is None or d == dst:
            for i, v in enumerate(m.values):
                out[m.first_slot + i] = v
    return out


def make_sim(nodes: int | Sequence[str] = 3, seed: int = 1, **options: Any) -> Simulation:
    """A Paxos simulation with the invariant checker on after every event."""
    return Simulation("paxos", nodes=nodes, seed=seed, check_invariants=True, **options)


def wait_leader(sim: Simulation, timeout: float = 5.0) -> str:
    assert sim.run_until(lambda: sim.leader() is not None, timeout), "no leader elected"
    leader = sim.leader()
    assert leader is not None
    return leader


def submit_at_leader(sim: Simulation, command: Any, timeout: float = 5.0) -> tuple[str, int]:
    """Propose ``command`` at the current leader (waiting for one); (leader, slot)."""
    deadline = sim.now + timeout
    while sim.now < deadline:
        leader = sim.leader()
        if leader is not None:
            r = sim.submit(leader, command)
            if r.is_leader and r.error is None:
                return leader, r[0]
        sim.run(0.02)
    raise AssertionError(f"could not submit {command!r} within {timeout}s")


def one(sim: Simulation, command: Any, timeout: float = 5.0) -> int:
    """MIT 6.824's ``cfg.one``: propose ``command`` at the leader, again and again, until
    every running node applied it; return its slot. (A proposal whose leader is preempted
    before any acceptor took it is abandoned: nobody will ever decide it.)"""
    deadline = sim.now + timeout
    while sim.now < deadline:
        _, slot = submit_at_leader(sim, command, timeout=deadline - sim.now)
        sim.run_until(lambda: all_applied(sim, slot), 0.5)
        if all(
            (slot, command) in sim.applied(n) or not sim.is_up(n) for n in sim.nodes
        ) and all_applied(sim, slot):
            return slot
    raise AssertionError(f"{command!r} was not applied everywhere within {timeout}s")


def all_applied(sim: Simulation, slot: int, nodes: Sequence[str] | None = None) -> bool:
    """Every (running, given) node applied every slot up to ``slot``."""
    for n in nodes or sim.nodes:
        st = sim.status(n)
        if not st["up"] or st["last_applied"] < slot:
            return False
    return True
