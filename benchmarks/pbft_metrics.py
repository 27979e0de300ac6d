"""PBFT figures in the simulator (4 replicas unless asked, network delay 1-5 ms, default
timeouts, Ed25519 signatures on every message, or with ``--auth mac`` MAC authenticators on
the normal case and signatures on what serves as proof; ``--auth both`` adds a side-by-side
table of the two):

1. steady state through the proxy path (plain kv commands handed to rotating replicas) at
   several client concurrencies: messages, signature verifications, signatures and MACs
   (computed and checked) per request, mean batch size, requests per simulated second and per
   wall-clock second;
2. the same with true PBFT clients (a signed request handed to every replica; the client
   accepts f + 1 matching answers);
3. failover: simulated time from a primary crash until a request issued after the crash
   completes, over a few seeds.

Counts are taken between a warm-up and the end of the measured window, over the replicas
(the simulated clients' own work is not counted).

    python benchmarks/pbft_metrics.py [--nodes 4] [--requests 2000] [--seeds 20]
        [--auth signatures|mac|both] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

from quorumkit.protocols.pbft import PbftNode
from quorumkit.sim import Simulation


def _counters(sim: Simulation) -> dict[str, int]:
    out = {
        "messages": sim.stats["sent"],
        "verifications": 0,
        "signatures": 0,
        "macs": 0,
        "batches": 0,
    }
    for n in sim.nodes:
        p = sim.protocol(n)
        if isinstance(p, PbftNode):
            out["verifications"] += p.verifications
            out["signatures"] += p.signatures
            out["macs"] += p.macs
    primary = sim.protocol(sim.nodes[0])
    if isinstance(primary, PbftNode):
        out["batches"] = primary.last_executed
    return out


def steady_proxy(
    nodes: int, clients: int, total: int, warmup: int, auth: str = "signatures"
) -> dict[str, Any]:
    sim = Simulation("pbft", nodes=nodes, seed=7, trace="off", auth=auth)
    done: list[float] = []
    issued = [0]

    def issue(c: int) -> None:
        if issued[0] >= total + warmup:
            return
        issued[0] += 1
        i = issued[0]
        node = sim.nodes[(c + i) % nodes]
        cmd = ("session", f"c{c}", i, ("put", f"k{i % 100}", i))
        sim.client_request(node, cmd, lambda n, r: (done.append(sim.now), issue(c)))

    for c in range(clients):
        issue(c)
    sim.run_until(lambda: len(done) >= warmup, 600)
    before, t0, w0 = _counters(sim), sim.now, time.perf_counter()
    sim.run_until(lambda: len(done) >= warmup + total, 600)
    return _report(sim, before, t0, w0, len(done) - warmup, clients)


def steady_true_clients(
    nodes: int, clients: int, total: int, warmup: int, auth: str = "signatures"
) -> dict[str, Any]:
    sim = Simulation("pbft", nodes=nodes, seed=8, trace="off", auth=auth)
    need = PbftNode.client_replies_needed(nodes, sim.config)
    done: list[float] = []
    issued = [0]
    seqs = [0] * clients

    def issue(c: int) -> None:
        if issued[0] >= total + warmup:
            return
        issued[0] += 1
        seqs[c] += 1
        req = PbftNode.client_command(sim.config, c, seqs[c], ("put", f"k{c}", seqs[c]))
        answers: dict[str, Any] = {}

        def on_reply(node: str, result: Any) -> None:
            answers[node] = result
            if sum(1 for r in answers.values() if r == result) == need:
                done.append(sim.now)
                issue(c)

        for n in sim.nodes:
            sim.client_request(n, req, on_reply)

    for c in range(clients):
        issue(c)
    sim.run_until(lambda: len(done) >= warmup, 600)
    before, t0, w0 = _counters(sim), sim.now, time.perf_counter()
    sim.run_until(lambda: len(done) >= warmup + total, 600)
    return _report(sim, before, t0, w0, len(done) - warmup, clients)


def _report(
    sim: Simulation, before: dict[str, int], t0: float, w0: float, count: int, clients: int
) -> dict[str, Any]:
    wall = time.perf_counter() - w0
    after = _counters(sim)
    delta = {k: after[k] - before[k] for k in after}
    return {
        "clients": clients,
        "requests": count,
        "messages_per_request": round(delta["messages"] / count, 2),
        "verifications_per_request": round(delta["verifications"] / count, 2),
        "signatures_per_request": round(delta["signatures"] / count, 2),
        "macs_per_request": round(delta["macs"] / count, 2),
        "mean_batch": round(count / max(delta["batches"], 1), 2),
        "requests_per_sim_s": round(count / max(sim.now - t0, 1e-9)),
        "requests_per_wall_s": round(count / wall),
    }


def failover_once(seed: int, nodes: int, auth: str = "signatures") -> float:
    sim = Simulation("pbft", nodes=nodes, seed=seed, trace="off", auth=auth)
    sim.client_request("n2", ("put", "warm", 1))
    sim.run(0.2 + sim.rng.random() * 0.5)
    sim.crash("n1")
    t_crash = sim.now
    done: list[float] = []
    sim.client_request("n3", ("put", "after", seed), lambda n, r: done.append(sim.now))
    if not sim.run_until(lambda: bool(done), 30):
        raise RuntimeError(f"seed {seed}: no request completed after the primary crashed")
    return done[0] - t_crash


def measure(args: argparse.Namespace, auth: str) -> dict[str, Any]:
    warm = max(args.requests // 10, 50)
    out: dict[str, Any] = {"nodes": args.nodes, "auth": auth}
    out["proxy"] = [steady_proxy(args.nodes, c, args.requests, warm, auth) for c in (1, 8, 32)]
    out["true_clients"] = [
        steady_true_clients(args.nodes, c, args.requests, warm, auth) for c in (1, 8, 32)
    ]
    times = sorted(failover_once(s, args.nodes, auth) for s in range(1, args.seeds + 1))
    out["failover_ms"] = {
        "median": round(statistics.median(times) * 1000, 1),
        "max": round(times[-1] * 1000, 1),
        "seeds": len(times),
    }
    return out


def print_one(out: dict[str, Any]) -> None:
    print(f"PBFT, {out['nodes']} replicas, auth={out['auth']}")
    for mode in ("proxy", "true_clients"):
        print(f"\n{mode}:")
        print("clients  msgs/req  verif/req  sigs/req  macs/req  batch  req/sim-s  req/wall-s")
        for r in out[mode]:
            print(
                f"{r['clients']:>7}  {r['messages_per_request']:>8}  "
                f"{r['verifications_per_request']:>9}  {r['signatures_per_request']:>8}  "
                f"{r['macs_per_request']:>8}  {r['mean_batch']:>5}  "
                f"{r['requests_per_sim_s']:>9}  {r['requests_per_wall_s']:>10}"
            )
    f = out["failover_ms"]
    print(f"\nfailover: median {f['median']} ms, max {f['max']} ms over {f['seeds']} seeds")


def print_side_by_side(sig: dict[str, Any], mac: dict[str, Any]) -> None:
    print(f"PBFT, {sig['nodes']} replicas: signatures vs MAC authenticators")
    for mode in ("proxy", "true_clients"):
        print(f"\n{mode}:")
        print(
            "clients  auth        msgs/req  verif/req  sigs/req  macs/req  batch  req/sim-s  "
            "req/wall-s"
        )
        for a, b in zip(sig[mode], mac[mode], strict=True):
            for name, r in (("signatures", a), ("mac", b)):
                print(
                    f"{r['clients']:>7}  {name:<10}  {r['messages_per_request']:>8}  "
                    f"{r['verifications_per_request']:>9}  {r['signatures_per_request']:>8}  "
                    f"{r['macs_per_request']:>8}  {r['mean_batch']:>5}  "
                    f"{r['requests_per_sim_s']:>9}  {r['requests_per_wall_s']:>10}"
                )
    for name, out in (("signatures", sig), ("mac", mac)):
        f = out["failover_ms"]
        print(
            f"\nfailover ({name}): median {f['median']} ms, max {f['max']} ms over "
            f"{f['seeds']} seeds",
            end="",
        )
    print()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=4)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--auth", choices=("signatures", "mac", "both"), default="signatures")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.auth != "both":
        out = measure(args, args.auth)
        if args.json:
            print(json.dumps(out, indent=2))
        else:
            print_one(out)
        return
    sig, mac = measure(args, "signatures"), measure(args, "mac")
    if args.json:
        print(json.dumps({"signatures": sig, "mac": mac}, indent=2))
    else:
        print_side_by_side(sig, mac)


if __name__ == "__main__":
    main()
