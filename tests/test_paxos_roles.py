"""Multi-Paxos, role by role, driven through the protocol contract with a recording context.

Lamport, "Paxos Made Simple" (2001). Each test names the section it checks. A test feeds one
:class:`PaxosNode` hand-made messages and looks at exactly what it sent, replied and wrote to
storage (and in which order: a Promise or Accepted must leave after the write it depends on).
"""

from __future__ import annotations

import pytest

from paxos_helpers import (
    FIVE,
    accepts,
    campaign,
    cmd,
    entry,
    make_leader,
    new_node,
    restart,
)
from quorumkit.codec import decode, encode
from quorumkit.errors import ConfigError
from quorumkit.protocol import ClientRequest
from quorumkit.protocols.paxos import (
    NOOP_VALUE,
    UNSAFE_VARIANTS,
    ZERO_BALLOT,
    Accept,
    Accepted,
    CatchUp,
    Decide,
    Heartbeat,
    HeartbeatReply,
    Nack,
    PaxosConfig,
    Prepare,
    Promise,
    Role,
    SlotEntry,
    Snapshot,
    SnapshotChunk,
    Value,
)

A, B, C, D = cmd(1), cmd(2), cmd(3), cmd(4)


def seen_round(node, ctx, round_: int) -> None:
    """Make ``node`` promise ballot (round_, "n5") so its own next ballot is above it."""
    node.on_message(ctx, "n5", Prepare((round_, "n5"), 1))
    ctx.clear()


# ================================================================== configuration and wire


@pytest.mark.parametrize(
    "options",
    [
        {"nonsense": 1},
        {"window": 0},
        {"window": "64"},
        {"election_timeout_ms_min": 300, "election_timeout_ms_max": 150},
        {"heartbeat_interval_ms": 200},
        {"snapshot_threshold": -1},
        {"unsafe": "no-such-bug"},
        {"unsafe": 3},
    ],
)
def test_bad_options_are_config_errors(options):
    with pytest.raises(ConfigError):
        PaxosConfig.from_options(**options)


def test_unsafe_takes_a_comma_separated_list_of_known_variants():
    cfg = PaxosConfig.from_options(unsafe="accept-lower-ballot, ignore-accepted-values")
    assert cfg.unsafe == {"accept-lower-ballot", "ignore-accepted-values"}
    assert PaxosConfig.from_options(unsafe="").unsafe == frozenset()
    assert set(PaxosConfig.from_options(unsafe=list(UNSAFE_VARIANTS)).unsafe) == set(
        UNSAFE_VARIANTS
    )


MESSAGES = [
    Prepare((3, "n2"), 7),
    Promise((3, "n2"), 6, ((7, entry(2, "n1", A)), (9, SlotEntry((1, "n3"), NOOP_VALUE)))),
    Accept((3, "n2"), 7, (A, NOOP_VALUE), 6),
    Accepted((3, "n2"), 7, 2),
    Nack((3, "n2"), (4, "n1")),
    Heartbeat((3, "n2"), 6, 2),
    HeartbeatReply((3, "n2"), 2),
    CatchUp(4, 10, 128),
    Decide(4, (entry(3, "n2", B),), 4),
    SnapshotChunk(10, 0, b"\x00\x01", True),
    Snapshot(10, b"state"),
]


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_round_trips_the_wire_codec(msg):
    """Ballots (round, node) are tuples; they survive msgpack as tuples and keep their order."""
    assert decode(encode(msg)) == msg


def test_ballots_are_totally_ordered_round_first_then_node():
    assert (2, "n1") > (1, "n9") > (1, "n2") > (1, "n1") > ZERO_BALLOT


# ================================================================== acceptor: phase 1(b)


def test_2_2_acceptor_promises_a_higher_ballot_and_reports_its_accepted_proposals():
    """Section 2.2, phase 1(b): an acceptor receiving a prepare request numbered n greater
    than that of any prepare request it has already responded to responds with a promise not
    to accept any more proposals numbered less than n and with the highest-numbered proposal
    it has accepted (section 3: for every slot from the requested one on)."""
    node, ctx = new_node("n2")
    node.on_message(ctx, "n1", Accept((1, "n1"), 1, (A, B, C), 0))
    ctx.clear()
    node.on_message(ctx, "n3", Prepare((2, "n3"), 2))
    [(dst, promise)] = ctx.take(Promise)
    assert dst == "n3"
    assert promise.ballot == (2, "n3")
    assert promise.accepted == ((2, entry(1, "n1", B)), (3, entry(1, "n1", C)))
    assert node.promised == (2, "n3")


