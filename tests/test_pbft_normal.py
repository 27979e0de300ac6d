"""PBFT's normal case (Castro & Liskov 1999, §4.1-§4.2; batching, TOCS 2002 §5.1.4), the
n >= 3f + 1 bound (spec Theorem 3.1) and the checker.

Most tests drive one :class:`PbftNode` through a recording :class:`FakeContext`, playing the
other replicas with messages signed by their (simulated) keys; the others run a checked
:class:`Simulation`."""

from __future__ import annotations

import pytest

from pbft_helpers import (
    FOUR,
    SEVEN,
    Wire,
    client_request,
    correct_digests,
    deliver,
    drive,
    new_node,
    pre_prepare,
    signed,
)
from quorumkit.errors import ConfigError, InvariantViolation
from quorumkit.protocol import ClientRequest
from quorumkit.protocols.pbft import (
    Commit,
    Executed,
    PbftChecker,
    PbftConfig,
    PbftNode,
    Prepare,
    PrePrepare,
    Reply,
    Request,
    batch_digest,
)
from quorumkit.sim.core import Simulation

OP = ("put", "k", "v")


def prepared_slot(node: PbftNode, seq: int = 1) -> bool:
    s = node.log.get(seq)
    return s is not None and s.prepared


# ------------------------------------------------------------------ Theorem 3.1


def test_n3_with_f1_is_refused_stating_theorem_3_1() -> None:
    with pytest.raises(ConfigError) as info:
        PbftNode("n1", ("n1", "n2", "n3"), PbftConfig(f=1))
    text = str(info.value)
    assert "Theorem 3.1" in text and "n >= 3f + 1 = 4" in text
    assert "2(n - f) - n = n - 2f" in text and "n - 2f > f" in text
    with pytest.raises(ConfigError, match=r"Theorem 3\.1"):
        Simulation("pbft", nodes=6, f=2)


def test_allow_n_3f_lifts_the_bound_and_quorums_shrink_to_n_minus_f() -> None:
    node = PbftNode("n1", ("n1", "n2", "n3"), PbftConfig.from_options(f=1, unsafe="allow-n-3f"))
    assert node.f == 1 and node.quorum == 2


def test_default_f_is_the_largest_the_bound_allows() -> None:
    for n, f in ((1, 0), (3, 0), (4, 1), (6, 1), (7, 2), (10, 3)):
        node = PbftNode("n1", tuple(f"n{i}" for i in range(1, n + 1)))
        assert (node.f, node.quorum) == (f, n - f)
        assert PbftNode.client_replies_needed(n, None) == f + 1


def test_options_are_validated() -> None:
    with pytest.raises(ConfigError, match="unknown PBFT unsafe"):
        PbftConfig.from_options(unsafe="nope")
    with pytest.raises(ConfigError, match="unknown PBFT option"):
        PbftConfig.from_options(batch=3)
    with pytest.raises(ConfigError, match="must be int"):
        PbftConfig.from_options(checkpoint_interval="8")
    with pytest.raises(ConfigError, match="watermark_window"):
        PbftConfig.from_options(checkpoint_interval=16, watermark_window=8)
    assert PbftConfig.from_options(checkpoint_interval=16).window == 32


def test_byzantine_behaviours_are_named_and_unknown_ones_refused() -> None:
    assert "equivocate" in PbftNode.byzantine_behaviours
    with pytest.raises(ConfigError, match="unknown byzantine behaviour"):
        PbftNode.byzantine_class("gremlin")


# ------------------------------------------------------------------ §4.2 message by message


def test_the_primary_of_view_v_is_replica_v_mod_n() -> None:
    node, _ = new_node("n2")
    assert [node.primary_of(v) for v in range(6)] == ["n1", "n2", "n3", "n4", "n1", "n2"]
    assert node.leader() == "n1" and node.status()["role"] == "backup"


