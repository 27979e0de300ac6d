"""PBFT (Castro & Liskov, "Practical Byzantine Fault Tolerance", OSDI 1999; "Practical
Byzantine Fault Tolerance and Proactive Recovery", TOCS 2002) as a sans-I/O state machine.

Rules of this module:

1. One :class:`PbftNode` is one replica. It acts only through the :class:`Context` it is handed:
   every message it emits goes through ``ctx.send``/``ctx.broadcast`` and every client answer
   through ``ctx.reply`` (byzantine behaviours wrap the context to tamper with them).
2. Every message carries its ``sender`` and an Ed25519 ``signature`` (crypto.py). A received
   message whose sender is not the network source, whose signature fails, or whose certificate
   names one replica twice is dropped and counted in ``dropped``; nothing a peer sends raises.
   One exception to the source check: a NEW-VIEW may come from any member, because replicas
   relay it to one that missed it (viewchange.py rule 5) and it proves itself (the new
   primary's signature over 2f + 1 signed view changes, checked whoever relays it).
   Signatures are verified lazily - only when the message can still change something - and each
   verification result is cached by the message's encoding (``verifications`` counts them).
   With ``auth="mac"`` the normal-case messages carry authenticator vectors instead (auth.py):
   :meth:`PbftNode.sign` and :meth:`PbftNode.verify` pick the scheme by message type, a failed
   entry is dropped as ``bad-mac``, and ``macs`` counts MACs computed and checked.
3. Quorums have ``n - f`` replicas (2f + 1 when n = 3f + 1): prepared needs the pre-prepare and
   ``n - f - 1`` matching prepares from distinct backups, committed-local ``n - f`` matching
   commits, a stable checkpoint and a NEW-VIEW ``n - f`` messages. Clients need f + 1 matching
   replies. Two quorums intersect in ``n - 2f >= f + 1`` replicas (Theorem 3.1).
4. What a correct replica promised (the pre-prepare it accepted, its prepared and committed
   certificates, its view, its stable checkpoint) is written to ``ctx.storage`` before the
   messages that depend on it leave (protocol contract, rule 4).
5. The normal case lives here (§4.2), checkpoints, garbage collection and state transfer in
   ``checkpoint.py`` (§4.3, TOCS §5.3), view changes in ``viewchange.py`` (§4.4).

Clients come in two kinds (§4.1): a *client command* is a signed :class:`Request` a client
built (:meth:`PbftNode.client_command`) and sent to every replica, each of which answers with
its own result once it executes it; a *plain command* (a kv tuple from a front end) makes the
replica that received it a proxy client: it signs a request as ``"<node>/<lane>"`` (one
outstanding request per lane, so the paper's one-request-per-client timestamps hold), sends it
to the primary (to every replica on retransmission), and answers once f + 1 replicas replied
with matching results.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections import deque
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

from quorumkit.codec import check_encodable, encode
from quorumkit.errors import ConfigError
from quorumkit.kv import KVStateMachine
from quorumkit.protocol import ClientRequest, Context, InvariantChecker, Protocol, StoredState
from quorumkit.protocols.pbft import checkpoint as _ckpt
from quorumkit.protocols.pbft import viewchange as _vc
from quorumkit.protocols.pbft.auth import MAC_TYPES, Authenticator
from quorumkit.protocols.pbft.config import PbftConfig
from quorumkit.protocols.pbft.crypto import (
    Keyring,
    client_keyring,
    digest,
    key_owner,
    signing_bytes,
)
from quorumkit.protocols.pbft.messages import (
    Checkpoint,
    Commit,
    CommitCert,
    Fetch,
    NewView,
    Prepare,
    PreparedCert,
    PrePrepare,
    Reply,
    Request,
    SlotRecord,
    StableCheckpoint,
    StateTransfer,
    Status,
    ViewChange,
    batch_digest,
)
from quorumkit.protocols.raft.node import SubmitResult

#: behaviours byzantine.py provides (as ``BEHAVIOURS: dict[str, type[PbftNode]]``)
BYZANTINE_BEHAVIOURS = (
    "silent",
    "equivocate",
    "wrong-digest",
    "forge",
    "replay",
    "stale-view",
    "bad-checkpoint",
    "wrong-reply",
    "delay",
    "twins",
)

_CACHE_MAX = 50_000
_TIMESTAMP_BLOCK = 1024

M = TypeVar("M")


class Executed(NamedTuple):
    """One entry of a replica's execution history: a batch executed at ``seq`` (``requests``
    set), or a state installed at ``seq`` by state transfer or restart (``requests`` None,
    ``digest`` the state digest)."""

    seq: int
    digest: bytes
    requests: tuple[Request, ...] | None


@dataclass(slots=True)
class Slot:
    """What a replica holds for one sequence number in view ``view`` (§4.2): the accepted
    pre-prepare, prepares and commits by sender (one each: a replica never counts twice), and
    the committed certificate once committed-local (kept across views until collected)."""

    seq: int
    view: int
    pre_prepare: PrePrepare | None = None
    prepares: dict[str, Prepare] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)
    prepare_sent: bool = False
    prepared: bool = False
    committed: CommitCert | None = None


@dataclass(slots=True)
class _Lane:
    """One outstanding request of this replica acting as a proxy client."""

    request: Request
    client_request: ClientRequest
    votes: dict[str, bytes] = field(default_factory=dict)
    results: dict[bytes, Any] = field(default_factory=dict)
    retries: int = 0


class PbftNode(Protocol):
    """One PBFT replica driving a :class:`~quorumkit.kv.KVStateMachine`."""

    name = "pbft"
    byzantine_behaviours = BYZANTINE_BEHAVIOURS

    def __init__(self, node_id: str, members: Any, config: PbftConfig | None = None) -> None:
        super().__init__(node_id, members, config or PbftConfig())
        cfg: PbftConfig = self.config
        if not isinstance(cfg, PbftConfig):
            raise ConfigError(f"PBFT needs a PbftConfig, got {type(cfg).__name__}")
        if node_id not in self.members:
            raise ConfigError(f"{node_id!r} is not a member ({', '.join(self.members)})")
        if len(set(self.members)) != len(self.members):
            raise ConfigError("replica ids must be distinct")
        self.cfg = cfg
        self.unsafe = cfg.unsafe
        self.n = len(self.members)
        self.f = cfg.check_bound(self.n)  # Theorem 3.1, unless allow-n-3f
        self.quorum = self.n - self.f
        self.member_set = frozenset(self.members)
        self.K = cfg.checkpoint_interval
        self.L = cfg.window
        self.mac_mode = cfg.auth == "mac"
        self.keyring = self._make_keyring()
        self.authenticator = Authenticator(self.keyring, self.members) if self.mac_mode else None
        self.needs_flush = False
        # view (§4.4)
        self.view = 0
        self.active = True  # False while changing to ``view``
        self.vc_backoff = 0
        self.vc_timer_armed = False
        self.vc_latest: dict[str, ViewChange] = {}  # each sender's highest view change
        self.vc_by_view: dict[int, dict[str, ViewChange]] = {}
        self.own_vcs: dict[int, ViewChange] = {}  # our view changes of the last few views
        self.new_view_msg: NewView | None = None
        # the message log (§4.2) and prepared certificates for view changes (§4.4)
        self.log: dict[int, Slot] = {}
        self.pset: dict[int, PreparedCert] = {}
        self.last_executed = 0
        self.max_log_size = 0
        # the state machine and the clients' last replies (§4.1)
        self.sm = KVStateMachine()
        self.client_table: dict[str, tuple[int, Any]] = {}
        # checkpoints (§4.3): h is the highest stable checkpoint with a proof
        genesis = _ckpt.encode_state(self)
        self.h = 0
        self.h_digest = digest(genesis)
        self.h_proof: tuple[Checkpoint, ...] = ()
        self.stable_state: tuple[int, bytes, tuple[Checkpoint, ...]] = (0, genesis, ())
        self.own_checkpoints: dict[int, tuple[bytes, bytes]] = {}
        self.ckpt_votes: dict[int, dict[str, Checkpoint]] = {}
        # requests: known and not executed (latest per client), client commands waiting here
        self.pending: dict[str, Request] = {}
        self.waiting: dict[str, dict[int, list[ClientRequest]]] = {}
        # the primary's ordering queue
        self.seq_next = 1
        self.queue: deque[Request] = deque()
        self.queued: set[tuple[str, int]] = set()
        self.ordered: dict[str, int] = {}
        # proxy client
        self.lanes: list[_Lane | None] = [None] * cfg.proxy_lanes
        self.free_lanes: deque[int] = deque(range(cfg.proxy_lanes))
        self.proxy_queue: deque[ClientRequest] = deque()
        self.timestamp = 0
        self.timestamp_reserved = 0
        # lagging behind: what the others said they executed, and state fetching
        self.seq_evidence: dict[str, int] = {}
        self.view_evidence: dict[str, tuple[int, bool]] = {}
        self.fetch_goal = 0
        self.fetch_view_goal = -1
        self.fetch_armed = False
        self.fetch_tries = 0
        # accounting
        self.dropped: dict[str, int] = {}
        self.verifications = 0
        self.signatures = 0
        self.macs = 0  # MAC mode: authenticator entries computed and checked
        self._verified: dict[bytes, bool] = {}
        # history read by the invariant checker
        self.executed: list[Executed] = []
        self.applied: list[tuple[int, Any]] = []
        self.state_digests: list[tuple[int, bytes]] = []
        self.prepared_log: list[tuple[int, int, bytes]] = []
        self.committed_log: list[tuple[int, int, bytes]] = []

    # ------------------------------------------------------------------ configuration
    @classmethod
    def make_config(cls, **options: Any) -> PbftConfig:
        return PbftConfig.from_options(**options)

    @classmethod
    def make_checker(cls) -> InvariantChecker:
        from quorumkit.protocols.pbft.invariants import PbftChecker

        return PbftChecker()

    @classmethod
    def client_replies_needed(cls, members: int, config: Any) -> int:
        """A client accepts a result once f + 1 replicas sent it (§4.1)."""
        cfg = config if isinstance(config, PbftConfig) else PbftConfig()
        return cfg.faults(members) + 1

    @classmethod
    def client_command(cls, config: Any, client: int, seq: int, op: Any) -> Request:
        """The signed <REQUEST, op, t=seq, c>_c of client ``c<client>`` (§4.1): hand it to every
        replica through ``on_client``. A retry must reuse ``seq`` (it then gets the cached
        reply); ``seq`` must grow with each new operation of the client."""
        cfg = config if isinstance(config, PbftConfig) else PbftConfig()
        if isinstance(client, bool) or not isinstance(client, int) or client < 0:
            raise ConfigError(f"client must be an integer >= 0, got {client!r}")
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
            raise ConfigError(f"seq must be an integer >= 1, got {seq!r}")
        problem = check_encodable(op)
        if problem is not None:
            raise ConfigError(f"operation cannot be sent: {problem}")
        identity = f"c{client}"
        ring = client_keyring(cfg.keys, identity)
        req = Request(op, seq, identity)
        return dataclasses.replace(req, signature=ring.sign(signing_bytes(req)))

    @classmethod
    def byzantine_class(cls, behaviour: str) -> type[Protocol]:
        """The class of a replica running byzantine ``behaviour``, from byzantine.py's
        ``BEHAVIOURS`` mapping (imported on first use)."""
        if behaviour not in cls.byzantine_behaviours:
            raise ConfigError(
                f"unknown byzantine behaviour {behaviour!r} for pbft "
                f"(known: {', '.join(cls.byzantine_behaviours)})"
            )
        name = "quorumkit.protocols.pbft.byzantine"
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            raise ConfigError(
                f"byzantine behaviour {behaviour!r} is not available: {name} is not written yet"
            ) from None
        found = getattr(module, "BEHAVIOURS", {}).get(behaviour)
        if not (isinstance(found, type) and issubclass(found, Protocol)):
            raise ConfigError(f"{name} does not provide behaviour {behaviour!r}")
        return found

    def _make_keyring(self) -> Keyring:
        cfg = self.cfg
        if cfg.keys is None:
            return Keyring.simulated_for(self.node_id, self.members)
        ring = Keyring.from_cluster_config(cfg.keys, self.node_id, cfg.key_file)
        if not ring.can_sign:
            raise ConfigError(f"no private key for replica {self.node_id!r} (see {cfg.keys})")
        missing = [m for m in self.members if not ring.knows(m)]
        if missing:
            raise ConfigError(f"cluster configuration {cfg.keys} lacks public keys of {missing}")
        if self.mac_mode:
            problem = ring.mac_problem(self.members)
            if problem is not None:
                raise ConfigError(
                    f"auth='mac' needs X25519 keys for the pairwise MAC session keys: {problem} "
                    f"(cluster configuration {cfg.keys}, 'x25519' section, and "
                    f"<keys_dir>/{self.node_id}.x25519.key); regenerate the keys with "
                    "'quorumkit keygen --ed25519' or use auth='signatures'"
                )
        return ring

    # ------------------------------------------------------------------ small helpers
    def primary_of(self, view: int) -> str:
        """The primary of view v is replica v mod |R| (§4.1)."""
        return self.members[view % self.n]

    def is_primary(self) -> bool:
        return self.primary_of(self.view) == self.node_id

    def low(self) -> int:
        """The lowest sequence number this replica still holds messages for: the stable
        checkpoint h, or less while it still executes up to h itself."""
        return max(min(self.h, self.last_executed), self.h - self.L)

    def in_window(self, seq: int) -> bool:
        """h < n <= H = h + L (§4.2), widened below h for what this replica still executes."""
        return self.low() < seq <= self.h + self.L

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def uses_mac(self, msg: Any) -> bool:
        """True when ``msg`` carries an authenticator rather than a signature (auth.py)."""
        return self.mac_mode and type(msg) in MAC_TYPES

    def reject(self, msg: Any) -> None:
        """Drop ``msg`` for failed authentication (``bad-mac`` or ``bad_signature``)."""
        self.drop("bad-mac" if self.uses_mac(msg) else "bad_signature")

    def sign(self, msg: M, to: str | None = None) -> M:
        """``msg`` signed with this replica's key (replacing any signature it had); in MAC
        mode a normal-case message gets an authenticator for every other replica instead (for
        ``to`` only, if given)."""
        body = signing_bytes(msg)
        auth = self.authenticator
        if auth is not None and type(msg) in MAC_TYPES:
            vector, count = auth.vector(body, None if to is None else (to,))
            self.macs += count
            authed: M = dataclasses.replace(msg, signature=vector)  # type: ignore[type-var]
            return authed
        self.signatures += 1
        sig = self.keyring.sign(body)
        out: M = dataclasses.replace(msg, signature=sig)  # type: ignore[type-var]
        if type(msg) is Request:
            self._remember(body + sig, True)  # our own proxy request comes back batched
        return out

    def verify(self, msg: Any) -> bool:
        """Check ``msg``'s signature against its sender's key, once per distinct message (the
        cache key is the signed bytes and the signature: the message's whole content)."""
        body = signing_bytes(msg)
        key = body + msg.signature
        known = self._verified.get(key)
        if known is not None:
            return known
        auth = self.authenticator
        if auth is not None and type(msg) in MAC_TYPES:
            self.macs += 1
            ok = auth.check(msg.sender, body, msg.signature)
        else:
            self.verifications += 1
            ok = self.keyring.verify(msg.sender, body, msg.signature)
        self._remember(key, ok)
        return ok

    def _remember(self, key: bytes, ok: bool) -> None:
        if len(self._verified) >= _CACHE_MAX:
            self._verified.clear()
        self._verified[key] = ok

    def request_problem(self, req: Request) -> str | None:
        """Why a request may not be executed (None: it was signed by its client)."""
        if not self.keyring.knows(req.client):
            return "unknown_client"
        if not self.verify(req):
            return "bad_signature"
        return None

    def slot(self, seq: int) -> Slot:
        """The slot of ``seq`` in the current view (older-view votes are discarded)."""
        s = self.log.get(seq)
        if s is None:
            s = Slot(seq, self.view)
            self.log[seq] = s
            if len(self.log) > self.max_log_size:
                self.max_log_size = len(self.log)
        elif s.view != self.view:
            reset_slot(s, self.view)
        return s

    def persist_slot(self, ctx: Context, s: Slot) -> None:
        ctx.storage.put(
            f"slot/{s.seq % (2 * self.L)}",
            SlotRecord(s.seq, s.view, s.pre_prepare, self.pset.get(s.seq), s.committed),
        )

    def _next_timestamp(self, ctx: Context) -> int:
        """A proxy timestamp never used before, even across restarts (reserved in blocks)."""
        self.timestamp += 1
        if self.timestamp > self.timestamp_reserved:
            self.timestamp_reserved = self.timestamp + _TIMESTAMP_BLOCK
            ctx.storage.put("timestamp", self.timestamp_reserved)
        return self.timestamp

    # ------------------------------------------------------------------ inputs
    def on_start(self, ctx: Context) -> None:
        ctx.set_timer("status", self._status_delay(ctx))
        if self.is_primary():
            ctx.trace("role", role="leader", view=self.view)

    def _status_delay(self, ctx: Context) -> float:
        return self.cfg.status_interval_ms / 1000 * (0.75 + 0.5 * ctx.rng.random())

    def on_recover(self, ctx: Context, stored: StoredState) -> None:
        """Restart: reload the stable checkpoint, the view, the slots' certificates and the
        timestamp reservation, re-execute what was committed, then ask the others for what
        was missed (TOCS 2002 §5.3)."""
        hard = stored.hard
        snap = stored.snapshot
        if isinstance(snap, StableCheckpoint) and snap.seq > 0:
            _ckpt.restore_state(self, snap.state)
            d = digest(snap.state)
            self.last_executed = self.h = snap.seq
            self.h_digest, self.h_proof = d, snap.proof
            self.stable_state = (snap.seq, snap.state, snap.proof)
            if self.keep_history:
                self.executed.append(Executed(snap.seq, d, None))
            self.state_digests.append((snap.seq, d))
        view = hard.get("view", (0, True))
        self.view, self.active = int(view[0]), bool(view[1])
        nv = hard.get("nv")
        if isinstance(nv, NewView):
            self.new_view_msg = nv
        for entry in hard.get("own_vcs", ()):
            if (
                isinstance(entry, (tuple, list))
                and len(entry) == 2
                and isinstance(entry[1], ViewChange)
                and entry[1].sender == self.node_id
            ):
                self.own_vcs[int(entry[0])] = entry[1]
        self.timestamp = self.timestamp_reserved = int(hard.get("timestamp", 0))
        self.seq_next = self.h + 1
        for key in sorted(hard):
            rec = hard[key]
            if not key.startswith("slot/") or not isinstance(rec, SlotRecord):
                continue
            if rec.seq <= self.h:
                continue
            if rec.prepared is not None:
                self.pset[rec.seq] = rec.prepared
            s = self.slot(rec.seq)
            s.committed = rec.committed
            if rec.view == self.view and rec.pre_prepare is not None:
                s.pre_prepare = rec.pre_prepare
                s.prepare_sent = not self.is_primary()
                if self.is_primary():
                    self.seq_next = max(self.seq_next, rec.seq + 1)
        self._execute_ready(ctx)
        ctx.set_timer("status", self._status_delay(ctx))
        if not self.active:
            _vc.broadcast_view_change(self, ctx)
        elif self.is_primary():
            ctx.trace("role", role="leader", view=self.view)
        ctx.broadcast(self.sign(Fetch(self.last_executed, self.view, self.active, self.node_id)))

    def on_message(self, ctx: Context, src: str, msg: Any) -> None:
        handler = _HANDLERS.get(type(msg))
        if handler is None:
            self.drop("unknown_message")
            return
        if type(msg) is not Request:
            sender = msg.sender
            if sender != src and not (type(msg) is NewView and src in self.member_set):
                self.drop("wrong_sender")
                return
            if sender not in self.member_set or sender == self.node_id:
                self.drop("unknown_sender")
                return
        handler(self, ctx, src, msg)

    def on_timer(self, ctx: Context, name: str) -> None:
        if name == "view_change":
            self.vc_timer_armed = False
            _vc.on_timeout(self, ctx)
        elif name == "status":
            _ckpt.on_status_timer(self, ctx)
        elif name == "fetch":
            _ckpt.on_fetch_timer(self, ctx)
        elif name.startswith("lane:"):
            self._on_lane_timeout(ctx, int(name[5:]))

    def on_flush(self, ctx: Context) -> None:
        """Rule 7: the primary batches the requests that arrived in one driver batch."""
        self.needs_flush = False
        if self.active and self.is_primary():
            self._issue_batches(ctx)

    # ------------------------------------------------------------------ clients (§4.1)
    def on_client(self, ctx: Context, request: ClientRequest) -> None:
        """A signed client command (answered with this replica's own result once executed),
        or a plain command this replica proxies (answered with f + 1 matching results)."""
        command = request.command
        if isinstance(command, Request):
            self._client_command(ctx, request, command)
        else:
            self._proxy(ctx, request)

    def _client_command(self, ctx: Context, creq: ClientRequest, req: Request) -> None:
        problem = self.request_problem(req)
        if problem is not None:
            self.drop(problem)
            ctx.reply(creq, {"error": problem, "detail": "request refused"})
            return
        c, t = req.client, req.timestamp
        last = self.client_table.get(c)
        if last is not None and t <= last[0]:
            if t == last[0]:
                ctx.reply(creq, last[1])  # §4.1: re-send the reply of a repeated timestamp
            else:
                ctx.reply(creq, {"error": "stale_request", "detail": f"t={t} < {last[0]}"})
            return
        self.waiting.setdefault(c, {}).setdefault(t, []).append(creq)
        self.accept_request(ctx, req, direct=True)

    def _proxy(self, ctx: Context, creq: ClientRequest) -> None:
        problem = check_encodable(creq.command)
        if problem is not None:
            ctx.reply(creq, {"error": "bad_command", "detail": problem})
            return
        if not self.free_lanes:
            if len(self.proxy_queue) >= self.cfg.max_pending:
                ctx.reply(creq, {"error": "overloaded", "leader": None})
                return
            self.proxy_queue.append(creq)
            return
        self._start_lane(ctx, self.free_lanes.popleft(), creq)

    def _start_lane(self, ctx: Context, lane_no: int, creq: ClientRequest) -> None:
        ts = self._next_timestamp(ctx)
        req = self.sign(Request(creq.command, ts, f"{self.node_id}/{lane_no}"))
        self.lanes[lane_no] = _Lane(req, creq)
        ctx.set_timer(f"lane:{lane_no}", self.cfg.request_timeout_ms / 1000)
        self.accept_request(ctx, req, direct=True)

    def _on_lane_timeout(self, ctx: Context, lane_no: int) -> None:
        """§4.1: a client that gets no reply in time broadcasts its request to all replicas."""
        if not 0 <= lane_no < len(self.lanes):
            return
        lane = self.lanes[lane_no]
        if lane is None:
            return
        lane.retries += 1
        ctx.broadcast(lane.request)
        self.accept_request(ctx, lane.request, direct=True)
        backoff = 2 ** min(lane.retries, 3)
        ctx.set_timer(f"lane:{lane_no}", self.cfg.request_timeout_ms / 1000 * backoff)

    def proxy_result(self, ctx: Context, sender: str, client: str, ts: int, result: Any) -> None:
        """A reply from ``sender`` (possibly this replica) for one of our lanes: answer the
        client once f + 1 distinct replicas sent matching results (§4.1)."""
        lane_no = _lane_number(client)
        if lane_no is None or lane_no >= len(self.lanes):
            return
        lane = self.lanes[lane_no]
        if lane is None or lane.request.timestamp != ts or sender in lane.votes:
            return
        key = encode(result)
        lane.votes[sender] = key
        lane.results.setdefault(key, result)
        if sum(1 for v in lane.votes.values() if v == key) < self.f + 1:
            return
        ctx.reply(lane.client_request, lane.results[key])
        ctx.cancel_timer(f"lane:{lane_no}")
        self.lanes[lane_no] = None
        if self.proxy_queue:
            self._start_lane(ctx, lane_no, self.proxy_queue.popleft())
        else:
            self.free_lanes.append(lane_no)

    def on_reply(self, ctx: Context, src: str, m: Reply) -> None:
        if key_owner(m.client) != self.node_id:
            return
        lane_no = _lane_number(m.client)
        if lane_no is None or lane_no >= len(self.lanes):
            return
        lane = self.lanes[lane_no]
        if lane is None or lane.request.timestamp != m.timestamp or m.sender in lane.votes:
            return  # not waiting for it: no need to verify
        if not self.verify(m):
            self.reject(m)
            return
        self.proxy_result(ctx, m.sender, m.client, m.timestamp, m.result)

    def on_request(self, ctx: Context, src: str, req: Request) -> None:
        """A request from its client (a proxy replica) or relayed by a backup (§4.1)."""
        direct = key_owner(req.client) == src
        if not direct:  # a relayed copy of a request we know already teaches nothing
            last = self.client_table.get(req.client)
            if last is not None and req.timestamp <= last[0]:
                return
            cur = self.pending.get(req.client)
            if cur is not None and cur.timestamp >= req.timestamp:
                return
        problem = self.request_problem(req)
        if problem is not None:
            self.drop(problem)
            return
        self.accept_request(ctx, req, direct=direct)

    def accept_request(self, ctx: Context, req: Request, *, direct: bool) -> None:
        """Take a validly signed request: re-send the reply of an executed timestamp, else
        remember it, order it (primary) or relay it to the primary and start the view-change
        timer (backup, §4.4)."""
        c, t = req.client, req.timestamp
        last = self.client_table.get(c)
        if last is not None and t <= last[0]:
            if t == last[0] and direct:
                self.send_reply(ctx, c, t, last[1])
            return
        cur = self.pending.get(c)
        if cur is not None and cur.timestamp > t:
            return
        self.pending[c] = req
        if not self.active:
            return
        if self.is_primary():
            self.enqueue(req)
        else:
            if direct:
                ctx.send(self.primary_of(self.view), req)
            self.arm_request_timer(ctx)

    def send_reply(self, ctx: Context, client: str, ts: int, result: Any) -> None:
        """<REPLY, v, t, c, i, r>_i to a proxy client (true clients get ``ctx.reply``)."""
        owner = key_owner(client)
        if owner == self.node_id:
            self.proxy_result(ctx, self.node_id, client, ts, result)
        elif owner in self.member_set:
            reply = Reply(self.view, ts, client, result, self.node_id)
            ctx.send(owner, self.sign(reply, to=owner))

    # ------------------------------------------------------------------ ordering (§4.2)
    def enqueue(self, req: Request) -> None:
        key = (req.client, req.timestamp)
        if key in self.queued or self.ordered.get(req.client, -1) >= req.timestamp:
            return
        self.queue.append(req)
        self.queued.add(key)
        self.needs_flush = True

    def _issue_batches(self, ctx: Context) -> None:
        """Cut the queue into pre-prepares of at most ``max_batch`` requests, while the window
        (H = h + L) and the in-flight bound allow (TOCS 2002 §5.1.4, batching)."""
        cfg = self.cfg
        while (
            self.queue
            and self.seq_next <= self.h + self.L
            and self.seq_next - 1 - self.last_executed < cfg.max_inflight
        ):
            batch: list[Request] = []
            while self.queue and len(batch) < cfg.max_batch:
                r = self.queue.popleft()
                c, t = r.client, r.timestamp
                self.queued.discard((c, t))
                last = self.client_table.get(c)
                if (last is not None and last[0] >= t) or self.ordered.get(c, -1) >= t:
                    continue
                self.ordered[c] = t
                batch.append(r)
            if not batch:
                break
            self._send_pre_prepare(ctx, tuple(batch))

    def _send_pre_prepare(self, ctx: Context, batch: tuple[Request, ...]) -> int:
        seq = self.seq_next
        self.seq_next += 1
        pp = self.sign(PrePrepare(self.view, seq, batch_digest(batch), batch, self.node_id))
        s = self.slot(seq)
        s.pre_prepare = pp
        self.persist_slot(ctx, s)
        ctx.broadcast(pp)
        self.advance(ctx, s)
        return seq

    def on_pre_prepare(self, ctx: Context, src: str, m: PrePrepare) -> None:
        """§4.2: a backup accepts a pre-prepare if it is signed by the primary of its current
        view, the digest is the batch's, it has not accepted another digest for (v, n), and
        h < n <= H."""
        if m.view != self.view:
            return
        if m.sender != self.primary_of(m.view):
            self.drop("not_primary")
            return
        if not self.in_window(m.seq):
            self.drop("outside_watermarks")
            return
        s = self.log.get(m.seq)
        if s is not None and s.view == m.view and s.pre_prepare is not None:
            if s.pre_prepare.digest != m.digest and self.verify(m):
                self.drop("conflicting_pre_prepare")
            return
        if len(m.requests) > self.cfg.max_batch:
            self.drop("batch_too_large")
            return
        if not self.verify(m):
            self.reject(m)
            return
        if batch_digest(m.requests) != m.digest:
            self.drop("bad_digest")
            return
        for r in m.requests:
            problem = self.request_problem(r)
            if problem is not None:
                self.drop("bad_request")
                return
        self.accept_pre_prepare(ctx, m)

    def accept_pre_prepare(self, ctx: Context, pp: PrePrepare) -> None:
        s = self.slot(pp.seq)
        s.pre_prepare = pp
        self.persist_slot(ctx, s)
        for r in pp.requests:
            last = self.client_table.get(r.client)
            cur = self.pending.get(r.client)
            if (last is None or last[0] < r.timestamp) and (
                cur is None or cur.timestamp <= r.timestamp
            ):
                self.pending[r.client] = r
        if self.active:
            self.send_prepare(ctx, s)
            self.arm_request_timer(ctx)
            self.advance(ctx, s)

    def send_prepare(self, ctx: Context, s: Slot) -> None:
        pp = s.pre_prepare
        if pp is None or s.prepare_sent or self.primary_of(s.view) == self.node_id:
            return
        p = self.sign(Prepare(s.view, s.seq, pp.digest, self.node_id))
        s.prepares[self.node_id] = p
        s.prepare_sent = True
        ctx.broadcast(p)

    def on_prepare(self, ctx: Context, src: str, m: Prepare) -> None:
        if m.view != self.view:
            return
        if m.sender == self.primary_of(m.view):
            self.drop("prepare_from_primary")
            return
        if not self.in_window(m.seq):
            return
        s = self.slot(m.seq)
        if s.prepared or m.sender in s.prepares:
            return  # nothing to learn: skip the verification
        if not self.verify(m):
            self.drop("bad_signature")
            return
        s.prepares[m.sender] = m
        self.advance(ctx, s)

    def on_commit(self, ctx: Context, src: str, m: Commit) -> None:
        if m.view != self.view or not self.in_window(m.seq):
            return
        s = self.slot(m.seq)
        if m.sender in s.commits or (s.committed is not None and not self.mac_mode):
            return  # MAC mode keeps late commits: certificates for others (checkpoint.py)
        if not self.verify(m):
            self.reject(m)
            return
        s.commits[m.sender] = m
        self.advance(ctx, s)

    def advance(self, ctx: Context, s: Slot) -> None:
        """prepared(m, v, n, i) then committed-local(m, v, n, i) (§4.2)."""
        if not self.active or s.view != self.view:
            return
        pp = s.pre_prepare
        if pp is None:
            return
        if not s.prepared:
            primary = self.primary_of(s.view)
            matching = [
                p for who, p in s.prepares.items() if p.digest == pp.digest and who != primary
            ]
            if len(matching) < self.quorum - 1:
                return
            matching.sort(key=_by_sender)
            s.prepared = True
            self.pset[s.seq] = PreparedCert(pp, tuple(matching[: self.quorum - 1]))
            self.prepared_log.append((s.view, s.seq, pp.digest))
            c = self.sign(Commit(s.view, s.seq, pp.digest, self.node_id))
            s.commits[self.node_id] = c
            self.persist_slot(ctx, s)
            ctx.broadcast(c)
        if s.committed is None:
            commits = [c for c in s.commits.values() if c.digest == pp.digest]
            if len(commits) < self.quorum:
                return
            commits.sort(key=_by_sender)
            s.committed = CommitCert(pp, tuple(commits[: self.quorum]))
            self.committed_log.append((s.view, s.seq, pp.digest))
            self.persist_slot(ctx, s)
            self._execute_ready(ctx)

    # ------------------------------------------------------------------ execution (§4.2)
    def _execute_ready(self, ctx: Context) -> None:
        """Execute committed batches in sequence order (§4.2: "after executing all requests
        with lower sequence numbers")."""
        progressed = False
        while True:
            s = self.log.get(self.last_executed + 1)
            if s is None or s.committed is None:
                break
            self._execute_batch(ctx, s.seq, s.committed.pre_prepare)
            progressed = True
        if progressed:
            self._after_execution(ctx)

    def execute_ready(self, ctx: Context) -> None:
        self._execute_ready(ctx)

    def _execute_batch(self, ctx: Context, seq: int, pp: PrePrepare) -> None:
        self.last_executed = seq
        fresh = False
        for req in pp.requests:
            c, t = req.client, req.timestamp
            last = self.client_table.get(c)
            if last is not None and t <= last[0]:
                if t < last[0]:
                    continue
                result = last[1]  # ordered twice: re-send the first execution's reply
            else:
                result = self.sm.apply(req.op)
                self.client_table[c] = (t, result)
                if self.keep_history:
                    self.applied.append((seq, req.op))
                fresh = True
            self.deliver_result(ctx, req.client, req.timestamp, result)
        if self.keep_history:
            self.executed.append(Executed(seq, pp.digest, pp.requests))
        if fresh and self.active:
            self.vc_backoff = 0
        if seq % self.K == 0:
            _ckpt.take_checkpoint(self, ctx, seq)

    def deliver_result(self, ctx: Context, client: str, ts: int, result: Any) -> None:
        """After executing (client, ts): forget it as pending, answer client commands waiting
        here, and send the reply to a proxy client."""
        cur = self.pending.get(client)
        if cur is not None and cur.timestamp <= ts:
            del self.pending[client]
        waits = self.waiting.get(client)
        if waits:
            for t in sorted(waits):
                if t > ts:
                    break
                answer = result if t == ts else {"error": "stale_request"}
                for creq in waits.pop(t):
                    ctx.reply(creq, answer)
            if not waits:
                del self.waiting[client]
        self.send_reply(ctx, client, ts, result)

    def _after_execution(self, ctx: Context) -> None:
        _ckpt.garbage_collect(self)
        if self.active and not self.is_primary():
            if self.pending:
                ctx.set_timer("view_change", self.request_timeout())
                self.vc_timer_armed = True
            elif self.vc_timer_armed:
                ctx.cancel_timer("view_change")
                self.vc_timer_armed = False
        if self.active and self.is_primary() and self.queue:
            self.needs_flush = True

    # ------------------------------------------------------------------ view-change timer
    def request_timeout(self) -> float:
        """§4.5.2: T, for a request and for the NEW-VIEW of the first view change; doubled
        for each further view change that did not lead to executing a request."""
        doublings = min(max(self.vc_backoff - 1, 0), 8)
        return self.cfg.view_change_timeout_ms / 1000 * float(2**doublings)

    def arm_request_timer(self, ctx: Context) -> None:
        """§4.4: a backup waiting for a request starts its timer if it is not running."""
        if not self.active or self.is_primary() or self.vc_timer_armed or not self.pending:
            return
        ctx.set_timer("view_change", self.request_timeout())
        self.vc_timer_armed = True

    # ------------------------------------------------------------------ message handlers
    def on_checkpoint(self, ctx: Context, src: str, m: Checkpoint) -> None:
        _ckpt.on_checkpoint(self, ctx, m)

    def on_view_change(self, ctx: Context, src: str, m: ViewChange) -> None:
        _vc.on_view_change(self, ctx, m)

    def on_new_view(self, ctx: Context, src: str, m: NewView) -> None:
        _vc.on_new_view(self, ctx, m)

    def on_status(self, ctx: Context, src: str, m: Status) -> None:
        _ckpt.on_status(self, ctx, m)

    def on_fetch(self, ctx: Context, src: str, m: Fetch) -> None:
        _ckpt.on_fetch(self, ctx, m)

    def on_state_transfer(self, ctx: Context, src: str, m: StateTransfer) -> None:
        _ckpt.on_state_transfer(self, ctx, m)

    # ------------------------------------------------------------------ public surface
    def leader(self) -> str | None:
        """The primary of the current view, or None during a view change."""
        return self.primary_of(self.view) if self.active else None

    def role(self) -> str:
        if not self.active:
            return "view-change"
        return "leader" if self.is_primary() else "backup"

    def submit(self, ctx: Context, command: Any) -> SubmitResult:
        """Start ordering ``command`` at the primary: ``(seq, view, is_primary)``; seq is -1
        while the request waits for the window or the in-flight bound."""
        if not (self.active and self.is_primary()):
            return SubmitResult(-1, self.view, False)
        problem = check_encodable(command)
        if problem is not None:
            return SubmitResult(-1, self.view, True, problem)
        ts = self._next_timestamp(ctx)
        req = self.sign(Request(command, ts, f"{self.node_id}/{self.cfg.proxy_lanes}"))
        self.pending[req.client] = req
        self.enqueue(req)
        first = self.seq_next
        self._issue_batches(ctx)
        self.needs_flush = bool(self.queue)
        for seq in range(first, self.seq_next):
            s = self.log.get(seq)
            if s is not None and s.pre_prepare is not None and req in s.pre_prepare.requests:
                return SubmitResult(seq, self.view, True)
        return SubmitResult(-1, self.view, True)

    def applied_commands(self) -> list[tuple[int, Any]]:
        """``(seq, op)`` of the requests executed since the last (re)start, in order."""
        return list(self.applied)

    def local_read(self, command: Any) -> Any:
        """A read of this replica's state machine, unordered (may be stale)."""
        return self.sm.read(command)

    def state_digest(self) -> tuple[int, str]:
        """(last executed sequence number, digest of the state machine)."""
        return (self.last_executed, self.sm.state_digest())

    def status(self) -> dict[str, Any]:
        return {
            "id": self.node_id,
            "role": self.role(),
            "view": self.view,
            "term": self.view,
            "leader": self.leader(),
            "primary": self.primary_of(self.view),
            "n": self.n,
            "f": self.f,
            "commit_index": self.last_executed,
            "last_executed": self.last_executed,
            "last_applied": self.last_executed,
            "low_watermark": self.h,
            "high_watermark": self.h + self.L,
            "stable_checkpoint": self.h,
            "log_size": len(self.log),
            "pending_requests": len(self.pending),
            "dropped": dict(sorted(self.dropped.items())),
            "verifications": self.verifications,
            "signatures": self.signatures,
            "auth": self.cfg.auth,
            "macs": self.macs,
        }


def reset_slot(s: Slot, view: int) -> None:
    """Move a slot to ``view``: votes of older views no longer count (the committed
    certificate, if any, stays)."""
    s.view = view
    s.pre_prepare = None
    s.prepares = {}
    s.commits = {}
    s.prepare_sent = False
    s.prepared = False


def _by_sender(msg: Prepare | Commit) -> str:
    return msg.sender


def _lane_number(client: str) -> int | None:
    _, sep, lane = client.partition("/")
    if not sep or not lane.isdigit():
        return None
    return int(lane)


_HANDLERS: dict[type, Any] = {
    Request: PbftNode.on_request,
    PrePrepare: PbftNode.on_pre_prepare,
    Prepare: PbftNode.on_prepare,
    Commit: PbftNode.on_commit,
    Reply: PbftNode.on_reply,
    Checkpoint: PbftNode.on_checkpoint,
    ViewChange: PbftNode.on_view_change,
    NewView: PbftNode.on_new_view,
    Status: PbftNode.on_status,
    Fetch: PbftNode.on_fetch,
    StateTransfer: PbftNode.on_state_transfer,
}

__all__ = ["BYZANTINE_BEHAVIOURS", "Executed", "PbftNode", "Slot", "SubmitResult"]
