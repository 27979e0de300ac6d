"""The acceptor's per-slot state in memory, mirroring the storage log.

Slot ``s`` lives at log index ``s``. Slots run contiguously from ``start`` (everything before it
was compacted into a snapshot); a slot the acceptor never accepted anything for is ``None``.
``dirty_from`` is the lowest slot changed since an invariant checker last looked (the checker
resets it), so acceptances can be checked incrementally.
"""

from __future__ import annotations

from collections.abc import Sequence

from quorumkit.protocols.paxos.messages import SlotEntry

INF = 1 << 62


class SlotLog:
    __slots__ = ("dirty_from", "entries", "start")

    def __init__(self) -> None:
        self.entries: list[SlotEntry | None] = []
        self.start = 1
        self.dirty_from = 1

    @property
    def snapshot_index(self) -> int:
        """The last slot compacted into the snapshot (0: none)."""
        return self.start - 1

    @property
    def last_slot(self) -> int:
        """The highest slot held (``snapshot_index`` when nothing is)."""
        return self.start + len(self.entries) - 1

    def get(self, slot: int) -> SlotEntry | None:
        """The entry of ``slot``; None for a gap, a compacted slot or one past the end."""
        pos = slot - self.start
        if 0 <= pos < len(self.entries):
            return self.entries[pos]
        return None

    def write(
        self, slot: int, new: Sequence[SlotEntry | None]
    ) -> tuple[int, list[SlotEntry | None]]:
        """Replace the entries from ``slot`` on by ``new`` (keeping those after them); gaps
        before ``slot`` become None. Returns ``(index, entries)``: what to hand to
        ``Storage.log_append`` (which truncates at ``index`` first) to make storage match."""
        if slot < self.start:
            raise ValueError(f"slot {slot} is below the log start {self.start}")
        pos = slot - self.start
        if pos > len(self.entries):
            gap: list[SlotEntry | None] = [None] * (pos - len(self.entries))
            new = gap + list(new)
            pos = len(self.entries)
            slot = self.start + pos
        end = pos + len(new)
        self.entries[pos:end] = list(new)
        self.dirty_from = min(self.dirty_from, slot)
        return slot, self.entries[pos:]

    def compact(self, upto: int) -> None:
        """Drop every slot <= ``upto`` (they are in a snapshot); past the end, empty the log."""
        if upto < self.start:
            return
        drop = upto + 1 - self.start
        del self.entries[:drop]
        self.start = upto + 1
        self.dirty_from = max(self.dirty_from, self.start)
