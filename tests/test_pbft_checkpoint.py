"""PBFT checkpoints, garbage collection and state transfer (Castro & Liskov 1999, §4.3; TOCS
2002 §5.3)."""

from __future__ import annotations

import dataclasses

from pbft_helpers import (
    Wire,
    client_request,
    correct_digests,
    deliver,
    drive,
    new_node,
    signed,
)
from quorumkit.protocol import ClientRequest
from quorumkit.protocols.pbft import (
    Checkpoint,
    Fetch,
    PbftNode,
    Prepare,
    PrePrepare,
    StateTransfer,
)
from quorumkit.protocols.pbft.checkpoint import encode_state
from quorumkit.protocols.pbft.crypto import digest
from quorumkit.protocols.pbft.messages import StableCheckpoint
from quorumkit.sim.core import Simulation

SMALL = {"checkpoint_interval": 4}  # K = 4, L = 8


def run_requests(w: Wire, count: int, first: int = 1) -> None:
    """Order ``count`` single-request batches through the wire's primary n1."""
    for i in range(first, first + count):
        w.nodes["n1"].on_client(w.ctxs["n1"], ClientRequest(i, client_request(f"c{i}", 1, i)))
        w.flush("n1")
        w.run()


def test_a_checkpoint_every_k_sequence_numbers_becomes_stable_with_2f_plus_1() -> None:
    w = Wire(**SMALL)
    run_requests(w, 3)
    assert all(not n.ckpt_votes and n.h == 0 for n in w.nodes.values())
    run_requests(w, 1, first=4)
    for node in w.nodes.values():
        assert node.last_executed == 4
        assert node.h == 4  # stable: low watermark h = 4, high watermark H = 12
        assert len(node.h_proof) == 3 and len({c.sender for c in node.h_proof}) == 3
        assert node.status()["stable_checkpoint"] == 4
        assert node.log == {}  # messages at or below the stable checkpoint are discarded
        assert node.stable_state[0] == 4
        stored = w.ctxs[node.node_id].storage.load().snapshot
        assert isinstance(stored, StableCheckpoint) and stored.seq == 4
    assert len({n.h_digest for n in w.nodes.values()}) == 1


def test_stable_needs_2f_plus_1_matching_digests_from_distinct_replicas() -> None:
    node, ctx = new_node("n2", **SMALL)
    d = b"d" * 32
    deliver(node, ctx, "n3", signed(Checkpoint(4, d, "n3")))
    deliver(node, ctx, "n3", signed(Checkpoint(4, d, "n3")))  # the same replica again
    deliver(node, ctx, "n4", signed(Checkpoint(4, b"e" * 32, "n4")))  # another digest
    assert node.h == 0
    deliver(node, ctx, "n1", signed(Checkpoint(4, d, "n1")))
    assert node.h == 0  # n3 and n1 agree: 2 < 2f + 1
    deliver(node, ctx, "n4", signed(Checkpoint(4, d, "n4")))
    assert node.h == 0  # n4 already voted: its second vote does not count
    assert node.verifications == 3
    deliver(node, ctx, "n1", signed(Checkpoint(5, d, "n1")))
    assert node.dropped == {"bad_checkpoint": 1}  # not a multiple of K


def test_a_stable_checkpoint_ahead_moves_the_window_and_a_lagging_replica_fetches() -> None:
    node, ctx = new_node("n2", **SMALL)
    d = b"d" * 32
    for who in ("n1", "n3", "n4"):
        deliver(node, ctx, who, signed(Checkpoint(4, d, who)))
    assert node.h == 4 and node.last_executed == 0
    assert "fetch" in ctx.timers  # behind the stable checkpoint: state transfer is armed
    node.on_timer(ctx, "fetch")
    fetches = [(dst, m) for dst, m in ctx.sent if type(m).__name__ == "Fetch"]
    assert len(fetches) == 1 and fetches[0][1].last_executed == 0
    # prepares at or below h are no longer taken; the window is (h, h + L]
    assert not node.in_window(13) and node.in_window(12)


def test_the_primary_orders_nothing_beyond_the_high_watermark() -> None:
    node, ctx = new_node("n1", checkpoint_interval=2, max_inflight=100, max_batch=1)
    for i in range(1, 10):
        node.on_client(ctx, ClientRequest(i, client_request(f"c{i}", 1, i)))
    node.on_flush(ctx)
    seqs = [m.seq for m in ctx.sent_of(PrePrepare)]
    assert seqs == [1, 2, 3, 4]  # H = h + L = 0 + 4
    assert len(node.queue) == 5


def test_the_log_stays_bounded_over_a_long_run() -> None:
    sim = Simulation(
        "pbft", nodes=4, seed=21, trace="off", check_invariants=True, checkpoint_interval=8
    )
    done = drive(sim, 2000, clients=16)
    assert sim.run_until(lambda: len(done) == 2000, 60)
    sim.run(1.0)
    window = 2 * 8
    for n in sim.nodes:
        node = sim.protocol(n)
        assert isinstance(node, PbftNode)
        assert node.h >= node.last_executed - window
        assert node.max_log_size <= 2 * window, (n, node.max_log_size)
        assert len(node.pset) <= window and len(node.ckpt_votes) <= window // 8 + 1
        assert len(node.own_checkpoints) <= 2
        hard = sim.storage(n).load().hard
        assert len(hard) <= 2 * window + 4  # slot records are reused modulo 2L
    assert len(correct_digests(sim)) == 1


