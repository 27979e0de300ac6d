"""The runtime's timers (net/runtime.py rule 7) on a fake loop whose clock the test moves: a
timer fires once, at the last deadline it was given; set earlier, it fires earlier; cancelled,
never. A reset to a later deadline keeps the handle (no new handle per AppendEntries)."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from quorumkit.net.runtime import TIMER_SLACK_S, RuntimeContext


class _Handle:
    def __init__(self, when: float) -> None:
        self._when = when
        self.cancelled = False

    def when(self) -> float:
        return self._when

    def cancel(self) -> None:
        self.cancelled = True


class _FakeLoop:
    """Just enough of an event loop: a clock the test advances, and call_at."""

    def __init__(self) -> None:
        self.now = 100.0
        self.queue: list[tuple[float, int, _Handle, Callable[..., Any], tuple[Any, ...]]] = []
        self.seq = itertools.count()
        self.handles_made = 0

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, fn: Callable[..., Any], *args: Any) -> _Handle:
        self.handles_made += 1
        h = _Handle(when)
        heapq.heappush(self.queue, (when, next(self.seq), h, fn, args))
        return h

    def advance_to(self, t: float) -> None:
        while self.queue and self.queue[0][0] <= t:
            when, _, h, fn, args = heapq.heappop(self.queue)
            self.now = max(self.now, when)
            if not h.cancelled:
                fn(*args)
        self.now = t


def _context() -> tuple[RuntimeContext, _FakeLoop, list[tuple[float, str]]]:
    loop = _FakeLoop()
    fired: list[tuple[float, str]] = []
    runtime = SimpleNamespace(
        loop=loop,
        config=SimpleNamespace(node_id="n1", peers={"n1": None, "n2": None}),
        storage=None,
        on_timer=lambda name: fired.append((loop.now, name)),
    )
    return RuntimeContext(runtime), loop, fired  # type: ignore[arg-type]


def test_a_timer_reset_later_fires_once_at_its_last_deadline_with_one_handle() -> None:
    ctx, loop, fired = _context()
    ctx.set_timer("election", 0.150)
    for step in range(1, 20):  # heartbeats every 50 ms push the deadline on
        loop.advance_to(100.0 + 0.05 * step)
        ctx.set_timer("election", 0.150)
    assert fired == []
    assert loop.handles_made <= 8  # re-armed once per timeout, not once per reset (20)
    loop.advance_to(200.0)
    assert fired == [(100.0 + 0.05 * 19 + 0.150, "election")]


def test_a_timer_set_earlier_fires_at_the_earlier_deadline() -> None:
    ctx, loop, fired = _context()
    ctx.set_timer("heartbeat", 1.0)
    ctx.set_timer("heartbeat", 0.2)
    loop.advance_to(110.0)
    assert fired == [(100.2, "heartbeat")]


def test_a_cancelled_timer_never_fires_and_can_be_set_again() -> None:
    ctx, loop, fired = _context()
    ctx.set_timer("election", 0.1)
    loop.advance_to(100.05)
    ctx.set_timer("election", 0.3)  # later: the first handle stays, due at 100.1
    ctx.cancel_timer("election")
    loop.advance_to(101.0)
    assert fired == []
    ctx.set_timer("election", 0.5)
    loop.advance_to(102.0)
    assert fired == [(101.5, "election")]


def test_timers_of_different_names_are_independent_and_cancel_all_stops_them() -> None:
    ctx, loop, fired = _context()
    ctx.set_timer("a", 0.3)
    ctx.set_timer("b", 0.1)
    loop.advance_to(100.2)
    assert fired == [(100.1, "b")]
    ctx.cancel_all()
    loop.advance_to(105.0)
    assert fired == [(100.1, "b")]


def test_a_handle_due_within_the_slack_of_its_deadline_fires() -> None:
    """uvloop's timers have millisecond resolution: a handle that runs a little before the
    deadline counts as due instead of re-arming for a few microseconds."""
    ctx, loop, fired = _context()
    ctx.set_timer("t", 0.1)
    ctx._deadlines["t"] += TIMER_SLACK_S / 2  # as if the clock had rounded
    loop.advance_to(100.5)
    assert fired == [(100.1, "t")]
    assert loop.handles_made == 1  # not re-armed for the last half millisecond


def test_a_timer_set_again_from_its_own_callback_fires_again() -> None:
    ctx, loop, fired = _context()
    runtime = ctx._rt
    runtime.on_timer = lambda name: (  # type: ignore[method-assign]
        fired.append((loop.now, name)),
        ctx.set_timer(name, 0.1),
    )
    ctx.set_timer("tick", 0.1)
    loop.advance_to(100.35)
    assert [round(t, 6) for t, _ in fired] == [100.1, 100.2, 100.3]
