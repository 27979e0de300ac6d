"""Simulated clients of protocols that need several matching replies (PBFT's f + 1).

A toy protocol stands in for a byzantine-tolerant one: every node executes every command it is
handed on its own copy of the kv machine; a byzantine node lies in every answer. A client that
needs two matching answers out of three nodes must never accept the lie; a client that trusts
one node (the planted bug) does.
"""

from __future__ import annotations

from typing import Any

from quorumkit.kv import KVStateMachine
from quorumkit.protocol import ClientRequest, Context, Protocol
from quorumkit.sim import Simulation
from quorumkit.sim.clients import ClientPool, Workload

LIE = "a lie"


class LocalKV(Protocol):
    name = "local-kv"
    byzantine_behaviours = ("liar",)
    replies_needed = 2

    def __init__(self, node_id: str, members: Any, config: Any = None) -> None:
        super().__init__(node_id, members, config)
        self.sm = KVStateMachine()

    def on_start(self, ctx: Context) -> None:
        pass

    def on_message(self, ctx: Context, src: str, msg: Any) -> None:
        pass

    def on_client(self, ctx: Context, request: ClientRequest) -> None:
        ctx.reply(request, self.answer(request.command))

    def answer(self, command: Any) -> Any:
        return self.sm.apply(command)

    def submit(self, ctx: Context, command: Any) -> None:  # marks it as a kv protocol
        pass

    @classmethod
    def byzantine_class(cls, behaviour: str) -> type[Protocol]:
        if behaviour != "liar":
            return super().byzantine_class(behaviour)
        return Liar

    @classmethod
    def client_replies_needed(cls, members: int, config: Any) -> int:
        return cls.replies_needed


class Liar(LocalKV):
    is_byzantine = True

    def answer(self, command: Any) -> Any:
        self.sm.apply(command)
        return LIE


class TrustingLocalKV(LocalKV):
    name = "trusting-local-kv"
    replies_needed = 1


def _outputs(protocol: type[LocalKV], seed: int) -> tuple[list[Any], ClientPool]:
    sim = Simulation(protocol, nodes=3, seed=seed, byzantine={"n1": "liar"})
    pool = ClientPool(sim, Workload(clients=6, rate_per_s=30.0, keys=2, read_ratio=0.5))
    pool.start()
    sim.run(5.0)
    return [r.output for r in pool.records if r.status == "ok"], pool


def test_quorum_clients_never_accept_a_lie() -> None:
    outputs, pool = _outputs(LocalKV, seed=3)
    assert len(outputs) > 30
    assert LIE not in outputs
    # every request went to every node
    assert all(r.attempts >= 1 for r in pool.records)


def test_a_client_that_trusts_one_node_accepts_lies() -> None:
    outputs, _ = _outputs(TrustingLocalKV, seed=3)
    assert LIE in outputs  # the planted bug: the quorum rule is what keeps the lie out


def test_byzantine_nodes_are_reported_in_status() -> None:
    sim = Simulation(LocalKV, nodes=3, seed=1, byzantine={"n1": "liar"})
    assert sim.status("n1")["byzantine"] == "liar"
    assert "byzantine" not in sim.status("n2")
    assert sim.protocol("n1").is_byzantine  # type: ignore[union-attr]
