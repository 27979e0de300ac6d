"""Raft, section 5 of the paper, one statement per test (like etcd-io/raft's raft_paper_test.go).

Ongaro & Ousterhout, "In Search of an Understandable Consensus Algorithm (Extended Version)",
2014. Each docstring quotes the sentence it checks and names its section. Most tests drive one
:class:`RaftNode` through a recording :class:`FakeContext` with hand-made messages; a few run a
checked :class:`Simulation`. Unless a test says otherwise, nodes run the paper's plain algorithm
(``pre_vote=False, check_quorum=False``).
"""

from __future__ import annotations

import pytest

from quorumkit.protocol import ClientRequest
from quorumkit.protocols.raft import (
    AppendEntries,
    AppendEntriesResponse,
    LogEntry,
    RaftNode,
    RequestVote,
    RequestVoteResponse,
    Role,
)
from quorumkit.protocols.raft.messages import NOOP
from raft_helpers import (
    DrivenRaftNode,
    FakeContext,
    Wire,
    entries,
    log_terms,
    make_leader,
    make_sim,
    new_node,
)

FIVE = ("n1", "n2", "n3", "n4", "n5")


def to_role(node: RaftNode, ctx: FakeContext, role: Role) -> None:
    """Bring a fresh follower ``node`` into ``role`` (a candidate or leader of term + 1)."""
    if role is Role.CANDIDATE:
        node.on_timer(ctx, "election")
    elif role is Role.LEADER:
        make_leader(node, ctx)
    assert node.role is role
    ctx.clear()


def ack(node: RaftNode, ctx: FakeContext, *peers: str, match: int | None = None) -> None:
    """Feed the leader ``node`` a successful AppendEntriesResponse from each of ``peers``."""
    index = node.log.last_index if match is None else match
    for peer in peers:
        node.on_message(ctx, peer, AppendEntriesResponse(node.current_term, True, index))


# ==================================================================================== 5.1


HIGHER_TERM_MESSAGES = {
    "AppendEntries": AppendEntries(5, "n2", 0, 0, (), 0),
    "RequestVote": RequestVote(5, "n2", 0, 0),
    "AppendEntriesResponse": AppendEntriesResponse(5, False, 0),
    "RequestVoteResponse": RequestVoteResponse(5, False),
}


@pytest.mark.parametrize(
    "role", [Role.FOLLOWER, Role.CANDIDATE, Role.LEADER], ids=lambda r: r.value
)
@pytest.mark.parametrize("kind", sorted(HIGHER_TERM_MESSAGES))
def test_5_1_a_larger_term_in_any_message_updates_the_term_and_reverts_to_follower(role, kind):
    """Section 5.1: "Current terms are exchanged whenever servers communicate; if one
    server's current term is smaller than the other's, then it updates its current term to
    the larger value. If a candidate or leader discovers that its term is out of date, it
    immediately reverts to follower state." """
    node, ctx = new_node(term=2)
    to_role(node, ctx, role)
    assert node.current_term < 5
    node.on_message(ctx, "n2", HIGHER_TERM_MESSAGES[kind])
    assert node.current_term == 5
    assert node.role is Role.FOLLOWER
    assert ctx.storage.load().hard["hard"][0] == 5, "the new term must be durable"
    if kind == "AppendEntries":
        assert node.leader_id == "n2"


def test_5_1_a_request_with_a_stale_term_is_rejected():
    """Section 5.1: "If a server receives a request with a stale term number, it rejects the
    request." (AppendEntries: the entries are not appended, the sender learns the newer term,
    and the stale leader does not hold off this server's election timer.)"""
    node, ctx = new_node(term=3, log=entries(1, 3))
    election_timer = ctx.timers.get("election")
    node.on_message(ctx, "n2", AppendEntries(2, "n2", 2, 3, tuple(entries(2, start=3)), 2))
    [(dst, resp)] = ctx.take()
    assert dst == "n2"
    assert isinstance(resp, AppendEntriesResponse)
    assert (resp.term, resp.success) == (3, False)
    assert log_terms(node) == [1, 3]
    assert node.commit_index == 0
    assert node.leader_id is None
    assert ("set_timer", "election", election_timer) not in ctx.events
    assert not [e for e in ctx.events if e[0] == "set_timer"], "a stale leader reset the timer"


def test_5_1_a_vote_request_with_a_stale_term_is_rejected():
    """Section 5.1: "If a server receives a request with a stale term number, it rejects the
    request." (RequestVote: no vote, and the reply carries the newer term.)"""
    node, ctx = new_node(term=3)
    node.on_message(ctx, "n2", RequestVote(2, "n2", 5, 2))
    assert ctx.take() == [("n2", RequestVoteResponse(3, False))]
    assert node.voted_for is None
    assert node.current_term == 3


def test_5_1_a_candidate_ignores_votes_granted_for_a_stale_term():
    """Section 5.1: terms "act as a logical clock": a vote granted in an older term is not a
    vote in the current election (Figure 2: "votes received from majority of servers")."""
    node, ctx = new_node(term=1)
    node.on_timer(ctx, "election")  # candidate of term 2
    node.on_timer(ctx, "election")  # split vote: candidate of term 3
    assert node.current_term == 3
    node.on_message(ctx, "n2", RequestVoteResponse(2, True))
    assert node.role is Role.CANDIDATE
    node.on_message(ctx, "n2", RequestVoteResponse(3, True))
    assert node.role is Role.LEADER


