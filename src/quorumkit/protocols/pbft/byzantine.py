"""Byzantine behaviours of PBFT replicas, selectable by name (issue 7, deliverable 6).

Rules of this module:

1. A behaviour is a subclass of :class:`~quorumkit.protocols.pbft.node.PbftNode` with
   ``is_byzantine = True`` (invariant checkers, convergence and agreement checks skip it);
   :data:`BEHAVIOURS` maps each name of ``PbftNode.byzantine_behaviours`` to its class, which
   ``PbftNode.byzantine_class`` imports lazily.
2. Behaviours reuse the correct replica's logic and lie at its edges: every input is handled by
   the honest core with a :class:`LyingContext` wrapped around the driver's context. The wrapper
   hands every send and broadcast to :meth:`ByzantineNode.emit` and every client answer to
   :meth:`ByzantineNode.answer`, where a behaviour alters, duplicates, withholds or delays it.
   Some behaviours also filter inputs (:meth:`ByzantineNode.intercept`). Only ``twins`` runs two
   whole replicas.
3. A byzantine replica holds its own private key only. Altered messages of its own are re-signed
   with it (``self.sign``), so they verify; a message claiming another replica or client carries
   a signature that cannot verify.
4. Every misbehaviour is counted in ``lies`` and traced as ``ctx.trace("lie", kind=...,
   detail=...)`` (the report draws it as a diamond on the replica's lane). The counter is kept in
   the replica's storage (key ``byzantine/lies``), so it survives crashes and restarts. A
   broadcast altered once is one lie.
5. Deterministic: randomness comes from ``ctx.rng``, time from ``ctx.now`` and timers (named
   ``byz:...``, handled here and never seen by the honest core).

Behaviours:

``silent``          runs the protocol but sends nothing and answers nobody.
``equivocate``      two faces, after a fixed split of its peers into sides A and B: as primary it
                    sends side B another pre-prepare (another batch of real requests, another
                    digest) for a sequence number, each side first its own face with a commit
                    vote for it and then the other face; as backup its prepares and commits to
                    side B carry another digest; its view-change messages to side B hide its
                    prepared certificates.
``wrong-digest``    its pre-prepares, prepares, commits and new-view pre-prepares carry wrong
                    digests (re-signed).
``forge``           copies of its messages claiming another replica as sender; client requests
                    claiming a client, inside its pre-prepares and relayed alone; view-change
                    messages with a prepared certificate it made up. It cannot sign for them.
``replay``          re-sends old messages, its own and those it received (signed by others),
                    later and in other views; as primary it puts old client requests back into
                    new batches.
``stale-view``      refuses to move views (ignores view-change and new-view messages, never starts
                    a view change) and keeps sending messages of its old view.
``bad-checkpoint``  checkpoints with a wrong state digest, checkpoints far ahead of what it
                    executed, and state transfers whose state does not match its proof.
``wrong-reply``     lies to clients: wrong results in ``ctx.reply`` and in REPLY messages.
``delay``           holds every outgoing message and answer for a while (timers) before sending.
``twins``           two instances of one identity with the same keys (the Twins method, Bano et
                    al. 2022): each correct peer and each client talks to one of them, after a
                    fixed split; both instances sign validly, and where they sign different
                    things for one slot that is counted as a lie.
"""

from __future__ import annotations

import dataclasses
import heapq
from collections.abc import Sequence
from typing import Any, ClassVar

from quorumkit.errors import ConfigError
from quorumkit.protocol import ClientRequest, Context, Storage, StoredState
from quorumkit.protocols.pbft.crypto import digest, key_owner, signing_bytes
from quorumkit.protocols.pbft.messages import (
    NULL_DIGEST,
    Checkpoint,
    Commit,
    Fetch,
    NewView,
    Prepare,
    PreparedCert,
    PrePrepare,
    Reply,
    Request,
    StateTransfer,
    Status,
    ViewChange,
    batch_digest,
)
from quorumkit.protocols.pbft.node import PbftNode
from quorumkit.protocols.raft.node import SubmitResult

#: storage key of the lie counter (survives restarts)
LIES_KEY = "byzantine/lies"
#: prefix of the timers a behaviour sets for itself
TIMER_PREFIX = "byz:"
#: marks the values a ``wrong-reply`` replica invents, so tests can look for them
LIE_MARK = "~lie"
#: the value of the client requests ``forge`` makes up
FORGED_VALUE = "~forged"

Dests = tuple[str, ...]


def describe(msg: Any) -> str:
    """A short human description of a PBFT message (for lie traces)."""
    name = type(msg).__name__
    if isinstance(msg, PrePrepare):
        return (
            f"PrePrepare v{msg.view} n={msg.seq} d={msg.digest.hex()[:8]} "
            f"({len(msg.requests)} requests)"
        )
    if isinstance(msg, (Prepare, Commit)):
        return f"{name} v{msg.view} n={msg.seq} d={msg.digest.hex()[:8]}"
    if isinstance(msg, Checkpoint):
        return f"Checkpoint n={msg.seq} d={msg.state_digest.hex()[:8]}"
    if isinstance(msg, ViewChange):
        return f"ViewChange to v{msg.new_view} h={msg.stable_seq} P={len(msg.prepared)}"
    if isinstance(msg, NewView):
        return f"NewView v{msg.view} O={len(msg.pre_prepares)}"
    if isinstance(msg, Reply):
        return f"Reply to {msg.client} t={msg.timestamp}"
    if isinstance(msg, Request):
        return f"Request of {msg.client} t={msg.timestamp}"
    if isinstance(msg, Status):
        return f"Status v{msg.view} executed={msg.last_executed}"
    if isinstance(msg, Fetch):
        return f"Fetch after {msg.last_executed}"
    if isinstance(msg, StateTransfer):
        return f"StateTransfer n={msg.seq} certs={len(msg.certs)}"
    return name


