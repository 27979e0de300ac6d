"""One simulation run as the ``quorumkit sim`` command performs it, as plain data."""

from __future__ import annotations

import time
from typing import Any

from quorumkit.sim.core import Simulation


def run_simulation(
    protocol: str,
    *,
    nodes: int = 5,
    seed: int = 1,
    duration: float = 10.0,
    loss_rate: float = 0.0,
) -> dict[str, Any]:
    """Run ``protocol`` for ``duration`` simulated seconds; return a JSON-able summary."""
    from quorumkit.errors import ConfigError

    if not duration > 0:
        raise ConfigError(f"--duration must be > 0 seconds, got {duration}")
    sim = Simulation(protocol, nodes=nodes, seed=seed, loss_rate=loss_rate, check_invariants=True)
    wall0 = time.perf_counter()
    sim.run(duration)
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
        "ok": True,
        "status": status,
        "columns": columns,
        "messages": {"sent": s["sent"], "delivered": s["delivered"], "dropped": dropped},
        "events": s["events"],
        "events_per_second": int(s["events"] / wall),
        "invariant_checks": sim.invariant_checks,
        "trace_hash": sim.trace_hash(),
        "replay": replay,
    }
