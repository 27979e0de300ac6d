"""One simulation run as the ``quorumkit sim`` command performs it, as plain data."""

from __future__ import annotations

import time
from typing import Any

from quorumkit.errors import ConfigError, InvariantViolation
from quorumkit.sim.core import Simulation


def _steady_writes(sim: Simulation, ops: dict[str, int], interval_s: float = 0.01) -> None:
    """A simple client: one put every ``interval_s`` at the node it believes leads."""
    counter = [0]

    def on_reply(node: str, result: Any) -> None:
        failed = isinstance(result, dict) and "error" in result
        ops["fail" if failed else "ok"] += 1

    def tick() -> None:
        leader = sim.leader()
        if leader is not None:
            counter[0] += 1
            sim.client_request(leader, ("put", f"k{counter[0] % 10}", counter[0]), on_reply)
        sim.call_after(interval_s, tick)

    sim.call_after(interval_s, tick)


def run_simulation(
    protocol: str,
    *,
    nodes: int = 5,
    seed: int = 1,
    duration: float = 10.0,
    loss_rate: float = 0.0,
) -> dict[str, Any]:
    """Run ``protocol`` for ``duration`` simulated seconds; return a JSON-able summary."""

    if not duration > 0:
        raise ConfigError(f"--duration must be > 0 seconds, got {duration}")
    sim = Simulation(protocol, nodes=nodes, seed=seed, loss_rate=loss_rate, check_invariants=True)
    ops = {"ok": 0, "fail": 0}
    if sim.protocol_cls.name == "raft":
        _steady_writes(sim, ops)
    violation: str | None = None
    wall0 = time.perf_counter()
    try:
        sim.run(duration)
    except InvariantViolation as exc:
        violation = str(exc)
    wall = max(time.perf_counter() - wall0, 1e-9)
    status = {n: sim.status(n) for n in sim.nodes}
    columns: list[str] = []
    for st in status.values():
        for k, v in st.items():
            if k not in columns and not isinstance(v, (dict, list)):
                columns.append(k)
    s = sim.stats
    dropped = s["dropped_loss"] + s["dropped_partition"] + s["dropped_omission"] + s["dropped_down"]
    replay = f"quorumkit sim {protocol} --nodes {nodes} --seed {seed} --duration {duration:g}"
    if loss_rate:
        replay += f" --loss {loss_rate:g}"
    return {
        "protocol": protocol,
        "nodes": nodes,
        "seed": seed,
        "duration": duration,
        "ok": violation is None,
        "violations": [violation] if violation else [],
        "leader": sim.leader(),
        "ops": ops,
        "status": status,
        "columns": columns,
        "messages": {"sent": s["sent"], "delivered": s["delivered"], "dropped": dropped},
        "events": s["events"],
        "events_per_second": int(s["events"] / wall),
        "invariant_checks": sim.invariant_checks,
        "trace_hash": sim.trace_hash(),
        "replay": replay,
    }
