"""Multi-Paxos: the synod protocol per slot, a stable leader, learners, catch-up, snapshots."""

from quorumkit.protocols.paxos.config import UNSAFE_VARIANTS, PaxosConfig
from quorumkit.protocols.paxos.invariants import PaxosChecker
from quorumkit.protocols.paxos.messages import (
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
from quorumkit.protocols.paxos.node import PaxosNode, Proposal, Role, SubmitResult

__all__ = [
    "NOOP_VALUE",
    "UNSAFE_VARIANTS",
    "ZERO_BALLOT",
    "Accept",
    "Accepted",
    "Ballot",
    "CatchUp",
    "Decide",
    "Heartbeat",
    "HeartbeatReply",
    "Nack",
    "PaxosChecker",
    "PaxosConfig",
    "PaxosNode",
    "Prepare",
    "Promise",
    "Proposal",
    "Role",
    "SlotEntry",
    "Snapshot",
    "SnapshotChunk",
    "SubmitResult",
    "Value",
]
