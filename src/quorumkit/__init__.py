"""quorumkit: Raft, Multi-Paxos and PBFT as real software.

The seed-compatible facade is importable from the top level::

    from quorumkit import DistributedSystem, Node, NodeState, Message, MessageType

The simulator is :mod:`quorumkit.sim`, the formal model :mod:`quorumkit.model`, the protocol
contract :mod:`quorumkit.protocol`.
"""

from quorumkit.errors import ConfigError, DecodeError, InvariantViolation, PeerError
from quorumkit.facade import (
    DistributedSystem,
    LogEntry,
    Message,
    MessageType,
    Node,
    NodeState,
    RaftNode,
    RaftSystem,
    demonstrate_raft,
)
from quorumkit.facade_consensus import (
    ByzantineNode,
    ByzantineSystem,
    PaxosNode,
    PaxosSystem,
    demonstrate_byzantine_fault_tolerance,
)

__version__ = "0.1.0"

__all__ = [
    "ByzantineNode",
    "ByzantineSystem",
    "ConfigError",
    "DecodeError",
    "DistributedSystem",
    "InvariantViolation",
    "LogEntry",
    "Message",
    "MessageType",
    "Node",
    "NodeState",
    "PaxosNode",
    "PaxosSystem",
    "PeerError",
    "RaftNode",
    "RaftSystem",
    "__version__",
    "demonstrate_byzantine_fault_tolerance",
    "demonstrate_raft",
]
