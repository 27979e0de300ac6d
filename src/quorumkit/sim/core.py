"""The deterministic discrete-event simulator.

Rules of this module:

1. One seed determines everything. Every random draw comes from a ``random.Random`` derived from
   the seed and a purpose (``node/n3``, ``network``), so the same seed and options give the
   same run, event for event, and the same :meth:`Simulation.trace_hash` in any process.
2. Virtual time only: the clock jumps from event to event; nothing here reads the wall clock.
3. Events at equal times run in the order they were scheduled (a sequence number breaks ties).
4. The simulator drives protocols through the contract of :mod:`quorumkit.protocol` and nothing
   else; a protocol's storage writes are durable when its handler returns, before any of its
   messages arrive anywhere (the durability-ordering rule holds trivially).
5. Misuse of the API (unknown node, bad rate, unknown protocol) raises
   :class:`~quorumkit.errors.ConfigError` at once; a protocol that raises inside a handler is a
   bug: the exception propagates with a note naming the node, the input and the replay seed.
"""

from __future__ import annotations

import hashlib
import heapq
import inspect
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from quorumkit.errors import ConfigError, InvariantViolation
from quorumkit.model.topology import Partition, Topology
from quorumkit.protocol import ClientRequest, Context, InvariantChecker, Protocol
from quorumkit.protocols import resolve_protocol
from quorumkit.sim.network import Network
from quorumkit.storage import MemoryStorage

_DELIVER = 0
_TIMER = 1
_CALL = 2

TRACE_MODES = ("off", "hash", "full")