# ==================================================================================== 5.2


def test_5_2_servers_start_as_followers_with_an_election_timer():
    """Section 5.2: "When servers start up, they begin as followers." """
    node, _ = new_node()
    assert node.role is Role.FOLLOWER
    assert node.current_term == 0
    assert node.voted_for is None
    node2 = DrivenRaftNode("n1", ("n1", "n2", "n3"))
    ctx2 = FakeContext("n1", ("n1", "n2", "n3"))
    node2.on_start(ctx2)
    assert node2.role is Role.FOLLOWER
    assert "election" in ctx2.timers
    assert not ctx2.sent


def test_5_2_a_follower_hearing_from_the_leader_stays_follower():
    """Section 5.2: "A server remains in follower state as long as it receives valid RPCs from
    a leader or candidate." (Each AppendEntries re-arms the election timer.)"""
    node, ctx = new_node(term=1)
    for i in range(5):
        ctx.clock = 0.1 * i
        ctx.events.clear()
        node.on_message(ctx, "n2", AppendEntries(1, "n2", 0, 0, (), 0))
        timers = [e for e in ctx.events if e[:2] == ("set_timer", "election")]
        assert len(timers) == 1, "the AppendEntries did not re-arm the election timer"
        assert node.role is Role.FOLLOWER
        assert node.leader_id == "n2"


def test_5_2_a_follower_hearing_from_the_leader_never_campaigns_in_a_cluster():
    """Section 5.2: "Leaders send periodic heartbeats ... in order to maintain their
    authority." In a quiet 3-node cluster nobody starts an election after the first."""
    sim = make_sim(3, seed=4, pre_vote=False, check_quorum=False)
    assert sim.run_until(lambda: sim.leader() is not None, 3.0)
    started = {n: sim.protocol(n).elections_started for n in sim.nodes}
    term = sim.status(sim.leader())["term"]
    sim.run(5.0)
    assert {n: sim.protocol(n).elections_started for n in sim.nodes} == started
    assert {sim.status(n)["term"] for n in sim.nodes} == {term}


def test_5_2_the_leader_sends_empty_append_entries_as_heartbeats_to_all_followers():
    """Section 5.2: "Leaders send periodic heartbeats (AppendEntries RPCs that carry no log
    entries) to all followers in order to maintain their authority." """
    node, ctx = new_node()
    make_leader(node, ctx)
    ack(node, ctx, "n2", "n3")
    ctx.clear()
    node.on_timer(ctx, "heartbeat")
    beats = ctx.take(AppendEntries)
    assert sorted(dst for dst, _ in beats) == ["n2", "n3"]
    for _, m in beats:
        assert m.entries == ()
        assert m.term == node.current_term
        assert m.leader_id == "n1"
    assert ctx.timers["heartbeat"] == pytest.approx(node.cfg.heartbeat_ms / 1000)


def test_5_2_a_follower_that_hears_nothing_starts_an_election():
    """Section 5.2: "If a follower receives no communication over a period of time called the
    election timeout, then it assumes there is no viable leader and begins an election to
    choose a new leader. To begin an election, a follower increments its current term and
    transitions to candidate state. It then votes for itself and issues RequestVote RPCs in
    parallel to each of the other servers in the cluster." """
    node, ctx = new_node(term=1, log=entries(1, 1), members=FIVE)
    node.on_timer(ctx, "election")
    assert node.role is Role.CANDIDATE
    assert node.current_term == 2
    assert node.voted_for == "n1"
    assert ctx.storage.load().hard["hard"] == (2, "n1")
    requests = ctx.take(RequestVote)
    assert sorted(dst for dst, _ in requests) == ["n2", "n3", "n4", "n5"]
    assert {m for _, m in requests} == {RequestVote(2, "n1", 2, 1)}
    assert "election" in ctx.timers, "the candidate needs a timer to retry a split vote"


def test_5_2_in_a_cluster_a_follower_times_out_and_the_term_increments():
    """Section 5.2 in a running cluster: with the leader gone, a follower times out within the
    election timeout range, increments the term and sends RequestVote (pre-vote off)."""
    sim = make_sim(3, seed=2, pre_vote=False, check_quorum=False, trace="full")
    assert sim.run_until(lambda: sim.leader() is not None, 3.0)
    old = sim.leader()
    term = sim.status(old)["term"]
    sim.crash(old)
    t0 = sim.now
    mark = len(sim.events)
    assert sim.run_until(lambda: any(sim.status(n).get("term", 0) > term for n in sim.nodes), 1.0)
    assert sim.now - t0 <= 0.300 + 1e-9, "an election started later than the maximum timeout"
    assert sim.run_until(lambda: sim.leader() not in (None, old), 1.0)
    votes = [
        e
        for e in sim.events[mark:]
        if e[1] == "deliver" and isinstance(e[4], RequestVote) and not e[4].pre_vote
    ]
    assert votes, "no RequestVote was sent"
    assert all(e[4].term == term + 1 for e in votes[:2])
    assert sim.status(sim.leader())["term"] >= term + 1