def test_2_2_acceptor_rejects_a_lower_ballot_prepare_naming_its_promise():
    """Section 2.2 (an optimization): an acceptor that promised a higher number tells the
    proposer, who should abandon its proposal; it promises nothing."""
    node, ctx = new_node("n2")
    node.on_message(ctx, "n3", Prepare((5, "n3"), 1))
    ctx.clear()
    node.on_message(ctx, "n1", Prepare((4, "n1"), 1))
    assert ctx.take() == [("n1", Nack((4, "n1"), (5, "n3")))]
    assert node.promised == (5, "n3")
    assert not [e for e in ctx.events if e[0] == "persist"]


def test_2_2_acceptor_rejects_an_accept_below_its_promise_and_stores_nothing():
    """Phase 2(b): an acceptor accepts a proposal numbered n unless it has already responded
    to a prepare request having a number greater than n."""
    node, ctx = new_node("n2")
    node.on_message(ctx, "n3", Prepare((5, "n3"), 1))
    ctx.clear()
    node.on_message(ctx, "n1", Accept((4, "n1"), 1, (A,), 0))
    assert ctx.take() == [("n1", Nack((4, "n1"), (5, "n3")))]
    assert node.log.get(1) is None
    assert ctx.storage.load().log == []


def test_2_3_acceptor_writes_its_promise_before_the_promise_is_sent():
    """Section 2.3: an acceptor must remember its promise even if it fails and restarts; the
    write is in the same input as the Promise and comes before it (contract rule 4)."""
    node, ctx = new_node("n2")
    node.on_message(ctx, "n3", Prepare((2, "n3"), 1))
    kinds = [(e[0], e[1]) for e in ctx.events if e[0] in ("persist", "send")]
    put = kinds.index(("persist", "put"))
    send = kinds.index(("send", "n3"))
    assert put < send
    assert ("persist", "put", "promised", (2, "n3"), True) in ctx.events
    assert ctx.storage.load().hard["promised"] == (2, "n3")


def test_2_3_acceptor_writes_accepted_proposals_before_accepted_is_sent():
    """The accepted (ballot, value) of every slot is durable (synced) when Accepted leaves."""
    node, ctx = new_node("n2")
    node.on_message(ctx, "n1", Accept((1, "n1"), 1, (A, B), 0))
    order = [e for e in ctx.events if e[0] in ("persist", "send")]
    appended = [i for i, e in enumerate(order) if e[:2] == ("persist", "append")]
    sent = [i for i, e in enumerate(order) if e[0] == "send" and isinstance(e[2], Accepted)]
    assert appended and sent and max(appended) < min(sent)
    assert all(e[-1] is True for e in order if e[0] == "persist")  # sync=True
    assert ctx.storage.load().log == [entry(1, "n1", A), entry(1, "n1", B)]
    assert ctx.take(Accepted) == [("n1", Accepted((1, "n1"), 1, 2))]


def test_acceptor_state_survives_a_restart():
    """on_recover rebuilds the promise and every accepted proposal from storage: a prepare
    after the restart gets the same report, a lower ballot is still rejected."""
    node, ctx = new_node("n2")
    node.on_message(ctx, "n1", Accept((1, "n1"), 1, (A, B), 0))
    node.on_message(ctx, "n3", Prepare((3, "n3"), 1))
    [(_, before)] = ctx.take(Promise)
    node, ctx = restart(node, ctx)
    assert node.promised == (3, "n3")
    node.on_message(ctx, "n1", Accept((1, "n1"), 3, (C,), 0))
    assert ctx.take() == [("n1", Nack((1, "n1"), (3, "n3")))]
    node.on_message(ctx, "n4", Prepare((4, "n4"), 1))
    [(_, after)] = ctx.take(Promise)
    assert after.accepted == before.accepted


def test_accepting_a_lower_slot_rewrites_the_tail_and_gaps_are_none():
    """Storage mapping: slots are log indices from log_start; a gap is None; accepting slot s
    below the last stored slot rewrites the tail from s (log_append truncates first), so what
    is stored equals what is in memory."""
    node, ctx = new_node("n2")
    node.on_message(ctx, "n1", Accept((1, "n1"), 3, (C,), 0))
    assert ctx.storage.load().log == [None, None, entry(1, "n1", C)]
    node.on_message(ctx, "n1", Accept((1, "n1"), 1, (A,), 0))
    assert ctx.storage.load().log == [entry(1, "n1", A), None, entry(1, "n1", C)]
    node.on_message(ctx, "n3", Accept((2, "n3"), 2, (B,), 0))
    stored = ctx.storage.load().log
    assert stored == [entry(1, "n1", A), entry(2, "n3", B), entry(1, "n1", C)]
    assert stored == node.log.entries


