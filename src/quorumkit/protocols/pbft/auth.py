"""MAC authenticators for PBFT's normal case (``auth="mac"``; Castro & Liskov, OSDI 1999 §5
"MAC optimization" and TOCS 2002 §3.2): which message carries what, and why.

Rules of this module:

1. An *authenticator* is a vector with one HMAC-SHA256 entry (truncated to :data:`MAC_BYTES`)
   per replica, in member order: entry j is computed over the message's signing bytes
   (``crypto.signing_bytes``: its encoding without the authentication field) with the session
   key of the sender and replica j (crypto.py, rule 5: HKDF over their X25519 shared secret).
   Entries for the sender itself and for replicas it does not address are zero. A receiver
   checks only its own entry. The vector travels in the message's ``signature`` field, so the
   wire format of every message stays the same in both modes.
2. In MAC mode the messages that are never forwarded as proof to a third replica carry an
   authenticator instead of a signature (:data:`MAC_TYPES`): PRE-PREPARE (normal case),
   COMMIT, REPLY (one entry: the proxy replica it goes to), STATUS and FETCH. Everything a
   replica must later prove to others stays signed with Ed25519: REQUEST (the client's; it is
   also what the invariant checker validates), PREPARE (the 2f prepares of a prepared
   certificate travel in VIEW-CHANGE), CHECKPOINT (the 2f + 1 checkpoints of a stable
   checkpoint's proof travel in VIEW-CHANGE and state transfer), VIEW-CHANGE, NEW-VIEW and
   STATE-TRANSFER.
3. Why PRE-PREPARE may use a MAC although it sits in prepared certificates: a prepared
   certificate is checked by its 2f *signed* prepares from distinct backups, which name
   (v, n, d); d is SHA-256 over the batch, so it binds the requests. The pre-prepare inside is
   not authenticated to third parties in MAC mode. This keeps certificates of one (v, n) in
   agreement: with a correct primary, a correct backup prepares only the digest the primary
   authenticated to it, and 2f prepares hold at least f >= 1 correct backups; with a faulty
   primary at most f - 1 backups are faulty, and two sets of 2f of the 3f backups share f, so
   a correct backup would have prepared both digests, which it never does. The pre-prepares O
   of a NEW-VIEW carry no authentication of their own in MAC mode: the NEW-VIEW's signature
   covers them.
4. Why COMMIT may use a MAC although committed certificates (a pre-prepare and 2f + 1
   commits) are handed to lagging replicas in state transfer: a commit is multicast, so its
   authenticator holds an entry for every replica, the lagging one included. The certificate
   keeps each commit with its whole vector and the lagging replica checks its own entry of
   each: only the commit's sender and that replica know the key, so a faulty forwarder cannot
   make one up. (A faulty committer can make its entries disagree, good for the certificate's
   holder and bad for the lagging replica: the certificate is then dropped as ``bad-mac`` and
   the replica asks another one, or catches up at the next stable checkpoint, whose proof is
   signed. Liveness of state transfer under such a replica is what MACs cost; safety is not.)
5. A failed authenticator entry is dropped and counted as ``dropped["bad-mac"]``. MAC
   computations and checks are counted in ``PbftNode.macs``, apart from signature
   verifications (``verifications``) and signatures (``signatures``).
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Sequence

from quorumkit.protocols.pbft.crypto import Keyring
from quorumkit.protocols.pbft.messages import Commit, Fetch, PrePrepare, Reply, Status

#: bytes of one authenticator entry (HMAC-SHA256 truncated, as the paper's MACs are)
MAC_BYTES = 16
_ZERO = bytes(MAC_BYTES)

#: the message types that carry an authenticator in MAC mode (rule 2)
MAC_TYPES: frozenset[type] = frozenset({PrePrepare, Commit, Reply, Status, Fetch})


def _mac(key: bytes, body: bytes) -> bytes:
    return hmac.digest(key, body, "sha256")[:MAC_BYTES]


class Authenticator:
    """Builds and checks authenticators for one replica (rule 1)."""

    def __init__(self, keyring: Keyring, members: Sequence[str]) -> None:
        self.keyring = keyring
        self.identity = keyring.identity
        self.members = tuple(members)
        self.index = {m: i for i, m in enumerate(self.members)}
        self.size = MAC_BYTES * len(self.members)

    def vector(self, body: bytes, to: Iterable[str] | None = None) -> tuple[bytes, int]:
        """The authenticator of ``body`` for the replicas ``to`` (default: every other
        replica) and the number of MACs computed."""
        entries = [_ZERO] * len(self.members)
        count = 0
        for peer in self.members if to is None else to:
            i = self.index.get(peer)
            key = self.keyring.mac_key(peer)
            if i is None or key is None:
                continue
            entries[i] = _mac(key, body)
            count += 1
        return b"".join(entries), count

    def check(self, sender: str, body: bytes, vector: bytes) -> bool:
        """True when this replica's entry of ``vector`` is ``sender``'s MAC of ``body``."""
        i = self.index.get(self.identity)
        key = self.keyring.mac_key(sender)
        if i is None or key is None or len(vector) != self.size:
            return False
        return hmac.compare_digest(vector[i * MAC_BYTES : (i + 1) * MAC_BYTES], _mac(key, body))