def test_5_2_pre_vote_asks_first_without_changing_the_term():
    """Dissertation 9.6 (PreVote, an extension of section 5.2): a follower that times out
    first asks whether it could win, for term + 1, without incrementing its own term; only a
    majority of yes turns it into a real candidate."""
    node, ctx = new_node(term=1, log=entries(1), pre_vote=True)
    node.on_timer(ctx, "election")
    assert node.role is Role.PRE_CANDIDATE
    assert node.current_term == 1
    assert node.voted_for is None
    assert not [e for e in ctx.events if e[0] == "persist"], "a pre-vote must not persist"
    pre = ctx.take(RequestVote)
    assert {m for _, m in pre} == {RequestVote(2, "n1", 1, 1, pre_vote=True)}
    node.on_message(ctx, "n2", RequestVoteResponse(2, True, pre_vote=True))
    assert node.role is Role.CANDIDATE
    assert node.current_term == 2
    real = ctx.take(RequestVote)
    assert real and all(not m.pre_vote and m.term == 2 for _, m in real)


def test_5_2_a_pre_vote_voter_changes_neither_term_nor_vote():
    """Dissertation 9.6: answering a pre-vote does not touch currentTerm or votedFor, and it
    is refused to a candidate whose log is behind (the 5.4.1 rule)."""
    node, ctx = new_node(term=3, log=entries(1, 3))
    node.on_message(ctx, "n2", RequestVote(4, "n2", 2, 3, pre_vote=True))
    assert ctx.take() == [("n2", RequestVoteResponse(4, True, True))]
    node.on_message(ctx, "n3", RequestVote(4, "n3", 5, 2, pre_vote=True))
    assert ctx.take() == [("n3", RequestVoteResponse(3, False, True))]
    assert (node.current_term, node.voted_for) == (3, None)
    assert not [e for e in ctx.events if e[0] == "persist"]


def test_5_2_a_partitioned_node_with_pre_vote_does_not_inflate_its_term():
    """Dissertation 9.6 in a cluster: an isolated follower keeps timing out but, unable to win
    a pre-vote, never increments its term (without pre-vote it does)."""
    for pre_vote, grows in ((True, False), (False, True)):
        sim = make_sim(3, seed=3, pre_vote=pre_vote, check_quorum=True)
        assert sim.run_until(lambda s=sim: s.leader() is not None, 3.0)
        follower = next(n for n in sim.nodes if n != sim.leader())
        term = sim.status(follower)["term"]
        sim.disconnect(follower)
        sim.run(3.0)
        assert (sim.status(follower)["term"] > term) is grows, (pre_vote, sim.status(follower))


@pytest.mark.parametrize(
    ("members", "granted", "role"),
    [
        (("n1",), [], Role.LEADER),
        (("n1", "n2", "n3"), ["n2"], Role.LEADER),
        (("n1", "n2", "n3"), [], Role.CANDIDATE),
        (FIVE, ["n2", "n3"], Role.LEADER),
        (FIVE, ["n2"], Role.CANDIDATE),
        (FIVE, ["n2", "n2", "n2"], Role.CANDIDATE),
        (FIVE, ["n2", "n3", "n4", "n5"], Role.LEADER),
    ],
    ids=["1-of-1", "2-of-3", "1-of-3", "3-of-5", "2-of-5", "same-voter-thrice", "5-of-5"],
)
def test_5_2_a_candidate_wins_with_votes_from_a_majority(members, granted, role):
    """Section 5.2: "A candidate wins an election if it receives votes from a majority of the
    servers in the full cluster for the same term." """
    node, ctx = new_node(members=members)
    node.on_timer(ctx, "election")
    for voter in granted:
        node.on_message(ctx, voter, RequestVoteResponse(node.current_term, True))
    for voter in [m for m in members if m not in granted and m != "n1"]:
        node.on_message(ctx, voter, RequestVoteResponse(node.current_term, False))
    assert node.role is role


def test_5_2_the_winner_sends_append_entries_to_establish_its_authority():
    """Section 5.2: "Once a candidate wins an election, it becomes leader. It then sends
    heartbeat messages to all of the other servers to establish its authority and prevent new
    elections." """
    node, ctx = new_node(members=FIVE)
    node.on_timer(ctx, "election")
    ctx.clear()
    node.on_message(ctx, "n2", RequestVoteResponse(1, True))
    node.on_message(ctx, "n3", RequestVoteResponse(1, True))
    assert node.role is Role.LEADER
    sent = ctx.take(AppendEntries)
    assert sorted(dst for dst, _ in sent) == ["n2", "n3", "n4", "n5"]
    assert all(m.term == 1 and m.leader_id == "n1" for _, m in sent)
    assert "election" not in ctx.timers
    assert "heartbeat" in ctx.timers


