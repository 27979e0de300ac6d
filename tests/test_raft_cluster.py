"""Raft clusters in the simulator: the scenarios MIT 6.824's lab 2 grades, adapted, and the
dissertation features (snapshots, membership, transfer, ReadIndex, sessions).

Every simulation runs with ``check_invariants=True``: the RaftChecker (election safety, leader
append-only, log matching, leader completeness, state machine safety) runs after every event
and any violation fails the test. Time is virtual; nothing here sleeps.
"""

from __future__ import annotations

import random

import pytest

from quorumkit.protocols.raft import AppendEntriesResponse, InstallSnapshot
from raft_helpers import Cluster, make_sim, start

# ======================================================================= 2A: leader election


def test_initial_election_elects_one_leader_and_keeps_the_term_when_nothing_fails():
    """6.824 TestInitialElection2A: one leader; all agree on the term; without failures
    the term and the leader do not change over 2 s."""
    c = Cluster(3, seed=1)
    leader = c.check_one_leader()
    c.sim.run(0.05)
    term1 = c.check_terms()
    assert term1 >= 1
    c.sim.run(2.0)
    assert c.check_terms() == term1, "term changed even though there were no failures"
    assert c.check_one_leader() == leader


@pytest.mark.parametrize(
    ("pre_vote", "check_quorum"), [(False, False), (True, True), (True, False)]
)
def test_reelection_after_the_leader_is_disconnected_and_rejoins(pre_vote, check_quorum):
    """6.824 TestReElection2A: a new leader is elected when the leader is disconnected; when
    the old leader rejoins it becomes a follower and does not disturb the new leader; with 2 of
    3 gone there is no leader; with a quorum back there is one again."""
    c = Cluster(3, seed=2, pre_vote=pre_vote, check_quorum=check_quorum)
    leader1 = c.check_one_leader()
    c.disconnect(leader1)
    leader2 = c.check_one_leader()
    assert leader2 != leader1
    term2 = c.sim.status(leader2)["term"]
    c.connect(leader1)
    c.sim.run(1.0)
    assert c.check_one_leader() == leader2, "the rejoining old leader disturbed the new one"
    assert c.sim.status(leader1)["role"] == "follower"
    assert c.sim.status(leader1)["term"] == term2 == c.check_terms()
    # no quorum, no leader
    others = [n for n in c.nodes if n != leader2]
    c.disconnect(leader2)
    c.disconnect(others[0])
    c.sim.run(2.0)
    c.check_no_leader()
    # a quorum arises: it elects a leader
    c.connect(others[0])
    c.check_one_leader()
    c.connect(leader2)
    c.check_one_leader()


@pytest.mark.parametrize(("pre_vote", "check_quorum"), [(True, True), (False, False)])
def test_no_new_leader_without_a_quorum_and_the_isolated_leader_steps_down(pre_vote, check_quorum):
    """With 2 of 3 nodes disconnected nobody else can be elected (each side is a minority).
    With check-quorum the isolated old leader steps down within an election timeout, and
    with pre-vote the isolated followers do not raise their terms; without check-quorum the
    old leader keeps believing it leads."""
    c = Cluster(3, seed=3, pre_vote=pre_vote, check_quorum=check_quorum)
    leader = c.check_one_leader()
    c.sim.run(0.2)
    term = c.check_terms()
    followers = [n for n in c.nodes if n != leader]
    for n in followers:
        c.disconnect(n)
    c.sim.run(2.0)
    for n in followers:
        assert c.sim.status(n)["role"] != "leader"
        assert (c.sim.status(n)["term"] == term) is pre_vote
    if check_quorum:
        assert c.sim.status(leader)["role"] != "leader"
        assert c.sim.leader() is None
    else:
        assert c.sim.status(leader)["role"] == "leader"
    assert c.sim.status(leader)["term"] == term


def test_many_elections_with_random_disconnects_on_7_nodes():
    """6.824 TestManyElections2A: 7 nodes; 10 times, disconnect 3 at random, a leader must
    exist (or be elected) among the 4 others, then reconnect them."""
    c = Cluster(7, seed=4)
    c.check_one_leader()
    rng = random.Random(4)
    for _ in range(10):
        gone = rng.sample(list(c.nodes), 3)
        for n in gone:
            c.disconnect(n)
        c.check_one_leader()
        for n in gone:
            c.connect(n)
    c.check_one_leader()


# ==================================================================== 2B: log replication


