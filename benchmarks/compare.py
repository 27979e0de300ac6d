"""quorumkit against etcd and PySyncObj on this machine, in one run, on loopback only.

1. Starts three 3-node clusters: quorumkit (raft, fsync on, cluster key), PySyncObj
   (``benchmarks/pysyncobj_server.py``: a ReplDict behind ``PUT/GET /v1/kv/{key}``,
   ``appendEntriesUseBatch=False``) and etcd (fsync on, its default heartbeat 100 ms and
   election timeout 1000 ms unless ``--etcd-election-ms`` / ``--etcd-heartbeat-ms``).
2. Runs the same closed-loop write load against each: ``quorumkit bench`` in a separate
   process, ``--concurrency`` requests in flight (default 1, 16, 64), 100-byte values over
   10,000 keys, writes only. ``--placement leader`` (default) sends every request to the
   current leader of each system; ``--placement spread`` lists all three nodes, leader first,
   and the client assigns worker i to node i mod 3 (so C=1 still talks to the leader). For
   each C the three systems run back to back, in an order rotated from one C to the next, so
   that load from other work on the machine falls on all of them alike.
3. Leader failover (quorumkit and etcd; ``--failover-systems`` can add pysyncobj): SIGKILL the
   leader, then from the kill on issue a write every 10 ms, round-robin to the surviving nodes
   (each attempt times out after 2 s); the failover time is from just before the kill to the
   first successful answer. The killed node is restarted and the cluster is allowed to settle
   before the next run.
4. Prints the results, the quorumkit/etcd and quorumkit/PySyncObj ratios of this run, and
   whether the issue's targets are met (reported, never asserted); ``--json`` prints one JSON
   object instead.

Everything started is stopped at the end, also on Ctrl-C, SIGTERM and errors. A system that is
missing (no ``etcd`` binary, no ``pysyncobj`` module) is skipped with a message.

    python benchmarks/compare.py [--duration 10] [--failover-runs 5] [--json]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

HERE = Path(__file__).resolve().parent
SYSTEMS = ("quorumkit", "pysyncobj", "etcd")
LOOPBACK = "127.0.0.1"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover - not on Linux
        return []


# ----------------------------------------------------------------------------- HTTP helpers


def http_json(
    method: str, url: str, body: bytes | None = None, timeout: float = 2.0
) -> tuple[int, Any]:
    """One request; returns (status, decoded JSON or None). Raises OSError when unreachable."""
    req = urllib.request.Request(url, data=body, method=method)
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, None


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do
        try:
            s.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


# ----------------------------------------------------------------------------- processes


class NodeProcess:
    """One server process with its log file; kill -9, stop (SIGTERM, then SIGKILL), restart."""

    def __init__(self, name: str, cmd: list[str], log_path: Path) -> None:
        self.name = name
        self.cmd = cmd
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.cmd, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT
        )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._close_log()

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


# ----------------------------------------------------------------------------- systems


@dataclass
class NodeView:
    """What one node says about the cluster: its role, its idea of the leader, its term."""

    is_leader: bool
    leader: str | None
    term: int


class System(ABC):
    """A 3-node cluster of one of the compared systems."""

    name: str
    target: str  # the ``quorumkit bench --target``

    def __init__(self, work_dir: Path, nodes: int = 3) -> None:
        self.work_dir = work_dir
        self.n = nodes
        self.node_ids: list[str] = []

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def stop(self) -> None: ...

    @abstractmethod
    def endpoint(self, node: str) -> str:
        """HOST:PORT that the benchmark client talks to."""

    @abstractmethod
    def view(self, node: str) -> NodeView: ...

    @abstractmethod
    def put(self, node: str, key: str, value: bytes, timeout: float) -> bool: ...

    @abstractmethod
    def alive(self, node: str) -> bool: ...

    @abstractmethod
    def kill9(self, node: str) -> None: ...

    @abstractmethod
    def restart(self, node: str) -> None: ...

    def log_hint(self) -> str:
        return f"logs in {self.work_dir}"

    def leader(self) -> str | None:
        """The leader that a majority of the cluster agrees on (the leader itself included)."""
        views: dict[str, NodeView] = {}
        for node in self.node_ids:
            if not self.alive(node):
                continue
            try:
                views[node] = self.view(node)
            except (OSError, ValueError, KeyError, TypeError):
                continue
        leaders = [n for n, v in views.items() if v.is_leader]
        if not leaders:
            return None
        best = max(leaders, key=lambda n: views[n].term)
        agree = sum(1 for v in views.values() if v.leader == best)
        return best if agree >= self.n // 2 + 1 else None

    def wait_healthy(self, timeout_s: float = 60.0) -> str:
        """Wait until every node runs, a majority agrees on a leader and a write through every
        node succeeds; returns the leader."""
        deadline = time.monotonic() + timeout_s
        i = 0
        while time.monotonic() < deadline:
            dead = [n for n in self.node_ids if not self.alive(n)]
            if dead:
                raise RuntimeError(
                    f"{self.name}: node(s) {', '.join(dead)} exited; {self.log_hint()}"
                )
            leader = self.leader()
            if leader is not None:
                i += 1
                if (
                    all(self.put(n, f"health-{i}-{n}", b"ok", timeout=2.0) for n in self.node_ids)
                    and self.leader() == leader
                ):
                    return leader
            time.sleep(0.1)
        raise RuntimeError(
            f"{self.name}: no healthy cluster after {timeout_s:g} s; {self.log_hint()}"
        )


class QuorumkitSystem(System):
    name = "quorumkit"
    target = "quorumkit"

    def __init__(self, work_dir: Path, base_port: int) -> None:
        super().__init__(work_dir)
        from quorumkit.net.cluster import LocalCluster

        self.cluster = LocalCluster(3, base_port, work_dir, protocol="raft")
        self.node_ids = [s.node_id for s in self.cluster.specs]
        self.logs = work_dir / "logs"

    def start(self) -> None:
        self.cluster.start(log_dir=self.logs)

    def stop(self) -> None:
        self.cluster.stop()

    def endpoint(self, node: str) -> str:
        return next(s.http for s in self.cluster.specs if s.node_id == node)

    def view(self, node: str) -> NodeView:
        _, st = http_json("GET", f"http://{self.endpoint(node)}/v1/status", timeout=1.0)
        return NodeView(st["role"] == "leader", st.get("leader"), int(st["term"]))

    def put(self, node: str, key: str, value: bytes, timeout: float) -> bool:
        try:
            status, _ = http_json(
                "PUT", f"http://{self.endpoint(node)}/v1/kv/{key}", value, timeout=timeout
            )
        except OSError:
            return False
        return status == 200

    def alive(self, node: str) -> bool:
        return self.cluster.alive().get(node, False)

    def kill9(self, node: str) -> None:
        self.cluster.kill(node, signal.SIGKILL)

    def restart(self, node: str) -> None:
        self.cluster.start_node(node, log_dir=self.logs)


class PySyncObjSystem(System):
    name = "pysyncobj"
    target = "http-kv"

    def __init__(self, work_dir: Path, base_port: int, journal: bool) -> None:
        super().__init__(work_dir)
        self.node_ids = [f"p{i}" for i in range(1, self.n + 1)]
        self.raft = {n: f"{LOOPBACK}:{base_port + 10 * i}" for i, n in enumerate(self.node_ids, 1)}
        self.http = {
            n: f"{LOOPBACK}:{base_port + 10 * i + 1}" for i, n in enumerate(self.node_ids, 1)
        }
        self.by_raft = {v: k for k, v in self.raft.items()}
        self.procs: dict[str, NodeProcess] = {}
        for n in self.node_ids:
            cmd = [
                sys.executable,
                str(HERE / "pysyncobj_server.py"),
                "--self",
                self.raft[n],
                "--partners",
                ",".join(a for m, a in self.raft.items() if m != n),
                "--http",
                self.http[n],
            ]
            if journal:
                cmd += ["--journal", str(work_dir / n / "journal")]
            self.procs[n] = NodeProcess(n, cmd, work_dir / "logs" / f"{n}.log")

    def start(self) -> None:
        for n in self.node_ids:
            (self.work_dir / n).mkdir(parents=True, exist_ok=True)
            self.procs[n].start()

    def stop(self) -> None:
        for p in self.procs.values():
            p.stop()

    def endpoint(self, node: str) -> str:
        return self.http[node]

    def view(self, node: str) -> NodeView:
        _, st = http_json("GET", f"http://{self.http[node]}/v1/status", timeout=1.0)
        leader = st.get("leader")
        return NodeView(bool(st["is_leader"]), self.by_raft.get(leader or ""), int(st["term"]))

    def put(self, node: str, key: str, value: bytes, timeout: float) -> bool:
        try:
            status, _ = http_json(
                "PUT", f"http://{self.http[node]}/v1/kv/{key}", value, timeout=timeout
            )
        except OSError:
            return False
        return status == 200

    def alive(self, node: str) -> bool:
        return self.procs[node].alive()

    def kill9(self, node: str) -> None:
        self.procs[node].kill9()

    def restart(self, node: str) -> None:
        self.procs[node].start()


class EtcdSystem(System):
    name = "etcd"
    target = "etcd"

    def __init__(
        self, work_dir: Path, base_port: int, binary: str, election_ms: int, heartbeat_ms: int
    ) -> None:
        super().__init__(work_dir)
        self.node_ids = [f"e{i}" for i in range(1, self.n + 1)]
        self.client = {
            n: f"{LOOPBACK}:{base_port + 10 * i}" for i, n in enumerate(self.node_ids, 1)
        }
        self.peer = {
            n: f"http://{LOOPBACK}:{base_port + 10 * i + 1}" for i, n in enumerate(self.node_ids, 1)
        }
        self.prefix = "/v3"
        self.member_of: dict[str, str] = {}  # etcd member id -> node name
        initial = ",".join(f"{n}={u}" for n, u in self.peer.items())
        self.procs: dict[str, NodeProcess] = {}
        for n in self.node_ids:
            cmd = [
                binary,
                "--name",
                n,
                "--data-dir",
                str(work_dir / n),
                "--listen-peer-urls",
                self.peer[n],
                "--initial-advertise-peer-urls",
                self.peer[n],
                "--listen-client-urls",
                f"http://{self.client[n]}",
                "--advertise-client-urls",
                f"http://{self.client[n]}",
                "--initial-cluster",
                initial,
                "--initial-cluster-state",
                "new",
                "--initial-cluster-token",
                f"compare-{os.getpid()}",
                "--heartbeat-interval",
                str(heartbeat_ms),
                "--election-timeout",
                str(election_ms),
                "--logger",
                "zap",
                "--log-outputs",
                "stderr",
                "--log-level",
                "warn",
            ]
            self.procs[n] = NodeProcess(n, cmd, work_dir / "logs" / f"{n}.log")

    def start(self) -> None:
        for p in self.procs.values():
            p.start()

    def stop(self) -> None:
        for p in self.procs.values():
            p.stop()

    def endpoint(self, node: str) -> str:
        return self.client[node]

    def detect_gateway(self, timeout_s: float = 30.0) -> str:
        """The JSON gateway's prefix (/v3 on etcd >= 3.4, /v3beta on 3.3, /v3alpha on 3.2)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for prefix in ("/v3", "/v3beta", "/v3alpha"):
                try:
                    status, body = http_json(
                        "POST",
                        f"http://{self.client[self.node_ids[0]]}{prefix}/maintenance/status",
                        b"{}",
                        timeout=1.0,
                    )
                except OSError:
                    break  # not listening yet
                if status == 200 and isinstance(body, dict) and "header" in body:
                    self.prefix = prefix
                    return prefix
            time.sleep(0.2)
        raise RuntimeError(f"etcd: no v3 JSON gateway answered; {self.log_hint()}")

    def _status(self, node: str) -> dict[str, Any]:
        _, st = http_json(
            "POST", f"http://{self.client[node]}{self.prefix}/maintenance/status", b"{}", 1.0
        )
        member = str(st["header"]["member_id"])
        self.member_of[member] = node
        return dict(st)

    def view(self, node: str) -> NodeView:
        st = self._status(node)
        leader = str(st.get("leader", ""))
        me = str(st["header"]["member_id"])
        if leader not in self.member_of:  # learn every member's id once
            for other in self.node_ids:
                if other != node and self.alive(other):
                    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                        self._status(other)
        return NodeView(leader == me, self.member_of.get(leader), int(st.get("raftTerm", 0)))

    def put(self, node: str, key: str, value: bytes, timeout: float) -> bool:
        body = json.dumps(
            {
                "key": base64.b64encode(key.encode()).decode(),
                "value": base64.b64encode(value).decode(),
            }
        ).encode()
        try:
            status, resp = http_json(
                "POST", f"http://{self.client[node]}{self.prefix}/kv/put", body, timeout=timeout
            )
        except OSError:
            return False
        return status == 200 and isinstance(resp, dict) and "error" not in resp

    def alive(self, node: str) -> bool:
        return self.procs[node].alive()

    def kill9(self, node: str) -> None:
        self.procs[node].kill9()

    def restart(self, node: str) -> None:
        self.procs[node].start()  # the data directory exists: etcd rejoins from its WAL


