"""Multi-Paxos clusters in the simulator: election, replication, the spec's Theorem 2.1,
liveness under dueling proposers and crashes, snapshots and catch-up, clients, checked runs.

Every simulation runs with ``check_invariants=True``: the PaxosChecker (one value per ballot,
one value chosen per slot, promises never decrease, learned values agree, state machine
safety) runs after every event and any violation fails the test. Time is virtual; nothing
here sleeps.
"""

from __future__ import annotations

import random

import pytest

from paxos_helpers import all_applied, make_sim, one, submit_at_leader, wait_leader
from quorumkit.protocols.paxos import Accept, PaxosNode
from quorumkit.sim.run import RunOptions, run


def proto(sim, node) -> PaxosNode:
    p = sim.protocol(node)
    assert isinstance(p, PaxosNode)
    return p


def holds(sim, node, slot, command) -> bool:
    p = sim.protocol(node)
    e = p.log.get(slot) if p is not None else None
    return e is not None and e.value.command == command


def campaign(sim, node) -> None:
    sim.invoke(node, lambda p, ctx: p.become_candidate(ctx))


# ======================================================================= election, replication


def test_one_leader_is_elected_and_stays_while_nothing_fails():
    sim = make_sim(3, seed=1)
    leader = wait_leader(sim)
    ballot = sim.status(leader)["ballot"]
    sim.run(3.0)
    assert sim.leader() == leader
    assert sim.status(leader)["ballot"] == ballot
    assert sim.stats["leader_changes"] == 1
    assert {tuple(sim.status(n)["promised"]) for n in sim.nodes} == {tuple(ballot)}


@pytest.mark.parametrize("nodes", [3, 5])
def test_every_replica_applies_the_same_commands_in_the_same_slots(nodes):
    sim = make_sim(nodes, seed=2)
    leader = wait_leader(sim)
    commands = [("put", f"k{i % 3}", i) for i in range(40)]
    slots = [sim.submit(leader, c)[0] for c in commands]
    assert slots == list(range(slots[0], slots[0] + 40))
    assert sim.run_until(lambda: all_applied(sim, slots[-1]), 2.0)
    for n in sim.nodes:
        assert [c for _, c in sim.applied(n)] == commands
        assert sim.status(n)["commit_index"] == slots[-1]
    assert len({proto(sim, n).state_digest() for n in sim.nodes}) == 1


def test_a_batch_of_proposals_travels_in_one_accept_per_acceptor():
    """Phase 2 runs per slot, but the leader sends the slots proposed in one input together."""
    sim = make_sim(5, seed=3)
    leader = wait_leader(sim)
    sim.run(0.2)
    sent = sim.stats["sent"]

    def burst(p, ctx):
        for i in range(30):
            p.submit(ctx, ("put", "k", i))

    sim.invoke(leader, burst)
    assert sim.stats["sent"] - sent == 4
    assert sim.run_until(lambda: all_applied(sim, 30), 1.0)


def test_a_minority_cannot_decide_and_its_proposals_are_not_learned():
    """A leader cut off with one follower of five proposes, but no majority accepts: nothing
    is decided on its side; the majority side elects a leader of a higher ballot that
    decides its own commands in those slots; after the heal everybody agrees."""
    sim = make_sim(5, seed=4)
    old = wait_leader(sim)
    sim.run(0.2)
    buddy = next(n for n in sim.nodes if n != old)
    sim.partition([old, buddy])
    base = sim.status(old)["commit_index"]
    for i in range(5):
        sim.submit(old, ("put", "minority", i))
    sim.run(1.0)
    assert sim.status(old)["commit_index"] == base
    new = wait_leader(sim)
    assert new not in (old, buddy) or sim.status(new)["term"] > sim.status(old)["term"]
    majority = [n for n in sim.nodes if n not in (old, buddy)]
    _, slot = submit_at_leader(sim, ("put", "majority", 1))
    assert sim.run_until(lambda: all_applied(sim, slot, majority), 2.0)
    sim.heal()
    assert sim.run_until(lambda: all_applied(sim, slot), 3.0)
    assert sim.status(old)["role"] == "follower"
    for n in sim.nodes:
        assert ("put", "minority", 0) not in [c for _, c in sim.applied(n)]


# ======================================================================= Theorem 2.1