@pytest.mark.parametrize(
    ("voted_for", "candidate", "granted"),
    [(None, "n2", True), ("n2", "n2", True), ("n3", "n2", False), ("n1", "n2", False)],
    ids=["not-voted", "same-candidate-again", "voted-other", "voted-self"],
)
def test_5_2_a_server_votes_for_at_most_one_candidate_per_term(voted_for, candidate, granted):
    """Section 5.2: "Each server will vote for at most one candidate in a given term, on a
    first-come-first-served basis." """
    node, ctx = new_node(term=1, voted_for=voted_for)
    node.on_message(ctx, candidate, RequestVote(1, candidate, 0, 0))
    assert ctx.take() == [(candidate, RequestVoteResponse(1, granted))]
    assert node.voted_for == (candidate if granted else voted_for)


def test_5_2_first_come_first_served_within_one_term():
    """Section 5.2: "Each server will vote for at most one candidate in a given term, on a
    first-come-first-served basis." (two candidates of one term, one after the other; a new
    term opens a new vote)"""
    node, ctx = new_node(term=1, members=FIVE)
    node.on_message(ctx, "n2", RequestVote(2, "n2", 0, 0))
    node.on_message(ctx, "n3", RequestVote(2, "n3", 0, 0))
    assert ctx.take() == [
        ("n2", RequestVoteResponse(2, True)),
        ("n3", RequestVoteResponse(2, False)),
    ]
    node.on_message(ctx, "n3", RequestVote(3, "n3", 0, 0))
    assert ctx.take() == [("n3", RequestVoteResponse(3, True))]
    assert (node.current_term, node.voted_for) == (3, "n3")


@pytest.mark.parametrize(("leader_term", "steps_down"), [(2, True), (3, True), (1, False)])
def test_5_2_a_candidate_recognizes_a_leader_of_at_least_its_term(leader_term, steps_down):
    """Section 5.2: "While waiting for votes, a candidate may receive an AppendEntries RPC
    from another server claiming to be leader. If the leader's term (included in its RPC) is
    at least as large as the candidate's current term, then the candidate recognizes the
    leader as legitimate and returns to follower state. If the term in the RPC is smaller than
    the candidate's current term, then the candidate rejects the RPC and continues in
    candidate state." """
    node, ctx = new_node(term=1)
    node.on_timer(ctx, "election")
    assert (node.role, node.current_term) == (Role.CANDIDATE, 2)
    ctx.clear()
    node.on_message(ctx, "n2", AppendEntries(leader_term, "n2", 0, 0, (), 0))
    [(_, resp)] = ctx.take(AppendEntriesResponse)
    if steps_down:
        assert node.role is Role.FOLLOWER
        assert node.leader_id == "n2"
        assert node.current_term == leader_term
        assert resp.success
    else:
        assert node.role is Role.CANDIDATE
        assert node.current_term == 2
        assert not resp.success


def test_5_2_a_split_vote_candidate_times_out_and_starts_a_new_election():
    """Section 5.2: "When this happens, each candidate will time out and start a new election
    by incrementing its term and initiating another round of RequestVote RPCs." """
    node, ctx = new_node(term=1)
    node.on_timer(ctx, "election")
    node.on_message(ctx, "n2", RequestVoteResponse(2, False))
    ctx.clear()
    node.on_timer(ctx, "election")
    assert (node.role, node.current_term, node.voted_for) == (Role.CANDIDATE, 3, "n1")
    assert sorted(d for d, m in ctx.take(RequestVote) if m.term == 3) == ["n2", "n3"]


def test_5_2_election_timeouts_are_drawn_at_random_from_the_interval():
    """Section 5.2: "Raft uses randomized election timeouts to ensure that split votes are
    rare and that they are resolved quickly. To prevent split votes in the first place,
    election timeouts are chosen randomly from a fixed interval (e.g., 150-300ms)." """
    node, ctx = new_node(term=1, seed=11)
    draws = []
    for _ in range(60):
        node.on_timer(ctx, "election")
        draws.append(ctx.timers["election"])
    assert all(0.150 <= d <= 0.300 for d in draws)
    assert len(set(draws)) == len(draws)
    assert max(draws) - min(draws) > 0.1, "the draws do not spread over the interval"


def test_5_2_different_nodes_time_out_at_different_moments():
    """Section 5.2: "election timeouts are chosen randomly from a fixed interval": in one
    cluster, isolated nodes start their first elections at different times, all within the
    interval."""
    sim = make_sim(5, seed=9, pre_vote=False, check_quorum=False, trace="full")
    for n in sim.nodes:
        sim.disconnect(n)
    sim.run(0.31)
    first: dict[str, float] = {}
    for e in sim.events:
        if e[1] == "trace" and e[3] == "role" and dict(e[4])["role"] == "candidate":
            first.setdefault(e[2], e[0])
    assert sorted(first) == list(sim.nodes)
    assert all(0.150 <= t <= 0.300 for t in first.values()), first
    assert len(set(first.values())) == len(first), first


# ==================================================================================== 5.3


