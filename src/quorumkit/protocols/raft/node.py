"""Raft (Ongaro & Ousterhout, "In Search of an Understandable Consensus Algorithm", 2014;
Ongaro's dissertation, 2014, where the paper is silent) as a sans-I/O state machine.

Rules of this module:

1. One :class:`RaftNode` is one server. It acts only through the :class:`Context` it is handed;
   it reads no clock but ``ctx.now()`` and draws no randomness but ``ctx.rng``.
2. Persistent state (Figure 2: currentTerm, votedFor, log[]) is written to ``ctx.storage``
   before any message or reply that depends on it is produced in the same handler; the driver
   releases effects only after those writes are durable (protocol contract, rule 4). The one
   exception (dissertation 10.2.1, rule 4's early effects): a leader sends AppendEntries, and
   answers clients of committed commands, without waiting for its own log writes; it counts
   itself towards a commit quorum only for entries its storage reported durable
   (``durable_index``, from ``ctx.when_durable``/``on_persisted``). Its term is durable
   before its first early send: early sends start after the first durability report of its
   leadership, which covers the vote it gave itself.
3. Handlers are named ``on_<message>``; role changes are ``become_<role>``. Every handler
   first applies the term rules of Figure 2 ("If RPC request or response contains term T >
   currentTerm: set currentTerm = T, convert to follower").
4. Safety-critical assumptions are checked and raise :class:`InvariantViolation` (never
   ``assert``): e.g. a follower is never asked to truncate a committed entry.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from quorumkit.codec import check_encodable
from quorumkit.errors import ConfigError, InvariantViolation
from quorumkit.kv import KVStateMachine, is_read_only
from quorumkit.protocol import ClientRequest, Context, InvariantChecker, Protocol, StoredState
from quorumkit.protocols.raft.config import RaftConfig
from quorumkit.protocols.raft.log import INF, RaftLog
from quorumkit.protocols.raft.messages import (
    COMMAND,
    CONFIG,
    NOOP,
    AppendEntries,
    AppendEntriesResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    LogEntry,
    Membership,
    RequestVote,
    RequestVoteResponse,
    Snapshot,
    TimeoutNow,
)


class Role(enum.Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


PROBE = "probe"
REPLICATE = "replicate"
SNAPSHOT = "snapshot"


@dataclass(slots=True)
class Progress:
    """The leader's view of one follower (Figure 2 nextIndex/matchIndex, plus etcd-style
    flow control: probe one message at a time, replicate pipelined, or send a snapshot)."""

    next: int
    match: int = 0
    state: str = PROBE
    inflight: deque[int] = field(default_factory=deque)
    probe_sent: bool = False
    recent_active: bool = False
    read_ack: int = 0
    snapshot: Snapshot | None = None
    snapshot_offset: int = 0


@dataclass(slots=True)
class _Read:
    seq: int
    index: int
    request: ClientRequest


class SubmitResult(tuple[int, int, bool]):
    """``(index, term, is_leader)`` as Raft's Start() returns it, plus ``error`` (None when
    the command was accepted or simply refused for not being the leader)."""

    error: str | None

    def __new__(
        cls, index: int, term: int, is_leader: bool, error: str | None = None
    ) -> SubmitResult:
        self = super().__new__(cls, (index, term, is_leader))
        self.error = error
        return self

    @property
    def is_leader(self) -> bool:
        return self[2]


class RaftNode(Protocol):
    """One Raft server driving a :class:`~quorumkit.kv.KVStateMachine`."""

    name = "raft"

    def __init__(self, node_id: str, members: Any, config: RaftConfig | None = None) -> None:
        super().__init__(node_id, members, config or RaftConfig())
        cfg: RaftConfig = self.config
        self.cfg = cfg
        self.unsafe = cfg.unsafe
        # persistent state on all servers (Figure 2)
        self.current_term = 0
        self.voted_for: str | None = None
        self.log = RaftLog()
        # volatile state on all servers
        self.commit_index = 0
        self.last_applied = 0
        self.role = Role.FOLLOWER
        self.leader_id: str | None = None
        self.leader_contact_at: float = -float(INF)
        self.votes: set[str] = set()
        # membership (dissertation chapter 4): config entries in the log, newest last
        self.snapshot_membership = Membership(tuple(cfg.initial_voters or self.members))
        self.configs: list[tuple[int, Membership]] = []
        # volatile state on leaders
        self.progress: dict[str, Progress] = {}
        #: highest index of this leader's log known durable in its own storage (10.2.1)
        self.durable_index = 0
        self.durable_asked = 0
        self.pending: dict[int, tuple[ClientRequest, int]] = {}
        self.reads: deque[_Read] = deque()
        self.reads_waiting: list[ClientRequest] = []
        self.read_seq = 0
        self.transfer_target: str | None = None
        self.lease_acks: dict[str, float] = {}
        # the state machine, what was applied, and snapshots
        self.sm = KVStateMachine()
        #: items (keys, sessions) of the latest snapshot: when to take the next one
        self.snapshot_items = 0
        self.applied_entries: list[tuple[int, LogEntry]] = []
        self.last_snapshot: Snapshot | None = None
        self._incoming_snapshot: bytearray = bytearray()
        self._incoming_snapshot_index = 0
        self.elections_started = 0
        self.campaign_transfer = False

    # ------------------------------------------------------------------ configuration
    @classmethod
    def make_config(cls, **options: Any) -> RaftConfig:
        return RaftConfig.from_options(**options)

    @classmethod
    def make_checker(cls) -> InvariantChecker:
        from quorumkit.protocols.raft.invariants import RaftChecker

        return RaftChecker()

    @property
    def membership(self) -> Membership:
        """The latest configuration in the log, committed or not (dissertation 4.1)."""
        return self.configs[-1][1] if self.configs else self.snapshot_membership

    @property
    def voters(self) -> tuple[str, ...]:
        return self.membership.voters

    def is_leader(self) -> bool:
        return self.role is Role.LEADER

    def is_voter(self) -> bool:
        return self.node_id in self.membership.voters

    def quorum(self) -> int:
        return len(self.membership.voters) // 2 + 1

    def _membership_at(self, index: int) -> Membership:
        found = self.snapshot_membership
        for i, m in self.configs:
            if i <= index:
                found = m
        return found

    def _config_pending(self) -> bool:
        return bool(self.configs) and self.configs[-1][0] > self.commit_index

    # ------------------------------------------------------------------ persistence
    def _persist_hard_state(self, ctx: Context) -> None:
        voted = None if "forget-vote-on-restart" in self.unsafe else self.voted_for
        ctx.storage.put("hard", (self.current_term, voted))

    def _append_to_log(self, ctx: Context, index: int, entries: list[LogEntry]) -> None:
        """Write ``entries`` at ``index`` (truncating what was there) in memory and storage."""
        log = self.log
        if index <= log.last_index:
            log.truncate_from(index)
            self.configs = [(i, m) for i, m in self.configs if i < index]
        log.append(entries)
        for offset, e in enumerate(entries):
            if e.kind == CONFIG:
                self.configs.append((index + offset, e.command))
        ctx.storage.log_append(index, entries)
        if self.role is Role.LEADER:
            self._sync_progress_with_membership(ctx)

    # ------------------------------------------------------------------ inputs
    def on_start(self, ctx: Context) -> None:
        self.become_follower(ctx, 0, None)

    def on_recover(self, ctx: Context, stored: StoredState) -> None:
        """Restart: reload currentTerm, votedFor, the snapshot and the log (section 5.1, 7)."""
        term, voted = stored.hard.get("hard", (0, None))
        self.current_term = term
        self.voted_for = voted
        snap = stored.snapshot
        if isinstance(snap, Snapshot):
            self.sm.restore(snap.data)
            self.log.reset(snap.last_included_index, snap.last_included_term)
            self.snapshot_membership = snap.membership
            self.commit_index = self.last_applied = snap.last_included_index
            self.last_snapshot = snap
            self.snapshot_items = self.sm.size()
        if stored.log_start != self.log.first_index:
            raise InvariantViolation(
                "storage",
                f"log starts at {stored.log_start}, snapshot ends at {self.log.snapshot_index}",
            )
        self.log.append(list(stored.log))
        self.configs = [
            (self.log.first_index + i, e.command)
            for i, e in enumerate(stored.log)
            if e.kind == CONFIG
        ]
        self.become_follower(ctx, term, None, persist=False)

    def on_message(self, ctx: Context, src: str, msg: Any) -> None:
        handler = _HANDLERS.get(type(msg))
        if handler is not None:
            handler(self, ctx, src, msg)

    def on_timer(self, ctx: Context, name: str) -> None:
        if name == "election":
            self.on_election_timeout(ctx)
        elif name == "heartbeat":
            self.on_heartbeat_timeout(ctx)
        elif name == "check_quorum":
            self.on_check_quorum(ctx)
        elif name == "vote_retry":
            self.on_vote_retry(ctx)
        elif name == "transfer":
            self.transfer_target = None

    def on_client(self, ctx: Context, request: ClientRequest) -> None:
        """A client command: leaders replicate it (writes) or serve it by ReadIndex (reads);
        followers answer with the leader's id (section 8)."""
        if "stale-read" in self.unsafe and is_read_only(request.command):
            ctx.reply(request, self.sm.read(request.command))
            return
        if self.role is not Role.LEADER:
            ctx.reply(request, {"error": "not_leader", "leader": self.leader_id})
            return
        if self.transfer_target is not None:
            ctx.reply(request, {"error": "not_leader", "leader": None, "detail": "transferring"})
            return
        if len(self.pending) + len(self.reads) + len(self.reads_waiting) >= self.cfg.max_pending:
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
        # register before proposing: a single-voter cluster commits inside _propose
        self.pending[self.log.last_index + 1] = (request, self.current_term)
        self._propose(ctx, LogEntry(self.current_term, command))

    # ------------------------------------------------------------------ roles
    def become_follower(
        self, ctx: Context, term: int, leader: str | None, *, persist: bool = True
    ) -> None:
        """Convert to follower in ``term`` (Figure 2, rules for all servers)."""
        was_leader = self.role is Role.LEADER
        changed = self.role is not Role.FOLLOWER
        if term > self.current_term:
            self.current_term = term
            self.voted_for = None
            changed = True  # a new term is worth a trace even for a follower
            if persist:
                self._persist_hard_state(ctx)
        if changed:
            ctx.cancel_timer("vote_retry")
        self.role = Role.FOLLOWER
        self.leader_id = leader
        if was_leader:
            self._abandon_leadership(ctx)
        if changed:
            ctx.trace("role", role="follower", term=self.current_term)
        self._reset_election_timer(ctx)

    def _abandon_leadership(self, ctx: Context) -> None:
        ctx.cancel_timer("heartbeat")
        ctx.cancel_timer("check_quorum")
        ctx.cancel_timer("transfer")
        self.transfer_target = None
        self.progress = {}
        for index in sorted(self.pending):
            request, _ = self.pending[index]
            ctx.reply(
                request,
                {"error": "leader_changed", "leader": self.leader_id, "indeterminate": True},
            )
        self.pending = {}
        for read in self.reads:
            ctx.reply(read.request, {"error": "not_leader", "leader": self.leader_id})
        for request in self.reads_waiting:
            ctx.reply(request, {"error": "not_leader", "leader": self.leader_id})
        self.reads = deque()
        self.reads_waiting = []

    def become_pre_candidate(self, ctx: Context) -> None:
        """Pre-vote (dissertation 9.6): ask whether an election could be won, without
        changing any term, so a partitioned node cannot disrupt the cluster on return."""
        self.role = Role.PRE_CANDIDATE
        self.leader_id = None
        self.votes = {self.node_id}
        ctx.trace("role", role="pre-candidate", term=self.current_term)
        self._reset_election_timer(ctx)
        if len(self.votes) >= self.quorum():
            self.become_candidate(ctx)
            return
        self._request_votes(ctx, self.current_term + 1, pre_vote=True, transfer=False)
        ctx.set_timer("vote_retry", self.cfg.heartbeat_ms / 1000)

    def become_candidate(self, ctx: Context, *, transfer: bool = False) -> None:
        """Section 5.2: increment currentTerm, vote for self, reset the election timer, send
        RequestVote to all other servers."""
        self.current_term += 1
        self.voted_for = self.node_id
        self._persist_hard_state(ctx)
        self.role = Role.CANDIDATE
        self.leader_id = None
        self.votes = {self.node_id}
        self.elections_started += 1
        ctx.trace("role", role="candidate", term=self.current_term)
        self._reset_election_timer(ctx)
        if len(self.votes) >= self.quorum():
            self.become_leader(ctx)
            return
        self._request_votes(ctx, self.current_term, pre_vote=False, transfer=transfer)
        self.campaign_transfer = transfer
        ctx.set_timer("vote_retry", self.cfg.heartbeat_ms / 1000)

    def _request_votes(self, ctx: Context, term: int, *, pre_vote: bool, transfer: bool) -> None:
        msg = RequestVote(
            term, self.node_id, self.log.last_index, self.log.last_term, pre_vote, transfer
        )
        for peer in self.voters:
            if peer != self.node_id and peer not in self.votes:
                ctx.send(peer, msg)

    def on_vote_retry(self, ctx: Context) -> None:
        """Section 5.1: servers retry RPCs if they do not receive a response in time. A
        candidate re-asks the voters that have not granted their vote yet."""
        if self.role is Role.PRE_CANDIDATE:
            self._request_votes(ctx, self.current_term + 1, pre_vote=True, transfer=False)
        elif self.role is Role.CANDIDATE:
            self._request_votes(
                ctx, self.current_term, pre_vote=False, transfer=self.campaign_transfer
            )
        else:
            return
        ctx.set_timer("vote_retry", self.cfg.heartbeat_ms / 1000)

    def become_leader(self, ctx: Context) -> None:
        """Section 5.2/5.3: initialize nextIndex to last log index + 1 and matchIndex to 0 for
        each server; append a no-op entry of the new term (section 8) and replicate it."""
        self.role = Role.LEADER
        self.leader_id = self.node_id
        self.progress = {}
        self.durable_index = self.durable_asked = 0
        self.transfer_target = None
        self.lease_acks = {}
        ctx.cancel_timer("election")
        ctx.cancel_timer("vote_retry")
        ctx.trace("role", role="leader", term=self.current_term)
        self._sync_progress_with_membership(ctx)
        if "commit-previous-term" in self.unsafe:
            # Figure 8's setting: no no-op, so only earlier-term entries may wait for commit
            for peer in self.progress:
                self._send_append(ctx, peer)
        else:
            self._propose(ctx, LogEntry(self.current_term, None, NOOP))
        self.needs_flush = True  # on_flush asks when our log (and term) is durable
        ctx.set_timer("heartbeat", self.cfg.heartbeat_ms / 1000)
        if self.cfg.check_quorum:
            ctx.set_timer("check_quorum", self.cfg.election_timeout_ms_min / 1000)

    def _sync_progress_with_membership(self, ctx: Context) -> None:
        m = self.membership
        wanted = [p for p in (*m.voters, *m.learners) if p != self.node_id]
        for peer in list(self.progress):
            if peer not in wanted:
                del self.progress[peer]
        for peer in wanted:
            if peer not in self.progress:
                self.progress[peer] = Progress(next=self.log.last_index + 1)

    # ------------------------------------------------------------------ timers
    def _reset_election_timer(self, ctx: Context) -> None:
        lo, hi = self.cfg.election_timeout_ms_min, self.cfg.election_timeout_ms_max
        ctx.set_timer("election", ctx.rng.uniform(lo, hi) / 1000)

    def on_election_timeout(self, ctx: Context) -> None:
        """Section 5.2: a follower that hears nothing for an election timeout campaigns."""
        if self.role is Role.LEADER:
            return
        if not self.is_voter():
            self._reset_election_timer(ctx)
            return
        if self.cfg.pre_vote:
            self.become_pre_candidate(ctx)
        else:
            self.become_candidate(ctx)

    def on_heartbeat_timeout(self, ctx: Context) -> None:
        """Section 5.2: leaders send periodic heartbeats to maintain their authority."""
        if self.role is not Role.LEADER:
            return
        for peer in self.progress:
            self._send_heartbeat(ctx, peer)
        ctx.set_timer("heartbeat", self.cfg.heartbeat_ms / 1000)

    def on_check_quorum(self, ctx: Context) -> None:
        """Dissertation 6.2: a leader that has not heard from a majority within an election
        timeout steps down, so clients can find the real leader."""
        if self.role is not Role.LEADER:
            return
        active = 1 if self.is_voter() else 0
        for peer in self.voters:
            pr = self.progress.get(peer)
            if pr is not None and pr.recent_active:
                active += 1
        for pr in self.progress.values():
            pr.recent_active = False
        if active < self.quorum():
            ctx.trace("check_quorum_lost", term=self.current_term)
            self.become_follower(ctx, self.current_term, None)
            return
        ctx.set_timer("check_quorum", self.cfg.election_timeout_ms_min / 1000)

    def _in_lease(self, ctx: Context) -> bool:
        """Leader stickiness (dissertation 4.2.3): with check-quorum, a server that heard from
        a leader within the minimum election timeout ignores vote requests."""
        if not self.cfg.check_quorum:
            return False
        if self.role is Role.LEADER:
            return True
        return (
            self.leader_id is not None
            and ctx.now() - self.leader_contact_at < self.cfg.election_timeout_ms_min / 1000
        )

    # ------------------------------------------------------------------ elections
    def on_request_vote(self, ctx: Context, src: str, m: RequestVote) -> None:
        """Figure 2, RequestVote RPC receiver implementation (with pre-vote, 9.6)."""
        if m.term > self.current_term and not m.transfer and self._in_lease(ctx):
            return  # ignore: we have a live leader
        if m.pre_vote:
            grant = m.term > self.current_term and self._log_ok_for_vote(m)
            ctx.send(src, RequestVoteResponse(m.term if grant else self.current_term, grant, True))
            return
        if m.term > self.current_term:
            self.become_follower(ctx, m.term, None)
        if m.term < self.current_term:
            ctx.send(src, RequestVoteResponse(self.current_term, False))
            return
        grant = self.voted_for in (None, m.candidate_id) and self._log_ok_for_vote(m)
        if grant:
            if self.voted_for != m.candidate_id:
                self.voted_for = m.candidate_id
                self._persist_hard_state(ctx)
            self._reset_election_timer(ctx)
        ctx.send(src, RequestVoteResponse(self.current_term, grant))

    def _log_ok_for_vote(self, m: RequestVote) -> bool:
        """Section 5.4.1: grant only to a candidate whose log is at least as up-to-date."""
        if "vote-without-log-check" in self.unsafe:
            return True
        return self.log.is_up_to_date(m.last_log_index, m.last_log_term)

    def on_request_vote_response(self, ctx: Context, src: str, m: RequestVoteResponse) -> None:
        if m.pre_vote:
            if m.term > self.current_term and not m.vote_granted:
                self.become_follower(ctx, m.term, None)
                return
            if (
                self.role is Role.PRE_CANDIDATE
                and m.vote_granted
                and m.term == self.current_term + 1
                and src in self.voters
            ):
                self.votes.add(src)
                if len(self.votes) >= self.quorum():
                    self.become_candidate(ctx)
            return
        if m.term > self.current_term:
            self.become_follower(ctx, m.term, None)
            return
        if self.role is Role.CANDIDATE and m.term == self.current_term and m.vote_granted:
            if src in self.voters:
                self.votes.add(src)
                if len(self.votes) >= self.quorum():
                    self.become_leader(ctx)

    # ------------------------------------------------------------------ replication: leader
    def _propose(self, ctx: Context, entry: LogEntry) -> int:
        """Append ``entry`` to the leader's log and start replicating it (section 5.3)."""
        index = self.log.last_index + 1
        self._append_to_log(ctx, index, [entry])
        self._maybe_commit(ctx)
        self.needs_flush = True  # replicate once per batch, in on_flush
        return index

    def on_flush(self, ctx: Context) -> None:
        """End of a batch: send the batch's new entries to every follower at once, and ask to
        be told when they are durable here."""
        self.needs_flush = False
        if self.role is Role.LEADER:
            last = self.log.last_index
            if last > self.durable_asked:
                self.durable_asked = last
                if ctx.when_durable((self.current_term, last)):
                    self.on_persisted(ctx, (self.current_term, last))
            for peer in self.progress:
                self._send_append(ctx, peer)

    def on_persisted(self, ctx: Context, token: Any) -> None:
        """Our log up to ``index`` is durable (token ``(term, index)`` from :meth:`on_flush`):
        from now on the leader of ``term`` counts itself for those entries (10.2.1). A token
        of an earlier leadership says nothing about today's log and is ignored."""
        term, index = token
        if self.role is Role.LEADER and term == self.current_term and index > self.durable_index:
            self.durable_index = min(index, self.log.last_index)
            self._maybe_commit(ctx)

    def _send_ae(self, ctx: Context, peer: str, msg: AppendEntries) -> None:
        """AppendEntries need not wait for the leader's own writes (10.2.1), once the term
        the leader was elected in is known durable (``durable_index`` > 0)."""
        if self.durable_index:
            ctx.send_early(peer, msg)
        else:
            ctx.send(peer, msg)

    def leader(self) -> str | None:
        return self.leader_id

    def _send_append(self, ctx: Context, peer: str) -> None:
        """Send new entries to ``peer`` as flow control allows."""
        pr = self.progress[peer]
        if pr.state == SNAPSHOT:
            return
        if pr.state == PROBE:
            if pr.probe_sent:
                return
        elif len(pr.inflight) >= self.cfg.max_inflight or pr.next > self.log.last_index:
            return
        self._send_entries(ctx, peer, pr, read_seq=0)

    def _send_entries(self, ctx: Context, peer: str, pr: Progress, read_seq: int) -> None:
        log = self.log
        prev = pr.next - 1
        prev_term = log.term_at(prev)
        if prev_term is None:  # compacted away: the follower needs the snapshot (section 7)
            self._start_snapshot(ctx, peer, pr)
            return
        entries = tuple(log.slice(pr.next, pr.next + self.cfg.max_entries_per_append))
        self._send_ae(
            ctx,
            peer,
            AppendEntries(
                self.current_term,
                self.node_id,
                prev,
                prev_term,
                entries,
                self.commit_index,
                read_seq,
            ),
        )
        if pr.state == PROBE:
            pr.probe_sent = True
        elif entries:
            pr.next = prev + len(entries) + 1
            pr.inflight.append(pr.next - 1)

    def _send_heartbeat(self, ctx: Context, peer: str, read_seq: int = 0) -> None:
        """A heartbeat; in probe state it retries the probe, in replicate state with entries
        missing it sends from nextIndex (a rejection then resets flow control)."""
        pr = self.progress[peer]
        seq = read_seq or self.read_seq
        if pr.state == SNAPSHOT:
            self._send_snapshot_chunk(ctx, peer, pr)
            return
        if pr.state == PROBE or pr.match < self.log.last_index:
            if pr.state == REPLICATE and len(pr.inflight) >= self.cfg.max_inflight:
                pr.inflight.popleft()  # let one more through; loss will be found by rejection
            if pr.state == PROBE:
                pr.probe_sent = False
            self._send_entries(ctx, peer, pr, read_seq=seq)
            return
        prev = pr.match
        self._send_ae(
            ctx,
            peer,
            AppendEntries(
                self.current_term,
                self.node_id,
                prev,
                self.log.term_at(prev) or 0,
                (),
                min(self.commit_index, prev),
                seq,
            ),
        )

    def _responding_follower(self, ctx: Context, src: str, term: int) -> Progress | None:
        """Figure 2's term rule for a response; for a leader of that term, the follower's
        progress, marked active (check-quorum) and acknowledged now (lease reads)."""
        if term > self.current_term:
            self.become_follower(ctx, term, None)
            return None
        if self.role is not Role.LEADER or term != self.current_term:
            return None
        pr = self.progress.get(src)
        if pr is None:
            return None
        pr.recent_active = True
        self.lease_acks[src] = ctx.now()
        return pr

    def on_append_entries_response(self, ctx: Context, src: str, m: AppendEntriesResponse) -> None:
        pr = self._responding_follower(ctx, src, m.term)
        if pr is None:
            return
        if m.read_seq > pr.read_ack:
            pr.read_ack = m.read_seq
            self._advance_reads(ctx)
        if m.success:
            if m.match_index > pr.match:
                pr.match = m.match_index
            if pr.next <= pr.match:
                pr.next = pr.match + 1
            if pr.state == PROBE:
                pr.state = REPLICATE
                pr.inflight.clear()
            while pr.inflight and pr.inflight[0] <= pr.match:
                pr.inflight.popleft()
            self._maybe_commit(ctx)
            if not self.is_leader():
                return  # committed a configuration that removed us
            self._send_append(ctx, src)
            if self.transfer_target == src and pr.match == self.log.last_index:
                ctx.send(src, TimeoutNow(self.current_term, self.node_id))
            return
        # rejected. A follower whose log is shorter than what it acknowledged lost its log
        # (a replica rebuilt from an empty data dir): start over from what it has.
        if m.conflict_term == 0 and 0 < m.conflict_index <= pr.match:
            pr.match = m.conflict_index - 1
            pr.next = m.conflict_index
            pr.state = PROBE
            pr.inflight.clear()
            pr.probe_sent = False
            self._send_append(ctx, src)
            return
        # ignore stale rejections, else back up using the hints (section 5.3)
        if pr.state == REPLICATE and m.reject_index <= pr.match:
            return
        if pr.state == PROBE and m.reject_index != pr.next - 1:
            return
        if m.conflict_term > 0:
            last = self.log.last_index_of_term(m.conflict_term)
            nxt = last + 1 if last > 0 else m.conflict_index
        else:
            nxt = m.conflict_index
        nxt = max(min(nxt, m.reject_index), pr.match + 1, 1)
        pr.next = nxt
        pr.state = PROBE
        pr.inflight.clear()
        pr.probe_sent = False
        self._send_append(ctx, src)

    def _maybe_commit(self, ctx: Context) -> None:
        """Section 5.3/5.4.2: commit the highest index replicated on a majority of voters,
        counting replicas only for an entry of the current term (Figure 8). The leader counts
        only its entries known durable (dissertation 10.2.1): it may have sent them early."""
        voters = self.voters
        matches = [
            self.durable_index
            if v == self.node_id
            else (self.progress[v].match if v in self.progress else 0)
            for v in voters
        ]
        if not matches:
            return
        matches.sort(reverse=True)
        n = matches[self.quorum() - 1]
        if n <= self.commit_index:
            return
        if "commit-previous-term" not in self.unsafe and self.log.term_at(n) != self.current_term:
            return
        self._advance_commit(ctx, n)

    def _advance_commit(self, ctx: Context, index: int) -> None:
        self.commit_index = index
        ctx.trace("commit", index=index, term=self.current_term)
        self._apply_committed(ctx)
        if self.role is Role.LEADER:
            if self.reads_waiting and self.log.term_at(self.commit_index) == self.current_term:
                waiting, self.reads_waiting = self.reads_waiting, []
                for request in waiting:
                    self._start_read(ctx, request)
            self._serve_reads(ctx)
            if self.node_id not in self.voters and not self._config_pending():
                # dissertation 4.2.2: a leader removed by a committed configuration steps down
                self.become_follower(ctx, self.current_term, None)

    # ------------------------------------------------------------------ replication: follower
    def on_append_entries(self, ctx: Context, src: str, m: AppendEntries) -> None:
        """Figure 2, AppendEntries RPC receiver implementation."""
        if m.term < self.current_term:
            ctx.send(src, AppendEntriesResponse(self.current_term, False, 0, m.prev_log_index))
            return
        if m.term > self.current_term or self.role is not Role.FOLLOWER:
            self.become_follower(ctx, m.term, m.leader_id)
        else:
            self._reset_election_timer(ctx)
        self.leader_id = m.leader_id
        self.leader_contact_at = ctx.now()
        log = self.log
        prev, prev_term, entries = m.prev_log_index, m.prev_log_term, m.entries
        if prev < log.snapshot_index:
            # entries up to our snapshot are committed, so they match the leader's
            skip = log.snapshot_index - prev
            if skip >= len(entries):
                ctx.send(
                    src,
                    AppendEntriesResponse(
                        self.current_term, True, log.snapshot_index, read_seq=m.read_seq
                    ),
                )
                return
            entries = entries[skip:]
            prev, prev_term = log.snapshot_index, log.snapshot_term
        local = log.term_at(prev)
        if local is None:  # our log is too short: step 2 of the receiver
            ctx.send(
                src,
                AppendEntriesResponse(
                    self.current_term, False, 0, m.prev_log_index, 0, log.last_index + 1, m.read_seq
                ),
            )
            return
        if local != prev_term:
            ctx.send(
                src,
                AppendEntriesResponse(
                    self.current_term,
                    False,
                    0,
                    m.prev_log_index,
                    local,
                    log.first_index_of_term(prev),
                    m.read_seq,
                ),
            )
            return
        index = prev + 1
        for i, entry in enumerate(entries):
            here = log.term_at(index + i)
            if here is None:
                self._append_to_log(ctx, index + i, list(entries[i:]))
                break
            if here != entry.term:
                if index + i <= self.commit_index:
                    raise InvariantViolation(
                        "state machine safety",
                        f"{self.node_id} asked to overwrite committed entry {index + i}",
                    )
                if "no-truncate-on-conflict" in self.unsafe:
                    log.replace_at(index + i, entry)
                    ctx.storage.log_append(index + i, log.slice(index + i, log.last_index + 1))
                    continue
                self._append_to_log(ctx, index + i, list(entries[i:]))  # step 3 and 4
                break
        last_new = prev + len(entries)
        if m.leader_commit > self.commit_index:  # step 5
            new_commit = min(m.leader_commit, last_new)
            if new_commit > self.commit_index:
                self._advance_commit(ctx, new_commit)
        ctx.send(src, AppendEntriesResponse(self.current_term, True, last_new, read_seq=m.read_seq))

    # ------------------------------------------------------------------ applying
    def _apply_committed(self, ctx: Context) -> None:
        """Figure 2: if commitIndex > lastApplied, apply log[lastApplied + 1] in order."""
        log = self.log
        while self.last_applied < self.commit_index:
            index = self.last_applied + 1
            entry = log.entry(index)
            result = self.sm.apply(entry.command) if entry.kind == COMMAND else None
            self.last_applied = index
            if self.keep_history:
                self.applied_entries.append((index, entry))
            waiting = self.pending.pop(index, None)
            if waiting is not None:
                # committed by a quorum of durable copies: the answer does not wait for our
                # own pending writes (rule 4's early effects)
                request, term = waiting
                if term == entry.term:
                    ctx.reply_early(request, result)
                else:
                    ctx.reply_early(request, {"error": "leader_changed", "indeterminate": True})
        self._maybe_snapshot(ctx)

    # ------------------------------------------------------------------ reads (6.4)
    def _start_read(self, ctx: Context, request: ClientRequest) -> None:
        """ReadIndex (dissertation 6.4): record the commit index, confirm leadership with a
        heartbeat round, then answer once the state machine has applied that index."""
        if self.log.term_at(self.commit_index) != self.current_term:
            self.reads_waiting.append(request)  # no entry of this term committed yet
            return
        if self.cfg.lease_reads and self._lease_valid(ctx):
            self.reads.append(_Read(0, self.commit_index, request))
            self._serve_reads(ctx)
            return
        self.read_seq += 1
        self.reads.append(_Read(self.read_seq, self.commit_index, request))
        if len(self.voters) == 1 and self.is_voter():
            self._serve_reads(ctx)
            return
        for peer in self.voters:
            if peer != self.node_id and peer in self.progress:
                self._send_heartbeat(ctx, peer, self.read_seq)

    def _lease_valid(self, ctx: Context) -> bool:
        """Lease reads (dissertation 6.4.1): a majority acknowledged us within the minimum
        election timeout, so no other leader can exist yet (assumes bounded clock drift)."""
        lease = self.cfg.election_timeout_ms_min / 1000 * 0.9
        now = ctx.now()
        fresh = 1 if self.is_voter() else 0
        fresh += sum(1 for v in self.voters if now - self.lease_acks.get(v, -INF) < lease)
        return fresh >= self.quorum()

    def _confirmed_read_seq(self) -> int:
        acks = [
            self.read_seq
            if v == self.node_id
            else (self.progress[v].read_ack if v in self.progress else 0)
            for v in self.voters
        ]
        acks.sort(reverse=True)
        return acks[self.quorum() - 1] if acks else 0

    def _advance_reads(self, ctx: Context) -> None:
        if self.reads:
            self._serve_reads(ctx)

    def _serve_reads(self, ctx: Context) -> None:
        confirmed = self._confirmed_read_seq()
        reads = self.reads
        while reads and reads[0].seq <= confirmed and reads[0].index <= self.last_applied:
            read = reads.popleft()
            # committed state, leadership confirmed by a quorum: no own write involved
            ctx.reply_early(read.request, self.sm.read(read.request.command))

    # ------------------------------------------------------------------ snapshots (7)
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
        """Log compaction (section 7): snapshot the state machine at lastApplied."""
        index = self.last_applied
        if index <= self.log.snapshot_index:
            return
        term = self.log.term_at(index)
        if term is None:  # pragma: no cover - applied entries are in the log
            raise InvariantViolation("log", f"applied entry {index} missing from the log")
        snap = Snapshot(index, term, self._membership_at(index), self.sm.snapshot())
        ctx.storage.save_snapshot(snap, index)
        self.log.compact(index, term)
        self.snapshot_membership = snap.membership
        self.configs = [(i, m) for i, m in self.configs if i > index]
        self.last_snapshot = snap
        self.snapshot_items = self.sm.size()
        ctx.trace("snapshot", index=index)

    def _start_snapshot(self, ctx: Context, peer: str, pr: Progress) -> None:
        if self.last_snapshot is None:  # pragma: no cover - compaction implies a snapshot
            raise InvariantViolation("log", "entries compacted without a snapshot")
        pr.state = SNAPSHOT
        pr.snapshot = self.last_snapshot
        pr.snapshot_offset = 0
        pr.inflight.clear()
        self._send_snapshot_chunk(ctx, peer, pr)

    def _send_snapshot_chunk(self, ctx: Context, peer: str, pr: Progress) -> None:
        snap = pr.snapshot
        if snap is None:
            return
        lo = pr.snapshot_offset
        hi = lo + self.cfg.snapshot_chunk_bytes
        ctx.send(
            peer,
            InstallSnapshot(
                self.current_term,
                self.node_id,
                snap.last_included_index,
                snap.last_included_term,
                snap.membership,
                lo,
                snap.data[lo:hi],
                hi >= len(snap.data),
            ),
        )

    def on_install_snapshot(self, ctx: Context, src: str, m: InstallSnapshot) -> None:
        """InstallSnapshot RPC receiver (section 7, Figure 13), chunked by offset."""
        if m.term < self.current_term:
            ctx.send(
                src, InstallSnapshotResponse(self.current_term, m.last_included_index, 0, False)
            )
            return
        if m.term > self.current_term or self.role is not Role.FOLLOWER:
            self.become_follower(ctx, m.term, m.leader_id)
        else:
            self._reset_election_timer(ctx)
        self.leader_id = m.leader_id
        self.leader_contact_at = ctx.now()
        index = m.last_included_index
        if index <= self.commit_index:
            ctx.send(src, InstallSnapshotResponse(self.current_term, index, 0, True))
            return
        if m.offset == 0:
            self._incoming_snapshot = bytearray()
            self._incoming_snapshot_index = index
        if index != self._incoming_snapshot_index or m.offset != len(self._incoming_snapshot):
            ctx.send(
                src,
                InstallSnapshotResponse(
                    self.current_term,
                    index,
                    len(self._incoming_snapshot) if index == self._incoming_snapshot_index else 0,
                    False,
                ),
            )
            return
        self._incoming_snapshot += m.data
        if not m.done:
            ctx.send(
                src,
                InstallSnapshotResponse(
                    self.current_term, index, len(self._incoming_snapshot), False
                ),
            )
            return
        data = bytes(self._incoming_snapshot)
        self._incoming_snapshot = bytearray()
        snap = Snapshot(index, m.last_included_term, m.membership, data)
        log = self.log
        if log.term_at(index) == m.last_included_term:
            # Figure 13 step 6: keep the entries that follow the snapshot
            ctx.storage.save_snapshot(snap, index)
            log.compact(index, m.last_included_term)
            self.configs = [(i, c) for i, c in self.configs if i > index]
        else:
            ctx.storage.log_truncate(log.first_index)
            ctx.storage.save_snapshot(snap, index)
            log.reset(index, m.last_included_term)
            self.configs = []
        self.snapshot_membership = m.membership
        self.sm.restore(data)
        self.last_snapshot = snap
        self.snapshot_items = self.sm.size()
        self.commit_index = max(self.commit_index, index)
        self.last_applied = index
        ctx.trace("install_snapshot", index=index)
        ctx.send(src, InstallSnapshotResponse(self.current_term, index, len(data), True))

    def on_install_snapshot_response(
        self, ctx: Context, src: str, m: InstallSnapshotResponse
    ) -> None:
        pr = self._responding_follower(ctx, src, m.term)
        if pr is None:
            return
        if pr.state != SNAPSHOT or pr.snapshot is None:
            return
        if m.last_included_index != pr.snapshot.last_included_index:
            return
        if m.done:
            pr.match = max(pr.match, m.last_included_index)
            pr.next = pr.match + 1
            pr.state = PROBE
            pr.probe_sent = False
            pr.snapshot = None
            self._send_append(ctx, src)
            return
        if m.next_offset != pr.snapshot_offset:
            pr.snapshot_offset = m.next_offset
            self._send_snapshot_chunk(ctx, src, pr)
        elif m.next_offset == 0:
            self._send_snapshot_chunk(ctx, src, pr)

    # ------------------------------------------------------------------ leadership transfer
    def transfer_leadership(self, ctx: Context, target: str) -> str | None:
        """Dissertation 3.10: bring ``target`` up to date, then tell it to campaign at once.
        Returns None when started, else an error string."""
        if self.role is not Role.LEADER:
            return "not_leader"
        if target == self.node_id:
            return "already_leader"
        if target not in self.voters:
            return f"{target} is not a voter"
        self.transfer_target = target
        ctx.set_timer("transfer", self.cfg.election_timeout_ms_max / 1000)
        pr = self.progress[target]
        if pr.match == self.log.last_index:
            ctx.send(target, TimeoutNow(self.current_term, self.node_id))
        else:
            self._send_heartbeat(ctx, target)
        return None

    def on_timeout_now(self, ctx: Context, src: str, m: TimeoutNow) -> None:
        if m.term == self.current_term and self.is_voter() and self.role is not Role.LEADER:
            self.become_candidate(ctx, transfer=True)

    # ------------------------------------------------------------------ membership (4)
    def change_membership(self, ctx: Context, action: str, node: str) -> str | None:
        """Single-server membership change (dissertation 4.1): ``add_learner``, ``promote``
        (learner to voter, once caught up) or ``remove``. One change at a time, and only
        after the leader committed an entry of its term. Returns None or an error string."""
        if self.role is not Role.LEADER:
            return "not_leader"
        if self.log.term_at(self.commit_index) != self.current_term:
            return "leader has not committed an entry of its term yet"
        if self._config_pending():
            return "a membership change is already pending"
        m = self.membership
        voters, learners = list(m.voters), list(m.learners)
        if action == "add_learner":
            if node in voters or node in learners:
                return f"{node} is already a member"
            learners.append(node)
        elif action == "promote":
            if node not in learners:
                return f"{node} is not a learner"
            pr = self.progress.get(node)
            if pr is None or pr.match < self.commit_index:
                return f"learner {node} has not caught up yet"
            learners.remove(node)
            voters.append(node)
        elif action == "remove":
            if node in voters:
                if len(voters) == 1:
                    return "cannot remove the last voter"
                voters.remove(node)
            elif node in learners:
                learners.remove(node)
            else:
                return f"{node} is not a member"
        else:
            return f"unknown membership action {action!r} (add_learner, promote, remove)"
        self._propose(
            ctx, LogEntry(self.current_term, Membership(tuple(voters), tuple(learners)), CONFIG)
        )
        return None

    # ------------------------------------------------------------------ Start()
    def submit(self, ctx: Context, command: Any) -> SubmitResult:
        """Raft's Start(command): append to the leader's log; (index, term, is_leader)."""
        if self.role is not Role.LEADER or self.transfer_target is not None:
            return SubmitResult(-1, self.current_term, False)
        problem = check_encodable(command)
        if problem is not None:
            return SubmitResult(-1, self.current_term, True, problem)
        index = self._propose(ctx, LogEntry(self.current_term, command))
        return SubmitResult(index, self.current_term, True)

    def local_read(self, command: Any) -> Any:
        """A stale read of this replica's state machine (no ReadIndex round)."""
        return self.sm.read(command)

    def state_digest(self) -> tuple[int, str]:
        """(last applied index, digest of the state machine), to compare replicas."""
        return (self.last_applied, self.sm.state_digest())

    def applied_commands(self) -> list[tuple[int, Any]]:
        """``(index, command)`` of the client commands applied since the last (re)start."""
        return [(i, e.command) for i, e in self.applied_entries if e.kind == COMMAND]

    # ------------------------------------------------------------------ status
    def status(self) -> dict[str, Any]:
        return {
            "id": self.node_id,
            "role": self.role.value,
            "term": self.current_term,
            "leader": self.leader_id,
            "commit_index": self.commit_index,
            "last_applied": self.last_applied,
            "log_length": self.log.last_index,
            "voted_for": self.voted_for,
            "snapshot_index": self.log.snapshot_index,
            "voters": list(self.membership.voters),
            "learners": list(self.membership.learners),
        }


_HANDLERS: dict[type, Any] = {
    RequestVote: RaftNode.on_request_vote,
    RequestVoteResponse: RaftNode.on_request_vote_response,
    AppendEntries: RaftNode.on_append_entries,
    AppendEntriesResponse: RaftNode.on_append_entries_response,
    InstallSnapshot: RaftNode.on_install_snapshot,
    InstallSnapshotResponse: RaftNode.on_install_snapshot_response,
    TimeoutNow: RaftNode.on_timeout_now,
}

__all__ = ["ConfigError", "Progress", "RaftNode", "Role", "SubmitResult"]
