"""Definition 1.2: a node is n = (id, state, neighbors, protocol)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Node:
    """One node of DS = (N, C, P): its id, its state, its neighbours in C and its protocol."""

    id: str
    state: Any = None
    neighbors: frozenset[str] = field(default_factory=frozenset)
    protocol: str = ""
