"""PBFT with f byzantine replicas of each behaviour, over many seeds (issue 7's campaign).

For each f (n = 3f + 1 replicas, the first f of them byzantine: n1 is the primary of view 0)
and each behaviour of ``PbftNode.byzantine_behaviours``, run seeds 1..N through the checked
simulator (``quorumkit.sim.run``) with the nemeses partition, loss and crash, and count the
runs in which every check held: the PBFT invariants (agreement, validity, ...), progress after
healing, convergence of the correct replicas and linearizability of the client history. Each
run also reports how often the byzantine replicas lied (a behaviour that never misbehaves would
prove nothing) and what the correct replicas dropped.

    python benchmarks/pbft_campaign.py                    # 200 seeds, f = 1 and 2, all behaviours
    python benchmarks/pbft_campaign.py --seeds 20 --f 1 --behaviours equivocate,twins
    python benchmarks/pbft_campaign.py --json > pbft_campaign.json

Runs are spread over ``--jobs`` processes; each run is deterministic (its seed decides
everything), so results do not depend on the order they finish in. A failed run prints the
Python call that replays it (the CLI has no option for ``checkpoint_interval``).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from quorumkit.protocols.pbft import PbftNode
from quorumkit.protocols.pbft.byzantine import LIES_KEY
from quorumkit.sim.run import RunOptions, run

NEMESES = ("partition", "loss", "crash")


@dataclass(frozen=True)
class Job:
    f: int
    behaviour: str
    seed: int
    duration: float
    nemesis: tuple[str, ...]
    checkpoint_interval: int

    def options(self) -> RunOptions:
        return RunOptions(
            protocol="pbft",
            nodes=3 * self.f + 1,
            byzantine=self.f,
            behaviour=self.behaviour,
            seed=self.seed,
            duration=self.duration,
            nemesis=self.nemesis,
            protocol_options=(("checkpoint_interval", self.checkpoint_interval),),
        )

    def replay(self) -> str:
        nemesis = "".join(f'"{x}", ' for x in self.nemesis)
        return (
            "python -c 'from quorumkit.sim.run import RunOptions, run; "
            f'print(run(RunOptions(protocol="pbft", nodes={3 * self.f + 1}, '
            f'byzantine={self.f}, behaviour="{self.behaviour}", seed={self.seed}, '
            f"duration={self.duration:g}, nemesis=({nemesis}), "
            f'protocol_options=(("checkpoint_interval", {self.checkpoint_interval}),)))'
            '.summary["violations"])\''
        )


def classify(result: Any) -> str | None:
    """What kind of failure a run had (None: it passed). ``stall``: no progress, and the
    correct replicas are all changing views with no timer running and no view with 2f + 1
    view-change messages - the view-change stall reported with this campaign."""
    if result.ok:
        return None
    if result.violation_at is not None:
        return "safety"
    text = " ".join(result.summary["violations"])
    if "no progress" not in text:
        return "linearizability" if "linearizab" in text else "convergence"
    sim = result.sim
    correct = [sim.protocol(n) for n in sim.nodes if n not in result.options.byzantine_nodes()]
    stuck = all(
        p is not None
        and not p.active
        and not p.vc_timer_armed
        and sum(1 for vc in p.vc_latest.values() if vc.new_view == p.view) < p.quorum
        for p in correct
    )
    return "stall" if stuck else "liveness"


def lies_of(result: Any, node: str) -> int:
    """The lies of byzantine ``node``: from its status, or from its storage when the run ended
    with it crashed (a crash bounced just before the end may restart it only later)."""
    st = result.summary["status"][node]
    if "lies" in st:
        return int(st["lies"])
    value = result.sim.storage(node).load().hard.get(LIES_KEY, 0)
    return value if isinstance(value, int) else 0


def run_job(job: Job) -> dict[str, Any]:
    t0 = time.perf_counter()
    result = run(job.options())
    wall = time.perf_counter() - t0
    status = result.summary["status"]
    byz = set(job.options().byzantine_nodes())
    lies = sum(lies_of(result, n) for n in byz)
    dropped: dict[str, int] = {}
    for n, st in status.items():
        if n in byz:
            continue
        for reason, count in st.get("dropped", {}).items():
            dropped[reason] = dropped.get(reason, 0) + int(count)
    return {
        "f": job.f,
        "behaviour": job.behaviour,
        "seed": job.seed,
        "ok": result.ok,
        "failure": classify(result),
        "violations": result.summary["violations"][:3],
        "lies": lies,
        "ops_ok": result.summary["ops"]["ok"],
        "dropped": dropped,
        "views": max(int(st.get("view", 0)) for st in status.values()),
        "wall_s": round(wall, 3),
        "replay": None if result.ok else job.replay(),
    }


def _progress(total: int, results: Iterator[dict[str, Any]], plain: bool) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    failures = 0
    if plain:
        t0 = time.perf_counter()
        step = max(1, total // 40)
        for r in results:
            out.append(r)
            if not r["ok"]:
                failures += 1
                print(
                    f"FAIL f={r['f']} {r['behaviour']} seed {r['seed']}: {r['violations'][:1]}",
                    file=sys.stderr,
                    flush=True,
                )
            if len(out) % step == 0 or len(out) == total:
                print(
                    f"{len(out)}/{total} runs, {failures} failed, {time.perf_counter() - t0:.0f} s",
                    file=sys.stderr,
                    flush=True,
                )
        return out
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    console = Console(stderr=True)
    with Progress(
        TextColumn("[bold]pbft campaign"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[failed]} failed"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    ) as bar:
        task = bar.add_task("runs", total=total, failed=0)
        for r in results:
            out.append(r)
            if not r["ok"]:
                failures += 1
                console.print(
                    f"[red]FAIL[/red] f={r['f']} {r['behaviour']} seed {r['seed']}: "
                    f"{r['violations'][:1]}"
                )
            bar.update(task, advance=1, failed=failures)
    return out


def summarize(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows: dict[tuple[int, str], dict[str, Any]] = {}
    order = {b: i for i, b in enumerate(PbftNode.byzantine_behaviours)}
    for r in sorted(results, key=lambda r: (r["f"], order[r["behaviour"]], r["seed"])):
        row = rows.setdefault(
            (r["f"], r["behaviour"]),
            {
                "f": r["f"],
                "n": 3 * r["f"] + 1,
                "behaviour": r["behaviour"],
                "runs": 0,
                "passed": 0,
                "failed_seeds": [],
                "failures": {},
                "runs_with_lies": 0,
                "lies": 0,
                "ops_ok": 0,
                "wall_s": 0.0,
                "dropped": {},
            },
        )
        row["runs"] += 1
        row["passed"] += int(r["ok"])
        if not r["ok"]:
            row["failed_seeds"].append(r["seed"])
            kind = r.get("failure") or "failed"
            row["failures"][kind] = row["failures"].get(kind, 0) + 1
        row["runs_with_lies"] += int(r["lies"] > 0)
        row["lies"] += r["lies"]
        row["ops_ok"] += r["ops_ok"]
        row["wall_s"] = round(row["wall_s"] + r["wall_s"], 3)
        for reason, count in r["dropped"].items():
            row["dropped"][reason] = row["dropped"].get(reason, 0) + count
    return list(rows.values())


def print_table(rows: list[dict[str, Any]], wall: float, jobs: int) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"PBFT byzantine campaign ({wall:.0f} s wall on {jobs} processes)")
    for col in (
        "f",
        "n",
        "behaviour",
        "passed",
        "failures",
        "lied in",
        "lies/run",
        "ops ok/run",
        "s/run",
        "top drops at correct replicas",
        "failed seeds",
    ):
        table.add_column(col)
    for row in rows:
        runs = row["runs"]
        drops = sorted(row["dropped"].items(), key=lambda kv: -kv[1])[:3]
        table.add_row(
            str(row["f"]),
            str(row["n"]),
            row["behaviour"],
            f"{row['passed']}/{runs}",
            ", ".join(f"{k} {v}" for k, v in sorted(row["failures"].items())) or "-",
            f"{row['runs_with_lies']}/{runs}",
            f"{row['lies'] / runs:.0f}",
            f"{row['ops_ok'] / runs:.0f}",
            f"{row['wall_s'] / runs:.2f}",
            ", ".join(f"{k} {v}" for k, v in drops) or "-",
            ",".join(map(str, row["failed_seeds"][:10])) or "-",
        )
    Console(width=200).print(table)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=200, help="seeds per behaviour and f")
    ap.add_argument("--first-seed", type=int, default=1)
    ap.add_argument("--f", default="1,2", help="comma-separated values of f (n = 3f + 1)")
    ap.add_argument("--behaviours", default=",".join(PbftNode.byzantine_behaviours))
    ap.add_argument("--nemesis", default=",".join(NEMESES))
    ap.add_argument("--duration", type=float, default=5.0, help="safety phase, simulated s")
    ap.add_argument("--checkpoint-interval", type=int, default=16, help="K")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    ap.add_argument("--plain", action="store_true", help="plain progress lines on stderr")
    args = ap.parse_args(argv)

    fs = [int(x) for x in args.f.split(",") if x]
    behaviours = [b for b in args.behaviours.split(",") if b]
    for b in behaviours:
        PbftNode.byzantine_class(b)  # validates the name
    nemesis = tuple(x for x in args.nemesis.split(",") if x)
    jobs = [
        Job(f, b, seed, args.duration, nemesis, args.checkpoint_interval)
        for f in fs
        for b in behaviours
        for seed in range(args.first_seed, args.first_seed + args.seeds)
    ]
    plain = args.plain or args.json or not sys.stderr.isatty()
    t0 = time.perf_counter()
    if args.jobs > 1:
        with multiprocessing.Pool(args.jobs) as pool:
            results = _progress(len(jobs), pool.imap_unordered(run_job, jobs), plain)
    else:
        results = _progress(len(jobs), map(run_job, jobs), plain)
    wall = time.perf_counter() - t0
    rows = summarize(results)
    failed = [r for r in results if not r["ok"]]
    if args.json:
        doc = {
            "config": {
                "seeds": [args.first_seed, args.first_seed + args.seeds - 1],
                "f": fs,
                "behaviours": behaviours,
                "nemesis": list(nemesis),
                "duration_s": args.duration,
                "checkpoint_interval": args.checkpoint_interval,
                "jobs": args.jobs,
            },
            "wall_s": round(wall, 1),
            "runs": len(results),
            "passed": len(results) - len(failed),
            "rows": rows,
            "failures": sorted(failed, key=lambda r: (r["f"], r["behaviour"], r["seed"])),
        }
        print(json.dumps(doc, indent=1, sort_keys=True))
    else:
        print_table(rows, wall, args.jobs)
        for r in sorted(failed, key=lambda r: (r["f"], r["behaviour"], r["seed"]))[:20]:
            print(f"f={r['f']} {r['behaviour']} seed {r['seed']}: {r['violations'][:1]}")
            print(f"  replay: {r['replay']}")
    return 0 if not failed else 1


if __name__ == "__main__":
    raise SystemExit(main())
