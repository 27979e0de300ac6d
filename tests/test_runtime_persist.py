"""Parallel leader persistence (Raft dissertation 10.2.1, protocol.py rule 4's early effects).

A leader sends AppendEntries before its own log write is durable, and counts itself towards a
commit quorum only for entries its storage reported durable (``on_persisted``). Proven at two
levels:

* protocol level, deterministic: a RaftNode on a context whose writes become durable only when
  the test says so (``when_durable`` answers False and keeps the token);
* runtime level: three NodeRuntimes in one process on loopback, the leader's commit thread
  held at a gate. A write commits on two durable followers while the leader's own commit is
  still held; with one follower stopped it is not acknowledged until the leader's commit
  completes. No timing is asserted: every wait is for a condition.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from quorumkit.net import runtime as runtime_module
from quorumkit.net.runtime import NodeConfig, NodeRuntime
from quorumkit.protocol import ClientRequest
from quorumkit.protocols.raft import AppendEntries, RaftConfig, Role
from quorumkit.protocols.raft.messages import AppendEntriesResponse, LogEntry
from raft_helpers import PAPER, DrivenRaftNode, FakeContext, make_leader
from runtime_helpers import free_port

MEMBERS = ("n1", "n2", "n3")

# ----------------------------------------------------------------------------- protocol level


class DeferredContext(FakeContext):
    """A FakeContext whose storage writes become durable only when the test delivers the
    token (as the runtime does after a group commit); early effects are recorded as such."""

    def __init__(self, node_id: str, members: tuple[str, ...]) -> None:
        super().__init__(node_id, members)
        self.tokens: list[Any] = []
        self.early: list[tuple[str, Any]] = []
        self.early_replies: list[tuple[ClientRequest, Any]] = []

    def when_durable(self, token: Any) -> bool:
        self.tokens.append(token)
        return False

    def send_early(self, dst: str, msg: Any) -> None:
        self.early.append((dst, msg))
        self.events.append(("send_early", dst, msg))

    def reply_early(self, request: ClientRequest, result: Any) -> None:
        self.early_replies.append((request, result))
        self.events.append(("reply_early", request, result))


def leader() -> tuple[DrivenRaftNode, DeferredContext]:
    """n1, leader of term 1 with its no-op at index 1 appended, nothing durable reported."""
    node = DrivenRaftNode("n1", MEMBERS, RaftConfig.from_options(**PAPER))
    ctx = DeferredContext("n1", MEMBERS)
    node.on_start(ctx)
    make_leader(node, ctx)
    return node, ctx


def persisted(node: DrivenRaftNode, ctx: DeferredContext) -> None:
    """The runtime's group commit completed: deliver every token asked for so far."""
    tokens, ctx.tokens = ctx.tokens, []
    for token in tokens:
        node.on_persisted(ctx, token)


def ack(node: DrivenRaftNode, ctx: DeferredContext, peer: str, index: int) -> None:
    node.on_message(ctx, peer, AppendEntriesResponse(node.current_term, True, index))


def test_10_2_1_the_leader_counts_itself_only_for_entries_it_was_told_are_durable() -> None:
    node, ctx = leader()
    assert ctx.tokens == [(1, 1)]  # it asked to be told when the no-op is durable
    ack(node, ctx, "n2", 1)
    assert node.commit_index == 0, "committed with the leader's own, not yet durable, copy"
    persisted(node, ctx)
    assert node.durable_index == 1
    assert node.commit_index == 1  # n2 and the (now durable) leader: a majority


def test_10_2_1_two_durable_followers_commit_without_the_leaders_own_write() -> None:
    node, ctx = leader()
    ack(node, ctx, "n2", 1)
    ack(node, ctx, "n3", 1)
    assert node.commit_index == 1 and node.durable_index == 0


def test_10_2_1_append_entries_leave_early_once_the_leaders_term_is_durable() -> None:
    node, ctx = leader()
    # before any durability report the leader's term may not be durable: ordinary sends
    assert ctx.take(AppendEntries) and not ctx.early
    persisted(node, ctx)
    ack(node, ctx, "n2", 1)
    ack(node, ctx, "n3", 1)  # both followers out of probing: entries flow to both
    request = ClientRequest(1, ("put", "k", "v"))
    node.on_client(ctx, request)
    early = [(dst, m) for dst, m in ctx.early if isinstance(m, AppendEntries)]
    assert sorted(dst for dst, m in early if m.entries) == ["n2", "n3"]
    assert ctx.tokens == [(1, 2)]
    ack(node, ctx, "n2", 2)
    assert node.commit_index == 1 and not ctx.early_replies, "answered before a durable majority"
    persisted(node, ctx)
    assert node.commit_index == 2
    assert ctx.early_replies == [(request, None)]  # the result of a committed put


