"""Theorem 3.1 by counterexample: PBFT with n = 3f replicas loses agreement.

With n = 3 replicas and f = 1 (below the bound n >= 3f + 1, allowed by ``--unsafe
allow-n-3f``) quorums have n - f = 2 replicas, and two quorums {n1, n2} and {n1, n3} meet in
the byzantine replica n1 only. This script searches seeds of the checked simulator for a run in
which two correct replicas execute different requests at the same sequence number, prints the
first seeds found with what happened and how to replay them, and checks that the same seeds
keep agreement with n = 3f + 1 = 4 replicas (the control).

    python benchmarks/pbft_n3f_search.py                       # equivocate, seeds 1..50
    python benchmarks/pbft_n3f_search.py --behaviour twins --first 3
    python benchmarks/pbft_n3f_search.py --report /tmp/n3f.html --json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from types import SimpleNamespace
from typing import Any

from quorumkit.errors import InvariantViolation
from quorumkit.protocols.pbft import PbftChecker
from quorumkit.sim.run import RunOptions, RunResult, run


def options(
    behaviour: str,
    seed: int,
    nodes: int,
    nemesis: tuple[str, ...],
    duration: float,
    record: bool = False,
) -> RunOptions:
    return RunOptions(
        protocol="pbft",
        nodes=nodes,
        byzantine=1,
        behaviour=behaviour,
        seed=seed,
        duration=duration,
        nemesis=nemesis,
        unsafe="allow-n-3f" if nodes == 3 else None,
        protocol_options=(("f", 1),),
        record=record,
    )


def divergence(result: RunResult) -> dict[str, Any] | None:
    """The first sequence number at which two correct replicas executed different batches."""
    sim = result.sim
    correct = [n for n in sim.nodes if not result.summary["status"][n].get("byzantine")]
    executed: dict[str, dict[int, Any]] = {}
    for n in correct:
        proto: Any = sim.protocol(n)
        if proto is None:
            continue
        executed[n] = {e.seq: e for e in proto.executed if e.requests is not None}
    for a in executed:
        for b in executed:
            if a >= b:
                continue
            for seq in sorted(set(executed[a]) & set(executed[b])):
                ea, eb = executed[a][seq], executed[b][seq]
                if ea.digest != eb.digest:
                    return {
                        "seq": seq,
                        a: [(r.client, r.timestamp, r.op) for r in ea.requests],
                        b: [(r.client, r.timestamp, r.op) for r in eb.requests],
                    }
    return None


def agreement_on_executions(result: RunResult) -> str | None:
    """The PBFT checker's verdict on the correct replicas' executions alone (their prepared
    and committed certificates left out): the agreement violation it raises, or None."""
    sim = result.sim
    shims: dict[str, Any] = {}
    for n in sim.nodes:
        proto: Any = sim.protocol(n)
        if proto is None or proto.is_byzantine:
            continue
        shims[n] = SimpleNamespace(
            is_byzantine=False,
            executed=list(proto.executed),
            prepared_log=[],
            committed_log=[],
            state_digests=[],
            keyring=proto.keyring,
        )
    try:
        PbftChecker().check(shims)
    except InvariantViolation as exc:
        return str(exc)
    return None


def replay(behaviour: str, seed: int, nemesis: tuple[str, ...], duration: float) -> str:
    """The CLI command of the run (the CLI cannot pass f: under allow-n-3f the configuration's
    default f for n = 3 is 1)."""
    nem = f" --nemesis {','.join(nemesis)}" if nemesis else ""
    return (
        f"python -m quorumkit sim pbft --nodes 3 --byzantine 1 --behaviour {behaviour} "
        f"--unsafe allow-n-3f --seed {seed} --duration {duration:g}{nem} --report /tmp/n3f.html"
    )


def replay_python(behaviour: str, seed: int, nemesis: tuple[str, ...], duration: float) -> str:
    """The same run from Python, with f = 1 explicit, and its HTML report."""
    return (
        "python -c 'from quorumkit.sim.run import RunOptions, run; "
        "from quorumkit.check.report import write_report; "
        f'write_report(run(RunOptions(protocol="pbft", nodes=3, byzantine=1, '
        f'behaviour="{behaviour}", seed={seed}, duration={duration:g}, '
        f'nemesis={tuple(nemesis)!r}, unsafe="allow-n-3f", '
        f'protocol_options=(("f", 1),), record=True)), "/tmp/n3f.html")\''
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--behaviour", default="equivocate")
    ap.add_argument("--seeds", type=int, default=50, help="search seeds 1..N")
    ap.add_argument("--first", type=int, default=5, help="stop after this many found")
    ap.add_argument("--nemesis", default="", help="comma-separated nemeses (default none)")
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--no-control", action="store_true", help="skip the n = 4 control runs")
    ap.add_argument("--report", help="write the HTML report of the first seed found here")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    nemesis = tuple(x for x in args.nemesis.split(",") if x)

    found: list[dict[str, Any]] = []
    tried = 0
    t0 = time.perf_counter()
    for seed in range(1, args.seeds + 1):
        tried += 1
        result = run(options(args.behaviour, seed, 3, nemesis, args.duration))
        diverged = divergence(result)
        if result.ok or diverged is None:
            continue
        failed = [k for k, held in result.summary["invariants"].items() if not held]
        entry: dict[str, Any] = {
            "seed": seed,
            "violation_at": result.violation_at,
            "first_violation": result.summary["violations"][0],
            "failed_invariants": failed,
            "agreement_on_executions": agreement_on_executions(result),
            "divergence": diverged,
            "lies": sum(int(st.get("lies", 0)) for st in result.summary["status"].values()),
            "replay": replay(args.behaviour, seed, nemesis, args.duration),
            "replay_python": replay_python(args.behaviour, seed, nemesis, args.duration),
        }
        if not args.no_control:
            control = run(options(args.behaviour, seed, 4, nemesis, args.duration))
            entry["control_n4_ok"] = control.ok
            entry["control_n4_invariants"] = control.summary["invariants"]
        found.append(entry)
        if not args.json:
            print(f"seed {seed}: {entry['first_violation']}")
            print(f"  at t={result.violation_at:.6f} s, sequence number {diverged['seq']}:")
            for node, reqs in diverged.items():
                if node != "seq":
                    print(f"    {node} executed {reqs}")
            print(f"  checker on the executions alone: {entry['agreement_on_executions']}")
            if "control_n4_ok" in entry:
                print(f"  control, n=4 same seed: {'ok' if entry['control_n4_ok'] else 'FAILED'}")
            print(f"  replay: {entry['replay']}")
            print(f"  replay (f=1 explicit): {entry['replay_python']}")
            sys.stdout.flush()
        if len(found) >= args.first:
            break
    if args.report and found:
        from quorumkit.check.report import write_report

        seed = found[0]["seed"]
        write_report(
            run(options(args.behaviour, seed, 3, nemesis, args.duration, True)), args.report
        )
        if not args.json:
            print(f"report of seed {seed}: {args.report}")
    if args.json:
        print(
            json.dumps(
                {
                    "behaviour": args.behaviour,
                    "tried": tried,
                    "found": found,
                    "wall_s": round(time.perf_counter() - t0, 2),
                },
                indent=1,
                sort_keys=True,
                default=str,
            )
        )
    elif not found:
        print(f"no divergence in seeds 1..{tried}")
    return 0 if found else 1


if __name__ == "__main__":
    raise SystemExit(main())