def test_5_3_the_leader_appends_the_command_and_replicates_it_in_parallel():
    """Section 5.3: "The leader appends the command to its log as a new entry, then issues
    AppendEntries RPCs in parallel to each of the other servers to replicate the entry." """
    node, ctx = new_node(members=FIVE)
    make_leader(node, ctx)
    ack(node, ctx, "n2", "n3", "n4", "n5")
    ctx.clear()
    result = node.submit(ctx, ("put", "x", "1"))
    assert tuple(result) == (2, 1, True)
    assert node.log.entry(2) == LogEntry(1, ("put", "x", "1"))
    sent = ctx.take(AppendEntries)
    assert sorted(dst for dst, _ in sent) == ["n2", "n3", "n4", "n5"]
    for _, m in sent:
        assert (m.prev_log_index, m.prev_log_term) == (1, 1)
        assert m.entries == (LogEntry(1, ("put", "x", "1")),)
    first_send = next(i for i, e in enumerate(ctx.events) if e[0] == "send")
    appends = [i for i, e in enumerate(ctx.events) if e[:2] == ("persist", "append")]
    assert appends and appends[0] < first_send, "the leader sent an entry it had not persisted"


def test_5_3_an_entry_is_committed_applied_and_answered_once_on_a_majority():
    """Section 5.3: "A log entry is committed once the leader that created the entry has
    replicated it on a majority of the servers" and "When the entry has been safely
    replicated ..., the leader applies the entry to its state machine and returns the result
    of that execution to the client." """
    node, ctx = new_node(members=FIVE)
    make_leader(node, ctx)
    ack(node, ctx, "n2", "n3", "n4", "n5")
    assert node.commit_index == 1
    request = ClientRequest(7, ("incr", "x"))
    node.on_client(ctx, request)
    assert node.log.last_index == 2
    ack(node, ctx, "n2")
    assert node.commit_index == 1, "committed on 2 of 5"
    assert not ctx.replies
    ack(node, ctx, "n2")  # a duplicate ack is not a second replica
    assert node.commit_index == 1
    ack(node, ctx, "n4")
    assert node.commit_index == 2
    assert node.last_applied == 2
    assert ctx.replies == [(request, 1)]
    assert node.sm.data == {"x": 1}


def test_5_3_committing_an_entry_commits_all_preceding_entries_of_earlier_leaders():
    """Section 5.3: "This also commits all preceding entries in the leader's log, including
    entries created by previous leaders." """
    node, ctx = new_node(term=2, log=entries(1, 2, 2))
    make_leader(node, ctx)  # term 3, no-op at index 4
    assert node.commit_index == 0
    ack(node, ctx, "n2")
    assert node.commit_index == 4
    assert [i for i, _ in node.applied_entries] == [1, 2, 3, 4]
    assert node.applied_entries[-1][1].kind == NOOP
    assert node.sm.data == {"k": 3}


def test_5_3_the_leader_sends_its_commit_index_in_later_append_entries_and_heartbeats():
    """Section 5.3: "The leader keeps track of the highest index it knows to be committed, and
    it includes that index in future AppendEntries RPCs (including heartbeats) so that the
    other servers eventually find out." """
    node, ctx = new_node()
    make_leader(node, ctx)
    ack(node, ctx, "n2", "n3")
    node.submit(ctx, ("put", "a", 1))
    ack(node, ctx, "n2")
    assert node.commit_index == 2
    ctx.clear()
    node.on_timer(ctx, "heartbeat")
    beats = ctx.take(AppendEntries)
    assert {d: m.leader_commit for d, m in beats} == {"n2": 2, "n3": 2}
    node.submit(ctx, ("put", "b", 2))
    assert {m.leader_commit for _, m in ctx.take(AppendEntries)} == {2}


def test_5_3_a_follower_applies_committed_entries_in_log_order():
    """Section 5.3: "Once a follower learns that a log entry is committed, it applies the
    entry to its local state machine (in log order)." """
    node, ctx = new_node()
    node.on_message(ctx, "n2", AppendEntries(1, "n2", 0, 0, tuple(entries(1, 1, 1)), 0))
    assert node.last_applied == 0
    node.on_message(ctx, "n2", AppendEntries(1, "n2", 3, 1, (), 2))
    assert [i for i, _ in node.applied_entries] == [1, 2]
    node.on_message(ctx, "n2", AppendEntries(1, "n2", 3, 1, (), 3))
    assert [i for i, _ in node.applied_entries] == [1, 2, 3]
    assert node.sm.data == {"k": 3}


def test_5_3_a_follower_commits_no_further_than_the_last_entry_it_verified():
    """Figure 2, AppendEntries receiver step 5: "If leaderCommit > commitIndex, set
    commitIndex = min(leaderCommit, index of last new entry)": entries after the ones the
    leader just vouched for may be stale and must not be committed."""
    node, ctx = new_node(term=2, log=entries(1, 1, 1))  # entries 2 and 3 may be stale
    node.on_message(ctx, "n2", AppendEntries(3, "n2", 1, 1, (), 3))
    assert node.commit_index == 1
    node.on_message(ctx, "n2", AppendEntries(3, "n2", 1, 1, (LogEntry(3, "x"),), 3))
    assert node.commit_index == 2
    assert log_terms(node) == [1, 3]