def test_a_resent_accept_is_acknowledged_without_a_second_write():
    node, ctx = new_node("n2")
    node.on_message(ctx, "n1", Accept((1, "n1"), 1, (A, B), 0))
    writes = ctx.storage.writes
    ctx.clear()
    node.on_message(ctx, "n1", Accept((1, "n1"), 1, (A, B), 0))
    assert ctx.storage.writes == writes
    assert ctx.take(Accepted) == [("n1", Accepted((1, "n1"), 1, 2))]


# ================================================================== proposer: phase 1 and 2(a)


def test_3_a_candidate_prepares_every_slot_above_its_decided_prefix_with_a_fresh_ballot():
    """Section 3: the new leader runs phase 1 for every instance from its first undecided
    slot, with a proposal number above every one it has seen; it promises it to itself."""
    node, ctx = new_node("n1")
    seen_round(node, ctx, 4)
    prepare = campaign(node, ctx)
    assert prepare == Prepare((5, "n1"), 1)
    assert node.promised == (5, "n1")
    assert ctx.storage.load().hard["promised"] == (5, "n1")
    assert node.elections_started == 1


def test_2_2_new_leader_adopts_the_value_of_the_highest_numbered_accepted_proposal():
    """Phase 2(a): v is the value of the highest-numbered proposal among the responses, per
    slot (section 3), whichever acceptor reported it."""
    node, ctx = new_node("n1", FIVE)
    seen_round(node, ctx, 6)
    reports = {
        "n2": ((1, entry(3, "n2", A)), (2, entry(5, "n4", B))),
        "n3": ((1, entry(4, "n3", C)), (2, entry(2, "n2", D))),
    }
    make_leader(node, ctx, reports)
    proposed = accepts(ctx)
    assert proposed == {1: C, 2: B}
    assert node.log.get(1) == SlotEntry(node.ballot, C)  # the leader accepted them itself


def test_3_gaps_in_the_reported_slots_are_filled_with_no_ops():
    """Section 3: the leader fills the slots for which no value was reported (below the
    highest reported one) with no-op commands, so that the log has no holes to execute."""
    node, ctx = new_node("n1")
    seen_round(node, ctx, 3)
    make_leader(node, ctx, {"n2": ((2, entry(1, "n2", A)), (5, entry(2, "n3", B)))})
    assert accepts(ctx) == {1: NOOP_VALUE, 2: A, 3: NOOP_VALUE, 4: NOOP_VALUE, 5: B}
    node.on_message(ctx, "n2", Accepted(node.ballot, 1, 5))
    assert node.commit == 5
    assert node.applied_commands() == [(2, A.command), (5, B.command)]


def test_new_commands_go_after_the_adopted_slots():
    node, ctx = new_node("n1")
    seen_round(node, ctx, 3)
    make_leader(node, ctx, {"n2": ((2, entry(1, "n2", A)),)})
    ctx.clear()
    assert tuple(node.submit(ctx, ("put", "x", 1))) == (3, node.ballot[0], True)


def test_a_candidate_learns_what_a_promiser_decided_before_it_leads():
    """Promises report slots above the promiser's decided prefix only; a candidate behind a
    promiser's prefix asks it for the decided values first, then leads."""
    node, ctx = new_node("n1")
    prepare = campaign(node, ctx)
    node.on_message(ctx, "n2", Promise(prepare.ballot, 2, ((3, entry(1, "n2", C)),)))
    assert node.role is Role.CANDIDATE
    assert ctx.take(CatchUp) == [("n2", CatchUp(1))]
    node.on_message(ctx, "n2", Decide(1, (entry(1, "n2", A), entry(1, "n2", B)), 2))
    assert node.role is Role.LEADER
    assert node.commit == 2
    assert accepts(ctx) == {3: C}