def test_a_backup_accepts_a_pre_prepare_and_multicasts_a_prepare_after_persisting_it() -> None:
    node, ctx = new_node("n2")
    req = client_request("c1", 1, OP)
    pp = pre_prepare(0, 1, [req], "n1")
    deliver(node, ctx, "n1", pp)
    prepares = ctx.take(Prepare)
    assert {d for d, _ in prepares} == {"n1", "n3", "n4"}
    p = prepares[0][1]
    assert (p.view, p.seq, p.digest, p.sender) == (0, 1, pp.digest, "n2")
    stored = ctx.storage.load().hard
    assert any(getattr(v, "pre_prepare", None) == pp for v in stored.values())
    assert node.pending == {"c1": req}  # the backup's view-change timer now runs
    assert "view_change" in ctx.timers


def test_prepared_needs_2f_matching_prepares_from_distinct_backups() -> None:
    node, ctx = new_node("n2")  # a backup: its own prepare counts, it needs one more
    pp = pre_prepare(0, 1, [client_request("c1", 1, OP)], "n1")
    deliver(node, ctx, "n1", pp)
    assert not prepared_slot(node)
    # the same replica twice counts once
    p3 = signed(Prepare(0, 1, pp.digest, "n3"))
    other_digest = signed(Prepare(0, 1, b"x" * 32, "n4"))
    deliver(node, ctx, "n4", other_digest)
    assert not prepared_slot(node)
    # a prepare "from the primary" does not count (the primary sends none)
    deliver(node, ctx, "n1", signed(Prepare(0, 1, pp.digest, "n1")))
    assert not prepared_slot(node) and node.dropped["prepare_from_primary"] == 1
    deliver(node, ctx, "n3", p3)
    assert prepared_slot(node)
    commits = ctx.sent_of(Commit)
    assert len(commits) == 1 and commits[0].digest == pp.digest


def test_duplicate_prepares_from_one_replica_do_not_prepare_the_primary() -> None:
    node, ctx = new_node("n1")  # the primary needs 2f = 2 prepares from backups
    ctx.take()
    req = client_request("c1", 1, OP)
    node.on_client(ctx, ClientRequest(1, req))
    node.on_flush(ctx)
    pp = ctx.sent_of(PrePrepare)[0]
    p2 = signed(Prepare(0, 1, pp.digest, "n2"))
    for _ in range(3):
        deliver(node, ctx, "n2", p2)
    assert not prepared_slot(node)
    assert node.verifications <= 2  # the duplicates were not even verified
    deliver(node, ctx, "n3", signed(Prepare(0, 1, pp.digest, "n3")))
    assert prepared_slot(node)


def test_committed_local_needs_2f_plus_1_commits_then_executes_and_answers() -> None:
    node, ctx = new_node("n2")
    req = PbftNode.client_command(None, 1, 1, ("put", "k", "v1"))
    node.on_client(ctx, ClientRequest(7, req))
    assert ctx.take(Request) == [("n1", req)]  # relayed to the primary
    pp = pre_prepare(0, 1, [req], "n1")
    deliver(node, ctx, "n1", pp)
    deliver(node, ctx, "n3", signed(Prepare(0, 1, pp.digest, "n3")))
    assert prepared_slot(node)
    deliver(node, ctx, "n3", signed(Commit(0, 1, pp.digest, "n3")))
    deliver(node, ctx, "n3", signed(Commit(0, 1, pp.digest, "n3")))
    assert node.last_executed == 0  # own + n3: 2 < 2f + 1
    deliver(node, ctx, "n4", signed(Commit(0, 1, pp.digest, "n4")))
    assert node.last_executed == 1
    assert node.sm.data == {"k": "v1"}
    assert ctx.replies == [(ClientRequest(7, req), None)]
    # §4.1: a repeated timestamp gets the cached reply, without executing again
    node.on_client(ctx, ClientRequest(8, req))
    assert ctx.replies[-1] == (ClientRequest(8, req), None)
    assert node.sm.applied_commands == 1


