"""A self-contained HTML report of one simulated run (``quorumkit sim ... --report FILE``).

The page opens offline: inline CSS, inline SVG, a little inline JavaScript (hover tooltips,
the choice of the space-time window) and nothing fetched from anywhere. It shows:

* the verdicts: ok or failed, invariants, linearizability, convergence, the violations, the
  command that replays the run and its trace hash;
* the faults the nemeses injected, and each node's role (follower, pre-candidate, candidate,
  leader, crashed, cut off from a majority) with its term, over the whole run;
* a space-time (Lamport) diagram of the messages of a few precomputed windows of simulated
  time (around the violation, the most eventful moment, the start, the healing): one lane per
  node, one arrow per delivered message, dropped messages as dashed stubs ending in an x;
* the commit index of every node over time, client latencies and throughput;
* for a failed run, the violation highlighted on every diagram and the events around it.

Diagrams need the full trace (``RunOptions(record=True)``, which ``--report`` sets); without it
the page still shows the verdicts and the client charts.
"""

from __future__ import annotations

import bisect
import dataclasses
import html
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quorumkit.errors import ConfigError

if TYPE_CHECKING:
    from quorumkit.sim.run import RunResult

__all__ = ["render_report", "write_report"]

#: at most this many messages (deliveries and drops) are drawn in one space-time window
MAX_ARROWS = 500
#: the width of every chart, in CSS pixels
WIDTH = 1340
_LEFT = 64  # room for lane labels
_RIGHT = 16
_PLOT_W = WIDTH - _LEFT - _RIGHT

ROLE_COLORS: dict[str, str] = {
    "follower": "#c6dbef",
    "pre-candidate": "#fde68a",
    "candidate": "#fd8d3c",
    "leader": "#31a354",
    "crashed": "#525252",
    "up": "#c7e9c0",
}
_ROLE_TEXT = {"leader": "#fff", "crashed": "#fff", "candidate": "#222"}
#: light tints of the roles for the lanes of the space-time diagram
_LANE_TINT = {
    "pre-candidate": "#fff4c2",
    "candidate": "#ffe0c2",
    "leader": "#d8f3d8",
    "crashed": "#e3e3e3",
}
_KIND_COLORS: dict[str, str] = {
    "AppendEntries": "#1f77b4",
    "AppendEntriesResponse": "#74a9cf",
    "RequestVote": "#e6550d",
    "RequestVote pre-vote": "#fdae6b",
    "RequestVoteResponse": "#756bb1",
    "RequestVoteResponse pre-vote": "#bcbddc",
    "InstallSnapshot": "#8c564b",
    "InstallSnapshotResponse": "#c49c94",
    "TimeoutNow": "#e377c2",
    "Heartbeat": "#17a2b8",
}
_EXTRA_COLORS = ("#bcbd22", "#7f7f7f", "#2ca02c", "#9edae5", "#dbdb8d", "#ff9896", "#aec7e8")
_NODE_COLORS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#bcbd22",
    "#7f7f7f",
    "#d62728",
)
_STATEFUL_NEMESES = ("partition", "loss", "duplicate", "delay")
_OFF_TEXTS = ("heal", "delay normal")


# --------------------------------------------------------------------------------- helpers


def _e(value: object) -> str:
    """Text for HTML (element content and attribute values)."""
    return html.escape(str(value), quote=True)


def _n(x: float) -> str:
    """A coordinate, compactly."""
    s = f"{x:.1f}"
    return s[:-2] if s.endswith(".0") else s


def _short(value: object, limit: int = 160) -> str:
    text = repr(value)
    if len(text) > limit and isinstance(value, (tuple, list)):
        text = f"{len(value)} items: {text}"
    if len(text) > limit:
        text = f"{text[: limit - 1]}… (+{len(text) - limit + 1} chars)"
    return text


def _fmt_t(t: float) -> str:
    return f"{t:.6f} s"


def _nice_step(span: float, target: int) -> float:
    raw = max(span, 1e-9) / max(target, 1)
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if m * mag >= raw:
            return float(m * mag)
    return float(10 * mag)


def _ticks(lo: float, hi: float, target: int = 10) -> list[float]:
    step = _nice_step(hi - lo, target)
    first = math.ceil(lo / step - 1e-9) * step
    out = []
    k = 0
    while first + k * step <= hi + 1e-9:
        out.append(round(first + k * step, 9))
        k += 1
    return out


def _tick_label(t: float, step: float) -> str:
    if step >= 1:
        return f"{t:g} s"
    digits = max(0, -math.floor(math.log10(step) + 1e-9))
    return f"{t:.{digits}f} s"


def _kind(msg: object) -> str:
    name = type(msg).__name__
    if getattr(msg, "pre_vote", False) is True:
        return f"{name} pre-vote"
    return name


def _has_entries(msg: object) -> bool:
    entries = getattr(msg, "entries", None)
    return isinstance(entries, (tuple, list)) and len(entries) > 0


def _msg_fields(msg: object) -> list[str]:
    if dataclasses.is_dataclass(msg) and not isinstance(msg, type):
        return [f"{f.name} = {_short(getattr(msg, f.name))}" for f in dataclasses.fields(msg)]
    return [_short(msg, 300)]


def _json_for_script(value: object) -> str:
    """JSON that is safe inside a <script> element (no "</script>", no HTML specials)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return (
        text.replace("&", "\\u0026")
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


class _Tips:
    """Hover texts, referenced from the SVG by index (``data-i``)."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self._index: dict[Any, int] = {}

    def add(self, text: str, key: Any = None) -> int:
        if key is not None and key in self._index:
            return self._index[key]
        self.texts.append(text)
        i = len(self.texts) - 1
        if key is not None:
            self._index[key] = i
        return i


class _X:
    """Linear time-to-pixel scale."""

    def __init__(self, t0: float, t1: float, x0: float = _LEFT, x1: float = _LEFT + _PLOT_W):
        self.t0 = t0
        self.t1 = t1 if t1 > t0 else t0 + 1e-6
        self.x0 = x0
        self.x1 = x1

    def __call__(self, t: float) -> float:
        return self.x0 + (t - self.t0) / (self.t1 - self.t0) * (self.x1 - self.x0)


# --------------------------------------------------------------------------------- the model


@dataclass
class _Span:
    start: float
    end: float
    state: str
    term: Any = None


@dataclass
class _Window:
    key: str
    title: str
    lo: float
    hi: float
    note: str = ""
    messages: list[int] = field(default_factory=list)  # indexes into events


@dataclass
class _Violation:
    title: str
    detail: list[str]
    at: float | None  # the virtual time to highlight (None: not known)
    band: tuple[float, float] | None
    label: str = "violation"  # on the diagrams


@dataclass
class _Model:
    result: RunResult
    nodes: tuple[str, ...]
    events: list[tuple[Any, ...]]
    t_end: float
    has_roles: bool
    roles: dict[str, list[_Span]]
    cut_off: dict[str, list[tuple[float, float]]]
    partitions: list[_Span]  # state = description
    commits: dict[str, list[list[tuple[float, int]]]]
    snapshots: list[tuple[float, str, str, int]]
    violation: _Violation | None
    tips: _Tips
    #: what the protocol calls its epochs ("term", "ballot", "view") and their letter
    epoch: tuple[str, str] = ("term", "T")
    #: node id -> byzantine behaviour
    byzantine: dict[str, str] = field(default_factory=dict)


def _parse_partition(desc: str, nodes: Sequence[str]) -> set[frozenset[str]] | None:
    """The links a partition cut, from its description (None when it cannot be known)."""
    shape, _, rest = desc.partition(": ")
    if " links cut" in rest or not rest:
        return None
    groups = [[x for x in g.strip().split(",") if x] for g in rest.split("|")]
    named = {n for g in groups for n in g}
    others = [n for n in nodes if n not in named]
    if shape == "bridge" and len(groups) == 3:
        pairs = [(groups[0], groups[2])]
    else:
        if others:
            groups.append(others)
        pairs = [(a, b) for i, a in enumerate(groups) for b in groups[i + 1 :]]
    return {frozenset((x, y)) for a, b in pairs for x in a for y in b if x != y}


_EPOCHS = {"raft": ("term", "T"), "paxos": ("ballot", "B"), "pbft": ("view", "V")}


def _epoch_value(fields: dict[str, Any]) -> Any:
    """The epoch of a role change (Raft's term, Paxos's ballot, PBFT's view), printable."""
    for key in ("term", "ballot", "view"):
        if key in fields:
            value = fields[key]
            if isinstance(value, (list, tuple)):
                return ".".join(str(v) for v in value)  # a ballot (round, node): "3.n2"
            return value
    return None