# ----------------------------------------------------------------------------- measurements


@dataclass
class Config:
    duration: float
    warmup: float
    concurrency: list[int]
    value_size: int
    keys: int
    placement: str
    rounds: int
    failover_runs: int
    failover_systems: list[str]
    settle: float
    systems: list[str] = field(default_factory=list)


def run_bench(system: System, cfg: Config, c: int) -> dict[str, Any]:
    leader = system.wait_healthy()
    eps = [system.endpoint(leader)]
    if cfg.placement == "spread":
        eps += [system.endpoint(n) for n in system.node_ids if n != leader]
    cmd = [
        sys.executable,
        "-m",
        "quorumkit",
        "bench",
        "--endpoints",
        ",".join(eps),
        "--target",
        system.target,
        "--concurrency",
        str(c),
        "--duration",
        str(cfg.duration),
        "--warmup",
        str(cfg.warmup),
        "--value-size",
        str(cfg.value_size),
        "--keys",
        str(cfg.keys),
        "--read-ratio",
        "0",
        "--json",
    ]
    load_before = loadavg()
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=cfg.duration + cfg.warmup + 120, check=False
    )
    load_after = loadavg()
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(
            f"{system.name}: quorumkit bench printed no result (exit {proc.returncode}): "
            f"{proc.stderr.strip()[-500:]}"
        )
    result = json.loads(lines[-1])
    leader_after = system.leader()
    return {
        "system": system.name,
        "concurrency": c,
        "ops_per_s": result["ops_per_s"],
        "p50_ms": result["p50_ms"],
        "p99_ms": result["p99_ms"],
        "p999_ms": result["p999_ms"],
        "ops": result["ops"],
        "errors": result["errors"],
        "endpoints": eps,
        "leader": leader,
        "leader_changed": leader_after != leader,
        "loadavg_before": load_before,
        "loadavg_after": load_after,
    }


