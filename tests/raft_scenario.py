"""A fixed, randomized Raft scenario that every known-unsafe variant must fail.

:func:`run_scenario` drives a checked 5-node cluster for ``duration`` simulated seconds:

* clients: in active periods, a command every few milliseconds at every node that believes it
  leads (stale leaders too, so minority logs diverge); quiet periods in between, so a new
  leader may sit on entries of earlier terms without any entry of its own (Figure 8's setting);
* leader-hopping isolation: the leader is cut off (alone or with one follower) and given a
  burst of commands; each of the next few leaders is cut off the same way a few milliseconds
  after it takes office. This leaves entries of successive terms on different minorities and
  lets an older tail win an election over a newer one - the situations of Figure 8;
* crashes and restarts (durable storage kept: nothing is lost), a leader crashed right after
  a burst (its entries reach a minority), new leaders crashed within milliseconds of taking
  office, voters bounced (crash and quick restart) while an election runs;
* short partitions into halves, and heals.

Every choice comes from ``random.Random(seed)`` and every fault from the simulator's seeded
streams: one seed, one run. The result is the name of the first invariant the RaftChecker
found violated, or None. Only the public quorumkit API is used, so a benchmark script can
import this module (add ``tests/`` to ``sys.path``).
"""

from __future__ import annotations

import random
from typing import Any

from quorumkit.errors import InvariantViolation
from quorumkit.sim.core import Simulation

NODES = 5
DURATION_S = 15.0

# client traffic
CLIENT_GAP_S = (0.005, 0.03)
PERIOD_S = (0.2, 2.0)
QUIET_P = 0.7
# nemesis
NEMESIS_GAP_S = (0.05, 0.4)
ACTIONS = ("crash", "crash-leader-after-burst", "isolate-leader", "partition", "heal", "hop")
WEIGHTS = (2, 2, 1, 1, 1, 6)
DOWN_S = (0.05, 0.8)
PARTITION_S = (0.05, 1.0)
HOPS = (2, 4)
HOP_DELAY_S = 0.03
NEW_LEADER_CRASH_P = 0.3
BOUNCE_P = 0.3
WATCH_GAP_S = 0.004


def scenario_options(rng: random.Random) -> dict[str, Any]:
    """Raft options and network of one run (the first draws of the seed's stream)."""
    return {
        "pre_vote": rng.random() < 0.5,
        "check_quorum": rng.random() < 0.5,
        "max_entries_per_append": rng.choice((1, 2, 4, 64)),
        "delay_min": 0.001,
        "delay_max": rng.choice((0.005, 0.012, 0.025)),
    }


