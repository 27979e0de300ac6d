"""Multi-Paxos's early effects (contract rule 4's exception; node.py rule 5).

The leader's Accepts may leave before its own acceptance of those slots is durable, so it must
count itself among a slot's acceptors only once the driver reports that acceptance durable
(``ctx.when_durable`` / ``on_persisted``). These tests drive a :class:`PaxosNode` on a context
whose storage is never durable at once (as the runtime's while a commit is pending) and play the
driver's durability reports by hand.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from paxos_helpers import THREE, DrivenPaxosNode, make_leader
from quorumkit.protocol import ClientRequest
from quorumkit.protocols.paxos import Accept, Accepted, PaxosConfig, Role
from raft_helpers import FakeContext


class DeferredContext(FakeContext):
    """A FakeContext whose writes are never durable when made: ``when_durable`` returns False
    and records the token; the test calls ``on_persisted`` itself. Early sends and replies
    are recorded apart from the ordinary ones."""

    def __init__(self, node_id: str, members: Sequence[str], seed: int = 0) -> None:
        super().__init__(node_id, members, seed)
        self.tokens: list[Any] = []
        self.early_sent: list[tuple[str, Any]] = []
        self.early_replies: list[tuple[ClientRequest, Any]] = []

    def when_durable(self, token: Any) -> bool:
        self.tokens.append(token)
        return False

    def send_early(self, dst: str, msg: Any) -> None:
        self.early_sent.append((dst, msg))
        self.events.append(("send_early", dst, msg))

    def reply_early(self, request: ClientRequest, result: Any) -> None:
        self.early_replies.append((request, result))
        self.events.append(("reply_early", request, result))


def deferred_leader(
    members: Sequence[str] = THREE,
) -> tuple[DrivenPaxosNode, DeferredContext]:
    """n1, leader of a fresh cluster, its takeover durability report already delivered (so
    its promise is known durable and its Accepts leave early from now on)."""
    node = DrivenPaxosNode("n1", members, PaxosConfig())
    ctx = DeferredContext("n1", members)
    node.on_start(ctx)
    make_leader(node, ctx)
    assert ctx.tokens, "a new leader asks when its promise and slots are durable"
    token = ctx.tokens.pop()
    node.on_persisted(ctx, token)
    assert node.ballot_durable
    ctx.clear()
    ctx.early_sent.clear()
    return node, ctx


def propose(node: DrivenPaxosNode, ctx: DeferredContext, request_id: int = 1) -> int:
    node.on_client(ctx, ClientRequest(request_id, ("put", "k", request_id)))
    return node.next_slot - 1


def test_the_leader_does_not_decide_with_its_own_undurable_acceptance():
    """Leader + n2 are a majority of 3, but the leader's acceptance is not durable yet: the
    slot is not decided (a crash could lose that acceptance) until the driver reports it."""
    node, ctx = deferred_leader()
    slot = propose(node, ctx)
    assert ctx.tokens == [(node.ballot, slot)]
    node.on_message(ctx, "n2", Accepted(node.ballot, slot, 1))
    assert node.commit == 0, "an undurable acceptance of the leader must not count"
    assert not ctx.replies and not ctx.early_replies
    node.on_persisted(ctx, ctx.tokens.pop())
    assert node.commit == slot
    assert ctx.early_replies == [(ClientRequest(1, ("put", "k", 1)), None)], (
        "a decided slot rests on durable acceptances: its client is answered early"
    )


def test_a_durability_report_alone_is_not_a_majority():
    node, ctx = deferred_leader()
    slot = propose(node, ctx)
    node.on_persisted(ctx, ctx.tokens.pop())
    assert node.commit == 0, "the leader's own durable acceptance is 1 of 3"
    node.on_message(ctx, "n3", Accepted(node.ballot, slot, 1))
    assert node.commit == slot


def test_a_majority_of_other_acceptors_decides_without_the_leader():
    node, ctx = deferred_leader()
    slot = propose(node, ctx)
    node.on_message(ctx, "n2", Accepted(node.ballot, slot, 1))
    node.on_message(ctx, "n3", Accepted(node.ballot, slot, 1))
    assert node.commit == slot


def test_accepts_leave_early_once_the_leadership_had_a_durability_report():
    """Before its first durability report a new leader's Accepts wait for its writes (its
    promise of the ballot among them); after it they leave at once, before the write of the
    slots they carry is durable."""
    node = DrivenPaxosNode("n1", THREE, PaxosConfig())
    ctx = DeferredContext("n1", THREE)
    node.on_start(ctx)
    make_leader(node, ctx)
    node.submit(ctx, ("put", "k", 0))
    assert [m for _, m in ctx.sent if isinstance(m, Accept)], "first batch: ordinary sends"
    assert not ctx.early_sent
    node.on_persisted(ctx, ctx.tokens[0])
    ctx.clear()
    slot = propose(node, ctx, 7)
    early = [(d, m) for d, m in ctx.early_sent if isinstance(m, Accept)]
    assert sorted(d for d, _ in early) == ["n2", "n3"]
    assert all(m.first_slot == slot for _, m in early)
    assert not [m for _, m in ctx.sent if isinstance(m, Accept)]
    writes = [e for e in ctx.events if e[0] == "persist"]
    assert writes, "the leader still writes its acceptance"


def test_a_durability_report_of_an_earlier_leadership_is_ignored():
    """A token names the ballot it was asked at: a later leadership of the same node does not
    count itself on the strength of a report about slots it has since written again."""
    node, ctx = deferred_leader()
    slot = propose(node, ctx)
    old = ctx.tokens.pop()
    node.become_candidate(ctx)  # asked to campaign again
    ctx.clear()
    make_leader(node, ctx)
    assert node.role is Role.LEADER and node.ballot != old[0]
    ctx.tokens.clear()
    node.on_persisted(ctx, old)
    node.on_message(ctx, "n2", Accepted(node.ballot, slot, 1))
    assert node.commit == 0
