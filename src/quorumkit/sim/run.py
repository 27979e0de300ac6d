"""One checked simulation run, as ``quorumkit sim`` performs it.

A run has three phases (as TigerBeetle's VOPR and Jepsen do):

1. **safety**: clients issue a workload while the nemeses inject faults; the protocol's
   invariants are checked after every event;
2. **liveness**: every fault is healed (crashed nodes restart, partitions heal, the network is
   reliable again); some client operation must complete within ``liveness_timeout_s``, else the
   run fails with "no progress";
3. **quiet**: clients stop; every running replica must reach the same applied state
   (convergence, spec Definition 2.1), and the history must be linearizable.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from quorumkit.errors import ConfigError, InvariantViolation
from quorumkit.sim.clients import ClientPool, Workload
from quorumkit.sim.core import Simulation
from quorumkit.sim.nemesis import Nemesis, build_nemeses, parse_nemeses


@dataclass(frozen=True)
class RunOptions:
    """Everything that determines a run (with the seed)."""

    protocol: str = "raft"
    nodes: int = 5
    seed: int = 1
    duration: float = 10.0
    clients: int = 5
    rate: float = 50.0
    keys: int = 5
    read_ratio: float = 0.5
    nemesis: tuple[str, ...] = ()
    loss: float = 0.0
    unsafe: str | None = None
    liveness_timeout_s: float = 10.0
    record: bool = False  # keep the full trace (for reports)
    check_linearizability: bool = True
    protocol_options: tuple[tuple[str, Any], ...] = field(default_factory=tuple)
    #: how many nodes run ``behaviour`` (the first ones: n1 is the first primary/leader)
    byzantine: int = 0
    behaviour: str = "equivocate"

    def byzantine_nodes(self) -> dict[str, str]:
        """Node id -> behaviour for the byzantine nodes of this run."""
        return {f"n{i}": self.behaviour for i in range(1, self.byzantine + 1)}

    def replay_command(self) -> str:
        parts = [
            f"quorumkit sim {self.protocol}",
            f"--nodes {self.nodes}",
            f"--seed {self.seed}",
            f"--duration {self.duration:g}",
            f"--clients {self.clients}",
            f"--rate {self.rate:g}",
        ]
        if self.nemesis:
            parts.append(f"--nemesis {','.join(self.nemesis)}")
        if self.loss:
            parts.append(f"--loss {self.loss:g}")
        if self.unsafe:
            parts.append(f"--unsafe {self.unsafe}")
        if self.byzantine:
            parts.append(f"--byzantine {self.byzantine} --behaviour {self.behaviour}")
        return " ".join(parts)


@dataclass
class RunResult:
    options: RunOptions
    summary: dict[str, Any]
    sim: Simulation
    pool: ClientPool
    nemeses: list[Nemesis]
    violation_at: float | None = None
    linearizability: Any = None

    @property
    def ok(self) -> bool:
        return bool(self.summary["ok"])


def validate_options(opts: RunOptions) -> None:
    if not opts.duration > 0:
        raise ConfigError(f"--duration must be > 0 seconds, got {opts.duration}")
    if opts.nodes < 1:
        raise ConfigError(f"--nodes must be >= 1, got {opts.nodes}")
    if not 0 <= opts.loss <= 1:
        raise ConfigError(f"--loss must be a rate in [0, 1], got {opts.loss}")
    parse_nemeses(list(opts.nemesis))
    if not 0 <= opts.byzantine <= opts.nodes:
        raise ConfigError(f"--byzantine must be in [0, {opts.nodes}], got {opts.byzantine}")


def run(opts: RunOptions) -> RunResult:
    """Run the three phases and check everything; never raises for a failed check."""
    validate_options(opts)
    proto_opts = dict(opts.protocol_options)
    if opts.unsafe:
        proto_opts["unsafe"] = opts.unsafe
    sim = Simulation(
        opts.protocol,
        nodes=opts.nodes,
        seed=opts.seed,
        loss_rate=opts.loss,
        check_invariants=True,
        trace="full" if opts.record else "hash",
        byzantine=opts.byzantine_nodes(),
        **proto_opts,
    )
    client_ok = hasattr(sim.protocol_cls, "submit")
    workload = Workload(
        clients=opts.clients if client_ok else 0,
        rate_per_s=opts.rate,
        keys=opts.keys,
        read_ratio=opts.read_ratio,
    )
    pool = ClientPool(sim, workload)
    pool.start()
    nemeses = build_nemeses(sim, list(opts.nemesis), start=1.0, stop=opts.duration)
    checker = sim._checker
    names = list(checker.names) if checker is not None else []
    violations: list[str] = []
    failed_invariants: set[str] = set()
    violation_at: float | None = None
    progress = None
    converged: bool | None = None
    wall0 = time.perf_counter()
    events0 = sim.stats["events"]

    try:
        # 1. safety phase
        sim.run_to(opts.duration)
        # 2. liveness phase
        for nem in nemeses:
            nem.heal()
        sim.network.loss_rate = opts.loss
        healed_at = sim.now
        if workload.clients:
            progress = sim.run_until(lambda: pool.ok_since(healed_at) > 0, opts.liveness_timeout_s)
            if not progress:
                violations.append(
                    f"no progress: no client operation completed within "
                    f"{opts.liveness_timeout_s:g} s after every fault was healed at "
                    f"t={healed_at:.3f}s"
                )
        # 3. quiet phase
        pool.stop()
        sim.run_until(lambda: all(c.current is None for c in pool.clients), 10.0)
        converged = sim.run_until(lambda: _converged(sim), 10.0)
        if not converged:
            violations.append(
                "not converged: running replicas did not reach the same state "
                "(Definition 2.1) within 10 s of quiet"
            )
    except InvariantViolation as exc:
        violations.insert(0, str(exc))
        failed_invariants.add(exc.invariant)
        violation_at = sim.now
    wall = max(time.perf_counter() - wall0, 1e-9)

    lin_result = None
    linearizable: bool | None = None
    if opts.check_linearizability and workload.clients and violation_at is None:
        from quorumkit.check import Operation, check_linearizability

        ops = [Operation(r.client, r.call, r.ret, r.input, r.output) for r in pool.history()]
        lin_result = check_linearizability(ops, model="kv", timeout=60.0)
        linearizable = lin_result.ok
        if lin_result.ok is False:
            violations.append(str(lin_result.explanation))
        elif lin_result.ok is None:
            violations.append("linearizability check timed out (verdict unknown)")

    s = sim.stats
    dropped = s["dropped_loss"] + s["dropped_partition"] + s["dropped_omission"] + s["dropped_down"]
    summary: dict[str, Any] = {
        "protocol": opts.protocol,
        "nodes": opts.nodes,
        "seed": opts.seed,
        "duration": opts.duration,
        "nemesis": list(opts.nemesis),
        "unsafe": opts.unsafe,
        "byzantine": opts.byzantine_nodes(),
        "ok": not violations,
        "ops": pool.counts(),
        "linearizable": linearizable,
        "invariants": {n: n not in failed_invariants for n in names},
        "converged": converged,
        "progress_after_heal": progress,
        "violations": violations,
        "leader_changes": s["leader_changes"],
        "leader": sim.leader(),
        "messages": {"sent": s["sent"], "delivered": s["delivered"], "dropped": dropped},
        "events": s["events"] - events0,
        "events_per_second": int((s["events"] - events0) / wall),
        "invariant_checks": sim.invariant_checks,
        "simulated_seconds": round(sim.now, 6),
        "wall_seconds": round(wall, 3),
        "trace_hash": sim.trace_hash(),
        "replay": opts.replay_command(),
        "status": {n: sim.status(n) for n in sim.nodes},
    }
    return RunResult(opts, summary, sim, pool, nemeses, violation_at, lin_result)


def _converged(sim: Simulation) -> bool:
    """Definition 2.1 over the running replicas: same applied index and same state."""
    seen: set[Any] = set()
    for n in sim.up_nodes():
        proto: Any = sim.protocol(n)
        if proto is None or proto.is_byzantine:
            continue  # Definition 2.1 speaks of the correct replicas only
        digest = getattr(proto, "state_digest", None)
        if digest is None:
            return True
        seen.add(digest())
        if len(seen) > 1:
            return False
    return True