def mangle(d: bytes, why: str) -> bytes:
    """A digest that is not ``d`` (and not any batch's, in practice)."""
    return digest(why.encode() + b"/" + d)


def wrong_result(result: Any) -> Any:
    """A plausible wrong answer, the same for every liar (so colluding liars agree)."""
    if isinstance(result, bool):
        return not result
    if isinstance(result, int):
        return result + 1
    if isinstance(result, str):
        return result + LIE_MARK
    if isinstance(result, bytes):
        return result + LIE_MARK.encode()
    if isinstance(result, dict) and "error" in result:
        return None  # claim success
    return LIE_MARK


def _names(dsts: Sequence[str]) -> str:
    return ",".join(dsts)


def message_view(msg: Any) -> int | None:
    """The view a message speaks for (None: it speaks for none)."""
    if isinstance(msg, (PrePrepare, Prepare, Commit, NewView, Status, Reply)):
        return msg.view
    if isinstance(msg, ViewChange):
        return msg.new_view
    return None


# --------------------------------------------------------------------------- the wrapper


class LyingContext(Context):
    """The context the honest core of a byzantine replica sees: timers, storage, time and
    traces go to the driver's context; sends, broadcasts and replies go to the behaviour."""

    def __init__(self, liar: ByzantineNode, inner: Context) -> None:
        self.liar = liar
        self.inner = inner
        self.node_id = inner.node_id
        self.members = inner.members
        self.storage = inner.storage
        self.rng = inner.rng
        self.peers: Dests = tuple(m for m in self.members if m != self.node_id)

    def now(self) -> float:
        return self.inner.now()

    def send(self, dst: str, msg: Any) -> None:
        self.liar.emit(self.inner, (dst,), msg)

    def broadcast(self, msg: Any) -> None:
        self.liar.emit(self.inner, self.peers, msg)

    def send_early(self, dst: str, msg: Any) -> None:
        self.send(dst, msg)

    def set_timer(self, name: str, delay_s: float) -> None:
        self.inner.set_timer(name, delay_s)

    def cancel_timer(self, name: str) -> None:
        self.inner.cancel_timer(name)

    def reply(self, request: ClientRequest, result: Any) -> None:
        self.liar.answer(self.inner, request, result)

    def reply_early(self, request: ClientRequest, result: Any) -> None:
        self.reply(request, result)

    def when_durable(self, token: Any) -> bool:
        return self.inner.when_durable(token)

    def trace(self, event: str, **fields: Any) -> None:
        self.inner.trace(event, **fields)


# --------------------------------------------------------------------------- the base


