"""Raft, Multi-Paxos and PBFT side by side in the simulator (virtual time, one seed each):

* messages per committed client operation at steady state (closed-loop simulated clients,
  half reads: Raft and Paxos read through a leader read index, PBFT orders reads too);
* signature verifications per operation (PBFT; Raft and Paxos sign nothing);
* simulator wall-clock throughput: events per second and operations per second, with the
  invariant checkers off and on.

    python benchmarks/protocol_costs.py [--seconds 20] [--rate 200] [--json]
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from quorumkit.sim import Simulation
from quorumkit.sim.clients import ClientPool, Workload

CLUSTERS = (("raft", 3), ("raft", 5), ("paxos", 3), ("paxos", 5), ("pbft", 4), ("pbft", 7))


def measure(
    protocol: str, nodes: int, seconds: float, rate: float, check: bool, seed: int = 7
) -> dict[str, Any]:
    sim = Simulation(protocol, nodes=nodes, seed=seed, trace="off", check_invariants=check)
    sim.run(2.0)  # elect a leader / settle the first view
    pool = ClientPool(sim, Workload(clients=10, rate_per_s=rate, keys=100, read_ratio=0.5))
    sent0, events0 = sim.stats["sent"], sim.stats["events"]
    verif0 = _verifications(sim)
    pool.start()
    t0 = time.perf_counter()
    sim.run(seconds)
    wall = time.perf_counter() - t0
    ok = pool.counts()["ok"]
    sent = sim.stats["sent"] - sent0
    events = sim.stats["events"] - events0
    verif = _verifications(sim) - verif0
    return {
        "protocol": protocol,
        "nodes": nodes,
        "checker": check,
        "ops_ok": ok,
        "messages_per_op": round(sent / ok, 2) if ok else None,
        "verifications_per_op": round(verif / ok, 2) if ok else None,
        "events_per_s": int(events / wall),
        "ops_per_s_wall": int(ok / wall),
        "wall_s": round(wall, 2),
    }


def _verifications(sim: Simulation) -> int:
    total = 0
    for n in sim.node_ids:
        proto = sim.protocol(n)
        total += int(getattr(proto, "verifications", 0) or 0)
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="simulated seconds of load")
    ap.add_argument("--rate", type=float, default=200.0, help="offered operations per second")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rows = []
    for protocol, nodes in CLUSTERS:
        for check in (False, True):
            rows.append(measure(protocol, nodes, args.seconds, args.rate, check))
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print(
        f"{'protocol':9} {'n':>2} {'checker':>7} {'ops':>6} {'msgs/op':>8} {'verif/op':>8} "
        f"{'events/s':>9} {'ops/s':>7}"
    )
    for r in rows:
        print(
            f"{r['protocol']:9} {r['nodes']:>2} {'on' if r['checker'] else 'off':>7} "
            f"{r['ops_ok']:>6} {r['messages_per_op'] or '-':>8} "
            f"{r['verifications_per_op'] or '-':>8} {r['events_per_s']:>9,} "
            f"{r['ops_per_s_wall']:>7,}"
        )


if __name__ == "__main__":
    main()
