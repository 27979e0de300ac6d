"""Protocol registry: short names to protocol classes, imported lazily."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from quorumkit.errors import ConfigError

if TYPE_CHECKING:
    from quorumkit.protocol import Protocol

#: name -> "module:Class"
PROTOCOLS: dict[str, str] = {
    "heartbeat": "quorumkit.protocols.heartbeat:HeartbeatDetector",
    "raft": "quorumkit.protocols.raft:RaftNode",
    "paxos": "quorumkit.protocols.paxos:PaxosNode",
    "pbft": "quorumkit.protocols.pbft:PbftNode",
}


def register_protocol(name: str, target: str) -> None:
    """Register ``name`` for the class at ``"module:Class"``."""
    PROTOCOLS[name] = target


def protocol_names() -> list[str]:
    return sorted(PROTOCOLS)


def resolve_protocol(protocol: str | type[Protocol]) -> type[Protocol]:
    """The protocol class for a registered name, or the class itself."""
    from quorumkit.protocol import Protocol

    if isinstance(protocol, type) and issubclass(protocol, Protocol):
        return protocol
    if not isinstance(protocol, str):
        raise ConfigError(f"protocol must be a name or a Protocol class, got {protocol!r}")
    target = PROTOCOLS.get(protocol)
    if target is None:
        raise ConfigError(f"unknown protocol {protocol!r} (known: {', '.join(protocol_names())})")
    module_name, _, cls_name = target.partition(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    if not (isinstance(cls, type) and issubclass(cls, Protocol)):  # pragma: no cover
        raise ConfigError(f"{target} is not a Protocol class")
    return cls