def test_execution_follows_sequence_order() -> None:
    w = Wire()
    first = client_request("c1", 1, ("put", "a", 1))
    second = client_request("c2", 1, ("put", "a", 2))
    for seq, req in ((2, second), (1, first)):  # seq 2 commits before seq 1 is even proposed
        pp = pre_prepare(0, seq, [req], "n1")
        for m in ("n2", "n3", "n4"):
            w.nodes[m].on_message(w.ctxs[m], "n1", pp)
        w.run()
        if seq == 2:
            assert all(w.nodes[m].log[2].committed is not None for m in ("n2", "n3", "n4"))
            assert all(w.nodes[m].last_executed == 0 for m in ("n2", "n3", "n4"))
    assert all(w.nodes[m].last_executed == 2 for m in ("n2", "n3", "n4"))
    assert w.nodes["n2"].sm.data == {"a": 2}


def test_a_pre_prepare_outside_the_watermarks_is_ignored() -> None:
    node, ctx = new_node("n2", checkpoint_interval=4)  # h = 0, H = 8
    req = client_request("c1", 1, OP)
    deliver(node, ctx, "n1", pre_prepare(0, 9, [req], "n1"))
    deliver(node, ctx, "n1", pre_prepare(0, 0, [req], "n1"))
    assert node.dropped == {"outside_watermarks": 2}
    assert not ctx.sent_of(Prepare)
    deliver(node, ctx, "n1", pre_prepare(0, 8, [req], "n1"))
    assert len(ctx.sent_of(Prepare)) == 1


def test_pre_prepares_from_a_backup_or_with_a_wrong_digest_are_dropped() -> None:
    node, ctx = new_node("n2")
    req = client_request("c1", 1, OP)
    deliver(node, ctx, "n3", pre_prepare(0, 1, [req], "n3"))
    bad = signed(PrePrepare(0, 1, b"z" * 32, (req,), "n1"))
    deliver(node, ctx, "n1", bad)
    assert node.dropped == {"not_primary": 1, "bad_digest": 1}
    assert not ctx.sent_of(Prepare)


def test_a_second_pre_prepare_for_the_same_view_and_number_is_refused() -> None:
    node, ctx = new_node("n2")
    first = pre_prepare(0, 1, [client_request("c1", 1, OP)], "n1")
    second = pre_prepare(0, 1, [client_request("c2", 1, OP)], "n1")
    deliver(node, ctx, "n1", first)
    deliver(node, ctx, "n1", second)
    assert node.log[1].pre_prepare == first
    assert node.dropped == {"conflicting_pre_prepare": 1}
    assert len(ctx.sent_of(Prepare)) == 1


def test_the_primary_batches_the_requests_of_one_driver_batch() -> None:
    node, ctx = new_node("n1", max_batch=3, max_inflight=1)
    ctx.take()
    for i in range(7):
        node.on_client(ctx, ClientRequest(i, client_request(f"c{i}", 1, ("put", i, i))))
    node.on_flush(ctx)
    batches = ctx.sent_of(PrePrepare)
    assert [len(b.requests) for b in batches] == [3]  # one in flight: the rest waits
    assert all(b.digest == batch_digest(b.requests) for b in batches)
    assert len(node.queue) == 4


def test_replicas_relay_requests_to_the_primary_and_resend_cached_replies() -> None:
    w = Wire()
    req = client_request("n3/0", 1, OP)  # proxy lane 0 of replica n3
    w.nodes["n2"].on_message(w.ctxs["n2"], "n3", req)
    assert w.ctxs["n2"].take(Request) == [("n1", req)]
    w.nodes["n1"].on_message(w.ctxs["n1"], "n2", req)
    w.flush("n1")
    w.run()
    assert all(w.nodes[m].last_executed == 1 for m in FOUR)
    w.ctxs["n2"].sent.clear()
    w.nodes["n2"].on_message(w.ctxs["n2"], "n3", req)  # the client retransmits
    replies = w.ctxs["n2"].take(Reply)
    assert [(d, r.timestamp, r.result) for d, r in replies] == [("n3", 1, None)]


# ------------------------------------------------------------------ clusters


