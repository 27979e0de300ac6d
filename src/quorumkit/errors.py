"""Errors of quorumkit, split the way h11 splits them.

* :class:`ConfigError` (also a :class:`ValueError`) is *your* fault: the caller asked for
  something impossible (unknown protocol, ``nodes <= 0``, a rate outside ``[0, 1]``, ...).
* :class:`PeerError` is the *peer's* fault: bytes or a message from the network that do not
  validate. Runtimes drop such input and count it; it never reaches a protocol.
* :class:`InvariantViolation` is *our* fault (or a planted bug): a safety property of a
  protocol failed. Checkers raise it; it is never stripped by ``python -O``.
"""

from __future__ import annotations


class QuorumkitError(Exception):
    """Base class of every error quorumkit raises on purpose."""


class ConfigError(QuorumkitError, ValueError):
    """Caller misuse: a bad argument, option or configuration value."""


class PeerError(QuorumkitError):
    """A faulty or malicious peer sent input that does not validate."""


class DecodeError(PeerError):
    """A frame or message could not be decoded into a known, valid message."""


class InvariantViolation(QuorumkitError):
    """A protocol invariant does not hold over the current node states."""

    def __init__(self, invariant: str, detail: str) -> None:
        super().__init__(f"invariant {invariant!r} violated: {detail}")
        self.invariant = invariant
        self.detail = detail
