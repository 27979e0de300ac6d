"""Raft's safety properties (paper Figure 3, and Figure 2's one vote per term) as checks over
the states of all nodes.

The checker is incremental: it keeps, across steps, what every property needs (the leader of
each term, every committed and applied entry, the predecessor term of every (index, term)), and
looks only at what changed since the previous step, so it can run after every simulator event.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from quorumkit.errors import InvariantViolation
from quorumkit.protocol import InvariantChecker
from quorumkit.protocols.raft.log import INF

if TYPE_CHECKING:
    from quorumkit.protocols.raft.messages import LogEntry
    from quorumkit.protocols.raft.node import RaftNode

ELECTION_SAFETY = "election safety"
LEADER_APPEND_ONLY = "leader append-only"
LOG_MATCHING = "log matching"
LEADER_COMPLETENESS = "leader completeness"
STATE_MACHINE_SAFETY = "state machine safety"
ONE_VOTE_PER_TERM = "one vote per term"


class RaftChecker(InvariantChecker):
    """Figure 3: election safety, leader append-only, log matching, leader completeness and
    state machine safety."""

    names = (
        ELECTION_SAFETY,
        LEADER_APPEND_ONLY,
        LOG_MATCHING,
        LEADER_COMPLETENESS,
        STATE_MACHINE_SAFETY,
        ONE_VOTE_PER_TERM,
    )

    def __init__(self) -> None:
        self.leader_of_term: dict[int, str] = {}
        self.leader_tail: dict[tuple[str, int], tuple[int, Any]] = {}
        self.entry_at: dict[tuple[int, int], tuple[LogEntry, int]] = {}
        self.committed: dict[int, LogEntry] = {}
        # the lowest term in which each index was seen committed (by the committing leader
        # first, in the same step): leader completeness binds leaders of later terms only
        self.commit_term: dict[int, int] = {}
        self.max_committed = 0
        self.applied: dict[int, LogEntry] = {}
        self._commit_cursor: dict[str, tuple[object, int]] = {}
        self._apply_cursor: dict[str, tuple[object, int]] = {}
        self._leader_checked: dict[str, tuple[object, int, int]] = {}
        self.vote_of: dict[tuple[str, int], str] = {}

    def check(self, nodes: Mapping[str, Any]) -> None:
        for node_id, node in nodes.items():
            if node is None:
                continue
            self._check_vote(node_id, node)
            self._check_log_matching(node_id, node)
            self._record_commits(node_id, node)
            self._record_applies(node_id, node)
        for node_id, node in nodes.items():
            if node is not None and node.role.value == "leader":
                self._check_leader(node_id, node)

    # Figure 3: "at most one leader can be elected in a given term"
    # Figure 3: "a leader never overwrites or deletes entries in its log"
    # Figure 3: "if a log entry is committed in a given term, that entry will be present in
    #            the logs of the leaders for all higher-numbered terms"
    def _check_leader(self, node_id: str, node: RaftNode) -> None:
        term = node.current_term
        first = self.leader_of_term.setdefault(term, node_id)
        if first != node_id:
            raise InvariantViolation(
                ELECTION_SAFETY, f"{first} and {node_id} are both leaders of term {term}"
            )
        log = node.log
        key = (node_id, term)
        seen = self.leader_tail.get(key)
        if seen is not None:
            last, entry = seen
            if log.last_index < last:
                raise InvariantViolation(
                    LEADER_APPEND_ONLY,
                    f"leader {node_id} of term {term}: log shrank from {last} to {log.last_index}",
                )
            if last > log.snapshot_index and log.entry(last) is not entry:
                raise InvariantViolation(
                    LEADER_APPEND_ONLY,
                    f"leader {node_id} of term {term} overwrote its entry {last}",
                )
        if log.last_index > log.snapshot_index:
            self.leader_tail[key] = (log.last_index, log.entry(log.last_index))
        checked = self._leader_checked.get(node_id)
        start = (
            checked[2] if checked is not None and checked[0] is node and checked[1] == term else 0
        )
        for index in range(max(start + 1, log.first_index), self.max_committed + 1):
            want = self.committed.get(index)
            if want is None or self.commit_term[index] >= term:
                continue
            if index > log.last_index or log.entry(index) != want:
                raise InvariantViolation(
                    LEADER_COMPLETENESS,
                    f"leader {node_id} of term {term} lacks committed entry {index} "
                    f"(term {want.term})",
                )
        self._leader_checked[node_id] = (node, term, max(self.max_committed, start))

    # Figure 2 (RequestVote receiver, step 2) and section 5.2: "each server will vote for at
    # most one candidate in a given term" - across restarts, since votedFor is persistent.
    def _check_vote(self, node_id: str, node: RaftNode) -> None:
        voted = node.voted_for
        if voted is None:
            return
        key = (node_id, node.current_term)
        first = self.vote_of.setdefault(key, voted)
        if first != voted:
            raise InvariantViolation(
                ONE_VOTE_PER_TERM,
                f"{node_id} voted for {first} and then for {voted} in term {node.current_term}",
            )

    # Figure 3: "if two logs contain an entry with the same index and term, then the logs are
    # identical in all entries up through the given index". Checked inductively: an
    # (index, term) pair always names the same entry and the same predecessor term.
    def _check_log_matching(self, node_id: str, node: RaftNode) -> None:
        log = node.log
        start = max(log.dirty_from, log.first_index)
        log.dirty_from = INF
        if start > log.last_index:
            return
        prev_term = log.term_at(start - 1) or 0
        entry_at = self.entry_at
        for index in range(start, log.last_index + 1):
            entry = log.entry(index)
            key = (index, entry.term)
            known = entry_at.get(key)
            if known is None:
                entry_at[key] = (entry, prev_term)
            elif known[1] != prev_term or known[0] != entry:
                raise InvariantViolation(
                    LOG_MATCHING,
                    f"{node_id} holds entry {index} of term {entry.term} after an entry of term "
                    f"{prev_term}, but another log has it after term {known[1]}"
                    if known[1] != prev_term
                    else f"{node_id} holds a different entry {index} of term {entry.term}",
                )
            prev_term = entry.term

    # Figure 3: "if a server has applied a log entry at a given index to its state machine, no
    # other server will ever apply a different log entry for the same index"
    def _record_commits(self, node_id: str, node: RaftNode) -> None:
        token = node  # a restarted node is a new object; id() of a freed one may be reused
        cursor = self._commit_cursor.get(node_id)
        done = cursor[1] if cursor is not None and cursor[0] is token else 0
        log = node.log
        upto = node.commit_index
        if upto <= done:
            return
        for index in range(max(done + 1, log.first_index), upto + 1):
            entry = log.entry(index)
            known = self.committed.setdefault(index, entry)
            if self.commit_term.get(index, INF) > node.current_term:
                self.commit_term[index] = node.current_term
            if known != entry:
                raise InvariantViolation(
                    STATE_MACHINE_SAFETY,
                    f"{node_id} committed entry {index} of term {entry.term}, but entry {index} "
                    f"of term {known.term} was committed before",
                )
        self.max_committed = max(self.max_committed, upto)
        self._commit_cursor[node_id] = (token, upto)

    def _record_applies(self, node_id: str, node: RaftNode) -> None:
        token = node  # a restarted node is a new object; id() of a freed one may be reused
        cursor = self._apply_cursor.get(node_id)
        pos = cursor[1] if cursor is not None and cursor[0] is token else 0
        applied = node.applied_entries
        for index, entry in applied[pos:]:
            known = self.applied.setdefault(index, entry)
            if known != entry:
                raise InvariantViolation(
                    STATE_MACHINE_SAFETY,
                    f"{node_id} applied entry {index} of term {entry.term}, another server "
                    f"applied entry {index} of term {known.term}",
                )
        self._apply_cursor[node_id] = (token, len(applied))