@pytest.mark.parametrize(
    ("prev_index", "prev_term", "success"),
    [(0, 0, True), (1, 1, True), (2, 2, True), (2, 1, False), (3, 2, False), (3, 3, False)],
)
def test_5_3_append_entries_consistency_check(prev_index, prev_term, success):
    """Section 5.3: "When sending an AppendEntries RPC, the leader includes the index and term
    of the entry in its log that immediately precedes the new entries. If the follower does
    not find an entry in its log with the same index and term, then it refuses the new
    entries." """
    node, ctx = new_node(term=2, log=entries(1, 2))
    new = (LogEntry(3, "new"),)
    node.on_message(ctx, "n2", AppendEntries(3, "n2", prev_index, prev_term, new, 0))
    [(_, resp)] = ctx.take(AppendEntriesResponse)
    assert resp.success is success
    if success:
        assert node.log.entry(prev_index + 1) == new[0]
        assert node.log.last_index == prev_index + 1
        assert resp.match_index == prev_index + 1
    else:
        assert log_terms(node) == [1, 2]
        assert resp.reject_index == prev_index


@pytest.mark.parametrize(
    ("prev_index", "prev_term", "new_terms", "after"),
    [
        (2, 2, [3], [1, 2, 3]),
        (1, 1, [3, 4], [1, 3, 4]),
        (0, 0, [1], [1, 2]),
        (0, 0, [3], [3]),
    ],
    ids=["append", "conflict-in-the-middle", "already-present", "conflict-at-the-start"],
)
def test_5_3_conflicting_entries_are_deleted_and_replaced(prev_index, prev_term, new_terms, after):
    """Figure 2, AppendEntries receiver steps 3 and 4 (section 5.3): "If an existing entry
    conflicts with a new one (same index but different terms), delete the existing entry and
    all that follow it; append any new entries not already in the log." """
    log = entries(1, 2)
    node, ctx = new_node(term=4, log=log)
    new = tuple(
        log[prev_index + i] if t == log_terms_at(log, prev_index + i) else LogEntry(t, f"e{i}")
        for i, t in enumerate(new_terms)
    )
    node.on_message(ctx, "n2", AppendEntries(4, "n2", prev_index, prev_term, new, 0))
    assert log_terms(node) == after
    assert [e.term for e in ctx.storage.load().log] == after, "storage disagrees with memory"


def log_terms_at(log: list[LogEntry], pos: int) -> int | None:
    return log[pos].term if pos < len(log) else None


def test_5_3_a_stale_or_duplicated_append_entries_does_not_truncate_matching_entries():
    """Section 5.5: "if a follower receives an AppendEntries request that includes log entries
    already present in its log, it ignores those entries in the new request" (Figure 2 step
    4: "Append any new entries not already in the log"): a delayed copy of an old request must
    not cut off the entries that followed it."""
    node, ctx = new_node(term=1)
    full = tuple(entries(1, 1, 1, 1))
    node.on_message(ctx, "n2", AppendEntries(1, "n2", 0, 0, full, 0))
    node.on_message(ctx, "n2", AppendEntries(1, "n2", 0, 0, full[:2], 0))
    node.on_message(ctx, "n2", AppendEntries(1, "n2", 1, 1, full[1:3], 0))
    assert node.log.last_index == 4
    assert list(node.log.entries) == list(full)
    assert [r.match_index for _, r in ctx.take(AppendEntriesResponse)] == [4, 2, 3]


FIGURE_7_LEADER = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6]
FIGURE_7_FOLLOWERS = {
    "a": [1, 1, 1, 4, 4, 5, 5, 6, 6],
    "b": [1, 1, 1, 4],
    "c": [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6],
    "d": [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7],
    "e": [1, 1, 1, 4, 4, 4, 4],
    "f": [1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3],
}


def figure_7_pair(follower: list[int]) -> tuple[Wire, RaftNode, RaftNode]:
    """The Figure 7 leader (elected in term 8) and one follower, wired together (n3 is away).
    Entries common to both logs are the same entries (same command)."""
    lead = entries(*FIGURE_7_LEADER)
    fol = [
        lead[i]
        if i < len(lead) and lead[i].term == t and follower[: i + 1] == FIGURE_7_LEADER[: i + 1]
        else LogEntry(t, ("put", "stale", i + 1))
        for i, t in enumerate(follower)
    ]
    leader, lctx = new_node("n1", term=7, log=lead)
    node, fctx = new_node("n2", term=max(follower), log=fol)
    make_leader(leader, lctx)
    assert leader.current_term == 8
    lctx.take(RequestVote)
    return Wire({"n1": (leader, lctx), "n2": (node, fctx)}), leader, node


@pytest.mark.parametrize("case", sorted(FIGURE_7_FOLLOWERS))
def test_5_3_the_leader_forces_the_follower_log_to_duplicate_its_own(case):
    """Section 5.3 (Figure 7): "To bring a follower's log into consistency with its own, the
    leader must find the latest log entry where the two logs agree, delete any entries in the
    follower's log after that point, and send the follower all of the leader's entries after
    that point." """
    wire, leader, follower = figure_7_pair(FIGURE_7_FOLLOWERS[case])
    wire.pump()
    assert leader.commit_index == 11, "the no-op of term 8 is on n1 and n2: a majority of 3"
    leader.on_timer(wire.nodes["n1"][1], "heartbeat")
    wire.pump()
    assert list(follower.log.entries) == list(leader.log.entries)
    assert log_terms(follower) == [*FIGURE_7_LEADER, 8]
    assert follower.commit_index == 11
    stored = wire.nodes["n2"][1].storage.load().log
    assert list(stored) == list(leader.log.entries)


