"""Nemeses: named, composable fault schedules for the safety phase of a run.

Each nemesis schedules its faults from the simulation's driver stream (part of the seed) between
``start`` and ``stop`` seconds, and undoes all of them in :meth:`Nemesis.heal`, which the
runner calls when the liveness phase begins. Names:

``partition``  random partitions: halves, majority/minority, isolate-leader, bridge, ring
``crash``      crash a random node or the leader, restart it later (a minority at a time)
``loss``       bursts of message loss
``duplicate``  bursts of message duplication
``delay``      slow network periods (long delays, reordering)
``skew``       timer clock skew: some nodes' timers run fast or slow
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from quorumkit.errors import ConfigError

if TYPE_CHECKING:
    from quorumkit.sim.core import Simulation


class Nemesis:
    name = "none"

    def __init__(self, sim: Simulation, start: float, stop: float) -> None:
        self.sim = sim
        self.start = start
        self.stop = stop
        self.log: list[tuple[float, str]] = []

    def schedule(self) -> None:
        """Schedule this nemesis's faults."""

    def heal(self) -> None:
        """Undo every fault (called at the start of the liveness phase)."""

    # helpers
    def _every(self, gap: tuple[float, float], action: Callable[[], None]) -> None:
        sim = self.sim

        def fire() -> None:
            if sim.now >= self.stop:
                return
            action()
            sim.call_after(sim.rng.uniform(*gap), fire)

        sim.call_at(max(sim.now, self.start) + sim.rng.uniform(*gap) / 2, fire)

    def note(self, what: str) -> None:
        self.log.append((self.sim.now, what))


class PartitionNemesis(Nemesis):
    name = "partition"
    shapes = ("halves", "majority-minority", "isolate-leader", "bridge", "ring")

    def schedule(self) -> None:
        self.active = False
        self._every((0.1, 2.0), self.flip)
        self._seen_changes = 0
        self._every((0.005, 0.015), self.watch_leader)

    def watch_leader(self) -> None:
        """Handover windows hide bugs (Raft's Figure 8): now and then, cut off a leader just
        after it is elected, before its first entries are replicated."""
        sim = self.sim
        changes = sim.stats["leader_changes"]
        if changes == self._seen_changes:
            return
        self._seen_changes = changes
        if sim.rng.random() < 0.6:
            sim.call_after(sim.rng.uniform(0.0, 0.08), self.isolate_leader)

    def isolate_leader(self) -> None:
        sim = self.sim
        if sim.now >= self.stop:
            return
        leader = sim.leader()
        if leader is None:
            return
        if self.active:
            sim.heal()
        part = sim.topology.partition_shape("isolate", node=leader)
        sim.partition(part)
        self.active = True
        self.note(f"new leader {part.describe()}")

    def flip(self) -> None:
        sim = self.sim
        if self.active:
            sim.heal()
            self.active = False
            self.note("heal")
            return
        n = len(sim.node_ids)
        shapes = [s for s in self.shapes if (s != "ring" or n >= 4) and (s != "bridge" or n >= 3)]
        # the leader is what most bugs hide behind: isolate it half of the time
        shape = "isolate-leader" if sim.rng.random() < 0.5 else sim.rng.choice(shapes)
        if shape == "isolate-leader":
            leader = sim.leader() or sim.rng.choice(sim.node_ids)
            part = sim.topology.partition_shape("isolate", node=leader)
        else:
            part = sim.topology.partition_shape(shape, rng=sim.rng)
        sim.partition(part)
        self.active = True
        self.note(part.describe())

    def heal(self) -> None:
        self.sim.heal()