def test_basic_agreement_three_commands_at_consecutive_indices():
    """6.824 TestBasicAgree2B: nothing is committed before start(); each command is applied
    by all nodes, at consecutive indices."""
    c = Cluster(3, seed=5)
    c.check_one_leader()
    prev = None
    for cmd in (("put", "a", 1), ("put", "b", 2), ("put", "c", 3)):
        if prev is not None:
            assert c.n_committed(prev + 1)[0] == 0, "committed before start()"
        index = c.one(cmd, 3, retry=False)
        if prev is not None:
            assert index == prev + 1
        prev = index
    for n in c.nodes:
        assert c.applied_commands(n) == [("put", "a", 1), ("put", "b", 2), ("put", "c", 3)]


def test_a_disconnected_follower_rejoins_and_catches_up():
    """6.824 TestFailAgree2B: with one follower disconnected the other two still agree; after
    reconnecting, the follower catches up on everything, in order."""
    c = Cluster(3, seed=6)
    c.one(101, 3)
    leader = c.check_one_leader()
    follower = next(n for n in c.nodes if n != leader)
    c.disconnect(follower)
    for cmd in (102, 103, 104, 105):
        c.one(cmd, 2)
    c.sim.run(0.5)
    assert 102 not in c.applied_commands(follower)
    c.connect(follower)
    c.one(106, 3)
    c.one(107, 3)
    assert c.applied_commands(follower) == [101, 102, 103, 104, 105, 106, 107]


def test_a_crashed_follower_restarts_and_catches_up():
    """A follower that crashes (losing its volatile state) and restarts re-applies the whole
    committed log from its durable storage and the leader, in order."""
    c = Cluster(3, seed=6)
    c.one(1, 3)
    leader = c.check_one_leader()
    follower = next(n for n in c.nodes if n != leader)
    c.crash(follower)
    for cmd in (2, 3, 4):
        c.one(cmd, 2)
    c.start(follower)
    c.one(5, 3)
    assert c.applied_commands(follower) == [1, 2, 3, 4, 5]


def test_no_agreement_when_three_of_five_are_disconnected_then_agreement_after_reconnect():
    """6.824 TestFailNoAgree2B: with 3 of 5 followers gone a command is accepted by the
    leader but never committed; after they return, agreement resumes."""
    c = Cluster(5, seed=7, check_quorum=False)
    c.one(10, 5)
    leader = c.check_one_leader()
    gone = [n for n in c.nodes if n != leader][:3]
    for n in gone:
        c.disconnect(n)
    r = start(c.sim, leader, 20)
    assert r.is_leader and r.error is None
    assert r.index == 3
    c.sim.run(2.0)
    assert c.n_committed(r.index) == (0, None)
    for n in gone:
        c.connect(n)
    leader2 = c.check_one_leader()
    r2 = start(c.sim, leader2, 30)
    assert r2.is_leader
    assert r2.index in (3, 4)  # the disconnected majority may have elected a leader meanwhile
    c.one(1000, 5)


def test_concurrent_submits_in_one_step_all_commit():
    """6.824 TestConcurrentStarts2B: several Start()s at once, in the same term, get distinct
    consecutive indices and all commit."""
    c = Cluster(3, seed=8)
    leader = c.check_one_leader()
    c.sim.run(0.1)
    results = [start(c.sim, leader, ("put", f"k{i}", i)) for i in range(5)]
    assert all(r.is_leader for r in results)
    assert len({r.term for r in results}) == 1
    indices = [r.index for r in results]
    assert indices == list(range(indices[0], indices[0] + 5))
    for r, i in zip(results, range(5), strict=True):
        assert c.wait_committed(r.index, 3) == ("put", f"k{i}", i)


def test_a_partitioned_old_leader_rejoins_and_its_uncommitted_entries_are_discarded():
    """6.824 TestRejoin2B: the old leader accepts commands while partitioned; a new leader
    commits others at those indices; when the old leader rejoins, its stale entries are
    replaced and never applied anywhere."""
    c = Cluster(3, seed=9, check_quorum=False)
    c.one(101, 3)
    leader1 = c.check_one_leader()
    c.disconnect(leader1)
    for cmd in ("stale-102", "stale-103", "stale-104"):
        assert start(c.sim, leader1, cmd).is_leader
    c.one(103, 2)
    leader2 = c.check_one_leader()
    c.disconnect(leader2)
    c.connect(leader1)
    c.one(104, 2)
    c.connect(leader2)
    c.one(105, 3)
    for n in c.nodes:
        assert c.applied_commands(n) == [101, 103, 104, 105], n
        assert not any(
            isinstance(e.command, str) and e.command.startswith("stale")
            for e in c.sim.protocol(n).log.entries
        )


