"""``keep_history``: the runtime switches off the applied history the simulator keeps for its
checkers, so that a long-running node's memory does not grow with every command."""

from __future__ import annotations

from typing import Any

import pytest

from quorumkit.sim import Simulation

HISTORIES = {"raft": "applied_entries", "paxos": "applied", "pbft": "executed"}


def _load(protocol: str, keep: bool) -> tuple[Simulation, int]:
    nodes = 4 if protocol == "pbft" else 3
    sim = Simulation(protocol, nodes=nodes, seed=5, trace="off")
    for n in sim.node_ids:
        proto: Any = sim.protocol(n)
        proto.keep_history = keep
    sim.run(2.0)
    done: list[Any] = []
    for i in range(40):
        node = sim.leader() or sim.node_ids[0]
        sim.client_request(node, ("put", f"k{i}", str(i)), lambda n, r: done.append(r))
        sim.run(0.05)
    sim.run(2.0)
    return sim, len(done)


@pytest.mark.parametrize("protocol", sorted(HISTORIES))
def test_without_history_nodes_still_apply_everything_but_keep_no_list(protocol: str) -> None:
    sim, answered = _load(protocol, keep=False)
    assert answered == 40
    for n in sim.node_ids:
        proto: Any = sim.protocol(n)
        assert proto.local_read(("get", "k39")) == "39"
        assert len(getattr(proto, HISTORIES[protocol])) <= 1  # at most a snapshot marker
    kept, _ = _load(protocol, keep=True)
    assert all(len(getattr(kept.protocol(n), HISTORIES[protocol])) >= 20 for n in kept.node_ids)
