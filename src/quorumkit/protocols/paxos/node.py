"""Multi-Paxos (Lamport, "Paxos Made Simple", 2001) as a sans-I/O state machine.

Rules of this module:

1. One :class:`PaxosNode` is a proposer, an acceptor and a learner at once (section 2.1). It
   acts only through the :class:`Context` it is handed; it reads no clock but ``ctx.now()`` and
   draws no randomness but ``ctx.rng``.
2. Acceptor state (the promised ballot; per slot, the accepted proposal) is written to
   ``ctx.storage`` before the Promise or Accepted that depends on it, in the same handler: the
   driver releases the message only once the write is durable (contract rule 4; section 2.3,
   "an acceptor must remember this information even if it fails and then restarts").
3. Handlers are named ``on_<message>``; role changes are ``become_<role>``. A node that sees a
   ballot above its own as candidate or leader abandons its proposals (section 2.2).
4. A leader of ballot B learns decided values only from its own phase 2, never from other
   nodes. So an acceptor whose entry for slot s carries ballot B knows, once leader B reports s
   decided, that the entry holds the decided value (the learners' fast path: one commit index
   piggybacked on Accept and Heartbeat tells every learner, section 2.3).
5. **Early effects** (contract rule 4's exception; the analogue of Raft dissertation 10.2.1):
   the leader sends its Accepts (``ctx.send_early``) without waiting for its own acceptance of
   those slots to be durable, and counts itself among a slot's acceptors only once that
   acceptance is known durable (``durable_upto``, from ``ctx.when_durable`` /
   :meth:`PaxosNode.on_persisted`). An Accept is a phase 2(a) request: its safety rests on the
   phase 1 that made this node leader, not on the leader's own storage; a value is chosen
   only by a majority of *durable* acceptances, so a leader that crashes with its acceptance
   lost cannot have counted it. Early sends start after the first durability report of the
   leadership, which covers the leader's promise of its own ballot (it counted that promise in
   phase 1). Clients of decided slots are answered early (``ctx.reply_early``): the value was
   chosen by a majority of durable acceptances, independently of the leader's pending writes.
6. Safety-critical assumptions are checked and raise :class:`InvariantViolation` (never
   ``assert``).

The log: slot ``s`` is storage log index ``s``. An acceptor's entry for a slot above its
``commit`` (decided prefix) is the proposal it accepted; an entry at or below ``commit`` holds
the decided value. Slots at or below the snapshot index are compacted away.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from quorumkit.codec import check_encodable
from quorumkit.errors import InvariantViolation
from quorumkit.kv import KVStateMachine, is_read_only
from quorumkit.protocol import ClientRequest, Context, InvariantChecker, Protocol, StoredState
from quorumkit.protocols.paxos.config import PaxosConfig
from quorumkit.protocols.paxos.log import SlotLog
from quorumkit.protocols.paxos.messages import (
    COMMAND,
    NOOP_VALUE,
    ZERO_BALLOT,
    Accept,
    Accepted,
    Ballot,
    CatchUp,
    Decide,
    Heartbeat,
    HeartbeatReply,
    Nack,
    Prepare,
    Promise,
    SlotEntry,
    Snapshot,
    SnapshotChunk,
    Value,
)
from quorumkit.protocols.raft.node import SubmitResult


class Role(enum.Enum):
    FOLLOWER = "follower"
    CANDIDATE = "candidate"
    LEADER = "leader"


@dataclass(slots=True)
class Proposal:
    """The leader's phase 2 of one slot: the value, who accepted it, the client waiting."""

    value: Value
    request: ClientRequest | None = None
    acks: set[str] = field(default_factory=set)
    sent_at: float = 0.0
    chosen: bool = False


@dataclass(slots=True)
class _Read:
    seq: int
    index: int
    request: ClientRequest


def _runs(slots: Iterable[int], limit: int) -> list[tuple[int, int]]:
    """Increasing ``slots`` as ``(first, count)`` runs of consecutive slots, ``count <= limit``."""
    out: list[tuple[int, int]] = []
    for s in slots:
        if out and out[-1][0] + out[-1][1] == s and out[-1][1] < limit:
            out[-1] = (out[-1][0], out[-1][1] + 1)
        else:
            out.append((s, 1))
    return out


