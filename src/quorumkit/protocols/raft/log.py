"""Raft's in-memory log with a compacted prefix (paper sections 5.3 and 7).

Indices start at 1. Entries up to ``snapshot_index`` are compacted into a snapshot; only their
last term (``snapshot_term``) is remembered. ``entries[i]`` has index ``snapshot_index + 1 + i``.
``dirty_from`` is the lowest index changed since an invariant checker last looked (the checker
resets it); it lets log matching be checked incrementally.
"""

from __future__ import annotations

from collections.abc import Sequence

from quorumkit.protocols.raft.messages import LogEntry

INF = 1 << 62


class RaftLog:
    __slots__ = ("dirty_from", "entries", "snapshot_index", "snapshot_term")

    def __init__(self) -> None:
        self.entries: list[LogEntry] = []
        self.snapshot_index = 0
        self.snapshot_term = 0
        self.dirty_from = 1

    @property
    def first_index(self) -> int:
        """Index of the first entry still in memory."""
        return self.snapshot_index + 1

    @property
    def last_index(self) -> int:
        return self.snapshot_index + len(self.entries)

    @property
    def last_term(self) -> int:
        return self.entries[-1].term if self.entries else self.snapshot_term

    def term_at(self, index: int) -> int | None:
        """Term of the entry at ``index``; 0 for index 0; None when unknown (compacted away
        below the snapshot, or past the end)."""
        if index == self.snapshot_index:
            return self.snapshot_term
        pos = index - self.snapshot_index - 1
        if 0 <= pos < len(self.entries):
            return self.entries[pos].term
        return None

    def entry(self, index: int) -> LogEntry:
        pos = index - self.snapshot_index - 1
        if not 0 <= pos < len(self.entries):
            raise IndexError(
                f"no entry at index {index} (log holds {self.first_index}..{self.last_index})"
            )
        return self.entries[pos]

    def slice(self, lo: int, hi: int) -> list[LogEntry]:
        """Entries with indices in [lo, hi)."""
        base = self.snapshot_index + 1
        return self.entries[max(lo - base, 0) : max(hi - base, 0)]

    def append(self, entries: Sequence[LogEntry]) -> None:
        if entries:
            self.dirty_from = min(self.dirty_from, self.last_index + 1)
            self.entries.extend(entries)

    def truncate_from(self, index: int) -> None:
        """Delete the entry at ``index`` and all that follow it (Figure 2, receiver step 3)."""
        pos = index - self.snapshot_index - 1
        if pos < len(self.entries):
            del self.entries[max(pos, 0) :]
            self.dirty_from = min(self.dirty_from, index)

    def replace_at(self, index: int, entry: LogEntry) -> None:
        """Overwrite one entry in place (only the unsafe variant no-truncate-on-conflict)."""
        self.entries[index - self.snapshot_index - 1] = entry
        self.dirty_from = min(self.dirty_from, index)

    def compact(self, upto: int, term: int) -> None:
        """Drop entries up to ``upto`` (now covered by a snapshot whose last term is ``term``)."""
        if upto <= self.snapshot_index:
            return
        drop = upto - self.snapshot_index
        if drop >= len(self.entries):
            self.entries = []
        else:
            del self.entries[:drop]
        self.snapshot_index = upto
        self.snapshot_term = term

    def reset(self, snapshot_index: int, snapshot_term: int) -> None:
        """Discard everything: the log restarts after a snapshot (InstallSnapshot, section 7)."""
        self.entries = []
        self.snapshot_index = snapshot_index
        self.snapshot_term = snapshot_term
        self.dirty_from = min(self.dirty_from, snapshot_index + 1)

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Section 5.4.1: a log whose last entry is (last_index, last_term) is at least as
        up-to-date as this one."""
        my_term = self.last_term
        return last_term > my_term or (last_term == my_term and last_index >= self.last_index)

    def first_index_of_term(self, index: int) -> int:
        """The first index of the run of entries with the same term as ``index``."""
        term = self.term_at(index)
        i = index
        while i - 1 > self.snapshot_index and self.term_at(i - 1) == term:
            i -= 1
        return i

    def last_index_of_term(self, term: int) -> int:
        """The last index holding an entry of ``term``; 0 when there is none in memory."""
        for pos in range(len(self.entries) - 1, -1, -1):
            t = self.entries[pos].term
            if t == term:
                return self.snapshot_index + 1 + pos
            if t < term:
                break
        return 0
