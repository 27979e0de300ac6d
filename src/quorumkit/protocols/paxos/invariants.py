"""Multi-Paxos's safety properties ("Paxos Made Simple", section 2.1) as checks over the states
of all nodes.

A value is *chosen* for a slot once a majority of acceptors have accepted it with one ballot
(section 2.2). The checker builds that from the acceptors' states: every (slot, ballot, value)
an acceptor ever held is recorded with the set of acceptors that held it, across crashes and
restarts. It is incremental: each step it looks only at the slots an acceptor changed since the
last step (``SlotLog.dirty_from``), the decided prefix and the applied slots that grew, so it
can run after every simulator event.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from quorumkit.errors import InvariantViolation
from quorumkit.protocol import InvariantChecker
from quorumkit.protocols.paxos.log import INF

if TYPE_CHECKING:
    from quorumkit.protocols.paxos.messages import Ballot, Value
    from quorumkit.protocols.paxos.node import PaxosNode

ONE_VALUE_PER_BALLOT = "one value per ballot"
ONE_VALUE_CHOSEN = "one value chosen per slot"
PROMISES_NEVER_DECREASE = "promised ballots never decrease"
LEARNED_VALUE_CHOSEN = "learned values agree"
STATE_MACHINE_SAFETY = "state machine safety"


class PaxosChecker(InvariantChecker):
    """Section 2.1's safety requirements per slot (only a proposed value is chosen, at most
    one value is chosen, a process learns only a chosen value), and what they rest on."""

    names = (
        ONE_VALUE_PER_BALLOT,
        ONE_VALUE_CHOSEN,
        PROMISES_NEVER_DECREASE,
        LEARNED_VALUE_CHOSEN,
        STATE_MACHINE_SAFETY,
    )

    def __init__(self) -> None:
        self.promised: dict[str, Ballot] = {}
        #: (slot, ballot) -> (value, acceptors that accepted it)
        self.accepted: dict[tuple[int, Ballot], tuple[Value, set[str]]] = {}
        #: slot -> (value, the first ballot it was seen chosen at)
        self.chosen: dict[int, tuple[Value, Ballot]] = {}
        #: slot -> (value, node) of the first node seen to learn it decided
        self.decided: dict[int, tuple[Value, str]] = {}
        self.applied: dict[int, tuple[Value, str]] = {}
        self._log_token: dict[str, object] = {}
        self._decided_cursor: dict[str, tuple[object, int]] = {}
        self._apply_cursor: dict[str, tuple[object, int]] = {}

    def check(self, nodes: Mapping[str, Any]) -> None:
        majority = len(nodes) // 2 + 1
        for node_id, node in nodes.items():
            if node is None or node.is_byzantine:
                continue
            self._check_promise(node_id, node)
            self._record_acceptances(node_id, node, majority)
            self._record_decisions(node_id, node)
            self._record_applies(node_id, node)

    # Section 2.3: an acceptor remembers its promises even if it fails and restarts; so the
    # promised ballot of every acceptor only grows, across restarts too.
    def _check_promise(self, node_id: str, node: PaxosNode) -> None:
        now = node.promised
        before = self.promised.get(node_id)
        if before is not None and now < before:
            raise InvariantViolation(
                PROMISES_NEVER_DECREASE,
                f"{node_id} promised ballot {list(before)} and later only {list(now)}",
            )
        self.promised[node_id] = now

    # Section 2.2: a proposer sends one value per proposal number, so every acceptor that
    # accepted (slot, ballot) holds the same value; a majority of them makes it chosen, and
    # "only a single value is chosen" (section 2.1).
    def _record_acceptances(self, node_id: str, node: PaxosNode, majority: int) -> None:
        log = node.log
        token = node  # a restarted node is a new object; id() of a freed one may be reused
        if self._log_token.get(node_id) is not token:
            self._log_token[node_id] = token
            start = log.start
        else:
            start = max(log.dirty_from, log.start)
        log.dirty_from = INF
        accepted = self.accepted
        for slot in range(start, log.last_slot + 1):
            entry = log.get(slot)
            if entry is None:
                continue
            key = (slot, entry.ballot)
            known = accepted.get(key)
            if known is None:
                known = (entry.value, {node_id})
                accepted[key] = known
            else:
                if known[0] != entry.value:
                    raise InvariantViolation(
                        ONE_VALUE_PER_BALLOT,
                        f"{node_id} accepted {entry.value!r:.80} for slot {slot} at ballot "
                        f"{list(entry.ballot)}, another acceptor {known[0]!r:.80}",
                    )
                known[1].add(node_id)
            if len(known[1]) >= majority:
                self._choose(slot, entry.value, entry.ballot)

    def _choose(self, slot: int, value: Value, ballot: Ballot) -> None:
        first = self.chosen.get(slot)
        if first is None:
            self.chosen[slot] = (value, ballot)
            learned = self.decided.get(slot)
            if learned is not None and learned[0] != value:
                raise InvariantViolation(
                    LEARNED_VALUE_CHOSEN,
                    f"{learned[1]} learned {learned[0]!r:.80} for slot {slot}, but "
                    f"{value!r:.80} was chosen at ballot {list(ballot)}",
                )
        elif first[0] != value:
            raise InvariantViolation(
                ONE_VALUE_CHOSEN,
                f"slot {slot}: {first[0]!r:.80} was chosen at ballot {list(first[1])}, then "
                f"{value!r:.80} at ballot {list(ballot)}",
            )

    # Section 2.1: "a process never learns that a value has been chosen unless it actually
    # has been"; so learners agree on every decided slot, and with the chosen value.
    def _record_decisions(self, node_id: str, node: PaxosNode) -> None:
        token = node  # a restarted node is a new object; id() of a freed one may be reused
        cursor = self._decided_cursor.get(node_id)
        done = cursor[1] if cursor is not None and cursor[0] is token else 0
        upto = node.commit
        if upto <= done:
            return
        log = node.log
        for slot in range(max(done + 1, log.start), upto + 1):
            entry = log.get(slot)
            if entry is None:
                raise InvariantViolation(
                    LEARNED_VALUE_CHOSEN, f"{node_id} decided slot {slot} without a value"
                )
            value = entry.value
            first = self.decided.setdefault(slot, (value, node_id))
            if first[0] != value:
                raise InvariantViolation(
                    LEARNED_VALUE_CHOSEN,
                    f"{node_id} learned {value!r:.80} for slot {slot}, {first[1]} learned "
                    f"{first[0]!r:.80}",
                )
            chosen = self.chosen.get(slot)
            if chosen is not None and chosen[0] != value:
                raise InvariantViolation(
                    LEARNED_VALUE_CHOSEN,
                    f"{node_id} learned {value!r:.80} for slot {slot}, but {chosen[0]!r:.80} "
                    f"was chosen at ballot {list(chosen[1])}",
                )
        self._decided_cursor[node_id] = (token, upto)

    # Section 3: every server executes the same sequence of commands.
    def _record_applies(self, node_id: str, node: PaxosNode) -> None:
        token = node  # a restarted node is a new object; id() of a freed one may be reused
        cursor = self._apply_cursor.get(node_id)
        pos = cursor[1] if cursor is not None and cursor[0] is token else 0
        applied = node.applied
        for slot, value in applied[pos:]:
            first = self.applied.setdefault(slot, (value, node_id))
            if first[0] != value:
                raise InvariantViolation(
                    STATE_MACHINE_SAFETY,
                    f"{node_id} applied {value!r:.80} at slot {slot}, {first[1]} applied "
                    f"{first[0]!r:.80}",
                )
        self._apply_cursor[node_id] = (token, len(applied))
