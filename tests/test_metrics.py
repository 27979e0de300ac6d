"""The node's Prometheus metrics (net/metrics.py): lock-free counting, rendered by
prometheus_client in the text exposition format, parsed back here with its parser."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from quorumkit.net.metrics import Count, Metrics, Spread


def _samples(m: Metrics, dropped: dict[str, int] | None = None) -> dict[tuple[str, tuple], float]:
    text = m.render(dropped or {}).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_counters_gauges_and_outcomes_render_as_prometheus_text() -> None:
    m = Metrics()
    m.proposals.inc()
    m.proposals.inc()
    m.messages_sent.inc(5)
    m.messages_received.inc()
    m.on_trace("role", {"role": "leader"})
    m.on_trace("role", {"role": "follower"})
    m.on_trace("commit", {"index": 42})
    m.observe_request(None, 0.003)
    m.observe_request({"error": "timeout", "indeterminate": True}, 5.0)
    m.observe_request({"error": "not_leader"}, 0.0001)
    s = _samples(m, {"bad_mac": 3, "oversized": 1})
    assert s[("quorumkit_proposals_total", ())] == 2
    assert s[("quorumkit_messages_sent_total", ())] == 5
    assert s[("quorumkit_messages_received_total", ())] == 1
    assert s[("quorumkit_elections_total", ())] == 1
    assert s[("quorumkit_commit_index", ())] == 42
    outcomes = {
        dict(labels)["outcome"]: v
        for (name, labels), v in s.items()
        if name == "quorumkit_client_requests_total"
    }
    assert outcomes == {"ok": 1, "timeout": 1, "not_leader": 1}
    assert s[("quorumkit_dropped_frames", (("reason", "bad_mac"),))] == 3
    assert s[("quorumkit_dropped_frames", (("reason", "oversized"),))] == 1
    assert s[("quorumkit_apply_latency_seconds_count", ())] == 3


def test_histogram_buckets_are_cumulative_and_a_bound_belongs_to_its_bucket() -> None:
    m = Metrics()
    for v in (0.0001, 0.0005, 0.0007, 0.003, 7.0):
        m.fsync_seconds.observe(v)
    s = _samples(m)

    def bucket(le: str) -> float:
        return s[("quorumkit_fsync_seconds_bucket", (("le", le),))]

    assert bucket("0.0005") == 2  # 0.0005 <= 0.0005: Prometheus buckets are "less or equal"
    assert bucket("0.001") == 3
    assert bucket("0.005") == 4
    assert bucket("5.0") == 4
    assert bucket("+Inf") == 5
    assert s[("quorumkit_fsync_seconds_count", ())] == 5
    assert s[("quorumkit_fsync_seconds_sum", ())] == pytest.approx(7.0043)


def test_a_counter_refuses_to_go_down_and_bounds_must_increase() -> None:
    c = Count()
    with pytest.raises(ValueError, match="only goes up"):
        c.inc(-1)
    with pytest.raises(ValueError, match="increasing"):
        Spread((1, 1, 2))
    with pytest.raises(ValueError, match="increasing"):
        Spread((2, 1))


def test_the_last_report_of_dropped_frames_replaces_the_one_before() -> None:
    m = Metrics()
    _samples(m, {"bad_mac": 1})
    s = _samples(m, {"truncated": 2})
    assert ("quorumkit_dropped_frames", (("reason", "bad_mac"),)) not in s
    assert s[("quorumkit_dropped_frames", (("reason", "truncated"),))] == 2
