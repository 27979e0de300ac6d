"""The checked run of ``quorumkit sim``: safety phase, liveness phase, quiet phase.

Issue acceptance: the correct Raft passes seeds of ``--nemesis partition,crash,loss``; every
known-unsafe variant fails within its first 200 seeds (by an invariant or by the
linearizability of the client history); a replay with the same seed gives the same trace hash.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from quorumkit.protocols.raft import UNSAFE_VARIANTS
from quorumkit.sim.run import RunOptions, run

NEMESIS = ("partition", "crash", "loss")


def first_failure(variant: str) -> tuple[int, list[str]] | None:
    for seed in range(1, 201):
        result = run(
            RunOptions(seed=seed, nemesis=NEMESIS, unsafe=variant, check_linearizability=True)
        )
        if not result.ok:
            return seed, result.summary["violations"]
    return None


@pytest.mark.parametrize("seed", range(1, 21))
def test_correct_raft_passes_every_check_under_partitions_crashes_and_loss(seed):
    result = run(RunOptions(seed=seed, nemesis=NEMESIS))
    s = result.summary
    assert s["ok"], s["violations"]
    assert s["linearizable"] is True
    assert s["converged"] is True
    assert s["progress_after_heal"] is True
    assert all(s["invariants"].values())
    assert s["ops"]["ok"] > 50, "the workload must actually run"


@pytest.mark.parametrize("variant", sorted(UNSAFE_VARIANTS))
def test_each_unsafe_variant_fails_within_200_seeds(variant):
    hit = first_failure(variant)
    assert hit is not None, f"{variant} passed 200 seeds: the checks cannot see it"
    seed, violations = hit
    assert violations, seed


def test_stale_reads_are_caught_by_the_linearizability_checker_not_by_invariants():
    seed, _ = first_failure("stale-read") or (0, [])
    assert seed, "stale-read was never caught"
    result = run(RunOptions(seed=seed, nemesis=NEMESIS, unsafe="stale-read"))
    assert result.summary["linearizable"] is False
    assert all(result.summary["invariants"].values())
    assert "not linearizable" in result.summary["violations"][0]


def test_the_history_of_a_run_is_checked_and_a_corrupted_one_is_rejected():
    """The checker is not vacuous on real histories: flipping one read result of a passing
    run makes it non-linearizable."""
    from quorumkit.check import Operation, check_linearizability

    result = run(RunOptions(seed=5, nemesis=NEMESIS))
    ops = [Operation(r.client, r.call, r.ret, r.input, r.output) for r in result.pool.history()]
    assert check_linearizability(ops, model="kv").ok is True
    reads = [i for i, op in enumerate(ops) if op.input[0] == "get" and op.output]
    i = reads[len(reads) // 2]
    ops[i] = Operation(ops[i].client, ops[i].call, ops[i].ret, ops[i].input, "never-written")
    assert check_linearizability(ops, model="kv").ok is False


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "quorumkit", *args], capture_output=True, text=True, timeout=300
    )


def test_cli_failure_exits_1_prints_the_replay_command_and_the_replay_reproduces_the_hash():
    out = _cli(
        "sim",
        "raft",
        "--seed",
        "1",
        "--nemesis",
        "partition,crash,loss",
        "--unsafe",
        "no-truncate-on-conflict",
        "--json",
    )
    assert out.returncode == 1, out.stderr
    summary = json.loads(out.stdout)
    assert summary["ok"] is False
    replay = summary["replay"].split()
    assert replay[:3] == ["quorumkit", "sim", "raft"]
    again = _cli(*replay[1:], "--json")
    assert again.returncode == 1
    assert json.loads(again.stdout)["trace_hash"] == summary["trace_hash"]


def test_cli_campaign_stops_at_the_first_failing_seed():
    out = _cli(
        "sim",
        "raft",
        "--seeds",
        "1..50",
        "--nemesis",
        "partition,crash,loss",
        "--unsafe",
        "vote-without-log-check",
        "--json",
    )
    assert out.returncode == 1
    summary = json.loads(out.stdout)
    assert summary["failed_seed"] == summary["passed"] + 1
    assert "--seed" in summary["replay"]


def test_cli_campaign_of_passing_seeds_exits_0():
    out = _cli("sim", "raft", "--seeds", "1..5", "--duration", "3", "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    assert json.loads(out.stdout)["passed"] == 5


@pytest.mark.parametrize(
    "args",
    [
        ["sim", "nope"],
        ["sim", "raft", "--nodes", "0"],
        ["sim", "raft", "--loss", "1.5"],
        ["sim", "raft", "--nemesis", "meteor"],
        ["sim", "raft", "--unsafe", "no-such-bug"],
        ["sim", "raft", "--seeds", "5..1"],
        ["sim", "raft", "--duration", "-1"],
        ["sim", "raft", "--bogus-flag"],
    ],
)
def test_cli_usage_errors_print_one_line_and_exit_2(args):
    out = _cli(*args)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().startswith("quorumkit: error:")
    assert len(out.stderr.strip().splitlines()) == 1