PROBE_INTERVAL_S = 0.01
PROBE_TIMEOUT_S = 2.0


def probe_writes(
    system: System, nodes: list[str], tag: str, deadline_s: float = 30.0
) -> float | None:
    """Issue a write every 10 ms, round-robin over ``nodes``, each in its own thread with a 2 s
    timeout; return the perf_counter time of the first success (None if none by the deadline).

    Attempts never wait for each other: a node may hold a write while it has no leader (etcd
    does), and a bounded pool of attempts would then measure the client's timeout."""
    done = threading.Event()
    lock = threading.Lock()
    first: list[float] = []

    def attempt(node: str, key: str) -> None:
        if system.put(node, key, b"x" * 100, timeout=PROBE_TIMEOUT_S):
            t = time.perf_counter()
            with lock:
                if not first:
                    first.append(t)
                    done.set()

    start = time.monotonic()
    i = 0
    while not done.is_set() and time.monotonic() - start < deadline_s:
        node = nodes[i % len(nodes)]
        threading.Thread(target=attempt, args=(node, f"failover-{tag}-{i}"), daemon=True).start()
        i += 1
        done.wait(PROBE_INTERVAL_S)
    return first[0] if first else None


def failover_once(system: System, run: int, settle: float) -> dict[str, Any]:
    old = system.wait_healthy()
    time.sleep(random.uniform(0.0, 0.2))  # kill at a random point of the heartbeat cycle
    survivors = [n for n in system.node_ids if n != old]
    t0 = time.perf_counter()
    system.kill9(old)
    t_killed = time.perf_counter()
    t_ok = probe_writes(system, survivors, f"{run}")
    new = system.leader()
    out: dict[str, Any] = {
        "run": run,
        "killed": old,
        "new_leader": new,
        "kill_ms": round((t_killed - t0) * 1000, 2),
        "failover_ms": round((t_ok - t0) * 1000, 1) if t_ok is not None else None,
    }
    system.restart(old)
    system.wait_healthy()
    time.sleep(settle)
    return out


