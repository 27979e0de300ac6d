"""Raft: election, replication, persistence, snapshots, membership, reads, transfer."""

from quorumkit.protocols.raft.config import UNSAFE_VARIANTS, RaftConfig
from quorumkit.protocols.raft.invariants import RaftChecker
from quorumkit.protocols.raft.messages import (
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
from quorumkit.protocols.raft.node import Progress, RaftNode, Role, SubmitResult

__all__ = [
    "UNSAFE_VARIANTS",
    "AppendEntries",
    "AppendEntriesResponse",
    "InstallSnapshot",
    "InstallSnapshotResponse",
    "LogEntry",
    "Membership",
    "Progress",
    "RaftChecker",
    "RaftConfig",
    "RaftNode",
    "RequestVote",
    "RequestVoteResponse",
    "Role",
    "Snapshot",
    "SubmitResult",
    "TimeoutNow",
]
