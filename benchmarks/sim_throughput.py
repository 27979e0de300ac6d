"""Simulator speed: delivered messages per wall-clock second for the heartbeat reference
protocol on 5 and 50 nodes, with tracing off and with the trace hash on.

    python benchmarks/sim_throughput.py [--repeat 3] [--json]

One process, one core. Each figure is the best of ``--repeat`` runs (the machine is shared).
"""

from __future__ import annotations

import argparse
import json
import platform
import time

from quorumkit.sim import Simulation

CASES = [(5, 200.0), (50, 4.0)]  # (nodes, simulated seconds): ~80k and ~200k deliveries


def measure(nodes: int, seconds: float, trace: str) -> tuple[int, float]:
    sim = Simulation("heartbeat", nodes=nodes, seed=1, trace=trace)
    t0 = time.perf_counter()
    sim.run(seconds)
    wall = time.perf_counter() - t0
    return sim.stats["delivered"], wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rows = []
    for nodes, seconds in CASES:
        for trace in ("off", "hash"):
            best = 0.0
            delivered = 0
            for _ in range(args.repeat):
                delivered, wall = measure(nodes, seconds, trace)
                best = max(best, delivered / wall)
            rows.append({"nodes": nodes, "trace": trace, "delivered": delivered,
                         "delivered_per_s": round(best)})
    if args.json:
        print(json.dumps({"python": platform.python_version(), "rows": rows}))
        return
    print(f"python {platform.python_version()} on {platform.machine()}")
    print(f"{'nodes':>5} {'trace':>5} {'delivered':>10} {'msgs/s':>10}")
    for r in rows:
        print(f"{r['nodes']:>5} {r['trace']:>5} {r['delivered']:>10} {r['delivered_per_s']:>10,}")
    off = {r["nodes"]: r["delivered_per_s"] for r in rows if r["trace"] == "off"}
    for r in rows:
        if r["trace"] == "hash":
            print(f"trace hash costs: {r['nodes']} nodes at "
                  f"{r['delivered_per_s'] / off[r['nodes']]:.2f}x the speed with tracing off")


if __name__ == "__main__":
    main()
