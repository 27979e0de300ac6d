"""Every known-unsafe Raft variant is caught; the correct protocol is not.

DESIGN.md: "Known-unsafe variants ...: the checkers must catch each of them. A check that
cannot fail is not a check." The fixed randomized scenario of :mod:`raft_scenario` (crashes
and restarts, leader-hopping isolation, partitions, a stream of submits) runs with each planted
bug of ``UNSAFE_VARIANTS``; some seed in 1..200 must make the RaftChecker report the invariant
the bug breaks. The correct protocol must pass the same scenario on a CI-sized sample of seeds.
"""

from __future__ import annotations

import pytest

from quorumkit.protocols.raft import UNSAFE_VARIANTS, RaftChecker
from raft_scenario import Scenario, make_simulation, run_scenario

SEARCH_SEEDS = range(1, 201)
CI_SEEDS = range(1, 31)

#: the invariant(s) each planted bug shows up as first
BREAKS = {
    "commit-previous-term": {"leader completeness", "state machine safety"},
    "vote-without-log-check": {"leader completeness", "state machine safety"},
    "forget-vote-on-restart": {"one vote per term", "election safety", "log matching"},
    "no-truncate-on-conflict": {"log matching", "state machine safety"},
}


def first_violation(variant: str) -> tuple[int, str] | None:
    for seed in SEARCH_SEEDS:
        found = run_scenario(seed, variant)
        if found is not None:
            return seed, found
    return None


#: planted bugs that break no invariant of the replicas' states, only what clients see: the
#: linearizability checker catches them (tests/test_sim_harness.py)
CAUGHT_BY_HISTORY = {"stale-read"}


def test_every_unsafe_variant_has_an_expected_invariant():
    """A new planted bug must say here which invariant it breaks (and so get searched)."""
    assert set(BREAKS) | CAUGHT_BY_HISTORY == set(UNSAFE_VARIANTS)


def test_every_invariant_the_unsafe_variants_break_is_named_by_the_checker():
    """RaftChecker.names lists every invariant it can report (reports are built from it)."""
    broken = set().union(*BREAKS.values())
    assert broken <= set(RaftChecker.names), broken - set(RaftChecker.names)


@pytest.mark.parametrize("variant", sorted(BREAKS))
def test_the_unsafe_variant_is_caught_within_200_seeds(variant):
    """Search seeds 1..200 of the scenario with the planted bug until the checker fires; the
    violated invariant is the one the bug breaks."""
    hit = first_violation(variant)
    assert hit is not None, (
        f"{variant} ({UNSAFE_VARIANTS[variant]}) survived seeds 1..200 of the scenario"
    )
    seed, invariant = hit
    print(f"{variant}: caught at seed {seed} as {invariant!r}")
    assert invariant in BREAKS[variant], (
        f"{variant}: seed {seed} violated {invariant!r}, expected one of {sorted(BREAKS[variant])}"
    )


@pytest.mark.parametrize("seed", CI_SEEDS)
def test_correct_raft_passes_the_scenario(seed):
    """The same scenario without a planted bug violates nothing."""
    assert run_scenario(seed) is None


def test_the_scenario_is_deterministic_per_seed():
    """One seed, one run: the same seed gives the same trace; another seed another one."""

    def trace_of(seed: int) -> str:
        sim, rng = make_simulation(seed, trace="hash")
        Scenario(sim, rng, 3.0).run()
        return sim.trace_hash()

    assert trace_of(7) == trace_of(7)
    assert trace_of(7) != trace_of(8)


def test_the_scenario_elects_commits_and_faults_a_lot():
    """The scenario is not vacuous for the correct protocol: many leaders, many submits,
    commits, crashes and partitions happen in one run."""
    sim, rng = make_simulation(3)
    scenario = Scenario(sim, rng, 15.0)
    scenario.run()
    assert len(scenario.seen_leaders) >= 10
    assert scenario.submitted >= 200
    assert max(sim.status(n)["commit_index"] for n in sim.nodes) >= 50
    assert scenario.partition_token >= 10
    assert sim.stats["dropped_partition"] > 0
    assert sim.stats["dropped_down"] > 0