def test_fast_backup_over_divergent_logs_of_50_entries():
    """6.824 TestBackup2B: a leader and a follower accept 50 uncommitted entries in a
    minority; the majority commits 50 others; another 50 go uncommitted on a new minority;
    then the stale nodes must back up quickly (few rejections per follower, not one per
    entry) and the cluster agrees again."""
    c = Cluster(5, seed=10, check_quorum=False, trace="full")
    rng = random.Random(10)
    c.one(rng.randrange(10**6), 5)
    leader1 = c.check_one_leader()
    ring = list(c.nodes)
    i = ring.index(leader1)
    mates = [ring[(i + k) % 5] for k in range(5)]
    # put leader1 and one follower in a partition
    for n in mates[2:]:
        c.disconnect(n)
    for _ in range(50):
        assert start(c.sim, leader1, ("stale1", rng.randrange(10**6))).is_leader
    c.sim.run(0.5)
    c.disconnect(mates[0])
    c.disconnect(mates[1])
    for n in mates[2:]:
        c.connect(n)
    for _ in range(50):
        c.one(rng.randrange(10**6), 3)
    # now another partitioned leader and one follower
    leader2 = c.check_one_leader()
    other = next(n for n in mates[2:] if n != leader2)
    c.disconnect(other)
    for _ in range(50):
        assert start(c.sim, leader2, ("stale2", rng.randrange(10**6))).is_leader
    c.sim.run(0.5)
    # bring original leader back to life with the follower that missed the last 50
    for n in c.nodes:
        c.disconnect(n)
    mark = len(c.sim.events)
    for n in (mates[0], mates[1], other):
        c.connect(n)
    for _ in range(50):
        c.one(rng.randrange(10**6), 3)
    rejections: dict[str, int] = {}
    for e in c.sim.events[mark:]:
        if e[1] == "deliver" and isinstance(e[4], AppendEntriesResponse) and not e[4].success:
            rejections[e[3]] = rejections.get(e[3], 0) + 1
    assert rejections, "the stale logs were never rejected: the scenario did not diverge"
    assert max(rejections.values()) <= 10, f"slow backup: {rejections}"
    for n in c.nodes:
        c.connect(n)
    c.one(rng.randrange(10**6), 5)
    for n in c.nodes:
        cmds = c.applied_commands(n)
        assert not any(isinstance(x, tuple) and x[0] in ("stale1", "stale2") for x in cmds)


def test_message_counts_are_bounded_for_an_election_and_for_agreement():
    """6.824 TestCount2B: an election costs few messages; agreeing on 10 commands costs a
    bounded number per command per follower; an idle second costs only heartbeats."""
    c = Cluster(3, seed=11)
    leader = c.check_one_leader()
    election = c.sim.message_count()
    assert election < 30, f"{election} messages to elect a leader"
    c.sim.run(0.01)
    before = c.sim.message_count()
    first = start(c.sim, leader, 0).index
    for k in range(1, 10):
        r = start(c.sim, leader, k)
        assert r.index == first + k
    for k in range(10):
        assert c.wait_committed(first + k, 3, timeout=1.0) == k
    used = c.sim.message_count() - before
    assert used < 10 * (3 - 1) * 4 + 20, f"{used} messages to agree on 10 commands"
    c.sim.run(0.2)
    idle0 = c.sim.message_count()
    c.sim.run(1.0)
    idle = c.sim.message_count() - idle0
    hb = c.sim.protocol(leader).cfg.heartbeat_ms / 1000
    assert idle <= (1.0 / hb + 1) * (3 - 1) * 2, f"{idle} messages in an idle second"


# ====================================================================== 2C: persistence


def test_every_node_crashes_and_restarts_and_committed_commands_survive_in_order():
    """6.824 TestPersist12C: crash all, restart all, the committed commands are still applied
    by everyone, in the same order, and the terms did not go backwards."""
    c = Cluster(3, seed=12)
    c.one(11, 3)
    c.one(12, 3)
    terms = {n: c.sim.status(n)["term"] for n in c.nodes}
    for n in c.nodes:
        c.crash(n)
    for n in c.nodes:
        c.start(n)
        assert c.sim.status(n)["term"] >= terms[n]
    c.one(13, 3)
    for n in c.nodes:
        assert c.applied_commands(n) == [11, 12, 13]
    leader = c.check_one_leader()
    c.crash(leader)
    c.start(leader)
    c.one(14, 3)
    for n in c.nodes:
        assert c.applied_commands(n)[-4:] == [11, 12, 13, 14]