def test_a_lagging_replica_catches_up_by_state_transfer() -> None:
    sim = Simulation(
        "pbft", nodes=4, seed=22, trace="off", check_invariants=True, checkpoint_interval=8
    )
    sim.disconnect("n4")
    done = drive(sim, 150, clients=4, nodes=["n1", "n2", "n3"])
    assert sim.run_until(lambda: len(done) == 150, 20)
    lagging = sim.protocol("n4")
    leader = sim.protocol("n1")
    assert isinstance(lagging, PbftNode) and isinstance(leader, PbftNode)
    assert lagging.last_executed == 0 and leader.h > lagging.h + lagging.L
    sim.reconnect("n4")
    assert sim.run_until(lambda: lagging.last_executed == leader.last_executed, 5)
    installs = [e.seq for e in lagging.executed if e.requests is None]
    assert installs and installs[0] % 8 == 0  # it installed a stable checkpoint's state
    assert len(correct_digests(sim)) == 1
    # and it takes part again: new requests complete and it executes them itself
    more = drive(sim, 10, clients=2)
    assert sim.run_until(lambda: len(more) == 10, 5)
    sim.run(0.2)
    assert lagging.last_executed == leader.last_executed


def test_a_restarted_replica_recovers_its_stable_checkpoint_and_catches_up() -> None:
    sim = Simulation("pbft", nodes=4, seed=23, trace="off", check_invariants=True, **SMALL)
    done = drive(sim, 40, clients=2)
    assert sim.run_until(lambda: len(done) == 40, 10)
    sim.crash("n3")
    more = drive(sim, 40, clients=2, nodes=["n1", "n2", "n4"])
    assert sim.run_until(lambda: len(more) == 40, 10)
    sim.restart("n3")
    node = sim.protocol("n3")
    assert isinstance(node, PbftNode)
    assert node.executed[0].requests is None and node.executed[0].seq > 0  # from storage
    sim.run(1.0)
    assert len(correct_digests(sim)) == 1
    assert node.last_executed == sim.protocol("n1").last_executed  # type: ignore[union-attr]


def test_a_state_transfer_with_a_bad_proof_is_dropped() -> None:
    node, ctx = new_node("n2", **SMALL)
    donor, _ = new_node("n3", **SMALL)
    donor.sm.apply(("put", "k", "forged"))
    state = encode_state(donor)
    d = digest(state)
    proof = tuple(signed(Checkpoint(4, d, who)) for who in ("n1", "n3", "n4"))
    short = StateTransfer(4, state, proof[:2], None, (), "n3")
    deliver(node, ctx, "n3", signed(short))
    twice = StateTransfer(4, state, (proof[0], proof[1], proof[1]), None, (), "n3")
    deliver(node, ctx, "n3", signed(twice))
    other = StateTransfer(4, state + b"x", proof, None, (), "n3")
    deliver(node, ctx, "n3", signed(other))
    assert node.dropped == {
        "bad_checkpoint_proof": 2,
        "duplicate_sender": 1,
    }
    assert node.last_executed == 0 and node.sm.data == {}
    deliver(node, ctx, "n3", signed(StateTransfer(4, state, proof, None, (), "n3")))
    assert node.last_executed == 4 and node.sm.data == {"k": "forged"} and node.h == 4


def test_messages_below_the_low_watermark_are_ignored() -> None:
    node, ctx = new_node("n2", **SMALL)
    donor, _ = new_node("n3", **SMALL)
    state = encode_state(donor)
    proof = tuple(signed(Checkpoint(4, digest(state), w)) for w in ("n1", "n3", "n4"))
    deliver(node, ctx, "n3", signed(StateTransfer(4, state, proof, None, (), "n3")))
    before = node.verifications
    deliver(node, ctx, "n3", signed(Prepare(0, 3, b"d" * 32, "n3")))
    deliver(node, ctx, "n3", signed(Checkpoint(4, digest(state), "n3")))
    assert node.verifications == before and 3 not in node.log


def test_a_fetch_is_answered_with_the_stable_state_and_committed_certificates() -> None:
    w = Wire(**SMALL)
    run_requests(w, 6)
    responder, ctx = w.nodes["n1"], w.ctxs["n1"]
    ctx.sent.clear()
    deliver(responder, ctx, "n2", signed(Fetch(0, 0, True, "n2")))
    (dst, answer), *_ = ctx.sent
    assert dst == "n2" and isinstance(answer, StateTransfer)
    assert answer.seq == 4 and len(answer.proof) == 3
    assert [c.pre_prepare.seq for c in answer.certs] == [5, 6]
    assert all(len(c.commits) == 3 for c in answer.certs)
    fresh, fctx = new_node("n2", **SMALL)
    deliver(fresh, fctx, "n1", answer)
    assert fresh.last_executed == 6
    assert fresh.state_digest() == responder.state_digest()


def test_a_forged_committed_certificate_is_dropped() -> None:
    w = Wire(**SMALL)
    run_requests(w, 2)
    cert = w.nodes["n1"].log[2].committed
    assert cert is not None
    fresh, ctx = new_node("n2", **SMALL)
    pp = cert.pre_prepare
    forged = dataclasses.replace(cert, commits=(cert.commits[0],) * 3)
    bad = StateTransfer(0, b"", (), None, (w.nodes["n1"].log[1].committed, forged), "n1")
    deliver(fresh, ctx, "n1", signed(bad))
    assert fresh.dropped == {"duplicate_sender": 1}
    assert fresh.last_executed == 1 and pp.seq == 2
