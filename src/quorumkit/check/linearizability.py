"""Linearizability checking of client histories: the WGL algorithm, with P-compositionality.

Rules. A history is a set of :class:`~quorumkit.check.history.Operation` records. It is
linearizable (Herlihy & Wing 1990) when the operations can be put in one sequential order
such that (1) running them in that order on the model (:mod:`quorumkit.check.models`) gives
every completed operation the output it recorded, and (2) an operation that returned before
another was called (``a.ret < b.call``, strictly: equal times count as concurrent) comes first.
An *indeterminate* operation (``ret is None``, Jepsen's ``:info``) may take effect at any
point after its call, or never; its output is not known and not checked.

Algorithm. Wing & Gong's search ("Testing and verifying concurrent objects", J. Parallel
Distrib. Comput. 17, 1993) with Lowe's memoization ("Testing for linearizability", Concurrency
and Computation 29(4), 2017), the "WGL" algorithm that Knossos and porcupine implement:

* the calls and returns of the operations are *entries* sorted by time (a call before a return
  at the same time) in a doubly linked list; the operations that may be linearized next are
  the calls that precede the first return in the list;
* linearizing an operation *lifts* its call and return out of the list; backtracking pops a
  stack and *unlifts* them back (dancing links), then tries the next candidate;
* a cache of the configurations already explored, (set of linearized operations as a bitset,
  model state), prunes the search: from the same configuration the same continuations exist.

Candidates are tried read-only operations first, then in call order (porcupine's order: a
real store tends to order operations as they arrive), indeterminate ones last.

Indeterminate operations have a call entry and no return entry (their return is at +infinity):
they never block anything, and the search succeeds as soon as every *completed* operation is
linearized, so pending indeterminate operations need not be linearized at all - they never
took effect.

Pruning. Each rule below removes only configurations from which no linearization is left, or
linearizations that another one kept makes redundant; the brute-force cross-check of the
tests compares the verdicts with plain enumeration. The models' hints they use are described
in :mod:`quorumkit.check.models`.

* An indeterminate operation that cannot change the state (a read) is dropped: it constrains
  nothing.
* Dominance: a configuration whose linearized set differs from an explored one only by more
  indeterminate operations (same completed ones, same state, no fewer restrictions) has no
  continuation the explored one lacks: it is pruned. The cache maps (completed bitset, state)
  to the indeterminate bitsets explored there.
* A read-only operation that can go now can go first (it commutes to the front): if nothing
  works after it, nothing works here either.
* The unobserved flag: after an indeterminate operation, a blind write (``write``, ``put``,
  ``delete``) is not tried until a completed operation has needed that operation's effect; a
  linearization that erases the effect unseen stays one without the indeterminate operation.
  A *shadow* state, the state without those operations, tells whether a completed cas that
  returned False needed them.
* Dead reads: a read that fails now and can never see its value, because every operation that
  could still set a state leading to it (by growth, for appends) is linearized or too late,
  ends the configuration.
* Unobservable states: while the flag is set, a state that no operation called in time could
  observe, even after growing, ends the configuration.

Partitioning. For the kv model each key is checked on its own: linearizability is local
(Herlihy & Wing), and Horn & Kroening ("Faster linearizability checking via
P-compositionality", FORTE 2015) use such partitions to cut the search. The partitions are
searched in slices, round robin, smallest first; the first failing one ends the search at the
end of its round, and the smallest failing window found is explained: the key, the longest
linearizable prefix found (counted in completed operations), the state after it, and the
operations that could not be linearized next.
"""

from __future__ import annotations

import math
import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Generator, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from quorumkit.check.history import Operation
from quorumkit.check.models import FAIL, Model, StepFn, freeze, make_model
from quorumkit.errors import ConfigError

__all__ = ["CheckResult", "check_linearizability"]

_HEAD: Final = 0  # main list: calls and returns of completed operations
_TAIL: Final = 1
_IHEAD: Final = 2  # info list: calls of indeterminate operations
_ITAIL: Final = 3
_NOTHING: Final = object()  # no argument
_F_INFO: Final = 0  # indeterminate: sets the unobserved flag
_F_QUIET: Final = 1  # a completed growth that cannot fail: keeps it
_F_FORBID: Final = 2  # completed, fails in one state only: clears it if the shadow is that one
_F_CLEAR: Final = 3  # any other completed operation: needs it clear (blind) or clears it
_RET: Final = -1  # eop of a return entry
_END: Final = -2  # eop of the tails
_SLICE: Final = 4096  # search iterations between two looks at the clock
_PREFIX_SHOWN: Final = 5
_CHECKPOINT: Final = 64
_REACH_WORK: Final = 2_000_000  # can_grow calls allowed to find the enablers of reads


