"""PBFT view changes (Castro & Liskov 1999, §4.4; liveness §4.5.2)."""

from __future__ import annotations

import dataclasses

from pbft_helpers import (
    SEVEN,
    Wire,
    correct_digests,
    deliver,
    drive,
    new_node,
    pre_prepare,
    signed,
)
from quorumkit.protocols.pbft import (
    NULL_DIGEST,
    Commit,
    NewView,
    PbftNode,
    Prepare,
    PreparedCert,
    PrePrepare,
    ViewChange,
)
from quorumkit.sim.core import Simulation

T = 0.3  # the default view_change_timeout_ms, in seconds


def timed_out(w: Wire, nodes: tuple[str, ...]) -> None:
    for m in nodes:
        assert "view_change" in w.ctxs[m].timers, m
        w.fire(m, "view_change")


def new_views(w: Wire, node: str) -> list[NewView]:
    return w.sent_by(node, NewView)


# ------------------------------------------------------------------ clusters


def test_a_crashed_primary_is_replaced_and_requests_complete() -> None:
    sim = Simulation("pbft", nodes=4, seed=31, check_invariants=True)
    done = drive(sim, 10, clients=2, nodes=["n2", "n3", "n4"])
    assert sim.run_until(lambda: len(done) == 10, 2)
    sim.crash("n1")
    more = drive(sim, 20, clients=2, nodes=["n2", "n3", "n4"])
    assert sim.run_until(lambda: len(more) == 20, 5)
    assert all(r is None for _, r in more)
    assert sim.leader() == "n2"
    assert {sim.status(n)["view"] for n in ("n2", "n3", "n4")} == {1}
    assert sim.stats["leader_changes"] == 2
    sim.restart("n1")  # the old primary learns the new view and catches up
    sim.run(1.5)
    assert sim.status("n1")["view"] == 1 and sim.status("n1")["role"] == "backup"
    assert len(correct_digests(sim)) == 1


def test_a_silent_primary_is_replaced() -> None:
    sim = Simulation("pbft", nodes=4, seed=32, check_invariants=True)
    sim.disconnect("n1")  # partitioned away: it hears nothing and is heard by nobody
    done = drive(sim, 10, clients=2, nodes=["n2", "n3", "n4"])
    assert sim.run_until(lambda: len(done) == 10, 5)
    assert sim.leader() == "n2"
    sim.reconnect("n1")
    sim.run(1.5)
    assert sim.status("n1")["view"] == 1 and sim.status("n1")["last_executed"] > 0
    assert len(correct_digests(sim)) == 1


def test_seven_replicas_survive_two_consecutive_faulty_primaries() -> None:
    sim = Simulation("pbft", nodes=7, seed=33, check_invariants=True)
    sim.crash("n1")
    sim.crash("n2")  # the primary of view 1 is down too: view 1 fails, view 2 works
    done = drive(sim, 10, clients=2, nodes=SEVEN[2:])
    assert sim.run_until(lambda: len(done) == 10, 10)
    assert sim.leader() == "n3"
    assert {sim.status(n)["view"] for n in SEVEN[2:]} == {2}
    assert len(correct_digests(sim)) == 1


# ------------------------------------------------------------------ message by message


def prepared_but_not_committed() -> tuple[Wire, PrePrepare]:
    """A request proxied by n2 is prepared everywhere in view 0, and no commit arrives."""
    w = Wire()
    w.client("n2", ("put", "k", "v"))
    w.run(drop=lambda src, dst, msg: isinstance(msg, Commit))
    pp = w.nodes["n1"].log[1].pre_prepare
    assert pp is not None
    assert all(w.nodes[m].log[1].prepared for m in w.members)
    assert all(w.nodes[m].last_executed == 0 for m in w.members)
    return w, pp


def test_a_prepared_request_keeps_its_sequence_number_in_the_new_view() -> None:
    w, pp = prepared_but_not_committed()
    w.down.add("n1")
    timed_out(w, ("n2", "n3", "n4"))
    w.run()
    (nv,) = new_views(w, "n2")
    assert nv.view == 1 and len(nv.view_changes) == 3
    assert [(o.seq, o.digest, o.requests) for o in nv.pre_prepares] == [(1, pp.digest, pp.requests)]
    for m in ("n2", "n3", "n4"):
        node = w.nodes[m]
        assert (node.view, node.active, node.last_executed) == (1, True, 1)
        assert node.sm.data == {"k": "v"}
    assert w.replies("n2") == [None]  # the proxy got f + 1 matching replies
    assert ("role", {"role": "leader", "view": 1}) in w.ctxs["n2"].traces


