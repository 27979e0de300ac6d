"""The linearizability checker (WGL search with memoization, P-compositionality by key):
known verdicts on porcupine's kv histories, hand-made register and kv histories, a
brute-force cross-check on random small histories, timeouts and input validation."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quorumkit.check import (
    CheckResult,
    KVModel,
    Operation,
    check_linearizability,
    load_history,
    simulate_history,
)
from quorumkit.errors import ConfigError

SHARED = Path(__file__).resolve().parents[2] / "shared"
PORCUPINE = SHARED / "data" / "porcupine-kv"
needs_shared = pytest.mark.skipif(
    not PORCUPINE.is_dir(), reason=f"porcupine's kv histories are not at {PORCUPINE}"
)


def op(client: int, call: float, ret: float | None, *input: Any, out: Any = None) -> Operation:
    return Operation(client, call, ret, tuple(input), out)


def reg(ops: list[Operation], **kw: Any) -> CheckResult:
    return check_linearizability(ops, model="register", **kw)


def kv(ops: list[Operation], **kw: Any) -> CheckResult:
    return check_linearizability(ops, model="kv", **kw)


# ----------------------------------------------------------------------------- porcupine


@needs_shared
@pytest.mark.parametrize(
    ("name", "verdict"),
    [
        ("c01-ok", True),
        ("c01-bad", False),
        ("c10-ok", True),
        ("c10-bad", False),
        ("c50-ok", True),
        ("c50-bad", False),
    ],
)
def test_porcupine_kv_histories_get_their_known_verdicts(name: str, verdict: bool) -> None:
    ops, hint = load_history(PORCUPINE / f"{name}.txt")
    assert hint == {"model": "kv", "initial": ""}
    result = check_linearizability(ops, **hint)
    assert result.ok is verdict
    assert result.partitions == 10 or name == "c01-bad"
    if verdict:
        assert result.partitions_checked == result.partitions
        assert result.failing_ops == []
    else:
        assert result.explanation.startswith(f"not linearizable: key {result.failing_key!r}")
        assert result.failing_ops
        assert all(o.input[1] == result.failing_key for o in result.failing_ops)
        assert result.failing_key in result.failing_keys


@needs_shared
def test_porcupine_c01_bad_explanation_names_the_stale_get() -> None:
    ops, hint = load_history(PORCUPINE / "c01-bad.txt")
    result = check_linearizability(ops, **hint)
    assert result.ok is False
    assert result.failing_key == "7"
    # the get of line 60 returns "x 0 0 y" although "x 0 3 y" was appended after it
    assert [(o.call, o.ret, o.input, o.output) for o in result.failing_ops] == [
        (59, 60, ("get", "7"), "x 0 0 y")
    ]
    text = result.explanation
    assert "longest linearizable prefix has 3 completed operation(s)" in text
    assert "state after it: 'x 0 0 yx 0 3 y'" in text
    assert "the model would return 'x 0 0 yx 0 3 y'" in text


@needs_shared
def test_a_missing_key_is_not_the_empty_string_unless_initial_says_so() -> None:
    ops, _ = load_history(PORCUPINE / "c01-ok.txt")
    assert check_linearizability(ops, model="kv", initial="").ok is True
    assert check_linearizability(ops, model="kv").ok is False  # get of a missing key -> ""


# ----------------------------------------------------------------------------- register


def test_stale_read_after_a_completed_write_is_not_linearizable() -> None:
    h = [op(0, 0, 1, "write", 1), op(1, 2, 3, "read", out=None)]
    result = reg(h)
    assert result.ok is False
    assert result.failing_key is None
    assert result.failing_ops == [h[1]]
    assert "not linearizable: the register" in result.explanation
    assert "the model would return 1" in result.explanation


def test_a_read_concurrent_with_a_write_may_see_either_value() -> None:
    for seen in (None, 1):
        assert reg([op(0, 0, 3, "write", 1), op(1, 1, 2, "read", out=seen)]).ok is True
    assert reg([op(0, 0, 3, "write", 1), op(1, 1, 2, "read", out=2)]).ok is False


def test_operations_touching_at_one_instant_are_concurrent() -> None:
    # a.ret == b.call: neither precedes the other (porcupine's convention)
    assert reg([op(0, 0, 1, "write", 1), op(1, 1, 2, "read", out=None)]).ok is True
    assert reg([op(0, 0, 1, "write", 1), op(1, 1.5, 2, "read", out=None)]).ok is False


def test_two_reads_cannot_see_concurrent_writes_in_opposite_orders() -> None:
    h = [
        op(0, 0, 10, "write", 1),
        op(1, 0, 10, "write", 2),
        op(2, 1, 2, "read", out=1),
        op(2, 3, 4, "read", out=2),
        op(3, 1, 2, "read", out=2),
        op(3, 3, 4, "read", out=1),
    ]
    assert reg(h).ok is False
    assert reg(h[:4]).ok is True


def test_cas_semantics() -> None:
    w = op(0, 0, 1, "write", 1)
    assert reg([w, op(0, 2, 3, "cas", 1, 2, out=True), op(0, 4, 5, "read", out=2)]).ok is True
    assert reg([w, op(0, 2, 3, "cas", 1, 2, out=False)]).ok is False  # it held 1
    assert reg([w, op(0, 2, 3, "cas", 5, 2, out=True)]).ok is False  # it did not hold 5
    assert reg([w, op(0, 2, 3, "cas", 5, 2, out=False), op(0, 4, 5, "read", out=1)]).ok is True
    # a failed cas leaves the value alone
    assert reg([w, op(0, 2, 3, "cas", 5, 2, out=False), op(0, 4, 5, "read", out=2)]).ok is False
    # two successful cas from the same value cannot both happen
    two = [w, op(1, 2, 5, "cas", 1, 2, out=True), op(2, 2, 5, "cas", 1, 3, out=True)]
    assert reg(two).ok is False
    # the initial value of the register is `initial`
    assert reg([op(0, 0, 1, "cas", 0, 1, out=True)], initial=0).ok is True
    assert reg([op(0, 0, 1, "cas", 0, 1, out=True)]).ok is False


def test_an_indeterminate_write_whose_effect_is_visible() -> None:
    h = [op(0, 0, None, "write", 1), op(1, 5, 6, "read", out=1)]
    assert reg(h).ok is True


def test_an_indeterminate_write_that_never_took_effect() -> None:
    h = [op(0, 0, None, "write", 1), op(1, 5, 6, "read", out=None)]
    assert reg(h).ok is True


def test_an_indeterminate_write_may_take_effect_long_after_its_call() -> None:
    h = [
        op(0, 0, None, "write", 1),
        op(1, 5, 6, "read", out=None),
        op(1, 7, 8, "write", 2),
        op(1, 9, 10, "read", out=2),
        op(1, 11, 12, "read", out=1),
    ]
    assert reg(h).ok is True


def test_an_indeterminate_write_visible_then_invisible_is_not_linearizable() -> None:
    h = [
        op(0, 0, None, "write", 1),
        op(1, 2, 3, "read", out=1),
        op(1, 4, 5, "read", out=None),
    ]
    result = reg(h)
    assert result.ok is False
    assert result.failing_ops == [h[2]]


def test_an_indeterminate_operation_cannot_take_effect_before_its_call() -> None:
    h = [op(1, 0, 1, "read", out=1), op(0, 2, None, "write", 1)]
    assert reg(h).ok is False


def test_an_indeterminate_write_takes_effect_at_most_once() -> None:
    h = [
        op(0, 0, None, "write", 1),
        op(1, 1, 2, "read", out=1),
        op(1, 3, 4, "write", 2),
        op(1, 5, 6, "read", out=2),
        op(1, 7, 8, "read", out=1),
    ]
    assert reg(h).ok is False


def test_an_indeterminate_cas_may_or_may_not_have_succeeded() -> None:
    base = [op(0, 0, 1, "write", 1), op(0, 2, None, "cas", 1, 2)]
    assert reg([*base, op(1, 3, 4, "read", out=2)]).ok is True
    assert reg([*base, op(1, 3, 4, "read", out=1)]).ok is True
    assert reg([*base, op(1, 3, 4, "read", out=3)]).ok is False
    # its output is unconstrained, whatever was recorded
    assert reg([op(0, 0, None, "cas", 5, 6, out="garbage"), op(1, 1, 2, "read")]).ok is True


def test_indeterminate_reads_constrain_nothing() -> None:
    h = [op(0, 0, 1, "write", 1), op(1, 2, None, "read", out=42)]
    assert reg(h).ok is True


def test_only_indeterminate_operations_and_empty_histories_are_linearizable() -> None:
    assert reg([]).ok is True
    assert reg([op(0, 0, None, "write", 1), op(1, 0, None, "cas", 1, 2)]).ok is True
    result = kv([])
    assert (result.ok, result.partitions, result.partitions_checked) == (True, 0, 0)


def test_writes_report_no_output_and_any_recorded_one_is_ignored() -> None:
    h = [op(0, 0, 1, "write", 1, out="ok"), op(1, 2, 3, "read", out=1)]
    assert reg(h).ok is True


def test_values_are_compared_after_freezing_lists() -> None:
    h = [op(0, 0, 1, "write", [1, 2]), op(1, 2, 3, "read", out=(1, 2))]
    assert reg(h).ok is True


# ----------------------------------------------------------------------------- kv


def test_kv_keys_are_independent_and_the_failing_key_is_named() -> None:
    h = [
        op(0, 0, 1, "put", "a", "x"),
        op(0, 2, 3, "get", "a", out="x"),
        op(1, 0, 1, "put", "b", "y"),
        op(1, 2, 3, "get", "b", out="z"),
        op(2, 0, 5, "put", "c", "1"),
        op(3, 1, 2, "get", "c", out=None),
    ]
    result = kv(h)
    assert result.ok is False
    assert (result.partitions, result.partitions_checked) == (3, 3)
    assert result.failing_key == "b"
    assert result.failing_keys == ["b"]
    assert result.failing_ops == [h[3]]
    assert result.explanation.startswith("not linearizable: key 'b' (2 operations")
    assert kv([o for o in h if o.input[1] != "b"]).ok is True


def test_kv_append_concatenates_and_starts_a_missing_key_afresh() -> None:
    h = [
        op(0, 0, 1, "append", "k", "a"),
        op(0, 2, 3, "append", "k", "b"),
        op(0, 4, 5, "get", "k", out="ab"),
    ]
    assert kv(h).ok is True
    assert kv([*h[:2], op(0, 4, 5, "get", "k", out="ba")]).ok is False
    concurrent = [
        op(0, 0, 5, "append", "k", "a"),
        op(1, 0, 5, "append", "k", "b"),
        op(2, 6, 7, "get", "k", out="ba"),
    ]
    assert kv(concurrent).ok is True


def test_kv_delete_makes_a_key_missing_again() -> None:
    h = [
        op(0, 0, 1, "put", "k", "v"),
        op(0, 2, 3, "delete", "k"),
        op(0, 4, 5, "get", "k", out=None),
        op(0, 6, 7, "append", "k", "w"),
        op(0, 8, 9, "get", "k", out="w"),
    ]
    assert kv(h).ok is True
    assert kv([*h[:2], op(0, 4, 5, "get", "k", out="v")]).ok is False
    # with initial="" a missing key reads as ""
    assert kv([*h[:2], op(0, 4, 5, "get", "k", out="")], initial="").ok is True


def test_kv_cas() -> None:
    h = [
        op(0, 0, 1, "put", "k", "a"),
        op(0, 2, 3, "cas", "k", "a", "b", out=True),
        op(0, 4, 5, "cas", "k", "a", "c", out=False),
        op(0, 6, 7, "get", "k", out="b"),
    ]
    assert kv(h).ok is True
    assert kv([*h[:2], op(0, 4, 5, "cas", "k", "a", "c", out=True)]).ok is False
    # cas on a missing key compares with `initial`
    assert kv([op(0, 0, 1, "cas", "k", None, "x", out=True)]).ok is True


def test_kv_indeterminate_append_visible_later_and_then_for_good() -> None:
    h = [
        op(0, 0, None, "append", "k", "a"),
        op(1, 1, 2, "append", "k", "b"),
        op(1, 3, 4, "get", "k", out="b"),
        op(1, 5, 6, "get", "k", out="ba"),
    ]
    assert kv(h).ok is True
    assert kv([*h, op(1, 7, 8, "get", "k", out="b")]).ok is False


def test_a_user_model_works_through_the_same_search() -> None:
    class Counter(KVModel):
        """kv whose appends add numbers (a model subclass, compiled by the default)."""

        def compile(self, input: tuple[Any, ...], output: Any, determinate: bool) -> Any:
            return super(KVModel, self).compile(input, output, determinate)

        def grows(self, input: tuple[Any, ...]) -> bool:
            return False

        def apply(self, state: Any, input: tuple[Any, ...]) -> tuple[Any, Any]:
            if input[0] == "append":
                return None, (state or 0) + input[2]
            return super().apply(state, input)

    h = [
        op(0, 0, 3, "append", "k", 1),
        op(1, 0, 3, "append", "k", 2),
        op(0, 4, 5, "get", "k", out=3),
    ]
    assert check_linearizability(h, model=Counter()).ok is True
    h[2] = op(0, 4, 5, "get", "k", out=4)
    assert check_linearizability(h, model=Counter()).ok is False


def test_an_indeterminate_write_needed_only_by_a_failed_cas_then_overwritten() -> None:
    """The indeterminate put is what makes the cas fail ("a" + "b" would be "ab"); nothing
    else ever sees it, and a put erases it. Only order: put a, put ab?, append b, cas, put w."""
    h = [
        op(0, 0, 1, "put", "k", "a"),
        op(1, 2, None, "put", "k", "ab"),
        op(0, 3, 4, "append", "k", "b"),
        op(0, 5, 6, "cas", "k", "ab", "z", out=False),
        op(0, 7, 8, "put", "k", "w"),
        op(0, 9, 10, "get", "k", out="w"),
    ]
    assert kv(h).ok is True
    assert kv([o for o in h if o.ret is not None]).ok is False


def test_an_append_that_only_works_after_an_indeterminate_put() -> None:
    """Appending a str to an int fails: the indeterminate put of a str is needed by the
    append (which thereby observes it) before the last put erases it."""
    h = [
        op(0, 0, 1, "put", "k", 5),
        op(1, 2, None, "put", "k", "s"),
        op(0, 3, 4, "append", "k", "b"),
        op(0, 5, 6, "put", "k", "w"),
        op(0, 7, 8, "get", "k", out="w"),
    ]
    assert kv(h).ok is True
    assert kv([o for o in h if o.ret is not None]).ok is False


def test_a_chain_of_indeterminate_operations() -> None:
    h = [
        op(0, 0, 1, "put", "k", "a"),
        op(1, 2, None, "put", "k", "x"),
        op(2, 2, None, "append", "k", "y"),
        op(3, 2, None, "append", "k", "z"),
        op(0, 5, 6, "get", "k", out="xzy"),
    ]
    assert kv(h).ok is True
    assert kv([*h[:4], op(0, 5, 6, "get", "k", out="xzyz")]).ok is False
    assert kv([*h[:4], op(0, 5, 6, "get", "k", out="zy")]).ok is False


def test_never_happened_indeterminate_operations_do_not_slow_a_long_history() -> None:
    """Many indeterminate operations on one key, half of which never took effect: the
    verdict comes (the test only needs it to come; timing is for the benchmark)."""
    h = simulate_history(model="kv", n_ops=1500, keys=1, clients=10, info_rate=0.1, seed=3)
    result = kv(h, timeout=120)
    assert result.ok is True


def test_appends_whose_pieces_split_several_ways() -> None:
    # "xy" is x+y or xy: the checker must not assume one split
    h = [
        op(0, 0, 1, "append", "k", "xy"),
        op(0, 2, 3, "get", "k", out="xy"),
        op(0, 4, 5, "put", "k", "q"),
        op(1, 6, 20, "append", "k", "x"),
        op(2, 6, 20, "append", "k", "y"),
        op(3, 6, 20, "delete", "k"),
        op(4, 10, 22, "get", "k", out="xy"),
    ]
    assert kv(h).ok is True  # delete, x, y, get
    assert kv([*h[:6], op(4, 10, 22, "get", "k", out="yx")]).ok is True
    assert kv([*h[:6], op(4, 10, 22, "get", "k", out="xyxy")]).ok is False


# ----------------------------------------------------------------------------- brute force


def _register_spec(state: Any, input: tuple[Any, ...]) -> tuple[Any, Any]:
    if input[0] == "read":
        return state, state
    if input[0] == "write":
        return None, input[1]
    return (True, input[2]) if state == input[1] else (False, state)


def _kv_spec(initial: Any) -> Callable[[Any, tuple[Any, ...]], tuple[Any, Any]]:
    def spec(state: Any, input: tuple[Any, ...]) -> tuple[Any, Any]:
        d = dict(state)
        name, k = input[0], input[1]
        if name == "get":
            return d.get(k, initial), state
        if name == "put":
            d[k] = input[2]
        elif name == "delete":
            d.pop(k, None)
        elif name == "append":
            old = d.get(k)
            d[k] = input[2] if old is None else old + input[2]
        elif d.get(k, initial) == input[2]:
            d[k] = input[3]
            return True, tuple(sorted(d.items()))
        else:
            return False, state
        return None, tuple(sorted(d.items()))

    return spec


_WRITES = {"write", "put", "append", "delete"}


def brute_force(ops: list[Operation], spec: Callable[..., tuple[Any, Any]], init: Any) -> bool:
    """Is there an order of all completed operations and some indeterminate ones, respecting
    real time (a before b when a.ret < b.call), in which every completed operation returns
    what it recorded? Plain enumeration, no memoization."""
    n = len(ops)
    preds = [
        [j for j in range(n) if ops[j].ret is not None and ops[j].ret < ops[i].call]  # type: ignore[operator]
        for i in range(n)
    ]
    needed = {i for i in range(n) if ops[i].ret is not None}

    def search(done: frozenset[int], state: Any) -> bool:
        if needed <= done:
            return True
        for i in range(n):
            if i in done or any(j not in done for j in preds[i]):
                continue
            out, nxt = spec(state, ops[i].input)
            o = ops[i]
            if o.ret is not None and o.input[0] not in _WRITES and out != o.output:
                continue
            if search(done | {i}, nxt):
                return True
        return False

    return search(frozenset(), init)


@st.composite
def small_histories(draw: st.DrawFn, model: str) -> tuple[list[Operation], Any]:
    """Up to 7 operations of 2-3 clients on a simulated real object: each takes effect at a
    random point of its interval (an indeterminate one: at any later point, or never), so the
    history is linearizable - unless one output is then corrupted."""
    clients = draw(st.integers(2, 3))
    n = draw(st.integers(1, 7))
    initial = draw(st.sampled_from([None, ""])) if model == "kv" else None
    free = [0] * clients
    plans = []
    for i in range(n):
        c = draw(st.integers(0, clients - 1))
        call = free[c] + draw(st.integers(0, 2))
        ret = call + draw(st.integers(0, 3))
        free[c] = ret
        info = draw(st.integers(0, 4)) == 0
        if info:
            effect = None if draw(st.booleans()) else call + draw(st.integers(0, 12)) / 2
        else:
            effect = call + (ret - call) * draw(st.integers(0, 4)) / 4
        if model == "register":
            name = draw(st.sampled_from(["read", "write", "cas"]))
            args: tuple[Any, ...] = {
                "read": (),
                "write": (draw(st.integers(0, 2)),),
                "cas": (draw(st.sampled_from([None, 0, 1, 2])), draw(st.integers(0, 2))),
            }[name]
        else:
            name = draw(st.sampled_from(["get", "put", "append", "cas", "delete"]))
            key = draw(st.sampled_from(["a", "b"]))
            v = draw(st.sampled_from(["x", "y"]))
            args = {
                "get": (key,),
                "put": (key, v),
                "append": (key, v),
                "delete": (key,),
                "cas": (key, draw(st.sampled_from([None, "", "x", "y"])), v),
            }[name]
        plans.append((effect, draw(st.integers(0, 99)), i, c, call, ret, info, (name, *args)))
    spec = _register_spec if model == "register" else _kv_spec(initial)
    state: Any = None if model == "register" else ()
    ops: list[Operation | None] = [None] * n
    for effect, _, i, c, call, ret, info, inp in sorted(
        plans, key=lambda p: (p[0] is None, p[0] or 0, p[1])
    ):
        out, nxt = spec(state, inp)
        if effect is not None:
            state = nxt
        ops[i] = Operation(c, call, None if info else ret, inp, None if info else out)
    history = [o for o in ops if o is not None]
    if draw(st.booleans()):  # corrupt one completed output
        done = [i for i, o in enumerate(history) if o.ret is not None and o.input[0] != "write"]
        if done:
            i = draw(st.sampled_from(done))
            o = history[i]
            if o.input[0] == "cas":
                bad: Any = not o.output
            else:
                bad = draw(st.sampled_from([None, 0, 1, 2, "", "x", "y", "xy", "yx"]))
            history[i] = dataclasses.replace(o, output=bad)
    return history, initial


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(small_histories("register"))
def test_register_verdicts_agree_with_brute_force(case: tuple[list[Operation], Any]) -> None:
    history, _ = case
    expected = brute_force(history, _register_spec, None)
    assert reg(history).ok is expected


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(small_histories("kv"))
def test_kv_verdicts_agree_with_brute_force(case: tuple[list[Operation], Any]) -> None:
    history, initial = case
    expected = brute_force(history, _kv_spec(initial), ())
    assert kv(history, initial=initial).ok is expected


def test_the_brute_force_cross_check_sees_both_verdicts() -> None:
    """The generator gives both linearizable and non-linearizable cases (a check that cannot
    fail is not a check)."""
    rng = random.Random(7)
    verdicts = set()
    for seed in range(60):
        h = simulate_history(model="register", n_ops=6, clients=3, info_rate=0.2, seed=seed)
        i = rng.randrange(len(h))
        if h[i].ret is not None and h[i].input[0] == "read":
            h[i] = dataclasses.replace(h[i], output=rng.choice([None, 1, 2, 3]))
        expected = brute_force(h, _register_spec, None)
        assert reg(h).ok is expected
        verdicts.add(expected)
    assert verdicts == {True, False}


def _memoized_reference(
    ops: list[Operation], spec: Callable[..., tuple[Any, Any]], init: Any
) -> bool:
    """The same question as brute_force, with only a memo of (done set, state) added."""
    n = len(ops)
    preds = [
        frozenset(j for j in range(n) if ops[j].ret is not None and ops[j].ret < ops[i].call)  # type: ignore[operator]
        for i in range(n)
    ]
    needed = frozenset(i for i in range(n) if ops[i].ret is not None)
    failed: set[tuple[frozenset[int], Any]] = set()

    def search(done: frozenset[int], state: Any) -> bool:
        if needed <= done:
            return True
        if (done, state) in failed:
            return False
        for i in range(n):
            if i in done or not preds[i] <= done:
                continue
            out, nxt = spec(state, ops[i].input)
            o = ops[i]
            if o.ret is not None and o.input[0] not in _WRITES and out != o.output:
                continue
            if search(done | {i}, nxt):
                return True
        failed.add((done, state))
        return False

    return search(frozenset(), init)


def _random_kv_history(rng: random.Random) -> list[Operation]:
    """One key, up to 11 operations of up to 4 clients, many indeterminate; appended pieces
    that split several ways ("x", "y", "xy", "yx"); cas, put and delete to reset."""
    clients = rng.randint(2, 4)
    free = [0] * clients
    plans = []
    for i in range(rng.randint(4, 11)):
        c = rng.randrange(clients)
        call = free[c] + rng.randint(0, 2)
        ret = call + rng.randint(0, 6)
        free[c] = ret
        info = rng.random() < 0.3
        if info:
            effect = None if rng.random() < 0.5 else call + rng.randint(0, 20) / 2
        else:
            effect = call + (ret - call) * rng.randint(0, 4) / 4
        name = rng.choice(["get", "get", "append", "append", "append", "delete", "put", "cas"])
        v = rng.choice(["x", "y", "xy", "yx"])
        args = {
            "get": ("k",),
            "append": ("k", v),
            "delete": ("k",),
            "put": ("k", v),
            "cas": ("k", rng.choice([None, "x", "y", "xy", "yx", "xyx"]), v),
        }[name]
        plans.append((effect, rng.random(), i, c, call, ret, info, (name, *args)))
    spec = _kv_spec(None)
    state: Any = ()
    ops: list[Operation | None] = [None] * len(plans)
    for effect, _, i, c, call, ret, info, inp in sorted(
        plans, key=lambda p: (p[0] is None, p[0] or 0, p[1])
    ):
        out, nxt = spec(state, inp)
        if effect is not None:
            state = nxt
        ops[i] = Operation(c, call, None if info else ret, inp, None if info else out)
    history = [o for o in ops if o is not None]
    done = [i for i, o in enumerate(history) if o.ret is not None and o.input[0] in ("get", "cas")]
    if done and rng.random() < 0.5:
        i = rng.choice(done)
        o = history[i]
        bad = (not o.output) if o.input[0] == "cas" else rng.choice([None, "x", "xy", "yxy"])
        history[i] = dataclasses.replace(o, output=bad)
    return history


def test_larger_kv_histories_agree_with_an_exhaustive_search() -> None:
    """1,500 seeded histories of up to 11 operations on one key, where the pruning rules
    (appended pieces, resets, indeterminate chains, failed cas) all come into play."""
    rng = random.Random(2024)
    verdicts = {True: 0, False: 0}
    for _ in range(1500):
        history = _random_kv_history(rng)
        expected = _memoized_reference(history, _kv_spec(None), ())
        assert kv(history).ok is expected, history
        verdicts[expected] += 1
    assert min(verdicts.values()) > 300


# ----------------------------------------------------------------------------- simulated


@pytest.mark.parametrize("seed", range(3))
def test_simulated_linearizable_histories_pass_and_corrupted_ones_fail(seed: int) -> None:
    h = simulate_history(model="kv", n_ops=600, keys=6, clients=8, info_rate=0.05, seed=seed)
    assert kv(h).ok is True
    rng = random.Random(seed)
    gets = [i for i, o in enumerate(h) if o.input[0] == "get" and o.ret is not None and o.output]
    i = rng.choice(gets)
    h[i] = dataclasses.replace(h[i], output=h[i].output + "!")
    result = kv(h)
    assert result.ok is False
    assert result.failing_key == h[i].input[1]
    assert h[i] in result.failing_ops


def test_simulated_register_history_with_indeterminate_operations() -> None:
    h = simulate_history(model="register", n_ops=300, clients=10, info_rate=0.1, seed=5)
    assert sum(o.ret is None for o in h) > 10
    assert reg(h).ok is True
    # a read of a value before it was ever written
    last = max(range(len(h)), key=lambda i: h[i].call)
    first_read = min(
        (i for i, o in enumerate(h) if o.input[0] == "read" and o.ret is not None),
        key=lambda i: h[i].call,
    )
    h[first_read] = dataclasses.replace(h[first_read], output=h[last].input[-1])
    assert reg(h).ok is False


# ----------------------------------------------------------------------------- timeout


def _pathological(n: int) -> list[Operation]:
    """n concurrent writes, then reads that need value 1 last and then 2 with no write
    between: no order works, and the search has to try about n * 2**n configurations."""
    h = [op(i, 0, 10, "write", i + 1) for i in range(n)]
    return [*h, op(n, 11, 12, "read", out=1), op(n, 13, 14, "read", out=2)]


def test_timeout_gives_no_verdict() -> None:
    result = reg(_pathological(18), timeout=0.01)
    assert result.ok is None
    assert result.partitions_checked == 0
    assert result.explanation.startswith("timed out")


def test_a_small_pathological_history_fails_without_a_timeout() -> None:
    result = reg(_pathological(6))
    assert result.ok is False
    assert result.failing_ops[0].output == 2


def test_a_failing_partition_stops_the_search_of_the_others() -> None:
    # key "a" fails at once; key "b" would take very long
    slow = [
        dataclasses.replace(
            o, input=(("put", "b", o.input[1]) if o.input[0] == "write" else ("get", "b"))
        )
        for o in _pathological(18)
    ]
    fast = [op(0, 0, 1, "put", "a", "x"), op(0, 2, 3, "get", "a", out="y")]
    result = kv(fast + slow, timeout=0.5)
    assert result.ok is False
    assert result.failing_key == "a"
    assert result.partitions_checked == 1
    assert "1 of 2 partitions checked" in result.explanation


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("ops", "model", "message"),
    [
        ([op(0, 2, 1, "read")], "register", "precedes call"),
        ([Operation(0, 0, 1, ["read"], None)], "register", "input must be a tuple"),  # type: ignore[arg-type]
        ([op(0, 0, 1, "read")], "queue", "unknown model"),
        ([op(0, 0, 1, "pop")], "register", "unknown register operation 'pop'"),
        ([op(0, 0, 1, "get", "k")], "register", "unknown register operation 'get'"),
        ([op(0, 0, 1, "read", "k")], "kv", "unknown kv operation 'read'"),
        ([op(0, 0, 1, "write")], "register", "takes 1 argument"),
        ([op(0, 0, 1, "cas", 1, 2, out=None)], "register", "returns True or False"),
        ([op(0, float("nan"), 1, "read")], "register", "finite number"),
        ([op(0, 0, "1", "read")], "register", "number or None"),
        ([op(0, 0, 1)], "register", "start with the operation name"),
        ([op(0, 0, 1, "put", ["k"], 1), op(0, 0, 1, "put", {"k": {1}}, 1)], "kv", None),
        (["read"], "register", "expected an Operation"),
    ],
)
def test_bad_input_raises_config_error(ops: list[Any], model: str, message: str | None) -> None:
    if message is None:  # unusual but hashable keys are fine
        assert check_linearizability(ops, model=model).ok is True
        return
    with pytest.raises(ConfigError, match=message):
        check_linearizability(ops, model=model)


def test_config_error_is_a_value_error_and_names_the_operation() -> None:
    with pytest.raises(ValueError, match=r"operation 1 \(client 7"):
        reg([op(0, 0, 1, "read"), op(7, 5, 4, "read")])


@pytest.mark.parametrize("timeout", [-1, float("nan"), "1", True])
def test_bad_timeout_raises_config_error(timeout: Any) -> None:
    with pytest.raises(ConfigError, match="timeout"):
        reg([], timeout=timeout)


def test_unhashable_values_raise_config_error() -> None:
    class Box:
        __hash__ = None  # type: ignore[assignment]

    with pytest.raises(ConfigError, match="not hashable"):
        reg([op(0, 0, 1, "write", Box())])


def test_a_history_that_asks_past_the_last_checkpoint_is_checked() -> None:
    """Regression: a 7-node Paxos run's history (``quorumkit sim paxos --nodes 7 --seed 57
    --duration 20 --rate 100 --loss 0.1 --nemesis partition,crash,loss,duplicate,delay,skew``)
    has a key with a multiple of 64 operations; asking which of them were called before the
    end of the history indexed one checkpoint past the last one (IndexError)."""
    import json

    raw = json.loads(
        (Path(__file__).parent / "data" / "history_checkpoint_stride.json").read_text()
    )
    ops = [Operation(o["client"], o["call"], o["ret"], tuple(o["input"]), o["output"]) for o in raw]
    assert check_linearizability(ops, model="kv").ok is True
