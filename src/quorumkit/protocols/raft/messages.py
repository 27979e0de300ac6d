"""Raft's messages (Ongaro & Ousterhout 2014, Figure 2; dissertation chapters 4, 5, 6, 9).

Each is a frozen dataclass named as in the paper; field names follow Figure 2. Additions beyond
Figure 2 are marked with the section that introduces them.
"""

from __future__ import annotations

from typing import Any

from quorumkit.codec import message

#: entry kinds
COMMAND = 0
NOOP = 1  # appended by a new leader at the start of its term (section 8; dissertation 6.4)
CONFIG = 2  # a membership change (dissertation 4.1)


@message("raft.LogEntry")
class LogEntry:
    """One log entry: the term it was created in and the command (Figure 2)."""

    term: int
    command: Any
    kind: int = COMMAND


@message("raft.Membership")
class Membership:
    """A cluster configuration: voters and non-voting learners (dissertation 4.1, 4.2.1)."""

    voters: tuple[str, ...]
    learners: tuple[str, ...] = ()


@message("raft.RequestVote")
class RequestVote:
    """Invoked by candidates to gather votes (section 5.2); ``pre_vote`` marks the pre-vote
    round of dissertation 9.6 (no term change anywhere); ``transfer`` marks a campaign started
    by TimeoutNow (dissertation 3.10), which voters must not ignore for leader stickiness."""

    term: int
    candidate_id: str
    last_log_index: int
    last_log_term: int
    pre_vote: bool = False
    transfer: bool = False


@message("raft.RequestVoteResponse")
class RequestVoteResponse:
    term: int
    vote_granted: bool
    pre_vote: bool = False


@message("raft.AppendEntries")
class AppendEntries:
    """Invoked by the leader to replicate entries and as heartbeat (sections 5.3, 5.2).

    ``read_seq`` is the ReadIndex round this message confirms leadership for (dissertation
    6.4); followers echo it back.
    """

    term: int
    leader_id: str
    prev_log_index: int
    prev_log_term: int
    entries: tuple[LogEntry, ...]
    leader_commit: int
    read_seq: int = 0


@message("raft.AppendEntriesResponse")
class AppendEntriesResponse:
    """Reply to AppendEntries. On success ``match_index`` is the last index known to match
    the leader. On rejection, ``reject_index`` is the request's prev_log_index and
    ``conflict_term``/``conflict_index`` are the fast-backup hints (section 5.3, last
    paragraphs; 0 term means the follower's log is too short)."""

    term: int
    success: bool
    match_index: int
    reject_index: int = 0
    conflict_term: int = 0
    conflict_index: int = 0
    read_seq: int = 0


@message("raft.InstallSnapshot")
class InstallSnapshot:
    """Sent by the leader to a follower that is behind the leader's log start (section 7)."""

    term: int
    leader_id: str
    last_included_index: int
    last_included_term: int
    membership: Membership
    offset: int
    data: bytes
    done: bool


@message("raft.InstallSnapshotResponse")
class InstallSnapshotResponse:
    """Reply to InstallSnapshot: the next offset wanted, or the installed index when done."""

    term: int
    last_included_index: int
    next_offset: int
    done: bool


@message("raft.TimeoutNow")
class TimeoutNow:
    """Leadership transfer: the target starts an election at once (dissertation 3.10)."""

    term: int
    leader_id: str


@message("raft.Snapshot")
class Snapshot:
    """What a snapshot stores: the last included entry, the configuration, the state machine."""

    last_included_index: int
    last_included_term: int
    membership: Membership
    data: bytes
