"""PBFT against its byzantine behaviours (issue 7: "with n = 3f + 1 and f byzantine nodes of each
behaviour, every check holds").

* cluster level: every behaviour, f = 1 (n = 4) and f = 2 (n = 7), a few seeds each with the
  nemeses partition, loss and crash: the run's checks all hold (PBFT invariants, progress after
  healing, convergence of the correct replicas, linearizable client history) and every
  byzantine replica really lied. ``benchmarks/pbft_campaign.py`` runs the same over 200 seeds.
* evidence: the lies of equivocate, wrong-digest, forge, replay, wrong-reply and the others
  reached the correct replicas (or the clients) and were dropped, outvoted or ignored there.
* protocol level: what each behaviour does to the messages of one replica, with a recording
  context (no simulator).
* core bugs found by these behaviours: regression tests once fixed, strict xfails while open.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from pbft_helpers import FakeContext, Wire, client_request
from quorumkit.protocol import ClientRequest
from quorumkit.protocols.pbft import (
    Checkpoint,
    Commit,
    NewView,
    PbftConfig,
    PbftNode,
    Prepare,
    PrePrepare,
    Reply,
    Request,
    StateTransfer,
    ViewChange,
    batch_digest,
)
from quorumkit.protocols.pbft.byzantine import (
    BEHAVIOURS,
    FORGED_VALUE,
    LIE_MARK,
    LIES_KEY,
    ByzantineNode,
    Twins,
    wrong_result,
)
from quorumkit.protocols.pbft.crypto import signing_bytes
from quorumkit.sim.core import Simulation
from quorumkit.sim.run import RunOptions, RunResult, run

NEMESES = ("partition", "loss", "crash")
#: seeds per f in CI (the campaign runs 200); each run simulates 3 s of faults
SEEDS = {1: (1, 2, 3, 4), 2: (1, 2, 3)}
K = 16  # checkpoint interval: several checkpoints (and bad ones) per run


def options(behaviour: str, f: int, seed: int, **changes: Any) -> RunOptions:
    base = RunOptions(
        protocol="pbft",
        nodes=3 * f + 1,
        byzantine=f,
        behaviour=behaviour,
        seed=seed,
        duration=3.0,
        nemesis=NEMESES,
        protocol_options=(("checkpoint_interval", K),),
    )
    return dataclasses.replace(base, **changes)


def byzantine_ids(r: RunResult) -> list[str]:
    return list(r.options.byzantine_nodes())


def correct_ids(r: RunResult) -> list[str]:
    return [n for n in r.sim.nodes if n not in r.options.byzantine_nodes()]


def correct_drops(r: RunResult) -> dict[str, int]:
    """What the correct replicas dropped (their current incarnations), summed."""
    out: dict[str, int] = {}
    for n in correct_ids(r):
        for reason, count in r.summary["status"][n].get("dropped", {}).items():
            out[reason] = out.get(reason, 0) + count
    return out


def lies_of(r: RunResult, node: str) -> int:
    """A byzantine replica's lies: from its status, or from its storage if the run ended with
    it crashed (the counter is kept there)."""
    st = r.summary["status"][node]
    if "lies" in st:
        return int(st["lies"])
    return int(r.sim.storage(node).load().hard.get(LIES_KEY, 0))


def accepted_outputs(r: RunResult) -> list[Any]:
    return [rec.output for rec in r.pool.records if rec.status == "ok"]


def contains(value: Any, needle: str) -> bool:
    if isinstance(value, str):
        return needle in value
    if isinstance(value, bytes):
        return needle.encode() in value
    if isinstance(value, dict):
        return any(contains(k, needle) or contains(v, needle) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(contains(v, needle) for v in value)
    return False


# ------------------------------------------------------------------ the registry


def test_every_behaviour_is_a_byzantine_pbft_node() -> None:
    assert set(BEHAVIOURS) == set(PbftNode.byzantine_behaviours)
    for name, cls in BEHAVIOURS.items():
        assert PbftNode.byzantine_class(name) is cls
        assert issubclass(cls, PbftNode) and cls.is_byzantine
        node = cls("n1", ("n1", "n2", "n3", "n4"), PbftConfig())
        assert node.lies == 0 and node.is_byzantine
        assert isinstance(node, ByzantineNode)
    assert not PbftNode.is_byzantine


# ------------------------------------------------------------------ every check holds


CASES = [
    pytest.param(b, f, seed, id=f"{b}-f{f}-seed{seed}")
    for f, seeds in SEEDS.items()
    for b in PbftNode.byzantine_behaviours
    for seed in seeds
]


@pytest.mark.parametrize(("behaviour", "f", "seed"), CASES)
def test_every_check_holds_with_f_byzantine_replicas(behaviour: str, f: int, seed: int) -> None:
    r = run(options(behaviour, f, seed))
    s = r.summary
    assert r.ok, s["violations"]
    assert all(s["invariants"].values()), s["invariants"]
    assert s["linearizable"] is True and s["converged"] is True
    assert s["progress_after_heal"] is True and s["ops"]["ok"] > 0
    # a behaviour that does nothing proves nothing: each byzantine replica lied
    for n in byzantine_ids(r):
        assert r.sim.byzantine[n] == behaviour
        assert lies_of(r, n) > 0, f"{n} ({behaviour}) never misbehaved"


@pytest.mark.parametrize("behaviour", PbftNode.byzantine_behaviours)
def test_every_check_holds_with_mac_authenticators(behaviour: str) -> None:
    opts = options(behaviour, 1, 1)
    r = run(dataclasses.replace(opts, protocol_options=(*opts.protocol_options, ("auth", "mac"))))
    assert r.ok, r.summary["violations"]
    assert r.summary["status"]["n1"]["lies"] > 0


# ------------------------------------------------------------------ the lies were refused
# (no crash nemesis here: the counters of the correct replicas' current incarnations are what
# the status shows)


def evidence_run(behaviour: str, f: int = 1, seed: int = 1, **changes: Any) -> RunResult:
    r = run(options(behaviour, f, seed, nemesis=("partition", "loss"), **changes))
    assert r.ok, r.summary["violations"]
    for n in byzantine_ids(r):
        assert lies_of(r, n) > 0
    return r


@pytest.mark.parametrize("f", [1, 2])
def test_equivocation_is_dropped_as_conflicting_and_never_splits_the_correct(f: int) -> None:
    r = evidence_run("equivocate", f)
    assert correct_drops(r).get("conflicting_pre_prepare", 0) > 0
    # one digest per sequence number among the correct replicas (agreement, checked after
    # every event), and they all reached the same state
    assert r.summary["invariants"]["agreement"] and r.summary["converged"]


@pytest.mark.parametrize("f", [1, 2])
def test_forged_senders_requests_and_certificates_are_dropped(f: int) -> None:
    r = evidence_run("forge", f)
    drops = correct_drops(r)
    assert drops.get("wrong_sender", 0) > 0  # claims another replica as sender
    assert drops.get("bad_signature", 0) > 0  # a request claiming a client
    assert drops.get("bad_view_change", 0) + drops.get("bad_request", 0) > 0
    # nothing it forged took effect: no client read it, no correct replica stores it
    assert not any(contains(out, FORGED_VALUE) for out in accepted_outputs(r))
    for n in correct_ids(r):
        proto: Any = r.sim.protocol(n)
        assert not contains(list(proto.sm.data.values()), FORGED_VALUE)


@pytest.mark.parametrize("f", [1, 2])
def test_clients_never_accept_a_wrong_reply(f: int) -> None:
    r = evidence_run("wrong-reply", f, record=True)
    liars = set(byzantine_ids(r))
    told = [ev for ev in r.sim.events if ev[1] == "reply" and ev[2] in liars]
    assert told, "the liars answered no client"
    assert sum(1 for ev in told if contains(ev[4], LIE_MARK)) > 0
    for n in liars:
        assert r.summary["status"][n]["lie_kinds"].get("wrong-reply", 0) > 0
    outputs = accepted_outputs(r)
    assert len(outputs) > 20
    assert not any(contains(out, LIE_MARK) for out in outputs)
    assert r.summary["linearizable"] is True  # flipped booleans or false "ok"s neither


def test_wrong_digests_are_dropped() -> None:
    r = evidence_run("wrong-digest")
    assert correct_drops(r).get("bad_digest", 0) > 0
    assert all(r.summary["status"][n]["view"] >= 1 for n in correct_ids(r))


def test_replayed_messages_of_others_are_refused_and_requests_run_once() -> None:
    r = evidence_run("replay")
    assert correct_drops(r).get("wrong_sender", 0) > 0
    kinds = r.summary["status"]["n1"]["lie_kinds"]
    assert kinds.get("replay", 0) > 0
    assert r.summary["linearizable"] is True  # replayed requests were not executed twice


def test_a_silent_primary_sends_nothing_and_is_replaced() -> None:
    r = evidence_run("silent", record=True)
    # (deliver: time, kind, dst, src, ...; drop: time, kind, src, dst, ...)
    sent_by_n1 = [
        ev
        for ev in r.sim.events
        if (ev[1] == "deliver" and ev[3] == "n1") or (ev[1] == "drop" and ev[2] == "n1")
    ]
    replies_by_n1 = [ev for ev in r.sim.events if ev[1] == "reply" and ev[2] == "n1"]
    assert sent_by_n1 == [] and replies_by_n1 == []
    assert all(r.summary["status"][n]["view"] >= 1 for n in correct_ids(r))


def test_a_stale_replica_stays_behind_while_the_others_change_views() -> None:
    r = evidence_run("stale-view", f=2)
    stale = max(r.summary["status"][n]["view"] for n in byzantine_ids(r))
    assert all(r.summary["status"][n]["view"] > stale for n in correct_ids(r))


def test_bad_checkpoints_do_not_stop_checkpoints_from_becoming_stable() -> None:
    r = evidence_run("bad-checkpoint", f=2)
    assert all(r.summary["status"][n]["stable_checkpoint"] >= K for n in correct_ids(r))
    assert r.summary["invariants"]["checkpoint agreement"]


def test_a_delaying_replica_sends_only_when_its_hold_timer_fires() -> None:
    r = evidence_run("delay", record=True)
    events = r.sim.events
    fired = {ev[0] for ev in events if ev[1] == "timer" and ev[2] == "n1" and ev[3] == "byz:delay"}
    sent_at = [ev[5] for ev in events if ev[1] == "deliver" and ev[3] == "n1"]
    sent_at += [ev[0] for ev in events if ev[1] == "drop" and ev[2] == "n1"]
    sent_at += [ev[0] for ev in events if ev[1] == "reply" and ev[2] == "n1"]
    assert fired and len(sent_at) > 100
    assert all(t in fired for t in sent_at)  # nothing leaves n1 but from its hold queue
    assert r.summary["status"]["n1"]["lie_kinds"].get("delay", 0) > 0


def test_twins_sign_conflicting_messages_with_one_key() -> None:
    r = evidence_run("twins", record=True)
    faces: dict[tuple[int, int], set[bytes]] = {}
    for ev in r.sim.events:
        if ev[1] == "deliver" and ev[3] == "n1" and isinstance(ev[4], PrePrepare):
            faces.setdefault((ev[4].view, ev[4].seq), set()).add(ev[4].digest)
    assert any(len(ds) > 1 for ds in faces.values())  # two pre-prepares, both signed by n1


# ------------------------------------------------------------------ protocol level

FOUR = ("n1", "n2", "n3", "n4")


def byz(behaviour: str, node_id: str = "n1", **options: Any) -> tuple[Any, FakeContext]:
    node = BEHAVIOURS[behaviour](node_id, FOUR, PbftConfig.from_options(**options))
    ctx = FakeContext(node_id, FOUR)
    node.on_start(ctx)
    return node, ctx


def verifies(msg: Any) -> bool:
    checker = PbftNode("n4", FOUR)
    return checker.keyring.verify(msg.sender, signing_bytes(msg), msg.signature)


def order_requests(node: Any, ctx: FakeContext, *reqs: Request) -> None:
    for i, req in enumerate(reqs):
        node.on_client(ctx, ClientRequest(i + 1, req))
    if node.needs_flush:
        node.on_flush(ctx)


def test_an_equivocating_primary_shows_each_side_its_own_batch_first() -> None:
    node, ctx = byz("equivocate")
    a, b = client_request("c1", 1, ("put", "x", "1")), client_request("c2", 1, ("put", "y", "2"))
    order_requests(node, ctx, a, b)
    first: dict[str, PrePrepare] = {}
    for dst, msg in ctx.sent:
        if isinstance(msg, PrePrepare):
            first.setdefault(dst, msg)
    assert set(first) == {"n2", "n3", "n4"}
    assert first["n2"].digest == first["n3"].digest != first["n4"].digest
    assert first["n2"].seq == first["n4"].seq and first["n2"].view == first["n4"].view
    for pp in first.values():
        assert verifies(pp) and batch_digest(pp.requests) == pp.digest
        assert {(r.client, r.timestamp) for r in pp.requests} <= {("c1", 1), ("c2", 1)}
    commits = {dst: m.digest for dst, m in ctx.sent if isinstance(m, Commit)}
    assert commits == {"n2": first["n2"].digest, "n3": first["n2"].digest, "n4": first["n4"].digest}
    assert node.lies == 1 and ctx.traces[-1][0] == "lie"
    assert ctx.storage.load().hard[LIES_KEY] == 1


def test_an_equivocating_backup_tells_its_sides_different_digests() -> None:
    node, ctx = byz("equivocate", node_id="n2")
    req = client_request("c1", 1, ("put", "x", "1"))
    pp = PbftNode("n1", FOUR).sign(PrePrepare(0, 1, batch_digest((req,)), (req,), "n1"))
    node.on_message(ctx, "n1", pp)
    prepares = {dst: m for dst, m in ctx.sent if isinstance(m, Prepare)}
    assert set(prepares) == {"n1", "n3", "n4"}  # sides: {n1, n3} and {n4}
    assert prepares["n1"].digest == prepares["n3"].digest == pp.digest
    assert prepares["n4"].digest != pp.digest and verifies(prepares["n4"])


def test_wrong_digests_are_signed_by_their_sender_and_match_no_batch() -> None:
    node, ctx = byz("wrong-digest")
    order_requests(node, ctx, client_request("c1", 1, ("put", "x", "1")))
    pps = [m for _, m in ctx.sent if isinstance(m, PrePrepare)]
    assert pps and all(verifies(p) and batch_digest(p.requests) != p.digest for p in pps)


def test_forge_claims_other_replicas_and_clients_without_their_keys() -> None:
    node, ctx = byz("forge", node_id="n2")
    node.on_timer(ctx, "status")
    claimed = [m for _, m in ctx.sent if not isinstance(m, Request) and m.sender != "n2"]
    assert claimed and not any(verifies(m) for m in claimed)
    forged = [m for _, m in ctx.sent if isinstance(m, Request)]
    assert forged and forged[0].client == "c1" and not verifies(forged[0])
    # a correct replica drops both
    correct = PbftNode("n3", FOUR)
    cctx = FakeContext("n3", FOUR)
    correct.on_start(cctx)
    for m in claimed + forged:
        correct.on_message(cctx, "n2", m)
    assert correct.dropped.get("wrong_sender", 0) == len(claimed)
    assert correct.dropped.get("bad_signature", 0) == len(forged)


def test_a_forged_prepared_certificate_makes_the_view_change_invalid() -> None:
    node, ctx = byz("forge", node_id="n2")
    node.on_timer(ctx, "view_change")  # (no pending request: it starts one anyway)
    vcs = [m for dst, m in ctx.sent if isinstance(m, ViewChange) and m.sender == "n2"]
    assert vcs and vcs[0].prepared and verifies(vcs[0])
    correct = PbftNode("n3", FOUR)
    cctx = FakeContext("n3", FOUR)
    correct.on_start(cctx)
    correct.on_message(cctx, "n2", vcs[0])
    assert correct.dropped.get("bad_view_change", 0) == 1 and "n2" not in correct.vc_latest


def test_bad_checkpoints_carry_wrong_digests_and_far_ahead_numbers() -> None:
    node, ctx = byz("bad-checkpoint", checkpoint_interval=4)
    ckpt = node.sign(Checkpoint(4, b"\x01" * 32, "n1"))
    node.emit(ctx, ("n2",), ckpt)
    sent = [m for _, m in ctx.sent if isinstance(m, Checkpoint)]
    assert len(sent) == 2 and node.lies == 1
    assert sent[0].seq == 4 and sent[0].state_digest != ckpt.state_digest and verifies(sent[0])
    assert sent[1].seq > 4 + node.L and sent[1].seq % 4 == 0 and verifies(sent[1])


def test_a_corrupt_state_transfer_is_dropped() -> None:
    node, ctx = byz("bad-checkpoint")
    st = node.sign(StateTransfer(16, b"state", (), None, (), "n1"))
    node.emit(ctx, ("n2",), st)
    (out,) = [m for _, m in ctx.sent if isinstance(m, StateTransfer)]
    assert out.state != st.state and verifies(out)


def test_wrong_replies_to_clients_and_to_proxies() -> None:
    node, ctx = byz("wrong-reply")
    node.answer(ctx, ClientRequest(1, "x"), "v")
    node.answer(ctx, ClientRequest(2, "x"), None)
    node.answer(ctx, ClientRequest(3, "x"), True)
    node.answer(ctx, ClientRequest(4, "x"), {"error": "stale_request"})
    assert [r for _, r in ctx.replies] == ["v" + LIE_MARK, LIE_MARK, False, None]
    node.emit(ctx, ("n2",), node.sign(Reply(0, 1, "n2/0", "v", "n1")))
    (rep,) = [m for _, m in ctx.sent if isinstance(m, Reply)]
    assert rep.result == wrong_result("v") and verifies(rep)
    assert node.lies == 5


def test_delay_holds_messages_until_its_timer_fires() -> None:
    node, ctx = byz("delay")
    ctx.sent.clear()
    node.on_timer(ctx, "status")
    assert ctx.sent == [] and "byz:delay" in ctx.timers
    hold = ctx.timers["byz:delay"]
    assert 0.1 - 1e-9 <= hold <= 0.4 + 1e-9  # a third to four thirds of T = 0.3 s
    ctx.clock += hold
    node.on_timer(ctx, "byz:delay")
    assert len(ctx.sent) == 3 and node.lies == 1


def test_stale_view_refuses_view_changes() -> None:
    node, ctx = byz("stale-view", node_id="n2")
    vc = PbftNode("n3", FOUR).sign(ViewChange(1, 0, (), (), "n3"))
    vc4 = PbftNode("n4", FOUR).sign(ViewChange(1, 0, (), (), "n4"))
    node.on_message(ctx, "n3", vc)
    node.on_message(ctx, "n4", vc4)  # f + 1 for view 1: a correct replica would join
    node.on_timer(ctx, "view_change")
    assert node.view == 0 and node.active and node.lies == 3


def test_replay_resends_old_messages_on_its_timer() -> None:
    node, ctx = byz("replay")
    old = PbftNode("n3", FOUR).sign(Prepare(0, 1, b"d" * 32, "n3"))
    node.on_message(ctx, "n3", old)
    ctx.sent.clear()
    node.on_timer(ctx, "byz:replay")
    assert ctx.sent and all(m is old for _, m in ctx.sent)
    assert "byz:replay" in ctx.timers and node.lies == 2


def test_twins_split_peers_clients_timers_and_storage() -> None:
    node, ctx = byz("twins")
    assert isinstance(node, Twins)
    assert node.sides == (frozenset({"n2", "n3"}), frozenset({"n4"}))
    assert {"twin0:status", "twin1:status"} <= set(ctx.timers)
    c1, c2 = client_request("c1", 1, ("put", "x", "1")), client_request("c2", 1, ("put", "y", "2"))
    order_requests(node, ctx, c1, c2)
    pps = {dst: m for dst, m in ctx.sent if isinstance(m, PrePrepare)}
    assert set(pps) == {"n2", "n3", "n4"}
    assert pps["n2"].seq == pps["n4"].seq == 1 and pps["n2"].digest != pps["n4"].digest
    assert verifies(pps["n2"]) and verifies(pps["n4"])
    assert node.lies == 1
    # each twin persisted its own slot; a restart gives each its own back
    hard = ctx.storage.load().hard
    assert "slot/1" in hard and "twin1/slot/1" in hard
    again = Twins("n1", FOUR, PbftConfig())
    again.on_recover(FakeContext("n1", FOUR), ctx.storage.load())
    got = [again.twins[i].log[1].pre_prepare for i in (0, 1)]
    assert [pp.digest if pp else None for pp in got] == [pps["n2"].digest, pps["n4"].digest]
    assert again.lies == 1


def test_lies_survive_a_crash_and_restart_of_the_liar() -> None:
    sim = Simulation("pbft", nodes=4, seed=5, byzantine={"n1": "wrong-reply"})
    for i in range(1, 4):
        req = PbftNode.client_command(sim.config, 1, i, ("put", "k", str(i)))
        for n in sim.nodes:
            sim.client_request(n, req)
        sim.run(0.2)
    before = sim.status("n1")["lies"]
    assert before > 0
    sim.crash("n1")
    sim.restart("n1")
    assert sim.status("n1")["lies"] == before


# ------------------------------------------------------------------ core bugs found
# (by these behaviours and the campaign: regression tests for the fixed ones, strict xfails for
# the open ones)


def test_correct_replicas_split_across_two_views_find_a_common_one() -> None:
    """The view-change stall that stale-view, silent and forge runs hit after healing: a correct
    replica holding only 2f view-change messages for v (the third correct one moved on to v+1
    alone, its message for v lost) ran no timer, could not join v+1 (one replica there, the
    join rule needs f + 1) and only retransmitted its own message for v - until replicas
    answered view-change messages of views they had left (viewchange.py, rule 5)."""
    w = Wire()
    w.down.add("n1")  # faulty (silent) replica
    w.client("n2", ("put", "k", "v"))
    w.fire("n2", "lane:0")  # the request reaches every backup: their timers run
    w.run()
    live = ("n2", "n3", "n4")
    for m in live:
        w.fire(m, "view_change")
    # n4's VIEW-CHANGE for view 1 is lost on its way to n2 and n3
    w.run(drop=lambda s, d, m: isinstance(m, ViewChange) and s == "n4" and d in ("n2", "n3"))
    assert "view_change" in w.ctxs["n4"].timers  # n4 has 2f + 1: it waits for NEW-VIEW
    w.fire("n4", "view_change")  # none comes (n2 has only two): n4 moves on to view 2
    w.run()
    assert [w.nodes[m].view for m in live] == [1, 1, 2]
    # from now on the network is reliable and every timer fires, again and again
    for _ in range(30):
        for m in live:
            for name in sorted(w.ctxs[m].timers):
                w.fire(m, name)
        w.run()
    assert any(w.nodes[m].active for m in live)
    assert w.replies("n2") == [None]


def restart(w: Wire, node_id: str) -> None:
    """Crash ``node_id`` of a hand-wired cluster and restart it from its durable storage."""
    storage = w.ctxs[node_id].storage
    storage.crash()
    node = PbftNode(node_id, w.members, w.nodes[node_id].config)
    ctx = FakeContext(node_id, w.members)
    ctx.storage = storage
    w.nodes[node_id], w.ctxs[node_id] = node, ctx
    node.on_recover(ctx, storage.load())


def test_replicas_split_across_two_views_find_a_common_one_after_a_restart() -> None:
    """The same stall, once the replica ahead has restarted: its view-change message for the
    view the others are stuck in was volatile, so rule 5 could not hand it over (silent seed 6
    of the campaign) - until replicas kept their own view-change messages in storage."""
    w = Wire()
    w.down.add("n1")
    w.client("n2", ("put", "k", "v"))
    w.fire("n2", "lane:0")
    w.run()
    live = ("n2", "n3", "n4")
    for m in live:
        w.fire(m, "view_change")
    w.run(drop=lambda s, d, m: isinstance(m, ViewChange) and s == "n4" and d in ("n2", "n3"))
    w.fire("n4", "view_change")
    w.run()
    assert [w.nodes[m].view for m in live] == [1, 1, 2]
    restart(w, "n4")  # it keeps view 2 (durable), not its view-change message for view 1
    w.run()
    for _ in range(30):
        for m in live:
            for name in sorted(w.ctxs[m].timers):
                w.fire(m, name)
        w.run()
    assert any(w.nodes[m].active for m in live)
    assert w.replies("n2") == [None]


def test_a_replica_that_missed_the_checkpoint_messages_catches_up() -> None:
    """A replica that executed up to a checkpoint but never saw 2f + 1 CHECKPOINT messages for
    it (lost; a bad-checkpoint replica's vote does not count) kept its old low watermark: its
    window ended there, it dropped the next pre-prepares and the committed certificates a Fetch
    brought, and a Fetch never returned the proof of a checkpoint equal to what it executed.
    Found by the campaign (f=1 bad-checkpoint seed 92: 'not converged')."""
    w = Wire(checkpoint_interval=4)  # K = 4, L = 8

    def no_checkpoints_to_n3(src: str, dst: str, msg: object) -> bool:
        return isinstance(msg, Checkpoint) and dst == "n3"

    for i in range(1, 9):
        w.client("n2", ("put", f"k{i}", i), rid=i)
        w.run(drop=no_checkpoints_to_n3)
    progress = {m: (w.nodes[m].last_executed, w.nodes[m].h) for m in FOUR}
    assert progress == {"n1": (8, 8), "n2": (8, 8), "n3": (8, 0), "n4": (8, 8)}
    w.client("n2", ("put", "k9", 9), rid=9)  # n = 9 is above n3's high watermark 0 + 8
    w.run()
    for _ in range(20):  # a reliable network from now on; every timer but the proxy's fires
        for m in FOUR:
            for name in sorted(w.ctxs[m].timers):
                if not name.startswith("lane:"):
                    w.fire(m, name)
        w.run()
    assert w.nodes["n3"].last_executed == 9


def _view_change_from_a_silent_primary(drop: Any) -> Wire:
    """n1 (the primary of view 0) is down with a request pending at n2; n2, n3 and n4 change
    to view 1 while ``drop`` decides which messages are lost."""
    w = Wire()
    w.down.add("n1")
    w.client("n2", ("put", "k", "v"))
    w.fire("n2", "lane:0")
    w.run()
    for m in ("n2", "n3", "n4"):
        w.fire(m, "view_change")
    w.run(drop=drop)
    return w


def test_a_replica_that_missed_the_new_view_gets_it_from_any_replica() -> None:
    """Fixed core bug: viewchange._help_behind (rule 5) relays the NEW-VIEW it installed, but
    on_message dropped any message whose sender is not its network source, so a relay from a
    replica other than the primary arrived as dropped['wrong_sender'] and never helped. A
    NEW-VIEW may now come from any member (it proves itself: the primary's signature)."""
    w = _view_change_from_a_silent_primary(
        drop=lambda s, d, m: isinstance(m, NewView) and d == "n3"  # n3 misses it
    )
    assert (w.nodes["n3"].view, w.nodes["n3"].active) == (1, False)
    # n2 (the new primary) is cut off from n3 now; n3 retransmits its view change, n4 answers
    w.fire("n3", "status")
    w.run(drop=lambda s, d, m: s == "n2" and d == "n3")
    assert w.nodes["n3"].dropped.get("wrong_sender", 0) == 0
    assert (w.nodes["n3"].view, w.nodes["n3"].active) == (1, True)


def test_a_relayed_new_view_still_needs_the_primarys_signature() -> None:
    """The relay exemption is about who carries a NEW-VIEW, not who made it: one re-signed by
    the relaying backup (sender still the primary) is dropped."""
    captured: list[NewView] = []

    def keep(s: str, d: str, m: Any) -> bool:
        if isinstance(m, NewView) and d == "n3":
            captured.append(m)
            return True
        return False

    w = _view_change_from_a_silent_primary(drop=keep)
    assert captured and (w.nodes["n3"].view, w.nodes["n3"].active) == (1, False)
    forged = w.nodes["n4"].sign(captured[0])  # n4's signature, the primary n2 as sender
    assert forged.sender == "n2"
    w.nodes["n3"].on_message(FakeContext("n3", ("n1", "n2", "n3", "n4")), "n4", forged)
    assert w.nodes["n3"].dropped.get("bad_signature", 0) == 1
    assert w.nodes["n3"].active is False