def test_10_2_1_a_leader_that_crashes_before_its_write_is_durable_never_counted_itself() -> None:
    """The case the rule exists for: one follower has the entry, the leader's copy was never
    durable. Had the leader counted itself, the entry would be "committed" on one durable
    copy, and lost with that follower."""
    node, ctx = leader()
    persisted(node, ctx)
    ack(node, ctx, "n2", 1)
    node.on_client(ctx, ClientRequest(1, ("put", "k", "v")))
    ack(node, ctx, "n2", 2)
    assert node.commit_index == 1 and node.last_applied == 1
    assert not ctx.early_replies and not ctx.replies
    # the leader crashes here: its token for index 2 never arrives; nothing said index 2 was
    # committed, to the client or (through leaderCommit) to any follower
    assert all(
        m.leader_commit <= 1 for _, m in ctx.early + ctx.sent if isinstance(m, AppendEntries)
    )


def test_10_2_1_a_durability_report_of_an_earlier_leadership_is_ignored() -> None:
    node, ctx = leader()
    stale = ctx.tokens.pop()
    node.on_message(ctx, "n2", AppendEntries(2, "n2", 0, 0, (LogEntry(2, None, 2),), 0))
    assert node.role is Role.FOLLOWER
    node.on_persisted(ctx, stale)  # a report for term 1 reaches the follower of term 2
    assert node.durable_index == 0 and node.commit_index == 0


# ----------------------------------------------------------------------------- runtime level


class Gate:
    """Hold a storage's commit (on its worker thread) until opened; count held commits."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.open.set()
        self.held = 0

    def wrap(self, commit: Callable[[Any], None]) -> Callable[[Any], None]:
        def gated(batch: Any) -> None:
            if not self.open.is_set():
                self.held += 1
                self.open.wait(30)
            commit(batch)

        return gated


async def until(cond: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    """Poll ``cond`` on the loop (real time, real sockets) until it holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = cond()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def three_nodes(root: Path) -> tuple[dict[str, NodeRuntime], dict[str, Gate]]:
    peers = {n: ("127.0.0.1", free_port()) for n in MEMBERS}
    nodes: dict[str, NodeRuntime] = {}
    gates: dict[str, Gate] = {}
    for n in MEMBERS:
        rt = NodeRuntime(NodeConfig(node_id=n, peers=peers, data_dir=root / n, fsync=True))
        gate = Gate()
        rt.storage.commit = gate.wrap(rt.storage.commit)  # type: ignore[method-assign]
        nodes[n], gates[n] = rt, gate
    for rt in nodes.values():
        await rt.start()
    return nodes, gates


def leader_of(nodes: dict[str, NodeRuntime]) -> str | None:
    leaders = [n for n, rt in nodes.items() if rt.protocol.status()["role"] == "leader"]
    if len(leaders) != 1:
        return None
    lead = leaders[0]
    ok = all(rt.protocol.leader() == lead for rt in nodes.values())
    committed = nodes[lead].protocol.status()["commit_index"] >= 1  # its no-op
    return lead if ok and committed else None


def run(main: Callable[[], Any]) -> Any:
    return asyncio.run(main())


@pytest.fixture
def leader_commits_on_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """The gate holds the leader's commit on its worker thread. With few requests waiting a
    leader commits on its loop (runtime rule 5), where a held gate would stop all three nodes
    of these one-loop tests: make every leader commit go to the thread."""
    monkeypatch.setattr(runtime_module, "LEADER_INLINE_MAX_WAITING", -1)