def test_2_2_a_rejected_leader_abandons_its_proposals_and_backs_off():
    """Section 2.2: a proposer that learns of a higher-numbered prepare abandons its proposal.
    Its client hears "leader_changed, indeterminate" (the value may still be chosen by a
    later leader); it waits a randomized timeout before competing again (section 3)."""
    node, ctx = new_node("n1")
    make_leader(node, ctx)
    request = ClientRequest(1, ("put", "k", "v"))
    node.on_client(ctx, request)
    ctx.clear()
    node.on_message(ctx, "n2", Nack(node.ballot, (9, "n3")))
    assert node.role is Role.FOLLOWER
    [(req, result)] = ctx.replies
    assert req is request and result["error"] == "leader_changed" and result["indeterminate"]
    assert "election" in ctx.timers
    lo, hi = node.cfg.election_timeout_ms_min / 1000, node.cfg.election_timeout_ms_max / 1000
    assert lo <= ctx.timers["election"] <= hi
    assert campaign(node, ctx).ballot == (10, "n1")


def test_a_leader_steps_down_on_a_higher_prepare():
    node, ctx = new_node("n1")
    make_leader(node, ctx)
    node.on_message(ctx, "n3", Prepare((7, "n3"), 1))
    assert node.role is Role.FOLLOWER
    assert node.promised == (7, "n3")
    assert ctx.take(Promise)


# ================================================================== learners (section 2.3)


def test_2_3_the_leader_learns_a_value_only_once_a_majority_accepted_it():
    """Section 2.3: a value is chosen when a majority of acceptors accepted it; duplicates of
    one acceptor's Accepted count once."""
    node, ctx = new_node("n1", FIVE)
    make_leader(node, ctx)
    slot = node.submit(ctx, ("put", "k", 1))[0]
    node.on_message(ctx, "n2", Accepted(node.ballot, slot, 1))
    node.on_message(ctx, "n2", Accepted(node.ballot, slot, 1))
    assert node.commit == 0, "leader + n2 are 2 of 5"
    node.on_message(ctx, "n4", Accepted((0, "n1"), slot, 1))
    assert node.commit == 0, "an Accepted of another ballot does not count"
    node.on_message(ctx, "n3", Accepted(node.ballot, slot, 1))
    assert node.commit == slot
    assert node.applied_commands() == [(slot, ("put", "k", 1))]


def test_a_follower_learns_the_decided_prefix_from_the_piggybacked_commit():
    """The leader's decided prefix rides on Accept and Heartbeat; a follower whose entries
    carry that leader's ballot knows they hold the decided values."""
    node, ctx = new_node("n2")
    node.on_message(ctx, "n1", Accept((1, "n1"), 1, (A, B), 0))
    node.on_message(ctx, "n1", Heartbeat((1, "n1"), 2, 0))
    assert node.commit == 2
    assert node.applied_commands() == [(1, A.command), (2, B.command)]
    assert ctx.storage.load().hard["commit"] == 2


def test_a_follower_asks_for_decided_values_it_cannot_vouch_for():
    """An entry of an older ballot may not hold the decided value: the follower asks the
    leader (catch-up) instead of applying it."""
    node, ctx = new_node("n2")
    node.on_message(ctx, "n1", Accept((1, "n1"), 1, (A, B), 0))
    node.on_message(ctx, "n3", Accept((2, "n3"), 3, (C,), 0))
    ctx.clear()
    node.on_message(ctx, "n3", Heartbeat((2, "n3"), 3, 0))
    assert node.commit == 0
    assert ctx.take(CatchUp) == [("n3", CatchUp(1))]
    node.on_message(ctx, "n3", Decide(1, (entry(1, "n1", A), entry(2, "n3", D)), 3))
    assert node.commit == 3
    assert [v for _, v in node.applied] == [A, D, C]
    assert ctx.storage.load().log[1] == entry(2, "n3", D)


def test_3_decided_slots_are_applied_in_order_exactly_once():
    node, ctx = new_node("n2")
    decide = Decide(1, (entry(1, "n1", A), entry(1, "n1", B)), 2)
    node.on_message(ctx, "n1", Decide(2, (entry(1, "n1", B),), 2))
    assert node.commit == 0, "slot 2 cannot be applied before slot 1"
    node.on_message(ctx, "n1", decide)
    node.on_message(ctx, "n1", decide)
    node.on_message(ctx, "n1", Heartbeat((1, "n1"), 2, 0))
    assert node.applied == [(1, A), (2, B)]
    assert node.sm.applied_commands == 2