@pytest.mark.parametrize("case", sorted(FIGURE_7_FOLLOWERS))
def test_5_3_after_a_rejection_the_leader_backs_up_next_index_and_retries(case):
    """Section 5.3: "When a leader first comes to power, it initializes all nextIndex values to
    the index just after the last one in its log (11 in Figure 7). ... After a rejection, the
    leader decrements nextIndex and retries the AppendEntries RPC. Eventually nextIndex will
    reach a point where the leader and follower logs match." With the optimization the
    paper suggests ("the follower can include the term of the conflicting entry and the first
    index it stores for that term"), one rejection per conflicting term at most."""
    wire, _, _ = figure_7_pair(FIGURE_7_FOLLOWERS[case])
    wire.pump()
    to_follower = [m for s, d, m in wire.delivered if d == "n2" and isinstance(m, AppendEntries)]
    answers = [m for s, d, m in wire.delivered if d == "n1"]
    assert to_follower[0].prev_log_index == 10, "nextIndex starts after the leader's last entry"
    first_ok = next(i for i, r in enumerate(answers) if r.success)
    probes = [m.prev_log_index for m in to_follower[: first_ok + 1]]
    assert probes == sorted(probes, reverse=True) and len(set(probes)) == len(probes)
    follower = FIGURE_7_FOLLOWERS[case]
    common = next(
        (i for i, (a, b) in enumerate(zip(follower, FIGURE_7_LEADER, strict=False)) if a != b),
        min(len(follower), len(FIGURE_7_LEADER)),
    )
    bound = len(set(follower[common:])) + 1  # one per divergent term, one for a short log
    assert first_ok <= bound, f"{first_ok} rejections for case {case} (at most {bound})"


# ================================================================================== 5.4.1


@pytest.mark.parametrize(
    ("voter_log", "cand_index", "cand_term", "granted"),
    [
        ([1, 1], 2, 1, True),
        ([1, 1], 3, 1, True),
        ([1, 1], 1, 1, False),
        ([1, 1], 0, 0, False),
        ([1, 1], 1, 2, True),
        ([2, 2], 1, 2, False),
        ([2, 2], 5, 1, False),
        ([2, 2], 1, 3, True),
    ],
    ids=[
        "same-log",
        "longer-same-term",
        "length-rule-shorter",
        "length-rule-empty",
        "term-rule-later-term-shorter",
        "length-rule-shorter-2",
        "term-rule-earlier-term-longer",
        "term-rule-later-term",
    ],
)
def test_5_4_1_the_voter_denies_a_candidate_whose_log_is_less_up_to_date(
    voter_log, cand_index, cand_term, granted
):
    """Section 5.4.1: "the voter denies its vote if its own log is more up-to-date than that of
    the candidate. Raft determines which of two logs is more up-to-date by comparing the index
    and term of the last entries in the logs. If the logs have last entries with different
    terms, then the log with the later term is more up-to-date. If the logs end with the same
    term, then whichever log is longer is more up-to-date." """
    node, ctx = new_node(term=3, log=entries(*voter_log))
    node.on_message(ctx, "n2", RequestVote(4, "n2", cand_index, cand_term))
    assert ctx.take() == [("n2", RequestVoteResponse(4, granted))]
    assert node.voted_for == ("n2" if granted else None)
    assert node.current_term == 4, "the larger term is adopted even when the vote is denied"


def test_5_4_1_the_vote_without_log_check_variant_breaks_the_rule():
    """The planted bug ``vote-without-log-check`` is visible here: the same denial becomes a
    vote (so the 5.4.1 tests above can fail)."""
    node, ctx = new_node(term=3, log=entries(2, 2), unsafe="vote-without-log-check")
    node.on_message(ctx, "n2", RequestVote(4, "n2", 5, 1))
    assert ctx.take() == [("n2", RequestVoteResponse(4, True))]


def test_5_4_1_a_stale_node_cannot_win_an_election_in_a_cluster():
    """Section 5.4.1: "Raft uses the voting process to prevent a candidate from winning an
    election unless its log contains all committed entries." A follower that missed commits
    campaigns (pre-vote off) but the up-to-date majority never elects it."""
    sim = make_sim(3, seed=5, pre_vote=False, check_quorum=False)
    assert sim.run_until(lambda: sim.leader() is not None, 3.0)
    leader = sim.leader()
    stale = next(n for n in sim.nodes if n != leader)
    sim.disconnect(stale)
    for i in range(5):
        sim.submit(leader, ("put", "k", i))
    assert sim.run_until(lambda: sim.status(leader)["commit_index"] >= 6, 2.0)
    sim.crash(leader)
    sim.reconnect(stale)
    assert sim.run_until(lambda: sim.leader() is not None, 5.0)
    assert sim.leader() != stale
    assert sim.run_until(lambda: sim.status(stale)["commit_index"] >= 6, 2.0)
    assert sim.protocol(stale).elections_started > 0, "the stale node never campaigned"


# ================================================================================== 5.4.2


