"""Linearizability checker speed: porcupine's six kv histories, a generated kv history of
10,000 operations over 100 keys, and a generated single-register history of 1,000 operations
(10 clients, 5% indeterminate operations each), plus corrupted copies of the generated ones
(one read changed), which must fail.

    python benchmarks/checker_speed.py [--repeat 3] [--seed 1] [--data DIR] [--json]

Targets (printed, not asserted): each porcupine history under 1 s, the kv history under 1 s,
the register history under 10 s. The generated histories come from a seeded simulation of a
linearizable store with overlapping operations (``quorumkit.check.simulate_history``). One
process, one core; each figure is the best of ``--repeat`` runs (the machine is shared).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import random
import time
from pathlib import Path
from typing import Any

from quorumkit.check import Operation, check_linearizability, load_history, simulate_history

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "porcupine-kv"
PORCUPINE = [
    ("c01-ok", True),
    ("c01-bad", False),
    ("c10-ok", True),
    ("c10-bad", False),
    ("c50-ok", True),
    ("c50-bad", False),
]


def corrupt(ops: list[Operation], seed: int) -> list[Operation]:
    """A copy of ``ops`` with one completed read (of the middle half) returning a value
    nobody wrote."""
    rng = random.Random(seed)
    reads = [
        i
        for i, op in enumerate(ops)
        if op.ret is not None and op.input[0] in ("read", "get") and len(ops) // 4 < i
    ]
    i = rng.choice(reads[: len(reads) * 2 // 3])
    out = list(ops)
    out[i] = dataclasses.replace(ops[i], output="never-written")
    return out


def measure(
    name: str,
    ops: list[Operation],
    hint: dict[str, Any],
    expected: bool,
    target: float,
    repeat: int,
) -> dict[str, Any]:
    best = float("inf")
    result = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = check_linearizability(ops, **hint)
        best = min(best, time.perf_counter() - t0)
    assert result is not None
    return {
        "history": name,
        "operations": len(ops),
        "indeterminate": sum(op.ret is None for op in ops),
        "partitions": result.partitions,
        "verdict": result.ok,
        "expected": expected,
        "seconds": round(best, 4),
        "target_s": target,
        "within_target": best < target,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--data", type=Path, default=DATA, help="porcupine's kv histories")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rows = []
    if args.data.is_dir():
        for name, expected in PORCUPINE:
            ops, hint = load_history(args.data / f"{name}.txt")
            rows.append(measure(name, ops, hint, expected, 1.0, args.repeat))
    kv = simulate_history(
        model="kv", n_ops=10_000, keys=100, clients=10, info_rate=0.05, seed=args.seed
    )
    register = simulate_history(
        model="register", n_ops=1_000, clients=10, info_rate=0.05, seed=args.seed
    )
    for name, ops, hint, target in [
        ("kv-10k-100keys", kv, {"model": "kv"}, 1.0),
        ("register-1k", register, {"model": "register"}, 10.0),
    ]:
        rows.append(measure(name, ops, hint, True, target, args.repeat))
        bad = corrupt(ops, args.seed)
        rows.append(measure(name + "-corrupted", bad, hint, False, target, args.repeat))
    if args.json:
        print(json.dumps({"python": platform.python_version(), "rows": rows}))
        return
    print(f"python {platform.python_version()} on {platform.machine()}, best of {args.repeat}")
    print(
        f"{'history':<26} {'ops':>6} {'info':>5} {'parts':>5} {'verdict':>8} "
        f"{'seconds':>8} {'target':>7}"
    )
    for r in rows:
        verdict = str(r["verdict"]) + ("" if r["verdict"] is r["expected"] else " (WRONG)")
        mark = "ok" if r["within_target"] else "SLOW"
        print(
            f"{r['history']:<26} {r['operations']:>6} {r['indeterminate']:>5} "
            f"{r['partitions']:>5} {verdict:>8} {r['seconds']:>8.3f} "
            f"{'<' + format(r['target_s'], 'g') + ' s':>7} {mark}"
        )
    if not args.data.is_dir():
        print(f"(porcupine's histories not found at {args.data})")


if __name__ == "__main__":
    main()