def _build(result: RunResult) -> _Model:
    sim = result.sim
    nodes = tuple(sim.node_ids)
    events = list(sim.events)
    t_end = max([float(sim.now)] + [float(ev[0]) for ev in events[-1:]])
    has_roles = any(ev[1] == "trace" and ev[3] == "role" for ev in events)
    initial = "follower" if has_roles else "up"
    start_term: Any = 0 if has_roles else None

    roles: dict[str, list[_Span]] = {n: [] for n in nodes}
    current: dict[str, _Span] = {n: _Span(0.0, 0.0, initial, start_term) for n in nodes}
    last_term: dict[str, Any] = {n: start_term for n in nodes}

    def switch(node: str, t: float, state: str, term: Any) -> None:
        cur = current[node]
        if cur.state == state and cur.term == term:
            return
        cur.end = t
        if t > cur.start:
            roles[node].append(cur)
        current[node] = _Span(t, t, state, term)

    majority = len(nodes) // 2 + 1
    cut: set[frozenset[str]] = set()
    cut_off: dict[str, list[tuple[float, float]]] = {n: [] for n in nodes}
    cut_since: dict[str, float] = {}
    partitions: list[_Span] = []
    open_part: _Span | None = None

    def recompute_cut_off(t: float) -> None:
        for n in nodes:
            reach = 1 + sum(1 for m in nodes if m != n and frozenset((n, m)) not in cut)
            if reach < majority and n not in cut_since:
                cut_since[n] = t
            elif reach >= majority and n in cut_since:
                start = cut_since.pop(n)
                if t > start:
                    cut_off[n].append((start, t))

    commits: dict[str, list[list[tuple[float, int]]]] = {n: [[(0.0, 0)]] for n in nodes}
    snapshots: list[tuple[float, str, str, int]] = []
    for ev in events:
        t = float(ev[0])
        kind = ev[1]
        if kind == "deliver" and has_roles:
            # a follower's term changes silently (no "role" trace): a message from a leader of
            # a higher term is accepted and its term adopted (Raft, Figure 2)
            dst, msg = ev[2], ev[4]
            term = getattr(msg, "term", None)
            cur = current.get(dst)
            if (
                cur is not None
                and cur.state == "follower"
                and isinstance(term, int)
                and hasattr(msg, "leader_id")
                and isinstance(cur.term, int)
                and term > cur.term
            ):
                last_term[dst] = term
                switch(dst, t, "follower", term)
        elif kind == "trace":
            node, name, fields = ev[2], ev[3], dict(ev[4])
            if name == "role" and node in current:
                term = _epoch_value(fields)
                last_term[node] = term
                switch(node, t, str(fields.get("role")), term)
            elif name == "commit" and node in commits and isinstance(fields.get("index"), int):
                commits[node][-1].append((t, int(fields["index"])))
            elif name in ("snapshot", "install_snapshot") and isinstance(fields.get("index"), int):
                snapshots.append((t, str(node), str(name), int(fields["index"])))
        elif kind == "crash" and ev[2] in current:
            switch(ev[2], t, "crashed", None)
            commits[ev[2]][-1].append((t, -1))  # end of the segment
            commits[ev[2]].append([])
        elif kind == "restart" and ev[2] in current:
            switch(ev[2], t, initial, last_term[ev[2]])
        elif kind == "partition":
            desc = str(ev[2])
            links = _parse_partition(desc, nodes)
            if links is not None:
                cut |= links
            label = desc
            if open_part is not None:
                open_part.end = t
                partitions.append(open_part)
                label = f"{open_part.state} + {desc}"
            open_part = _Span(t, t, label)
            recompute_cut_off(t)
        elif kind == "heal":
            cut.clear()
            if open_part is not None:
                open_part.end = t
                partitions.append(open_part)
                open_part = None
            recompute_cut_off(t)
        elif kind == "disconnect":
            cut |= {frozenset((ev[2], m)) for m in nodes if m != ev[2]}
            recompute_cut_off(t)
        elif kind == "reconnect":
            cut -= {lk for lk in cut if ev[2] in lk}
            recompute_cut_off(t)
    for n in nodes:
        switch(n, t_end, "<end>", None)
        if n in cut_since and t_end > cut_since[n]:
            cut_off[n].append((cut_since[n], t_end))
    if open_part is not None:
        open_part.end = t_end
        partitions.append(open_part)
    for n in nodes:
        commits[n] = [seg for seg in commits[n] if any(i >= 0 for _, i in seg)]

    return _Model(
        result=result,
        nodes=nodes,
        events=events,
        t_end=t_end,
        has_roles=has_roles,
        roles=roles,
        cut_off=cut_off,
        partitions=partitions,
        commits=commits,
        snapshots=snapshots,
        violation=_violation(result, t_end),
        tips=_Tips(),
        epoch=_EPOCHS.get(result.options.protocol, ("term", "T")),
        byzantine=dict(getattr(sim, "byzantine", {})),
    )


def _violation(result: RunResult, t_end: float) -> _Violation | None:
    summary = result.summary
    violations = [str(v) for v in summary.get("violations", [])]
    if result.violation_at is not None:
        failed = [name for name, held in summary.get("invariants", {}).items() if not held]
        title = (
            f"invariant {', '.join(failed)} violated at t={result.violation_at:.6f} s"
            if failed
            else f"violation at t={result.violation_at:.6f} s"
        )
        v = float(result.violation_at)
        w = max(0.004, t_end * 0.003)
        return _Violation(title, violations, v, (v - w, v + w))
    lin = result.linearizability
    if lin is not None and getattr(lin, "ok", None) is False:
        ops = list(getattr(lin, "failing_ops", []) or [])
        times = [float(o.call) for o in ops] + [float(o.ret) for o in ops if o.ret is not None]
        band = (min(times), max(times)) if times else None
        at = band[1] if band else None
        detail = [f"not linearizable: {getattr(lin, 'explanation', '')}"]
        title = "client history is not linearizable"
        return _Violation(title, detail, at, band, label="not linearizable, until")
    if violations:
        return _Violation(violations[0].split(":")[0], violations, None, None)
    return None


# --------------------------------------------------------------------------------- windows


class _Messages:
    """The deliveries and drops of a trace, for finding those of a time window fast."""

    def __init__(self, events: Sequence[tuple[Any, ...]]) -> None:
        rows = []
        for i, ev in enumerate(events):
            if ev[1] == "deliver":
                rows.append((float(ev[0]), float(ev[5]), i))
            elif ev[1] == "drop":
                rows.append((float(ev[0]), float(ev[0]), i))
        rows.sort()
        self.ends = [r[0] for r in rows]
        self.starts = [r[1] for r in rows]
        self.index = [r[2] for r in rows]
        self.max_flight = max((e - s for e, s, _ in rows), default=0.0)

    def __bool__(self) -> bool:
        return bool(self.index)

    def within(self, lo: float, hi: float) -> list[int]:
        """Event indexes of the messages in flight at some moment of [lo, hi]."""
        out = []
        ends, starts = self.ends, self.starts
        k = bisect.bisect_left(ends, lo)
        stop = hi + self.max_flight
        while k < len(ends) and ends[k] <= stop:
            if starts[k] <= hi:
                out.append(self.index[k])
            k += 1
        out.sort()
        return out


def _fit(msgs: _Messages, w: _Window, anchor: float) -> _Window:
    """Narrow the window around ``anchor`` until it holds at most MAX_ARROWS messages."""
    chosen = msgs.within(w.lo, w.hi)
    if len(chosen) <= MAX_ARROWS:
        w.messages = chosen
        return w
    span = w.hi - w.lo
    lo_s, hi_s = 0.0, 1.0
    for _ in range(30):
        mid = (lo_s + hi_s) / 2
        a, b = anchor - (anchor - w.lo) * mid, anchor + (w.hi - anchor) * mid
        if len(msgs.within(a, b)) <= MAX_ARROWS:
            lo_s = mid
        else:
            hi_s = mid
    w.lo, w.hi = anchor - (anchor - w.lo) * lo_s, anchor + (w.hi - anchor) * lo_s
    w.messages = msgs.within(w.lo, w.hi)
    w.note = (
        f"narrowed from {span:.3g} s to {w.hi - w.lo:.3g} s to draw at most {MAX_ARROWS} messages"
    )
    return w


def _clamp(m: _Model, lo: float, hi: float) -> tuple[float, float]:
    span = hi - lo
    if lo < 0:
        lo, hi = 0.0, span
    if hi > m.t_end:
        lo, hi = max(0.0, m.t_end - span), m.t_end
    return lo, hi


def _eventful(m: _Model, span: float) -> float:
    """The start of the ``span``-long stretch with the most role changes and faults."""
    marks = [
        float(ev[0])
        for ev in m.events
        if (ev[1] == "trace" and ev[3] in ("role", "suspect", "trust"))
        or ev[1] in ("crash", "restart", "partition", "heal", "disconnect", "reconnect")
    ]
    if not marks:
        return 0.0
    best, best_start = -1, 0.0
    for i, t in enumerate(marks):
        j = bisect.bisect_right(marks, t + span)
        if j - i > best:
            best, best_start = j - i, t
    return max(0.0, best_start - span * 0.1)


def _windows(m: _Model) -> list[_Window]:
    msgs = _Messages(m.events)
    if not msgs:
        return []
    wins: list[_Window] = []
    v = m.violation
    if v is not None and v.at is not None:
        lo, hi = _clamp(m, v.at - 1.9, v.at + 0.1)
        wins.append(_fit(msgs, _Window("violation", "2 s before the violation", lo, hi), v.at))
        lo, hi = _clamp(m, v.at - 0.28, v.at + 0.02)
        wins.append(_fit(msgs, _Window("zoom", "zoom: 0.3 s before it", lo, hi), v.at))
    start = _eventful(m, 2.0)
    lo, hi = _clamp(m, start, start + 2.0)
    wins.append(_fit(msgs, _Window("eventful", "most eventful 2 s", lo, hi), (lo + hi) / 2))
    zstart = _eventful(m, 0.3)
    lo, hi = _clamp(m, zstart, zstart + 0.3)
    wins.append(_fit(msgs, _Window("ezoom", "zoom: most eventful 0.3 s", lo, hi), (lo + hi) / 2))
    lo, hi = _clamp(m, 0.0, 1.0)
    wins.append(_fit(msgs, _Window("start", "first second", lo, hi), 0.0))
    healed = float(m.result.options.duration)
    if healed < m.t_end - 0.05:
        lo, hi = _clamp(m, healed - 0.1, healed + 0.9)
        wins.append(_fit(msgs, _Window("heal", "faults healed", lo, hi), healed))
    out: list[_Window] = []
    for w in wins:
        if not w.messages:
            continue
        dup = False
        for o in out:
            overlap = min(o.hi, w.hi) - max(o.lo, w.lo)
            if overlap > 0.8 * max(w.hi - w.lo, o.hi - o.lo):
                dup = True
        if not dup:
            out.append(w)
    return out


