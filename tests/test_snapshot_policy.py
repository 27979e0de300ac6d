"""When Raft and Multi-Paxos take a snapshot (Raft dissertation 5.1.3, "When to snapshot").

``snapshot_threshold`` is the least number of entries (slots) applied between snapshots;
``snapshot_expansion`` also waits until they are at least that many times the items the previous
snapshot held, so that a large state is not rewritten every ``snapshot_threshold`` writes (the
cost of a snapshot grows with the state, the log it replaces does not).
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

import paxos_helpers
import raft_helpers
from quorumkit.errors import ConfigError
from quorumkit.protocols.paxos import Accepted, PaxosConfig
from quorumkit.protocols.raft import AppendEntriesResponse, RaftConfig


def raft_leader(**options: Any) -> tuple[Any, Any, Any]:
    node, ctx = raft_helpers.new_node("n1", **options)
    raft_helpers.make_leader(node, ctx)
    ctx.clear()

    def write(key: str) -> None:
        node.submit(ctx, ("put", key, 1))
        index = node.log.last_index
        node.on_message(ctx, "n2", AppendEntriesResponse(node.current_term, True, index))
        assert node.commit_index == index

    return node, ctx, write


def paxos_leader(**options: Any) -> tuple[Any, Any, Any]:
    node, ctx = paxos_helpers.new_node("n1", **options)
    paxos_helpers.make_leader(node, ctx)
    ctx.clear()

    def write(key: str) -> None:
        node.submit(ctx, ("put", key, 1))
        node.on_message(ctx, "n2", Accepted(node.ballot, node.next_slot - 1, 1))

    return node, ctx, write


LEADERS = {"raft": raft_leader, "paxos": paxos_leader}


@pytest.mark.parametrize("protocol", sorted(LEADERS))
def test_a_large_state_is_snapshotted_once_the_log_outgrows_the_last_snapshot(
    protocol: str,
) -> None:
    node, _, write = LEADERS[protocol](snapshot_threshold=4)
    for i in range(20):  # 20 distinct keys
        write(f"k{i}")
    first = node.log.snapshot_index
    assert first >= 4 and node.snapshot_items >= 4
    # rewrite one key: the log grows, the state hardly does; no snapshot until the entries
    # since the last one reach the items that snapshot held
    taken = [(first, node.snapshot_items)]
    for _ in range(80):
        write("hot")
        if node.log.snapshot_index != taken[-1][0]:
            taken.append((node.log.snapshot_index, node.snapshot_items))
    assert len(taken) >= 3, taken
    for (a, held), (b, _) in itertools.pairwise(taken):
        assert max(4, held) <= b - a <= max(4, held) + 1, taken


@pytest.mark.parametrize("protocol", sorted(LEADERS))
def test_expansion_zero_snapshots_by_count_alone(protocol: str) -> None:
    node, _, write = LEADERS[protocol](snapshot_threshold=4, snapshot_expansion=0)
    for i in range(20):
        write(f"k{i}")
    index = node.log.snapshot_index
    for _ in range(4):
        write("hot")
    assert node.log.snapshot_index >= index + 4  # 20 items held, snapshot after 4 writes


@pytest.mark.parametrize("config", [RaftConfig, PaxosConfig])
@pytest.mark.parametrize("bad", [-1, True, "1"])
def test_a_bad_expansion_is_refused(config: Any, bad: Any) -> None:
    with pytest.raises(ConfigError, match="snapshot_expansion"):
        config.from_options(snapshot_expansion=bad)


@pytest.mark.parametrize("config", [RaftConfig, PaxosConfig])
@pytest.mark.parametrize("good", [0, 0.5, 2, 3.25])
def test_an_expansion_may_be_a_fraction_for_every_protocol(config: Any, good: Any) -> None:
    """``--option snapshot_expansion=0.5`` reaches from_options as a float: Raft and Paxos
    share one type rule (Paxos once refused every non-int value)."""
    assert config.from_options(snapshot_expansion=good).snapshot_expansion == good


@pytest.mark.parametrize("config", [RaftConfig, PaxosConfig])
@pytest.mark.parametrize("bad", [64.0, True, "64"])
def test_an_int_option_still_takes_only_an_int(config: Any, bad: Any) -> None:
    with pytest.raises(ConfigError, match="must be int"):
        config.from_options(snapshot_threshold=bad)
