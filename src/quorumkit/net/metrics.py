"""Prometheus metrics of one node (text exposition format at ``GET /metrics``)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    def __init__(self, node_id: str) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.proposals = Counter(
            "quorumkit_proposals", "Client commands handed to the protocol", registry=r
        )
        self.requests = Counter(
            "quorumkit_client_requests", "Client requests by outcome", ["outcome"], registry=r
        )
        self.request_seconds = Histogram(
            "quorumkit_apply_latency_seconds",
            "Client request latency until its result is known",
            buckets=_LATENCY,
            registry=r,
        )
        self.fsync_seconds = Histogram(
            "quorumkit_fsync_seconds",
            "Duration of one group commit (LMDB transaction + fsync)",
            buckets=_LATENCY,
            registry=r,
        )
        self.batch_inputs = Histogram(
            "quorumkit_batch_size",
            "Storage operations per commit",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 1024),
            registry=r,
        )
        self.elections = Counter("quorumkit_elections", "Times this node became leader", registry=r)
        self.commits = Gauge("quorumkit_commit_index", "Highest committed log index", registry=r)
        self.messages_sent = Counter(
            "quorumkit_messages_sent", "Protocol messages sent", registry=r
        )
        self.messages_received = Counter(
            "quorumkit_messages_received", "Protocol messages received", registry=r
        )
        self.dropped = Gauge(
            "quorumkit_dropped_frames", "Peer frames dropped, by reason", ["reason"], registry=r
        )

    def on_trace(self, event: str, fields: dict[str, Any]) -> None:
        if event == "role" and fields.get("role") == "leader":
            self.elections.inc()
        elif event == "commit":
            index = fields.get("index")
            if isinstance(index, int):
                self.commits.set(index)

    def observe_request(self, result: Any, seconds: float) -> None:
        outcome = "ok"
        if isinstance(result, dict) and "error" in result:
            outcome = str(result["error"])[:32]
        self.requests.labels(outcome).inc()
        self.request_seconds.observe(seconds)

    def render(self, dropped: dict[str, int]) -> bytes:
        for reason, n in dropped.items():
            self.dropped.labels(reason).set(n)
        return generate_latest(self.registry)
