"""Prometheus metrics of one node (text exposition format at ``GET /metrics``).

Rules of this module:

1. Counting is plain Python arithmetic on the event loop's thread, without a lock: every
   metric is updated by the loop only (the storage thread never counts). prometheus_client's
   own Counter and Histogram take a lock per update, measured at about 12% of a follower's
   Python time per write at C=1.
2. prometheus_client renders them: a custom collector turns the current values into metric
   families at scrape time, so names, types, ``_total``/``_bucket``/``_sum``/``_count``
   samples and escaping are the library's.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

_LATENCY = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Count:
    """A monotonic counter (rule 1: no lock)."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1) -> None:
        if amount < 0:
            raise ValueError("a counter only goes up")
        self.value += amount


class Level:
    """A gauge: a value that is set."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def set(self, value: float) -> None:
        self.value = float(value)


class Spread:
    """A histogram with fixed upper bounds (cumulative at render time)."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        if list(bounds) != sorted(set(bounds)):
            raise ValueError("histogram bounds must be increasing")
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def buckets(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        total = 0
        for bound, n in zip([*map(floatToGoString, self.bounds), "+Inf"], self.counts, strict=True):
            total += n
            out.append((bound, total))
        return out


class Metrics(Collector):
    def __init__(self) -> None:
        self.created = time.time()
        self.proposals = Count()
        #: client requests by outcome ("ok" or the error's name)
        self.requests: dict[str, Count] = {}
        self.request_seconds = Spread(_LATENCY)
        self.fsync_seconds = Spread(_LATENCY)
        self.batch_inputs = Spread((1, 2, 4, 8, 16, 32, 64, 128, 256, 1024))
        self.elections = Count()
        self.commits = Level()
        self.messages_sent = Count()
        self.messages_received = Count()
        #: frames dropped by reason, as the transport last reported them
        self.dropped: dict[str, int] = {}
        self._ok = self._requests("ok")
        self.registry = CollectorRegistry()
        self.registry.register(self)

    def _requests(self, outcome: str) -> Count:
        counter = self.requests.get(outcome)
        if counter is None:
            counter = self.requests[outcome] = Count()
        return counter

    def on_trace(self, event: str, fields: dict[str, Any]) -> None:
        if event == "role" and fields.get("role") == "leader":
            self.elections.inc()
        elif event == "commit":
            index = fields.get("index")
            if isinstance(index, int):
                self.commits.set(index)

    def observe_request(self, result: Any, seconds: float) -> None:
        if isinstance(result, dict) and "error" in result:
            self._requests(str(result["error"])[:32]).inc()
        else:
            self._ok.value += 1
        self.request_seconds.observe(seconds)

    # ------------------------------------------------------------------ rendering (rule 2)
    def render(self, dropped: dict[str, int]) -> bytes:
        self.dropped = dict(dropped)
        return generate_latest(self.registry)

    def collect(self) -> Iterator[Metric]:
        def counter(name: str, doc: str, c: Count) -> CounterMetricFamily:
            return CounterMetricFamily(name, doc, value=c.value, created=self.created)

        def histogram(name: str, doc: str, h: Spread) -> HistogramMetricFamily:
            return HistogramMetricFamily(name, doc, buckets=h.buckets(), sum_value=h.sum)

        yield counter(
            "quorumkit_proposals", "Client commands handed to the protocol", self.proposals
        )
        requests = CounterMetricFamily(
            "quorumkit_client_requests", "Client requests by outcome", labels=["outcome"]
        )
        for outcome, c in sorted(self.requests.items()):
            if c.value:
                requests.add_metric([outcome], c.value, created=self.created)
        yield requests
        yield histogram(
            "quorumkit_apply_latency_seconds",
            "Client request latency until its result is known",
            self.request_seconds,
        )
        yield histogram(
            "quorumkit_fsync_seconds",
            "Duration of one group commit (LMDB transaction + fsync)",
            self.fsync_seconds,
        )
        yield histogram("quorumkit_batch_size", "Storage operations per commit", self.batch_inputs)
        yield counter("quorumkit_elections", "Times this node became leader", self.elections)
        yield GaugeMetricFamily(
            "quorumkit_commit_index", "Highest committed log index", value=self.commits.value
        )
        yield counter("quorumkit_messages_sent", "Protocol messages sent", self.messages_sent)
        yield counter(
            "quorumkit_messages_received", "Protocol messages received", self.messages_received
        )
        frames = GaugeMetricFamily(
            "quorumkit_dropped_frames", "Peer frames dropped, by reason", labels=["reason"]
        )
        for reason, n in sorted(self.dropped.items()):
            frames.add_metric([reason], n)
        yield frames