def figure_8_leader(unsafe: str | None = None) -> tuple[RaftNode, FakeContext]:
    """Figure 8 (c): S1 was leader of term 2 with entry 2 (term 2) and is leader again in
    term 4; its no-op of term 4 sits at index 3 (the unsafe variant appends no no-op)."""
    node, ctx = new_node(
        "n1", FIVE, term=3, log=entries(1, 2), **({"unsafe": unsafe} if unsafe else {})
    )
    make_leader(node, ctx)
    assert node.current_term == 4
    assert log_terms(node) == ([1, 2] if unsafe else [1, 2, 4])
    ctx.clear()
    return node, ctx


def test_5_4_2_a_leader_never_commits_an_earlier_term_entry_by_counting_replicas():
    """Section 5.4.2 (Figure 8): "Raft never commits log entries from previous terms by
    counting replicas. Only log entries from the leader's current term are committed by
    counting replicas; once an entry from the current term has been committed in this way,
    then all prior entries are committed indirectly because of the Log Matching Property." """
    node, ctx = figure_8_leader()
    ack(node, ctx, "n2", "n3", match=2)  # entry 2 (term 2) is now on S1, S2, S3
    assert node.commit_index == 0
    assert node.last_applied == 0
    ack(node, ctx, "n2", match=3)
    assert node.commit_index == 0, "entry 3 is on only 2 of 5"
    ack(node, ctx, "n3", match=3)
    assert node.commit_index == 3
    assert [i for i, _ in node.applied_entries] == [1, 2, 3]


def test_5_4_2_the_commit_previous_term_variant_commits_by_counting_replicas():
    """The planted bug ``commit-previous-term`` is visible in the Figure 8 setting: the
    entry of term 2 is committed by counting replicas (so the test above can fail)."""
    node, ctx = figure_8_leader("commit-previous-term")
    ack(node, ctx, "n2", "n3", match=2)
    assert node.commit_index == 2


# ============================================================================= Figure 2


def first(events, pred) -> int:
    return next(i for i, e in enumerate(events) if pred(e))


def test_figure_2_term_and_vote_are_durable_before_the_vote_is_sent():
    """Figure 2: "Persistent state on all servers: (Updated on stable storage before
    responding to RPCs) currentTerm, votedFor, log[]". The granted vote's term and votedFor
    are written (synced) before the RequestVoteResponse leaves."""
    node, ctx = new_node(term=1)
    node.on_message(ctx, "n2", RequestVote(2, "n2", 0, 0))
    sent = first(ctx.events, lambda e: e[0] == "send")
    assert ctx.events[sent][2] == RequestVoteResponse(2, True)
    durable = [
        e
        for e in ctx.events[:sent]
        if e[:3] == ("persist", "put", "hard") and e[3] == (2, "n2") and e[4]
    ]
    assert durable, f"vote sent before (2, 'n2') was durably written: {ctx.events}"


def test_figure_2_a_candidate_persists_its_term_and_self_vote_before_asking():
    """Figure 2: currentTerm and votedFor are "updated on stable storage before responding
    to RPCs" - and before the candidate's RequestVote leaves."""
    node, ctx = new_node(term=1)
    node.on_timer(ctx, "election")
    sent = first(ctx.events, lambda e: e[0] == "send")
    persisted = first(ctx.events, lambda e: e[:3] == ("persist", "put", "hard"))
    assert persisted < sent
    assert ctx.events[persisted][3:] == ((2, "n1"), True)


def test_figure_2_a_follower_persists_entries_before_acknowledging_them():
    """Figure 2: log[] is "updated on stable storage before responding to RPCs"."""
    node, ctx = new_node(term=1)
    node.on_message(ctx, "n2", AppendEntries(1, "n2", 0, 0, tuple(entries(1, 1)), 0))
    sent = first(ctx.events, lambda e: e[0] == "send")
    assert ctx.events[sent][2].success
    appended = first(ctx.events, lambda e: e[:2] == ("persist", "append"))
    assert appended < sent
    assert ctx.events[appended][2:] == (1, tuple(entries(1, 1)), True)


@pytest.mark.parametrize(
    ("unsafe", "second_vote"), [(None, False), ("forget-vote-on-restart", True)]
)
def test_figure_2_a_restarted_server_remembers_its_vote(unsafe, second_vote):
    """Figure 2: votedFor is persistent, so a server that crashes after voting cannot vote for
    another candidate in the same term (the ``forget-vote-on-restart`` variant can)."""
    options = {"unsafe": unsafe} if unsafe else {}
    node, ctx = new_node(term=1, log=entries(1), **options)
    node.on_message(ctx, "n2", RequestVote(2, "n2", 1, 1))
    assert ctx.take() == [("n2", RequestVoteResponse(2, True))]
    reborn = DrivenRaftNode("n1", ("n1", "n2", "n3"), node.cfg)
    reborn.on_recover(ctx, ctx.storage.load())
    assert reborn.current_term == 2
    assert list(reborn.log.entries) == entries(1)
    reborn.on_message(ctx, "n3", RequestVote(2, "n3", 1, 1))
    assert ctx.take(RequestVoteResponse) == [("n3", RequestVoteResponse(2, second_vote))]
