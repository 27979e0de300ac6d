"""PBFT's configuration (units last in names: ``view_change_timeout_ms``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from quorumkit.errors import ConfigError
from quorumkit.protocols.options import (
    check_option_types,
    reject_unknown_options,
    unsafe_names,
)

#: Known-unsafe variants, each lifting a guarantee on purpose.
UNSAFE_VARIANTS: dict[str, str] = {
    "allow-n-3f": (
        "run with n <= 3f replicas, below the bound of Theorem 3.1: quorums of n - f replicas "
        "may then intersect only in faulty replicas, and a byzantine replica can make two "
        "correct replicas execute different requests at one sequence number"
    ),
}

AUTH_MODES = ("signatures", "mac")


def theorem_3_1(n: int, f: int) -> str:
    """The explanation a configuration below the bound gets (spec Theorem 3.1)."""
    return (
        f"PBFT with n={n} replicas cannot tolerate f={f} byzantine faults: Theorem 3.1 needs "
        f"n >= 3f + 1 = {3 * f + 1}. A quorum can wait for at most n - f = {n - f} replicas "
        f"(f may never answer); two quorums share at least 2(n - f) - n = n - 2f = {n - 2 * f} "
        f"replicas, and that intersection must hold a correct replica even when f of its "
        f"members are byzantine: n - 2f > f, that is n >= 3f + 1. Use more replicas, a smaller "
        f"f, or unsafe='allow-n-3f' to watch it fail."
    )


@dataclass(frozen=True, slots=True)
class PbftConfig:
    """Parameters of one PBFT replica; defaults follow Castro & Liskov where they give one."""

    #: faults tolerated (None: (n - 1) // 3 for n replicas)
    f: int | None = None
    #: K: a checkpoint every K sequence numbers (§4.3)
    checkpoint_interval: int = 128
    #: L: high watermark H = h + L (None: 2K, §4.3 "e.g. twice K")
    watermark_window: int | None = None
    #: most requests in one pre-prepare (batching, TOCS 2002 §5.1.4)
    max_batch: int = 64
    #: batches the primary keeps ordered but not executed before it batches more
    max_inflight: int = 2
    #: T: a backup waiting this long for a request starts a view change; doubles per failed
    #: consecutive view change (§4.5.2)
    view_change_timeout_ms: int = 300
    #: a proxy client retransmits (to every replica) after this long without f+1 replies
    request_timeout_ms: int = 150
    #: period of status messages (TOCS 2002 §5.2), for lagging replicas
    status_interval_ms: int = 500
    #: a replica that learned it is behind waits this long before fetching state
    fetch_delay_ms: int = 100
    #: concurrent requests a replica proxies for plain kv commands
    proxy_lanes: int = 64
    #: proxied commands waiting for a lane; beyond it clients get "overloaded"
    max_pending: int = 10_000
    #: "signatures" (Ed25519 on every message) or "mac" (authenticator vectors of HMAC-SHA256
    #: on the normal case, Ed25519 on what serves as proof; see auth.py). "mac" needs X25519
    #: keys in the cluster configuration's "x25519" section (the simulator derives them)
    auth: str = "signatures"
    #: JSON cluster key configuration (crypto.Keyring.from_cluster_config); None: the
    #: simulator's deterministic keys
    keys: str | None = None
    #: this replica's private key file (default: <keys_dir>/<node>.key)
    key_file: str | None = None
    unsafe: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if self.f is not None and (type(self.f) is not int or self.f < 0):
            raise ConfigError(f"f must be an integer >= 0, got {self.f!r}")
        for name in (
            "checkpoint_interval",
            "max_batch",
            "max_inflight",
            "view_change_timeout_ms",
            "request_timeout_ms",
            "status_interval_ms",
            "fetch_delay_ms",
            "proxy_lanes",
            "max_pending",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.watermark_window is not None and self.watermark_window < self.checkpoint_interval:
            raise ConfigError(
                f"watermark_window (L={self.watermark_window}) must be at least "
                f"checkpoint_interval (K={self.checkpoint_interval}): checkpoints must become "
                "stable before the window fills (§4.3)"
            )
        if self.auth not in AUTH_MODES:
            raise ConfigError(f"auth must be one of {', '.join(AUTH_MODES)}, got {self.auth!r}")
        unknown = set(self.unsafe) - set(UNSAFE_VARIANTS)
        if unknown:
            raise ConfigError(
                f"unknown PBFT unsafe variant(s) {sorted(unknown)} "
                f"(known: {', '.join(sorted(UNSAFE_VARIANTS))})"
            )

    @property
    def window(self) -> int:
        """L, the width of the watermark window."""
        if self.watermark_window is not None:
            return self.watermark_window
        return 2 * self.checkpoint_interval

    def faults(self, n: int) -> int:
        """f for a cluster of ``n`` replicas: the most Theorem 3.1 allows, (n - 1) // 3; under
        ``allow-n-3f``, n // 3 (n = 3f: one fault more than the bound allows, the point of the
        demonstration)."""
        if self.f is not None:
            return self.f
        if "allow-n-3f" in self.unsafe:
            return max(1, n // 3) if n > 1 else 0
        return (n - 1) // 3

    def check_bound(self, n: int) -> int:
        """f for ``n`` replicas; raise ConfigError below Theorem 3.1's bound unless allowed."""
        f = self.faults(n)
        if n < 1:
            raise ConfigError("PBFT needs at least one replica")
        if n < 3 * f + 1 and "allow-n-3f" not in self.unsafe:
            raise ConfigError(theorem_3_1(n, f))
        if f >= n:
            raise ConfigError(f"f={f} must be below the number of replicas n={n}")
        return f

    @classmethod
    def from_options(cls, **options: Any) -> PbftConfig:
        reject_unknown_options(cls, options, "PBFT")
        if "unsafe" in options:
            options["unsafe"] = unsafe_names(options["unsafe"], "PBFT")
        # f and watermark_window default to None; keys and key_file are paths (below)
        check_option_types(
            cls(),
            options,
            "PBFT",
            exact=(int, bool, str),
            skip=frozenset({"f", "watermark_window", "keys", "key_file"}),
        )
        for name in ("f", "watermark_window"):
            value = options.get(name)
            if value is not None and type(value) is not int:
                raise ConfigError(f"PBFT option {name} must be int, got {value!r}")
        for name in ("keys", "key_file"):
            value = options.get(name)
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"PBFT option {name} must be a path string, got {value!r}")
        return cls(**options)