class CrashNemesis(Nemesis):
    name = "crash"

    def schedule(self) -> None:
        self.down: list[str] = []
        self._every((0.5, 2.5), self.strike)
        self._every((0.2, 1.0), self.bounce)

    def bounce(self) -> None:
        """kill -9 and an immediate restart of a random running node."""
        sim = self.sim
        up = [n for n in sim.up_nodes() if n not in self.down]
        if len(up) <= (len(sim.node_ids) + 1) // 2:
            return
        node = sim.rng.choice(up)
        sim.crash(node)
        self.note(f"bounce {node}")
        sim.call_after(sim.rng.uniform(0.005, 0.1), lambda: self._bounce(node))

    def strike(self) -> None:
        sim = self.sim
        if self.down and (sim.rng.random() < 0.5 or len(self.down) >= (len(sim.node_ids) - 1) // 2):
            node = self.down.pop(sim.rng.randrange(len(self.down)))
            sim.restart(node)
            self.note(f"restart {node}")
            return
        if len(self.down) >= (len(sim.node_ids) - 1) // 2:
            return
        up = [n for n in sim.up_nodes() if n not in self.down]
        if not up:
            return
        leader = sim.leader()
        node = leader if leader in up and sim.rng.random() < 0.6 else sim.rng.choice(up)
        sim.crash(node)
        self.note(f"crash {node}")
        self.down.append(node)

    def _bounce(self, node: str) -> None:
        if not self.sim.is_up(node) and node not in self.down:
            self.sim.restart(node)
            self.note(f"restart {node}")

    def heal(self) -> None:
        for node in self.down:
            self.sim.restart(node)
            self.note(f"restart {node}")
        self.down = []


class _Burst(Nemesis):
    attr = ""
    values: tuple[float, float] = (0.0, 0.0)

    def schedule(self) -> None:
        self.base = getattr(self.sim.network, self.attr)
        self.on = False
        self._every((0.5, 2.0), self.flip)

    def flip(self) -> None:
        net = self.sim.network
        if self.on:
            setattr(net, self.attr, self.base)
            self.note(f"{self.attr}={self.base:g}")
        else:
            value = self.sim.rng.uniform(*self.values)
            setattr(net, self.attr, value)
            self.note(f"{self.attr}={value:.3g}")
        self.on = not self.on

    def heal(self) -> None:
        setattr(self.sim.network, self.attr, self.base)


class LossNemesis(_Burst):
    name = "loss"
    attr = "loss_rate"
    values = (0.2, 0.6)


class DuplicateNemesis(_Burst):
    name = "duplicate"
    attr = "duplicate_rate"
    values = (0.1, 0.5)


class DelayNemesis(Nemesis):
    name = "delay"

    def schedule(self) -> None:
        net = self.sim.network
        self.base = (net.delay_min, net.delay_max, net.reorder)
        self.on = False
        self._every((0.5, 2.0), self.flip)

    def flip(self) -> None:
        net = self.sim.network
        if self.on:
            self.heal()
            self.note("delay normal")
        else:
            net.delay_max = max(self.base[1], self.sim.rng.uniform(0.05, 0.3))
            net.reorder = self.sim.rng.uniform(0.0, 0.2)
            self.note(f"delay_max={net.delay_max:.3f} reorder={net.reorder:.2f}")
        self.on = not self.on

    def heal(self) -> None:
        net = self.sim.network
        net.delay_min, net.delay_max, net.reorder = self.base
        self.on = False


class SkewNemesis(Nemesis):
    name = "skew"

    def schedule(self) -> None:
        self._every((1.0, 3.0), self.skew)

    def skew(self) -> None:
        sim = self.sim
        node = sim.rng.choice(sim.node_ids)
        factor = sim.rng.choice((0.5, 0.75, 1.0, 1.5, 2.0))
        sim.set_clock_skew(node, factor)
        self.note(f"skew {node} x{factor}")

    def heal(self) -> None:
        for node in self.sim.node_ids:
            self.sim.set_clock_skew(node, 1.0)


NEMESES: dict[str, type[Nemesis]] = {
    cls.name: cls
    for cls in (
        PartitionNemesis,
        CrashNemesis,
        LossNemesis,
        DuplicateNemesis,
        DelayNemesis,
        SkewNemesis,
    )
}


def parse_nemeses(spec: str | Sequence[str] | None) -> list[str]:
    """``"partition,crash"`` -> ``["partition", "crash"]``; validates the names."""
    if spec is None:
        return []
    names = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
    names = [n for n in names if n and n != "none"]
    for n in names:
        if n not in NEMESES:
            raise ConfigError(f"unknown nemesis {n!r} (choose from {', '.join(NEMESES)})")
    return list(dict.fromkeys(names))


def build_nemeses(
    sim: Simulation, names: Sequence[str], start: float, stop: float
) -> list[Nemesis]:
    out = [NEMESES[n](sim, start, stop) for n in names]
    for nem in out:
        nem.schedule()
    return out
