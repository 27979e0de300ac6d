"""The HTML report of a simulated run: self-contained, well-formed, complete, escaped."""

from __future__ import annotations

import dataclasses
import html
import re
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from quorumkit.check.history import Operation
from quorumkit.check.report import MAX_ARROWS, render_report, write_report
from quorumkit.errors import ConfigError
from quorumkit.sim.clients import OpRecord
from quorumkit.sim.run import RunOptions, RunResult, run

VOID = {"br", "meta", "img", "input", "hr", "link", "wbr", "col", "area", "base", "source"}
EVIL = "<script>alert(1)</script>"


class _StrictParser(HTMLParser):
    """Records every tag that is closed out of order or never closed."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tags: dict[str, int] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] = self.tags.get(tag, 0) + 1
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] = self.tags.get(tag, 0) + 1

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
            if tag in self.stack:
                while self.stack.pop() != tag:
                    pass
            return
        self.stack.pop()


def _parse(page: str) -> _StrictParser:
    parser = _StrictParser()
    parser.feed(page)
    parser.close()
    assert parser.errors == []
    assert parser.stack == [], f"unclosed: {parser.stack}"
    return parser


def _assert_self_contained(page: str) -> None:
    lowered = page.lower()
    assert "http://" not in lowered and "https://" not in lowered
    assert not re.search(r"\ssrc\s*=", lowered)
    assert "<link" not in lowered and "@import" not in lowered
    assert not re.search(r"\shref\s*=", lowered)
    assert all(u.startswith("url(#") for u in re.findall(r"url\([^)]*\)", page))


@pytest.fixture(scope="module")
def passing() -> RunResult:
    result = run(
        RunOptions(
            protocol="raft",
            seed=3,
            duration=3,
            nemesis=("partition", "crash"),
            record=True,
            check_linearizability=False,
        )
    )
    assert result.ok
    return result


@pytest.fixture(scope="module")
def failing() -> RunResult:
    """A run of the planted bug of Figure 2 receiver step 3 that the invariants catch."""
    for seed in range(1, 31):
        result = run(
            RunOptions(
                protocol="raft",
                seed=seed,
                duration=3,
                nemesis=("partition", "crash", "loss"),
                unsafe="no-truncate-on-conflict",
                record=True,
                check_linearizability=False,
            )
        )
        if not result.ok and result.violation_at is not None:
            return result
    pytest.fail("no seed in 1..30 caught no-truncate-on-conflict")


def test_report_of_a_passing_raft_run_is_one_self_contained_html_file(
    passing: RunResult, tmp_path: Path
) -> None:
    path = tmp_path / "report.html"
    write_report(passing, str(path))
    page = path.read_text(encoding="utf-8")
    parser = _parse(page)
    assert parser.tags.get("svg", 0) >= 4
    _assert_self_contained(page)
    assert page.startswith("<!DOCTYPE html>")
    assert "PASSED" in page and "FAILED" not in page
    assert html.escape(passing.options.replay_command()) in page
    assert passing.summary["trace_hash"] in page
    assert "<b>3</b>" in page  # the seed
    for node in passing.sim.node_ids:
        assert f">{node}</text>" in page
    for name in passing.summary["invariants"]:
        assert f"✓ {html.escape(name)}" in page
    # the role timeline over the whole run, with a leader and terms
    assert 'class="role"' in page and 'id="timeline"' in page
    assert "leader T" in page
    # space-time diagram, commit chart, client charts
    assert 'class="st"' in page and 'marker-end="url(#a' in page
    assert "Commit index over time" in page and 'class="cline"' in page
    assert "latency of ok operations" in page and 'class="bar"' in page
    assert 'class="vband"' not in page


def test_every_space_time_window_draws_at_most_max_arrows(passing: RunResult) -> None:
    page = render_report(passing)
    panes = page.split("<div class='win'")[1:]
    assert len(panes) >= 2
    for pane in panes:
        assert 0 < pane.count('<line class="m ') <= MAX_ARROWS


def test_report_of_a_failing_run_highlights_the_violation(
    failing: RunResult, tmp_path: Path
) -> None:
    path = tmp_path / "failed.html"
    write_report(failing, str(path))
    page = path.read_text(encoding="utf-8")
    _parse(page)
    _assert_self_contained(page)
    assert "FAILED" in page
    violation = failing.summary["violations"][0]
    assert "log matching" in violation
    assert html.escape(violation) in page
    assert "✗ log matching" in page
    assert f"violation t={failing.violation_at:.3f} s" in page
    # a band on the diagrams, and the events at that moment in the table
    assert page.count('class="vband"') >= 3
    assert "<tr class='hit'>" in page
    # the first window shown is the one around the violation
    first = re.search(r'<svg class="st"[^>]*data-t0="([^"]+)" data-t1="([^"]+)"', page)
    assert first is not None
    assert float(first.group(1)) <= failing.violation_at <= float(first.group(2))


def test_report_of_a_heartbeat_run_without_clients_renders() -> None:
    result = run(
        RunOptions(
            protocol="heartbeat",
            seed=2,
            duration=2,
            nemesis=("partition", "crash"),
            record=True,
            check_linearizability=False,
        )
    )
    page = render_report(result)
    _parse(page)
    _assert_self_contained(page)
    assert "No simulated clients" in page
    assert "Heartbeat" in page and 'class="st"' in page
    for node in result.sim.node_ids:
        assert f">{node}</text>" in page


def test_report_of_an_unrecorded_run_still_shows_the_verdicts() -> None:
    result = run(
        RunOptions(protocol="raft", seed=2, duration=1, record=False, check_linearizability=False)
    )
    page = render_report(result)
    _parse(page)
    assert "No trace was recorded" in page
    assert html.escape(result.options.replay_command()) in page


def test_report_of_a_non_linearizable_history_shows_the_explanation(passing: RunResult) -> None:
    op = Operation(2, 1.0, 1.2, ("get", "k1"), "stale")
    lin = SimpleNamespace(
        ok=False, explanation="get k1 returned 'stale' after put k1 'new'", failing_ops=[op]
    )
    summary = dict(passing.summary, ok=False, linearizable=False)
    summary["violations"] = [f"not linearizable: {lin.explanation}"]
    result = dataclasses.replace(passing, summary=summary, linearizability=lin)
    page = render_report(result)
    _parse(page)
    assert html.escape(lin.explanation) in page
    assert "could not be linearized" in page
    assert 'class="vband"' in page


def test_report_escapes_what_it_shows(passing: RunResult) -> None:
    sim: Any = passing.sim
    records = list(passing.pool.records)
    events = list(sim.events)
    try:
        passing.pool.records.append(OpRecord(1, 0.5, ("put", "k1", EVIL), 0.6, EVIL, "fail", 1))
        sim.events.append((0.55, "reply", "n1", 10_000, {"error": EVIL}))
        sim.events.append((0.56, "trace", "n2", "suspect", (("peer", EVIL),)))
        page = render_report(passing)
    finally:
        passing.pool.records[:] = records
        sim.events[:] = events
    _parse(page)
    assert EVIL not in page
    assert "alert(1)</" not in page
    assert html.escape(EVIL) in page  # in the operations table
    assert page.count("<script") == 3  # the page's own: windows, tooltips, behaviour


def test_write_report_to_an_impossible_path_is_a_clear_error(passing: RunResult) -> None:
    with pytest.raises(ConfigError, match="cannot write the report"):
        write_report(passing, "/nonexistent-dir/x/report.html")