class PaxosNode(Protocol):
    """One Multi-Paxos replica driving a :class:`~quorumkit.kv.KVStateMachine`."""

    name = "paxos"

    def __init__(self, node_id: str, members: Any, config: PaxosConfig | None = None) -> None:
        super().__init__(node_id, members, config or PaxosConfig())
        cfg: PaxosConfig = self.config
        self.cfg = cfg
        self.unsafe = cfg.unsafe
        # acceptor (durable): the promised ballot, and per slot the accepted proposal
        self.promised: Ballot = ZERO_BALLOT
        self.log = SlotLog()
        # learner
        self.commit = 0
        self.last_applied = 0
        self.sm = KVStateMachine()
        #: items (keys, sessions) of the latest snapshot: when to take the next one
        self.snapshot_items = 0
        self.applied: list[tuple[int, Value]] = []
        self.last_snapshot: Snapshot | None = None
        self._incoming = bytearray()
        self._incoming_upto = 0
        self.catchup_at = -float(1 << 62)
        # proposer
        self.role = Role.FOLLOWER
        self.ballot: Ballot = ZERO_BALLOT
        self.max_round = 0
        self.leader_id: str | None = None
        self.leader_ballot: Ballot = ZERO_BALLOT
        #: the highest decided prefix heard from the leader of ``leader_ballot``
        self.leader_commit = 0
        self.promises: dict[str, Promise] = {}
        self.proposals: dict[int, Proposal] = {}
        self.next_slot = 1
        self.unsent_from = 1
        self.waiting: deque[ClientRequest] = deque()
        self.takeover_upto = 0
        self.reads: deque[_Read] = deque()
        self.reads_waiting: list[ClientRequest] = []
        self.read_seq = 0
        self.read_acks: dict[str, int] = {}
        self.read_round_open = False
        self.elections_started = 0
        #: leader only: every undecided slot <= it was accepted durably here at ``ballot``
        #: (rule 5); the leader counts itself among the acceptors of those slots only
        self.durable_upto = 0
        #: leader only: the highest slot a durability report was asked for (-1: none yet)
        self.durable_asked = -1
        #: leader only: a durability report of this leadership arrived, so its promise of
        #: ``ballot`` is durable and Accepts may leave early (rule 5)
        self.ballot_durable = False

    # ------------------------------------------------------------------ configuration
    @classmethod
    def make_config(cls, **options: Any) -> PaxosConfig:
        return PaxosConfig.from_options(**options)

    @classmethod
    def make_checker(cls) -> InvariantChecker:
        from quorumkit.protocols.paxos.invariants import PaxosChecker

        return PaxosChecker()

    def quorum(self) -> int:
        return len(self.members) // 2 + 1

    def leader(self) -> str | None:
        return self.leader_id

    def is_leader(self) -> bool:
        return self.role is Role.LEADER

    @property
    def _heartbeat_s(self) -> float:
        return self.cfg.heartbeat_interval_ms / 1000

    # ------------------------------------------------------------------ persistence
    def _promise(self, ctx: Context, ballot: Ballot) -> None:
        """Raise the promised ballot, durably (section 2.3)."""
        self.promised = ballot
        self._observe(ballot)
        if "acceptor-forgets-promise" not in self.unsafe:
            ctx.storage.put("promised", ballot)

    def _write_slots(self, ctx: Context, slot: int, entries: Sequence[SlotEntry | None]) -> None:
        """Write ``entries`` from ``slot`` on, in memory and in storage (which truncates at the
        index it is given, so the entries after them are written again)."""
        index, tail = self.log.write(slot, entries)
        ctx.storage.log_append(index, tail)

    def _observe(self, ballot: Ballot) -> None:
        if ballot[0] > self.max_round:
            self.max_round = ballot[0]

    # ------------------------------------------------------------------ inputs
    def on_start(self, ctx: Context) -> None:
        self.become_follower(ctx, None)

    def on_recover(self, ctx: Context, stored: StoredState) -> None:
        """Restart: reload the promise, the accepted proposals, the snapshot and the decided
        prefix; replay the decided slots into the state machine."""
        promised = stored.hard.get("promised", ZERO_BALLOT)
        self.promised = (int(promised[0]), str(promised[1]))
        snap = stored.snapshot
        if isinstance(snap, Snapshot):
            self.sm.restore(snap.data)
            self.log.start = snap.upto + 1
            self.commit = self.last_applied = snap.upto
            self.last_snapshot = snap
            self.snapshot_items = self.sm.size()
        if stored.log_start != self.log.start:
            raise InvariantViolation(
                "storage",
                f"log starts at slot {stored.log_start}, snapshot ends at {self.log.snapshot_index}",
            )
        self.log.entries = list(stored.log)
        self.log.dirty_from = self.log.start
        self.max_round = max(
            [self.promised[0]] + [e.ballot[0] for e in self.log.entries if e is not None]
        )
        decided = min(int(stored.hard.get("commit", 0)), self.log.last_slot)
        for slot in range(self.commit + 1, decided + 1):
            if self.log.get(slot) is None:
                raise InvariantViolation("storage", f"decided slot {slot} has no stored value")
        self.commit = max(self.commit, decided)
        self._apply_decided(ctx)
        self.become_follower(ctx, None)

    def on_message(self, ctx: Context, src: str, msg: Any) -> None:
        handler = _HANDLERS.get(type(msg))
        if handler is not None:
            handler(self, ctx, src, msg)

    def on_timer(self, ctx: Context, name: str) -> None:
        if name == "election":
            self.on_election_timeout(ctx)
        elif name == "heartbeat":
            self.on_heartbeat_timeout(ctx)
        elif name == "prepare_retry":
            self.on_prepare_retry(ctx)

    def on_client(self, ctx: Context, request: ClientRequest) -> None:
        """A client command: the leader proposes it in the next free slot (section 3) or
        serves a read by read index; other nodes answer with the leader they know."""
        if self.role is not Role.LEADER:
            ctx.reply(request, {"error": "not_leader", "leader": self.leader_id})
            return
        pending = len(self.proposals) + len(self.waiting) + len(self.reads)
        if pending + len(self.reads_waiting) >= self.cfg.max_pending:
            ctx.reply(request, {"error": "overloaded", "leader": self.node_id})
            return
        command = request.command
        if is_read_only(command):
            self._start_read(ctx, request)
            return
        problem = check_encodable(command)
        if problem is not None:
            ctx.reply(request, {"error": "bad_command", "detail": problem})
            return
        if self._window_open() and not self.waiting:
            self._propose(ctx, Value(command), request)
        else:
            self.waiting.append(request)

    # ------------------------------------------------------------------ roles
    def become_follower(self, ctx: Context, leader: str | None) -> None:
        """Follow ``leader`` (None: unknown) and wait for it with a randomized timeout."""
        was = self.role
        if was is Role.LEADER:
            self._abandon_leadership(ctx, leader)
        elif was is Role.CANDIDATE:
            ctx.cancel_timer("prepare_retry")
            self.promises = {}
        self.role = Role.FOLLOWER
        self.leader_id = leader
        if was is not Role.FOLLOWER:
            ctx.trace("role", role="follower", ballot=self.promised)
        self._reset_election_timer(ctx)

    def _abandon_leadership(self, ctx: Context, leader: str | None) -> None:
        """Section 2.2: a proposer that learns of a higher ballot abandons its proposals. Those
        sent may still be chosen (by a later leader adopting them): indeterminate."""
        ctx.cancel_timer("heartbeat")
        for slot in sorted(self.proposals):
            request = self.proposals[slot].request
            if request is not None:
                ctx.reply(
                    request, {"error": "leader_changed", "leader": leader, "indeterminate": True}
                )
        self.proposals = {}
        for request in [*self.waiting, *(r.request for r in self.reads), *self.reads_waiting]:
            ctx.reply(request, {"error": "not_leader", "leader": leader})
        self.waiting = deque()
        self.reads = deque()
        self.reads_waiting = []
        self.read_round_open = False

    def become_candidate(self, ctx: Context) -> None:
        """Section 3: a node that believes the leader failed starts phase 1 with a ballot above
        every one it has seen, for every slot from its first undecided one on."""
        self.ballot = (max(self.max_round, self.promised[0]) + 1, self.node_id)
        self._promise(ctx, self.ballot)
        if self.role is Role.LEADER:  # asked to campaign again (leaders do not time out)
            self._abandon_leadership(ctx, None)
        self.role = Role.CANDIDATE
        self.leader_id = None
        self.elections_started += 1
        ctx.trace("role", role="candidate", ballot=self.ballot)
        self._reset_election_timer(ctx)  # also the randomized backoff of a lost duel
        self.promises = {self.node_id: self._make_promise(self.commit + 1)}
        self._send_prepares(ctx)
        ctx.set_timer("prepare_retry", self._heartbeat_s)
        self._maybe_become_leader(ctx)

    def _send_prepares(self, ctx: Context) -> None:
        msg = Prepare(self.ballot, self.commit + 1)
        for peer in self.members:
            if peer != self.node_id and peer not in self.promises:
                ctx.send(peer, msg)

    def on_prepare_retry(self, ctx: Context) -> None:
        """Messages may be lost: a candidate asks the acceptors that have not promised again."""
        if self.role is Role.CANDIDATE:
            self._send_prepares(ctx)
            ctx.set_timer("prepare_retry", self._heartbeat_s)

    def _maybe_become_leader(self, ctx: Context) -> None:
        """Phase 1 is complete with promises from a majority, once this node has learned every
        slot some promiser reported decided (those are not reported one by one)."""
        if self.role is not Role.CANDIDATE or len(self.promises) < self.quorum():
            return
        src, most = max(self.promises.items(), key=lambda kv: kv[1].commit)
        if most.commit > self.commit:
            self._request_catch_up(ctx, src)
            return
        self.become_leader(ctx)

    def become_leader(self, ctx: Context) -> None:
        """Section 3: for every slot above the first undecided one, propose the value of the
        highest-numbered proposal reported in phase 1, and a no-op in the gaps."""
        self.role = Role.LEADER
        self.leader_id = self.node_id
        self.leader_ballot = self.ballot
        ctx.cancel_timer("election")
        ctx.cancel_timer("prepare_retry")
        ctx.trace("role", role="leader", ballot=self.ballot)
        best: dict[int, SlotEntry] = {}
        for promise in self.promises.values():
            for slot, entry in promise.accepted:
                if slot > self.commit:
                    known = best.get(slot)
                    if known is None or entry.ballot > known.ballot:
                        best[slot] = entry
        self.promises = {}
        top = max(best, default=self.commit)
        self.proposals = {}
        self.next_slot = self.unsent_from = self.commit + 1
        ignore = "ignore-accepted-values" in self.unsafe
        for slot in range(self.commit + 1, top + 1):
            report = best.get(slot)
            self._propose(ctx, NOOP_VALUE if report is None or ignore else report.value, None)
        self.takeover_upto = top
        self.read_acks = {}
        self.durable_upto = self.commit
        self.durable_asked = -1
        self.ballot_durable = False
        self.needs_flush = True  # on_flush asks when our promise (and slots) are durable
        ctx.broadcast(Heartbeat(self.ballot, self.commit, self.read_seq))
        ctx.set_timer("heartbeat", self._heartbeat_s)

    # ------------------------------------------------------------------ timers
    def _reset_election_timer(self, ctx: Context) -> None:
        lo, hi = self.cfg.election_timeout_ms_min, self.cfg.election_timeout_ms_max
        ctx.set_timer("election", ctx.rng.uniform(lo, hi) / 1000)

    def on_election_timeout(self, ctx: Context) -> None:
        """No word from a leader (or no majority of promises) for a randomized timeout."""
        if self.role is not Role.LEADER:
            self.become_candidate(ctx)

    def on_heartbeat_timeout(self, ctx: Context) -> None:
        """The leader's periodic heartbeat, and a resend of proposals not yet accepted by a
        majority to the acceptors that have not acknowledged them (messages may be lost)."""
        if self.role is not Role.LEADER:
            return
        ctx.broadcast(Heartbeat(self.ballot, self.commit, self.read_seq))
        self._retransmit(ctx)
        ctx.set_timer("heartbeat", self._heartbeat_s)

    def _retransmit(self, ctx: Context) -> None:
        now = ctx.now()
        stale = [
            s
            for s in range(self.commit + 1, self.unsent_from)
            if (p := self.proposals.get(s)) is not None
            and not p.chosen
            and now - p.sent_at >= self._heartbeat_s
        ]
        if not stale:
            return
        for peer in self.members:
            if peer == self.node_id:
                continue
            missing = [s for s in stale if peer not in self.proposals[s].acks]
            for first, count in _runs(missing, self.cfg.max_values_per_message):
                values = tuple(self.proposals[s].value for s in range(first, first + count))
                self._send_accept(ctx, peer, Accept(self.ballot, first, values, self.commit))
        for s in stale:
            self.proposals[s].sent_at = now

    # ------------------------------------------------------------------ phase 1
    def _make_promise(self, first_slot: int) -> Promise:
        log = self.log
        lo = max(first_slot, self.commit + 1, log.start)
        reports = tuple(
            (s, e) for s in range(lo, log.last_slot + 1) if (e := log.get(s)) is not None
        )
        return Promise(self.promised, self.commit, reports)

    def on_prepare(self, ctx: Context, src: str, m: Prepare) -> None:
        """Phase 1(b): promise ``m.ballot`` if it is above every ballot promised so far and
        report the accepted proposals; else reject with the ballot promised."""
        self._observe(m.ballot)
        if m.ballot < self.promised:
            ctx.send(src, Nack(m.ballot, self.promised))
            return
        if m.ballot > self.promised:
            self._promise(ctx, m.ballot)
            self.become_follower(ctx, None)  # also resets the election timer
        ctx.send(src, self._make_promise(m.first_slot))

    def on_promise(self, ctx: Context, src: str, m: Promise) -> None:
        if self.role is not Role.CANDIDATE or m.ballot != self.ballot:
            return
        self.promises[src] = m
        if m.commit > self.commit:
            self._request_catch_up(ctx, src)
        self._maybe_become_leader(ctx)

    def on_nack(self, ctx: Context, src: str, m: Nack) -> None:
        """An acceptor promised a higher ballot: abandon the proposal (section 2.2) and back
        off for a randomized timeout, so that dueling proposers do not livelock (section 3)."""
        self._observe(m.promised)
        if self.role is not Role.FOLLOWER and m.ballot == self.ballot and m.promised > m.ballot:
            ctx.trace("preempted", ballot=self.ballot, by=m.promised)
            self.become_follower(ctx, None)

    # ------------------------------------------------------------------ phase 2: leader
    def _window_open(self) -> bool:
        return self.next_slot - 1 - self.commit < self.cfg.window

    def _propose(self, ctx: Context, value: Value, request: ClientRequest | None) -> int:
        """Give ``value`` the next slot; its Accept goes out at the end of the batch."""
        slot = self.next_slot
        self.next_slot += 1
        self.proposals[slot] = Proposal(value, request)
        self.needs_flush = True
        return slot

    def on_flush(self, ctx: Context) -> None:
        """End of a batch: accept the new proposals locally, send them in one Accept per
        acceptor (early, rule 5) and ask to be told when our acceptances are durable; start
        the read round of the batch's reads."""
        self.needs_flush = False
        if self.role is not Role.LEADER:
            return
        if self.unsent_from < self.next_slot:
            self._send_proposals(ctx)
        self._ask_durable(ctx)
        if self.read_round_open:
            self.read_round_open = False
            ctx.broadcast(Heartbeat(self.ballot, self.commit, self.read_seq))

    def _send_proposals(self, ctx: Context) -> None:
        """Accept the batch's proposals here (a storage write) and send them to every other
        acceptor. The leader's own acceptance is *not* counted yet: only once it is durable
        (:meth:`on_persisted`), since the Accepts may leave before it is (rule 5)."""
        lo, hi = self.unsent_from, self.next_slot
        values = [self.proposals[s].value for s in range(lo, hi)]
        self._write_slots(ctx, lo, [SlotEntry(self.ballot, v) for v in values])
        now = ctx.now()
        for s in range(lo, hi):
            self.proposals[s].sent_at = now
        self.unsent_from = hi
        step = self.cfg.max_values_per_message
        me = self.node_id
        for first in range(lo, hi, step):
            msg = Accept(
                self.ballot, first, tuple(values[first - lo : first - lo + step]), self.commit
            )
            for peer in self.members:
                if peer != me:
                    self._send_accept(ctx, peer, msg)

    def _send_accept(self, ctx: Context, peer: str, msg: Accept) -> None:
        """Accepts need not wait for the leader's own writes (rule 5), once the leadership
        had a durability report (``ballot_durable``): that covers the promise of the
        leader's ballot, which it counted in its own phase 1."""
        if self.ballot_durable:
            ctx.send_early(peer, msg)
        else:
            ctx.send(peer, msg)

    def _ask_durable(self, ctx: Context) -> None:
        """Ask to be told when every slot written so far (all at ``ballot``) is durable here."""
        last = self.unsent_from - 1
        if last > self.durable_asked:
            self.durable_asked = last
            token = (self.ballot, last)
            if ctx.when_durable(token):
                self.on_persisted(ctx, token)

    def on_persisted(self, ctx: Context, token: Any) -> None:
        """Our acceptances up to slot ``upto`` at ``ballot`` are durable (token from
        :meth:`_ask_durable`): from now on the leader of ``ballot`` counts itself among their
        acceptors. A token of an earlier leadership says nothing about today's slots (a later
        ballot's leader wrote them again) and is ignored."""
        ballot, upto = token
        if self.role is not Role.LEADER or ballot != self.ballot:
            return
        self.ballot_durable = True
        first = max(self.durable_upto, self.commit) + 1
        self.durable_upto = max(self.durable_upto, upto)
        me = self.node_id
        for s in range(first, upto + 1):
            p = self.proposals.get(s)
            if p is not None:
                p.acks.add(me)
        if upto >= first:
            self._count_acks(ctx, range(first, upto + 1))

    def on_accepted(self, ctx: Context, src: str, m: Accepted) -> None:
        """Phase 2(b) reports: a value is chosen once a majority accepted it (section 2.3)."""
        if self.role is not Role.LEADER or m.ballot != self.ballot:
            return
        slots = range(m.first_slot, m.first_slot + m.count)
        for s in slots:
            p = self.proposals.get(s)
            if p is not None:
                p.acks.add(src)
        self._count_acks(ctx, slots)

    def _count_acks(self, ctx: Context, slots: Iterable[int]) -> None:
        quorum = self.quorum()
        for s in slots:
            p = self.proposals.get(s)
            if p is not None and not p.chosen and len(p.acks) >= quorum:
                p.chosen = True
        upto = self.commit
        while (p := self.proposals.get(upto + 1)) is not None and p.chosen:
            upto += 1
        if upto > self.commit:
            self._advance_commit(ctx, upto)

    # ------------------------------------------------------------------ phase 2: acceptor
    def _follow(self, ctx: Context, src: str, ballot: Ballot) -> None:
        """A message of leader ``src`` with ``ballot`` >= the promised one."""
        if self.role is not Role.FOLLOWER:
            self.become_follower(ctx, src)
        else:
            self._reset_election_timer(ctx)
        self.leader_id = src
        if ballot != self.leader_ballot:
            self.leader_ballot = ballot
            self.leader_commit = 0

    def on_accept(self, ctx: Context, src: str, m: Accept) -> None:
        """Phase 2(b): accept unless a higher ballot was promised (then reject), write the
        accepted proposals durably, acknowledge them; learn the leader's decided prefix."""
        self._observe(m.ballot)
        lower = m.ballot < self.promised
        if lower and "accept-lower-ballot" not in self.unsafe:
            ctx.send(src, Nack(m.ballot, self.promised))
            return
        if self.role is Role.LEADER and m.ballot == self.ballot:
            return  # pragma: no cover - ballots are unique per node
        if not lower:
            if m.ballot > self.promised:
                self._promise(ctx, m.ballot)
            self._follow(ctx, src, m.ballot)
        acked = self._accept_values(ctx, m.ballot, m.first_slot, m.values)
        for first, count in _runs(acked, len(m.values)):
            ctx.send(src, Accepted(m.ballot, first, count))
        if not lower:
            self._learn_commit(ctx, src, m.ballot, m.commit)

    def _accept_values(
        self, ctx: Context, ballot: Ballot, first: int, values: Sequence[Value]
    ) -> list[int]:
        """Store ``values`` accepted at ``ballot`` from slot ``first`` on; return the slots
        accepted. A slot already decided here is not rewritten: it is acknowledged when it
        holds the same value, or was compacted (a leader that completed phase 1 proposes the
        decided value there, and one that did not cannot gather a majority: those that
        promised the higher ballot reject it)."""
        acked: list[int] = []
        write_from = 0
        new: list[SlotEntry | None] = []
        log = self.log
        for i, value in enumerate(values):
            slot = first + i
            if slot <= self.commit:
                if slot < log.start:
                    acked.append(slot)
                else:
                    here = log.get(slot)
                    if here is not None and here.value == value:
                        acked.append(slot)
                continue
            entry = SlotEntry(ballot, value)
            if not write_from:
                if log.get(slot) == entry:
                    acked.append(slot)  # a resend: already stored
                    continue
                write_from = slot
            new.append(entry)
            acked.append(slot)
        if write_from:
            self._write_slots(ctx, write_from, new)
        return acked

    # ------------------------------------------------------------------ learning
    def _learn_commit(self, ctx: Context, src: str, ballot: Ballot, leader_commit: int) -> None:
        """The decided prefix of leader ``src``: learn what rule 4 allows, ask for the rest."""
        if ballot != self.leader_ballot:
            return
        if leader_commit > self.leader_commit:
            self.leader_commit = leader_commit
        self._learn_from_entries(ctx)
        if self.leader_commit > self.commit:
            self._request_catch_up(ctx, src)

    def _learn_from_entries(self, ctx: Context) -> None:
        """Rule 4: the slots up to the leader's decided prefix whose entries here carry the
        leader's ballot hold the decided values."""
        log = self.log
        ballot = self.leader_ballot
        upto = self.commit
        top = min(self.leader_commit, log.last_slot)
        while upto < top:
            entry = log.get(upto + 1)
            if entry is None or entry.ballot != ballot:
                break
            upto += 1
        if upto > self.commit:
            self._advance_commit(ctx, upto)

    def _request_catch_up(self, ctx: Context, src: str, *, now: bool = False) -> None:
        """Ask ``src`` for decided values (at most once per heartbeat interval, unless
        ``now``: the continuation of a transfer)."""
        t = ctx.now()
        if not now and t - self.catchup_at < self._heartbeat_s:
            return
        self.catchup_at = t
        upto = self._incoming_upto if self._incoming else 0
        ctx.send(src, CatchUp(self.commit + 1, upto, len(self._incoming) if upto else 0))

    def on_catch_up(self, ctx: Context, src: str, m: CatchUp) -> None:
        """Answer a lagging learner from the log, or with the snapshot if the slots it needs
        were compacted."""
        if m.next_slot > self.commit or m.next_slot < 1:
            return
        if m.next_slot < self.log.start:
            snap = self.last_snapshot
            if snap is None:  # pragma: no cover - compaction implies a snapshot
                raise InvariantViolation("log", f"{self.node_id} compacted without a snapshot")
            offset = m.offset if m.snapshot_upto == snap.upto else 0
            data = snap.data[offset : offset + self.cfg.snapshot_chunk_bytes]
            done = offset + len(data) >= len(snap.data)
            ctx.send(src, SnapshotChunk(snap.upto, offset, data, done))
            return
        hi = min(self.commit, m.next_slot + self.cfg.max_values_per_message - 1)
        entries = []
        for slot in range(m.next_slot, hi + 1):
            entry = self.log.get(slot)
            if entry is None:  # pragma: no cover - decided slots hold their values
                raise InvariantViolation("log", f"{self.node_id} lacks decided slot {slot}")
            entries.append(entry)
        ctx.send(src, Decide(m.next_slot, tuple(entries), self.commit))

    def on_decide(self, ctx: Context, src: str, m: Decide) -> None:
        """Decided values (section 2.3, learners): store those that follow the decided prefix
        and apply them; ask for more while the sender knows more. A leader learns only from
        its own phase 2 (rule 4)."""
        if self.role is Role.LEADER:
            return
        start = self.commit + 1
        if m.first_slot <= start < m.first_slot + len(m.entries):
            new = m.entries[start - m.first_slot :]
            log = self.log
            write_from = 0
            for i, entry in enumerate(new):
                here = log.get(start + i)
                if here is None or here.value != entry.value:
                    write_from = start + i
                    break
            if write_from:
                self._write_slots(ctx, write_from, new[write_from - start :])
            self._advance_commit(ctx, start + len(new) - 1)
            self._learn_from_entries(ctx)
        if m.commit > self.commit:
            self._request_catch_up(ctx, src, now=True)
        self._maybe_become_leader(ctx)

    def on_snapshot_chunk(self, ctx: Context, src: str, m: SnapshotChunk) -> None:
        """A piece of a snapshot for slots compacted at the sender; installed when complete."""
        if self.role is Role.LEADER or m.upto <= self.commit:
            return
        if m.offset == 0:
            self._incoming = bytearray()
            self._incoming_upto = m.upto
        if m.upto != self._incoming_upto or m.offset != len(self._incoming):
            self._request_catch_up(ctx, src, now=True)
            return
        self._incoming += m.data
        if m.done:
            self._install_snapshot(ctx, Snapshot(m.upto, bytes(self._incoming)))
        self._request_catch_up(ctx, src, now=True)
        self._maybe_become_leader(ctx)

    def _install_snapshot(self, ctx: Context, snap: Snapshot) -> None:
        self._incoming = bytearray()
        self._incoming_upto = 0
        ctx.storage.save_snapshot(snap, snap.upto)
        self.log.compact(snap.upto)
        self.sm.restore(snap.data)
        self.commit = self.last_applied = snap.upto
        self.last_snapshot = snap
        self.snapshot_items = self.sm.size()
        ctx.trace("install_snapshot", index=snap.upto)

    # ------------------------------------------------------------------ applying
    def _advance_commit(self, ctx: Context, upto: int) -> None:
        self.commit = upto
        ctx.storage.put("commit", upto, sync=False)
        ctx.trace("commit", index=upto, ballot=self.leader_ballot)
        self._apply_decided(ctx)
        if self.role is Role.LEADER:
            while self.waiting and self._window_open():
                request = self.waiting.popleft()
                self._propose(ctx, Value(request.command), request)
            if self.reads_waiting and self.commit >= self.takeover_upto:
                waiting, self.reads_waiting = self.reads_waiting, []
                for request in waiting:
                    self._start_read(ctx, request)
            self._serve_reads(ctx)

    def _apply_decided(self, ctx: Context) -> None:
        """Apply the decided slots in order, each exactly once (section 3)."""
        log = self.log
        while self.last_applied < self.commit:
            slot = self.last_applied + 1
            entry = log.get(slot)
            if entry is None:
                raise InvariantViolation("log", f"{self.node_id} decided slot {slot} unknown")
            value = entry.value
            result = self.sm.apply(value.command) if value.kind == COMMAND else None
            self.last_applied = slot
            if self.keep_history:
                self.applied.append((slot, value))
            proposal = self.proposals.pop(slot, None)
            if proposal is not None and proposal.request is not None:
                # chosen by a majority of durable acceptances (the leader's own counted only
                # once durable): the answer does not wait for our pending writes (rule 5)
                if proposal.value == value:
                    ctx.reply_early(proposal.request, result)
                else:  # a leader's slots hold its own proposals, but for a planted bug
                    ctx.reply_early(
                        proposal.request, {"error": "leader_changed", "indeterminate": True}
                    )
        self._maybe_snapshot(ctx)

    # ------------------------------------------------------------------ heartbeats and reads
    def on_heartbeat(self, ctx: Context, src: str, m: Heartbeat) -> None:
        """The leader of ``m.ballot`` is alive. An acceptor that promised less promises it
        now (promising a higher ballot is always safe), so leaders of lower ballots are
        rejected from here on and a follower never flips back to a deposed leader."""
        self._observe(m.ballot)
        if m.ballot < self.promised:
            ctx.send(src, Nack(m.ballot, self.promised))
            return
        if self.role is Role.LEADER and m.ballot == self.ballot:
            return  # pragma: no cover - ballots are unique per node
        if m.ballot > self.promised:
            self._promise(ctx, m.ballot)
        self._follow(ctx, src, m.ballot)
        ctx.send(src, HeartbeatReply(m.ballot, m.read_seq))
        self._learn_commit(ctx, src, m.ballot, m.commit)

    def on_heartbeat_reply(self, ctx: Context, src: str, m: HeartbeatReply) -> None:
        if self.role is not Role.LEADER or m.ballot != self.ballot:
            return
        if m.read_seq > self.read_acks.get(src, 0):
            self.read_acks[src] = m.read_seq
            self._serve_reads(ctx)

    def _start_read(self, ctx: Context, request: ClientRequest) -> None:
        """A read index (as Raft's ReadIndex): once every slot adopted at takeover is decided,
        record the decided prefix, confirm with a majority that no higher ballot has taken
        over (a heartbeat round), then answer from the state machine."""
        if self.commit < self.takeover_upto:
            self.reads_waiting.append(request)
            return
        if not self.read_round_open:
            self.read_seq += 1
            self.read_round_open = True
            self.needs_flush = True
        self.reads.append(_Read(self.read_seq, self.commit, request))
        self._serve_reads(ctx)

    def _serve_reads(self, ctx: Context) -> None:
        if not self.reads:
            return
        acks = [self.read_seq] + [
            self.read_acks.get(p, 0) for p in self.members if p != self.node_id
        ]
        acks.sort(reverse=True)
        confirmed = acks[self.quorum() - 1]
        reads = self.reads
        while reads and reads[0].seq <= confirmed and reads[0].index <= self.last_applied:
            read = reads.popleft()
            result = self.sm.read(read.request.command)
            if self.ballot_durable:
                # decided state (a majority of durable acceptances) and leadership confirmed
                # by a majority since the read began: no pending write of ours is involved
                ctx.reply_early(read.request, result)
            else:
                ctx.reply(read.request, result)

    # ------------------------------------------------------------------ snapshots
    def _maybe_snapshot(self, ctx: Context) -> None:
        threshold = self.cfg.snapshot_threshold
        since = self.last_applied - self.log.snapshot_index
        if (
            threshold
            and since >= threshold
            and since >= self.cfg.snapshot_expansion * self.snapshot_items
        ):
            self.take_snapshot(ctx)

    def take_snapshot(self, ctx: Context) -> None:
        """Log truncation: snapshot the state machine at the last applied slot and drop the
        slots up to it (all decided, so no acceptor state is lost that phase 1 needs)."""
        upto = self.last_applied
        if upto <= self.log.snapshot_index:
            return
        snap = Snapshot(upto, self.sm.snapshot())
        ctx.storage.save_snapshot(snap, upto)
        self.log.compact(upto)
        self.last_snapshot = snap
        self.snapshot_items = self.sm.size()
        ctx.trace("snapshot", index=upto)

    # ------------------------------------------------------------------ public surface
    def submit(self, ctx: Context, command: Any) -> SubmitResult:
        """Propose ``command`` in the next slot: ``(slot, ballot round, is_leader)``."""
        if self.role is not Role.LEADER:
            return SubmitResult(-1, self.promised[0], False)
        problem = check_encodable(command)
        if problem is not None:
            return SubmitResult(-1, self.ballot[0], True, problem)
        if not self._window_open():
            return SubmitResult(-1, self.ballot[0], True, "window full")
        return SubmitResult(self._propose(ctx, Value(command), None), self.ballot[0], True)

    def local_read(self, command: Any) -> Any:
        """A stale read of this replica's state machine (no read index round)."""
        return self.sm.read(command)

    def state_digest(self) -> tuple[int, str]:
        """(last applied slot, digest of the state machine), to compare replicas."""
        return (self.last_applied, self.sm.state_digest())

    def applied_commands(self) -> list[tuple[int, Any]]:
        """``(slot, command)`` of the client commands applied since the last (re)start."""
        return [(s, v.command) for s, v in self.applied if v.kind == COMMAND]

    def status(self) -> dict[str, Any]:
        ballot = self.promised if self.role is Role.FOLLOWER else self.ballot
        return {
            "id": self.node_id,
            "role": self.role.value,
            "ballot": list(ballot),
            "term": ballot[0],
            "leader": self.leader_id,
            "commit_index": self.commit,
            "last_applied": self.last_applied,
            "log_length": self.log.last_slot,
            "snapshot_index": self.log.snapshot_index,
            "promised": list(self.promised),
        }


_HANDLERS: dict[type, Any] = {
    Prepare: PaxosNode.on_prepare,
    Promise: PaxosNode.on_promise,
    Accept: PaxosNode.on_accept,
    Accepted: PaxosNode.on_accepted,
    Nack: PaxosNode.on_nack,
    Heartbeat: PaxosNode.on_heartbeat,
    HeartbeatReply: PaxosNode.on_heartbeat_reply,
    CatchUp: PaxosNode.on_catch_up,
    Decide: PaxosNode.on_decide,
    SnapshotChunk: PaxosNode.on_snapshot_chunk,
}

__all__ = ["PaxosNode", "Proposal", "Role", "SubmitResult"]