def test_persistence_through_rolling_crashes_of_leaders_and_followers():
    """6.824 TestPersist22C: repeatedly crash a leader-side minority, commit, crash others,
    restart everyone; nothing committed is ever lost."""
    c = Cluster(5, seed=13)
    expect: list[int] = []
    cmd = 0
    for _ in range(5):
        cmd += 1
        c.one(cmd, 5)
        expect.append(cmd)
        leader1 = c.check_one_leader()
        i = c.nodes.index(leader1)
        victims = [c.nodes[(i + 1) % 5], c.nodes[(i + 2) % 5]]
        for n in victims:
            c.crash(n)
        cmd += 1
        c.one(cmd, 3)
        expect.append(cmd)
        others = [leader1, c.nodes[(i + 3) % 5], c.nodes[(i + 4) % 5]]
        for n in others:
            c.crash(n)
        for n in victims:
            c.start(n)
        c.sim.run(0.3)
        c.start(c.nodes[(i + 3) % 5])
        cmd += 1
        c.one(cmd, 3)
        expect.append(cmd)
        for n in (leader1, c.nodes[(i + 4) % 5]):
            c.start(n)
    cmd += 1
    c.one(cmd, 5)
    expect.append(cmd)
    for n in c.nodes:
        assert c.applied_commands(n) == expect


def _figure_8(c: Cluster, rng: random.Random, iterations: int, unreliable: bool) -> int:
    """6.824's Figure 8 loops; returns how many iterations found a leader to submit to.

    Reliable: every iteration submits at every live node, waits 0-13 ms (10%: 0-500 ms) and
    crashes the leader; fewer than 3 nodes up, one restarts. Unreliable: submits at every
    node, then disconnects the leader half of the time; fewer than 3 connected, one comes
    back."""
    led = 0
    for _ in range(iterations):
        leader = None
        for n in c.nodes:
            if c.sim.is_up(n):
                r = start(c.sim, n, rng.randrange(10**6))
                if r.is_leader and n in c.connected:
                    leader = n
        led += leader is not None
        if rng.random() < 0.1:
            c.sim.run(rng.uniform(0, 0.5))
        else:
            c.sim.run(rng.uniform(0, 0.013))
        if unreliable:
            if leader is not None and rng.random() < 0.5:
                c.disconnect(leader)
            if len(c.connected) < 3:
                n = rng.choice(c.nodes)
                if n not in c.connected:
                    c.connect(n)
        else:
            if leader is not None:
                c.crash(leader)
            if sum(c.sim.is_up(n) for n in c.nodes) < 3:
                n = rng.choice(c.nodes)
                if not c.sim.is_up(n):
                    c.start(n)
    return led


def test_figure_8_leaders_crash_right_after_appending():
    """6.824 TestFigure82C: leaders keep crashing right after appending (a random short delay
    later), so many entries sit on a minority of logs in several terms; the checker must see
    no violation, and once everyone is back the cluster agrees on a new command."""
    c = Cluster(5, seed=14)
    rng = random.Random(14)
    c.one(rng.randrange(10**6), 1)
    led = _figure_8(c, rng, 1000, unreliable=False)
    assert led >= 50, f"only {led} iterations had a leader: the scenario is too weak"
    for n in c.nodes:
        c.start(n)
    c.one(rng.randrange(10**6), 5)


def test_figure_8_unreliable_network_with_loss_delays_and_long_reordering():
    """6.824 TestFigure8Unreliable2C: as Figure 8, with message loss 0.1, delays up to 27 ms,
    and (after 200 iterations) reordering with delays of 0.2-2.2 s; leaders are disconnected
    at random; afterwards a reliable network brings agreement."""
    c = Cluster(5, seed=15, loss_rate=0.1, delay_min=0.0, delay_max=0.027)
    c.sim.network.reorder_delay_min = 0.2
    c.sim.network.reorder_delay_max = 2.2
    rng = random.Random(15)
    c.one(rng.randrange(10**6), 1, timeout=20.0)
    led = _figure_8(c, rng, 200, unreliable=True)
    c.sim.network.reorder = 0.2
    led += _figure_8(c, rng, 800, unreliable=True)
    assert led >= 50, f"only {led} iterations had a leader: the scenario is too weak"
    c.sim.network.loss_rate = 0.0
    c.sim.network.reorder = 0.0
    c.sim.network.delay_max = 0.005
    for n in c.nodes:
        c.connect(n)
    c.sim.run(3.0)  # let the long-delayed messages drain
    c.one(rng.randrange(10**6), 5, timeout=20.0)