# --------------------------------------------------------------------------------- SVG parts


def _axis(x: _X, y: float, height: float, label_y: float, grid: bool = True) -> list[str]:
    ticks = _ticks(x.t0, x.t1, 12)
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    out = []
    for t in ticks:
        px = x(t)
        if grid:
            out.append(
                f'<line class="grid" x1="{_n(px)}" y1="{_n(y)}" x2="{_n(px)}" '
                f'y2="{_n(y + height)}"/>'
            )
        out.append(
            f'<text class="tick" x="{_n(px)}" y="{_n(label_y)}">{_e(_tick_label(t, step))}</text>'
        )
    return out


def _violation_marks(
    m: _Model, x: _X, y0: float, y1: float, label_y: float | None = None
) -> list[str]:
    v = m.violation
    out: list[str] = []
    if v is None:
        return out
    if v.band is not None:
        a, b = max(v.band[0], x.t0), min(v.band[1], x.t1)
        if b >= a:
            xa, xb = x(a), x(b)
            out.append(
                f'<rect class="vband" x="{_n(xa)}" y="{_n(y0)}" width="{_n(max(xb - xa, 3))}" '
                f'height="{_n(y1 - y0)}"/>'
            )
    if v.at is not None and x.t0 <= v.at <= x.t1:
        px = x(v.at)
        out.append(f'<line class="vline" x1="{_n(px)}" y1="{_n(y0)}" x2="{_n(px)}" y2="{_n(y1)}"/>')
        if label_y is not None:
            anchor = "end" if px > _LEFT + _PLOT_W * 0.8 else "start"
            dx = -4 if anchor == "end" else 4
            out.append(
                f'<text class="vlabel" x="{_n(px + dx)}" y="{_n(label_y)}" '
                f'text-anchor="{anchor}">{_e(v.label)} t={v.at:.3f} s</text>'
            )
    return out


def _heal_mark(m: _Model, x: _X, y0: float, y1: float, label_y: float | None = None) -> list[str]:
    """A dashed line where the safety phase ended and every fault was healed."""
    healed = float(m.result.options.duration)
    if not (x.t0 < healed < x.t1) or healed >= m.t_end:
        return []
    px = x(healed)
    out = [f'<line class="healline" x1="{_n(px)}" y1="{_n(y0)}" x2="{_n(px)}" y2="{_n(y1)}"/>']
    if label_y is not None:
        out.append(
            f'<text class="heallabel" x="{_n(px - 3)}" y="{_n(label_y)}" text-anchor="end">'
            "faults healed →</text>"
        )
    return out


def _nemesis_rows(m: _Model, x: _X, y: float, row_h: float) -> tuple[list[str], float]:
    """One row per nemesis: faults as shaded stretches or as points, with hover text."""
    out: list[str] = []
    stop = float(m.result.options.duration)
    for nem in m.result.nemeses:
        log = [(float(t), str(text)) for t, text in getattr(nem, "log", [])]
        name = str(getattr(nem, "name", type(nem).__name__))
        out.append(
            f'<text class="lane" x="{_LEFT - 6}" y="{_n(y + row_h / 2 + 4)}" '
            f'text-anchor="end">{_e(name)}</text>'
        )
        out.append(
            f'<rect class="nemrow" x="{_LEFT}" y="{_n(y)}" width="{_PLOT_W}" height="{_n(row_h)}"/>'
        )
        last_label_end = -1.0
        if not log:
            out.append(
                f'<text class="nemtext muted" x="{_LEFT + 4}" y="{_n(y + row_h / 2 + 4)}">'
                "no fault injected</text>"
            )
        if name in _STATEFUL_NEMESES:
            for k, (t, text) in enumerate(log):
                end = log[k + 1][0] if k + 1 < len(log) else max(stop, t)
                end = min(end, m.t_end)
                # bursts alternate on, off, on, ...; the others say when they are off
                off = k % 2 == 1 if name in ("loss", "duplicate") else text in _OFF_TEXTS
                if off or end <= t:
                    continue
                xa, xb = x(t), x(end)
                tip = m.tips.add(f"{name}: {text}\nfrom {_fmt_t(t)} to {_fmt_t(end)}")
                out.append(
                    f'<rect class="nem nem-{_e(name)}" x="{_n(xa)}" y="{_n(y + 2)}" '
                    f'width="{_n(max(xb - xa, 2))}" height="{_n(row_h - 4)}" data-i="{tip}"/>'
                )
                label = text.split(":")[0]
                if xb - xa > 7 * len(label) and xa > last_label_end:
                    out.append(
                        f'<text class="nemtext" x="{_n(xa + 3)}" y="{_n(y + row_h / 2 + 4)}">'
                        f"{_e(label)}</text>"
                    )
                    last_label_end = xa + 7 * len(label)
        else:
            xs = [x(t) for t, _ in log] + [float(WIDTH)]
            for k, (t, text) in enumerate(log):
                px = xs[k]
                tip = m.tips.add(f"{name}: {text}\nat {_fmt_t(t)}")
                cls = "pt-crash" if text.startswith(("crash", "bounce")) else "pt"
                out.append(
                    f'<rect class="{cls}" x="{_n(px - 1.5)}" y="{_n(y + 2)}" width="3" '
                    f'height="{_n(row_h - 4)}" data-i="{tip}"/>'
                )
                # the whole text if it fits before the next mark, else its last word, else none
                for label in (text, text.split()[-1] if text.split() else ""):
                    width = 6.0 * len(label) + 4
                    if label and px > last_label_end and px + width < xs[k + 1]:
                        out.append(
                            f'<text class="nemtext" x="{_n(px + 3)}" '
                            f'y="{_n(y + row_h / 2 + 4)}">{_e(label)}</text>'
                        )
                        last_label_end = px + width
                        break
        y += row_h + 3
    return out, y


def _timeline_svg(m: _Model, windows: Sequence[_Window]) -> str:
    """Nemesis rows, then one row per node: its role and term over the whole run."""
    x = _X(0.0, m.t_end)
    row_h = 24.0
    top = 20.0
    parts, y = _nemesis_rows(m, x, top, 20.0)
    if m.result.nemeses:
        y += 8
    lanes_top = y
    for k, node in enumerate(m.nodes):
        ry = lanes_top + k * (row_h + 4)
        parts.append(_lane_label(m, node, _LEFT - 6, ry + row_h / 2 + 4))
        epoch, letter = m.epoch
        for s in m.roles[node]:
            xa, xb = x(s.start), x(s.end)
            color = ROLE_COLORS.get(s.state, "#d9d9d9")
            term = f", {epoch} {s.term}" if s.term is not None else ""
            tip = m.tips.add(
                f"{node}: {s.state}{term}\nfrom {_fmt_t(s.start)} to {_fmt_t(s.end)} "
                f"({(s.end - s.start) * 1000:.1f} ms)"
            )
            cls = "role crashed" if s.state == "crashed" else "role"
            parts.append(
                f'<rect class="{cls}" x="{_n(xa)}" y="{_n(ry)}" width="{_n(max(xb - xa, 0.6))}" '
                f'height="{_n(row_h)}" fill="{color}" data-i="{tip}"/>'
            )
            text = (
                "crashed"
                if s.state == "crashed"
                else (f"{letter}{s.term}" if s.term is not None else "")
            )
            if s.state == "leader" and s.term is not None:
                text = f"leader {letter}{s.term}"
            if text and xb - xa > 6.5 * len(text) + 4:
                fill = _ROLE_TEXT.get(s.state, "#333")
                parts.append(
                    f'<text class="roletext" x="{_n(xa + 3)}" y="{_n(ry + row_h / 2 + 4)}" '
                    f'style="fill:{fill}">{_e(text)}</text>'
                )
            elif s.term is not None and s.state == "leader" and xb - xa > 14:
                parts.append(
                    f'<text class="roletext" x="{_n(xa + 2)}" y="{_n(ry + row_h / 2 + 4)}" '
                    f'style="fill:#fff">{_e(s.term)}</text>'
                )
        for a, b in m.cut_off[node]:
            xa, xb = x(a), x(b)
            tip = m.tips.add(
                f"{node} cut off from a majority (partition)\nfrom {_fmt_t(a)} to {_fmt_t(b)}"
            )
            parts.append(
                f'<rect class="cutoff" x="{_n(xa)}" y="{_n(ry + row_h - 7)}" '
                f'width="{_n(max(xb - xa, 1))}" height="7" data-i="{tip}"/>'
            )
    bottom = lanes_top + len(m.nodes) * (row_h + 4)
    parts.extend(_heal_mark(m, x, top - 4, bottom, label_y=top - 7))
    parts.extend(_violation_marks(m, x, top - 4, bottom, label_y=top - 7))
    if windows:
        w = windows[0]
        parts.append(
            f'<rect class="winmark" x="{_n(x(w.lo))}" y="{_n(top - 4)}" '
            f'width="{_n(max(x(w.hi) - x(w.lo), 2))}" height="{_n(bottom - top + 6)}"/>'
        )
    height = bottom + 22
    axis = _axis(x, top, bottom - top, bottom + 15)
    return _svg(
        height, axis + parts, extra=f'data-t0="0" data-t1="{m.t_end!r}" id="timeline"', cls="ov"
    )