class ByzantineNode(PbftNode):
    """A replica that runs the correct logic behind a :class:`LyingContext` (rule 2).

    Subclasses override the hooks :meth:`emit`, :meth:`answer`, :meth:`intercept`,
    :meth:`begin` and :meth:`own_timer`, and call :meth:`lie` for each misbehaviour.
    """

    is_byzantine = True
    behaviour: ClassVar[str] = ""

    def __init__(self, node_id: str, members: Any, config: Any = None) -> None:
        super().__init__(node_id, members, config)
        self.lies = 0
        self.lie_kinds: dict[str, int] = {}
        self.peers: Dests = tuple(m for m in self.members if m != node_id)
        self._inner_ctx: Context | None = None
        self._lying: LyingContext | None = None

    # -- plumbing ---------------------------------------------------------------------------
    def lying(self, ctx: Context) -> Context:
        """The :class:`LyingContext` around the driver's ``ctx`` (made once per context)."""
        if self._lying is None or self._inner_ctx is not ctx:
            self._inner_ctx = ctx
            self._lying = LyingContext(self, ctx)
        return self._lying

    def lie(self, ctx: Context, kind: str, detail: str) -> None:
        """Count and trace one misbehaviour (rule 4)."""
        self.lies += 1
        self.lie_kinds[kind] = self.lie_kinds.get(kind, 0) + 1
        ctx.storage.put(LIES_KEY, self.lies, sync=False)
        ctx.trace("lie", kind=kind, detail=detail)

    @staticmethod
    def deliver(ctx: Context, dsts: Sequence[str], msg: Any) -> None:
        """Really send ``msg`` to each of ``dsts`` (through the driver's context)."""
        for dst in dsts:
            ctx.send(dst, msg)

    def resign(self, msg: Any, **changes: Any) -> Any:
        """``msg`` with ``changes``, signed with this replica's own key (rule 3)."""
        return self.sign(dataclasses.replace(msg, signature=b"", **changes))

    def _restore_lies(self, stored: StoredState) -> None:
        value = stored.hard.get(LIES_KEY, 0)
        self.lies = value if isinstance(value, int) and not isinstance(value, bool) else 0

    # -- hooks ------------------------------------------------------------------------------
    def begin(self, ctx: Context) -> None:
        """After (re)start: arm the behaviour's own timers."""

    def intercept(self, ctx: Context, src: str, msg: Any) -> bool:
        """See an incoming message first; True swallows it (the core never sees it)."""
        return False

    def own_timer(self, ctx: Context, name: str) -> None:
        """Timer ``byz:<name>`` fired."""

    def emit(self, ctx: Context, dsts: Dests, msg: Any) -> None:
        """The core sends ``msg`` to ``dsts`` (one destination, or every peer for a
        broadcast). Default: send it unchanged."""
        self.deliver(ctx, dsts, msg)

    def answer(self, ctx: Context, request: ClientRequest, result: Any) -> None:
        """The core answers a client request. Default: unchanged."""
        ctx.reply(request, result)

    # -- inputs, all through the wrapper ----------------------------------------------------
    def on_start(self, ctx: Context) -> None:
        super().on_start(self.lying(ctx))
        self.begin(ctx)

    def on_recover(self, ctx: Context, stored: StoredState) -> None:
        self._restore_lies(stored)
        super().on_recover(self.lying(ctx), stored)
        self.begin(ctx)

    def on_message(self, ctx: Context, src: str, msg: Any) -> None:
        if self.intercept(ctx, src, msg):
            return
        super().on_message(self.lying(ctx), src, msg)

    def on_timer(self, ctx: Context, name: str) -> None:
        if name.startswith(TIMER_PREFIX):
            self.own_timer(ctx, name[len(TIMER_PREFIX) :])
            return
        super().on_timer(self.lying(ctx), name)

    def on_client(self, ctx: Context, request: ClientRequest) -> None:
        super().on_client(self.lying(ctx), request)

    def on_flush(self, ctx: Context) -> None:
        super().on_flush(self.lying(ctx))

    def on_persisted(self, ctx: Context, token: Any) -> None:
        super().on_persisted(self.lying(ctx), token)

    def submit(self, ctx: Context, command: Any) -> SubmitResult:
        return super().submit(self.lying(ctx), command)

    def status(self) -> dict[str, Any]:
        out = super().status()
        out["byzantine"] = self.behaviour
        out["lies"] = self.lies
        out["lie_kinds"] = dict(sorted(self.lie_kinds.items()))
        return out


# --------------------------------------------------------------------------- behaviours


class Silent(ByzantineNode):
    """Runs the protocol and withholds every message and every answer."""

    behaviour = "silent"

    def emit(self, ctx: Context, dsts: Dests, msg: Any) -> None:
        self.lie(ctx, "silence", f"withheld {describe(msg)} from {_names(dsts)}")

    def answer(self, ctx: Context, request: ClientRequest, result: Any) -> None:
        self.lie(ctx, "silence", f"left client request #{request.request_id} unanswered")


class Equivocate(ByzantineNode):
    """Shows side A of its peers one face and side B another (module docstring)."""

    behaviour = "equivocate"

    def __init__(self, node_id: str, members: Any, config: Any = None) -> None:
        super().__init__(node_id, members, config)
        half = (len(self.peers) + 1) // 2
        self.side_a: frozenset[str] = frozenset(self.peers[:half])
        self.side_b: frozenset[str] = frozenset(self.peers[half:])
        #: (view, seq) -> the digest side B was told, and the pre-prepare it got (primary)
        self.faces: dict[tuple[int, int], bytes] = {}
        self.alt_pre_prepares: dict[tuple[int, int], PrePrepare] = {}

    def alt_batch(self, batch: tuple[Request, ...]) -> tuple[Request, ...] | None:
        """Another batch of real requests for side B: the same requests in another order, else
        another request waiting here; None while there is none (the primary then waits for a
        chance to equivocate with requests that clients really sent)."""
        if len(batch) >= 2:
            return tuple(reversed(batch))
        inside = {(r.client, r.timestamp) for r in batch}
        others = sorted(
            (r for r in self.pending.values() if (r.client, r.timestamp) not in inside),
            key=lambda r: (r.client, r.timestamp),
        )
        return (others[0],) if others else None

    def _forget_old(self) -> None:
        if len(self.faces) > 4 * self.L:
            low = self.h
            self.faces = {k: d for k, d in self.faces.items() if k[1] > low}
            self.alt_pre_prepares = {k: p for k, p in self.alt_pre_prepares.items() if k[1] > low}

    def emit(self, ctx: Context, dsts: Dests, msg: Any) -> None:
        b = tuple(d for d in dsts if d in self.side_b)
        if not b or not isinstance(msg, (PrePrepare, Prepare, Commit, ViewChange)):
            self.deliver(ctx, dsts, msg)
            return
        a = tuple(d for d in dsts if d not in self.side_b)
        if isinstance(msg, ViewChange):
            if not msg.prepared:
                self.deliver(ctx, dsts, msg)
                return
            hidden = self.resign(msg, prepared=())
            self.deliver(ctx, a, msg)
            self.deliver(ctx, b, hidden)
            self.lie(
                ctx,
                "equivocate",
                f"{describe(msg)} to {_names(a)}; without its {len(msg.prepared)} prepared "
                f"certificates to {_names(b)}",
            )
            return
        key = (msg.view, msg.seq)
        self._forget_old()
        if isinstance(msg, PrePrepare):
            alt = self.alt_pre_prepares.get(key)
            if alt is None:
                batch = self.alt_batch(msg.requests)
                if batch is None:
                    self.deliver(ctx, dsts, msg)  # nothing else to show side B yet
                    return
                alt = self.resign(msg, requests=batch, digest=batch_digest(batch))
                self.alt_pre_prepares[key] = alt
                self.faces[key] = alt.digest
            # each side gets the primary's commit vote for its face first, then its face: a
            # backup that needs no other vote (n <= 3f) prepares, commits and executes at once
            # (then the other face too, to confuse: a correct backup keeps the first and drops
            # the second as conflicting)
            me = self.node_id
            if a:
                self.deliver(ctx, a, self.sign(Commit(msg.view, msg.seq, msg.digest, me)))
                self.deliver(ctx, a, msg)
            self.deliver(ctx, b, self.sign(Commit(msg.view, msg.seq, alt.digest, me)))
            self.deliver(ctx, b, alt)
            self.deliver(ctx, a, alt)
            self.deliver(ctx, b, msg)
            self.lie(
                ctx,
                "equivocate",
                f"{describe(msg)} to {_names(a) or 'nobody'}; {describe(alt)} to {_names(b)}",
            )
            return
        alt_digest = self.faces.get(key)
        if alt_digest is None or alt_digest == msg.digest:
            alt_digest = NULL_DIGEST if msg.digest != NULL_DIGEST else mangle(msg.digest, "face")
            self.faces[key] = alt_digest
        other = self.resign(msg, digest=alt_digest)
        self.deliver(ctx, a, msg)
        self.deliver(ctx, b, other)
        self.lie(
            ctx,
            "equivocate",
            f"{describe(msg)} to {_names(a) or 'nobody'}; d={alt_digest.hex()[:8]} to {_names(b)}",
        )