@pytest.mark.parametrize("unreliable", [False, True], ids=["reliable", "unreliable"])
def test_churn_with_concurrent_clients(unreliable):
    """6.824 TestReliableChurn2C / TestUnreliableChurn2C: three clients submit continuously
    while nodes crash, restart, disconnect and reconnect at random for 20 s. Every command a
    client saw applied is in the final log at the same index, and the cluster agrees at the
    end."""
    options = {"loss_rate": 0.05, "reorder": 0.05} if unreliable else {}
    c = Cluster(5, seed=16 + unreliable, snapshot_threshold=0, **options)
    sim = c.sim
    rng = random.Random(16)
    seen: dict[int, int] = {}  # index -> command observed applied during the churn
    pending: list[tuple[int, int]] = []
    counter = iter(range(10**9))

    def client(cid: int) -> None:
        cmd = cid * 10**6 + next(counter)
        for n in rng.sample(list(c.nodes), len(c.nodes)):
            r = start(sim, n, cmd)
            if r.is_leader:
                pending.append((r.index, cmd))
                break
        if sim.now < 20.0:
            sim.call_after(rng.uniform(0.005, 0.05), lambda: client(cid))

    def observe() -> None:
        for index, cmd in list(pending):
            count, got = c.n_committed(index)
            if count and got == cmd:
                seen[index] = cmd
                pending.remove((index, cmd))
        if sim.now < 20.0:
            sim.call_after(0.02, observe)

    for cid in range(3):
        client(cid)
    observe()
    while sim.now < 20.0:
        n = rng.choice(c.nodes)
        roll = rng.random()
        if roll < 0.2:
            c.disconnect(n)
        elif roll < 0.5:
            c.connect(n)
        elif roll < 0.6 and sum(sim.is_up(x) for x in c.nodes) > 3:
            c.crash(n)
        elif roll < 0.8:
            c.start(n)
        sim.run(rng.uniform(0.05, 0.7))
    sim.network.loss_rate = 0.0
    sim.network.reorder = 0.0
    for n in c.nodes:
        c.start(n)
        c.connect(n)
    sim.run(3.0)
    last = c.one(("final",), 5, timeout=20.0)
    assert len(seen) > 50, f"only {len(seen)} commands were ever seen committed"
    for n in c.nodes:
        log = dict(sim.applied(n))
        for index, cmd in seen.items():
            assert log.get(index) == cmd, f"{n} lost committed {cmd} at {index}"
        assert max(log) == last


# ================================================================== 2D: snapshots (section 7)


def _lagging_cluster(seed: int, **options) -> tuple[Cluster, str, str]:
    c = Cluster(3, seed=seed, snapshot_threshold=20, **options)
    c.one(("put", "k0", 0), 3)
    leader = c.check_one_leader()
    lag = next(n for n in c.nodes if n != leader)
    return c, leader, lag


def _install_events(c: Cluster, node: str, mark: int = 0) -> list:
    return [
        e
        for e in c.sim.events[mark:]
        if e[1] == "trace" and e[2] == node and e[3] == "install_snapshot"
    ]


def test_snapshot_is_installed_on_a_lagging_follower():
    """Section 7: a follower that misses entries the leader already compacted gets the
    snapshot through InstallSnapshot (in chunks), and ends with the leader's state."""
    c, leader, lag = _lagging_cluster(17, snapshot_chunk_bytes=64, trace="full")
    c.disconnect(lag)
    for i in range(1, 60):
        c.one(("put", f"k{i % 13}", i), 2)
    assert c.sim.status(leader)["snapshot_index"] > c.sim.status(lag)["log_length"]
    mark = len(c.sim.events)
    c.connect(lag)
    last = c.one(("put", "done", 1), 3)
    assert c.sim.run_until(lambda: c.sim.status(lag)["last_applied"] >= last, 2.0)
    assert _install_events(c, lag, mark), "the follower caught up without InstallSnapshot"
    chunks = [
        e
        for e in c.sim.events[mark:]
        if e[1] == "deliver" and e[2] == lag and isinstance(e[4], InstallSnapshot)
    ]
    assert len(chunks) > 1, "a 64-byte chunk size should split the snapshot"
    assert c.sim.status(lag)["snapshot_index"] > 0
    assert c.sim.protocol(lag).sm.data == c.sim.protocol(leader).sm.data
    applied = [i for i, _ in c.sim.applied(lag)]
    assert applied[-1] == last
    assert ("put", "k1", 1) not in [cmd for _, cmd in c.sim.applied(lag)], (
        "entries covered by the snapshot were replayed one by one"
    )


