"""Shared helpers of the Raft tests (no test functions here).

Two levels:

* protocol level: :class:`FakeContext` records every output of one :class:`RaftNode` (sends,
  timers, replies, storage writes, in order) so a test can feed it messages from
  :mod:`quorumkit.protocols.raft.messages` and look at exactly what it did; :class:`Wire`
  connects a few such nodes by hand-delivered messages;
* cluster level: :class:`Cluster` wraps a checked :class:`~quorumkit.sim.core.Simulation` the
  way MIT 6.824's ``config`` wraps its servers: ``connect``/``disconnect``, ``crash``/``start``,
  ``check_one_leader``, ``check_no_leader``, ``check_terms``, ``n_committed`` and ``one``.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

from quorumkit.protocol import ClientRequest, Context
from quorumkit.protocols.raft import (
    LogEntry,
    RaftConfig,
    RaftNode,
    RequestVote,
    RequestVoteResponse,
    Role,
)
from quorumkit.protocols.raft.messages import COMMAND
from quorumkit.sim.core import Simulation
from quorumkit.storage import MemoryStorage

# ============================================================================ protocol level


class RecordingStorage(MemoryStorage):
    """A MemoryStorage that also writes each operation into a shared event list."""

    def __init__(self, events: list[tuple[Any, ...]]) -> None:
        super().__init__()
        self._events = events

    def put(self, key: str, value: Any, *, sync: bool = True) -> None:
        self._events.append(("persist", "put", key, value, sync))
        super().put(key, value, sync=sync)

    def log_append(self, index: int, entries: Sequence[Any], *, sync: bool = True) -> None:
        self._events.append(("persist", "append", index, tuple(entries), sync))
        super().log_append(index, entries, sync=sync)

    def log_truncate(self, index: int, *, sync: bool = True) -> None:
        self._events.append(("persist", "truncate", index, sync))
        super().log_truncate(index, sync=sync)

    def save_snapshot(self, snapshot: Any, upto_index: int, *, sync: bool = True) -> None:
        self._events.append(("persist", "snapshot", upto_index, sync))
        super().save_snapshot(snapshot, upto_index, sync=sync)


class FakeContext(Context):
    """A Context that records what one node does, in order, in ``events``."""

    def __init__(self, node_id: str, members: Sequence[str], seed: int = 0) -> None:
        self.node_id = node_id
        self.members = tuple(members)
        self.events: list[tuple[Any, ...]] = []
        self.storage = RecordingStorage(self.events)
        self.rng = random.Random(seed)
        self.clock = 0.0
        self.sent: list[tuple[str, Any]] = []
        self.timers: dict[str, float] = {}
        self.replies: list[tuple[ClientRequest, Any]] = []

    def now(self) -> float:
        return self.clock

    def send(self, dst: str, msg: Any) -> None:
        self.sent.append((dst, msg))
        self.events.append(("send", dst, msg))

    def set_timer(self, name: str, delay_s: float) -> None:
        self.timers[name] = delay_s
        self.events.append(("set_timer", name, delay_s))

    def cancel_timer(self, name: str) -> None:
        self.timers.pop(name, None)
        self.events.append(("cancel_timer", name))

    def reply(self, request: ClientRequest, result: Any) -> None:
        self.replies.append((request, result))
        self.events.append(("reply", request, result))

    def take(self, kind: type | None = None) -> list[tuple[str, Any]]:
        """Remove and return the messages sent so far (only those of type ``kind`` if given)."""
        out = [(d, m) for d, m in self.sent if kind is None or isinstance(m, kind)]
        self.sent = [(d, m) for d, m in self.sent if not (kind is None or isinstance(m, kind))]
        return out

    def clear(self) -> None:
        self.sent.clear()
        self.events.clear()
        self.replies.clear()


class FlushesAfterEachInput:
    """Mixin for a protocol class that plays its own driver's part of the contract (rule 7 of
    quorumkit.protocol): after every input, the deferred batch work runs (``on_flush``), as the
    simulator and the runtime do. Tests feed inputs to such a node directly. Put it first:
    ``class Driven(FlushesAfterEachInput, SomeProtocol)``."""

    needs_flush: bool

    def _flushed(self, ctx: Context) -> None:
        if self.needs_flush:
            self.on_flush(ctx)

    def on_start(self, ctx: Context) -> None:
        super().on_start(ctx)
        self._flushed(ctx)

    def on_recover(self, ctx: Context, stored: Any) -> None:
        super().on_recover(ctx, stored)
        self._flushed(ctx)

    def on_message(self, ctx: Context, src: str, msg: Any) -> None:
        super().on_message(ctx, src, msg)
        self._flushed(ctx)

    def on_timer(self, ctx: Context, name: str) -> None:
        super().on_timer(ctx, name)
        self._flushed(ctx)

    def on_client(self, ctx: Context, request: ClientRequest) -> None:
        super().on_client(ctx, request)
        self._flushed(ctx)

    def submit(self, ctx: Context, command: Any) -> Any:
        out = super().submit(ctx, command)
        self._flushed(ctx)
        return out


class DrivenRaftNode(FlushesAfterEachInput, RaftNode):
    """A RaftNode driven directly by tests, flushing after every input (see the mixin)."""

    def change_membership(self, ctx: Context, action: str, node: str) -> str | None:
        out = super().change_membership(ctx, action, node)
        self._flushed(ctx)
        return out


PAPER = {"pre_vote": False, "check_quorum": False}
"""Options that give the plain algorithm of the paper's section 5 (no dissertation extras)."""


