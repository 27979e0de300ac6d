"""Raft's configuration (units last in names: ``election_timeout_ms_min``)."""

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
    "commit-previous-term": (
        "the leader commits an entry of an earlier term by counting replicas, and appends no "
        "no-op at the start of its term, as in the setting of Figure 8 (paper section 5.4.2)"
    ),
    "vote-without-log-check": (
        "voters grant votes without the up-to-date-log restriction (paper section 5.4.1)"
    ),
    "forget-vote-on-restart": (
        "votedFor is not durable, so a restarted node may vote twice in one term "
        "(paper Figure 2, 'persistent state on all servers')"
    ),
    "stale-read": (
        "any node answers reads from its own state machine, with no ReadIndex round "
        "(dissertation 6.4): a deposed leader or a lagging follower serves old values"
    ),
    "no-truncate-on-conflict": (
        "a follower overwrites a conflicting entry without deleting the entries that follow it "
        "(paper Figure 2, AppendEntries receiver step 3)"
    ),
}


@dataclass(frozen=True, slots=True)
class RaftConfig:
    """Timeouts, limits and switches of one Raft node; defaults follow the spec and paper."""

    election_timeout_ms_min: int = 150
    election_timeout_ms_max: int = 300
    heartbeat_ms: int = 50
    pre_vote: bool = True
    check_quorum: bool = True
    lease_reads: bool = False
    #: AppendEntries messages with entries in flight per follower (pipelining)
    max_inflight: int = 32
    max_entries_per_append: int = 64
    #: proposals and reads waiting at the leader; beyond it clients get "overloaded"
    max_pending: int = 10_000
    #: take a snapshot once this many entries were applied since the last one (0: never)
    snapshot_threshold: int = 1000
    #: and once the entries applied since the last snapshot are at least this many times the
    #: items (keys, client sessions) that snapshot held: a snapshot then costs at most about
    #: this much per entry written however large the state (Raft dissertation 5.1.3:
    #: snapshot when the log outgrows the previous snapshot; 0: by count only)
    snapshot_expansion: float = 1.0
    snapshot_chunk_bytes: int = 64 * 1024
    #: voters of the initial configuration (None: every member of the cluster)
    initial_voters: tuple[str, ...] | None = None
    unsafe: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if not 0 < self.election_timeout_ms_min <= self.election_timeout_ms_max:
            raise ConfigError(
                "need 0 < election_timeout_ms_min <= election_timeout_ms_max, got "
                f"{self.election_timeout_ms_min} and {self.election_timeout_ms_max}"
            )
        if not 0 < self.heartbeat_ms < self.election_timeout_ms_min:
            raise ConfigError(
                f"heartbeat_ms must be > 0 and below election_timeout_ms_min, got "
                f"{self.heartbeat_ms}"
            )
        for name in (
            "max_inflight",
            "max_entries_per_append",
            "max_pending",
            "snapshot_chunk_bytes",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.snapshot_threshold < 0:
            raise ConfigError("snapshot_threshold must be >= 0")
        check_non_negative_number("snapshot_expansion", self.snapshot_expansion)
        unknown = set(self.unsafe) - set(UNSAFE_VARIANTS)
        if unknown:
            raise ConfigError(
                f"unknown Raft unsafe variant(s) {sorted(unknown)} "
                f"(known: {', '.join(sorted(UNSAFE_VARIANTS))})"
            )
        if self.lease_reads and not self.check_quorum:
            raise ConfigError("lease_reads needs check_quorum (dissertation 6.4.1)")

    @classmethod
    def from_options(cls, **options: Any) -> RaftConfig:
        reject_unknown_options(cls, options, "Raft")
        if "unsafe" in options:
            options["unsafe"] = unsafe_names(options["unsafe"], "Raft", comma_separated=False)
        if options.get("initial_voters") is not None:
            options["initial_voters"] = tuple(options["initial_voters"])
        check_option_types(cls(), options, "Raft")
        return cls(**options)