def test_theorem_2_1_a_chosen_value_is_proposed_by_every_higher_ballot_and_learned_by_all():
    """Spec Theorem 2.1: if v is chosen with proposal number n, every higher-numbered
    proposal proposes v, so every node eventually learns v.

    v is chosen at ballot n in a slot by the leader and two acceptors of five, and the
    leader crashes before anyone learns it. Then competing proposers with higher ballots
    campaign, two at a time, under 30% message loss, while nodes crash and restart. Every
    Accept for that slot at a ballot above n carries v; in the end every node learns v."""
    sim = make_sim(5, seed=5, trace="full")
    leader = wait_leader(sim)
    sim.run(0.1)
    n = tuple(proto(sim, leader).ballot)
    a, b, c, d = (x for x in sim.nodes if x != leader)
    sim.partition([leader, a, b], [c, d])
    v = ("put", "theorem", "2.1")
    slot = sim.submit(leader, v)[0]
    assert sim.run_until(lambda: holds(sim, a, slot, v) and holds(sim, b, slot, v), 0.5)
    sim.crash(leader)
    checker = sim._checker
    assert checker is not None
    chosen_value, chosen_at = checker.chosen[slot]
    assert chosen_value.command == v and chosen_at == n
    assert all(sim.status(x)["commit_index"] < slot for x in (a, b, c, d)), "nobody knows"
    t_chosen = sim.now

    sim.heal()
    sim.network.loss_rate = 0.3
    rng = random.Random(21)
    down: list[str] = []
    for i in range(15):
        if len(sim.up_nodes()) <= 3:
            sim.restart(down.pop(0))
        for x in rng.sample(sim.up_nodes(), 2):
            campaign(sim, x)
        sim.run_until(lambda: sim.leader() is not None, 0.3)
        winner = sim.leader()
        if winner is not None and (i < 3 or rng.random() < 0.5):
            sim.crash(winner)  # right after it proposed what phase 1 reported
            down.append(winner)
        sim.run(rng.uniform(0.0, 0.1))
    sim.network.loss_rate = 0.0
    for x in sim.nodes:
        sim.restart(x)
    assert sim.run_until(lambda: all_applied(sim, slot), 10.0)
    for x in sim.nodes:
        assert holds(sim, x, slot, v), f"{x} learned another value for slot {slot}"

    proposals = []
    for ev in sim.events:
        if ev[0] >= t_chosen and ev[1] in ("deliver", "drop") and isinstance(ev[4], Accept):
            msg = ev[4]
            if msg.first_slot <= slot < msg.first_slot + len(msg.values):
                proposals.append((msg.ballot, msg.values[slot - msg.first_slot]))
    higher = {ballot for ballot, _ in proposals if ballot > n}
    assert len(higher) >= 5, "competing proposers with higher ballots proposed for the slot"
    assert all(value.command == v for ballot, value in proposals if ballot > n)


# ======================================================================= liveness


def test_dueling_proposers_converge_within_a_bound_thanks_to_randomized_backoff():
    """Section 3: two proposers that keep preempting each other make no progress; each
    backs off for a randomized timeout after losing, so one of them soon leads alone."""
    sim = make_sim(5, seed=6)
    wait_leader(sim)
    rng = random.Random(6)
    took = []
    for i in range(10):
        x, y = rng.sample(list(sim.nodes), 2)
        campaign(sim, x)
        campaign(sim, y)  # same virtual instant
        start = sim.now
        one(sim, ("put", "duel", i))
        took.append(sim.now - start)
    assert max(took) < 1.0, took
    assert sum(proto(sim, n).elections_started for n in sim.nodes) >= 20


def test_all_five_proposers_at_once_converge():
    sim = make_sim(5, seed=7)
    wait_leader(sim)
    for n in sim.nodes:
        campaign(sim, n)
    start = sim.now
    one(sim, ("put", "k", 1))
    assert sim.now - start < 1.5


def test_after_the_leader_crashes_a_new_leader_commits_and_the_old_one_catches_up():
    sim = make_sim(5, seed=8)
    old = wait_leader(sim)
    _, slot1 = submit_at_leader(sim, ("put", "k", "before"))
    assert sim.run_until(lambda: all_applied(sim, slot1), 1.0)
    sim.crash(old)
    new = wait_leader(sim, timeout=2.0)
    assert new != old
    _, slot2 = submit_at_leader(sim, ("put", "k", "after"))
    others = [n for n in sim.nodes if n != old]
    assert sim.run_until(lambda: all_applied(sim, slot2, others), 1.0)
    sim.restart(old)
    assert sim.run_until(lambda: all_applied(sim, slot2), 2.0)
    assert proto(sim, old).local_read(("get", "k")) == "after"
    assert sim.leader() == new