def entries(*terms: int, start: int = 1) -> list[LogEntry]:
    """Log entries with the given terms and distinct commands ``("put", "k", index)``."""
    return [LogEntry(t, ("put", "k", start + i)) for i, t in enumerate(terms)]


def new_node(
    node_id: str = "n1",
    members: Sequence[str] = ("n1", "n2", "n3"),
    *,
    term: int = 0,
    voted_for: str | None = None,
    log: Sequence[LogEntry] = (),
    seed: int = 0,
    **options: Any,
) -> tuple[RaftNode, FakeContext]:
    """A RaftNode booted on a FakeContext. With ``term``/``voted_for``/``log`` the state is
    written to its storage first and the node recovers from it (like a restart). Options
    default to the paper's plain algorithm (:data:`PAPER`)."""
    config = RaftConfig.from_options(**{**PAPER, **options})
    node = DrivenRaftNode(node_id, members, config)
    ctx = FakeContext(node_id, members, seed)
    if term or voted_for is not None or log:
        ctx.storage.put("hard", (term, voted_for))
        if log:
            ctx.storage.log_append(1, list(log))
        node.on_recover(ctx, ctx.storage.load())
    else:
        node.on_start(ctx)
    ctx.clear()
    return node, ctx


def make_leader(node: RaftNode, ctx: FakeContext) -> None:
    """Run an election on ``node`` (pre-vote off) and feed it the votes it asks for, until it
    wins. What the new leader sent (its first AppendEntries) stays in ``ctx.sent``."""
    node.on_timer(ctx, "election")
    assert node.role is Role.CANDIDATE
    for dst, _ in ctx.take(RequestVote):
        node.on_message(ctx, dst, RequestVoteResponse(node.current_term, True))
        if node.role is Role.LEADER:
            break
    assert node.role is Role.LEADER


def log_terms(node: RaftNode) -> list[int]:
    """Terms of the entries of ``node``'s log (which must not be compacted)."""
    assert node.log.snapshot_index == 0
    return [e.term for e in node.log.entries]


class Wire:
    """Hand delivery of messages between protocol-level nodes (no timers, no clock)."""

    def __init__(self, nodes: dict[str, tuple[RaftNode, FakeContext]]) -> None:
        self.nodes = nodes
        self.delivered: list[tuple[str, str, Any]] = []

    def pump(
        self,
        drop: Callable[[str, str, Any], bool] = lambda src, dst, msg: False,
        max_messages: int = 10_000,
    ) -> int:
        """Deliver every pending message (and what they cause) until none is left; messages
        for which ``drop(src, dst, msg)`` holds, or to unknown nodes, are lost."""
        count = 0
        while True:
            batch: list[tuple[str, str, Any]] = []
            for src, (_, ctx) in self.nodes.items():
                batch.extend((src, dst, msg) for dst, msg in ctx.take())
            if not batch:
                return count
            for src, dst, msg in batch:
                if dst not in self.nodes or drop(src, dst, msg):
                    continue
                node, ctx = self.nodes[dst]
                node.on_message(ctx, src, msg)
                self.delivered.append((src, dst, msg))
                count += 1
                assert count <= max_messages, "messages kept flowing: a livelock"


# ============================================================================ cluster level


class Started(NamedTuple):
    """What Start() (``Simulation.submit``) returned, with names."""

    index: int
    term: int
    is_leader: bool
    error: str | None


def start(sim: Simulation, node: str, cmd: Any) -> Started:
    """``sim.submit(node, cmd)`` as a named tuple (index, term, is_leader, error)."""
    r = sim.submit(node, cmd)
    index, term, is_leader = r
    return Started(index, term, is_leader, r.error)


def make_sim(nodes: int | Sequence[str] = 3, seed: int = 1, **options: Any) -> Simulation:
    """A Raft simulation with the invariant checker on after every event."""
    return Simulation("raft", nodes=nodes, seed=seed, check_invariants=True, **options)


