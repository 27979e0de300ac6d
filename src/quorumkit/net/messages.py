"""Runtime-level messages between nodes (not seen by protocols): client forwarding."""

from __future__ import annotations

from typing import Any

from quorumkit.codec import message


@message("runtime.ClientForward")
class ClientForward:
    """A follower hands a client command to the node it believes leads."""

    request_id: int
    command: Any


@message("runtime.ClientForwardReply")
class ClientForwardReply:
    request_id: int
    result: Any
