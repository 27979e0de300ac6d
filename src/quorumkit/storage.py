"""In-memory :class:`~quorumkit.protocol.Storage` that models what a crash keeps.

Writes made with ``sync=True`` are durable at once (the driver releases effects after them).
Writes made with ``sync=False`` are visible but not yet durable; a later synced write makes
every earlier write durable (as an fsync would). :meth:`MemoryStorage.crash` models a crash:
with ``lose_unsynced=True`` the unsynced writes are gone.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from quorumkit.errors import ConfigError
from quorumkit.protocol import Storage, StoredState


def _apply(state: StoredState, op: tuple[Any, ...]) -> None:
    kind = op[0]
    if kind == "put":
        state.hard[op[1]] = op[2]
    elif kind == "append":
        index, entries = op[1], op[2]
        pos = index - state.log_start
        del state.log[pos:]
        state.log.extend(entries)
    elif kind == "truncate":
        pos = op[1] - state.log_start
        if pos < len(state.log):
            del state.log[max(pos, 0) :]
    elif kind == "snapshot":
        snapshot, upto = op[1], op[2]
        if upto + 1 < state.log_start:
            return  # older than the snapshot we have: keep the newer one
        drop = upto + 1 - state.log_start
        if drop > 0:
            del state.log[:drop]  # a snapshot past the end of the log empties it
            state.log_start = upto + 1
        state.snapshot = snapshot


class MemoryStorage(Storage):
    """Durable-storage model used by the simulator (and by tests)."""

    def __init__(self) -> None:
        self._current = StoredState()
        self._durable = StoredState()
        self._unsynced: list[tuple[Any, ...]] = []
        self.writes = 0
        self.syncs = 0

    # -- Storage -------------------------------------------------------------------------
    def _write(self, op: tuple[Any, ...], sync: bool) -> None:
        self.writes += 1
        _apply(self._current, op)
        if sync:
            for pending in self._unsynced:
                _apply(self._durable, pending)
            self._unsynced.clear()
            _apply(self._durable, op)
            self.syncs += 1
        else:
            self._unsynced.append(op)

    def put(self, key: str, value: Any, *, sync: bool = True) -> None:
        self._write(("put", key, value), sync)

    def log_append(self, index: int, entries: Sequence[Any], *, sync: bool = True) -> None:
        if index < self._current.log_start:
            raise ConfigError(
                f"log_append at index {index} before the log start {self._current.log_start}"
            )
        if index > self._current.log_start + len(self._current.log):
            raise ConfigError(
                f"log_append at index {index} leaves a gap after the last index "
                f"{self._current.log_start + len(self._current.log) - 1}"
            )
        self._write(("append", index, tuple(entries)), sync)

    def log_truncate(self, index: int, *, sync: bool = True) -> None:
        self._write(("truncate", index), sync)

    def save_snapshot(self, snapshot: Any, upto_index: int, *, sync: bool = True) -> None:
        self._write(("snapshot", snapshot, upto_index), sync)

    def load(self) -> StoredState:
        cur = self._current
        return StoredState(dict(cur.hard), cur.log_start, list(cur.log), cur.snapshot)

    # -- crash model -----------------------------------------------------------------------
    def crash(self, lose_unsynced: bool = False) -> None:
        """Model a crash: keep everything, or only what was synced."""
        if lose_unsynced:
            self._current = copy.copy(self._durable)
            self._current.hard = dict(self._durable.hard)
            self._current.log = list(self._durable.log)
        else:
            for pending in self._unsynced:
                _apply(self._durable, pending)
        self._unsynced.clear()

    @property
    def unsynced_writes(self) -> int:
        return len(self._unsynced)