def test_gaps_between_min_s_and_max_s_get_null_requests() -> None:
    w = Wire()
    w.client("n2", ("put", "a", 1), rid=1)
    w.client("n3", ("put", "b", 2), rid=2)
    # seq 1 never prepares (its prepares are lost), seq 2 prepares but does not commit

    def drop(src: str, dst: str, msg: object) -> bool:
        return isinstance(msg, Commit) or (isinstance(msg, Prepare) and msg.seq == 1)

    w.run(drop=drop)
    assert [w.nodes["n3"].log[s].prepared for s in (1, 2)] == [False, True]
    w.down.add("n1")
    timed_out(w, ("n2", "n3", "n4"))
    w.run()
    (nv,) = new_views(w, "n2")
    assert [o.seq for o in nv.pre_prepares] == [1, 2]
    assert nv.pre_prepares[0].digest == NULL_DIGEST and nv.pre_prepares[0].requests == ()
    node = w.nodes["n3"]
    assert node.last_executed >= 2 and node.sm.data["b"] == 2
    assert node.executed[0].requests == () and node.executed[0].seq == 1


def test_backups_recompute_o_and_reject_a_tampered_new_view() -> None:
    w, _ = prepared_but_not_committed()
    w.down.add("n1")
    timed_out(w, ("n2", "n3", "n4"))
    w.run(drop=lambda src, dst, msg: isinstance(msg, NewView))
    (nv,) = new_views(w, "n2")
    other = pre_prepare(1, 1, [], "n2")  # the primary "forgets" the prepared request
    tampered = signed(dataclasses.replace(nv, pre_prepares=(other,)))
    fresh, ctx = new_node("n3")
    deliver(fresh, ctx, "n2", tampered)
    assert fresh.dropped == {"bad_new_view": 1} and fresh.view == 0
    twice = signed(dataclasses.replace(nv, view_changes=(nv.view_changes[0],) * 3))
    deliver(fresh, ctx, "n2", twice)
    assert fresh.dropped["duplicate_sender"] == 1
    deliver(fresh, ctx, "n4", signed(nv, "n4"))  # only the primary of view 1 may send it
    deliver(fresh, ctx, "n2", nv)
    assert (fresh.view, fresh.active) == (1, True)
    assert fresh.log[1].pre_prepare == nv.pre_prepares[0]
    assert [p.seq for p in ctx.sent_of(Prepare)] == [1]


def test_a_view_change_with_a_short_prepared_certificate_is_rejected() -> None:
    w, _ = prepared_but_not_committed()
    cert = w.nodes["n3"].pset[1]
    short = PreparedCert(cert.pre_prepare, cert.prepares[:1])
    node, ctx = new_node("n2")
    vc = signed(ViewChange(1, 0, (), (short,), "n3"))
    deliver(node, ctx, "n3", vc)
    assert node.dropped == {"bad_view_change": 1}
    doubled = PreparedCert(cert.pre_prepare, (cert.prepares[0], cert.prepares[0]))
    deliver(node, ctx, "n3", signed(ViewChange(1, 0, (), (doubled,), "n3")))
    assert node.dropped == {"bad_view_change": 1, "duplicate_sender": 1}
    deliver(node, ctx, "n3", signed(ViewChange(1, 0, (), (cert,), "n3")))
    assert node.vc_latest["n3"].prepared == (cert,)


def test_a_replica_joins_on_f_plus_1_view_changes_for_higher_views() -> None:
    node, ctx = new_node("n3")
    deliver(node, ctx, "n1", signed(ViewChange(3, 0, (), (), "n1")))
    assert (node.view, node.active) == (0, True)  # one replica may be faulty: wait
    deliver(node, ctx, "n4", signed(ViewChange(2, 0, (), (), "n4")))
    assert (node.view, node.active) == (2, False)  # the smallest of the views asked for
    own = ctx.sent_of(ViewChange)
    assert len(own) == 1 and own[0].new_view == 2 and own[0].sender == "n3"


def test_view_change_timeouts_double_until_a_request_executes() -> None:
    w = Wire(SEVEN)
    w.down.update({"n1", "n2"})  # the primaries of views 0 and 1
    w.client("n3", ("put", "k", "v"))
    w.fire("n3", "lane:0")  # the proxy retransmits to everyone: every backup waits now
    w.run()
    live = SEVEN[2:]
    assert {w.ctxs[m].timers["view_change"] for m in live} == {T}
    timed_out(w, live)
    w.run()  # 2f + 1 view changes for view 1: each waits T for the NEW-VIEW
    assert {w.ctxs[m].timers["view_change"] for m in live} == {T}
    timed_out(w, live)
    w.run()  # view 2: n3 is its primary
    assert all((w.nodes[m].view, w.nodes[m].active) for m in live)
    assert w.nodes["n3"].role() == "leader" and w.nodes["n3"].view == 2
    assert w.replies("n3") == [None]
    assert all(w.nodes[m].vc_backoff == 0 for m in live)  # a request executed in view 2


