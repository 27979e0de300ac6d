"""Raft figures in the simulator (virtual time, default timeouts 150-300 ms, heartbeat 50 ms):

1. failover: simulated time from a leader crash until a new leader commits a write issued
   after the crash, over many seeds (median, p99, max);
2. messages per committed command at steady state, at several offered loads;
3. simulator wall-clock events per second on a 5-node cluster under load, with the
   invariant checker off and on.

    python benchmarks/raft_metrics.py [--seeds 200] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

from quorumkit.sim import Simulation


def failover_once(seed: int) -> float:
    sim = Simulation("raft", nodes=5, seed=seed, trace="off")
    if not sim.run_until(lambda: sim.leader() is not None, 10):
        raise RuntimeError(f"seed {seed}: no first leader")
    sim.run(1.0 + sim.rng.random())  # crash at a random point of the heartbeat cycle
    old = sim.leader()
    assert old is not None
    sim.crash(old)
    t_crash = sim.now
    done: list[float] = []
    state = {"inflight": False}

    def on_reply(node: str, result: Any) -> None:
        state["inflight"] = False
        if not (isinstance(result, dict) and "error" in result):
            done.append(sim.now)

    def poll() -> None:
        if done:
            return
        leader = sim.leader()
        if leader is not None and leader != old and not state["inflight"]:
            state["inflight"] = True
            sim.client_request(leader, ("put", "k", seed), on_reply)
        sim.call_after(0.001, poll)

    poll()
    if not sim.run_until(lambda: bool(done), 30):
        raise RuntimeError(f"seed {seed}: no write committed after the crash")
    return done[0] - t_crash


def steady_state(rate_per_s: float, seconds: float = 20.0, check: bool = False) -> dict[str, Any]:
    sim = Simulation("raft", nodes=5, seed=7, trace="off", check_invariants=check)
    sim.run_until(lambda: sim.leader() is not None, 10)
    sim.run(1.0)
    interval = 1.0 / rate_per_s
    ok = [0]
    count = [0]

    def on_reply(node: str, result: Any) -> None:
        if not (isinstance(result, dict) and "error" in result):
            ok[0] += 1

    def tick() -> None:
        leader = sim.leader()
        if leader is not None:
            count[0] += 1
            sim.client_request(leader, ("put", f"k{count[0] % 100}", count[0]), on_reply)
        sim.call_after(interval, tick)

    sent0 = sim.message_count()
    events0 = sim.stats["events"]
    tick()
    t0 = time.perf_counter()
    sim.run(seconds)
    wall = time.perf_counter() - t0
    msgs = sim.message_count() - sent0
    return {
        "offered_per_s": rate_per_s,
        "committed": ok[0],
        "messages_per_command": round(msgs / max(ok[0], 1), 2),
        "events_per_s": round((sim.stats["events"] - events0) / wall),
        "invariants": check,
    }


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))
    return s[k]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seeds", type=int, default=200)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    times = [failover_once(s) for s in range(1, args.seeds + 1)]
    failover = {
        "seeds": args.seeds,
        "median_ms": round(statistics.median(times) * 1000, 1),
        "p99_ms": round(pct(times, 99) * 1000, 1),
        "max_ms": round(max(times) * 1000, 1),
        "target_ms": 600,
    }
    steady = [steady_state(r) for r in (10, 100, 1000, 5000)]
    steady.append(steady_state(1000, check=True))
    out = {"failover": failover, "steady_state": steady}
    if args.json:
        print(json.dumps(out))
        return
    f = failover
    print(f"failover over {f['seeds']} seeds: median {f['median_ms']} ms, p99 {f['p99_ms']} ms, "
          f"max {f['max_ms']} ms (target <= {f['target_ms']} ms = 2x max election timeout)")
    print(f"{'offered/s':>10} {'committed':>10} {'msgs/cmd':>9} {'events/s':>10} invariants")
    for r in steady:
        print(f"{r['offered_per_s']:>10} {r['committed']:>10} {r['messages_per_command']:>9} "
              f"{r['events_per_s']:>10,} {'on' if r['invariants'] else 'off'}")


if __name__ == "__main__":
    main()