class Scenario:
    """The client and fault schedule of one run (see the module docstring)."""

    def __init__(self, sim: Simulation, rng: random.Random, duration: float) -> None:
        self.sim = sim
        self.rng = rng
        self.duration = duration
        self.nodes = list(sim.nodes)
        self.next_cmd = 0
        self.seen_leaders: set[tuple[str, int]] = set()
        self.partition_token = 0
        self.hops_left = 0
        self.quiet_until = 0.0
        self.active_until = 0.0
        self.submitted = 0

    # -- observing ---------------------------------------------------------------------
    def role(self, node: str) -> str | None:
        proto = self.sim.protocol(node)
        return None if proto is None else proto.role.value

    def leaders(self) -> list[tuple[str, int]]:
        """(node, term) of every running node that believes it leads."""
        out = []
        for n in self.nodes:
            proto = self.sim.protocol(n)
            if proto is not None and proto.role.value == "leader":
                out.append((n, proto.current_term))
        return out

    def is_leader_of(self, node: str, term: int) -> bool:
        proto = self.sim.protocol(node)
        return proto is not None and proto.role.value == "leader" and proto.current_term == term

    # -- acting ------------------------------------------------------------------------
    def later(self, delay: float, fn: Any) -> None:
        if self.sim.now + delay < self.duration:
            self.sim.call_after(delay, fn)

    def submit_burst(self, node: str, count: int) -> None:
        for _ in range(count):
            self.next_cmd += 1
            self.sim.submit(node, ("put", f"k{self.next_cmd % 7}", self.next_cmd))
            self.submitted += 1

    def crash_for(self, node: str, down_s: float) -> None:
        if self.sim.is_up(node):
            self.sim.crash(node)
            self.sim.call_after(down_s, lambda: self.sim.restart(node))

    def cut_off(self, group: list[str]) -> None:
        """Partition ``group`` from the rest (replacing any partition); heal it later unless
        a newer partition replaced it or leader hopping is under way."""
        sim = self.sim
        sim.heal()
        sim.partition(group)
        self.partition_token += 1
        token = self.partition_token
        sim.call_after(
            self.rng.uniform(*PARTITION_S),
            lambda: token == self.partition_token and self.hops_left == 0 and sim.heal(),
        )

    def isolate(self, node: str, term: int) -> None:
        """Cut the leader ``node`` off (alone or with one follower) and give it a burst."""
        if not self.is_leader_of(node, term):
            return
        rng = self.rng
        others = [n for n in self.nodes if n != node]
        self.cut_off([node, *rng.sample(others, rng.randint(0, 1))])
        self.submit_burst(node, rng.randint(1, 8))

    # -- the schedule --------------------------------------------------------------------
    def client(self) -> None:
        now = self.sim.now
        if now >= self.quiet_until:
            if now >= self.active_until:
                span = self.rng.uniform(*PERIOD_S)
                if self.rng.random() < QUIET_P:
                    self.quiet_until = now + span
                else:
                    self.active_until = now + span
            for node, _ in self.leaders():
                self.submit_burst(node, 1)
        self.later(self.rng.uniform(*CLIENT_GAP_S), self.client)

    def watch(self) -> None:
        """React to elections: hop the isolation to a new leader, or crash it soon; bounce
        a voter while an election runs."""
        rng = self.rng
        for node, term in self.leaders():
            if (node, term) in self.seen_leaders:
                continue
            self.seen_leaders.add((node, term))
            if self.hops_left > 0:
                self.hops_left -= 1
                self.later(
                    rng.uniform(0.001, HOP_DELAY_S), lambda n=node, t=term: self.isolate(n, t)
                )
            elif rng.random() < NEW_LEADER_CRASH_P:
                self.later(
                    rng.uniform(0.001, 0.03),
                    lambda n=node, t=term: (
                        self.is_leader_of(n, t) and self.crash_for(n, rng.uniform(*DOWN_S))
                    ),
                )
        if rng.random() < BOUNCE_P and any(self.role(n) == "candidate" for n in self.nodes):
            voters = [
                n
                for n in self.nodes
                if self.role(n) in ("follower", "pre-candidate")
                and self.sim.protocol(n).voted_for is not None
            ]
            if voters:
                self.crash_for(rng.choice(voters), rng.uniform(0.001, 0.02))
        self.later(WATCH_GAP_S, self.watch)

    def nemesis(self) -> None:
        rng = self.rng
        action = rng.choices(ACTIONS, weights=WEIGHTS)[0]
        leaders = self.leaders()
        up = [n for n in self.nodes if self.sim.is_up(n)]
        if action == "crash":
            if len(up) > NODES // 2 + 1:
                self.crash_for(rng.choice(up), rng.uniform(*DOWN_S))
        elif action == "crash-leader-after-burst":
            if leaders:
                node, term = rng.choice(leaders)
                self.submit_burst(node, rng.randint(1, 8))
                self.sim.call_after(
                    rng.uniform(0.0, 0.01),
                    lambda: (
                        self.is_leader_of(node, term) and self.crash_for(node, rng.uniform(*DOWN_S))
                    ),
                )
        elif action in ("isolate-leader", "hop") and leaders:
            if action == "hop" and self.hops_left == 0:
                self.hops_left = rng.randint(*HOPS)
            self.isolate(*rng.choice(leaders))
        elif action in ("isolate-leader", "hop", "partition"):
            shuffled = rng.sample(self.nodes, NODES)
            self.cut_off(shuffled[: NODES // 2])
        else:
            self.sim.heal()
        self.later(rng.uniform(*NEMESIS_GAP_S), self.nemesis)

    def run(self) -> None:
        self.client()
        self.watch()
        self.sim.call_after(self.rng.uniform(0.3, 0.6), self.nemesis)
        self.sim.run_to(self.duration)
        # the end: everything back, a quiet second for the last commits to be checked
        self.hops_left = 0
        self.sim.heal()
        for n in self.nodes:
            self.sim.restart(n)
        self.sim.run(1.0)


def make_simulation(
    seed: int, unsafe: str | None = None, *, trace: str = "off"
) -> tuple[Simulation, random.Random]:
    """The checked simulation of ``seed`` and the scenario's random stream."""
    rng = random.Random(seed)
    sim = Simulation(
        "raft",
        nodes=NODES,
        seed=seed,
        check_invariants=True,
        trace=trace,
        unsafe=[unsafe] if unsafe else [],
        **scenario_options(rng),
    )
    return sim, rng


def run_scenario(
    seed: int, unsafe: str | None = None, *, duration: float = DURATION_S
) -> str | None:
    """Run the scenario of ``seed`` (with the planted bug ``unsafe``, if any); return the
    name of the violated invariant, or None when the run stayed safe."""
    sim, rng = make_simulation(seed, unsafe)
    try:
        Scenario(sim, rng, duration).run()
    except InvariantViolation as exc:
        return exc.invariant
    return None