def test_the_new_view_timer_doubles_when_the_next_view_fails_too() -> None:
    w = Wire(SEVEN)
    w.down.update({"n1", "n2"})  # the primaries of views 0 and 1 are down

    def lose_n3_new_view(src: str, dst: str, msg: object) -> bool:
        return isinstance(msg, NewView) and src == "n3"  # view 2 fails as well

    w.client("n4", ("put", "k", "v"))
    w.fire("n4", "lane:0")
    w.run()
    live = ("n4", "n5", "n6", "n7")  # n3, the primary of view 2, is up but unheard
    timed_out(w, (*live, "n3"))
    w.run(drop=lose_n3_new_view)
    assert w.ctxs["n4"].timers["view_change"] == T  # waiting for view 1's NEW-VIEW
    timed_out(w, (*live, "n3"))
    w.run(drop=lose_n3_new_view)
    assert w.nodes["n3"].active and not w.nodes["n4"].active
    assert w.ctxs["n4"].timers["view_change"] == 2 * T  # view 2: twice as long
    timed_out(w, live)
    w.run(drop=lose_n3_new_view)
    assert w.nodes["n4"].view == 3 and w.nodes["n4"].role() == "leader"
    assert w.replies("n4") == [None]


def test_a_replica_in_view_change_ignores_normal_case_messages_of_the_old_view() -> None:
    node, ctx = new_node("n3")
    deliver(node, ctx, "n1", signed(ViewChange(1, 0, (), (), "n1")))
    deliver(node, ctx, "n4", signed(ViewChange(1, 0, (), (), "n4")))
    assert (node.view, node.active) == (1, False)
    before = len(ctx.sent)
    deliver(node, ctx, "n1", pre_prepare(0, 1, [], "n1"))
    assert len(ctx.sent) == before and 1 not in node.log
    assert node.status()["role"] == "view-change" and node.leader() is None


def test_view_change_state_survives_a_restart() -> None:
    sim = Simulation("pbft", nodes=4, seed=34, check_invariants=True)
    sim.crash("n1")
    done = drive(sim, 6, clients=1, nodes=["n2", "n3", "n4"])
    assert sim.run_until(lambda: len(done) == 6, 5)
    sim.crash("n3")
    sim.restart("n3")
    node = sim.protocol("n3")
    assert isinstance(node, PbftNode)
    assert (node.view, node.active) == (1, True)
    assert node.new_view_msg is not None and node.new_view_msg.view == 1
    more = drive(sim, 6, clients=1, nodes=["n2", "n3", "n4"])
    assert sim.run_until(lambda: len(more) == 6, 5)
    sim.run(1.0)
    assert len(correct_digests(sim)) == 1


def test_replicas_left_behind_in_a_view_change_are_helped_forward() -> None:
    """Rule 5 of viewchange.py: n4 moved on to view 2 after its view change for view 1 was
    lost on the way to n2 and n3, who hold only 2f view changes for view 1 (no timer runs):
    their retransmissions reach n4, which answers with its own view changes for views 1 and 2,
    and the correct replicas agree on a view again."""
    w = Wire()
    w.down.add("n1")
    w.client("n2", ("put", "k", "v"))
    w.fire("n2", "lane:0")
    w.run()
    live = ("n2", "n3", "n4")
    timed_out(w, live)
    w.run(drop=lambda s, d, m: isinstance(m, ViewChange) and s == "n4" and d in ("n2", "n3"))
    timed_out(w, ("n4",))
    w.run()
    assert [w.nodes[m].view for m in live] == [1, 1, 2]
    assert not any(w.nodes[m].active for m in live)
    assert all("view_change" not in w.ctxs[m].timers for m in ("n2", "n3"))
    for _ in range(3):  # status ticks retransmit view changes
        for m in live:
            w.fire(m, "status")
        w.run()
        for m in live:
            if "view_change" in w.ctxs[m].timers:
                w.fire(m, "view_change")
        w.run()
    assert all(w.nodes[m].active for m in live)
    assert len({w.nodes[m].view for m in live}) == 1
    assert w.replies("n2") == [None]