def _lane_label(m: _Model, node: str, x: float, y: float) -> str:
    """A node's name at the left of its lane; byzantine nodes in red, with their behaviour."""
    behaviour = m.byzantine.get(node)
    if behaviour is None:
        return f'<text class="lane" x="{x}" y="{_n(y)}" text-anchor="end">{_e(node)}</text>'
    tip = m.tips.add(f"{node} is byzantine: {behaviour}")
    return (
        f'<text class="lane byz" x="{x}" y="{_n(y)}" text-anchor="end" data-i="{tip}">'
        f"{_e(node)} ✗</text>"
    )


def _svg(height: float, parts: Iterable[str], extra: str = "", cls: str = "") -> str:
    c = f' class="{cls}"' if cls else ""
    return (
        f'<svg{c} width="{WIDTH}" height="{_n(height)}" '
        f'viewBox="0 0 {WIDTH} {_n(height)}" {extra}>' + "".join(parts) + "</svg>"
    )


def _kind_colors(m: _Model) -> dict[str, str]:
    kinds: dict[str, str] = {}
    extra = 0
    for ev in m.events:
        if ev[1] in ("deliver", "drop"):
            k = _kind(ev[4])
            if k not in kinds:
                if k in _KIND_COLORS:
                    kinds[k] = _KIND_COLORS[k]
                else:
                    kinds[k] = _EXTRA_COLORS[extra % len(_EXTRA_COLORS)]
                    extra += 1
    order = list(_KIND_COLORS)
    return dict(
        sorted(kinds.items(), key=lambda kv: (order.index(kv[0]) if kv[0] in order else 99, kv[0]))
    )


def _msg_tip(m: _Model, i: int) -> int:
    ev = m.events[i]
    msg = ev[4]
    if ev[1] == "deliver":
        t, dst, src, sent = float(ev[0]), ev[2], ev[3], float(ev[5])
        head = (
            f"{_kind(msg)}  {src} → {dst}\nsent {_fmt_t(sent)}, received {_fmt_t(t)} "
            f"({(t - sent) * 1000:.2f} ms)"
        )
    else:
        t, src, dst, reason = float(ev[0]), ev[2], ev[3], ev[5]
        when = "arrived at a crashed node" if reason == "down" else "at send"
        head = f"{_kind(msg)}  {src} → {dst}  DROPPED ({reason}, {when})\nat {_fmt_t(t)}"
    return m.tips.add(head + "\n" + "\n".join(_msg_fields(msg)), key=("msg", i))


def _spacetime_svg(m: _Model, w: _Window, colors: dict[str, str], idx: int) -> str:
    x = _X(w.lo, w.hi)
    lane_gap = 54.0
    top = 34.0
    ys = {n: top + 14 + k * lane_gap for k, n in enumerate(m.nodes)}
    bottom = top + 14 + (len(m.nodes) - 1) * lane_gap + 22
    parts: list[str] = []
    clip = f"clip{idx}"
    parts.append(
        f'<defs><clipPath id="{clip}"><rect x="{_LEFT}" y="0" width="{_PLOT_W}" '
        f'height="{_n(bottom + 10)}"/></clipPath></defs>'
    )
    parts.extend(_axis(x, top - 4, bottom - top + 4, 12))
    body: list[str] = []
    # partitions: a labelled strip at the top
    for p in m.partitions:
        if p.end < w.lo or p.start > w.hi:
            continue
        xa, xb = x(max(p.start, w.lo)), x(min(p.end, w.hi))
        tip = m.tips.add(f"partition {p.state}\nfrom {_fmt_t(p.start)} to {_fmt_t(p.end)}")
        body.append(
            f'<rect class="pstrip" x="{_n(xa)}" y="17" width="{_n(max(xb - xa, 1))}" '
            f'height="13" data-i="{tip}"/>'
        )
        label = f"partition {p.state}"
        if xb - xa > 6 * len(label):
            body.append(f'<text class="ptext" x="{_n(xa + 3)}" y="27">{_e(label)}</text>')
        elif xb - xa > 60:
            body.append(f'<text class="ptext" x="{_n(xa + 3)}" y="27">partition</text>')
    for node in m.nodes:
        ly = ys[node]
        label_end = -1.0
        for s in m.roles[node]:
            if s.end < w.lo or s.start > w.hi:
                continue
            tint = _LANE_TINT.get(s.state)
            xa, xb = x(max(s.start, w.lo)), x(min(s.end, w.hi))
            if tint:
                body.append(
                    f'<rect x="{_n(xa)}" y="{_n(ly - 16)}" width="{_n(max(xb - xa, 0.5))}" '
                    f'height="32" fill="{tint}"/>'
                )
            if s.start >= w.lo and s.state not in ("crashed",) and m.has_roles:
                letter = {"leader": "L", "candidate": "C", "pre-candidate": "P"}.get(s.state, "F")
                term = "" if s.term is None else str(s.term)
                tip = m.tips.add(
                    f"{node} becomes {s.state}, {m.epoch[0]} {s.term}\nat {_fmt_t(s.start)}"
                )
                text = letter + term
                if xa + 1 >= label_end:
                    body.append(
                        f'<text class="rolemark r-{_e(s.state)}" x="{_n(xa + 2)}" '
                        f'y="{_n(ly - 5)}" data-i="{tip}">{_e(text)}</text>'
                    )
                    label_end = xa + 4 + 7 * len(text)
                else:  # no room for the label: a tick (hover tells)
                    body.append(
                        f'<rect class="rolemark r-{_e(s.state)}" x="{_n(xa)}" y="{_n(ly - 12)}" '
                        f'width="1.5" height="9" data-i="{tip}"/>'
                    )
        for a, b in m.cut_off[node]:
            if b < w.lo or a > w.hi:
                continue
            xa, xb = x(max(a, w.lo)), x(min(b, w.hi))
            body.append(
                f'<rect class="cutlane" x="{_n(xa)}" y="{_n(ly + 10)}" '
                f'width="{_n(max(xb - xa, 0.5))}" height="5"/>'
            )
        body.append(
            f'<line class="laneline" x1="{_LEFT}" y1="{_n(ly)}" x2="{_LEFT + _PLOT_W}" '
            f'y2="{_n(ly)}"/>'
        )
        parts.append(_lane_label(m, node, _LEFT - 8, ly + 4))
    # messages
    kind_ids = {k: j for j, k in enumerate(colors)}
    for i in w.messages:
        ev = m.events[i]
        k = kind_ids[_kind(ev[4])]
        tip = _msg_tip(m, i)
        thick = " e" if _has_entries(ev[4]) else ""
        if ev[1] == "deliver":
            x1, y1, x2, y2 = x(float(ev[5])), ys[ev[3]], x(float(ev[0])), ys[ev[2]]
            body.append(
                f'<line class="m k{k}{thick}" x1="{_n(x1)}" y1="{_n(y1)}" x2="{_n(x2)}" '
                f'y2="{_n(y2)}" marker-end="url(#a{k})" data-i="{tip}"/>'
            )
        else:
            t, src, dst, reason = float(ev[0]), ev[2], ev[3], ev[5]
            sy, dy = ys[src], ys[dst]
            px = x(t)
            if reason == "down":  # it travelled, and found its receiver crashed
                x1, y1, x2, y2 = px - 8, sy + (dy - sy) * 0.6, px, dy - (8 if dy > sy else -8)
            else:
                x1, y1, x2, y2 = px, sy, px + 8, sy + (dy - sy) * 0.35
            body.append(
                f'<line class="m d k{k}" x1="{_n(x1)}" y1="{_n(y1)}" x2="{_n(x2)}" '
                f'y2="{_n(y2)}" marker-end="url(#x)" data-i="{tip}"/>'
            )
    # other trace events (not role changes or commits): small diamonds
    for i, ev in enumerate(m.events):
        if (
            ev[1] == "trace"
            and ev[3] not in ("role", "commit")
            and w.lo <= float(ev[0]) <= w.hi
            and ev[2] in ys
        ):
            px, ly = x(float(ev[0])), ys[ev[2]]
            fields = ", ".join(f"{k}={_short(v, 80)}" for k, v in ev[4])
            tip = m.tips.add(f"{ev[2]}: {ev[3]} {fields}\nat {_fmt_t(ev[0])}", key=("tr", i))
            body.append(
                f'<path class="g-note" d="M{_n(px)},{_n(ly - 5)}l4,5l-4,5l-4,-5z" data-i="{tip}"/>'
            )
    # crashes and restarts
    for ev in m.events:
        if ev[1] in ("crash", "restart") and w.lo <= float(ev[0]) <= w.hi and ev[2] in ys:
            px, ly = x(float(ev[0])), ys[ev[2]]
            tip = m.tips.add(f"{ev[2]} {ev[1]}ed at {_fmt_t(ev[0])}")
            glyph = "✖" if ev[1] == "crash" else "▶"
            body.append(
                f'<text class="g-{ev[1]}" x="{_n(px)}" y="{_n(ly + 5)}" data-i="{tip}">'
                f"{glyph}</text>"
            )
    parts.append(f'<g clip-path="url(#{clip})">' + "".join(body) + "</g>")
    parts.extend(_violation_marks(m, x, top - 4, bottom, label_y=bottom + 13))
    parts.extend(_heal_mark(m, x, top - 4, bottom, label_y=bottom + 13))
    return _svg(bottom + 18, parts, extra=f'data-t0="{w.lo!r}" data-t1="{w.hi!r}"', cls="st")