# ----------------------------------------------------------------------------- reporting


def summarize(results: list[dict[str, Any]]) -> dict[str, dict[int, dict[str, float]]]:
    """Per system and C: the median over rounds of each figure (one round: the figures)."""
    out: dict[str, dict[int, dict[str, float]]] = {}
    for r in results:
        out.setdefault(r["system"], {}).setdefault(r["concurrency"], {})
    for sysname, per_c in out.items():
        for c in per_c:
            rows = [r for r in results if r["system"] == sysname and r["concurrency"] == c]
            per_c[c] = {
                k: float(statistics.median(r[k] for r in rows))
                for k in ("ops_per_s", "p50_ms", "p99_ms", "p999_ms", "errors")
            }
    return out


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 2)


def compute_ratios(
    summary: dict[str, dict[int, dict[str, float]]], cs: list[int]
) -> list[dict[str, Any]]:
    rows = []
    qk = summary.get("quorumkit", {})
    for c in cs:
        row: dict[str, Any] = {"concurrency": c}
        for other in ("etcd", "pysyncobj"):
            o = summary.get(other, {}).get(c)
            q = qk.get(c)
            for metric, key in (("ops_per_s", "ops"), ("p50_ms", "p50"), ("p99_ms", "p99")):
                row[f"{key}_quorumkit_over_{other}"] = ratio(
                    q[metric] if q else None, o[metric] if o else None
                )
        rows.append(row)
    return rows