def test_snapshot_is_installed_on_a_restarted_follower_and_a_node_recovers_its_own():
    """Section 7: a crashed follower that comes back behind the leader's snapshot gets it by
    InstallSnapshot; a node that restarts with its own snapshot recovers from it. Either way
    the state machine equals the leader's."""
    c, leader, lag = _lagging_cluster(18, trace="full")
    c.crash(lag)
    for i in range(1, 60):
        c.one(("put", f"k{i % 7}", i), 2)
    mark = len(c.sim.events)
    c.start(lag)
    last = c.one(("put", "done", 2), 3)
    assert c.sim.run_until(lambda: c.sim.status(lag)["last_applied"] >= last, 2.0)
    assert _install_events(c, lag, mark)
    assert c.sim.protocol(lag).sm.data == c.sim.protocol(leader).sm.data
    # now every node has a snapshot; crash and restart one that took its own
    third = next(n for n in c.nodes if n not in (leader, lag))
    assert c.sim.status(third)["snapshot_index"] > 0
    c.crash(third)
    c.start(third)
    assert c.sim.status(third)["snapshot_index"] > 0
    assert c.sim.protocol(third).sm.data.get("k1") is not None, "the snapshot was not restored"
    last = c.one(("put", "after", 3), 3)
    assert c.sim.run_until(lambda: c.sim.status(third)["last_applied"] >= last, 2.0)
    assert c.sim.protocol(third).sm.data == c.sim.protocol(leader).sm.data
    for n in c.nodes:
        c.crash(n)
    for n in c.nodes:
        c.start(n)
    c.one(("put", "end", 4), 3)
    data = [c.sim.protocol(n).sm.data for n in c.nodes]
    assert data[0] == data[1] == data[2]


# ================================================================ membership (dissertation 4)


def test_membership_add_learner_catch_up_promote_and_remove_a_voter():
    """Dissertation 4.1 and 4.2.1: add a non-voting learner, it catches up, promote it to a
    voter, remove another voter; each change commits and every node sees the result."""
    c = Cluster(4, seed=19, initial_voters=("n1", "n2", "n3"))
    leader = c.check_one_leader()
    assert leader != "n4"
    for i in range(5):
        c.one(("put", "k", i), 3)
    assert c.sim.applied("n4") == [], "a non-member received entries"

    def change(action: str, node: str):
        return c.sim.invoke(
            c.check_one_leader(), lambda p, ctx: p.change_membership(ctx, action, node)
        )

    assert change("add_learner", "n4") is None
    assert c.sim.run_until(lambda: c.sim.status("n4")["learners"] == ["n4"], 2.0)
    c.one(("put", "k", "learner"), 4)  # the learner applies what the voters commit
    assert c.sim.status("n4")["role"] == "follower"
    assert change("promote", "n4") is None
    assert c.sim.run_until(
        lambda: all(c.sim.status(n)["voters"] == ["n1", "n2", "n3", "n4"] for n in c.nodes), 2.0
    )
    c.sim.run(0.2)
    c.one(("put", "k", "four"), 4)
    removed = next(n for n in ("n1", "n2", "n3") if n != c.check_one_leader())
    assert change("remove", removed) is None
    c.sim.run(0.5)
    rest = [n for n in c.nodes if n != removed]
    for n in rest:
        assert removed not in c.sim.status(n)["voters"]
    # the removed node is no longer needed: with it gone, 2 of 3 still commit
    c.disconnect(removed)
    c.disconnect(next(n for n in rest if n != c.check_one_leader()))
    c.one(("put", "k", "three"), 2)


def test_removing_the_leader_makes_it_step_down_after_commit():
    """Dissertation 4.2.2: a leader removed from the configuration steps down once the
    change is committed, and the remaining voters elect a leader among themselves."""
    c = Cluster(3, seed=20)
    leader = c.check_one_leader()
    c.one(1, 3)
    assert c.sim.invoke(leader, lambda p, ctx: p.change_membership(ctx, "remove", leader)) is None
    assert c.sim.run_until(lambda: c.sim.status(leader)["role"] != "leader", 2.0)
    new = c.check_one_leader(among=[n for n in c.nodes if n != leader])
    assert new != leader
    assert leader not in c.sim.status(new)["voters"]
    c.disconnect(leader)
    c.one(2, 2)


def test_a_second_membership_change_while_one_is_pending_is_refused():
    """Dissertation 4.1: one configuration change at a time; a second request before the
    first commits gets an error string (and changes nothing)."""
    c = Cluster(5, seed=21, initial_voters=("n1", "n2", "n3"))
    leader = c.check_one_leader()
    c.one(1, 3)

    def change(action: str, node: str):
        return c.sim.invoke(leader, lambda p, ctx: p.change_membership(ctx, action, node))

    assert change("add_learner", "n4") is None
    err = change("add_learner", "n5")
    assert isinstance(err, str) and "pending" in err
    c.sim.run(0.5)
    assert c.sim.status(leader)["learners"] == ["n4"]
    assert change("add_learner", "n5") is None  # committed: the next change is allowed
    for bad, node in (("promote", "n1"), ("remove", "n9"), ("explode", "n4")):
        c.sim.run(0.5)
        out = change(bad, node)
        assert isinstance(out, str) and out, (bad, node)
    follower = next(n for n in c.nodes if n != leader and n in ("n1", "n2", "n3"))
    out = c.sim.invoke(follower, lambda p, ctx: p.change_membership(ctx, "add_learner", "n5"))
    assert out == "not_leader"


