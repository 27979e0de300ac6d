"""Multi-Paxos's messages (Lamport, "Paxos Made Simple", 2001).

Phase names follow section 2.2 (``Prepare`` is 1a, ``Promise`` 1b, ``Accept`` 2a, ``Accepted``
2b); section 3 runs one instance per log *slot* under a distinguished leader. Additions beyond
the paper (rejections, heartbeats, catch-up, snapshots) say what they are for.

A ballot is ``(round, node_id)``: tuples order totally, rounds first, the node id breaking ties,
so two proposers never use the same ballot (section 2.2: "different proposers choose their
numbers from disjoint sets").
"""

from __future__ import annotations

from typing import Any

from quorumkit.codec import message

#: ``(round, node_id)``, ordered as a tuple
Ballot = tuple[int, str]
#: below every real ballot
ZERO_BALLOT: Ballot = (0, "")

#: value kinds
COMMAND = 0
NOOP = 1  # fills a gap slot (section 3: "no-op" commands)


@message("paxos.Value")
class Value:
    """What a slot holds: a client command, or a no-op (section 3)."""

    command: Any
    kind: int = COMMAND


NOOP_VALUE = Value(None, NOOP)


@message("paxos.SlotEntry")
class SlotEntry:
    """An acceptor's state for one slot: the highest-numbered proposal it accepted. (A slot
    the acceptor knows decided holds the decided value, with the ballot it was learned at.)"""

    ballot: Ballot
    value: Value


@message("paxos.Prepare")
class Prepare:
    """Phase 1(a) for every slot >= ``first_slot`` at once (section 3: the new leader runs
    phase 1 for infinitely many instances with one short message)."""

    ballot: Ballot
    first_slot: int


@message("paxos.Promise")
class Promise:
    """Phase 1(b): a promise never again to accept a proposal numbered below ``ballot``, with,
    for every slot >= the requested one and above the acceptor's ``commit`` (its decided
    prefix), the highest-numbered proposal it accepted."""

    ballot: Ballot
    commit: int
    accepted: tuple[tuple[int, SlotEntry], ...]


@message("paxos.Accept")
class Accept:
    """Phase 2(a) for slots ``first_slot, first_slot + 1, ...`` (one instance per slot, sent
    together); ``commit`` is the leader's decided prefix (learners, section 2.3)."""

    ballot: Ballot
    first_slot: int
    values: tuple[Value, ...]
    commit: int


@message("paxos.Accepted")
class Accepted:
    """Phase 2(b): the acceptor accepted ``ballot`` for ``count`` slots from ``first_slot``,
    reported to the leader, the distinguished learner (section 2.3)."""

    ballot: Ballot
    first_slot: int
    count: int


@message("paxos.Nack")
class Nack:
    """A rejection: the acceptor promised ``promised`` > ``ballot`` (the optimization of
    section 2.2: "the acceptor should inform the proposer, who should abandon its proposal")."""

    ballot: Ballot
    promised: Ballot


@message("paxos.Heartbeat")
class Heartbeat:
    """The leader is alive (section 3: leader election needs timeouts); carries the decided
    prefix and a read round (a linearizable read waits for a majority to echo it)."""

    ballot: Ballot
    commit: int
    read_seq: int


@message("paxos.HeartbeatReply")
class HeartbeatReply:
    """An acceptor has promised nothing above ``ballot``: it echoes ``read_seq``."""

    ballot: Ballot
    read_seq: int


@message("paxos.CatchUp")
class CatchUp:
    """A lagging learner asks for the decided values from ``next_slot`` on; while it receives
    a snapshot it names the snapshot (``snapshot_upto``) and the bytes it has (``offset``)."""

    next_slot: int
    snapshot_upto: int = 0
    offset: int = 0


@message("paxos.Decide")
class Decide:
    """Decided values of slots ``first_slot, ...`` (learners, section 2.3); ``commit`` is the
    sender's decided prefix, so the receiver knows whether to ask for more."""

    first_slot: int
    entries: tuple[SlotEntry, ...]
    commit: int


@message("paxos.SnapshotChunk")
class SnapshotChunk:
    """Part of the state-machine snapshot of every slot <= ``upto``, for a learner that needs
    slots the sender has compacted."""

    upto: int
    offset: int
    data: bytes
    done: bool


@message("paxos.Snapshot")
class Snapshot:
    """What a snapshot stores: the state machine after applying every slot <= ``upto``."""

    upto: int
    data: bytes