def _leader_with_decided(n: int, **options):
    node, ctx = new_node("n1", **options)
    make_leader(node, ctx)
    for i in range(n):
        node.submit(ctx, ("put", f"k{i}", i))
        node.on_message(ctx, "n2", Accepted(node.ballot, node.next_slot - 1, 1))
    ctx.clear()
    return node, ctx


def test_catch_up_is_answered_from_the_log():
    node, ctx = _leader_with_decided(5, max_values_per_message=3)
    node.on_message(ctx, "n3", CatchUp(2))
    [(dst, decide)] = ctx.take(Decide)
    assert dst == "n3"
    assert decide.first_slot == 2 and decide.commit == 5
    assert [e.value.command for e in decide.entries] == [("put", f"k{i}", i) for i in (1, 2, 3)]


def test_a_lagging_replica_catches_up_from_a_chunked_snapshot_then_from_the_log():
    """Log truncation: slots up to the snapshot are gone from the leader; a replica that needs
    them gets the snapshot (in chunks), then the decided slots after it."""
    leader, lctx = _leader_with_decided(
        9, snapshot_threshold=4, snapshot_expansion=0, snapshot_chunk_bytes=16
    )
    assert leader.log.snapshot_index == 8
    assert lctx.storage.load().log_start == 9
    follower, fctx = new_node("n3")
    follower.on_message(fctx, "n1", Heartbeat(leader.ballot, leader.commit, 0))
    chunks = 0
    for _ in range(200):
        out = fctx.take()
        if not out:
            break
        for dst, msg in out:
            if dst == "n1" and isinstance(msg, CatchUp):
                leader.on_message(lctx, "n3", msg)
        for dst, msg in lctx.take():
            if dst == "n3":
                chunks += isinstance(msg, SnapshotChunk)
                follower.on_message(fctx, "n1", msg)
    assert chunks > 2
    assert follower.commit == 9
    assert follower.state_digest() == leader.state_digest()
    assert follower.log.snapshot_index == 8
    assert isinstance(fctx.storage.load().snapshot, Snapshot)


# ================================================================== clients


def test_a_follower_redirects_clients_to_the_leader_it_knows():
    node, ctx = new_node("n2")
    node.on_client(ctx, ClientRequest(1, ("put", "k", 1)))
    node.on_message(ctx, "n1", Heartbeat((1, "n1"), 0, 0))
    node.on_client(ctx, ClientRequest(2, ("get", "k")))
    assert [r for _, r in ctx.replies] == [
        {"error": "not_leader", "leader": None},
        {"error": "not_leader", "leader": "n1"},
    ]


def test_the_leader_refuses_work_beyond_max_pending_and_queues_beyond_the_window():
    node, ctx = new_node("n1", window=2, max_pending=3)
    make_leader(node, ctx)
    ctx.clear()
    for i in range(4):
        node.on_client(ctx, ClientRequest(i, ("put", "k", i)))
    assert len(accepts(ctx, "n2")) == 2, "two slots in flight (the window)"
    assert [r["error"] for _, r in ctx.replies] == ["overloaded"]
    assert node.submit(ctx, ("put", "k", 9)).error == "window full"
    node.on_message(ctx, "n2", Accepted(node.ballot, 1, 2))
    assert accepts(ctx, "n2") == {3: Value(("put", "k", 2))}, "the queued command follows"
    assert [r for _, r in ctx.replies[1:]] == [None, None]


def test_a_read_is_answered_after_a_majority_confirmed_the_leader():
    """Read index: record the decided prefix, confirm with a heartbeat round that a majority
    promised nothing higher, then answer from the state machine."""
    node, ctx = _leader_with_decided(1)
    node.on_client(ctx, ClientRequest(7, ("get", "k0")))
    assert ctx.replies == []
    [(_, hb)] = [(d, m) for d, m in ctx.take(Heartbeat) if d == "n2"]
    node.on_message(ctx, "n2", HeartbeatReply(node.ballot, hb.read_seq - 1))
    assert ctx.replies == []
    node.on_message(ctx, "n2", HeartbeatReply(node.ballot, hb.read_seq))
    assert [r for _, r in ctx.replies] == [0]


def test_reads_wait_until_the_adopted_slots_are_decided():
    node, ctx = new_node("n1")
    seen_round(node, ctx, 2)
    make_leader(node, ctx, {"n2": ((1, entry(1, "n2", A)),)})
    ctx.clear()
    node.on_client(ctx, ClientRequest(1, ("get", "k")))
    assert not ctx.take(Heartbeat) and not ctx.replies
    node.on_message(ctx, "n2", Accepted(node.ballot, 1, 1))
    [(_, hb), _] = ctx.take(Heartbeat)
    node.on_message(ctx, "n3", HeartbeatReply(node.ballot, hb.read_seq))
    assert [r for _, r in ctx.replies] == [1]