# ============================================================ leadership transfer (3.10)


def test_leadership_transfer_to_a_chosen_node():
    """Dissertation 3.10: the leader brings the target up to date and sends it TimeoutNow;
    the target wins at once (well before any election timeout) and no command is lost."""
    c = Cluster(5, seed=22)
    leader = c.check_one_leader()
    c.one(1, 5)
    target = next(n for n in c.nodes if n != leader)
    c.disconnect(target)  # let it lag behind first
    for cmd in (2, 3, 4):
        c.one(cmd, 4)
    c.connect(target)
    t0 = c.sim.now
    assert c.sim.invoke(leader, lambda p, ctx: p.transfer_leadership(ctx, target)) is None
    assert start(c.sim, leader, 99).is_leader is False, "a transferring leader takes no commands"
    assert c.sim.run_until(lambda: c.sim.leader() == target, 1.0)
    assert c.sim.now - t0 < 0.150, "the target waited for an election timeout"
    c.one(5, 5)
    assert c.applied_commands(target) == [1, 2, 3, 4, 5]
    assert c.sim.invoke(target, lambda p, ctx: p.transfer_leadership(ctx, target)) == (
        "already_leader"
    )
    assert c.sim.invoke(leader, lambda p, ctx: p.transfer_leadership(ctx, target)) == ("not_leader")


# ========================================================================= ReadIndex (6.4)


def _put(c: Cluster, node: str, key: str, value) -> None:
    rid = c.sim.client_request(node, ("put", key, value))
    assert c.sim.run_until(lambda: rid in c.sim.replies, 2.0)
    assert c.sim.replies[rid] == (node, None)


def _get(c: Cluster, node: str, key: str, timeout: float = 2.0):
    rid = c.sim.client_request(node, ("get", key))
    c.sim.run_until(lambda: rid in c.sim.replies, timeout)
    return c.sim.replies.get(rid, (node, "no reply"))[1]


@pytest.mark.parametrize("lease_reads", [False, True])
def test_reads_return_the_latest_written_value(lease_reads):
    """Dissertation 6.4: a read at the leader returns the value of the latest committed
    write; followers redirect to the leader."""
    c = Cluster(3, seed=23, lease_reads=lease_reads)
    leader = c.check_one_leader()
    assert _get(c, leader, "x") is None
    for v in ("v1", "v2", "v3"):
        _put(c, leader, "x", v)
        assert _get(c, leader, "x") == v
    follower = next(n for n in c.nodes if n != leader)
    assert _get(c, follower, "x") == {"error": "not_leader", "leader": leader}


def test_a_read_right_after_election_waits_for_an_entry_of_the_new_term():
    """Dissertation 6.4 step 1: a new leader must commit an entry of its term before serving
    reads, so it never answers from a commit index that may be stale."""
    c = Cluster(3, seed=24)
    leader = c.check_one_leader()
    _put(c, leader, "x", "old")
    c.crash(leader)
    leader2 = c.check_one_leader(among=[n for n in c.nodes if n != leader], timeout=5.0)
    assert _get(c, leader2, "x") == "old"


@pytest.mark.parametrize("check_quorum", [False, True])
def test_a_partitioned_minority_leader_does_not_answer_reads(check_quorum):
    """Dissertation 6.4: an old leader cut off in a minority must not serve a read (its
    value may be stale): the read gets no value (no reply, or an error) while the majority
    elects a new leader and overwrites the key."""
    c = Cluster(5, seed=25, check_quorum=check_quorum)
    old = c.check_one_leader()
    _put(c, old, "x", "v1")
    minority = [old, next(n for n in c.nodes if n != old)]
    majority = [n for n in c.nodes if n not in minority]
    c.sim.partition(minority, majority)
    rid = c.sim.client_request(old, ("get", "x"))
    new = c.check_one_leader(among=majority)
    _put(c, new, "x", "v2")
    c.sim.run(2.0)
    got = c.sim.replies.get(rid, (old, None))[1]
    assert not (got == "v1" or got == "v2"), f"the minority leader answered a read: {got!r}"
    if check_quorum:
        assert isinstance(got, dict) and got.get("error") == "not_leader"
    c.sim.heal()
    c.sim.run(1.0)
    assert _get(c, c.check_one_leader(), "x") == "v2"


