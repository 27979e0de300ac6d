"""A deterministic key-value state machine with client sessions (exactly-once execution).

Commands are tuples (msgpack-friendly):

==============================  =======================================================
``("get", key)``                value or None (read-only: served by ReadIndex, not logged)
``("put", key, value)``         None
``("delete", key)``             None
``("append", key, value)``      None; a missing key starts empty (str or bytes concatenation)
``("cas", key, old, new)``      True when the value was ``old`` and is now ``new``, else False
``("incr", key)``               the new integer value (for the Redis protocol's INCR)
``("session", client, seq, op)`` runs ``op`` at most once per ``(client, seq)``: a retried
                                command gets the cached reply of its first execution
==============================  =======================================================

Anything else is a command the machine does not understand: it is still applied (it occupies
its log slot) and leaves the state alone; its result is ``None`` for non-tuples and an error
value ``{"error": "bad_command", ...}`` for malformed kv tuples. Nothing here raises on input.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import msgpack

READ_OPS = frozenset({"get"})
WRITE_OPS = frozenset({"put", "delete", "append", "cas", "incr"})
_ARITY = {"get": 2, "put": 3, "delete": 2, "append": 3, "cas": 4, "incr": 2}


def session_command(client: str | int, seq: int, op: tuple[Any, ...]) -> tuple[Any, ...]:
    """Wrap ``op`` for exactly-once execution as request ``seq`` of ``client``."""
    return ("session", client, seq, op)


def unwrap_session(command: Any) -> Any:
    """The kv operation inside a session command (or the command itself)."""
    if _is_session(command):
        return command[3]
    return command


def _is_session(command: Any) -> bool:
    return (
        isinstance(command, (tuple, list))
        and len(command) == 4
        and command[0] == "session"
        and isinstance(command[2], int)
        and isinstance(command[3], (tuple, list))
    )


def is_read_only(command: Any) -> bool:
    """True for commands that read without writing (they need no log entry)."""
    op = unwrap_session(command)
    return (
        isinstance(op, (tuple, list)) and len(op) == 2 and op[0] in READ_OPS and _valid_key(op[1])
    )


def _valid_key(key: Any) -> bool:
    return isinstance(key, (str, bytes, int)) and not isinstance(key, bool)


class KVStateMachine:
    """The key-value store, its sessions, and snapshot/restore of both."""

    def __init__(self, max_sessions: int = 100_000) -> None:
        self.data: dict[Any, Any] = {}
        # client -> (last seq, cached result); ordered by last use for bounded eviction
        self.sessions: OrderedDict[Any, tuple[int, Any]] = OrderedDict()
        self.max_sessions = max_sessions
        self.applied_commands = 0

    def size(self) -> int:
        """Items a snapshot holds: keys and client sessions (O(1))."""
        return len(self.data) + len(self.sessions)

    # ------------------------------------------------------------------ apply
    def apply(self, command: Any) -> Any:
        """Apply one committed command; return its result. Never raises on bad input."""
        self.applied_commands += 1
        if _is_session(command):
            _, client, seq, op = command
            try:
                hash(client)
            except TypeError:
                return {"error": "bad_command", "detail": "session client id is not hashable"}
            cached = self.sessions.get(client)
            if cached is not None:
                last_seq, result = cached
                if seq == last_seq:
                    self.sessions.move_to_end(client)
                    return result
                if seq < last_seq:
                    return {"error": "stale_request", "detail": f"seq {seq} < {last_seq}"}
            result = self._apply_op(tuple(op))
            self.sessions[client] = (seq, result)
            self.sessions.move_to_end(client)
            while len(self.sessions) > self.max_sessions:
                self.sessions.popitem(last=False)
            return result
        if isinstance(command, (tuple, list)) and command and isinstance(command[0], str):
            return self._apply_op(tuple(command))
        return None

    def _apply_op(self, op: tuple[Any, ...]) -> Any:
        name = op[0] if op else None
        arity = _ARITY.get(name) if isinstance(name, str) else None
        if arity is None or len(op) != arity or not _valid_key(op[1]):
            return {"error": "bad_command", "detail": f"not a kv command: {op!r:.80}"}
        key = op[1]
        data = self.data
        if name == "get":
            return data.get(key)
        if name == "put":
            data[key] = op[2]
            return None
        if name == "delete":
            data.pop(key, None)
            return None
        if name == "append":
            value = op[2]
            old = data.get(key)
            if old is None:
                data[key] = value
                return None
            if isinstance(old, str) and isinstance(value, str):
                data[key] = old + value
                return None
            if isinstance(old, bytes) and isinstance(value, bytes):
                data[key] = old + value
                return None
            return {"error": "wrong_type", "detail": "append needs str or bytes of one kind"}
        if name == "cas":
            if data.get(key) == op[2]:
                data[key] = op[3]
                return True
            return False
        # incr
        old = data.get(key, 0)
        if isinstance(old, (str, bytes)):
            try:
                old = int(old)
            except ValueError:
                return {"error": "wrong_type", "detail": "value is not an integer"}
        if not isinstance(old, int) or isinstance(old, bool):
            return {"error": "wrong_type", "detail": "value is not an integer"}
        data[key] = old + 1
        return old + 1

    def read(self, command: Any) -> Any:
        """Evaluate a read-only command against the current state (no state change)."""
        op = unwrap_session(command)
        if not is_read_only(op):
            return {"error": "bad_command", "detail": "not a read-only command"}
        return self.data.get(op[1])

    # ------------------------------------------------------------------ snapshots
    def snapshot(self) -> bytes:
        """The whole state (data and sessions) as bytes."""
        return msgpack.packb(  # type: ignore[no-any-return]
            {
                "data": list(self.data.items()),
                "sessions": [[c, s, r] for c, (s, r) in self.sessions.items()],
                "applied": self.applied_commands,
            },
            use_bin_type=True,
        )

    def restore(self, blob: bytes) -> None:
        """Replace the state with a snapshot made by :meth:`snapshot`."""
        obj = msgpack.unpackb(blob, raw=False, strict_map_key=False, use_list=False)
        self.data = {_key(k): v for k, v in obj["data"]}
        self.sessions = OrderedDict((_key(c), (s, r)) for c, s, r in obj["sessions"])
        self.applied_commands = obj["applied"]

    def state_digest(self) -> str:
        """A digest of the state, to compare replicas (Definition 2.1)."""
        import hashlib

        items = sorted(((repr(k), repr(v)) for k, v in self.data.items()))
        return hashlib.blake2b(repr(items).encode(), digest_size=8).hexdigest()


def _key(k: Any) -> Any:
    return tuple(k) if isinstance(k, list) else k