def _markers(colors: dict[str, str]) -> str:
    """Arrowheads (one per message kind) and the x that ends a dropped message."""
    defs = []
    for j, color in enumerate(colors.values()):
        defs.append(
            f'<marker id="a{j}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
            f'markerHeight="7" orient="auto-start-reverse" markerUnits="userSpaceOnUse">'
            f'<path d="M0,1 L10,5 L0,9 z" fill="{color}"/></marker>'
        )
    defs.append(
        '<marker id="x" viewBox="0 0 10 10" refX="5" refY="5" markerWidth="8" markerHeight="8" '
        'markerUnits="userSpaceOnUse"><path d="M1,1 L9,9 M9,1 L1,9" stroke="#c00" '
        'stroke-width="2.2"/></marker>'
    )
    rules = "".join(f".k{j}{{stroke:{c}}}" for j, c in enumerate(colors.values()))
    return (
        f"<style>{rules}</style>"
        '<svg width="0" height="0" style="position:absolute" aria-hidden="true">'
        f"<defs>{''.join(defs)}</defs></svg>"
    )


def _commit_svg(m: _Model) -> str:
    x = _X(0.0, m.t_end)
    top, h = 20.0, 200.0
    top_index = max([i for segs in m.commits.values() for seg in segs for _, i in seg] + [1])
    step = _nice_step(top_index, 5)
    ymax = math.ceil(top_index / step) * step

    def y0(i: float) -> float:
        return top + h - i / ymax * h

    parts = _axis(x, top, h, top + h + 15)
    k = 0
    while k * step <= ymax + 1e-9:
        yy = y0(k * step)
        parts.append(
            f'<line class="grid" x1="{_LEFT}" y1="{_n(yy)}" x2="{_LEFT + _PLOT_W}" y2="{_n(yy)}"/>'
        )
        parts.append(
            f'<text class="tick" x="{_LEFT - 6}" y="{_n(yy + 4)}" text-anchor="end">'
            f"{k * step:g}</text>"
        )
        k += 1
    for n_i, node in enumerate(m.nodes):
        color = _NODE_COLORS[n_i % len(_NODE_COLORS)]
        # nodes that agree would hide each other: shift each line by a pixel or two
        shift = (n_i - (len(m.nodes) - 1) / 2) * 1.6

        def y(i: float, shift: float = shift) -> float:
            return top + h - i / ymax * h + shift

        for seg in m.commits[node]:
            pts = [(t, i) for t, i in seg if i >= 0]
            if not pts:
                continue
            end = seg[-1][0] if seg[-1][1] < 0 else m.t_end
            d = [f"M{_n(x(pts[0][0]))},{_n(y(pts[0][1]))}"]
            for t, i in pts[1:]:
                d.append(f"H{_n(x(t))}V{_n(y(i))}")
            d.append(f"H{_n(x(end))}")
            tip = m.tips.add(
                f"{node}: commit index {pts[-1][1]} at {_fmt_t(pts[-1][0])}"
                + (f"; crashed at {_fmt_t(end)}" if seg[-1][1] < 0 else "")
            )
            parts.append(f'<path class="cline" d="{"".join(d)}" stroke="{color}" data-i="{tip}"/>')
    for t, node, what, index in m.snapshots:
        tip = m.tips.add(f"{node}: {what} at index {index}\nat {_fmt_t(t)}")
        color = _NODE_COLORS[m.nodes.index(node) % len(_NODE_COLORS)] if node in m.nodes else "#333"
        parts.append(
            f'<rect x="{_n(x(t) - 3)}" y="{_n(y0(index) - 3)}" width="6" height="6" '
            f'fill="{color}" stroke="#000" data-i="{tip}"/>'
        )
    parts.extend(_heal_mark(m, x, top - 4, top + h, label_y=top - 7))
    parts.extend(_violation_marks(m, x, top - 4, top + h, label_y=top - 7))
    legend = _legend(
        [(n, _NODE_COLORS[k % len(_NODE_COLORS)]) for k, n in enumerate(m.nodes)], line=True
    )
    return legend + _svg(top + h + 24, parts, cls="ov")


def _legend(items: Sequence[tuple[str, str]], line: bool = False, note: str = "") -> str:
    out = ['<div class="legend">']
    for label, color in items:
        sw = "sw line" if line else "sw"
        out.append(f'<span><i class="{sw}" style="background:{_e(color)}"></i>{_e(label)}</span>')
    if note:
        out.append(f'<span class="lnote">{note}</span>')
    out.append("</div>")
    return "".join(out)


# --------------------------------------------------------------------------------- clients