def failover_stats(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r["failover_ms"] for r in runs if r["failover_ms"] is not None]
    return {
        "runs": len(runs),
        "succeeded": len(ok),
        "median_ms": round(statistics.median(ok), 1) if ok else None,
        "max_ms": max(ok) if ok else None,
        "min_ms": min(ok) if ok else None,
        "all_ms": [r["failover_ms"] for r in runs],
    }


def evaluate_targets(
    summary: dict[str, dict[int, dict[str, float]]],
    failover: dict[str, dict[str, Any]],
    cs: list[int],
    election_max_ms: int,
) -> list[dict[str, Any]]:
    qk, etcd, pso = (summary.get(s, {}) for s in ("quorumkit", "etcd", "pysyncobj"))
    top = 64 if 64 in cs else max(cs)
    low = 1 if 1 in cs else min(cs)
    targets: list[dict[str, Any]] = []

    def add(name: str, met: bool | None, detail: str) -> None:
        targets.append({"target": name, "met": met, "detail": detail})

    if top in qk and top in etcd:
        r = qk[top]["ops_per_s"] / etcd[top]["ops_per_s"] if etcd[top]["ops_per_s"] else None
        add(
            f"write throughput at C={top} >= 1x etcd's",
            None if r is None else r >= 1.0,
            f"{qk[top]['ops_per_s']:,.0f} vs {etcd[top]['ops_per_s']:,.0f} ops/s"
            + (f" = {r:.2f}x" if r is not None else ""),
        )
    else:
        add(f"write throughput at C={top} >= 1x etcd's", None, "not measured")
    if top in qk and top in pso:
        r = qk[top]["ops_per_s"] / pso[top]["ops_per_s"] if pso[top]["ops_per_s"] else None
        add(
            f"write throughput at C={top} >= 2x PySyncObj's",
            None if r is None else r >= 2.0,
            f"{qk[top]['ops_per_s']:,.0f} vs {pso[top]['ops_per_s']:,.0f} ops/s"
            + (f" = {r:.2f}x" if r is not None else ""),
        )
    else:
        add(f"write throughput at C={top} >= 2x PySyncObj's", None, "not measured")
    both = [c for c in cs if c in qk and c in etcd]
    if both:
        worse = [c for c in both if qk[c]["p99_ms"] > etcd[c]["p99_ms"]]
        add(
            "p99 no worse than etcd's (at every C)",
            not worse,
            "; ".join(f"C={c}: {qk[c]['p99_ms']:.1f} vs {etcd[c]['p99_ms']:.1f} ms" for c in both),
        )
    else:
        add("p99 no worse than etcd's (at every C)", None, "not measured")
    if low in qk and low in etcd:
        add(
            f"p50 at C={low} no worse than etcd's",
            qk[low]["p50_ms"] <= etcd[low]["p50_ms"],
            f"{qk[low]['p50_ms']:.2f} vs {etcd[low]['p50_ms']:.2f} ms",
        )
    else:
        add(f"p50 at C={low} no worse than etcd's", None, "not measured")
    fo = failover.get("quorumkit")
    limit = 2 * election_max_ms
    if fo and fo["max_ms"] is not None:
        add(
            f"failover under 2x the maximum election timeout ({limit} ms)",
            fo["succeeded"] == fo["runs"] and fo["max_ms"] < limit,
            f"median {fo['median_ms']} ms, max {fo['max_ms']} ms over {fo['runs']} runs",
        )
    else:
        add(f"failover under 2x the maximum election timeout ({limit} ms)", None, "not measured")
    return targets


def fmt(x: float | None, spec: str = ".2f", suffix: str = "") -> str:
    return "-" if x is None else f"{x:{spec}}{suffix}"