@pytest.mark.usefixtures("leader_commits_on_thread")
def test_a_write_commits_on_two_durable_followers_while_the_leaders_commit_is_held(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        nodes, gates = await three_nodes(tmp_path)
        try:
            lead = await until(lambda: leader_of(nodes), "a leader with its no-op committed")
            gates[lead].open.clear()
            result = await asyncio.wait_for(nodes[lead].execute(("put", "k", "v1")), 20)
            assert result is None  # a put's result: acknowledged
            await until(lambda: gates[lead].held >= 1, "the leader's commit held at the gate")
            # the leader's copy is not durable yet, and the write was acknowledged all the same
            raft: Any = nodes[lead].protocol
            assert raft.durable_index < raft.commit_index
        finally:
            for g in gates.values():
                g.open.set()
            for rt in nodes.values():
                with contextlib.suppress(Exception):
                    await rt.stop()

    run(main)


@pytest.mark.usefixtures("leader_commits_on_thread")
def test_with_one_follower_down_a_write_waits_for_the_leaders_own_durable_copy(
    tmp_path: Path,
) -> None:
    """Leader + one follower is a majority only once the leader's copy is durable: the
    follower's durable ack alone must not acknowledge the write."""

    async def main() -> None:
        nodes, gates = await three_nodes(tmp_path)
        try:
            lead = await until(lambda: leader_of(nodes), "a leader with its no-op committed")
            follower, down = [n for n in MEMBERS if n != lead]
            await nodes[down].stop()
            leader_rt, follower_rt = nodes[lead], nodes[follower]
            raft: Any = leader_rt.protocol
            gates[lead].open.clear()
            write = asyncio.ensure_future(leader_rt.execute(("put", "k", "v2")))
            index = await until(
                lambda: raft.log.last_index if raft.log.last_index > raft.commit_index else 0,
                "the write appended at the leader",
            )
            # the follower has it durably and the leader has heard so ...
            await until(lambda: follower_rt.storage._d_next > index, "the follower's commit")
            await until(lambda: raft.progress[follower].match >= index, "the follower's ack")
            for _ in range(20):  # ... and a few more turns of the loop change nothing
                await asyncio.sleep(0)
            assert not write.done(), "acknowledged on one durable copy out of three"
            assert raft.commit_index < index
            gates[lead].open.set()
            assert await asyncio.wait_for(write, 20) is None
            assert raft.commit_index >= index and raft.durable_index >= index
        finally:
            for g in gates.values():
                g.open.set()
            for rt in nodes.values():
                with contextlib.suppress(Exception):
                    await rt.stop()

    run(main)


@pytest.mark.parametrize("fsync", [True, False])
def test_acknowledged_writes_survive_a_restart_of_every_node(tmp_path: Path, fsync: bool) -> None:
    """The runtime's WAL layout end to end, also with --no-fsync (a process restart loses
    nothing either way)."""

    async def main() -> None:
        peers = {n: ("127.0.0.1", free_port()) for n in MEMBERS}

        def make() -> dict[str, NodeRuntime]:
            return {
                n: NodeRuntime(
                    NodeConfig(node_id=n, peers=peers, data_dir=tmp_path / n, fsync=fsync)
                )
                for n in MEMBERS
            }

        nodes = make()
        try:
            for rt in nodes.values():
                await rt.start()
            lead = await until(lambda: leader_of(nodes), "a leader")
            for i in range(30):
                assert await asyncio.wait_for(nodes[lead].execute(("put", f"k{i}", i)), 20) is None
        finally:
            for rt in nodes.values():
                await rt.stop()
        nodes = make()
        try:
            for rt in nodes.values():
                await rt.start()
            lead = await until(lambda: leader_of(nodes), "a leader after the restart")
            got = await asyncio.wait_for(nodes[lead].execute(("get", "k29")), 20)
            assert got == 29
        finally:
            for rt in nodes.values():
                await rt.stop()

    run(main)


def test_a_leader_commits_on_its_loop_when_idle_and_on_its_thread_when_busy(
    tmp_path: Path,
) -> None:
    """Runtime rule 5: one request waiting, the leader's fsync runs on the loop (no thread
    hand-off); many waiting, on the worker thread (the loop serves clients meanwhile)."""

    async def main() -> None:
        nodes, _ = await three_nodes(tmp_path)
        try:
            lead = await until(lambda: leader_of(nodes), "a leader with its no-op committed")
            rt = nodes[lead]
            where: list[str] = []
            commit = rt.storage.commit

            def spy(batch: Any) -> None:
                where.append(threading.current_thread().name)
                commit(batch)

            rt.storage.commit = spy  # type: ignore[method-assign]
            for i in range(3):  # one at a time
                assert await asyncio.wait_for(rt.execute(("put", f"a{i}", "v")), 20) is None
            alone = list(where)
            where.clear()
            many = [rt.execute(("put", f"b{i}", "v")) for i in range(40)]
            assert await asyncio.wait_for(asyncio.gather(*many), 20) == [None] * 40
            loop_thread = threading.current_thread().name
            assert alone and set(alone) == {loop_thread}, alone
            assert any(name != loop_thread for name in where), where
        finally:
            for node in nodes.values():
                with contextlib.suppress(Exception):
                    await node.stop()

    run(main)


@pytest.mark.parametrize("waiting", [1, 40])
def test_a_commit_that_fails_stops_the_node_and_answers_every_waiting_request(
    tmp_path: Path, waiting: int
) -> None:
    """Fail-stop (runtime rules 2 and 5): a node whose writes cannot be made durable answers
    what waits with ``unavailable``, acknowledges nothing and stops, whether the fsync ran
    on the loop (one request) or on the worker thread (many)."""

    async def main() -> None:
        peers = {"n1": ("127.0.0.1", free_port())}
        rt = NodeRuntime(NodeConfig(node_id="n1", peers=peers, data_dir=tmp_path / "n1"))
        fatal: list[bool] = []
        rt.on_fatal = lambda: fatal.append(True)
        await rt.start()
        try:
            await until(lambda: rt.protocol.status()["commit_index"] >= 1, "a leader")
            assert await asyncio.wait_for(rt.execute(("put", "before", 1)), 20) is None
            where: list[str] = []

            def broken(batch: Any) -> None:
                where.append(threading.current_thread().name)
                raise OSError(5, "Input/output error")

            rt.storage.commit = broken  # type: ignore[method-assign]
            results = await asyncio.wait_for(
                asyncio.gather(*(rt.execute(("put", f"k{i}", i)) for i in range(waiting))), 20
            )
            assert results == [{"error": "unavailable", "detail": "storage failed"}] * waiting
            assert rt.failed and fatal == [True]
            on_loop = where == [threading.current_thread().name]
            assert on_loop == (waiting == 1), where
            later = await asyncio.wait_for(rt.execute(("put", "after", 1)), 20)
            assert later == {"error": "unavailable", "detail": "node stopping"}
        finally:
            await rt.stop()

    run(main)


def test_writes_made_without_sync_start_no_commit_and_hold_back_nothing(tmp_path: Path) -> None:
    """Runtime rule 2 and the contract's ``sync=False``: Multi-Paxos records its decided
    prefix unsynced. That write alone starts no commit (it cost the leader a second fsync per
    client write) and holds back no reply; it becomes durable with the next synced write."""

    async def main() -> None:
        peers = {n: ("127.0.0.1", free_port()) for n in MEMBERS}
        nodes = {
            n: NodeRuntime(
                NodeConfig(
                    node_id=n, peers=peers, data_dir=tmp_path / n, fsync=True, protocol="paxos"
                )
            )
            for n in MEMBERS
        }
        for rt in nodes.values():
            await rt.start()
        try:

            def paxos_leader() -> str | None:
                leaders = [n for n, rt in nodes.items() if rt.protocol.status()["role"] == "leader"]
                return leaders[0] if len(leaders) == 1 else None

            lead = await until(paxos_leader, "a Paxos leader")
            rt = nodes[lead]
            assert await asyncio.wait_for(rt.execute(("put", "warm", "up")), 20) is None
            await asyncio.sleep(0.2)  # let the leader's leftovers settle
            commits: list[int] = []
            commit = rt.storage.commit

            def spy(batch: Any) -> None:
                if batch.ops:  # an empty batch is no transaction
                    commits.append(batch.ops)
                commit(batch)

            rt.storage.commit = spy  # type: ignore[method-assign]
            decided: list[int] = []
            for i in range(10):
                assert await asyncio.wait_for(rt.execute(("put", f"k{i}", "v")), 20) is None
                decided.append(rt.protocol.commit)  # type: ignore[attr-defined]
            await asyncio.sleep(0.2)
            # one commit per write (the acceptance), not two (acceptance, then decided prefix)
            assert len(commits) <= 12, commits
            # the unsynced prefix of write i became durable with write i + 1's synced write
            durable = rt.storage.load().hard.get("commit", 0)
            assert durable >= decided[-2], (durable, decided)
            assert not rt.storage.pending_needs_sync
        finally:
            for node in nodes.values():
                with contextlib.suppress(Exception):
                    await node.stop()

    run(main)