class WrongDigest(ByzantineNode):
    """Its ordering messages carry digests that match no batch."""

    behaviour = "wrong-digest"

    def emit(self, ctx: Context, dsts: Dests, msg: Any) -> None:
        if isinstance(msg, (PrePrepare, Prepare, Commit)):
            bad = self.resign(msg, digest=mangle(msg.digest, "wrong-digest"))
            self.lie(ctx, "wrong-digest", f"{describe(msg)} sent as d={bad.digest.hex()[:8]}")
            self.deliver(ctx, dsts, bad)
            return
        if isinstance(msg, NewView) and msg.pre_prepares:
            o = tuple(
                self.resign(pp, digest=mangle(pp.digest, "wrong-digest")) for pp in msg.pre_prepares
            )
            self.lie(ctx, "wrong-digest", f"{describe(msg)} with wrong digests in O")
            self.deliver(ctx, dsts, self.resign(msg, pre_prepares=o))
            return
        self.deliver(ctx, dsts, msg)


class Forge(ByzantineNode):
    """Claims to be others: replicas (sender fields) and clients (requests, certificates)."""

    behaviour = "forge"

    def __init__(self, node_id: str, members: Any, config: Any = None) -> None:
        super().__init__(node_id, members, config)
        self.forged = 0

    def forged_request(self) -> Request:
        """A request claiming client ``c1`` (the simulator's first client), with a timestamp
        that would lock the real client out if it were believed; signed with our own key."""
        self.forged += 1
        op = ("put", f"k{self.forged % 5}", f"{FORGED_VALUE}{self.forged}")
        return self.sign(Request(op, 10**9 + self.forged, "c1"))

    def _victim(self, dst: str) -> str:
        """Someone to impersonate towards ``dst``: the primary if possible, else another."""
        primary = self.primary_of(self.view)
        if primary not in (dst, self.node_id):
            return primary
        for m in self.peers:
            if m != dst:
                return m
        return dst

    def emit(self, ctx: Context, dsts: Dests, msg: Any) -> None:
        out = msg
        if isinstance(msg, PrePrepare):
            fake = self.forged_request()
            batch = (*msg.requests[: self.cfg.max_batch - 1], fake)
            out = self.resign(msg, requests=batch, digest=batch_digest(batch))
            self.lie(ctx, "forge", f"{describe(msg)} carries a request forged as {fake.client}")
        elif isinstance(msg, ViewChange):
            cert = self._forged_cert(msg)
            if cert is not None:
                out = self.resign(msg, prepared=(*msg.prepared, cert))
                self.lie(
                    ctx,
                    "forge",
                    f"{describe(msg)} with a prepared certificate for n={cert.pre_prepare.seq} "
                    f"claiming {_names([p.sender for p in cert.prepares])}",
                )
        self.deliver(ctx, dsts, out)
        if isinstance(msg, (Prepare, Commit, Checkpoint, ViewChange, Status)):
            # the same message claiming another replica as its sender (our signature)
            for dst in dsts:
                victim = self._victim(dst)
                self.deliver(ctx, (dst,), self.resign(msg, sender=victim))
            self.lie(ctx, "forge", f"{describe(msg)} sent again as if from other replicas")
        if isinstance(msg, Status):
            fake = self.forged_request()
            self.deliver(ctx, dsts, fake)
            self.lie(ctx, "forge", f"relayed a request forged as {fake.client}")

    def _forged_cert(self, vc: ViewChange) -> PreparedCert | None:
        """A prepared certificate of the view before ``vc``'s, made up by us: the pre-prepare
        claims that view's primary and the prepares claim the other replicas."""
        if vc.new_view < 1:
            return None
        used = {c.pre_prepare.seq for c in vc.prepared}
        seq = max(used, default=vc.stable_seq) + 1
        if seq > vc.stable_seq + self.L:
            return None
        view = vc.new_view - 1
        primary = self.primary_of(view)
        batch = (self.forged_request(),)
        pp = self.sign(PrePrepare(view, seq, batch_digest(batch), batch, primary))
        backers = [m for m in self.members if m != primary][: self.quorum - 1]
        prepares = tuple(self.sign(Prepare(view, seq, pp.digest, m)) for m in backers)
        return PreparedCert(pp, prepares)


