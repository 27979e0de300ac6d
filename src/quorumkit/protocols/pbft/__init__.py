"""PBFT (Castro & Liskov 1999/2002): normal case with batching, checkpoints and garbage
collection, state transfer, view changes, Ed25519 signatures on every message."""

from quorumkit.protocols.pbft.config import UNSAFE_VARIANTS, PbftConfig, theorem_3_1
from quorumkit.protocols.pbft.crypto import Keyring, generate_keypair, write_keypair
from quorumkit.protocols.pbft.invariants import PbftChecker
from quorumkit.protocols.pbft.messages import (
    NULL_DIGEST,
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
    StateTransfer,
    Status,
    ViewChange,
    batch_digest,
    request_digest,
)
from quorumkit.protocols.pbft.node import BYZANTINE_BEHAVIOURS, Executed, PbftNode, Slot

__all__ = [
    "BYZANTINE_BEHAVIOURS",
    "NULL_DIGEST",
    "UNSAFE_VARIANTS",
    "Checkpoint",
    "Commit",
    "CommitCert",
    "Executed",
    "Fetch",
    "Keyring",
    "NewView",
    "PbftChecker",
    "PbftConfig",
    "PbftNode",
    "PrePrepare",
    "Prepare",
    "PreparedCert",
    "Reply",
    "Request",
    "Slot",
    "StateTransfer",
    "Status",
    "ViewChange",
    "batch_digest",
    "generate_keypair",
    "request_digest",
    "theorem_3_1",
    "write_keypair",
]