@dataclass
class CheckResult:
    """The verdict of :func:`check_linearizability`.

    ``ok`` is ``True`` (linearizable), ``False`` (not), or ``None`` (the timeout ran out before
    a verdict). For ``False``, ``explanation`` describes the smallest failing partition,
    ``failing_key`` is its key (``None`` for a register) and ``failing_ops`` the operations
    that could not be linearized after the longest linearizable prefix.
    """

    ok: bool | None
    explanation: str
    partitions_checked: int
    partitions: int
    elapsed_s: float
    model: str
    failing_key: Any = None
    failing_ops: list[Operation] = field(default_factory=list)
    failing_keys: list[Any] = field(default_factory=list)


# ----------------------------------------------------------------------------- one partition


class _Partition:
    """One partition compiled for the search: steps, entries and the linked lists."""

    def __init__(self, key: Hashable, ops: list[Operation], model: Model) -> None:
        self.key = key
        self.model = model
        self.ops: list[Operation] = []
        self.steps: list[StepFn] = []
        self.blind: list[bool] = []
        self.readonly: list[bool] = []
        self.bitpos: list[int] = []  # bit of the operation in its bitset
        self.det: list[bool] = []
        n_det = n_info = 0
        events: list[tuple[float, int, int]] = []  # (time, 0 call / 1 return, op index)
        for op in ops:
            determinate = op.ret is not None
            step = model.compile(op.input, op.output, determinate)
            if step is None:
                continue  # an indeterminate operation that cannot change anything
            i = len(self.ops)
            self.ops.append(op)
            self.steps.append(step)
            self.blind.append(model.is_blind(op.input))
            self.readonly.append(determinate and model.is_read_only(op.input, op.output))
            self.det.append(determinate)
            events.append((op.call, 0, i))
            if op.ret is not None:
                events.append((op.ret, 1, i))
                self.bitpos.append(n_det)
                n_det += 1
            else:
                self.bitpos.append(n_info)
                n_info += 1
        self.n_det = n_det
        self.n_info = n_info
        self.grows = [model.grows(op.input) for op in self.ops]
        self.any_grow = any(self.grows)
        # what linearizing each operation does to the "unobserved" flag (see _search)
        quiet_growth = model.total_growth(self.ops)
        self.fkind: list[int] = []
        self.forbid: list[Any] = []  # _F_FORBID: the one state the operation cannot go in
        for i, op in enumerate(self.ops):
            kind, forbid = _F_CLEAR, None
            if not self.det[i]:
                kind = _F_INFO
            elif self.blind[i]:
                pass
            elif quiet_growth and self.grows[i]:
                kind = _F_QUIET
            elif self.readonly[i]:
                ok, forbid = model.forbidden_state(op.input, op.output)
                if ok:
                    kind = _F_FORBID
            self.fkind.append(kind)
            self.forbid.append(forbid)
        n = len(self.ops)
        # the order candidates are tried in: read-only operations first (one that fits is
        # taken without trying the others), then by call time as in porcupine (a real store
        # tends to order operations as they arrive), indeterminate operations last
        prio = [0] * n
        for r, i in enumerate(sorted(range(n), key=lambda i: (self.ops[i].call, i))):
            prio[i] = r - n if self.readonly[i] else r
        events.sort()
        self._reach_groups(events)
        self._observers()
        size = 4 + len(events)
        self.eop = [_END] * size  # op index of a call entry; _RET for a return entry
        self.rank = [-1] * size  # its position in time (returns and info calls)
        self.prio = [0] * size  # call entries: the order of trial (lower first)
        self.match = [-1] * size  # call of a completed operation -> its return entry
        self.rop = [-1] * size  # return entry -> its operation
        self.call_rank = [0] * n
        self.called_cache: dict[int, tuple[int, int]] = {}
        self.by_call: list[tuple[int, int]] = []  # (call rank, operation), sorted
        self.checkpoints: list[tuple[int, int]] = []  # called_before every _CHECKPOINT
        self.nxt = [0] * size
        self.prv = [0] * size
        self.rank[_ITAIL] = len(events) + 1  # beyond every bound: the info scan stops
        call_entry: dict[int, int] = {}
        last_main, last_info = _HEAD, _IHEAD
        for pos, (_, kind, i) in enumerate(events):
            e = 4 + pos
            if kind == 1:
                self.eop[e] = _RET
                self.rank[e] = pos
                self.rop[e] = i
                self.match[call_entry[i]] = e
            else:
                self.eop[e] = i
                self.call_rank[i] = pos
                self.prio[e] = prio[i] if self.det[i] else n + pos
                call_entry[i] = e
            if kind == 0 and not self.det[i]:
                self.rank[e] = pos
                self.nxt[last_info], self.prv[e] = e, last_info
                last_info = e
            else:
                self.nxt[last_main], self.prv[e] = e, last_main
                last_main = e
        self.nxt[last_main], self.prv[_TAIL] = _TAIL, last_main
        self.nxt[last_info], self.prv[_ITAIL] = _ITAIL, last_info
        self.nxt[_TAIL] = _TAIL
        self.nxt[_ITAIL] = _ITAIL

    def _reach_groups(self, events: list[tuple[float, int, int]]) -> None:
        """Prepare the dead-read test of the search.

        A read that can go in one state only (``Model.required_state``) and fails in the
        current state can still succeed later only through some operation ``x`` linearized
        before it that sets a state ``v`` (``Model.reset_state``) from which growth reaches
        the read's state (``Model.can_grow``), the growth being done by operations whose
        pieces spell out the difference (``Model.split_growth``). Such an ``x`` must be
        unlinearized and called before the read's return, and so must those operations.

        For each read this makes *groups* ``(x completed mask, x indeterminate mask, needed
        completed mask, needed indeterminate mask)``, one per value ``v``. In a configuration
        where the read fails, growth cannot reach its state from the current one, and every
        group has all its ``x`` linearized or some needed operation linearized, the read can
        never go: the configuration is a dead end.
        """
        n, model, ops = len(self.ops), self.model, self.ops
        self.need_ok = [False] * n
        self.need: list[Any] = [None] * n
        self.groups: list[tuple[tuple[int, int, int, int], ...]] = [()] * n
        for i in range(n):
            if self.readonly[i]:
                ok, target = model.required_state(ops[i].input, ops[i].output)
                self.need_ok[i], self.need[i] = ok, target
        if not any(self.need_ok):
            return
        grows, any_grow = self.grows, self.any_grow
        resets: list[tuple[bool, Any]] = [(False, None)] * n
        owners: dict[Any, list[int]] = {}  # growth piece -> the operations that add it
        for i in range(n):
            if grows[i]:
                owners.setdefault(model.growth_piece(ops[i].input), []).append(i)
            elif not self.readonly[i]:
                resets[i] = model.reset_state(ops[i].input)
        values = {v for ok, v in resets if ok}
        targets = {self.need[i] for i in range(n) if self.need_ok[i]}
        # target -> [(v, pieces that must be added after v, or None if unknown)]
        plans: dict[Any, list[tuple[Any, list[Any] | None]]] = {}
        coarse = any_grow and len(values) * len(targets) > _REACH_WORK
        for t in targets:
            if not any_grow:
                plans[t] = [(t, [])]
            elif coarse:
                plans[t] = [(v, None) for v in values]
            else:
                plan: list[tuple[Any, list[Any] | None]] = []
                for v in values:
                    if model.can_grow(v, t):
                        possible, pieces = model.split_growth(v, t, owners.keys())
                        if possible:
                            plan.append((v, pieces))
                plans[t] = plan
        call_rank = [0] * n
        by_value: dict[Any, list[int]] = {}  # reset value -> [completed, indeterminate] mask
        unknown = [0, 0]
        for pos, (_, kind, i) in enumerate(events):
            if kind == 0:
                call_rank[i] = pos
                if self.readonly[i] or grows[i]:
                    continue
                ok, v = resets[i]
                masks = by_value.setdefault(v, [0, 0]) if ok else unknown
                masks[0 if self.det[i] else 1] |= 1 << self.bitpos[i]
                continue
            if not self.need_ok[i]:
                continue
            free = [unknown[0], unknown[1]]  # groups that need nothing, merged
            groups = []
            for v, pieces in plans[self.need[i]]:
                m = by_value.get(v)
                if m is None:
                    continue
                needed = self._needed(pieces, owners, call_rank, pos)
                if needed is None:
                    continue  # the pieces cannot all be added before the read returns
                if needed == (0, 0):
                    free[0] |= m[0]
                    free[1] |= m[1]
                else:
                    groups.append((m[0], m[1], *needed))
            if free != [0, 0]:
                groups.append((free[0], free[1], 0, 0))
            self.groups[i] = tuple(groups)

    def _observers(self) -> None:
        """Prepare the unobserved-state test of the search.

        While the flag is set (see :func:`_search`), some operation must *clear* it before
        any blind write. So when completed operations that need it clear remain, a state
        that no pending operation could clear the flag in, even after growing, is a dead end.
        The candidates: completed operations that can go in one state only
        (``Model.required_state``) and indeterminate ones that change the state only from
        one state (``Model.acts_on``), by that state; completed operations that fail in one
        state only (``Model.forbidden_state``), by the *shadow* state; any other completed or
        indeterminate operation that is neither blind nor a growth, for any state.
        """
        model, grows = self.model, self.grows
        self.obs_any = [0, 0]  # [completed, indeterminate] observers of any state
        self.obs_by_state: dict[Any, list[int]] = {}
        self.obs_by_forbid: dict[Any, int] = {}  # shadow -> completed operations
        self.must_clear = 0  # completed operations that need the flag clear (or clear it)
        for i, op in enumerate(self.ops):
            bit = 1 << self.bitpos[i]
            kind = self.fkind[i]
            if kind == _F_QUIET:
                continue
            if kind == _F_FORBID:
                forbid = self.forbid[i]
                self.obs_by_forbid[forbid] = self.obs_by_forbid.get(forbid, 0) | bit
                continue
            if kind == _F_CLEAR:
                self.must_clear |= bit
                if self.blind[i]:
                    continue
                ok, s = model.required_state(op.input, op.output)
                slot = 0
            else:
                if self.blind[i] or grows[i]:
                    continue
                ok, s = model.acts_on(op.input)
                slot = 1
            masks = self.obs_by_state.setdefault(s, [0, 0]) if ok else self.obs_any
            masks[slot] |= bit
        self.obs_cache: dict[Any, tuple[int, int, list[Any]]] = {}
        self.forbid_cache: dict[Any, int] = {}
        self.pieces = {
            model.growth_piece(op.input) for op, g in zip(self.ops, grows, strict=True) if g
        }

    def grows_into(self, state: Any, target: Any) -> bool:
        """Can growth (by this partition's pieces) turn ``state`` into ``target``?"""
        if state == target:
            return True
        if not self.any_grow or not self.model.can_grow(state, target):
            return False
        return self.model.split_growth(state, target, self.pieces)[0]

    def forbid_observers(self, shadow: Any) -> int:
        """The completed operations that fail in one state only, that state being ``shadow``
        or a growth of it."""
        found = self.forbid_cache.get(shadow)
        if found is None:
            found = 0
            for t, mask in self.obs_by_forbid.items():
                if self.grows_into(shadow, t):
                    found |= mask
            self.forbid_cache[shadow] = found
        return found

    def observers(self, state: Any, grown_from: Any = _NOTHING) -> tuple[int, int]:
        """The (completed, indeterminate) masks of the operations that could observe
        ``state`` or a growth of it. ``grown_from``: a state ``state`` grew from, whose
        observers are then the only candidates (growth is transitive)."""
        found = self.obs_cache.get(state)
        if found is None:
            det_mask, info_mask = self.obs_any
            targets: list[Any] = []
            if self.any_grow:
                parent = self.obs_cache.get(grown_from) if grown_from is not _NOTHING else None
                pool = parent[2] if parent is not None else self.obs_by_state
                for t in pool:
                    if self.grows_into(state, t):
                        targets.append(t)
                        d, i = self.obs_by_state[t]
                        det_mask |= d
                        info_mask |= i
            else:
                m = self.obs_by_state.get(state)
                if m is not None:
                    det_mask |= m[0]
                    info_mask |= m[1]
            found = self.obs_cache[state] = (det_mask, info_mask, targets)
        return found[0], found[1]

    def observation_deadline(self) -> int:
        """The rank of the first return in the main list of an operation that needs the
        flag clear or clears it: the first operation to clear it must be called before."""
        eop, nxt, rop, fkind = self.eop, self.nxt, self.rop, self.fkind
        e = nxt[_HEAD]
        while True:
            op = eop[e]
            if op == _RET:
                if fkind[rop[e]] == _F_CLEAR:
                    return self.rank[e]
            elif op == _END:
                return self.rank[_ITAIL]
            e = nxt[e]

    def called_before(self, rank: int) -> tuple[int, int]:
        """(completed, indeterminate) masks of the operations called before ``rank``."""
        found = self.called_cache.get(rank)
        if found is None:
            if not self.by_call:
                self.by_call = sorted((r, i) for i, r in enumerate(self.call_rank))
                det_mask = info_mask = 0
                for k, (_, i) in enumerate(self.by_call):
                    if k % _CHECKPOINT == 0:
                        self.checkpoints.append((det_mask, info_mask))
                    if self.det[i]:
                        det_mask |= 1 << self.bitpos[i]
                    else:
                        info_mask |= 1 << self.bitpos[i]
                if len(self.by_call) % _CHECKPOINT == 0:  # k == len(by_call) needs one more
                    self.checkpoints.append((det_mask, info_mask))
            k = bisect_left(self.by_call, (rank, -1))  # the operations called before
            det_mask, info_mask = self.checkpoints[k // _CHECKPOINT]
            for _, i in self.by_call[k - k % _CHECKPOINT : k]:
                if self.det[i]:
                    det_mask |= 1 << self.bitpos[i]
                else:
                    info_mask |= 1 << self.bitpos[i]
            found = self.called_cache[rank] = (det_mask, info_mask)
        return found

    def _needed(
        self,
        pieces: list[Any] | None,
        owners: dict[Any, list[int]],
        call_rank: list[int],
        ret_pos: int,
    ) -> tuple[int, int] | None:
        """(completed, indeterminate) masks of the operations that must add ``pieces``
        before a return at ``ret_pos`` (``(0, 0)``: none known), or None if impossible."""
        det_mask = info_mask = 0
        if not pieces:
            return 0, 0
        for piece, count in Counter(pieces).items():
            able = [j for j in owners.get(piece, ()) if call_rank[j] < ret_pos]
            if len(able) < count:
                return None
            if len(able) == count:  # each of them has to add its piece
                for j in able:
                    if self.det[j]:
                        det_mask |= 1 << self.bitpos[j]
                    else:
                        info_mask |= 1 << self.bitpos[j]
        return det_mask, info_mask

    def candidates(self) -> list[int]:
        """The call entries that may be linearized next, in the order to try them."""
        eop, nxt, rank = self.eop, self.nxt, self.rank
        cands = []
        e = nxt[_HEAD]
        while eop[e] >= 0:
            cands.append(e)
            e = nxt[e]
        bound = rank[e]
        e = nxt[_IHEAD]
        while rank[e] < bound:
            cands.append(e)
            e = nxt[e]
        cands.sort(key=self.prio.__getitem__)
        return cands


@dataclass
class _Outcome:
    verdict: bool | None
    best: int = 0  # the most completed operations linearized at once
    # a snapshot of the search at the first configuration with `best` completed operations:
    prefix: list[int] = field(default_factory=list)  # op indices, in linearization order
    state: Any = None
    candidates: list[int] = field(default_factory=list)  # completed ops that could go next
    pending_info: list[int] = field(default_factory=list)  # indeterminate ops that could too


_Frame = tuple[list[int], int, Any, int, int, bool, Any, int, int]


def _search(p: _Partition, init: Any, stop_at: int = -1) -> Generator[None, None, _Outcome]:
    """The WGL search over one partition, as a generator that yields now and then (so that a
    scheduler can interleave partitions and watch the clock) and returns the outcome.

    A configuration is (completed bitset ``lin``, indeterminate bitset ``ilin``, ``state``,
    unobserved flag, ``shadow``); the stack holds, per level, the candidate list and the
    position reached in it, to resume after backtracking.

    With ``stop_at >= 0``, stop at the first configuration that has linearized ``stop_at``
    completed operations and return a snapshot of it (for the explanation).
    """
    if stop_at == 0:
        return _snapshot(p, [], init, 0)
    if p.n_det == 0:
        return _Outcome(True)
    eop, match, nxt, prv = p.eop, p.match, p.nxt, p.prv
    steps, bitpos, det, blind, readonly = p.steps, p.bitpos, p.det, p.blind, p.readonly
    fkind, forbid = p.fkind, p.forbid
    must_clear, observers, forbid_observers, grows = (
        p.must_clear,
        p.observers,
        p.forbid_observers,
        p.grows,
    )
    candidates = p.candidates
    need_ok, need, groups = p.need_ok, p.need, p.groups
    can_grow = p.model.can_grow if p.any_grow else _never
    # (completed bitset, state) -> [(indeterminate bitset, flag, shadow)] explored there
    cache: dict[tuple[int, Any], list[tuple[int, bool, Any]]] = {(0, init): [(0, False, None)]}
    stack: list[_Frame] = []
    push, pop = stack.append, stack.pop
    state = init
    lin = 0  # bitset of the linearized completed operations
    ilin = 0  # bitset of the linearized indeterminate operations
    # The "unobserved" flag: an indeterminate operation was linearized and no completed
    # operation has needed its effect since. Then a blind write would erase that effect
    # unseen, and is not tried: any linearization stays one without those indeterminate
    # operations. `shadow` is the state as it would be without them: a completed
    # operation that fails in one state only needs them (and clears the flag) only when
    # the shadow is that state; one that only grows the state keeps the flag.
    unobserved = False
    shadow: Any = None
    ndet = 0  # completed operations linearized
    best = 0
    remaining = p.n_det
    budget = _SLICE
    cands = candidates()
    idx = 0
    while True:
        budget -= 1
        if budget == 0:
            yield
            budget = _SLICE
        if idx < len(cands):
            e = cands[idx]
            idx += 1
            op = eop[e]
            if unobserved and blind[op]:
                continue
            new = steps[op](state)
            if new is FAIL:
                if need_ok[op] and not can_grow(state, need[op]):
                    for em, eim, nm, nim in groups[op]:
                        if (lin & em != em or ilin & eim != eim) and not (lin & nm or ilin & nim):
                            break  # this way to the read's state is still open
                    else:
                        idx = len(cands)  # the read can never go: a dead end
                continue
            d = det[op]
            if d:
                nlin, nilin = lin | (1 << bitpos[op]), ilin
            else:
                nlin, nilin = lin, ilin | (1 << bitpos[op])
            kind = fkind[op]
            if kind == _F_CLEAR:
                nflag, nshadow = False, None
            elif kind == _F_INFO:
                nflag, nshadow = True, (shadow if unobserved else state)
            elif not unobserved:
                nflag, nshadow = False, None
            elif kind == _F_QUIET:
                nshadow = steps[op](shadow)
                nflag = nshadow is not FAIL
            elif shadow == forbid[op]:
                nflag, nshadow = False, None
            else:
                nflag, nshadow = True, shadow
            if nflag and lin & must_clear != must_clear:
                om, oim = observers(new, state if grows[op] else _NOTHING)
                om |= forbid_observers(nshadow)
                if lin & om != om or nilin & oim != oim:
                    # only those called before the first pending return of a completed
                    # operation that is not a quiet growth can observe it in time
                    pd, pi = p.called_before(p.observation_deadline())
                    om &= pd
                    oim &= pi
                if lin & om == om and nilin & oim == oim:
                    continue  # no one can observe this state in time: a dead end
            key = (nlin, new)
            seen = cache.get(key)
            if seen is None:
                cache[key] = [(nilin, nflag, nshadow)]
            else:
                fresh = True
                for s_ilin, s_flag, s_shadow in seen:
                    # explored with a subset of these indeterminate operations and no more
                    # restrictions: whatever can follow here could follow there
                    if s_ilin & nilin == s_ilin and (not s_flag or (nflag and s_shadow == nshadow)):
                        fresh = False
                        break
                if not fresh:
                    if readonly[op]:
                        idx = len(cands)  # it could go first, and what follows is known
                    continue
                seen.append((nilin, nflag, nshadow))
            push((cands, idx, state, lin, ilin, unobserved, shadow, ndet, e))
            state, lin, ilin, unobserved, shadow = new, nlin, nilin, nflag, nshadow
            a, b = prv[e], nxt[e]
            nxt[a], prv[b] = b, a
            if d:
                r = match[e]
                a, b = prv[r], nxt[r]
                nxt[a], prv[b] = b, a
                ndet += 1
                remaining -= 1
                if remaining == 0:
                    return _Outcome(True, ndet)
                if ndet > best:
                    best = ndet
                    if ndet == stop_at:
                        return _snapshot(p, [eop[f[8]] for f in stack], state, ndet)
            cands = candidates()
            idx = 0
            continue
        # every candidate tried: backtrack
        if not stack:
            return _Outcome(False, best)
        cands, idx, state, lin, ilin, unobserved, shadow, ndet, e = pop()
        op = eop[e]
        if det[op]:
            r = match[e]
            nxt[prv[r]] = r
            prv[nxt[r]] = r
            remaining += 1
            if readonly[op]:
                # a read-only operation that can go here can go first: no linearization
                # from here begins otherwise, so the others need not be tried
                idx = len(cands)
        nxt[prv[e]] = e
        prv[nxt[e]] = e


def _never(state: Any, target: Any) -> bool:
    """Without growing operations no state grows into another."""
    return False


def _snapshot(p: _Partition, prefix: list[int], state: Any, ndet: int) -> _Outcome:
    """The operations that could be linearized after ``prefix`` (the lists are in that state)."""
    cands = [p.eop[e] for e in p.candidates()]
    det = [i for i in cands if p.det[i]]
    info = [i for i in cands if not p.det[i]]
    return _Outcome(False, ndet, prefix, state, det, info)


def _run(gen: Generator[None, None, _Outcome], deadline: float | None) -> _Outcome:
    """Drive one search to its end, or to the deadline (verdict None)."""
    try:
        while True:
            next(gen)
            if deadline is not None and time.monotonic() > deadline:
                gen.close()
                return _Outcome(None)
    except StopIteration as stop:
        result: _Outcome = stop.value
        return result


# ----------------------------------------------------------------------------- the checker


def _validate(ops: Iterable[Operation], model: Model) -> list[Operation]:
    out: list[Operation] = []
    for i, op in enumerate(ops):
        if not isinstance(op, Operation):
            raise ConfigError(f"operation {i}: expected an Operation, got {type(op).__name__}")
        where = f"operation {i} (client {op.client}, input {op.input!r:.60})"
        call, ret = op.call, op.ret
        if isinstance(call, bool) or not isinstance(call, (int, float)) or not math.isfinite(call):
            raise ConfigError(f"{where}: call must be a finite number, got {call!r:.30}")
        if ret is not None:
            if isinstance(ret, bool) or not isinstance(ret, (int, float)) or math.isnan(ret):
                raise ConfigError(f"{where}: ret must be a number or None, got {ret!r:.30}")
            if ret < call:
                raise ConfigError(f"{where}: ret {ret} precedes call {call}")
        if not isinstance(op.input, tuple):
            raise ConfigError(f"{where}: input must be a tuple, got {type(op.input).__name__}")
        try:
            model.validate(op.input, op.output, ret is not None)
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
        out.append(op)
    return out


def check_linearizability(
    ops: Iterable[Operation],
    model: str | Model = "register",
    timeout: float | None = None,
    *,
    initial: Any = None,
) -> CheckResult:
    """Is the history ``ops`` linearizable with respect to ``model``?

    ``model`` is ``"register"``, ``"kv"`` (checked key by key) or a
    :class:`~quorumkit.check.models.Model` instance (which carries its own initial value);
    ``initial`` is the value of the register, or of a missing key, at the start (default
    ``None``; porcupine's kv histories use ``""``). ``timeout`` bounds the wall-clock time in
    seconds: when it runs out before a verdict, ``ok`` is ``None`` (a failing partition found
    before then still gives ``False``). The search stops at the first round of partitions
    in which one fails. Raises :class:`~quorumkit.errors.ConfigError` for a malformed history
    (``ret < call``, an input that is not a tuple, an unknown operation) or an unknown model.
    """
    start = time.monotonic()
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout >= 0
    ):
        raise ConfigError(f"timeout must be a number of seconds >= 0 or None, got {timeout!r}")
    m = make_model(model, initial)
    history = _validate(ops, m)
    deadline = None if timeout is None else start + timeout
    groups: dict[Hashable, list[Operation]] = {}
    for op in history:
        groups.setdefault(m.partition_key(op.input), []).append(op)
    parts = [_Partition(k, g, m) for k, g in groups.items()]
    parts.sort(key=lambda q: len(q.ops))
    checked = 0
    timed_out = False
    failures: list[tuple[_Partition, _Outcome]] = []
    # Round robin over the partitions, a slice of search each: small and easy ones finish
    # first, and a failure found in one stops the others at the end of that round.
    active = [(part, _search(part, m.init_state())) for part in parts]
    while active and not failures and not timed_out:
        still: list[tuple[_Partition, Generator[None, None, _Outcome]]] = []
        for part, gen in active:
            if deadline is not None and time.monotonic() > deadline:
                timed_out = True
                gen.close()
                continue
            try:
                next(gen)
            except StopIteration as stop:
                outcome: _Outcome = stop.value
                checked += 1
                if outcome.verdict is False:
                    failures.append((part, outcome))
                continue
            still.append((part, gen))
        active = still
    for _, gen in active:
        gen.close()
    elapsed = time.monotonic() - start
    name = m.name
    if failures:
        explained = []
        for part, outcome in failures:
            snap = _run(_search(part, m.init_state(), stop_at=outcome.best), deadline)
            explained.append((part, snap if snap.verdict is False else outcome))
        explained.sort(key=lambda x: (len(x[1].candidates) or 1 << 30, len(x[0].ops)))
        part, snap = explained[0]
        others = [p.key for p, _ in explained[1:]]
        text = _explain(part, snap, others, checked, len(parts), timed_out)
        return CheckResult(
            ok=False,
            explanation=text,
            partitions_checked=checked,
            partitions=len(parts),
            elapsed_s=time.monotonic() - start,
            model=name,
            failing_key=part.key,
            failing_ops=[part.ops[i] for i in snap.candidates],
            failing_keys=[p.key for p, _ in explained],
        )
    if timed_out:
        text = (
            f"timed out after {elapsed:.3g} s: {checked} of {len(parts)} partition(s) checked, "
            "no violation found so far"
        )
        return CheckResult(None, text, checked, len(parts), elapsed, name)
    text = (
        f"linearizable: {len(history)} operation(s) in {len(parts)} partition(s) "
        f"({name} model), checked in {elapsed:.3g} s"
    )
    return CheckResult(True, text, checked, len(parts), elapsed, name)


