"""Campaign: the correct Raft must pass N seeds of the fixed randomized scenario, and every
known-unsafe variant must be caught within its first 200 seeds.

The scenario is what ``quorumkit sim raft --nemesis partition,crash,loss`` runs: 5 nodes,
5 clients at 50 ops/s over 5 keys, 10 s of faults (random and new-leader partitions, crashes,
bounces, loss bursts), then healing (progress required), then quiet (convergence and
linearizability required); invariants are checked after every event.

    python benchmarks/raft_campaign.py [--seeds 1000] [--variant-seeds 200] [--jobs 2]
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor

from quorumkit.protocols.raft.config import UNSAFE_VARIANTS
from quorumkit.sim.run import RunOptions, run

NEMESIS = ("partition", "crash", "loss")


def one(args: tuple[int, str | None, bool]) -> tuple[int, bool, list[str]]:
    seed, unsafe, lin = args
    r = run(RunOptions(seed=seed, nemesis=NEMESIS, unsafe=unsafe, check_linearizability=lin))
    return seed, r.ok, r.summary["violations"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seeds", type=int, default=1000)
    ap.add_argument("--variant-seeds", type=int, default=200)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    out: dict[str, object] = {}
    with ProcessPoolExecutor(args.jobs) as pool:
        t0 = time.perf_counter()
        results = list(pool.map(one, [(s, None, True) for s in range(1, args.seeds + 1)],
                                chunksize=8))
        failed = [(s, v) for s, ok, v in results if not ok]
        out["correct"] = {"seeds": args.seeds, "failed": failed,
                          "wall_s": round(time.perf_counter() - t0, 1)}
        for variant in UNSAFE_VARIANTS:
            t0 = time.perf_counter()
            caught = None
            for s in range(1, args.variant_seeds + 1, args.jobs * 4):
                batch = [(x, variant, True) for x in range(s, min(s + args.jobs * 4,
                                                                   args.variant_seeds + 1))]
                for seed, ok, v in pool.map(one, batch):
                    if not ok:
                        caught = (seed, v[0])
                        break
                if caught:
                    break
            out[variant] = {"caught_at_seed": caught[0] if caught else None,
                            "violation": caught[1] if caught else None,
                            "wall_s": round(time.perf_counter() - t0, 1)}
    if args.json:
        print(json.dumps(out))
        return
    c = out["correct"]
    assert isinstance(c, dict)
    print(f"correct raft: {c['seeds'] - len(c['failed'])}/{c['seeds']} seeds passed "
          f"({c['wall_s']} s wall)")
    for s, v in c["failed"]:
        print(f"  FAILED seed {s}: {v}")
    for variant in UNSAFE_VARIANTS:
        r = out[variant]
        assert isinstance(r, dict)
        where = f"seed {r['caught_at_seed']}" if r["caught_at_seed"] else "NOT CAUGHT"
        first = str(r["violation"]).splitlines()[0]
        print(f"{variant:>24}: caught at {where}: {first}")


if __name__ == "__main__":
    main()
