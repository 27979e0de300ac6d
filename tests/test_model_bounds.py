"""Fault models and their bounds (spec section 3: Definitions 3.1-3.3, Theorem 3.1).

Expected values are computed here, independently of quorumkit, from the definitions:
crash/omission tolerate f = (n - 1) // 2 with majority quorums of floor(n/2) + 1; byzantine
tolerates f = (n - 1) // 3 with quorums of ceil((n + f + 1) / 2).
"""

from __future__ import annotations

import itertools

import pytest

from quorumkit.errors import ConfigError, QuorumkitError
from quorumkit.model import (
    FaultModel,
    bounds_table,
    max_faulty,
    min_nodes,
    quorum_size,
    tolerance,
    validate,
)

NS = range(1, 21)
BENIGN = (FaultModel.CRASH, FaultModel.OMISSION)


def expected_crash_quorum(n: int) -> int:
    return n // 2 + 1


def expected_byzantine_f(n: int) -> int:
    return (n - 1) // 3


def expected_byzantine_quorum(n: int) -> int:
    f = expected_byzantine_f(n)
    return -(-(n + f + 1) // 2)  # integer ceil((n + f + 1) / 2)


def min_pairwise_intersection(n: int, q: int) -> int:
    """Smallest |A & B| over all pairs of q-subsets of n nodes (brute force)."""
    subsets = [frozenset(c) for c in itertools.combinations(range(n), q)]
    return min(len(a & b) for a in subsets for b in subsets)


# ----------------------------------------------------------------------------- Definition 3.1


def test_fault_model_has_exactly_the_three_kinds_of_definition_3_1():
    """Definition 3.1: F = {crash, byzantine, omission}."""
    assert {m.value for m in FaultModel} == {"crash", "byzantine", "omission"}


@pytest.mark.parametrize("text", ["crash", "CRASH", "Byzantine", "omission"])
def test_fault_model_parses_names_case_insensitively(text):
    assert FaultModel.parse(text) is FaultModel(text.lower())
    assert FaultModel.parse(FaultModel.parse(text)) is FaultModel(text.lower())


def test_unknown_fault_model_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown fault model"):
        FaultModel.parse("gremlins")
    with pytest.raises(ConfigError):
        max_faulty(5, "gremlins")


# ----------------------------------------------------------------------------- crash, omission


@pytest.mark.parametrize("model", BENIGN, ids=lambda m: m.value)
@pytest.mark.parametrize("n", NS)
def test_crash_and_omission_bounds_match_majority_formulas(n, model):
    """Crash/omission: f = (n - 1) // 2, quorum floor(n/2) + 1, min_nodes(f) = 2f + 1."""
    f = (n - 1) // 2
    assert max_faulty(n, model) == f
    assert max_faulty(n, model.value) == f
    assert quorum_size(n, model) == expected_crash_quorum(n)
    assert min_nodes(f, model) == 2 * f + 1
    assert min_nodes(f, model) <= n


def test_crash_is_the_default_fault_model():
    for n in NS:
        assert max_faulty(n) == max_faulty(n, FaultModel.CRASH)
        assert quorum_size(n) == quorum_size(n, FaultModel.CRASH)
    assert min_nodes(3) == 7


@pytest.mark.parametrize("n", range(1, 11))
def test_any_two_majority_quorums_intersect_and_smaller_ones_need_not(n):
    """Crash quorums of floor(n/2) + 1 always intersect; quorums one smaller may be disjoint."""
    q = quorum_size(n, FaultModel.CRASH)
    assert min_pairwise_intersection(n, q) >= 1
    assert min_pairwise_intersection(n, q - 1) == 0


# ----------------------------------------------------------------------------- byzantine


@pytest.mark.parametrize("n", NS)
def test_byzantine_bounds_match_formulas(n):
    """Theorem 3.1: f = (n - 1) // 3, quorum ceil((n + f + 1) / 2), min_nodes(f) = 3f + 1."""
    f = expected_byzantine_f(n)
    assert max_faulty(n, FaultModel.BYZANTINE) == f
    assert max_faulty(n, "byzantine") == f
    assert quorum_size(n, FaultModel.BYZANTINE) == expected_byzantine_quorum(n)
    assert min_nodes(f, FaultModel.BYZANTINE) == 3 * f + 1


@pytest.mark.parametrize("f", range(0, 7))
def test_byzantine_quorum_is_2f_plus_1_when_n_is_3f_plus_1(f):
    """Theorem 3.1: at n = 3f + 1 the quorum is 2f + 1 = n - f."""
    n = 3 * f + 1
    assert quorum_size(n, FaultModel.BYZANTINE) == 2 * f + 1


@pytest.mark.parametrize("n", NS)
def test_quorums_are_reachable_without_the_faulty_nodes(n):
    """A quorum never needs more than the n - f nodes that are guaranteed to answer."""
    for model in FaultModel:
        assert quorum_size(n, model) <= n - max_faulty(n, model)


@pytest.mark.parametrize("n", range(1, 11))
def test_byzantine_quorums_intersect_in_at_least_f_plus_1_and_smaller_ones_do_not(n):
    """Theorem 3.1 (quorum intersection): two quorums share >= f + 1 nodes, so one is correct;
    a quorum one node smaller admits two quorums sharing only f nodes (maybe all byzantine)."""
    f = max_faulty(n, FaultModel.BYZANTINE)
    q = quorum_size(n, FaultModel.BYZANTINE)
    assert min_pairwise_intersection(n, q) >= f + 1
    assert min_pairwise_intersection(n, q - 1) < f + 1


@pytest.mark.parametrize("f", range(1, 4))
def test_at_3f_nodes_no_quorum_size_is_both_live_and_safe(f):
    """Theorem 3.1: with n = 3f, quorums of n - f (all one can wait for) share only f nodes."""
    n = 3 * f
    assert min_pairwise_intersection(n, n - f) == f
    assert max_faulty(n, FaultModel.BYZANTINE) == f - 1


# ----------------------------------------------------------------------------- Definition 3.2


@pytest.mark.parametrize("n", NS)
def test_tolerance_is_faulty_over_total(n):
    """Definition 3.2: T(S) = max faulty nodes / total nodes."""
    for f in range(0, n + 1):
        assert tolerance(n, f) == pytest.approx(f / n)
    assert tolerance(n, max_faulty(n, "byzantine")) < 1 / 3
    assert tolerance(n, max_faulty(n, "crash")) < 1 / 2


def test_tolerance_refuses_more_faulty_than_nodes():
    with pytest.raises(ConfigError):
        tolerance(3, 4)


def test_bounds_table_agrees_with_the_functions():
    for n in NS:
        table = bounds_table(n)
        assert set(table) == {"crash", "omission", "byzantine"}
        for name, row in table.items():
            f = max_faulty(n, name)
            assert row == {
                "nodes": n,
                "max_faulty": f,
                "quorum_size": quorum_size(n, name),
                "min_nodes_for_f": min_nodes(f, name),
                "tolerance": pytest.approx(f / n),
            }


# ----------------------------------------------------------------------------- validate


@pytest.mark.parametrize("model", BENIGN, ids=lambda m: m.value)
@pytest.mark.parametrize("n", NS)
def test_validate_refuses_exactly_n_at_most_2f_for_crash_and_omission(n, model):
    """Crash/omission: f faults are tolerated iff n >= 2f + 1."""
    for f in range(0, n + 2):
        if n <= 2 * f:
            with pytest.raises(ConfigError, match=r"2f \+ 1"):
                validate(n, f, model)
        else:
            validate(n, f, model)


@pytest.mark.parametrize("n", NS)
def test_validate_refuses_exactly_n_at_most_3f_for_byzantine(n):
    """Definition 3.3 / Theorem 3.1: byzantine f faults are tolerated iff n >= 3f + 1."""
    for f in range(0, n + 2):
        if n <= 3 * f:
            with pytest.raises(ConfigError, match=r"3f \+ 1") as info:
                validate(n, f, FaultModel.BYZANTINE)
            assert str(3 * f + 1) in str(info.value)
        else:
            validate(n, f, "byzantine")


def test_validate_accepts_exactly_the_max_faulty_bound():
    for n in NS:
        for model in FaultModel:
            f = max_faulty(n, model)
            validate(n, f, model)
            with pytest.raises(ConfigError):
                validate(n, f + 1, model)


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)
    assert issubclass(ConfigError, QuorumkitError)
    with pytest.raises(ValueError):
        validate(3, 1, "byzantine")


@pytest.mark.parametrize("bad_n", [0, -1, 2.0, "5", True, None])
def test_bad_node_counts_are_config_errors(bad_n):
    for call in (
        lambda: max_faulty(bad_n),
        lambda: quorum_size(bad_n),
        lambda: validate(bad_n, 0),
        lambda: tolerance(bad_n, 0),
        lambda: bounds_table(bad_n),
    ):
        with pytest.raises(ConfigError):
            call()


@pytest.mark.parametrize("bad_f", [-1, 1.5, "1", False, None])
def test_bad_fault_counts_are_config_errors(bad_f):
    with pytest.raises(ConfigError):
        min_nodes(bad_f)
    with pytest.raises(ConfigError):
        validate(10, bad_f)
    with pytest.raises(ConfigError):
        tolerance(10, bad_f)
