"""PBFT's safety properties (Castro & Liskov 1999, §4.2 and §4.4 "safety"; TOCS 2002 §2.3) as
checks over the states of the correct replicas (replicas with ``is_byzantine`` are skipped).

The checker is incremental: each replica keeps append-only histories (what it executed, the
certificates it formed, the checkpoint states it computed or installed) and the checker reads
only what was appended since the previous step, so it can run after every simulator event.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from quorumkit.errors import InvariantViolation
from quorumkit.protocol import InvariantChecker
from quorumkit.protocols.pbft.crypto import signing_bytes
from quorumkit.protocols.pbft.messages import Request, batch_digest

if TYPE_CHECKING:
    from quorumkit.protocols.pbft.node import PbftNode

AGREEMENT = "agreement"
EXECUTION_PREFIX = "execution prefix"
VALIDITY = "validity"
PREPARED_CONSISTENCY = "prepared certificates consistent"
CHECKPOINT_AGREEMENT = "checkpoint agreement"


class _Cursor:
    """How far the checker has read one replica object's logs. It holds the replica itself, not
    its ``id()``: a restarted replica is a new object, and CPython may give a new object the
    id of a freed one, which would carry the old cursor over to the new logs."""

    __slots__ = ("committed", "executed", "last_seq", "node", "prepared", "states")

    def __init__(self, node: object) -> None:
        self.node = node
        self.executed = 0
        self.prepared = 0
        self.committed = 0
        self.states = 0
        self.last_seq = 0


class PbftChecker(InvariantChecker):
    """§4.2/§4.4: correct replicas never commit or execute different batches at one sequence
    number and execute in sequence order from one another's prefixes (agreement); every
    executed request was signed by its client (validity); within a view, no two correct
    replicas prepare different batches at one sequence number; correct replicas checkpoint
    the same state at the same sequence number."""

    names = (
        AGREEMENT,
        EXECUTION_PREFIX,
        VALIDITY,
        PREPARED_CONSISTENCY,
        CHECKPOINT_AGREEMENT,
    )

    def __init__(self) -> None:
        #: seq -> (batch digest, first replica that committed or executed it)
        self.decided: dict[int, tuple[bytes, str]] = {}
        #: seq -> the batch first seen executed there (validated once)
        self.batches: dict[int, tuple[Request, ...]] = {}
        self.prepared: dict[tuple[int, int], tuple[bytes, str]] = {}
        self.states: dict[int, tuple[bytes, str]] = {}
        self.good_requests: set[bytes] = set()
        self.verifications = 0
        self._cursors: dict[str, _Cursor] = {}

    def check(self, nodes: Mapping[str, Any]) -> None:
        for node_id, node in nodes.items():
            if node is None or node.is_byzantine or not hasattr(node, "executed"):
                continue
            cur = self._cursors.get(node_id)
            if cur is None or cur.node is not node:
                cur = self._cursors[node_id] = _Cursor(node)
            if len(node.prepared_log) != cur.prepared:
                self._check_prepared(node_id, node, cur)
            if len(node.committed_log) != cur.committed:
                self._check_committed(node_id, node, cur)
            if len(node.state_digests) != cur.states:
                self._check_states(node_id, node, cur)
            if len(node.executed) != cur.executed:
                self._check_executed(node_id, node, cur)

    def _decide(self, node_id: str, seq: int, d: bytes, what: str) -> None:
        known = self.decided.setdefault(seq, (d, node_id))
        if known[0] != d:
            raise InvariantViolation(
                AGREEMENT,
                f"{node_id} {what} batch {d.hex()[:12]} at sequence number {seq}, but "
                f"{known[1]} committed or executed batch {known[0].hex()[:12]} there",
            )

    def _check_prepared(self, node_id: str, node: PbftNode, cur: _Cursor) -> None:
        log = node.prepared_log
        for view, seq, d in log[cur.prepared :]:
            known = self.prepared.setdefault((view, seq), (d, node_id))
            if known[0] != d:
                raise InvariantViolation(
                    PREPARED_CONSISTENCY,
                    f"{node_id} prepared batch {d.hex()[:12]} at (view {view}, n={seq}), "
                    f"{known[1]} prepared batch {known[0].hex()[:12]}",
                )
        cur.prepared = len(log)

    def _check_committed(self, node_id: str, node: PbftNode, cur: _Cursor) -> None:
        log = node.committed_log
        for _view, seq, d in log[cur.committed :]:
            self._decide(node_id, seq, d, "committed")
        cur.committed = len(log)

    def _check_states(self, node_id: str, node: PbftNode, cur: _Cursor) -> None:
        log = node.state_digests
        for seq, d in log[cur.states :]:
            known = self.states.setdefault(seq, (d, node_id))
            if known[0] != d:
                raise InvariantViolation(
                    CHECKPOINT_AGREEMENT,
                    f"{node_id} has state {d.hex()[:12]} after sequence number {seq}, "
                    f"{known[1]} has {known[0].hex()[:12]}",
                )
        cur.states = len(log)

    def _check_executed(self, node_id: str, node: PbftNode, cur: _Cursor) -> None:
        log = node.executed
        for entry in log[cur.executed :]:
            if entry.requests is None:  # a state installed at a stable checkpoint
                cur.last_seq = entry.seq
                continue
            if entry.seq != cur.last_seq + 1:
                raise InvariantViolation(
                    EXECUTION_PREFIX,
                    f"{node_id} executed sequence number {entry.seq} after {cur.last_seq}",
                )
            cur.last_seq = entry.seq
            self._decide(node_id, entry.seq, entry.digest, "executed")
            first = self.batches.get(entry.seq)
            if first is None:
                self._validate(node_id, node, entry.seq, entry.digest, entry.requests)
                self.batches[entry.seq] = entry.requests
            elif first is not entry.requests and first != entry.requests:
                raise InvariantViolation(
                    AGREEMENT,
                    f"{node_id} executed other requests at sequence number {entry.seq} "
                    "under the same digest",
                )
        cur.executed = len(log)

    def _validate(
        self,
        node_id: str,
        node: PbftNode,
        seq: int,
        d: bytes,
        requests: tuple[Request, ...],
    ) -> None:
        if batch_digest(requests) != d:
            raise InvariantViolation(
                VALIDITY, f"{node_id} executed a batch at {seq} that does not match its digest"
            )
        for r in requests:
            body = signing_bytes(r)
            key = r.signature + body
            if key in self.good_requests:
                continue
            self.verifications += 1
            if not node.keyring.verify(r.client, body, r.signature):
                raise InvariantViolation(
                    VALIDITY,
                    f"{node_id} executed at sequence number {seq} a request of "
                    f"{r.client!r} (t={r.timestamp}) that its client did not sign",
                )
            self.good_requests.add(key)
