"""Every known-unsafe Multi-Paxos variant is caught; the correct protocol is not.

DESIGN.md: "Known-unsafe variants ...: the checkers must catch each of them. A check that
cannot fail is not a check." Each planted bug of ``UNSAFE_VARIANTS`` runs as
``quorumkit sim paxos --unsafe NAME --nemesis partition,crash,loss`` would run it (the checked
run of :mod:`quorumkit.sim.run`: invariants after every event, convergence, linearizability);
some seed in 1..200 must fail with the invariant the bug breaks. The first failing seed is
pinned below; the tests still run it and assert that it fails.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from quorumkit.errors import InvariantViolation
from quorumkit.protocols.paxos import UNSAFE_VARIANTS, PaxosChecker, SlotEntry, Value
from quorumkit.protocols.paxos.invariants import (
    LEARNED_VALUE_CHOSEN,
    ONE_VALUE_CHOSEN,
    ONE_VALUE_PER_BALLOT,
    PROMISES_NEVER_DECREASE,
    STATE_MACHINE_SAFETY,
)
from quorumkit.protocols.paxos.log import SlotLog
from quorumkit.sim.run import RunOptions, RunResult, run

NEMESES = ("partition", "crash", "loss")
SEARCH_SEEDS = range(1, 201)
CI_SEEDS = range(1, 31)

#: variant -> (first failing seed in 1..200, the invariants it may show up as)
CAUGHT = {
    "acceptor-forgets-promise": (1, {PROMISES_NEVER_DECREASE}),
    "ignore-accepted-values": (1, {ONE_VALUE_CHOSEN, LEARNED_VALUE_CHOSEN, STATE_MACHINE_SAFETY}),
    "accept-lower-ballot": (1, {ONE_VALUE_CHOSEN, LEARNED_VALUE_CHOSEN, STATE_MACHINE_SAFETY}),
}


def checked_run(seed: int, unsafe: str | None = None) -> RunResult:
    return run(RunOptions(protocol="paxos", nodes=5, seed=seed, nemesis=NEMESES, unsafe=unsafe))


def broken(result: RunResult) -> set[str]:
    return {name for name, ok in result.summary["invariants"].items() if not ok}


def test_every_unsafe_variant_is_searched_for():
    """A new planted bug must say here which invariant it breaks (and so get searched)."""
    assert set(CAUGHT) == set(UNSAFE_VARIANTS)
    for _, invariants in CAUGHT.values():
        assert invariants <= set(PaxosChecker.names)


@pytest.mark.parametrize("variant", sorted(CAUGHT))
def test_the_unsafe_variant_fails_the_checked_run_at_its_pinned_seed(variant):
    seed, expected = CAUGHT[variant]
    result = checked_run(seed, variant)
    assert not result.ok, f"{variant} passed seed {seed}"
    assert broken(result) & expected, result.summary["violations"]
    assert result.violation_at is not None


@pytest.mark.parametrize("variant", sorted(CAUGHT))
def test_the_unsafe_variant_is_caught_within_200_seeds(variant):
    for seed in SEARCH_SEEDS:
        result = checked_run(seed, variant)
        if not result.ok:
            print(f"{variant}: caught at seed {seed}: {result.summary['violations'][0]}")
            assert broken(result) & CAUGHT[variant][1]
            return
    pytest.fail(f"{variant} ({UNSAFE_VARIANTS[variant]}) survived seeds 1..200")


def test_a_forgotten_promise_really_lets_two_values_be_chosen(monkeypatch):
    """The promise check is not a formality: with it switched off, the forgetful acceptor
    goes on to accept a lower ballot after a restart, and two different values are chosen
    for one slot (first at seed 130 of the same checked run)."""
    monkeypatch.setattr(PaxosChecker, "_check_promise", lambda self, node_id, node: None)
    result = checked_run(130, "acceptor-forgets-promise")
    assert not result.ok
    assert broken(result) == {ONE_VALUE_CHOSEN}


@pytest.mark.parametrize("seed", CI_SEEDS)
def test_correct_paxos_passes_the_same_runs(seed):
    result = checked_run(seed)
    assert result.ok, result.summary["violations"]
    assert result.summary["linearizable"] is True


# ============================================================ each check can fail (hand-made states)


def stub(promised=(0, ""), entries=(), commit=0, applied=()):
    """Just the state the PaxosChecker reads from a node."""
    log = SlotLog()
    log.entries = list(entries)
    return SimpleNamespace(
        is_byzantine=False, promised=promised, log=log, commit=commit, applied=list(applied)
    )


V, W = Value(("put", "k", 1)), Value(("put", "k", 2))


def at(round_: int, node: str, value: Value) -> SlotEntry:
    return SlotEntry((round_, node), value)


def violation(checker: PaxosChecker, nodes) -> str:
    with pytest.raises(InvariantViolation) as info:
        checker.check(nodes)
    return info.value.invariant


def test_the_checker_catches_two_values_accepted_with_one_ballot():
    nodes = {"n1": stub(entries=[at(1, "n1", V)]), "n2": stub(entries=[at(1, "n1", W)])}
    assert violation(PaxosChecker(), {**nodes, "n3": None}) == ONE_VALUE_PER_BALLOT


def test_the_checker_catches_a_second_value_chosen_for_a_slot():
    checker = PaxosChecker()
    n1, n2, n3 = stub(entries=[at(1, "n1", V)]), stub(entries=[at(1, "n1", V)]), stub()
    checker.check({"n1": n1, "n2": n2, "n3": n3})
    assert checker.chosen[1] == (V, (1, "n1"))
    n2.log.write(1, [at(2, "n3", W)])
    n3.log.write(1, [at(2, "n3", W)])
    assert violation(checker, {"n1": n1, "n2": n2, "n3": n3}) == ONE_VALUE_CHOSEN


def test_the_checker_catches_a_learner_that_learned_what_was_not_chosen():
    checker = PaxosChecker()
    n1 = stub(entries=[at(1, "n1", V)], commit=1)
    checker.check({"n1": n1, "n2": stub(), "n3": stub()})
    n2, n3 = stub(entries=[at(2, "n2", W)]), stub(entries=[at(2, "n2", W)])
    assert violation(checker, {"n1": n1, "n2": n2, "n3": n3}) == LEARNED_VALUE_CHOSEN


def test_the_checker_catches_learners_that_disagree_and_a_decided_slot_without_value():
    n1 = stub(entries=[at(1, "n1", V)], commit=1)
    n2 = stub(entries=[at(2, "n2", W)], commit=1)
    assert violation(PaxosChecker(), {"n1": n1, "n2": n2, "n3": None}) == LEARNED_VALUE_CHOSEN
    assert violation(PaxosChecker(), {"n1": stub(commit=1)}) == LEARNED_VALUE_CHOSEN


def test_the_checker_catches_a_promise_that_went_down_across_a_restart():
    checker = PaxosChecker()
    checker.check({"n1": stub(promised=(3, "n2"))})
    checker.check({"n1": None})  # crashed
    assert violation(checker, {"n1": stub(promised=(1, "n1"))}) == PROMISES_NEVER_DECREASE


def test_the_checker_catches_replicas_that_apply_different_commands_at_one_slot():
    nodes = {"n1": stub(applied=[(1, V)]), "n2": stub(applied=[(1, W)])}
    assert violation(PaxosChecker(), nodes) == STATE_MACHINE_SAFETY
