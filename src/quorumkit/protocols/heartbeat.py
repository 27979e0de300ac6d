"""Reference protocol: an all-to-all heartbeat failure detector.

Every node broadcasts ``Heartbeat(seq)`` every ``interval_s`` seconds and suspects a peer it
has not heard from for ``timeout_s`` seconds (an eventually-perfect failure detector in a
partially synchronous network, Chandra & Toueg 1996). It is small on purpose: the simulator's
own tests and benchmark use it, and it shows the contract with nothing else in the way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from quorumkit.codec import message
from quorumkit.errors import ConfigError
from quorumkit.protocol import Context, Protocol, StoredState


@message("heartbeat.Heartbeat")
class Heartbeat:
    """I am alive; ``seq`` counts my heartbeats since my last (re)start, ``epoch`` my restarts."""

    seq: int
    epoch: int = 0


@dataclass(frozen=True, slots=True)
class HeartbeatConfig:
    interval_s: float = 0.05
    timeout_s: float = 0.2

    def __post_init__(self) -> None:
        if not self.interval_s > 0 or not self.timeout_s > 0:
            raise ConfigError("heartbeat interval_s and timeout_s must be > 0 seconds")


class HeartbeatDetector(Protocol):
    name = "heartbeat"

    def __init__(self, node_id: str, members: Any, config: HeartbeatConfig | None = None) -> None:
        super().__init__(node_id, members, config or HeartbeatConfig())
        self.cfg: HeartbeatConfig = self.config
        self.seq = 0
        self.epoch = 0
        self.last_seen: dict[str, float] = {}
        self.received: dict[str, int] = {}
        self.suspected: set[str] = set()

    @classmethod
    def make_config(cls, **options: Any) -> HeartbeatConfig:
        try:
            return HeartbeatConfig(**options)
        except TypeError as exc:
            raise ConfigError(f"heartbeat: {exc}") from None

    def on_start(self, ctx: Context) -> None:
        now = ctx.now()
        for peer in self.members:
            if peer != self.node_id:
                self.last_seen[peer] = now
        ctx.storage.put("epoch", self.epoch)
        self._beat(ctx)
        ctx.set_timer("check", self.cfg.timeout_s)

    def on_recover(self, ctx: Context, stored: StoredState) -> None:
        self.epoch = int(stored.hard.get("epoch", 0)) + 1
        self.on_start(ctx)

    def _beat(self, ctx: Context) -> None:
        self.seq += 1
        ctx.broadcast(Heartbeat(self.seq, self.epoch))
        ctx.set_timer("beat", self.cfg.interval_s)

    def on_message(self, ctx: Context, src: str, msg: Any) -> None:
        if type(msg) is Heartbeat:
            self.last_seen[src] = ctx.now()
            self.received[src] = self.received.get(src, 0) + 1
            if src in self.suspected:
                self.suspected.discard(src)
                ctx.trace("trust", peer=src)

    def on_timer(self, ctx: Context, name: str) -> None:
        if name == "beat":
            self._beat(ctx)
        elif name == "check":
            now = ctx.now()
            for peer in sorted(self.last_seen):
                if peer not in self.suspected and now - self.last_seen[peer] > self.cfg.timeout_s:
                    self.suspected.add(peer)
                    ctx.trace("suspect", peer=peer)
            ctx.set_timer("check", self.cfg.timeout_s / 2)

    def status(self) -> dict[str, Any]:
        return {
            "id": self.node_id,
            "role": "detector",
            "epoch": self.epoch,
            "heartbeats_sent": self.seq,
            "suspected": sorted(self.suspected),
            "received": dict(sorted(self.received.items())),
        }