class Cluster:
    """MIT 6.824's test ``config``, over a checked Simulation.

    ``connected`` is the set of nodes the test has not disconnected. ``disconnect(n)`` isolates
    ``n`` until ``connect(n)``.
    """

    def __init__(self, nodes: int = 3, seed: int = 1, **options: Any) -> None:
        self.sim = make_sim(nodes, seed, **options)
        self.nodes: tuple[str, ...] = self.sim.nodes
        self.connected: set[str] = set(self.nodes)

    # -- faults --------------------------------------------------------------------------
    def disconnect(self, node: str) -> None:
        self.sim.disconnect(node)
        self.connected.discard(node)

    def connect(self, node: str) -> None:
        self.connected.add(node)
        self.sim.reconnect(node)

    def crash(self, node: str) -> None:
        self.sim.crash(node)

    def start(self, node: str) -> None:
        self.sim.restart(node)

    def live(self, among: Iterable[str] | None = None) -> list[str]:
        """Nodes that are up and connected (and in ``among`` if given)."""
        pool = self.connected if among is None else set(among)
        return [n for n in self.nodes if n in pool and self.sim.is_up(n)]

    # -- leaders and terms ---------------------------------------------------------------
    def leaders_by_term(self, among: Iterable[str] | None = None) -> dict[int, list[str]]:
        out: dict[int, list[str]] = {}
        for n in self.live(among):
            st = self.sim.status(n)
            if st["role"] == "leader":
                out.setdefault(st["term"], []).append(n)
        return out

    def _latest_leader(self, among: Iterable[str] | None) -> str | None:
        by_term = self.leaders_by_term(among)
        for term, ls in by_term.items():
            assert len(ls) == 1, f"term {term} has {len(ls)} leaders: {ls}"
        if not by_term:
            return None
        return by_term[max(by_term)][0]

    def check_one_leader(self, among: Iterable[str] | None = None, timeout: float = 5.0) -> str:
        """Wait up to ``timeout`` virtual seconds for a leader among the live nodes; assert no
        term ever shows two leaders among them; return the leader of the newest term."""
        pool = None if among is None else list(among)
        found = self.sim.run_until(lambda: self._latest_leader(pool) is not None, timeout)
        assert found, f"no leader among {self.live(pool)} after {timeout}s: {self.roles()}"
        leader = self._latest_leader(pool)
        assert leader is not None
        return leader

    def check_no_leader(self, among: Iterable[str] | None = None) -> None:
        by_term = self.leaders_by_term(among)
        assert not by_term, f"expected no leader among {self.live(among)}, got {by_term}"

    def check_terms(self, among: Iterable[str] | None = None) -> int:
        """All live nodes agree on the term; return it."""
        terms = {self.sim.status(n)["term"] for n in self.live(among)}
        assert len(terms) == 1, f"nodes disagree on the term: {self.roles()}"
        return terms.pop()

    def roles(self) -> dict[str, tuple[str, int] | str]:
        out: dict[str, tuple[str, int] | str] = {}
        for n in self.nodes:
            st = self.sim.status(n)
            out[n] = (st["role"], st["term"]) if st["up"] else "down"
        return out

    # -- agreement -----------------------------------------------------------------------
    def n_committed(self, index: int) -> tuple[int, Any]:
        """How many nodes applied a client command at ``index`` and which command (all nodes
        that did must agree); ``(0, None)`` when none did."""
        count, cmd = 0, None
        for n in self.nodes:
            proto = self.sim.protocol(n)
            if proto is None or not proto.applied_entries:
                continue
            applied = proto.applied_entries  # increasing indices (a snapshot skips some)
            pos = bisect.bisect_left(applied, index, key=lambda item: item[0])
            if pos == len(applied) or applied[pos][0] != index:
                continue
            entry = applied[pos][1]
            if entry.kind != COMMAND:
                continue
            if count and entry.command != cmd:
                raise AssertionError(f"nodes applied {cmd!r} and {entry.command!r} at {index}")
            count, cmd = count + 1, entry.command
        return count, cmd

    def wait_committed(self, index: int, expected: int, timeout: float = 5.0) -> Any:
        ok = self.sim.run_until(lambda: self.n_committed(index)[0] >= expected, timeout)
        count, cmd = self.n_committed(index)
        assert ok, f"only {count} of {expected} nodes applied index {index}: {self.roles()}"
        return cmd

    def submit_to_leader(self, cmd: Any) -> tuple[str, int] | None:
        """Start ``cmd`` at the first live node that accepts it as leader."""
        for n in self.live():
            r = start(self.sim, n, cmd)
            assert r.error is None, r.error
            if r.is_leader:
                return n, r.index
        return None

    def one(self, cmd: Any, expected: int, *, retry: bool = True, timeout: float = 10.0) -> int:
        """6.824's ``cfg.one``: submit ``cmd`` at a leader (trying every live node, again and
        again) until ``expected`` nodes applied it at one index; return that index."""
        deadline = self.sim.now + timeout
        while self.sim.now < deadline:
            started = self.submit_to_leader(cmd)
            if started is None:
                self.sim.run(0.05)
                continue
            _, index = started
            self.sim.run_until(lambda: self.n_committed(index)[0] >= expected, 2.0)
            count, got = self.n_committed(index)
            if count >= expected and got == cmd:
                return index
            assert retry, f"one({cmd!r}) failed to reach agreement: {count} at {index}"
        raise AssertionError(f"one({cmd!r}) failed to reach agreement: {self.roles()}")

    def applied_commands(self, node: str) -> list[Any]:
        return [c for _, c in self.sim.applied(node)]
