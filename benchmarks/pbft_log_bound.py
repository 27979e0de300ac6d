"""PBFT's log stays bounded (Castro & Liskov 1999, §4.3): a long run of requests through a
4-replica simulated cluster, reporting the largest message log, prepared-certificate set and
checkpoint-vote table any replica held, against the bound the watermarks give (the log spans at
most 2L sequence numbers: (h - L, h + L]), plus where every replica ended.

    python benchmarks/pbft_log_bound.py [--requests 10000] [--clients 16] [--k 128] [--check]
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from quorumkit.protocols.pbft import PbftNode
from quorumkit.sim import Simulation


def run(requests: int, clients: int, k: int, check: bool, nodes: int) -> dict[str, Any]:
    sim = Simulation(
        "pbft",
        nodes=nodes,
        seed=1,
        trace="off",
        check_invariants=check,
        checkpoint_interval=k,
    )
    done = [0]
    issued = [0]
    peak = {"log": 0, "pset": 0, "ckpt_votes": 0, "storage_keys": 0}

    def sample() -> None:
        for n in sim.nodes:
            p = sim.protocol(n)
            if isinstance(p, PbftNode):
                peak["log"] = max(peak["log"], p.max_log_size)
                peak["pset"] = max(peak["pset"], len(p.pset))
                peak["ckpt_votes"] = max(peak["ckpt_votes"], len(p.ckpt_votes))
                peak["storage_keys"] = max(peak["storage_keys"], len(sim.storage(n).load().hard))

    def issue(c: int) -> None:
        if issued[0] >= requests:
            return
        issued[0] += 1
        i = issued[0]
        if i % 500 == 0:
            sample()
        node = sim.nodes[(c + i) % nodes]

        def on_reply(n: str, r: Any) -> None:
            done[0] += 1
            issue(c)

        sim.client_request(node, ("session", f"c{c}", i, ("put", f"k{i % 1000}", i)), on_reply)

    wall0 = time.perf_counter()
    for c in range(clients):
        issue(c)
    finished = sim.run_until(lambda: done[0] >= requests, 3600)
    sim.run(1.0)
    sample()
    wall = time.perf_counter() - wall0
    p0 = sim.protocol(sim.nodes[0])
    assert isinstance(p0, PbftNode)
    window = p0.L
    replicas = {}
    for n in sim.nodes:
        p = sim.protocol(n)
        assert isinstance(p, PbftNode)
        replicas[n] = {
            "last_executed": p.last_executed,
            "stable_checkpoint": p.h,
            "log_size": len(p.log),
            "state": p.sm.state_digest(),
        }
    return {
        "requests": requests,
        "completed": done[0],
        "finished": finished,
        "checkpoint_interval": k,
        "window_L": window,
        "bound_2L": 2 * window,
        "peak": peak,
        "within_bound": peak["log"] <= 2 * window,
        "replicas": replicas,
        "converged": len({r["state"] for r in replicas.values()}) == 1,
        "simulated_seconds": round(sim.now, 3),
        "wall_seconds": round(wall, 2),
        "requests_per_wall_s": round(done[0] / wall),
        "invariants_checked": check,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--k", type=int, default=128, help="checkpoint interval K")
    ap.add_argument("--nodes", type=int, default=4)
    ap.add_argument("--check", action="store_true", help="run the invariant checker")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    out = run(args.requests, args.clients, args.k, args.check, args.nodes)
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(
        f"{out['completed']}/{out['requests']} requests, K={out['checkpoint_interval']}, "
        f"L={out['window_L']}: peak log {out['peak']['log']} sequence numbers "
        f"(bound 2L = {out['bound_2L']}), peak prepared certificates {out['peak']['pset']}, "
        f"peak checkpoint-vote entries {out['peak']['ckpt_votes']}, peak storage keys "
        f"{out['peak']['storage_keys']}"
    )
    for n, r in out["replicas"].items():
        print(
            f"  {n}: executed {r['last_executed']}, stable checkpoint {r['stable_checkpoint']},"
            f" log {r['log_size']}"
        )
    print(
        f"converged: {out['converged']}; {out['simulated_seconds']} simulated s, "
        f"{out['wall_seconds']} wall s ({out['requests_per_wall_s']} requests/s)"
    )


if __name__ == "__main__":
    main()