def render(report: dict[str, Any]) -> str:
    lines: list[str] = []
    env = report["environment"]
    cfg = report["config"]
    lines.append(
        f"python {env['python']}, quorumkit {env['quorumkit']}, pysyncobj {env['pysyncobj']}, "
        f"etcd {env['etcd']}; {env['cpus']} CPUs; load average at start {env['loadavg_start']}, "
        f"at end {env['loadavg_end']}"
    )
    lines.append(
        f"closed loop, writes only, {cfg['value_size']}-byte values over {cfg['keys']:,} keys, "
        f"{cfg['duration']:g} s measured after {cfg['warmup']:g} s warm-up, placement "
        f"'{cfg['placement']}', {cfg['rounds']} round(s)"
    )
    for name, why in report["skipped"].items():
        lines.append(f"SKIPPED {name}: {why}")
    if report["interrupted"] or report["error"]:
        why = report["interrupted"] or report["error"]
        lines.append(f"STOPPED EARLY ({why}): partial results")
    lines.append("")
    lines.append("| system | C | ops/s | p50 ms | p99 ms | p99.9 ms | errors | load avg (1 min) |")
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|")
    for c in cfg["concurrency"]:
        for sysname in SYSTEMS:
            s = report["summary"].get(sysname, {}).get(c)
            if s is None:
                continue
            loads = [
                r["loadavg_before"][0]
                for r in report["results"]
                if r["system"] == sysname and r["concurrency"] == c and r["loadavg_before"]
            ]
            changed = any(
                r["leader_changed"]
                for r in report["results"]
                if r["system"] == sysname and r["concurrency"] == c
            )
            lines.append(
                f"| {sysname}{' (leader changed)' if changed else ''} | {c} | "
                f"{s['ops_per_s']:,.0f} | {s['p50_ms']:.2f} | {s['p99_ms']:.2f} | "
                f"{s['p999_ms']:.2f} | {s['errors']:.0f} | "
                f"{fmt(statistics.median(loads) if loads else None)} |"
            )
    lines.append("")
    lines.append(
        "| C | ops/s qk/etcd | ops/s qk/pso | p50 qk/etcd | p99 qk/etcd | p50 qk/pso | p99 qk/pso |"
    )
    lines.append("|---:|---:|---:|---:|---:|---:|---:|")
    for r in report["ratios"]:
        lines.append(
            f"| {r['concurrency']} | {fmt(r['ops_quorumkit_over_etcd'], '.2f', 'x')} | "
            f"{fmt(r['ops_quorumkit_over_pysyncobj'], '.2f', 'x')} | "
            f"{fmt(r['p50_quorumkit_over_etcd'], '.2f', 'x')} | "
            f"{fmt(r['p99_quorumkit_over_etcd'], '.2f', 'x')} | "
            f"{fmt(r['p50_quorumkit_over_pysyncobj'], '.2f', 'x')} | "
            f"{fmt(r['p99_quorumkit_over_pysyncobj'], '.2f', 'x')} |"
        )
    lines.append("(latency ratios below 1 mean quorumkit is faster)")
    if report["failover"]:
        lines.append("")
        lines.append(
            "| failover | election timeout | runs | median ms | max ms | min ms | all ms |"
        )
        lines.append("|---|---|---:|---:|---:|---:|---|")
        for sysname, fo in report["failover"].items():
            lines.append(
                f"| {sysname} | {report['election_timeouts'].get(sysname, '?')} | "
                f"{fo['succeeded']}/{fo['runs']} | {fmt(fo['median_ms'], '.1f')} | "
                f"{fmt(fo['max_ms'], '.1f')} | {fmt(fo['min_ms'], '.1f')} | "
                f"{', '.join(fmt(x, '.0f') for x in fo['all_ms'])} |"
            )
    lines.append("")
    lines.append("Targets (reported, not asserted):")
    for t in report["targets"]:
        verdict = {True: "MET", False: "NOT MET", None: "n/a"}[t["met"]]
        lines.append(f"  [{verdict}] quorumkit {t['target']}: {t['detail']}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main


def etcd_version(binary: str) -> str:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    except OSError as exc:
        return f"unknown ({exc})"
    for line in out.stdout.splitlines():
        if line.lower().startswith("etcd version"):
            return line.split(":", 1)[1].strip()
    return out.stdout.strip().splitlines()[0] if out.stdout.strip() else "unknown"


def pick_base_port(start: int) -> int:
    """The first base port from ``start`` (in steps of 500) whose ports are all free."""
    for base in range(start, 65000 - 400, 500):
        ports = [base + 10 * i + k for i in range(1, 4) for k in range(3)]
        ports += [base + 100 + 10 * i + k for i in range(1, 4) for k in range(2)]
        ports += [base + 200 + 10 * i + k for i in range(1, 4) for k in range(2)]
        if all(port_free(p) for p in ports):
            return base
    raise RuntimeError(f"no free port range from {start}")


def git_revision() -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(HERE.parent), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except OSError:
        return None
    return out.stdout.strip() or None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--duration", type=float, default=10.0, help="Measured seconds per run.")
    ap.add_argument("--warmup", type=float, default=1.0, help="Warm-up seconds before measuring.")
    ap.add_argument("--concurrency", default="1,16,64", help="Comma-separated requests in flight.")
    ap.add_argument("--value-size", type=int, default=100, help="Bytes per value.")
    ap.add_argument("--keys", type=int, default=10_000, help="Distinct keys.")
    ap.add_argument(
        "--placement",
        choices=("leader", "spread"),
        default="leader",
        help="Send all requests to the leader, or spread workers over all nodes (leader first).",
    )
    ap.add_argument(
        "--rounds", type=int, default=1, help="Repeat the sweep; the table shows medians."
    )
    ap.add_argument(
        "--systems", default=",".join(SYSTEMS), help="Which of quorumkit,pysyncobj,etcd to run."
    )
    ap.add_argument(
        "--skip-load", action="store_true", help="Measure failover only (no throughput runs)."
    )
    ap.add_argument(
        "--failover-runs", type=int, default=5, help="Leader kills per system (0: none)."
    )
    ap.add_argument(
        "--failover-systems",
        default="quorumkit,etcd",
        help="Systems whose failover is measured (pysyncobj may be added).",
    )
    ap.add_argument(
        "--settle", type=float, default=2.0, help="Seconds to wait after a restarted node rejoined."
    )
    ap.add_argument("--etcd-bin", default=None, help="etcd binary (default: etcd on PATH).")
    ap.add_argument(
        "--etcd-election-ms", type=int, default=1000, help="etcd --election-timeout (its default)."
    )
    ap.add_argument(
        "--etcd-heartbeat-ms",
        type=int,
        default=100,
        help="etcd --heartbeat-interval (its default).",
    )
    ap.add_argument(
        "--pysyncobj-journal",
        action="store_true",
        help="Give PySyncObj a journal file (mmap, never fsynced) instead of an in-memory log.",
    )
    ap.add_argument("--base-port", type=int, default=31000, help="First port to try.")
    ap.add_argument("--work-dir", default=None, help="Data and logs (default: a temp dir).")
    ap.add_argument("--keep", action="store_true", help="Keep the work dir (logs) at the end.")
    ap.add_argument("--json", action="store_true", help="Print one JSON object on stdout.")
    ap.add_argument("--json-out", default=None, help="Also write the JSON object to this file.")
    args = ap.parse_args(argv)
    try:
        args.concurrency_list = [int(x) for x in args.concurrency.split(",") if x.strip()]
    except ValueError:
        ap.error(f"--concurrency takes integers, got {args.concurrency!r}")
    if not args.concurrency_list or min(args.concurrency_list) < 1:
        ap.error("--concurrency needs values >= 1")
    for opt in ("systems", "failover_systems"):
        names = [s.strip() for s in getattr(args, opt).split(",") if s.strip()]
        bad = [s for s in names if s not in SYSTEMS]
        if bad:
            ap.error(f"--{opt.replace('_', '-')}: unknown system(s) {', '.join(bad)}")
        setattr(args, f"{opt}_list", names)
    if args.duration <= 0 or args.warmup < 0 or args.rounds < 1 or args.failover_runs < 0:
        ap.error("need --duration > 0, --warmup >= 0, --rounds >= 1, --failover-runs >= 0")
    return args


class Interrupted(Exception):
    pass


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def on_term(signum: int, frame: Any) -> None:
        raise Interrupted(f"signal {signum}")

    # SIGINT too: a shell that starts us in the background may have set it to "ignore"
    signal.signal(signal.SIGINT, on_term)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)

    from quorumkit.protocols.raft.config import RaftConfig

    election_max_ms = RaftConfig().election_timeout_ms_max
    election_min_ms = RaftConfig().election_timeout_ms_min
    skipped: dict[str, str] = {}
    wanted = args.systems_list
    etcd_bin = args.etcd_bin or shutil.which("etcd")
    if "etcd" in wanted and (etcd_bin is None or not Path(etcd_bin).exists()):
        skipped["etcd"] = (
            f"no etcd binary ({args.etcd_bin or 'etcd not on PATH'}); install it with "
            "'apt-get install -y etcd-server' or pass --etcd-bin"
        )
    if "pysyncobj" in wanted and importlib.util.find_spec("pysyncobj") is None:
        skipped["pysyncobj"] = (
            f"the pysyncobj module is not importable by {sys.executable}; pip install pysyncobj"
        )
    for name, why in skipped.items():
        log(f"compare: skipping {name}: {why}")

    def version(dist: str) -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    env = {
        "python": platform.python_version(),
        "quorumkit": version("quorumkit"),
        "quorumkit_git": git_revision(),
        "pysyncobj": version("pysyncobj"),
        "etcd": etcd_version(etcd_bin) if etcd_bin else "not installed",
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg_start": loadavg(),
    }
    cfg = Config(
        duration=args.duration,
        warmup=args.warmup,
        concurrency=args.concurrency_list,
        value_size=args.value_size,
        keys=args.keys,
        placement=args.placement,
        rounds=args.rounds,
        failover_runs=args.failover_runs,
        failover_systems=args.failover_systems_list,
        settle=args.settle,
    )
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="qk-compare-"))
    work.mkdir(parents=True, exist_ok=True)
    base = pick_base_port(args.base_port)
    log(f"compare: work dir {work}, ports {base + 10}..{base + 231} on {LOOPBACK}")
    log(f"compare: load average {env['loadavg_start']} on {env['cpus']} CPUs")

    systems: list[System] = []
    results: list[dict[str, Any]] = []
    failover_runs: dict[str, list[dict[str, Any]]] = {}
    interrupted: str | None = None
    error: str | None = None
    failed_start = False  # keep the logs of a system that did not come up
    try:
        for name in SYSTEMS:
            if name not in wanted or name in skipped:
                continue
            system: System
            if name == "quorumkit":
                system = QuorumkitSystem(work / "quorumkit", base)
            elif name == "pysyncobj":
                system = PySyncObjSystem(work / "pysyncobj", base + 100, args.pysyncobj_journal)
            else:
                assert etcd_bin is not None
                system = EtcdSystem(
                    work / "etcd",
                    base + 200,
                    etcd_bin,
                    args.etcd_election_ms,
                    args.etcd_heartbeat_ms,
                )
            log(f"compare: starting {name}")
            systems.append(system)  # before start(): an interrupted start is cleaned up too
            system.start()
            try:
                if isinstance(system, EtcdSystem):
                    prefix = system.detect_gateway()
                    if prefix != "/v3":
                        raise RuntimeError(
                            f"etcd's JSON gateway is at {prefix}, but quorumkit bench "
                            "--target etcd speaks /v3/kv/put (etcd >= 3.4)"
                        )
                leader = system.wait_healthy()
            except RuntimeError as exc:
                skipped[name] = str(exc)
                failed_start = True
                log(f"compare: skipping {name}: {exc}")
                system.stop()
                systems.remove(system)
                continue
            log(f"compare: {name} is up, leader {leader}")

        step = 0
        for rnd in range(0 if args.skip_load else cfg.rounds):
            for c in cfg.concurrency:
                k = step % max(1, len(systems))
                order = systems[k:] + systems[:k]
                step += 1
                for system in order:
                    log(f"compare: round {rnd + 1}, {system.name}, C={c} ...")
                    r = run_bench(system, cfg, c)
                    r["round"] = rnd + 1
                    results.append(r)
                    log(
                        f"compare:   {r['ops_per_s']:,.0f} ops/s, p50 {r['p50_ms']} ms, "
                        f"p99 {r['p99_ms']} ms, p999 {r['p999_ms']} ms, {r['errors']} errors, "
                        f"load {r['loadavg_before']}"
                    )

        for system in systems:
            if system.name not in cfg.failover_systems or cfg.failover_runs == 0:
                continue
            runs = failover_runs.setdefault(system.name, [])
            for i in range(cfg.failover_runs):
                fo = failover_once(system, i + 1, cfg.settle)
                runs.append(fo)
                log(
                    f"compare: {system.name} failover {i + 1}: killed {fo['killed']}, "
                    f"new leader {fo['new_leader']}, write ok after {fo['failover_ms']} ms"
                )
    except (KeyboardInterrupt, Interrupted) as exc:
        interrupted = str(exc) or "Ctrl-C"
        log(f"compare: interrupted ({interrupted}); stopping everything")
    except Exception as exc:  # report what was measured, then fail
        error = f"{type(exc).__name__}: {exc}"
        log(f"compare: error: {error}; stopping everything")
    finally:
        # a second Ctrl-C must not cut the clean-up short
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for system in systems:
            try:
                system.stop()
            except Exception as exc:  # keep stopping the others
                log(f"compare: error while stopping {system.name}: {exc}")
        keep = args.keep or error is not None or failed_start
        if not keep and not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)
        elif not args.work_dir:
            log(f"compare: kept {work} (logs in */logs)")

    env["loadavg_end"] = loadavg()
    summary = summarize(results)
    failover = {name: failover_stats(runs) for name, runs in failover_runs.items()}
    report: dict[str, Any] = {
        "config": cfg.__dict__,
        "environment": env,
        "skipped": skipped,
        "election_timeouts": {
            "quorumkit": f"{election_min_ms}-{election_max_ms} ms",
            "etcd": f"{args.etcd_election_ms}-{2 * args.etcd_election_ms} ms "
            f"(--election-timeout {args.etcd_election_ms}, heartbeat {args.etcd_heartbeat_ms})",
            "pysyncobj": "400-1400 ms (raftMinTimeout/raftMaxTimeout defaults)",
        },
        "results": results,
        "summary": {s: {c: v for c, v in per.items()} for s, per in summary.items()},
        "ratios": compute_ratios(summary, cfg.concurrency),
        "failover_runs": failover_runs,
        "failover": failover,
        "targets": evaluate_targets(summary, failover, cfg.concurrency, election_max_ms),
        "interrupted": interrupted,
        "error": error,
    }
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        print(render(report))
    if error:
        log(f"compare: the run stopped early: {error}")
    return 130 if interrupted else (1 if error else 0)


if __name__ == "__main__":
    sys.exit(main())