def _percentile(sorted_values: Sequence[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, math.ceil(p / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


def _ms(s: float) -> str:
    ms = s * 1000
    return f"{ms:.0f} ms" if ms >= 100 else f"{ms:.1f} ms" if ms >= 1 else f"{ms:.2f} ms"


def _latency_svg(lat: Sequence[float], width: int) -> str:
    left, plot_w, top, h = 48.0, width - 60.0, 10.0, 160.0
    if not lat:
        return '<p class="muted">no operation completed ok</p>'
    lo = max(min(min(lat), 0.001) * 0.9, 1e-5)
    hi = max(max(lat) * 1.1, lo * 10)
    bins = 32
    l0, l1 = math.log10(lo), math.log10(hi)
    counts = [0] * bins
    for v in lat:
        b = int((math.log10(max(v, lo)) - l0) / (l1 - l0) * bins)
        counts[min(max(b, 0), bins - 1)] += 1
    cmax = max(counts)
    bw = plot_w / bins
    parts: list[str] = []
    step = _nice_step(cmax, 4)
    ytop = math.ceil(cmax / step) * step
    k = 0
    while k * step <= ytop + 1e-9:
        yy = top + h - k * step / ytop * h
        parts.append(
            f'<line class="grid" x1="{left}" y1="{_n(yy)}" x2="{left + plot_w}" y2="{_n(yy)}"/>'
        )
        parts.append(
            f'<text class="tick" x="{left - 5}" y="{_n(yy + 4)}" text-anchor="end">{k * step:g}</text>'
        )
        k += 1
    for b, c in enumerate(counts):
        if not c:
            continue
        bh = c / ytop * h
        a, z = 10 ** (l0 + b * (l1 - l0) / bins), 10 ** (l0 + (b + 1) * (l1 - l0) / bins)
        parts.append(
            f'<rect class="bar" x="{_n(left + b * bw + 0.5)}" y="{_n(top + h - bh)}" '
            f'width="{_n(bw - 1)}" height="{_n(bh)}"><title>{_e(_ms(a))} to {_e(_ms(z))}: '
            f"{c} ops</title></rect>"
        )
    for exp in range(math.floor(l0), math.ceil(l1) + 1):
        for mult in (1, 2, 5):
            v = mult * 10.0**exp
            if lo <= v <= hi:
                px = left + (math.log10(v) - l0) / (l1 - l0) * plot_w
                parts.append(
                    f'<line class="grid" x1="{_n(px)}" y1="{top}" x2="{_n(px)}" y2="{top + h}"/>'
                )
                label = f"{v * 1000:g} ms" if v < 1 else f"{v:g} s"
                parts.append(f'<text class="tick" x="{_n(px)}" y="{top + h + 14}">{label}</text>')
    parts.append(
        f'<text class="axlabel" x="{left + plot_w}" y="{top + h + 30}" text-anchor="end">'
        "latency of ok operations (ret &minus; call), log scale</text>"
    )
    return (
        f'<svg width="{width}" height="{_n(top + h + 36)}" '
        f'viewBox="0 0 {width} {_n(top + h + 36)}">' + "".join(parts) + "</svg>"
    )


def _throughput_svg(m: _Model, records: Sequence[Any], width: int) -> str:
    left, plot_w, top, h = 48.0, width - 60.0, 10.0, 160.0
    bucket = 0.5
    n = max(1, math.ceil(m.t_end / bucket))
    ok = [0] * n
    fail = [0] * n
    for r in records:
        if r.ret is None:
            continue
        b = min(n - 1, max(0, int(float(r.ret) / bucket)))
        if r.status == "ok":
            ok[b] += 1
        elif r.status == "fail":
            fail[b] += 1
    cmax = max([a + b for a, b in zip(ok, fail, strict=True)] + [1])
    step = _nice_step(cmax, 4)
    ytop = math.ceil(cmax / step) * step
    x = _X(0.0, n * bucket, left, left + plot_w)
    parts: list[str] = []
    k = 0
    while k * step <= ytop + 1e-9:
        yy = top + h - k * step / ytop * h
        parts.append(
            f'<line class="grid" x1="{left}" y1="{_n(yy)}" x2="{left + plot_w}" y2="{_n(yy)}"/>'
        )
        parts.append(
            f'<text class="tick" x="{left - 5}" y="{_n(yy + 4)}" text-anchor="end">{k * step:g}</text>'
        )
        k += 1
    for t in _ticks(0.0, n * bucket, 8):
        parts.append(f'<text class="tick" x="{_n(x(t))}" y="{top + h + 14}">{t:g} s</text>')
    bw = plot_w / n
    for b in range(n):
        xb = left + b * bw
        oh, fh = ok[b] / ytop * h, fail[b] / ytop * h
        title = f"{b * bucket:g} to {(b + 1) * bucket:g} s: {ok[b]} ok, {fail[b]} fail"
        if ok[b]:
            parts.append(
                f'<rect class="bar" x="{_n(xb + 0.5)}" y="{_n(top + h - oh)}" width="{_n(max(bw - 1, 0.5))}" '
                f'height="{_n(oh)}"><title>{_e(title)}</title></rect>'
            )
        if fail[b]:
            parts.append(
                f'<rect class="fbar" x="{_n(xb + 0.5)}" y="{_n(top + h - oh - fh)}" '
                f'width="{_n(max(bw - 1, 0.5))}" height="{_n(fh)}"><title>{_e(title)}</title></rect>'
            )
    parts.extend(_heal_mark(m, x, top, top + h))
    parts.extend(_violation_marks(m, x, top, top + h))
    parts.append(
        f'<text class="axlabel" x="{left + plot_w}" y="{top + h + 30}" text-anchor="end">'
        f"completed operations per {bucket:g} s (green ok, red fail), by completion time</text>"
    )
    return (
        f'<svg width="{width}" height="{_n(top + h + 36)}" '
        f'viewBox="0 0 {width} {_n(top + h + 36)}">' + "".join(parts) + "</svg>"
    )


def _op_row(r: Any) -> str:
    ret = "" if r.ret is None else f"{float(r.ret):.6f}"
    lat = "" if r.ret is None else _ms(float(r.ret) - float(r.call))
    return (
        f"<tr class='st-{_e(r.status)}'><td>{_e(r.client)}</td><td>{_e(r.status)}</td>"
        f"<td>{float(r.call):.6f}</td><td>{_e(ret)}</td><td>{_e(lat)}</td>"
        f"<td><code>{_e(_short(r.input, 120))}</code></td>"
        f"<td><code>{_e(_short(r.output, 120))}</code></td>"
        f"<td>{_e(getattr(r, 'attempts', ''))}</td></tr>"
    )


_OPS_HEAD = (
    "<tr><th>client</th><th>status</th><th>call (s)</th><th>ret (s)</th><th>latency</th>"
    "<th>input</th><th>output</th><th>attempts</th></tr>"
)


def _clients_section(m: _Model) -> str:
    records = list(m.result.pool.records)
    if not records:
        return (
            "<section><h2>Clients</h2><p class='muted'>No simulated clients in this run "
            f"(protocol {_e(m.result.options.protocol)} takes no client commands).</p></section>"
        )
    counts = {"ok": 0, "fail": 0, "info": 0}
    for r in records:
        counts["info" if r.status == "pending" else r.status] = (
            counts.get("info" if r.status == "pending" else r.status, 0) + 1
        )
    lat = sorted(
        float(r.ret) - float(r.call) for r in records if r.status == "ok" and r.ret is not None
    )
    stats = ""
    if lat:
        stats = (
            f" · latency p50 {_ms(_percentile(lat, 50))}, p90 {_ms(_percentile(lat, 90))}, "
            f"p99 {_ms(_percentile(lat, 99))}, max {_ms(lat[-1])}"
        )
    half = (WIDTH - 20) // 2
    slow = sorted(
        (r for r in records if r.status == "ok" and r.ret is not None),
        key=lambda r: float(r.call) - float(r.ret or 0.0),
    )[:8]
    odd = [r for r in records if r.status != "ok"][:12]
    tables = ""
    if odd:
        tables += (
            f"<h3>Operations that did not end ok ({len([r for r in records if r.status != 'ok'])}; "
            "fail: certainly no effect; info/pending: outcome unknown)</h3>"
            f"<table class='ops'>{_OPS_HEAD}{''.join(_op_row(r) for r in odd)}</table>"
        )
    if slow:
        tables += (
            f"<h3>Slowest ok operations</h3><table class='ops'>{_OPS_HEAD}"
            f"{''.join(_op_row(r) for r in slow)}</table>"
        )
    return (
        "<section><h2>Clients</h2>"
        f"<p><b class='ok'>{counts['ok']} ok</b> · <b class='bad'>{counts['fail']} fail</b> · "
        f"<b class='info'>{counts['info']} info</b> (of {len(records)} operations){stats}</p>"
        f"<div class='pair'>{_latency_svg(lat, half)}"
        f"{_throughput_svg(m, records, half)}</div>{tables}</section>"
    )


# --------------------------------------------------------------------------------- tables


def _event_row(ev: tuple[Any, ...]) -> tuple[str, str, str]:
    kind = ev[1]
    if kind == "deliver":
        return (
            f"deliver {_kind(ev[4])}",
            f"{ev[3]} → {ev[2]}",
            f"sent at {float(ev[5]):.6f}: {_short(ev[4], 220)}",
        )
    if kind == "drop":
        return (f"drop {_kind(ev[4])} ({ev[5]})", f"{ev[2]} → {ev[3]}", _short(ev[4], 220))
    if kind == "timer":
        return ("timer", str(ev[2]), str(ev[3]))
    if kind == "trace":
        fields = ", ".join(f"{k}={_short(v, 80)}" for k, v in ev[4])
        return (f"trace {ev[3]}", str(ev[2]), fields)
    if kind in ("crash", "restart", "disconnect", "reconnect"):
        return (kind, str(ev[2]), "")
    if kind == "partition":
        return ("partition", "", str(ev[2]))
    if kind == "heal":
        return ("heal", "", "every link restored")
    if kind == "skew":
        return ("clock skew", str(ev[2]), f"timers x{ev[3]}")
    if kind == "reply":
        return ("reply", str(ev[2]), f"request {ev[3]}: {_short(ev[4], 200)}")
    return (str(kind), "", _short(ev[2:], 220))


def _events_table(m: _Model, at: float, before: int = 24, after: int = 6) -> str:
    times = [float(ev[0]) for ev in m.events]
    j = bisect.bisect_right(times, at + 1e-12)
    lo, hi = max(0, j - before), min(len(m.events), j + after)
    rows = []
    for k in range(lo, hi):
        ev = m.events[k]
        t = float(ev[0])
        what, where, detail = _event_row(ev)
        cls = " class='hit'" if abs(t - at) < 1e-9 else (" class='after'" if t > at else "")
        rows.append(
            f"<tr{cls}><td>{k}</td><td>{t:.6f}</td><td>{(t - at) * 1000:+.2f}</td>"
            f"<td>{_e(what)}</td><td>{_e(where)}</td><td><code>{_e(detail)}</code></td></tr>"
        )
    return (
        f"<table class='events'><tr><th>#</th><th>time (s)</th><th>Δ (ms)</th><th>event</th>"
        f"<th>node</th><th>detail</th></tr>{''.join(rows)}</table>"
    )


def _failure_section(m: _Model) -> str:
    v = m.violation
    if v is None:
        return ""
    out = [f"<section class='failure'><h2>Failure: {_e(v.title)}</h2>"]
    for d in v.detail:
        out.append(f"<p class='violation'>{_e(d)}</p>")
    lin = m.result.linearizability
    ops = list(getattr(lin, "failing_ops", []) or []) if lin is not None else []
    if ops:
        rows = "".join(
            f"<tr><td>{_e(o.client)}</td><td>{float(o.call):.6f}</td>"
            f"<td>{'' if o.ret is None else f'{float(o.ret):.6f}'}</td>"
            f"<td><code>{_e(_short(o.input, 120))}</code></td>"
            f"<td><code>{_e(_short(o.output, 120))}</code></td></tr>"
            for o in ops[:30]
        )
        out.append(
            "<h3>Operations that could not be linearized</h3><table class='ops'><tr><th>client</th>"
            f"<th>call (s)</th><th>ret (s)</th><th>input</th><th>output</th></tr>{rows}</table>"
        )
    if v.at is not None and m.events:
        out.append(
            "<p class='muted'>The red band on every diagram below marks this moment; the events "
            "around it are listed after the space-time diagram.</p>"
        )
    elif v.at is None:
        out.append("<p class='muted'>No single moment to highlight for this failure.</p>")
    out.append("</section>")
    return "".join(out)


def _failure_events(m: _Model) -> str:
    v = m.violation
    if v is None or v.at is None or not m.events:
        return ""
    return (
        f"<section class='failure'><h2>Events around the violation (t={v.at:.6f} s)</h2>"
        "<p class='muted'>The invariants are checked after every event; rows in red happened "
        "at the moment of the violation (the last of them is the step after which the check "
        "failed); grey rows come after it.</p>" + _events_table(m, v.at) + "</section>"
    )


# --------------------------------------------------------------------------------- the page


def _verdict(value: Any, none_text: str) -> str:
    if value is True:
        return "<span class='ok'>yes</span>"
    if value is False:
        return "<span class='bad'>no</span>"
    return f"<span class='muted'>{_e(none_text)}</span>"


def _header(m: _Model) -> str:
    r = m.result
    s = r.summary
    o = r.options
    ok = bool(s.get("ok"))
    badge = (
        "<span class='badge pass'>PASSED</span>" if ok else "<span class='badge fail'>FAILED</span>"
    )
    inv = s.get("invariants", {})
    chips = (
        "".join(
            f"<span class='chip {'ok' if held else 'bad'}'>{'✓' if held else '✗'} {_e(name)}</span>"
            for name, held in inv.items()
        )
        or "<span class='muted'>none checked</span>"
    )
    msgs = s.get("messages", {})
    ops = s.get("ops", {})
    rows = [
        ("protocol", _e(s.get("protocol", o.protocol))),
        ("nodes", f"{len(m.nodes)}: " + _e(", ".join(m.nodes))),
        ("seed", f"<b>{_e(s.get('seed', o.seed))}</b>"),
        (
            "nemesis",
            _e(", ".join(s.get("nemesis", [])) or "none")
            + (f" · base loss {o.loss:g}" if o.loss else ""),
        ),
        ("unsafe variant", _e(s.get("unsafe") or "none")),
        ("replay", f"<code class='cmd'>{_e(s.get('replay', o.replay_command()))}</code>"),
        ("trace hash", f"<code>{_e(s.get('trace_hash', ''))}</code>"),
        ("invariants", chips),
        ("linearizable", _verdict(s.get("linearizable"), "not checked")),
        ("converged", _verdict(s.get("converged"), "not reached (the run stopped early)")),
        ("progress after heal", _verdict(s.get("progress_after_heal"), "not measured")),
        ("client ops", _e(", ".join(f"{k} {v}" for k, v in ops.items()) or "none")),
        ("messages", _e(", ".join(f"{k} {v}" for k, v in msgs.items()))),
        (
            "leader changes",
            _e(s.get("leader_changes", "")) + f" · final leader {_e(s.get('leader') or 'none')}",
        ),
        (
            "simulated",
            f"{_e(s.get('simulated_seconds', ''))} s · {_e(s.get('events', ''))} events "
            f"· {_e(s.get('invariant_checks', ''))} invariant checks · wall "
            f"{_e(s.get('wall_seconds', ''))} s",
        ),
    ]
    table = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    violations = s.get("violations", [])
    vlist = ""
    if violations:
        vlist = (
            "<ul class='violations'>" + "".join(f"<li>{_e(v)}</li>" for v in violations) + "</ul>"
        )
    title = f"{_e(s.get('protocol', o.protocol))} · {len(m.nodes)} nodes · seed {_e(o.seed)}"
    return (
        f"<header><h1>{badge} quorumkit simulation: {title}</h1>{vlist}"
        f"<table class='kv'>{table}</table></header>"
    )


def _status_table(m: _Model) -> str:
    status = m.result.summary.get("status", {})
    if not status:
        return ""
    keys: list[str] = []
    for st in status.values():
        for k in st:
            if k not in keys and k != "id":
                keys.append(k)
    head = "".join(f"<th>{_e(k)}</th>" for k in keys)
    rows = "".join(
        f"<tr><th>{_e(n)}</th>"
        + "".join(
            f"<td>{_e(_short(st.get(k, ''), 60)) if not isinstance(st.get(k, ''), str) else _e(st.get(k, ''))}</td>"
            for k in keys
        )
        + "</tr>"
        for n, st in status.items()
    )
    return (
        "<details><summary>Final status of every node</summary>"
        f"<table class='status'><tr><th>node</th>{head}</tr>{rows}</table></details>"
    )


def _nemesis_log(m: _Model) -> str:
    entries = sorted(
        (float(t), str(getattr(nem, "name", "")), str(text))
        for nem in m.result.nemeses
        for t, text in getattr(nem, "log", [])
    )
    if not entries:
        return ""
    rows = "".join(
        f"<tr><td>{t:.6f}</td><td>{_e(n)}</td><td>{_e(x)}</td></tr>" for t, n, x in entries
    )
    return (
        f"<details><summary>Fault log ({len(entries)} entries)</summary><table class='events'>"
        f"<tr><th>time (s)</th><th>nemesis</th><th>what</th></tr>{rows}</table></details>"
    )


def _role_legend(m: _Model) -> str:
    items = [(k, ROLE_COLORS[k]) for k in ("follower", "pre-candidate", "candidate", "leader")]
    if not m.has_roles:
        items = [("up", ROLE_COLORS["up"])]
    items.append(("crashed", ROLE_COLORS["crashed"]))
    note = (
        "<i class='sw cut'></i>cut off from a majority by a partition · "
        "<i class='sw vb'></i>violation · <i class='sw wm'></i>space-time window shown below"
        + (f" · {m.epoch[1]}<i>n</i> = {m.epoch[0]}" if m.has_roles else "")
        + (" · <b class='byz'>✗</b> byzantine node (hover: its behaviour)" if m.byzantine else "")
    )
    return _legend(items, note=note)


def _spacetime_section(m: _Model, windows: Sequence[_Window]) -> str:
    if not windows:
        return (
            "<section><h2>Messages (space-time diagram)</h2><p class='muted'>No trace was "
            "recorded for this run: run it with <code>--report</code> (RunOptions(record=True)) "
            "to get the diagrams.</p></section>"
        )
    colors = _kind_colors(m)
    buttons = []
    panes = []
    for k, w in enumerate(windows):
        on = " on" if k == 0 else ""
        buttons.append(
            f"<button class='wbtn{on}' data-w='{k}'>{_e(w.title)}<br><small>{w.lo:.3f} to {w.hi:.3f} s"
            f"</small></button>"
        )
        drops = sum(1 for i in w.messages if m.events[i][1] == "drop")
        note = f" ({_e(w.note)})" if w.note else ""
        caption = (
            f"<p class='caption'>{_e(w.title)}: simulated time {w.lo:.6f} s to {w.hi:.6f} s "
            f"({(w.hi - w.lo) * 1000:.0f} ms): {len(w.messages) - drops} delivered and {drops} "
            f"dropped messages{note}.</p>"
        )
        hidden = "" if k == 0 else " hidden"
        panes.append(
            f"<div class='win' data-w='{k}'{hidden}>{caption}{_spacetime_svg(m, w, colors, k)}</div>"
        )
    legend_items = list(colors.items())
    notes = []
    if any(ev[1] in ("deliver", "drop") and _has_entries(ev[4]) for ev in m.events):
        notes.append("<i class='sw ln thick'></i>thick: carries log entries")
    notes.append(
        "<span class='dropx'>- - ✕</span> dropped (at send: loss / partition / omission; "
        "near the receiver: it was down)"
    )
    notes.append("<b class='g-crash'>✖</b> crash · <b class='g-restart'>▶</b> restart")
    notes.append("<b class='g-note'>◆</b> other trace event")
    if m.has_roles:
        notes.append(
            "lane tint: <span style='background:#d8f3d8'>leader</span> "
            "<span style='background:#ffe0c2'>candidate</span> "
            "<span style='background:#fff4c2'>pre-candidate</span> "
            "<span style='background:#e3e3e3'>crashed</span> · letters F/P/C/L + "
            f"{m.epoch[0]}: "
            "a role change"
        )
    else:
        notes.append("lane tint: <span style='background:#e3e3e3'>crashed</span>")
    notes.append("red bar under a lane: cut off from a majority")
    note = " · ".join(notes)
    windows_js = _json_for_script([[w.lo, w.hi] for w in windows])
    return (
        "<section><h2>Messages (space-time diagram)</h2>"
        "<p class='muted'>One lane per node, time left to right; an arrow goes from the send "
        "(sender lane, send time) to the delivery (receiver lane, receive time). Hover a message "
        "for its fields. To keep the page small only a few windows are drawn, each holding at "
        f"most {MAX_ARROWS} messages; pick one:</p>"
        f"<div class='wsel'>{''.join(buttons)}</div>"
        + _legend(legend_items, line=True, note=note)
        + "".join(panes)
        + f"<script>const WINDOWS={windows_js};</script></section>"
    )


_CSS = """
*{box-sizing:border-box}
body{font:13px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
margin:0 auto;padding:12px 18px 40px;max-width:1380px;color:#222;background:#fff}
h1{font-size:20px;margin:6px 0 8px}h2{font-size:16px;margin:22px 0 6px;border-bottom:1px solid #ddd;
padding-bottom:3px}h3{font-size:13px;margin:12px 0 4px}
code{font:12px/1.3 ui-monospace,Menlo,Consolas,monospace}
.cmd{background:#f3f3f3;padding:2px 5px;border-radius:3px;user-select:all}
.badge{display:inline-block;padding:2px 10px;border-radius:4px;color:#fff;font-size:15px;
margin-right:8px;vertical-align:2px}.pass{background:#2e8b3a}.fail{background:#c62828}
table{border-collapse:collapse}.kv th{text-align:left;padding:1px 14px 1px 0;color:#555;
font-weight:600;white-space:nowrap;vertical-align:top}.kv td{padding:1px 0}
.chip{display:inline-block;padding:0 7px;margin:1px 4px 1px 0;border-radius:9px;font-size:12px}
.chip.ok{background:#e3f4e3;color:#1e6b28}.chip.bad{background:#fde0e0;color:#b71c1c;font-weight:700}
.ok{color:#1e7b2c}.bad{color:#c62828}.info{color:#8a6d00}.muted{color:#777}
.violations{color:#c62828;font-weight:600;margin:4px 0 10px;padding-left:20px}
.violation{color:#c62828;font-weight:600}
.failure{background:#fff6f6;border:1px solid #f3c4c4;padding:2px 12px 10px;border-radius:4px}
.failure h2{color:#b71c1c;border-color:#f3c4c4}
svg{display:block;max-width:100%;height:auto;font-size:11px;overflow:visible}
svg text{fill:#333}
.grid{stroke:#eee;stroke-width:1}.tick{text-anchor:middle;fill:#777;font-size:10px}
.lane{font-weight:600;font-size:12px}.byz{fill:#c0392b;color:#c0392b}.laneline{stroke:#999;stroke-width:1}
.role{stroke:#fff;stroke-width:.6}.roletext{font-size:10px;pointer-events:none}
.cutoff{fill:#d62728;opacity:.85}.cutlane{fill:#d62728;opacity:.55}
.nemrow{fill:#fafafa;stroke:#eee}.nem{fill:#fbd0a6;stroke:#e6a15a;stroke-width:.6}
.nem-partition{fill:#f4b6b6;stroke:#d37b7b}.nem-loss{fill:#c9c1e8;stroke:#9488c9}
.nem-duplicate{fill:#bfe3d0;stroke:#76b895}.nem-delay{fill:#f9e0a0;stroke:#d9b453}
svg text.muted{fill:#999}.pt{fill:#555}.pt-crash{fill:#333}.nemtext{font-size:10px;pointer-events:none;fill:#222}
.vband{fill:#ff1744;opacity:.22}.vline{stroke:#d50000;stroke-width:1.6}
.vlabel{fill:#d50000;font-weight:700;font-size:11px}
.healline{stroke:#2e7d32;stroke-width:1;stroke-dasharray:4 3}.heallabel{fill:#2e7d32;font-size:10px}
.winmark{fill:none;stroke:#1565c0;stroke-width:1.5;stroke-dasharray:5 3}
.pstrip{fill:#f4b6b6}.ptext{font-size:10px;pointer-events:none}
.m{stroke-width:1.2;fill:none}.m.e{stroke-width:2.4}.m.d{stroke-dasharray:3 2;stroke-width:1.3}
.m.hl{stroke-width:4;stroke:#000!important}
.rolemark{font-size:10px;font-weight:700}.r-leader{fill:#1b7a2e}.r-candidate{fill:#d35400}
.r-pre-candidate{fill:#a07900}.r-follower{fill:#3c6e9e}
.g-crash{fill:#c00;color:#c00;font-size:14px;text-anchor:middle}
.g-restart{fill:#2e7d32;color:#2e7d32;font-size:12px;text-anchor:middle}
.g-note{fill:#6a1b9a;color:#6a1b9a}.cline{fill:none;stroke-width:1.8}.bar{fill:#4caf50}.fbar{fill:#e53935}
.axlabel{fill:#666;font-size:11px}
.legend{display:flex;flex-wrap:wrap;gap:4px 14px;margin:4px 0 6px;font-size:12px;align-items:center}
.legend span{white-space:nowrap}.lnote{white-space:normal!important;color:#555}
.sw{display:inline-block;width:14px;height:11px;margin-right:4px;vertical-align:-1px;
border:1px solid rgba(0,0,0,.15)}.sw.line{height:4px;vertical-align:2px;border:0}
.sw.cut{background:#d62728;height:5px;border:0;vertical-align:1px}.sw.vb{background:#ff8a9e}
.sw.wm{border:1.5px dashed #1565c0;background:none}.sw.ln.thick{background:#1f77b4;height:4px;border:0}
.dropx{color:#c00;letter-spacing:-1px}
.wsel{display:flex;flex-wrap:wrap;gap:6px;margin:6px 0}
.wbtn{border:1px solid #bbb;background:#f7f7f7;border-radius:4px;padding:3px 9px;cursor:pointer;
font:12px system-ui,sans-serif;text-align:left}.wbtn.on{background:#1565c0;color:#fff;border-color:#1565c0}
.caption{margin:4px 0;color:#444}
.events,.ops,.status{font-size:12px;margin:4px 0}.events td,.events th,.ops td,.ops th,
.status td,.status th{border:1px solid #e3e3e3;padding:1px 6px;text-align:left;vertical-align:top}
.events th,.ops th,.status th{background:#f5f5f5}.events tr.hit td{background:#ffd6d6;font-weight:600}
.events tr.after td{color:#999}
.events td:nth-child(4),.events td:nth-child(5){white-space:nowrap}.events code,.ops code{word-break:break-all}
.pair{display:flex;gap:20px;flex-wrap:wrap}.pair svg{flex:1 1 0}
details{margin:8px 0}summary{cursor:pointer;color:#1565c0}
#tip{position:absolute;display:none;max-width:560px;background:#fffff0;border:1px solid #999;
padding:5px 8px;font:12px/1.35 ui-monospace,Menlo,Consolas,monospace;white-space:pre-wrap;
box-shadow:0 2px 6px rgba(0,0,0,.2);pointer-events:none;z-index:10;word-break:break-word}
footer{margin-top:24px;color:#888;font-size:11px}
"""

_JS = """
(function(){
const tip=document.getElementById('tip');
function show(i,e){tip.textContent=TIPS[i];tip.style.display='block';
 let x=e.pageX+14,y=e.pageY+14;const w=tip.offsetWidth;
 if(x+w>window.scrollX+document.documentElement.clientWidth-8){x=e.pageX-w-14;}
 tip.style.left=x+'px';tip.style.top=y+'px';}
function hide(){tip.style.display='none';}
let lit=null;
function unlight(){if(lit){lit.classList.remove('hl');lit=null;}}
function nearest(svg,e){
 const pt=svg.createSVGPoint();pt.x=e.clientX;pt.y=e.clientY;
 const m=svg.getScreenCTM();if(!m)return null;const p=pt.matrixTransform(m.inverse());
 if(!svg._lines){svg._lines=Array.from(svg.querySelectorAll('line.m')).map(l=>[l,
  +l.getAttribute('x1'),+l.getAttribute('y1'),+l.getAttribute('x2'),+l.getAttribute('y2')]);}
 let best=null,bd=36;
 for(const [l,x1,y1,x2,y2] of svg._lines){const dx=x2-x1,dy=y2-y1,L=dx*dx+dy*dy;
  let t=L?((p.x-x1)*dx+(p.y-y1)*dy)/L:0;t=Math.max(0,Math.min(1,t));
  const ex=x1+t*dx-p.x,ey=y1+t*dy-p.y,d=ex*ex+ey*ey;if(d<bd){bd=d;best=l;}}
 return best;}
document.addEventListener('mousemove',function(e){
 const svg=e.target.closest&&e.target.closest('svg.st');
 if(svg){const l=nearest(svg,e);if(l){if(lit!==l){unlight();lit=l;l.classList.add('hl');}
  show(+l.dataset.i,e);return;}}
 unlight();
 const el=e.target.closest&&e.target.closest('[data-i]');
 if(el){show(+el.dataset.i,e);}else{hide();}
});
const ov=document.getElementById('timeline');
function mark(k){
 document.querySelectorAll('.win').forEach(d=>{d.hidden=(+d.dataset.w!==k);});
 document.querySelectorAll('.wbtn').forEach(b=>{b.classList.toggle('on',+b.dataset.w===k);});
 const r=ov&&ov.querySelector('.winmark');if(!r||typeof WINDOWS==='undefined')return;
 const t0=+ov.dataset.t0,t1=+ov.dataset.t1,x0=%(left)s,w=%(plot)s;
 const a=x0+(WINDOWS[k][0]-t0)/(t1-t0)*w,b=x0+(WINDOWS[k][1]-t0)/(t1-t0)*w;
 r.setAttribute('x',a);r.setAttribute('width',Math.max(b-a,2));}
document.querySelectorAll('.wbtn').forEach(b=>b.addEventListener('click',()=>mark(+b.dataset.w)));
})();
"""


def render_report(result: RunResult) -> str:
    """The report of ``result`` as one self-contained HTML document."""
    m = _build(result)
    windows = _windows(m)
    header = _header(m)
    failure = _failure_section(m)
    if m.events:
        timeline = (
            "<section><h2>Faults and roles over the whole run</h2>"
            "<p class='muted'>Top rows: what each nemesis did (hover for details). Then one row "
            f"per node: its role and {m.epoch[0]}. Time 0 to the end of the run, including the "
            "liveness phase after every fault was healed.</p>"
            + _role_legend(m)
            + _timeline_svg(m, windows)
            + _nemesis_log(m)
            + "</section>"
        )
    else:
        timeline = (
            "<section><h2>Faults and roles</h2><p class='muted'>No trace was recorded for this "
            "run (RunOptions(record=True) records one).</p>" + _nemesis_log(m) + "</section>"
        )
    spacetime = _spacetime_section(m, windows)
    commit = ""
    if any(m.commits[n] for n in m.nodes) and any(
        i > 0 for segs in m.commits.values() for seg in segs for _, i in seg
    ):
        commit = (
            "<section><h2>Commit index over time</h2><p class='muted'>From the nodes' "
            "<code>commit</code> trace events; a line stops where its node crashed and starts "
            "again at its first commit after the restart; squares mark snapshots.</p>"
            + _commit_svg(m)
            + "</section>"
        )
    clients = _clients_section(m)
    status = _status_table(m)
    tips = _json_for_script(m.tips.texts)
    js = _JS.replace("%(left)s", str(_LEFT)).replace("%(plot)s", str(_PLOT_W))
    o = result.options
    title = f"quorumkit sim {o.protocol} seed {o.seed}: {'ok' if result.ok else 'FAILED'}"
    colors = _kind_colors(m) if m.events else {}
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
        + _markers(colors)
        + header
        + failure
        + timeline
        + spacetime
        + _failure_events(m)
        + commit
        + clients
        + f"<section><h2>Nodes at the end</h2>{status}</section>"
        + "<footer>Generated by quorumkit.check.report from the run's recorded trace. "
        "Everything is inline; the page needs no network.</footer>"
        + "<div id='tip'></div>"
        + f"<script>const TIPS={tips};</script><script>{js}</script></body></html>\n"
    )


def write_report(result: RunResult, path: str) -> None:
    """Write the report of ``result`` to ``path`` (UTF-8 HTML)."""
    text = render_report(result)
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write the report to {path}: {exc.strerror or exc}") from exc
