"""Multi-Paxos's configuration (units last in names: ``election_timeout_ms_min``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from quorumkit.errors import ConfigError
from quorumkit.protocols.options import (
    check_non_negative_number,
    check_option_types,
    reject_unknown_options,
    unsafe_names,
)

#: Known-unsafe variants, each a planted bug the checkers must catch.
UNSAFE_VARIANTS: dict[str, str] = {
    "acceptor-forgets-promise": (
        "an acceptor does not write its promised ballot to stable storage, so after a restart "
        "it may accept a proposal numbered below a promise it gave ('Paxos Made Simple', "
        "section 2.3: an acceptor must remember its promises even if it fails and restarts)"
    ),
    "ignore-accepted-values": (
        "a new leader proposes no-ops in every slot above its first undecided one, ignoring "
        "the accepted values reported in phase 1 (section 2.2, phase 2(a): the value must be "
        "that of the highest-numbered proposal among the responses)"
    ),
    "accept-lower-ballot": (
        "an acceptor accepts an Accept numbered below the ballot it promised (section 2.2, "
        "phase 2(b): it accepts unless it has already responded to a prepare request having "
        "a number greater than n)"
    ),
}


@dataclass(frozen=True, slots=True)
class PaxosConfig:
    """Timeouts, limits and switches of one Multi-Paxos node."""

    election_timeout_ms_min: int = 150
    election_timeout_ms_max: int = 300
    heartbeat_interval_ms: int = 50
    #: slots proposed but not yet decided, at most (the leader's pipeline, section 3)
    window: int = 64
    #: values per Accept or Decide message
    max_values_per_message: int = 64
    #: client commands and reads waiting at the leader; beyond it clients get "overloaded"
    max_pending: int = 10_000
    #: take a snapshot once this many slots were applied since the last one (0: never)
    snapshot_threshold: int = 1000
    #: and once the slots applied since the last snapshot are at least this many times the
    #: items (keys, client sessions) that snapshot held: a snapshot then costs at most about
    #: this much per slot written however large the state (Raft dissertation 5.1.3:
    #: snapshot when the log outgrows the previous snapshot; 0: by count only)
    snapshot_expansion: float = 1.0
    snapshot_chunk_bytes: int = 64 * 1024
    unsafe: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if not 0 < self.election_timeout_ms_min <= self.election_timeout_ms_max:
            raise ConfigError(
                "need 0 < election_timeout_ms_min <= election_timeout_ms_max, got "
                f"{self.election_timeout_ms_min} and {self.election_timeout_ms_max}"
            )
        if not 0 < self.heartbeat_interval_ms < self.election_timeout_ms_min:
            raise ConfigError(
                "heartbeat_interval_ms must be > 0 and below election_timeout_ms_min, got "
                f"{self.heartbeat_interval_ms}"
            )
        for name in ("window", "max_values_per_message", "max_pending", "snapshot_chunk_bytes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.snapshot_threshold < 0:
            raise ConfigError("snapshot_threshold must be >= 0")
        check_non_negative_number("snapshot_expansion", self.snapshot_expansion)
        unknown = set(self.unsafe) - set(UNSAFE_VARIANTS)
        if unknown:
            raise ConfigError(
                f"unknown Paxos unsafe variant(s) {sorted(unknown)} "
                f"(known: {', '.join(sorted(UNSAFE_VARIANTS))})"
            )

    @classmethod
    def from_options(cls, **options: Any) -> PaxosConfig:
        """Build a config from keyword options (CLI, simulator); ``unsafe`` may be a comma
        separated string or a collection of names."""
        reject_unknown_options(cls, options, "Paxos")
        if "unsafe" in options:
            options["unsafe"] = unsafe_names(options["unsafe"], "Paxos")
        check_option_types(cls(), options, "Paxos")
        return cls(**options)