# ================================================================== the planted bugs


def test_a_forgetful_acceptor_accepts_below_the_promise_it_gave_before_a_restart():
    """acceptor-forgets-promise: after a restart the promise is gone, so a proposal numbered
    below it is accepted - what section 2.3's stable storage exists to prevent."""
    for unsafe, expect in (("", Nack), ("acceptor-forgets-promise", Accepted)):
        node, ctx = new_node("n2", unsafe=unsafe)
        node.on_message(ctx, "n3", Prepare((5, "n3"), 1))
        node, ctx = restart(node, ctx)
        node.on_message(ctx, "n1", Accept((4, "n1"), 1, (A,), 0))
        [(_, reply)] = ctx.take()
        assert isinstance(reply, expect), unsafe


def test_accept_lower_ballot_accepts_below_the_promise():
    node, ctx = new_node("n2", unsafe="accept-lower-ballot")
    node.on_message(ctx, "n3", Prepare((5, "n3"), 1))
    ctx.clear()
    node.on_message(ctx, "n1", Accept((4, "n1"), 1, (A,), 0))
    assert ctx.take() == [("n1", Accepted((4, "n1"), 1, 1))]
    assert node.promised == (5, "n3")


def test_ignore_accepted_values_proposes_no_ops_over_reported_values():
    node, ctx = new_node("n1", unsafe="ignore-accepted-values")
    seen_round(node, ctx, 3)
    make_leader(node, ctx, {"n2": ((1, entry(1, "n2", A)),)})
    assert accepts(ctx) == {1: NOOP_VALUE}


# ================================================================== status


def test_status_has_the_generic_keys():
    node, _ = _leader_with_decided(2)
    st = node.status()
    assert st == {
        "id": "n1",
        "role": "leader",
        "ballot": [1, "n1"],
        "term": 1,
        "leader": "n1",
        "commit_index": 2,
        "last_applied": 2,
        "log_length": 2,
        "snapshot_index": 0,
        "promised": [1, "n1"],
    }
    assert node.leader() == "n1"
    assert node.state_digest()[0] == 2


def test_a_restart_recovers_from_the_snapshot_and_the_slots_after_it():
    node, ctx = _leader_with_decided(9, snapshot_threshold=4, snapshot_expansion=0)
    digest = node.state_digest()
    node, ctx = restart(node, ctx)
    assert node.log.snapshot_index == 8 and node.commit == 9
    assert node.state_digest() == digest
    assert node.applied_commands() == [(9, ("put", "k8", 8))], "only slot 9 is replayed"
    assert node.role is Role.FOLLOWER and node.promised == (1, "n1")


def test_a_replica_acknowledges_accepts_for_slots_it_has_compacted():
    """A slot compacted into a snapshot is decided; a leader that completed phase 1 proposes
    the decided value there (and one that did not cannot gather a majority), so the acceptor
    acknowledges it without storing anything."""
    node, ctx = _leader_with_decided(5, snapshot_threshold=4)
    node.on_message(ctx, "n3", Prepare((7, "n3"), 1))
    decided5 = node.log.get(5)
    assert node.log.start == 5 and decided5 is not None
    node.on_message(ctx, "n3", Accept((7, "n3"), 3, (A, B, decided5.value, C), 5))
    assert ctx.take(Accepted) == [("n3", Accepted((7, "n3"), 3, 4))]
    node.on_message(ctx, "n3", Accept((7, "n3"), 5, (D,), 5))
    assert ctx.take(Accepted) == [], "a decided slot is not acknowledged for another value"
    assert node.log.get(6) == entry(7, "n3", C)


def test_commands_that_cannot_be_encoded_are_refused_and_followers_do_not_submit():
    node, ctx = new_node("n1")
    assert tuple(node.submit(ctx, ("put", "k", 1))) == (-1, 0, False)
    make_leader(node, ctx)
    ctx.clear()
    node.on_client(ctx, ClientRequest(1, ("put", "k", {1, 2})))
    assert ctx.replies[0][1]["error"] == "bad_command"
    assert node.submit(ctx, ("put", "k", {3})).error is not None
    assert not ctx.take(Accept)