# ======================================================================= client sessions


def test_a_retried_session_command_applies_once():
    """kv client sessions: ("session", client, seq, op) runs op at most once per (client,
    seq): a retry gets the cached reply, even at a new leader after the first one crashed
    between commit and reply."""
    c = Cluster(3, seed=26)
    leader = c.check_one_leader()

    def req(node: str, command):
        rid = c.sim.client_request(node, command)
        c.sim.run_until(lambda: rid in c.sim.replies, 2.0)
        return c.sim.replies.get(rid, (node, "no reply"))[1]

    assert req(leader, ("session", "c1", 1, ("incr", "n"))) == 1
    assert req(leader, ("session", "c1", 1, ("incr", "n"))) == 1
    assert req(leader, ("session", "c1", 2, ("incr", "n"))) == 2
    # the leader commits seq 3 but crashes before it can answer
    rid = c.sim.client_request(leader, ("session", "c1", 3, ("incr", "n")))
    index = c.sim.protocol(leader).log.last_index
    assert c.sim.run_until(
        lambda: any(c.sim.status(n)["commit_index"] >= index for n in c.nodes if n != leader),
        1.0,
    )
    c.crash(leader)
    assert rid not in c.sim.replies or c.sim.replies[rid][1] == 3
    leader2 = c.check_one_leader(among=[n for n in c.nodes if n != leader])
    assert req(leader2, ("session", "c1", 3, ("incr", "n"))) == 3
    c.start(leader)
    c.one(("put", "sync", 1), 3)
    for n in c.nodes:
        assert c.sim.protocol(n).sm.data["n"] == 3, n


# ============================================================================ bad input


def test_submit_of_a_non_encodable_command_returns_an_error_value():
    """A command that cannot go on the wire comes back as an error value with ``.error``
    set; nothing raises and nothing is appended."""
    c = Cluster(3, seed=27)
    leader = c.check_one_leader()
    length = c.sim.status(leader)["log_length"]
    for bad in (object(), {1, 2}, ("put", "k", object())):
        r = start(c.sim, leader, bad)
        assert r.error, bad
        assert r.index == -1
    assert c.sim.status(leader)["log_length"] == length
    rid = c.sim.client_request(leader, ("put", "k", object()))
    assert c.sim.replies[rid][1]["error"] == "bad_command"
    c.one(1, 3)


def test_submit_to_a_crashed_node_or_a_follower_returns_an_error_value():
    """Start() at a crashed node gives (-1, -1, False) with ``.error``; at a follower it
    gives is_leader False; neither raises."""
    c = Cluster(3, seed=28)
    leader = c.check_one_leader()
    follower = next(n for n in c.nodes if n != leader)
    r = start(c.sim, follower, 1)
    assert r.is_leader is False and r.index == -1
    c.crash(follower)
    r = start(c.sim, follower, 1)
    assert r[:3] == (-1, -1, False)
    assert r.error and "down" in r.error
    rid = c.sim.client_request(follower, ("put", "k", 1))
    assert c.sim.replies[rid][1]["error"] == "down"


def test_bad_kv_commands_are_applied_as_error_results_not_exceptions():
    """kv: a malformed command still occupies its log slot and yields an error result; the
    cluster keeps working."""
    c = Cluster(3, seed=29)
    leader = c.check_one_leader()
    _put(c, leader, "k", "abc")
    for bad in (("put", "k"), ("nosuch", 1), ("append", "k", 5), ("incr", "k"), ("get",)):
        rid = c.sim.client_request(leader, bad)
        assert c.sim.run_until(lambda rid=rid: rid in c.sim.replies, 2.0)
        assert c.sim.replies[rid][1]["error"] in ("bad_command", "wrong_type"), bad
    assert _get(c, leader, "k") == "abc"
    c.one(("put", "k", "fine"), 3)


# ========================================================================= the simulator


def test_reconnecting_one_node_keeps_another_disconnected_node_isolated():
    """disconnect(b) promises that b is cut off until reconnect(b) - even when another node
    disconnected meanwhile comes back (a regression: reconnect(a) used to restore a's link
    to b, and b was reachable through a)."""
    sim = make_sim(3, seed=30)
    assert sim.run_until(lambda: sim.leader() is not None, 3.0)
    sim.disconnect("n1")
    sim.disconnect("n2")
    sim.reconnect("n1")
    assert sim.topology.path("n1", "n3")
    assert not sim.topology.path("n2", "n3")
    assert not sim.topology.path("n2", "n1")
