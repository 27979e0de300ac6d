"""Shared helpers of the PBFT tests (no test functions here).

* protocol level: :class:`FakeContext` records what one :class:`PbftNode` does; :func:`signed`
  builds messages signed with the simulator's deterministic keys of any replica or client, so a
  test can play any peer; :class:`Wire` connects a few nodes by hand-delivered messages (with a
  drop filter), calling ``on_flush`` after every input as the drivers do;
* cluster level: :func:`drive` runs closed-loop clients against a :class:`Simulation` through
  the proxy path (plain kv commands handed to replicas).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Sequence
from typing import Any

from quorumkit.protocol import ClientRequest, Context
from quorumkit.protocols.pbft import PbftConfig, PbftNode, PrePrepare, Request, batch_digest
from quorumkit.protocols.pbft.crypto import Keyring, signing_bytes
from quorumkit.sim.core import Simulation
from quorumkit.storage import MemoryStorage

FOUR = ("n1", "n2", "n3", "n4")
SEVEN = tuple(f"n{i}" for i in range(1, 8))


def keyring(identity: str, members: Sequence[str] = FOUR) -> Keyring:
    return Keyring.simulated_for(identity, members)


def signed(msg: Any, identity: str | None = None) -> Any:
    """``msg`` signed with the simulator key of ``identity`` (default: its sender)."""
    who = identity if identity is not None else msg.sender
    owner = who.partition("/")[0]
    sig = keyring(owner).sign(signing_bytes(msg))
    return dataclasses.replace(msg, signature=sig)


def client_request(client: str, ts: int, op: Any) -> Request:
    """A request of ``client`` (``"c1"`` or a proxy lane ``"n2/0"``) signed by its key."""
    return signed(Request(op, ts, client))


def pre_prepare(view: int, seq: int, requests: Sequence[Request], sender: str) -> PrePrepare:
    batch = tuple(requests)
    return signed(PrePrepare(view, seq, batch_digest(batch), batch, sender))


class FakeContext(Context):
    """A Context that records sends, timers and replies of one node."""

    def __init__(self, node_id: str, members: Sequence[str], seed: int = 0) -> None:
        self.node_id = node_id
        self.members = tuple(members)
        self.storage = MemoryStorage()
        self.rng = random.Random(seed)
        self.clock = 0.0
        self.sent: list[tuple[str, Any]] = []
        self.timers: dict[str, float] = {}
        self.replies: list[tuple[ClientRequest, Any]] = []
        self.traces: list[tuple[str, dict[str, Any]]] = []

    def now(self) -> float:
        return self.clock

    def send(self, dst: str, msg: Any) -> None:
        self.sent.append((dst, msg))

    def set_timer(self, name: str, delay_s: float) -> None:
        self.timers[name] = delay_s

    def cancel_timer(self, name: str) -> None:
        self.timers.pop(name, None)

    def reply(self, request: ClientRequest, result: Any) -> None:
        self.replies.append((request, result))

    def trace(self, event: str, **fields: Any) -> None:
        self.traces.append((event, fields))

    def take(self, kind: type | None = None) -> list[tuple[str, Any]]:
        """Remove and return the messages sent so far (only those of type ``kind`` if given)."""
        out = [(d, m) for d, m in self.sent if kind is None or isinstance(m, kind)]
        self.sent = [(d, m) for d, m in self.sent if not (kind is None or isinstance(m, kind))]
        return out

    def sent_of(self, kind: type) -> list[Any]:
        """The distinct messages of type ``kind`` sent so far (a broadcast counts once)."""
        seen: list[Any] = []
        for _, m in self.sent:
            if isinstance(m, kind) and not any(m is x for x in seen):
                seen.append(m)
        return seen


def new_node(
    node_id: str = "n2", members: Sequence[str] = FOUR, **options: Any
) -> tuple[PbftNode, FakeContext]:
    node = PbftNode(node_id, members, PbftConfig.from_options(**options))
    ctx = FakeContext(node_id, members)
    node.on_start(ctx)
    return node, ctx


def deliver(node: PbftNode, ctx: FakeContext, src: str, msg: Any) -> None:
    """One input as a driver makes it: the message, then the flush of rule 7."""
    node.on_message(ctx, src, msg)
    if node.needs_flush:
        node.on_flush(ctx)


Drop = Callable[[str, str, Any], bool]


class Wire:
    """A few PBFT nodes connected by hand: :meth:`run` delivers every sent message in FIFO
    order (skipping those ``drop(src, dst, msg)`` rejects) until nothing is left."""

    def __init__(self, members: Sequence[str] = FOUR, **options: Any) -> None:
        self.members = tuple(members)
        cfg = PbftConfig.from_options(**options)
        self.nodes = {m: PbftNode(m, self.members, cfg) for m in self.members}
        self.ctxs = {m: FakeContext(m, self.members) for m in self.members}
        self.down: set[str] = set()
        self.delivered = 0
        #: every message taken from a sender, delivered or not: (src, dst, msg)
        self.history: list[tuple[str, str, Any]] = []
        for m in self.members:
            self.nodes[m].on_start(self.ctxs[m])

    def flush(self, node_id: str) -> None:
        node = self.nodes[node_id]
        if node.needs_flush:
            node.on_flush(self.ctxs[node_id])

    def client(self, node_id: str, command: Any, rid: int = 1) -> ClientRequest:
        req = ClientRequest(rid, command)
        self.nodes[node_id].on_client(self.ctxs[node_id], req)
        self.flush(node_id)
        return req

    def fire(self, node_id: str, timer: str) -> None:
        ctx = self.ctxs[node_id]
        ctx.timers.pop(timer, None)
        self.nodes[node_id].on_timer(ctx, timer)
        self.flush(node_id)

    def run(self, drop: Drop | None = None, limit: int = 100_000) -> int:
        """Deliver until quiet; returns the number of messages delivered."""
        count = 0
        while count < limit:
            moved = False
            for src in self.members:
                ctx = self.ctxs[src]
                if not ctx.sent:
                    continue
                batch, ctx.sent = ctx.sent, []
                self.history.extend((src, dst, msg) for dst, msg in batch)
                for dst, msg in batch:
                    if src in self.down or dst in self.down:
                        continue
                    if drop is not None and drop(src, dst, msg):
                        continue
                    moved = True
                    count += 1
                    self.nodes[dst].on_message(self.ctxs[dst], src, msg)
                    self.flush(dst)
            if not moved:
                break
        self.delivered += count
        return count

    def sent_by(self, node_id: str, kind: type) -> list[Any]:
        """The distinct messages of type ``kind`` that ``node_id`` sent (a broadcast once)."""
        out: list[Any] = []
        for src, _, msg in self.history:
            if src == node_id and isinstance(msg, kind) and not any(msg is m for m in out):
                out.append(msg)
        return out

    def replies(self, node_id: str) -> list[Any]:
        return [r for _, r in self.ctxs[node_id].replies]


_drives = [0]


def drive(
    sim: Simulation,
    total: int,
    *,
    clients: int = 8,
    nodes: Sequence[str] | None = None,
    keys: int = 20,
    think_s: float = 0.001,
    name: str | None = None,
) -> list[tuple[int, Any]]:
    """Closed-loop clients issuing ``total`` session puts through the proxy path, each to a
    rotating up node of ``nodes``; returns the (operation number, result) list, filled as
    replies arrive."""
    targets = list(nodes or sim.nodes)
    done: list[tuple[int, Any]] = []
    issued = [0]
    _drives[0] += 1
    # fresh session names by default: sequence numbers restart at 1 with each call
    prefix = name if name is not None else f"d{_drives[0]}c"

    def issue(c: int) -> None:
        if issued[0] >= total:
            return
        issued[0] += 1
        i = issued[0]
        up = [n for n in targets if sim.is_up(n)]
        node = up[(c + i) % len(up)]
        cmd = ("session", f"{prefix}{c}", i, ("put", f"k{i % keys}", i))

        def on_reply(n: str, result: Any) -> None:
            done.append((i, result))
            sim.call_after(think_s, lambda: issue(c))

        sim.client_request(node, cmd, on_reply)

    for c in range(clients):
        issue(c)
    return done


def correct_digests(sim: Simulation) -> set[Any]:
    return {sim.protocol(n).state_digest() for n in sim.up_nodes()}  # type: ignore[union-attr]