def test_proxy_requests_complete_with_f_plus_1_matching_replies_n4() -> None:
    sim = Simulation("pbft", nodes=4, seed=1, check_invariants=True)
    rid = sim.client_request("n3", ("put", "x", "1"))
    sim.run(0.5)
    assert sim.replies[rid] == ("n3", None)
    rid2 = sim.client_request("n2", ("append", "x", "2"))
    sim.run(0.5)
    assert sim.replies[rid2] == ("n2", None)
    rid3 = sim.client_request("n4", ("get", "x"))  # reads are ordered like writes
    sim.run(0.5)
    assert sim.replies[rid3] == ("n4", "12")
    assert len(correct_digests(sim)) == 1


def test_proxy_waits_for_f_plus_1_matching_replies() -> None:
    w = Wire()
    creq = w.client("n3", ("put", "k", "v"))
    # only the proxy's own result and nobody else's: not enough
    w.run(drop=lambda src, dst, msg: isinstance(msg, Reply))
    assert w.nodes["n3"].last_executed == 1
    assert w.replies("n3") == []
    lane = w.nodes["n3"].lanes[0]
    assert lane is not None and list(lane.votes) == ["n3"]
    reply = signed(Reply(0, lane.request.timestamp, lane.request.client, None, "n2"))
    deliver(w.nodes["n3"], w.ctxs["n3"], "n2", reply)
    assert w.ctxs["n3"].replies == [(creq, None)]


def test_a_wrong_reply_from_one_replica_does_not_fool_the_proxy() -> None:
    w = Wire()
    w.client("n3", ("put", "k", "v"))
    w.run(drop=lambda src, dst, msg: isinstance(msg, Reply))
    lane = w.nodes["n3"].lanes[0]
    assert lane is not None
    liar = signed(Reply(0, lane.request.timestamp, lane.request.client, "forged", "n4"))
    deliver(w.nodes["n3"], w.ctxs["n3"], "n4", liar)
    assert w.replies("n3") == []
    honest = signed(Reply(0, lane.request.timestamp, lane.request.client, None, "n1"))
    deliver(w.nodes["n3"], w.ctxs["n3"], "n1", honest)
    assert w.replies("n3") == [None]


def test_true_clients_get_one_answer_per_replica_and_exactly_once_execution() -> None:
    sim = Simulation("pbft", nodes=4, seed=2, check_invariants=True)
    need = PbftNode.client_replies_needed(4, sim.config)
    assert need == 2
    answers: dict[str, object] = {}
    cmd = PbftNode.client_command(sim.config, 7, 1, ("append", "log", "a"))
    for n in sim.nodes:
        sim.client_request(n, cmd, lambda node, result: answers.__setitem__(node, result))
    sim.run(0.5)
    assert answers == {n: None for n in sim.nodes}
    # a retry of the same timestamp gets the cached reply, and does not append twice
    again: list[object] = []
    for n in sim.nodes:
        sim.client_request(n, cmd, lambda node, result: again.append(result))
    sim.run(0.5)
    assert again == [None] * 4
    read = PbftNode.client_command(sim.config, 7, 2, ("get", "log"))
    got: list[object] = []
    for n in sim.nodes:
        sim.client_request(n, read, lambda node, result: got.append(result))
    sim.run(0.5)
    assert got == ["a"] * 4


def test_a_session_command_runs_at_most_once_through_two_proxies() -> None:
    sim = Simulation("pbft", nodes=4, seed=3, check_invariants=True)
    cmd = ("session", "alice", 1, ("append", "k", "x"))
    a = sim.client_request("n2", cmd)
    b = sim.client_request("n4", cmd)
    sim.run(0.5)
    assert sim.replies[a][1] is None and sim.replies[b][1] is None
    assert sim.protocol("n1").sm.data == {"k": "x"}  # type: ignore[union-attr]


def test_seven_replicas_tolerate_two_faults() -> None:
    sim = Simulation("pbft", nodes=7, seed=4, check_invariants=True)
    node = sim.protocol("n1")
    assert isinstance(node, PbftNode) and (node.f, node.quorum) == (2, 5)
    sim.crash("n6")
    sim.crash("n7")
    done = drive(sim, 30, clients=3, nodes=SEVEN[:5])
    assert sim.run_until(lambda: len(done) == 30, 5)
    assert all(r is None for _, r in done)
    assert len(correct_digests(sim)) == 1


