"""What a quorumkit write costs, node by node: a quicker companion of ``compare.py``.

Starts one local 3-node raft cluster (fsync on unless ``--no-fsync``), runs ``quorumkit
bench`` against its leader for each concurrency (closed loop, writes, 100-byte values over
10,000 keys, as compare.py does) and prints, per run: writes/s, p50/p99/p99.9 latency, and the
CPU time each process spent per write (leader, followers, the client), with the share spent in
the kernel. CPU per write is the figure to compare between two versions of the code on a
shared machine: it moves much less with background load than throughput or latency do.

    python benchmarks/node_costs.py [--concurrency 1,16,64] [--duration 5] [--rounds 1]
                                    [--no-fsync] [--option NAME=VALUE ...] [--json]

``--option`` passes raft options to every node (``--option snapshot_threshold=100000``).
Everything started is stopped at the end, also on errors and Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from compare import QuorumkitSystem, loadavg, pick_base_port  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of process ``pid`` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICK, int(fields[12]) / TICK


def one_run(system: QuorumkitSystem, c: int, duration: float) -> dict[str, Any]:
    leader = system.wait_healthy()
    pids = {n: p.pid for n, p in system.cluster.procs.items()}
    before = {n: cpu_seconds(p) for n, p in pids.items()}
    cmd = [
        sys.executable, "-m", "quorumkit", "bench", "--endpoints", system.endpoint(leader),
        "--concurrency", str(c), "--duration", str(duration), "--warmup", "1", "--json",
    ]  # fmt: skip
    t0 = time.monotonic()
    client = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    client_cpu = (0.0, 0.0)
    while client.poll() is None:  # sample the client's CPU until it exits
        try:
            client_cpu = cpu_seconds(client.pid)
        except OSError:
            pass
        time.sleep(0.05)
    out = client.stdout.read() if client.stdout else ""
    elapsed = time.monotonic() - t0
    after = {n: cpu_seconds(p) for n, p in pids.items()}
    result = json.loads([ln for ln in out.splitlines() if ln.startswith("{")][-1])
    writes = max(1.0, result["ops_per_s"] * elapsed)  # the warm-up's writes are charged too

    def per_write(u: float, s: float) -> dict[str, float]:
        return {"cpu_us": round((u + s) / writes * 1e6), "kernel_share": round(s / (u + s), 2)}

    nodes = {}
    for n in pids:
        u, s = (after[n][i] - before[n][i] for i in (0, 1))
        nodes[n] = {"role": "leader" if n == leader else "follower", **per_write(u, s)}
    return {
        "concurrency": c,
        "ops_per_s": result["ops_per_s"],
        "p50_ms": result["p50_ms"],
        "p99_ms": result["p99_ms"],
        "p999_ms": result["p999_ms"],
        "errors": result["errors"],
        "nodes": nodes,
        "client": per_write(*client_cpu),
        "loadavg": loadavg(),
    }


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--concurrency", default="1,16,64", help="Comma-separated requests in flight.")
    ap.add_argument("--duration", type=float, default=5.0, help="Measured seconds per run.")
    ap.add_argument("--rounds", type=int, default=1, help="Repeat the sweep (medians shown).")
    ap.add_argument("--no-fsync", action="store_true", help="Run the nodes with --no-fsync.")
    ap.add_argument("--option", action="append", default=[], help="Raft option NAME=VALUE.")
    ap.add_argument("--base-port", type=int, default=33000, help="First port to try.")
    ap.add_argument("--json", action="store_true", help="Print one JSON object on stdout.")
    args = ap.parse_args()
    cs = [int(x) for x in args.concurrency.split(",") if x.strip()]
    extra = ["--no-fsync"] if args.no_fsync else []
    for opt in args.option:
        extra += ["--option", opt]
    work = Path(tempfile.mkdtemp(prefix="qk-costs-"))
    system = QuorumkitSystem(work, pick_base_port(args.base_port))
    system.cluster.extra = extra
    runs: list[dict[str, Any]] = []
    try:
        system.start()
        for rnd in range(args.rounds):
            for c in cs:
                run = one_run(system, c, args.duration)
                run["round"] = rnd + 1
                runs.append(run)
                if not args.json:
                    nodes = ", ".join(
                        f"{n} ({v['role']}) {v['cpu_us']} us ({v['kernel_share']:.0%} kernel)"
                        for n, v in sorted(run["nodes"].items())
                    )
                    print(
                        f"C={c}: {run['ops_per_s']:,.0f} writes/s, p50 {run['p50_ms']:.2f} "
                        f"p99 {run['p99_ms']:.2f} p99.9 {run['p999_ms']:.2f} ms, "
                        f"{run['errors']} errors | CPU per write: {nodes}, client "
                        f"{run['client']['cpu_us']} us | load {run['loadavg'][0]:.2f}",
                        flush=True,
                    )
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        system.stop()
        shutil.rmtree(work, ignore_errors=True)
    medians = []
    for c in cs:
        rows = [r for r in runs if r["concurrency"] == c]
        medians.append(
            {
                "concurrency": c,
                **{
                    k: statistics.median(r[k] for r in rows)
                    for k in ("ops_per_s", "p50_ms", "p99_ms", "p999_ms")
                },
                "leader_cpu_us": statistics.median(
                    v["cpu_us"] for r in rows for v in r["nodes"].values() if v["role"] == "leader"
                ),
                "follower_cpu_us": statistics.median(
                    v["cpu_us"]
                    for r in rows
                    for v in r["nodes"].values()
                    if v["role"] == "follower"
                ),
            }
        )
    if args.json:
        print(json.dumps({"python": platform.python_version(), "runs": runs, "medians": medians}))
    elif args.rounds > 1:
        for m in medians:
            print(
                f"median C={m['concurrency']}: {m['ops_per_s']:,.0f} writes/s, p50 "
                f"{m['p50_ms']:.2f} p99 {m['p99_ms']:.2f} ms, CPU per write: leader "
                f"{m['leader_cpu_us']:.0f} us, followers {m['follower_cpu_us']:.0f} us"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