def test_a_full_cluster_restart_recovers_every_decided_slot_from_storage():
    sim = make_sim(3, seed=9)
    wait_leader(sim)
    for i in range(10):
        _, slot = submit_at_leader(sim, ("append", "log", str(i)))
    assert sim.run_until(lambda: all_applied(sim, slot), 1.0)
    digest = proto(sim, "n1").state_digest()
    for n in sim.nodes:
        sim.crash(n)
    for n in sim.nodes:
        sim.restart(n)
        assert proto(sim, n).state_digest() == digest, "replayed from storage at once"
    _, slot = submit_at_leader(sim, ("append", "log", "x"))
    assert sim.run_until(lambda: all_applied(sim, slot), 2.0)
    assert proto(sim, "n2").local_read(("get", "log")) == "0123456789x"


# ======================================================================= snapshots, catch-up


def test_a_replica_that_was_down_catches_up_through_a_snapshot():
    """Log truncation: the others compact their logs into snapshots while a replica is down;
    on restart it gets the snapshot (in chunks) and then the slots after it."""
    sim = make_sim(3, seed=10, trace="full", snapshot_threshold=10, snapshot_chunk_bytes=64)
    leader = wait_leader(sim)
    lagger = next(n for n in sim.nodes if n != leader)
    sim.crash(lagger)
    for i in range(45):
        _, slot = submit_at_leader(sim, ("put", f"k{i % 7}", i))
        sim.run(0.002)
    up = [n for n in sim.nodes if n != lagger]
    assert sim.run_until(lambda: all_applied(sim, slot, up), 2.0)
    assert sim.status(leader)["snapshot_index"] >= 40
    assert sim.storage(leader).load().log_start > 40
    sim.restart(lagger)
    assert sim.run_until(lambda: all_applied(sim, slot), 3.0)
    installs = [ev for ev in sim.events if ev[1] == "trace" and ev[3] == "install_snapshot"]
    assert [ev[2] for ev in installs] == [lagger]
    assert proto(sim, lagger).state_digest() == proto(sim, leader).state_digest()


# ======================================================================= clients


def test_clients_are_redirected_to_the_leader_and_read_their_writes():
    sim = make_sim(3, seed=11)
    leader = wait_leader(sim)
    sim.run(0.2)
    follower = next(n for n in sim.nodes if n != leader)
    rid = sim.client_request(follower, ("put", "k", "v"))
    assert sim.replies[rid] == (follower, {"error": "not_leader", "leader": leader})
    rid = sim.client_request(leader, ("session", "c1", 1, ("put", "k", "v")))
    assert sim.run_until(lambda: rid in sim.replies, 1.0)
    assert sim.replies[rid] == (leader, None)
    rid = sim.client_request(leader, ("get", "k"))
    assert sim.run_until(lambda: rid in sim.replies, 1.0)
    assert sim.replies[rid] == (leader, "v")


@pytest.mark.parametrize(("nodes", "seed"), [(5, 1), (5, 2), (5, 3), (3, 4), (3, 5)])
def test_checked_runs_with_partitions_crashes_and_loss_pass(nodes, seed):
    """``quorumkit sim paxos``: invariants after every event, progress after the heal,
    convergence (Definition 2.1) and a linearizable client history."""
    r = run(
        RunOptions(protocol="paxos", nodes=nodes, seed=seed, nemesis=("partition", "crash", "loss"))
    )
    assert r.ok, r.summary["violations"]
    assert r.summary["linearizable"] is True
    assert r.summary["converged"] is True
    assert r.summary["ops"]["ok"] > 50
    assert r.summary["leader_changes"] >= 2


def test_one_seed_one_run():
    def trace_of(seed: int) -> str:
        return run(RunOptions(protocol="paxos", seed=seed, nemesis=("crash",))).sim.trace_hash()

    assert trace_of(3) == trace_of(3)
    assert trace_of(3) != trace_of(4)