class Replay(ByzantineNode):
    """Re-sends old messages, later and in other views (module docstring)."""

    behaviour = "replay"
    #: old messages kept (a uniform sample of everything seen: reservoir sampling)
    capacity: ClassVar[int] = 256
    interval_s: ClassVar[tuple[float, float]] = (0.05, 0.2)

    def __init__(self, node_id: str, members: Any, config: Any = None) -> None:
        super().__init__(node_id, members, config)
        self.tape: list[Any] = []
        self.seen = 0

    def record(self, ctx: Context, msg: Any) -> None:
        self.seen += 1
        if len(self.tape) < self.capacity:
            self.tape.append(msg)
            return
        j = ctx.rng.randrange(self.seen)
        if j < self.capacity:
            self.tape[j] = msg

    def begin(self, ctx: Context) -> None:
        ctx.set_timer(TIMER_PREFIX + "replay", ctx.rng.uniform(*self.interval_s))

    def intercept(self, ctx: Context, src: str, msg: Any) -> bool:
        self.record(ctx, msg)
        return False

    def own_timer(self, ctx: Context, name: str) -> None:
        if name != "replay":
            return
        rng = ctx.rng
        if self.tape and self.peers:
            for _ in range(2):
                old = self.tape[rng.randrange(len(self.tape))]
                dst = self.peers[rng.randrange(len(self.peers))]
                self.deliver(ctx, (dst,), old)
                whose = getattr(old, "sender", "?")
                self.lie(ctx, "replay", f"replayed {describe(old)} (signed by {whose}) to {dst}")
        self.begin(ctx)

    def old_requests(self, ctx: Context, batch: tuple[Request, ...]) -> list[Request]:
        inside = {(r.client, r.timestamp) for r in batch}
        pool: list[Request] = []
        for m in self.tape:
            if isinstance(m, Request):
                pool.append(m)
            elif isinstance(m, PrePrepare):
                pool.extend(m.requests)
        fresh = [r for r in pool if (r.client, r.timestamp) not in inside]
        if not fresh:
            return []
        picked = [fresh[ctx.rng.randrange(len(fresh))] for _ in range(2)]
        out: list[Request] = []
        for r in picked:
            if r not in out:
                out.append(r)
        return out

    def emit(self, ctx: Context, dsts: Dests, msg: Any) -> None:
        if isinstance(msg, PrePrepare) and msg.requests:
            old = self.old_requests(ctx, msg.requests)
            room = self.cfg.max_batch - len(msg.requests)
            old = old[: max(room, 0)]
            if old:
                batch = (*old, *msg.requests)
                msg = self.resign(msg, requests=batch, digest=batch_digest(batch))
                self.lie(
                    ctx,
                    "replay",
                    f"{describe(msg)} re-orders old requests of "
                    f"{_names([f'{r.client}@{r.timestamp}' for r in old])}",
                )
        self.record(ctx, msg)
        self.deliver(ctx, dsts, msg)


class StaleView(ByzantineNode):
    """Stays in its view: refuses view changes and keeps speaking for its old view."""

    behaviour = "stale-view"

    def __init__(self, node_id: str, members: Any, config: Any = None) -> None:
        super().__init__(node_id, members, config)
        #: the highest view the others were seen in
        self.others_view = 0

    def intercept(self, ctx: Context, src: str, msg: Any) -> bool:
        view = message_view(msg)
        if view is not None and view > self.others_view and src in self.member_set:
            self.others_view = view
        if isinstance(msg, (ViewChange, NewView)) and (view or 0) > self.view:
            self.lie(ctx, "stale-view", f"ignored {describe(msg)} from {src}")
            return True
        if isinstance(msg, StateTransfer) and msg.new_view is not None:
            if msg.new_view.view > self.view:
                self.lie(ctx, "stale-view", f"ignored the view {msg.new_view.view} of {src}")
                return True
        return False

    def on_timer(self, ctx: Context, name: str) -> None:
        if name == "view_change":
            self.vc_timer_armed = False
            self.lie(ctx, "stale-view", f"refused to leave view {self.view}")
            return
        super().on_timer(ctx, name)

    def emit(self, ctx: Context, dsts: Dests, msg: Any) -> None:
        view = message_view(msg)
        if view is not None and view < self.others_view:
            self.lie(
                ctx,
                "stale-view",
                f"{describe(msg)} for view {view}, the others are in view {self.others_view}",
            )
        self.deliver(ctx, dsts, msg)