def derive_seed(seed: int, purpose: str) -> int:
    """A 64-bit seed for one purpose, derived from the run's seed (stable across processes)."""
    digest = hashlib.sha256(f"quorumkit/{seed}/{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


class SimContext(Context):
    """The :class:`~quorumkit.protocol.Context` the simulator hands to one node."""

    __slots__ = ("_sim", "_slot", "members", "node_id", "rng", "storage")

    def __init__(self, sim: Simulation, slot: _Slot) -> None:
        self._sim = sim
        self._slot = slot
        self.node_id = slot.node_id
        self.members = sim.node_ids
        self.storage = slot.storage
        self.rng = slot.rng

    def now(self) -> float:
        return self._sim._now

    def send(self, dst: str, msg: Any) -> None:
        self._sim._send(self.node_id, dst, msg)

    def broadcast(self, msg: Any) -> None:
        send = self._sim._send
        me = self.node_id
        for dst in self.members:
            if dst != me:
                send(me, dst, msg)

    def set_timer(self, name: str, delay_s: float) -> None:
        if not delay_s >= 0.0:
            raise ConfigError(f"timer {name!r}: delay must be >= 0 seconds, got {delay_s}")
        sim = self._sim
        slot = self._slot
        sim._seq += 1
        token = sim._seq
        slot.timers[name] = token
        at = sim._now + delay_s * slot.skew
        heapq.heappush(sim._queue, (at, token, _TIMER, slot, name, token))

    def cancel_timer(self, name: str) -> None:
        self._slot.timers.pop(name, None)

    def reply(self, request: ClientRequest, result: Any) -> None:
        self._sim._on_reply(self.node_id, request, result)

    # Rule 4's early effects. A synced MemoryStorage write is durable when it returns, so an
    # early effect is an ordinary one and ``when_durable`` keeps its default (True). Unsynced
    # writes (``sync=False``) stay what a crash with ``lose_unsynced`` may lose.
    send_early = send
    reply_early = reply

    def trace(self, event: str, **fields: Any) -> None:
        sim = self._sim
        if event == "role" and fields.get("role") == "leader":
            sim.stats["leader_changes"] += 1
        if sim._trace_mode != "off":
            sim._record((sim._now, "trace", self.node_id, event, tuple(sorted(fields.items()))))


class _Slot:
    """Everything the simulator keeps for one node."""

    __slots__ = (
        "ctx",
        "incarnation",
        "node_id",
        "omission_receive",
        "omission_send",
        "protocol",
        "rng",
        "skew",
        "storage",
        "timers",
        "up",
    )

    def __init__(self, node_id: str, rng: random.Random) -> None:
        self.node_id = node_id
        self.rng = rng
        self.storage = MemoryStorage()
        self.timers: dict[str, int] = {}
        self.up = False
        self.incarnation = 0
        self.protocol: Protocol | None = None
        self.ctx: SimContext | None = None
        self.omission_send = 0.0
        self.omission_receive = 0.0
        self.skew = 1.0


class Simulation:
    """A cluster of ``nodes`` nodes running ``protocol`` over a simulated network.

    >>> sim = Simulation("heartbeat", nodes=3, seed=7)
    >>> sim.run(1.0)
    >>> sim.status("n1")["up"]
    True
    """

    def __init__(
        self,
        protocol: str | type[Protocol],
        nodes: int | Sequence[str] = 5,
        seed: int = 1,
        *,
        config: Any = None,
        topology: Topology | None = None,
        delay_min: float = 0.001,
        delay_max: float = 0.005,
        loss_rate: float = 0.0,
        duplicate_rate: float = 0.0,
        reorder: float = 0.0,
        trace: str = "hash",
        check_invariants: bool = False,
        lose_unsynced_on_crash: bool = False,
        start: bool = True,
        byzantine: Mapping[str, str] | None = None,
        **protocol_options: Any,
    ) -> None:
        self.protocol_cls: type[Protocol] = resolve_protocol(protocol)
        if isinstance(nodes, bool) or not isinstance(nodes, (int, list, tuple)):
            raise ConfigError(f"nodes must be a positive integer or a list of ids, got {nodes!r}")
        if isinstance(nodes, int):
            if nodes <= 0:
                raise ConfigError(f"nodes must be a positive integer, got {nodes}")
            ids: tuple[str, ...] = tuple(f"n{i}" for i in range(1, nodes + 1))
        else:
            ids = tuple(str(n) for n in nodes)
            if not ids or len(set(ids)) != len(ids):
                raise ConfigError(f"node ids must be non-empty and distinct, got {list(nodes)!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigError(f"seed must be an integer, got {seed!r}")
        if trace not in TRACE_MODES:
            raise ConfigError(f"trace must be one of {', '.join(TRACE_MODES)}, got {trace!r}")
        if config is not None and protocol_options:
            raise ConfigError("pass either config= or protocol options, not both")
        self.config = (
            config if config is not None else self.protocol_cls.make_config(**protocol_options)
        )
        self.seed = seed
        self.node_ids = ids
        #: node id -> byzantine behaviour, for the nodes that misbehave
        self.byzantine: dict[str, str] = dict(byzantine or {})
        self._classes: dict[str, type[Protocol]] = {}
        for nid, behaviour in self.byzantine.items():
            if nid not in ids:
                raise ConfigError(f"byzantine node {nid!r} is not a member ({', '.join(ids)})")
            self._classes[nid] = self.protocol_cls.byzantine_class(behaviour)
        self.network = Network(
            delay_min=delay_min,
            delay_max=delay_max,
            loss_rate=loss_rate,
            duplicate_rate=duplicate_rate,
            reorder=reorder,
        )
        if topology is None:
            topology = Topology.full(ids)
        else:
            missing = set(ids) - set(topology.nodes())
            if missing:
                raise ConfigError(f"topology lacks nodes {sorted(missing)}")
        self.topology = topology
        self._partition_cut: set[frozenset[str]] = set()
        self._disconnected: set[str] = set()
        self.lose_unsynced_on_crash = lose_unsynced_on_crash
        self._now = 0.0
        self._seq = 0
        self._queue: list[tuple[Any, ...]] = []
        self._net_rng = random.Random(derive_seed(seed, "network"))
        self.rng = random.Random(derive_seed(seed, "driver"))  # for nemeses and clients
        self._slots: dict[str, _Slot] = {
            nid: _Slot(nid, random.Random(derive_seed(seed, f"node/{nid}"))) for nid in ids
        }
        self._fifo: dict[tuple[str, str], float] = {}
        self._routes: dict[tuple[str, str], int] = {}
        self._routes_key: tuple[int, frozenset[str]] = (-1, frozenset())
        self._trace_mode = trace
        self._hasher = hashlib.blake2b(digest_size=16)
        self.events: list[tuple[Any, ...]] = []
        self._checker: InvariantChecker | None = (
            self.protocol_cls.make_checker() if check_invariants else None
        )
        self._next_request = 0
        self.replies: dict[int, tuple[str, Any]] = {}
        self._reply_callbacks: dict[int, Callable[[str, Any], None]] = {}
        self.stats = {
            "sent": 0,
            "delivered": 0,
            "dropped_loss": 0,
            "dropped_partition": 0,
            "dropped_omission": 0,
            "dropped_down": 0,
            "duplicated": 0,
            "timers": 0,
            "events": 0,
            "leader_changes": 0,
        }
        self.invariant_checks = 0
        if start:
            for nid in ids:
                self._boot(self._slots[nid], recover=False)

    # ------------------------------------------------------------------ properties
    @property
    def now(self) -> float:
        """Virtual time in seconds."""
        return self._now

    @property
    def nodes(self) -> tuple[str, ...]:
        return self.node_ids

    def _slot(self, node: str) -> _Slot:
        slot = self._slots.get(node)
        if slot is None:
            raise ConfigError(f"unknown node {node!r} (nodes: {', '.join(self.node_ids)})")
        return slot

    def protocol(self, node: str) -> Protocol | None:
        """The live protocol object of ``node`` (None while it is crashed)."""
        return self._slot(node).protocol

    def is_up(self, node: str) -> bool:
        return self._slot(node).up

    def storage(self, node: str) -> MemoryStorage:
        return self._slot(node).storage

    def up_nodes(self) -> list[str]:
        return [n for n in self.node_ids if self._slots[n].up]

    def status(self, node: str) -> dict[str, Any]:
        """The protocol's ``status()`` plus ``up`` (a crashed node reports only id and up)."""
        slot = self._slot(node)
        if slot.protocol is None or not slot.up:
            return {"id": node, "up": False}
        out = dict(slot.protocol.status())
        out["up"] = True
        if node in self.byzantine:
            out["byzantine"] = self.byzantine[node]
        return out

    # ------------------------------------------------------------------ tracing
    def _record(self, event: tuple[Any, ...]) -> None:
        self._hasher.update(repr(event).encode())
        if self._trace_mode == "full":
            self.events.append(event)

    def trace_hash(self) -> str:
        """Hex digest of every event so far (``trace="off"`` hashes nothing)."""
        return self._hasher.hexdigest()

    # ------------------------------------------------------------------ network
    def _hops(self, src: str, dst: str) -> int:
        """Hop count of the shortest usable path from src to dst; 0 when there is none."""
        key = (self.topology.version, self._down)
        if key != self._routes_key:
            self._routes.clear()
            self._routes_key = key
        pair = (src, dst)
        hops = self._routes.get(pair)
        if hops is None:
            hops = self.topology.hops(src, dst, avoid=self._routes_key[1])
            self._routes[pair] = hops
        return hops

    _down: frozenset[str] = frozenset()

    def _send(self, src: str, dst: str, msg: Any) -> None:
        stats = self.stats
        stats["sent"] += 1
        slots = self._slots
        if dst not in slots:
            raise ConfigError(f"node {src} sent to unknown node {dst!r}")
        rng = self._net_rng
        net = self.network
        omission = slots[src].omission_send
        if omission and rng.random() < omission:
            stats["dropped_omission"] += 1
            if self._trace_mode != "off":
                self._record((self._now, "drop", src, dst, msg, "omission"))
            return
        hops = self._hops(src, dst)
        if not hops:
            stats["dropped_partition"] += 1
            if self._trace_mode != "off":
                self._record((self._now, "drop", src, dst, msg, "partition"))
            return
        loss = net.loss_rate
        if loss and rng.random() < loss:
            stats["dropped_loss"] += 1
            if self._trace_mode != "off":
                self._record((self._now, "drop", src, dst, msg, "loss"))
            return
        now = self._now
        lo = net.delay_min
        span = net.delay_max - lo
        delay = lo + span * rng.random()
        for _ in range(hops - 1):
            delay += lo + span * rng.random()
        reorder = net.reorder
        if reorder and rng.random() < reorder:
            rlo = net.reorder_delay_min
            at = now + delay + rlo + (net.reorder_delay_max - rlo) * rng.random()
        else:
            at = now + delay
            pair = (src, dst)
            last = self._fifo.get(pair, 0.0)
            if at < last:
                at = last
            self._fifo[pair] = at
        self._seq += 1
        version = self.topology.version
        heapq.heappush(self._queue, (at, self._seq, _DELIVER, dst, src, msg, now, version))
        dup = net.duplicate_rate
        if dup and rng.random() < dup:
            stats["duplicated"] += 1
            self._seq += 1
            at2 = now
            for _ in range(hops):
                at2 += lo + span * rng.random()
            heapq.heappush(self._queue, (at2, self._seq, _DELIVER, dst, src, msg, now, version))

    def inject(self, src: str, dst: str, msg: Any) -> None:
        """Send ``msg`` from ``src`` to ``dst`` through the network, as if ``src`` sent it."""
        self._slot(src)
        self._slot(dst)
        self._send(src, dst, msg)

    # ------------------------------------------------------------------ lifecycle of nodes
    def _boot(self, slot: _Slot, recover: bool) -> None:
        cls = self._classes.get(slot.node_id, self.protocol_cls)
        proto = cls(slot.node_id, self.node_ids, self.config)
        slot.protocol = proto
        slot.ctx = SimContext(self, slot)
        slot.up = True
        slot.incarnation += 1
        self._down = frozenset(n for n, s in self._slots.items() if not s.up)
        try:
            if recover:
                proto.on_recover(slot.ctx, slot.storage.load())
            else:
                proto.on_start(slot.ctx)
            if proto.needs_flush:
                proto.on_flush(slot.ctx)
        except Exception as exc:
            self._annotate(exc, slot.node_id, "recover" if recover else "start")
            raise
        self._after_step()

    def crash(self, node: str, *, lose_unsynced: bool | None = None) -> None:
        """Crash ``node``: its volatile state and timers are gone; its durable storage stays
        (``lose_unsynced=True``, or the simulation's default, also loses unsynced writes)."""
        slot = self._slot(node)
        if not slot.up:
            return
        slot.up = False
        slot.protocol = None
        slot.ctx = None
        slot.timers.clear()
        lose = self.lose_unsynced_on_crash if lose_unsynced is None else lose_unsynced
        slot.storage.crash(lose_unsynced=lose)
        self._down = frozenset(n for n, s in self._slots.items() if not s.up)
        if self._trace_mode != "off":
            self._record((self._now, "crash", node))

    def restart(self, node: str) -> None:
        """Restart a crashed node from its durable storage (through ``on_recover``)."""
        slot = self._slot(node)
        if slot.up:
            return
        if self._trace_mode != "off":
            self._record((self._now, "restart", node))
        self._boot(slot, recover=True)

    def set_omission(self, node: str, send: float = 0.0, receive: float | None = None) -> None:
        """Omission fault: ``node`` drops a fraction of its sends and of its receives."""
        slot = self._slot(node)
        recv = send if receive is None else receive
        for name, rate in (("send", send), ("receive", recv)):
            if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
                raise ConfigError(f"omission {name} rate must be in [0, 1], got {rate!r}")
        slot.omission_send = float(send)
        slot.omission_receive = float(recv)

    def set_clock_skew(self, node: str, factor: float) -> None:
        """Timer clock skew: ``node``'s timers take ``factor`` times as long (2.0: its clock
        runs at half speed). Applies to timers set from now on."""
        slot = self._slot(node)
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not factor > 0:
            raise ConfigError(f"clock skew factor must be > 0, got {factor!r}")
        slot.skew = float(factor)
        if self._trace_mode != "off":
            self._record((self._now, "skew", node, float(factor)))

    # ------------------------------------------------------------------ partitions
    def _apply_cuts(self) -> None:
        """The topology's cut links: the partition's, plus every link of a disconnected node."""
        cut = set(self._partition_cut)
        graph = self.topology.graph
        for node in self._disconnected:
            cut.update(frozenset((node, m)) for m in graph.neighbors(node))
        self.topology.heal()
        self.topology.cut(cut)

    def disconnect(self, node: str) -> None:
        """Cut every link of ``node`` (until :meth:`reconnect` or :meth:`heal`)."""
        self._slot(node)
        self._disconnected.add(node)
        self._apply_cuts()
        if self._trace_mode != "off":
            self._record((self._now, "disconnect", node))

    def reconnect(self, node: str) -> None:
        """Undo :meth:`disconnect` of ``node``: its links come back, except those to nodes
        that are still disconnected and those a partition cuts."""
        self._slot(node)
        self._disconnected.discard(node)
        self._apply_cuts()
        if self._trace_mode != "off":
            self._record((self._now, "reconnect", node))

    def partition(self, *groups: Iterable[str] | Partition) -> Partition:
        """Cut every link between different groups; unnamed nodes form one more group.

        ``sim.partition(["n1", "n2"], ["n3", "n4", "n5"])`` or ``sim.partition(["n1"])``.
        """
        first = groups[0] if len(groups) == 1 else None
        if isinstance(first, Partition):
            part: Partition = first
        else:
            if not groups:
                raise ConfigError("partition needs at least one group of nodes")
            if any(isinstance(g, str) for g in groups):
                raise ConfigError("partition groups are lists of node ids, not strings")
            lists = [list(g) for g in groups if not isinstance(g, Partition)]
            for g in lists:
                for n in g:
                    self._slot(n)
            cut = self.topology.links_between(lists)
            part = Partition("groups", tuple(tuple(g) for g in lists), cut)
        self._partition_cut |= part.cut
        self._apply_cuts()
        if self._trace_mode != "off":
            self._record((self._now, "partition", part.describe()))
        return part

    def heal(self) -> None:
        """Restore every cut link: end every partition and every disconnect."""
        self._partition_cut = set()
        self._disconnected = set()
        self.topology.heal()
        if self._trace_mode != "off":
            self._record((self._now, "heal"))

    # ------------------------------------------------------------------ clients
    def client_request(
        self,
        node: str,
        command: Any,
        callback: Callable[[str, Any], None] | None = None,
    ) -> int:
        """Hand ``command`` to ``node`` as a client request now; returns the request id.

        The reply lands in ``sim.replies[request_id]`` as ``(node, result)`` and is passed to
        ``callback``. A request to a crashed node gets the reply ``{"error": "down"}``.
        """
        slot = self._slot(node)
        self._next_request += 1
        rid = self._next_request
        request = ClientRequest(rid, command)
        if callback is not None:
            self._reply_callbacks[rid] = callback
        if not slot.up or slot.protocol is None or slot.ctx is None:
            self._on_reply(node, request, {"error": "down", "node": node})
            return rid
        try:
            slot.protocol.on_client(slot.ctx, request)
            if slot.protocol.needs_flush:
                slot.protocol.on_flush(slot.ctx)
        except Exception as exc:
            self._annotate(exc, node, f"client request {command!r:.60}")
            raise
        self._after_step()
        return rid

    def _on_reply(self, node: str, request: ClientRequest, result: Any) -> None:
        self.replies[request.request_id] = (node, result)
        if self._trace_mode != "off":
            self._record((self._now, "reply", node, request.request_id, result))
        cb = self._reply_callbacks.pop(request.request_id, None)
        if cb is not None:
            cb(node, result)

    # ------------------------------------------------------------------ protocol calls
    def invoke(self, node: str, fn: Callable[[Any, Context], Any]) -> Any:
        """Run ``fn(protocol, ctx)`` on ``node`` as one input (for protocol-specific calls such
        as a membership change); returns what ``fn`` returns. Raises ConfigError when the
        node is down."""
        slot = self._slot(node)
        if not slot.up or slot.protocol is None or slot.ctx is None:
            raise ConfigError(f"node {node} is down")
        try:
            out = fn(slot.protocol, slot.ctx)
            if slot.protocol.needs_flush:
                slot.protocol.on_flush(slot.ctx)
        except Exception as exc:
            if not isinstance(exc, ConfigError):
                self._annotate(exc, node, getattr(fn, "__name__", "invoke"))
            raise
        self._after_step()
        return out

    def submit(self, node: str, command: Any) -> Any:
        """Raft's Start(): propose ``command`` at ``node``; returns ``(index, term,
        is_leader)`` with an ``error`` attribute. Never raises for a crashed node, a protocol
        without submit or a command that cannot be encoded: those come back as an error value
        ``(-1, -1, False)`` with ``.error`` set."""
        from quorumkit.protocols.raft.node import SubmitResult

        slot = self._slot(node)
        if not slot.up or slot.protocol is None:
            return SubmitResult(-1, -1, False, f"node {node} is down")
        submit = getattr(slot.protocol, "submit", None)
        if submit is None:
            return SubmitResult(-1, -1, False, f"{self.protocol_cls.name} has no submit()")
        return self.invoke(node, lambda proto, ctx: submit(ctx, command))

    def applied(self, node: str) -> list[tuple[int, Any]]:
        """``(index, command)`` of the client commands ``node`` applied, in apply order, since
        its last (re)start. Empty for a crashed node."""
        proto = self._slot(node).protocol
        fn = getattr(proto, "applied_commands", None)
        return list(fn()) if fn is not None else []

    def leader(self) -> str | None:
        """The unique leader of the highest term among running nodes; None if there is none
        or it is not unique."""
        best_term = -1
        leaders: list[str] = []
        for n in self.node_ids:
            slot = self._slots[n]
            if not slot.up or slot.protocol is None:
                continue
            st = slot.protocol.status()
            if st.get("role") != "leader":
                continue
            term = st.get("term", st.get("ballot", st.get("view", 0)))
            if isinstance(term, (list, tuple)):
                term = tuple(term)
            if best_term == -1 or term > best_term:
                best_term, leaders = term, [n]
            elif term == best_term:
                leaders.append(n)
        return leaders[0] if len(leaders) == 1 else None

    # ------------------------------------------------------------------ scheduling
    def call_at(self, at: float, fn: Callable[[], Any]) -> None:
        """Run ``fn()`` at virtual time ``at`` (for nemeses, clients and scripted scenarios)."""
        if not at >= self._now:
            raise ConfigError(f"cannot schedule in the past ({at} < now {self._now})")
        self._seq += 1
        heapq.heappush(self._queue, (at, self._seq, _CALL, fn))

    def call_after(self, delay_s: float, fn: Callable[[], Any]) -> None:
        self.call_at(self._now + delay_s, fn)

    # ------------------------------------------------------------------ running
    def _annotate(self, exc: BaseException, node: str, what: str) -> None:
        exc.add_note(
            f"in node {node} handling {what} at t={self._now:.6f}s; replay with seed={self.seed}"
        )

    def _after_step(self) -> None:
        checker = self._checker
        if checker is not None:
            self.invariant_checks += 1
            try:
                checker.check({n: s.protocol if s.up else None for n, s in self._slots.items()})
            except InvariantViolation as exc:
                exc.add_note(f"at t={self._now:.6f}s, seed={self.seed}")
                raise

    def step(self) -> bool:
        """Process one event; False when the queue is empty."""
        if not self._queue:
            return False
        self._process(heapq.heappop(self._queue))
        return True

    def _process(self, ev: tuple[Any, ...]) -> None:
        self._now = ev[0]
        self.stats["events"] += 1
        kind = ev[2]
        if kind == _DELIVER:
            _, _, _, dst, src, msg, sent_at, version = ev
            slot = self._slots[dst]
            if not slot.up:
                self.stats["dropped_down"] += 1
                if self._trace_mode != "off":
                    self._record((self._now, "drop", src, dst, msg, "down"))
                return
            if version != self.topology.version and not self._hops(src, dst):
                self.stats["dropped_partition"] += 1
                if self._trace_mode != "off":
                    self._record((self._now, "drop", src, dst, msg, "partition"))
                return
            if slot.omission_receive and self._net_rng.random() < slot.omission_receive:
                self.stats["dropped_omission"] += 1
                if self._trace_mode != "off":
                    self._record((self._now, "drop", src, dst, msg, "omission"))
                return
            self.stats["delivered"] += 1
            if self._trace_mode != "off":
                self._record((self._now, "deliver", dst, src, msg, sent_at))
            proto = slot.protocol
            assert proto is not None and slot.ctx is not None
            try:
                proto.on_message(slot.ctx, src, msg)
                if proto.needs_flush:
                    proto.on_flush(slot.ctx)
            except Exception as exc:
                self._annotate(exc, dst, f"{type(msg).__name__} from {src}")
                raise
        elif kind == _TIMER:
            _, _, _, slot, name, token = ev
            if not slot.up or slot.timers.get(name) != token:
                return
            del slot.timers[name]
            self.stats["timers"] += 1
            if self._trace_mode != "off":
                self._record((self._now, "timer", slot.node_id, name))
            try:
                proto = slot.protocol
                proto.on_timer(slot.ctx, name)
                if proto.needs_flush:
                    proto.on_flush(slot.ctx)
            except Exception as exc:
                self._annotate(exc, slot.node_id, f"timer {name!r}")
                raise
        else:
            ev[3]()
        if self._checker is not None:
            self._after_step()

    def run(self, seconds: float) -> None:
        """Advance virtual time by ``seconds``, processing every event due until then."""
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds < 0:
            raise ConfigError(f"run() takes a duration >= 0 seconds, got {seconds!r}")
        self.run_to(self._now + seconds)

    def run_to(self, until: float) -> None:
        """Process every event due at or before virtual time ``until``."""
        queue = self._queue
        pop = heapq.heappop
        process = self._process
        while queue and queue[0][0] <= until:
            process(pop(queue))
        if until > self._now:
            self._now = until

    def run_until(self, predicate: Callable[..., bool], timeout: float) -> bool:
        """Run until ``predicate()`` (or ``predicate(sim)``) holds, at most ``timeout`` virtual
        seconds; return whether it held. The predicate is checked after every event."""
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0:
            raise ConfigError(f"run_until() takes a timeout >= 0 seconds, got {timeout!r}")
        pred = _zero_arg(predicate, self)
        if pred():
            return True
        until = self._now + timeout
        queue = self._queue
        pop = heapq.heappop
        process = self._process
        while queue and queue[0][0] <= until:
            process(pop(queue))
            if pred():
                return True
        self._now = max(self._now, until)
        return bool(pred())

    def check_invariants(self) -> None:
        """Run the protocol's invariant checker once now (raises InvariantViolation)."""
        checker = self._checker or self.protocol_cls.make_checker()
        if checker is not None:
            self._checker = checker
            self._after_step()

    def message_count(self) -> int:
        """Total messages sent so far (for message-complexity checks)."""
        return self.stats["sent"]


def _zero_arg(predicate: Callable[..., bool], sim: Simulation) -> Callable[[], bool]:
    try:
        params = [
            p
            for p in inspect.signature(predicate).parameters.values()
            if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
    except (TypeError, ValueError):
        params = []
    if params:
        return lambda: bool(predicate(sim))
    return lambda: bool(predicate())