# ----------------------------------------------------------------------------- explanations


def _num(x: float) -> str:
    return str(x) if isinstance(x, int) else f"{x:.6g}"


def format_operation(op: Operation) -> str:
    """One operation on one line: ``client 3 [12, 14] get('k') -> 'v'``."""
    ret = "?" if op.ret is None else _num(op.ret)
    args = ", ".join(repr(a) for a in op.input[1:])
    name = op.input[0] if op.input else "?"
    out = "? (indeterminate)" if op.ret is None else repr(op.output)
    return f"client {op.client} [{_num(op.call)}, {ret}] {name}({args}) -> {out}"


def _why(model: Model, state: Any, op: Operation) -> str:
    try:
        expected, nxt = model.apply(state, tuple(freeze(x) for x in op.input))
    except Exception as e:  # a user model may raise on an unexpected state
        return f"the model cannot apply it ({type(e).__name__}: {e})"
    if nxt is FAIL:
        return "the model cannot apply it in this state"
    if op.ret is not None and model.is_blind(op.input):
        return "it could go here, but nothing consistent follows it"
    if op.ret is not None and expected != freeze(op.output):
        return f"the model would return {expected!r}"
    return "it could go here, but nothing consistent follows it"


def _explain(
    part: _Partition,
    snap: _Outcome,
    others: list[Any],
    checked: int,
    total: int,
    timed_out: bool,
) -> str:
    m = part.model
    where = "the register" if part.key is None else f"key {part.key!r}"
    lines = [f"not linearizable: {where} ({len(part.ops)} operations in this partition)"]
    if others:
        shown = ", ".join(repr(k) for k in others[:8])
        more = f" and {len(others) - 8} more" if len(others) > 8 else ""
        lines.append(f"  other failing keys: {shown}{more}")
    if timed_out:
        lines.append(f"  (the timeout ran out: {checked} of {total} partitions checked)")
    elif checked < total:
        lines.append(
            f"  (the search stopped at this failure: {checked} of {total} partitions checked)"
        )
    if not snap.candidates and not snap.prefix and snap.best:
        lines.append(
            f"  the longest linearizable prefix has {snap.best} completed operation(s); "
            "the timeout ran out before it could be shown again"
        )
        return "\n".join(lines)
    n_info = sum(1 for i in snap.prefix if not part.det[i])
    extra = f" and {n_info} indeterminate" if n_info else ""
    lines.append(
        f"  the longest linearizable prefix has {snap.best} completed{extra} operation(s)"
        + (":" if snap.prefix else " (none can go first)")
    )
    if len(snap.prefix) > _PREFIX_SHOWN:
        lines.append(f"    ... {len(snap.prefix) - _PREFIX_SHOWN} earlier operation(s)")
    for i in snap.prefix[-_PREFIX_SHOWN:]:
        lines.append(f"    {format_operation(part.ops[i])}")
    lines.append(f"  state after it: {m.describe_state(snap.state)}")
    if snap.candidates:
        rets = [r for r in (part.ops[i].ret for i in snap.candidates) if r is not None]
        first_ret = min(rets, default=None)
        at = (
            f" (all called by t={_num(first_ret)}, the earliest pending return)"
            if first_ret
            else ""
        )
        lines.append(f"  none of these can be linearized next{at}:")
        for i in snap.candidates:
            op = part.ops[i]
            lines.append(f"    {format_operation(op)}: {_why(m, snap.state, op)}")
    if snap.pending_info:
        lines.append(
            f"  {len(snap.pending_info)} indeterminate operation(s) could also go there; "
            "no choice among them helps"
        )
    return "\n".join(lines)