class BadCheckpoint(ByzantineNode):
    """Checkpoints with wrong state digests, far-ahead checkpoints, corrupt state transfers."""

    behaviour = "bad-checkpoint"

    def emit(self, ctx: Context, dsts: Dests, msg: Any) -> None:
        if isinstance(msg, Checkpoint):
            bad = self.resign(msg, state_digest=mangle(msg.state_digest, "bad-checkpoint"))
            self.deliver(ctx, dsts, bad)
            ahead_seq = msg.seq + self.K * (self.L // self.K + 1)
            ahead = self.sign(
                Checkpoint(ahead_seq, mangle(msg.state_digest, "ahead"), self.node_id)
            )
            self.deliver(ctx, dsts, ahead)
            self.lie(
                ctx,
                "bad-checkpoint",
                f"{describe(msg)} sent as d={bad.state_digest.hex()[:8]}, and a checkpoint "
                f"n={ahead_seq} it never reached",
            )
            return
        if isinstance(msg, StateTransfer) and msg.state:
            bad_state = msg.state + b"\x00"
            self.deliver(ctx, dsts, self.resign(msg, state=bad_state))
            self.lie(
                ctx, "bad-checkpoint", f"{describe(msg)} with a state its proof does not match"
            )
            return
        self.deliver(ctx, dsts, msg)


class WrongReply(ByzantineNode):
    """Orders correctly and lies to clients."""

    behaviour = "wrong-reply"

    def answer(self, ctx: Context, request: ClientRequest, result: Any) -> None:
        wrong = wrong_result(result)
        self.lie(
            ctx, "wrong-reply", f"answered #{request.request_id} {wrong!r:.40} not {result!r:.40}"
        )
        ctx.reply(request, wrong)

    def emit(self, ctx: Context, dsts: Dests, msg: Any) -> None:
        if isinstance(msg, Reply):
            wrong = wrong_result(msg.result)
            self.lie(ctx, "wrong-reply", f"{describe(msg)}: {wrong!r:.40} not {msg.result!r:.40}")
            msg = self.resign(msg, result=wrong)
        self.deliver(ctx, dsts, msg)


class Delay(ByzantineNode):
    """Holds every outgoing message and answer for a while, released by a timer."""

    behaviour = "delay"

    def __init__(self, node_id: str, members: Any, config: Any = None) -> None:
        super().__init__(node_id, members, config)
        #: (release time, order, ("send", dsts, msg) or ("reply", request, result))
        self.held: list[tuple[float, int, tuple[Any, ...]]] = []
        self.held_count = 0

    def hold_s(self, ctx: Context) -> float:
        """A third to four thirds of the view-change timeout."""
        t = self.cfg.view_change_timeout_ms / 1000
        return ctx.rng.uniform(t / 3, 4 * t / 3)

    def _hold(self, ctx: Context, item: tuple[Any, ...], what: str) -> None:
        wait = self.hold_s(ctx)
        heapq.heappush(self.held, (ctx.now() + wait, self.held_count, item))
        self.held_count += 1
        self.lie(ctx, "delay", f"held {what} for {wait * 1000:.0f} ms")
        ctx.set_timer(TIMER_PREFIX + "delay", max(self.held[0][0] - ctx.now(), 0.0))

    def emit(self, ctx: Context, dsts: Dests, msg: Any) -> None:
        self._hold(ctx, ("send", dsts, msg), describe(msg))

    def answer(self, ctx: Context, request: ClientRequest, result: Any) -> None:
        self._hold(ctx, ("reply", request, result), f"the answer to #{request.request_id}")

    def own_timer(self, ctx: Context, name: str) -> None:
        if name != "delay" or not self.held:
            return
        # release the head (this timer was set for it) and everything due within a millisecond
        # (a node with a fast clock sees its timers fire early)
        due = ctx.now() + 0.001
        first = True
        while self.held and (first or self.held[0][0] <= due):
            first = False
            _, _, item = heapq.heappop(self.held)
            if item[0] == "send":
                self.deliver(ctx, item[1], item[2])
            else:
                ctx.reply(item[1], item[2])
        if self.held:
            ctx.set_timer(TIMER_PREFIX + "delay", max(self.held[0][0] - ctx.now(), 0.0))


# --------------------------------------------------------------------------- twins


TWIN_PREFIX = "twin1/"


class _PrefixStorage(Storage):
    """Twin 1's storage: its hard state under ``twin1/`` keys of the replica's storage, its
    snapshot as the hard value ``twin1/snapshot``."""

    def __init__(self, inner: Storage, prefix: str = TWIN_PREFIX) -> None:
        self.inner = inner
        self.prefix = prefix

    def put(self, key: str, value: Any, *, sync: bool = True) -> None:
        self.inner.put(self.prefix + key, value, sync=sync)

    def log_append(self, index: int, entries: Sequence[Any], *, sync: bool = True) -> None:
        raise ConfigError("a PBFT twin keeps no log in storage")

    def log_truncate(self, index: int, *, sync: bool = True) -> None:
        raise ConfigError("a PBFT twin keeps no log in storage")

    def save_snapshot(self, snapshot: Any, upto_index: int, *, sync: bool = True) -> None:
        self.inner.put(self.prefix + "snapshot", (snapshot, upto_index), sync=sync)

    def load(self) -> StoredState:
        return split_stored(self.inner.load())[1]


def split_stored(stored: StoredState) -> tuple[StoredState, StoredState]:
    """The stored states of twin 0 (everything not under ``twin1/``) and twin 1."""
    hard0: dict[str, Any] = {}
    hard1: dict[str, Any] = {}
    for key, value in stored.hard.items():
        if key.startswith(TWIN_PREFIX):
            hard1[key[len(TWIN_PREFIX) :]] = value
        else:
            hard0[key] = value
    snap = hard1.pop("snapshot", None)
    snap1 = snap[0] if isinstance(snap, tuple) and len(snap) == 2 else None
    first = StoredState(hard0, stored.log_start, list(stored.log), stored.snapshot)
    return first, StoredState(hard1, 1, [], snap1)


class _TwinContext(Context):
    """The context of one twin: its sends go through :meth:`Twins.twin_emit`, its timers are
    named ``twin<i>:<name>``, twin 1 stores under ``twin1/`` and traces as ``twin1 <event>``."""

    def __init__(self, owner: Twins, index: int, inner: Context) -> None:
        self.owner = owner
        self.index = index
        self.inner = inner
        self.node_id = inner.node_id
        self.members = inner.members
        self.storage = inner.storage if index == 0 else _PrefixStorage(inner.storage)
        self.rng = inner.rng
        self.peers: Dests = tuple(m for m in self.members if m != self.node_id)
        self.prefix = f"twin{index}:"

    def now(self) -> float:
        return self.inner.now()

    def send(self, dst: str, msg: Any) -> None:
        self.owner.twin_emit(self.inner, self.index, (dst,), msg)

    def broadcast(self, msg: Any) -> None:
        self.owner.twin_emit(self.inner, self.index, self.peers, msg)

    def send_early(self, dst: str, msg: Any) -> None:
        self.send(dst, msg)

    def set_timer(self, name: str, delay_s: float) -> None:
        self.inner.set_timer(self.prefix + name, delay_s)

    def cancel_timer(self, name: str) -> None:
        self.inner.cancel_timer(self.prefix + name)

    def reply(self, request: ClientRequest, result: Any) -> None:
        self.inner.reply(request, result)

    def reply_early(self, request: ClientRequest, result: Any) -> None:
        self.reply(request, result)

    def when_durable(self, token: Any) -> bool:
        return self.inner.when_durable(token)

    def trace(self, event: str, **fields: Any) -> None:
        self.inner.trace(event if self.index == 0 else f"twin1 {event}", **fields)


class Twins(ByzantineNode):
    """Two correct replicas with one identity and one key (module docstring).

    Each peer belongs to one side (the first half of the other members to twin 0, the rest to
    twin 1): its messages reach that twin only, and that twin's messages reach it only. Client
    requests, direct or relayed, are split by client. Each twin alone is a correct replica;
    together they sign conflicting messages for one identity, which is what the other replicas
    must survive.
    """

    behaviour = "twins"

    def __init__(self, node_id: str, members: Any, config: Any = None) -> None:
        super().__init__(node_id, members, config)
        half = (len(self.peers) + 1) // 2
        self.sides: tuple[frozenset[str], frozenset[str]] = (
            frozenset(self.peers[:half]),
            frozenset(self.peers[half:]),
        )
        self.twins: tuple[PbftNode, PbftNode] = (
            PbftNode(node_id, members, self.cfg),
            PbftNode(node_id, members, self.cfg),
        )
        self._twin_inner: Context | None = None
        self._twin_ctxs: tuple[_TwinContext, _TwinContext] | None = None
        #: what each twin signed per slot: key -> {twin: digest}
        self.signed: dict[tuple[Any, ...], dict[int, bytes]] = {}

    def _ctxs(self, ctx: Context) -> tuple[_TwinContext, _TwinContext]:
        if self._twin_ctxs is None or self._twin_inner is not ctx:
            self._twin_inner = ctx
            self._twin_ctxs = (_TwinContext(self, 0, ctx), _TwinContext(self, 1, ctx))
        return self._twin_ctxs

    def side_of(self, src: str) -> int:
        return 1 if src in self.sides[1] else 0

    def client_side(self, client: str) -> int:
        """Which twin hears client ``client`` (a fixed split): a proxy lane ``"n2/7"`` goes with
        its replica's side, a true client by its name."""
        owner = key_owner(client)
        if owner in self.member_set and owner != self.node_id:
            return self.side_of(owner)
        return sum(client.encode()) % 2

    def _settle(self) -> None:
        self.needs_flush = any(t.needs_flush for t in self.twins)

    # -- inputs -----------------------------------------------------------------------------
    def on_start(self, ctx: Context) -> None:
        for twin, tctx in zip(self.twins, self._ctxs(ctx), strict=True):
            twin.on_start(tctx)
        self._settle()

    def on_recover(self, ctx: Context, stored: StoredState) -> None:
        self._restore_lies(stored)
        parts = split_stored(stored)
        for twin, tctx, part in zip(self.twins, self._ctxs(ctx), parts, strict=True):
            twin.on_recover(tctx, part)
        self._settle()

    def on_message(self, ctx: Context, src: str, msg: Any) -> None:
        # a request (from its client or relayed by a peer) reaches the twin of its client's
        # side only: each twin orders the requests of its own clients
        i = self.client_side(msg.client) if isinstance(msg, Request) else self.side_of(src)
        self.twins[i].on_message(self._ctxs(ctx)[i], src, msg)
        self._settle()

    def on_timer(self, ctx: Context, name: str) -> None:
        for i in (0, 1):
            prefix = f"twin{i}:"
            if name.startswith(prefix):
                self.twins[i].on_timer(self._ctxs(ctx)[i], name[len(prefix) :])
        self._settle()

    def on_client(self, ctx: Context, request: ClientRequest) -> None:
        cmd = request.command
        i = self.client_side(cmd.client) if isinstance(cmd, Request) else 0
        self.twins[i].on_client(self._ctxs(ctx)[i], request)
        self._settle()

    def on_flush(self, ctx: Context) -> None:
        for twin, tctx in zip(self.twins, self._ctxs(ctx), strict=True):
            if twin.needs_flush:
                twin.on_flush(tctx)
        self._settle()

    def on_persisted(self, ctx: Context, token: Any) -> None:
        for twin, tctx in zip(self.twins, self._ctxs(ctx), strict=True):
            twin.on_persisted(tctx, token)
        self._settle()

    def submit(self, ctx: Context, command: Any) -> SubmitResult:
        out = self.twins[0].submit(self._ctxs(ctx)[0], command)
        self._settle()
        return out

    # -- outputs ----------------------------------------------------------------------------
    @staticmethod
    def face(msg: Any) -> tuple[tuple[Any, ...], bytes] | None:
        """The slot a message speaks for and what it says there (None: nothing to compare)."""
        if isinstance(msg, (PrePrepare, Prepare, Commit)):
            return (type(msg).__name__, msg.view, msg.seq), msg.digest
        if isinstance(msg, Checkpoint):
            return ("Checkpoint", msg.seq), msg.state_digest
        if isinstance(msg, ViewChange):
            return ("ViewChange", msg.new_view), digest(signing_bytes(msg))
        if isinstance(msg, NewView):
            return ("NewView", msg.view), digest(signing_bytes(msg))
        return None

    def twin_emit(self, ctx: Context, index: int, dsts: Dests, msg: Any) -> None:
        """Twin ``index`` sends ``msg``: it reaches the peers of that twin's side only."""
        side = self.sides[index]
        reach = tuple(d for d in dsts if d in side)
        face = self.face(msg)
        if face is not None:
            key, said = face
            seen = self.signed.get(key)
            if seen is None:
                if len(self.signed) > 20_000:
                    self.signed.clear()
                seen = self.signed[key] = {}
            other = seen.get(1 - index)
            if index not in seen and other is not None and other != said:
                self.lie(
                    ctx,
                    "twins",
                    f"twin{index} signed {describe(msg)} for {_names(reach) or 'nobody'}, "
                    f"twin{1 - index} signed {other.hex()[:8]} there",
                )
            seen.setdefault(index, said)
        self.deliver(ctx, reach, msg)

    # -- what the drivers read --------------------------------------------------------------
    def leader(self) -> str | None:
        return self.twins[0].leader()

    def role(self) -> str:
        return self.twins[0].role()

    def applied_commands(self) -> list[tuple[int, Any]]:
        return self.twins[0].applied_commands()

    def local_read(self, command: Any) -> Any:
        return self.twins[0].local_read(command)

    def state_digest(self) -> tuple[int, str]:
        return self.twins[0].state_digest()

    def status(self) -> dict[str, Any]:
        out = self.twins[0].status()
        other = self.twins[1]
        out["twin1"] = {
            "view": other.view,
            "role": other.role(),
            "last_executed": other.last_executed,
        }
        out["byzantine"] = self.behaviour
        out["lies"] = self.lies
        out["lie_kinds"] = dict(sorted(self.lie_kinds.items()))
        return out


#: behaviour name -> class (``PbftNode.byzantine_class``)
BEHAVIOURS: dict[str, type[PbftNode]] = {
    cls.behaviour: cls
    for cls in (
        Silent,
        Equivocate,
        WrongDigest,
        Forge,
        Replay,
        StaleView,
        BadCheckpoint,
        WrongReply,
        Delay,
        Twins,
    )
}

__all__ = [
    "BEHAVIOURS",
    "LIES_KEY",
    "LIE_MARK",
    "BadCheckpoint",
    "ByzantineNode",
    "Delay",
    "Equivocate",
    "Forge",
    "LyingContext",
    "Replay",
    "Silent",
    "StaleView",
    "Twins",
    "WrongDigest",
    "WrongReply",
    "describe",
    "wrong_result",
]
