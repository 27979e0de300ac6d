"""PBFT's messages (Castro & Liskov 1999, §4; TOCS 2002 §2-§4), named as in the paper.

Every message a replica or client sends carries its ``sender`` (a request: its ``client``) and
a ``signature`` (crypto.py, rule 2), the last field. With ``auth="mac"`` the ``signature`` field
of PRE-PREPARE, COMMIT, REPLY, STATUS and FETCH holds an authenticator vector instead (auth.py),
and the pre-prepares inside a NEW-VIEW hold nothing. Containers that only group signed messages
(:class:`PreparedCert`, :class:`CommitCert`) and records written to storage
(:class:`SlotRecord`, :class:`StableCheckpoint`) are not signed themselves.
"""

from __future__ import annotations

from typing import Any

from quorumkit.codec import encode, message
from quorumkit.protocols.pbft.crypto import digest

#: the digest of the null request a new primary assigns to a gap (§4.4)
NULL_DIGEST = digest(b"quorumkit.pbft/null-request")


@message("pbft.Request")
class Request:
    """<REQUEST, o, t, c>_c (§4.1): operation ``op``, timestamp ``timestamp`` (exactly-once:
    totally ordered per client), client ``client``."""

    op: Any
    timestamp: int
    client: str
    signature: bytes = b""

    @property
    def sender(self) -> str:
        return self.client


@message("pbft.PrePrepare")
class PrePrepare:
    """<PRE-PREPARE, v, n, d>_p with the batch of requests it orders (§4.2; batching §5.1 of
    TOCS 2002). ``digest`` is :func:`batch_digest` of ``requests``; an empty batch is the null
    request."""

    view: int
    seq: int
    digest: bytes
    requests: tuple[Request, ...]
    sender: str
    signature: bytes = b""


@message("pbft.Prepare")
class Prepare:
    """<PREPARE, v, n, d, i>_i (§4.2), multicast by a backup that accepted the pre-prepare."""

    view: int
    seq: int
    digest: bytes
    sender: str
    signature: bytes = b""


@message("pbft.Commit")
class Commit:
    """<COMMIT, v, n, D(m), i>_i (§4.2), multicast once prepared."""

    view: int
    seq: int
    digest: bytes
    sender: str
    signature: bytes = b""


@message("pbft.Reply")
class Reply:
    """<REPLY, v, t, c, i, r>_i (§4.1), to a client that is reachable as a replica (proxy)."""

    view: int
    timestamp: int
    client: str
    result: Any
    sender: str
    signature: bytes = b""


@message("pbft.Checkpoint")
class Checkpoint:
    """<CHECKPOINT, n, d, i>_i (§4.3): the digest of the state after executing ``seq``."""

    seq: int
    state_digest: bytes
    sender: str
    signature: bytes = b""


@message("pbft.PreparedCert")
class PreparedCert:
    """A prepared certificate Pm (§4.4): the pre-prepare and 2f matching prepares from
    distinct backups."""

    pre_prepare: PrePrepare
    prepares: tuple[Prepare, ...]


@message("pbft.ViewChange")
class ViewChange:
    """<VIEW-CHANGE, v+1, n, C, P, i>_i (§4.4): the stable checkpoint ``stable_seq`` with its
    proof C (2f+1 checkpoint messages) and the prepared certificates P of sequence numbers
    above it."""

    new_view: int
    stable_seq: int
    checkpoint_proof: tuple[Checkpoint, ...]
    prepared: tuple[PreparedCert, ...]
    sender: str
    signature: bytes = b""


@message("pbft.NewView")
class NewView:
    """<NEW-VIEW, v+1, V, O>_p (§4.4): 2f+1 view-change messages V and the pre-prepares O the
    new primary computed from them."""

    view: int
    view_changes: tuple[ViewChange, ...]
    pre_prepares: tuple[PrePrepare, ...]
    sender: str
    signature: bytes = b""


@message("pbft.CommitCert")
class CommitCert:
    """A committed certificate: a pre-prepare and 2f+1 matching commits from distinct replicas.
    Sent to a replica that missed messages (TOCS 2002 §5.2, retransmission), it proves that the
    batch is committed at sequence ``pre_prepare.seq``."""

    pre_prepare: PrePrepare
    commits: tuple[Commit, ...]


@message("pbft.Status")
class Status:
    """Periodic status (TOCS 2002 §5.2): what the sender executed and which view it is in, so
    lagging replicas learn that they are behind."""

    view: int
    active: bool
    last_executed: int
    stable_seq: int
    sender: str
    signature: bytes = b""


@message("pbft.Fetch")
class Fetch:
    """Ask a replica for what the sender misses (state transfer, TOCS 2002 §5.3.2): a stable
    checkpoint above ``last_executed``, committed certificates after it, and the NEW-VIEW of a
    view above ``view``."""

    last_executed: int
    view: int
    active: bool
    sender: str
    signature: bytes = b""


@message("pbft.StateTransfer")
class StateTransfer:
    """The answer to :class:`Fetch`: the state of a stable checkpoint ``seq`` with its proof
    (``seq`` 0: none), the sender's NEW-VIEW (or None) and committed certificates. Each part
    proves itself; the outer signature only authenticates the sender."""

    seq: int
    state: bytes
    proof: tuple[Checkpoint, ...]
    new_view: NewView | None
    certs: tuple[CommitCert, ...]
    sender: str
    signature: bytes = b""


@message("pbft.SlotRecord")
class SlotRecord:
    """What a replica persists about one sequence number (storage only): the pre-prepare it
    accepted in ``view``, its latest prepared certificate and its committed certificate."""

    seq: int
    view: int
    pre_prepare: PrePrepare | None
    prepared: PreparedCert | None
    committed: CommitCert | None


@message("pbft.StableCheckpoint")
class StableCheckpoint:
    """The stable checkpoint a replica persists (storage only): the state and its proof."""

    seq: int
    state: bytes
    proof: tuple[Checkpoint, ...]


def request_digest(request: Request) -> bytes:
    """D(m) of a request: the digest of its whole encoding, signature included."""
    return digest(encode(request))


def batch_digest(requests: tuple[Request, ...]) -> bytes:
    """The digest a pre-prepare carries for a batch (the null request for an empty one)."""
    if not requests:
        return NULL_DIGEST
    return digest(b"".join(request_digest(r) for r in requests))


#: every signed message type
SIGNED = (
    Request,
    PrePrepare,
    Prepare,
    Commit,
    Reply,
    Checkpoint,
    ViewChange,
    NewView,
    Status,
    Fetch,
    StateTransfer,
)
