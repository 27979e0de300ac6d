"""Raft, Multi-Paxos and PBFT on the same runtime, on loopback, in one run.

Starts, one after the other, a 3-node Raft cluster, a 3-node Multi-Paxos cluster and 4-replica
PBFT clusters (Ed25519 signatures on every message, and MAC authenticators when the build has
them), all with fsync on and a cluster key, and runs the same closed-loop write load against
each with ``quorumkit bench`` in a separate process: C requests in flight (default 1, 16, 64),
100-byte values over 10,000 keys, sent to the leader (PBFT: to the primary, which proxies and
answers once f + 1 replicas agree). Prints writes/s and p50/p99 latency and each protocol's
ratio to Raft from this run. Every process started is stopped at the end (also on Ctrl-C).

    python benchmarks/protocols_loopback.py [--duration 8] [--concurrency 1,16,64] [--json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from quorumkit.net.cluster import LocalCluster

SYSTEMS: list[tuple[str, str, int, list[str]]] = [
    ("raft", "raft", 3, []),
    ("paxos", "paxos", 3, []),
    ("pbft-signatures", "pbft", 4, []),
    ("pbft-mac", "pbft", 4, ["--option", "auth=mac"]),
]


def _status(ep: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://{ep}/v1/status", timeout=2) as r:
        return dict(json.loads(r.read()))


def _put(ep: str, key: str) -> bool:
    req = urllib.request.Request(f"http://{ep}/v1/kv/{key}", data=b"x", method="PUT")
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status == 200
    except OSError:
        return False


def _leader_endpoint(cluster: LocalCluster, timeout_s: float = 60) -> str:
    eps = {s.node_id: s.http for s in cluster.specs}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        dead = [n for n, alive in cluster.alive().items() if not alive]
        if dead:
            raise RuntimeError(f"node(s) {dead} exited")
        try:
            leader = _status(eps["n1"]).get("leader")
            if leader in eps and _put(eps[leader], f"warm-{time.monotonic_ns()}"):
                return eps[leader]
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("no leader accepted a write")


def bench(ep: str, c: int, duration: float) -> dict[str, Any]:
    cmd = [
        sys.executable, "-m", "quorumkit", "bench", "--endpoints", ep, "--concurrency", str(c),
        "--duration", str(duration), "--warmup", "1", "--value-size", "100", "--keys", "10000",
        "--json",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 120, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"bench printed nothing: {proc.stderr[-400:]}")
    return dict(json.loads(lines[-1]))


def run_system(
    name: str, protocol: str, nodes: int, extra: list[str], conc: list[int], duration: float,
    base_port: int,
) -> list[dict[str, Any]]:  # fmt: skip
    work = Path(tempfile.mkdtemp(prefix=f"qk-{name}-"))
    cluster = LocalCluster(nodes, base_port, work, protocol=protocol, extra_args=extra)
    rows: list[dict[str, Any]] = []
    try:
        cluster.start(log_dir=work / "logs")
        ep = _leader_endpoint(cluster)
        for c in conc:
            r = bench(ep, c, duration)
            rows.append(
                {"system": name, "concurrency": c, **{k: r[k] for k in ("ops_per_s", "p50_ms",
                 "p99_ms", "p999_ms", "errors")}}
            )  # fmt: skip
            print(
                f"{name:16} C={c:<3} {r['ops_per_s']:>8.0f} writes/s  p50 {r['p50_ms']:7.2f} ms"
                f"  p99 {r['p99_ms']:7.2f} ms  errors {r['errors']}",
                file=sys.stderr,
            )
    except RuntimeError as exc:
        print(f"{name}: skipped ({exc}); logs in {work}/logs", file=sys.stderr)
        return rows
    finally:
        cluster.stop()
    shutil.rmtree(work, ignore_errors=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=8.0, help="measured seconds per run")
    ap.add_argument("--concurrency", default="1,16,64", help="requests in flight, comma list")
    ap.add_argument("--base-port", type=int, default=23000)
    ap.add_argument("--systems", default=",".join(s[0] for s in SYSTEMS))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    conc = [int(x) for x in args.concurrency.split(",")]
    wanted = set(args.systems.split(","))
    rows: list[dict[str, Any]] = []
    for i, (name, protocol, nodes, extra) in enumerate(SYSTEMS):
        if name in wanted:
            rows += run_system(
                name, protocol, nodes, extra, conc, args.duration, args.base_port + 100 * i
            )
    base = {r["concurrency"]: r for r in rows if r["system"] == "raft"}
    for r in rows:
        b = base.get(r["concurrency"])
        r["throughput_vs_raft"] = round(r["ops_per_s"] / b["ops_per_s"], 2) if b else None
        r["p50_vs_raft"] = round(r["p50_ms"] / b["p50_ms"], 2) if b else None
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print(f"{'system':16} {'C':>3} {'writes/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'x raft':>7}")
    for r in rows:
        print(
            f"{r['system']:16} {r['concurrency']:>3} {r['ops_per_s']:>9.0f} {r['p50_ms']:>8.2f} "
            f"{r['p99_ms']:>8.2f} {r['throughput_vs_raft'] or '-':>7}"
        )


if __name__ == "__main__":
    main()