def test_batching_under_load_and_messages_per_request() -> None:
    sim = Simulation("pbft", nodes=4, seed=5, trace="off", check_invariants=True)
    done = drive(sim, 300, clients=32)
    assert sim.run_until(lambda: len(done) == 300, 10)
    primary = sim.protocol("n1")
    assert isinstance(primary, PbftNode)
    sizes = [len(e.requests or ()) for e in primary.executed]
    assert max(sizes) > 1 and max(sizes) <= primary.cfg.max_batch
    assert sum(sizes) == 300
    # request + 3 replies + (pre-prepare 3 + prepares 9 + commits 12) / batch, plus a few
    # status and checkpoint messages
    assert sim.message_count() / 300 < 14


def test_submit_orders_at_the_primary_only() -> None:
    sim = Simulation("pbft", nodes=4, seed=6, check_invariants=True)
    seq, view, is_primary = sim.submit("n1", ("put", "s", 1))
    assert (seq, view, is_primary) == (1, 0, True)
    assert tuple(sim.submit("n2", ("put", "s", 2)))[2] is False
    sim.run(0.5)
    assert sim.applied("n3") == [(1, ("put", "s", 1))]
    assert sim.protocol("n4").local_read(("get", "s")) == 1  # type: ignore[union-attr]


def test_status_has_the_generic_keys() -> None:
    sim = Simulation("pbft", nodes=4, seed=7)
    st = sim.status("n1")
    for key in (
        "id",
        "role",
        "view",
        "term",
        "leader",
        "commit_index",
        "last_executed",
        "last_applied",
        "low_watermark",
        "stable_checkpoint",
        "dropped",
        "verifications",
    ):
        assert key in st
    assert st["role"] == "leader" and sim.leader() == "n1"
    assert sim.stats["leader_changes"] == 1


def test_same_seed_same_trace() -> None:
    hashes = []
    for _ in range(2):
        sim = Simulation("pbft", nodes=4, seed=11)
        done = drive(sim, 20, clients=4, name="same")
        sim.run_until(lambda done=done: len(done) == 20, 5)
        hashes.append(sim.trace_hash())
    assert hashes[0] == hashes[1]


# ------------------------------------------------------------------ the checker


def test_checker_catches_a_planted_agreement_violation() -> None:
    sim = Simulation("pbft", nodes=4, seed=8, check_invariants=True)
    done = drive(sim, 4, clients=1)
    sim.run_until(lambda: len(done) == 4, 5)
    node = sim.protocol("n3")
    assert isinstance(node, PbftNode)
    other = client_request("c9", 1, ("put", "evil", 1))
    node.executed.append(Executed(node.last_executed + 1, batch_digest((other,)), (other,)))
    honest = sim.protocol("n2")
    assert isinstance(honest, PbftNode)
    honest.executed.append(Executed(node.last_executed + 1, batch_digest(()), ()))
    with pytest.raises(InvariantViolation, match="agreement"):
        sim.check_invariants()


def test_checker_catches_a_gap_in_execution_and_inconsistent_prepared_certificates() -> None:
    node, _ = new_node("n2")
    node.executed.append(Executed(2, batch_digest(()), ()))
    with pytest.raises(InvariantViolation, match="execution prefix"):
        PbftChecker().check({"n2": node})
    a, _ = new_node("n2")
    b, _ = new_node("n3")
    a.prepared_log.append((0, 1, b"a" * 32))
    b.prepared_log.append((0, 1, b"b" * 32))
    with pytest.raises(InvariantViolation, match="prepared certificates consistent"):
        PbftChecker().check({"n2": a, "n3": b})


def test_checker_skips_byzantine_replicas() -> None:
    a, _ = new_node("n2")
    b, _ = new_node("n3")
    a.committed_log.append((0, 1, b"a" * 32))
    b.committed_log.append((0, 1, b"b" * 32))
    b.is_byzantine = True
    PbftChecker().check({"n2": a, "n3": b})
