"""The replicated key-value state machine every consensus protocol of quorumkit drives."""

from quorumkit.kv.machine import (
    KVStateMachine,
    is_read_only,
    session_command,
    unwrap_session,
)

__all__ = ["KVStateMachine", "is_read_only", "session_command", "unwrap_session"]
