"""Shared helpers of the real-process runtime tests (tests/test_runtime*.py).

Real time, real processes, real sockets on loopback. The rules that keep these tests reliable
on a loaded 2-core machine:

* ports: every cluster gets a fresh base port, checked free by binding every port it needs,
  taken from a band below the kernel's ephemeral range (so outgoing connections never steal
  it) and split per pytest-xdist worker; a cluster whose node could not bind is restarted on
  another base (:meth:`RuntimeCluster.start`);
* waiting: :func:`wait_for` polls a condition with short sleeps until a generous deadline, and
  fails with the node logs attached;
* cleanup: every process a test starts is stopped in a ``finally`` (SIGTERM, then SIGKILL),
  including processes left over from a restart; :func:`kill_strays` kills any process whose
  command line names a test's own temporary directory (nothing else is ever touched).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import TryAgainError
from redis.retry import Retry

from quorumkit.net.cluster import LocalCluster, NodeSpec, node_command

T = TypeVar("T")

PYTHON = sys.executable
#: generous bounds for a loaded 2-core machine (never asserted as performance)
START_TIMEOUT_S = 30.0
LEADER_TIMEOUT_S = 20.0
HTTP_TIMEOUT_S = 8.0  # above the node's own request timeout (5 s)
#: statuses of a request that met an election: 503 (not applied), 504 and 0 (unknown)
RETRYABLE = (0, 503, 504)

# ----------------------------------------------------------------------------- ports

# below Linux's default ephemeral range (32768-60999), above the ports people pick by hand
# (7000 is `cluster up`'s default) and clear of 30000+ where local benchmarks tend to live
_BAND_LO = 18_000
_BAND_HI = 30_000
_recent_bases: list[int] = []  # not handed out again soon (their ports may linger)
_rng = random.Random(os.getpid() ^ time.time_ns())


def _worker_index() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    digits = "".join(ch for ch in worker if ch.isdigit())
    return int(digits) if digits else 0


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # like asyncio.start_server: a port in TIME_WAIT is usable
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_ports(base: int, nodes: int) -> list[int]:
    return [base + 10 * i + k for i in range(1, nodes + 1) for k in range(3)]


def free_base_port(nodes: int) -> int:
    """A base port P such that P+10i+{0,1,2} (i = 1..nodes) are all free now."""
    workers = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1))
    width = (_BAND_HI - _BAND_LO) // workers
    if width < 1000:  # many workers: share the band (the bind check still keeps them apart)
        width, workers = _BAND_HI - _BAND_LO, 1
    lo = _BAND_LO + width * (_worker_index() % workers)
    hi = lo + width - 10 * nodes - 20
    for _ in range(200):
        base = _rng.randrange(lo, hi) // 10 * 10
        if any(abs(base - b) < 200 for b in _recent_bases):
            continue
        if all(_port_free(p) for p in [base, *cluster_ports(base, nodes)]):
            _recent_bases.append(base)
            del _recent_bases[:-30]
            return base
    raise RuntimeError("no free base port found")


def free_port() -> int:
    """A port that is free now (chosen by the kernel)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ----------------------------------------------------------------------------- waiting


def wait_for(
    cond: Callable[[], T],
    timeout: float,
    what: str,
    *,
    interval: float = 0.05,
    diagnostics: Callable[[], str] | None = None,
) -> T:
    """Poll ``cond`` until it returns a truthy value (returned) or ``timeout`` s pass (fail).

    Exceptions raised by ``cond`` count as "not yet" (the last one is shown on failure).
    """
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            value = cond()
        except Exception as exc:
            last_exc = exc
        else:
            if value:
                return value
        if time.monotonic() > deadline:
            msg = f"timed out after {timeout:g} s waiting for {what}"
            if last_exc is not None:
                msg += f" (last error: {last_exc!r})"
            if diagnostics is not None:
                msg += "\n" + diagnostics()
            raise AssertionError(msg)
        time.sleep(interval)


# ----------------------------------------------------------------------------- HTTP


@dataclass
class Reply:
    status: int  # 0: no HTTP answer (connection refused, reset, timeout)
    body: Any  # parsed JSON when possible, else bytes; the exception when status == 0

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def http(
    address: str,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = HTTP_TIMEOUT_S,
) -> Reply:
    """One HTTP request with the standard library; never raises for network trouble."""
    req = urllib.request.Request(
        f"http://{address}{path}", data=body, method=method, headers=headers or {}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except (OSError, TimeoutError) as exc:  # refused, reset, timed out
        return Reply(0, exc)
    try:
        return Reply(status, json.loads(raw))
    except (ValueError, UnicodeDecodeError):
        return Reply(status, raw)


def kv_path(key: str, query: str = "") -> str:
    return "/v1/kv/" + urllib.parse.quote(key, safe="") + (f"?{query}" if query else "")


def redis_client(port: int, *, decode: bool = True) -> redis.Redis:
    """redis-py on a node's RESP port. ``-TRYAGAIN`` (no leader: not applied) is retried
    through elections; anything else (an unknown outcome included) is raised."""
    return redis.Redis(
        host="127.0.0.1",
        port=port,
        decode_responses=decode,
        socket_timeout=10,
        socket_connect_timeout=5,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), 30, supported_errors=(TryAgainError,)),
        retry_on_error=[TryAgainError],
    )


# ----------------------------------------------------------------------------- processes


def _proc_cmdlines() -> Iterator[tuple[int, str]]:
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        yield int(entry), raw.replace(b"\x00", b" ").decode("utf-8", "replace")


def processes_mentioning(marker: str) -> list[int]:
    """Pids of the processes whose command line contains ``marker`` (a unique tmp path)."""
    me = os.getpid()
    return [pid for pid, cmd in _proc_cmdlines() if marker in cmd and pid != me]


def kill_strays(marker: str) -> list[int]:
    """SIGKILL every process whose command line names ``marker`` (a test's own tmp dir)."""
    pids = processes_mentioning(marker)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    return pids


def stop_process(
    proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 10
) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_cli(
    *args: str, timeout: float = 60, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m quorumkit ARGS`` in a subprocess (the user's view: exit code, out, err)."""
    env = dict(os.environ)
    env["COLUMNS"] = "200"  # rich tables: no truncated cells
    return subprocess.run(
        [PYTHON, "-m", "quorumkit", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=env,
        check=False,
    )


# ----------------------------------------------------------------------------- clusters


class RuntimeCluster:
    """A local cluster of real node processes (:class:`LocalCluster`) plus test helpers.

    ``protocol_options`` go through a TOML ``--config`` file, as an operator would write it.
    """

    def __init__(
        self,
        root: Path,
        nodes: int = 3,
        *,
        fsync: bool = False,
        fault_injection: bool = False,
        protocol_options: dict[str, Any] | None = None,
        authenticated: bool = True,
        extra_args: Iterable[str] = (),
        protocol: str = "raft",
        tls: bool = False,
    ) -> None:
        self.root = root
        self.tls = tls
        self.nodes = nodes
        self.protocol = protocol
        self.data_dir = root / "cluster"
        self.log_dir = root / "logs"
        extra = list(extra_args)
        if not fsync:
            extra.append("--no-fsync")
        if fault_injection:
            extra.append("--fault-injection")
        if protocol_options:
            cfg = root / "node.toml"
            lines = ["[protocol_options]"]
            for k, v in protocol_options.items():
                lines.append(f"{k} = {json.dumps(v)}")
            cfg.write_text("\n".join(lines) + "\n")
            extra += ["--config", str(cfg)]
        self.extra = extra
        self.authenticated = authenticated
        self.local: LocalCluster | None = None
        self._all_procs: list[subprocess.Popen[bytes]] = []

    # -- lifecycle -------------------------------------------------------------------
    @property
    def lc(self) -> LocalCluster:
        assert self.local is not None, "cluster not started"
        return self.local

    @property
    def ids(self) -> list[str]:
        return [s.node_id for s in self.lc.specs]

    @property
    def specs(self) -> list[NodeSpec]:
        return self.lc.specs

    def spec(self, node: str) -> NodeSpec:
        return next(s for s in self.lc.specs if s.node_id == node)

    def start(self, attempts: int = 4) -> RuntimeCluster:
        """Start every node and wait until a leader is known to all; retry on a port clash."""
        for attempt in range(attempts):
            base = free_base_port(self.nodes)
            self.local = LocalCluster(
                self.nodes,
                base,
                self.data_dir,
                protocol=self.protocol,
                extra_args=self.extra,
                tls=self.tls,
                authenticated=self.authenticated,
            )
            self.local.start(log_dir=self.log_dir)
            self._track()
            try:
                self.wait_serving(self.ids)
                self.wait_leader()
                return self
            except AssertionError:
                clash = self._port_clash()
                self.stop()
                if not clash or attempt == attempts - 1:
                    raise
                # another process took one of our ports: start over elsewhere, empty
                import shutil

                shutil.rmtree(self.data_dir, ignore_errors=True)
                for log in self.log_dir.glob("*.log"):
                    log.rename(log.with_suffix(f".attempt{attempt}"))
        raise AssertionError("unreachable")

    def _port_clash(self) -> bool:
        return any(
            "address already in use" in self.log(n).lower() or "errno 98" in self.log(n).lower()
            for n in self.ids
        )

    def _track(self) -> None:
        for proc in self.lc.procs.values():
            if proc not in self._all_procs:
                self._all_procs.append(proc)

    def stop(self) -> None:
        """SIGTERM every node (SIGKILL after 10 s), including processes left by restarts."""
        if self.local is not None:
            self.local.stop()
        for proc in self._all_procs:
            stop_process(proc, signal.SIGKILL, timeout=10)
        kill_strays(str(self.data_dir))

    def kill(self, node: str, sig: int = signal.SIGKILL) -> None:
        self.lc.kill(node, sig)

    def start_node(self, node: str) -> None:
        proc = self.lc.procs.get(node)
        assert proc is None or proc.poll() is not None, f"{node} is still running"
        self.lc.start_node(node, log_dir=self.log_dir)
        self._track()

    def restart_all(self) -> None:
        for node in self.ids:
            self.start_node(node)
        self.wait_serving(self.ids)
        self.wait_leader()

    def alive(self, node: str) -> bool:
        proc = self.lc.procs.get(node)
        return proc is not None and proc.poll() is None

    def live(self) -> list[str]:
        return [n for n in self.ids if self.alive(n)]

    # -- diagnostics ------------------------------------------------------------------
    def log(self, node: str) -> str:
        path = self.log_dir / f"{node}.log"
        try:
            return path.read_text(errors="replace")
        except OSError:
            return ""

    def diagnostics(self) -> str:
        """Every node's status (as far as it answers) and the tail of its log."""
        parts = []
        for n in self.ids:
            st = self.status(n, timeout=1) if self.alive(n) else None
            summary = "no status"
            if st is not None:
                keys = ("role", "term", "leader", "commit_index", "last_applied", "log_length")
                peers = {
                    p: ("up" if v.get("connected") else "DOWN") + f"/q{v.get('queued')}"
                    for p, v in st.get("peers", {}).items()
                }
                summary = f"{ {k: st.get(k) for k in keys} } peers {peers} dropped {st.get('dropped_frames')}"
            lines = [ln for ln in self.log(n).splitlines() if "fsync" not in ln]
            tail = "\n".join(lines[-12:])
            parts.append(f"--- {n} (alive: {self.alive(n)}) {summary}\n{tail}")
        return "\n".join(parts)

    def wait(self, cond: Callable[[], T], what: str, timeout: float = LEADER_TIMEOUT_S) -> T:
        return wait_for(cond, timeout, what, diagnostics=self.diagnostics)

    # -- HTTP -------------------------------------------------------------------------
    def http_address(self, node: str) -> str:
        return self.spec(node).http

    def endpoints(self, nodes: Iterable[str] | None = None) -> list[str]:
        return [self.http_address(n) for n in (nodes if nodes is not None else self.ids)]

    def request(
        self,
        node: str,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = HTTP_TIMEOUT_S,
    ) -> Reply:
        return http(self.http_address(node), method, path, body, headers, timeout)

    def status(self, node: str, timeout: float = 3.0) -> dict[str, Any] | None:
        r = self.request(node, "GET", "/v1/status", timeout=timeout)
        return r.body if r.status == 200 and isinstance(r.body, dict) else None

    def wait_serving(self, nodes: Iterable[str], timeout: float = START_TIMEOUT_S) -> None:
        nodes = list(nodes)

        def serving() -> bool:
            for n in nodes:
                if not self.alive(n):
                    raise AssertionError(f"node {n} exited: {self.log(n)[-2000:]}")
            return all(self.status(n) is not None for n in nodes)

        deadline = time.monotonic() + timeout
        while True:
            try:
                if serving():
                    return
            except AssertionError:
                raise AssertionError(
                    f"a node exited while starting\n{self.diagnostics()}"
                ) from None
            if time.monotonic() > deadline:
                raise AssertionError(f"nodes {nodes} not serving\n{self.diagnostics()}")
            time.sleep(0.1)

    def leader(self, among: Iterable[str] | None = None) -> str | None:
        """The leader that every node of ``among`` (default: live nodes) agrees on, if any."""
        nodes = list(among) if among is not None else self.live()
        statuses = [self.status(n) for n in nodes]
        if not statuses or any(st is None for st in statuses):
            return None
        leaders = {st["leader"] for st in statuses if st is not None}
        if len(leaders) != 1:
            return None
        (lead,) = leaders
        if lead not in nodes:
            return None
        st = self.status(lead)
        return lead if st is not None and st.get("role") == "leader" else None

    def wait_leader(
        self, among: Iterable[str] | None = None, timeout: float = LEADER_TIMEOUT_S
    ) -> str:
        nodes = list(among) if among is not None else None
        return self.wait(lambda: self.leader(nodes), "an agreed leader", timeout)

    def put(self, node: str, key: str, value: str, timeout: float = HTTP_TIMEOUT_S) -> Reply:
        return self.request(node, "PUT", kv_path(key), value.encode(), timeout=timeout)

    def get(
        self, node: str, key: str, *, stale: bool = False, timeout: float = HTTP_TIMEOUT_S
    ) -> Reply:
        return self.request(
            node, "GET", kv_path(key, "consistency=stale" if stale else ""), timeout=timeout
        )

    def value(self, node: str, key: str, *, stale: bool = False, timeout: float = 20) -> Any:
        """The value read at ``node`` (None when missing). A read that meets an election
        (503 no leader, 504 outcome unknown, no answer) is retried, as a client would (a read
        changes nothing); any other error fails."""
        deadline = time.monotonic() + timeout
        while True:
            r = self.get(node, key, stale=stale)
            if r.status == 404:
                return None
            if r.status == 200:
                return r.body["value"]
            assert r.status in RETRYABLE and time.monotonic() < deadline, (
                f"GET {key} at {node}: {r.status} {r.body!r}\n{self.diagnostics()}"
            )
            time.sleep(0.1)

    def put_sure(self, node: str, key: str, value: str, timeout: float = 20) -> Reply:
        """PUT at ``node`` until acknowledged, retrying through elections (a put of the same
        value is idempotent); any other error fails."""
        deadline = time.monotonic() + timeout
        while True:
            r = self.put(node, key, value)
            if r.ok:
                return r
            assert r.status in RETRYABLE and time.monotonic() < deadline, (
                f"PUT {key} at {node}: {r.status} {r.body!r}\n{self.diagnostics()}"
            )
            time.sleep(0.1)

    def put_ok(
        self, key: str, value: str, nodes: Iterable[str] | None = None, timeout: float = 30
    ) -> str:
        """Write until some node (of ``nodes``, default: live ones) acknowledges; its id."""
        candidates = list(nodes) if nodes is not None else None

        def attempt() -> str | None:
            for n in candidates if candidates is not None else self.live():
                if self.put(n, key, value).ok:
                    return n
            return None

        return self.wait(attempt, f"a successful write of {key}", timeout)

    def fault(self, node: str, drop: list[str]) -> Reply:
        body = json.dumps({"drop": drop}).encode()
        return self.request(
            node, "POST", "/v1/admin/faults", body, {"Content-Type": "application/json"}
        )

    def heal(self, node: str) -> Reply:
        return self.request(node, "DELETE", "/v1/admin/faults")


def dead_senders_to(cluster: RuntimeCluster, node: str) -> list[str]:
    """Live nodes whose outgoing connection to ``node`` is down (while ``node`` serves)."""
    out = []
    for n in cluster.live():
        if n == node:
            continue
        st = cluster.status(n)
        if st is not None and not st["peers"].get(node, {}).get("connected", True):
            out.append(n)
    return out


def wait_caught_up(
    cluster: RuntimeCluster, node: str, cond: Callable[[], T], what: str, timeout: float = 30
) -> T:
    """``cluster.wait(cond)`` for a restarted ``node``. Fails early, and says why, when other
    nodes stay disconnected from it for 5 s while it serves (reconnecting takes at most
    ~1.5 s of back-off): it could never catch up (a transport sender that died)."""
    deadline = time.monotonic() + timeout
    down_since: dict[str, float] = {}
    while True:
        try:
            value = cond()
        except Exception:
            value = None
        if value:
            return value
        now = time.monotonic()
        dead = set(dead_senders_to(cluster, node)) if cluster.alive(node) else set()
        down_since = {n: down_since.get(n, now) for n in dead}
        stuck = sorted(n for n, t in down_since.items() if now - t >= 5)
        if stuck:
            raise AssertionError(
                f"{', '.join(stuck)} never reconnected to the restarted {node} (a dead "
                f"transport sender?)\n{cluster.diagnostics()}"
            )
        if now > deadline:
            raise AssertionError(
                f"timed out after {timeout:g} s waiting for {what}\n{cluster.diagnostics()}"
            )
        time.sleep(0.2)


@contextlib.contextmanager
def running_cluster(root: Path, nodes: int = 3, **kw: Any) -> Iterator[RuntimeCluster]:
    cluster = RuntimeCluster(root, nodes, **kw)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def node_argv(cluster: RuntimeCluster, node: str, extra: Iterable[str] = ()) -> list[str]:
    """The command line that ``LocalCluster`` uses for ``node`` (to run it by hand)."""
    key = cluster.data_dir / "cluster.key" if cluster.authenticated else None
    return node_command(
        cluster.spec(node),
        cluster.specs,
        cluster.data_dir,
        cluster.protocol,
        key,
        [*cluster.extra, *extra],
    )


# ----------------------------------------------------------------------------- histories


class Recorder:
    """A thread-safe client history for :func:`quorumkit.check.check_linearizability`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.t0 = time.monotonic()
        self.ops: list[Any] = []
        self.unexpected: list[str] = []
        self.counts = {"ok": 0, "fail": 0, "info": 0}

    def now(self) -> float:
        return time.monotonic() - self.t0

    def record(
        self, client: int, call: float, ret: float | None, inp: tuple[Any, ...], out: Any
    ) -> None:
        from quorumkit.check import Operation

        with self._lock:
            self.ops.append(Operation(client, call, ret, inp, out))
            self.counts["ok" if ret is not None else "info"] += 1

    def http_op(
        self, cluster: RuntimeCluster, client: int, node: str, inp: tuple[Any, ...]
    ) -> Reply:
        """Run one kv operation over HTTP at ``node`` and record it.

        Outcomes: 2xx (and 404 for a get) complete the operation; 503 is a definite failure
        (not applied: not recorded); 504, timeouts and connection errors leave a write
        indeterminate (recorded with ret None) and a read unrecorded (it changed nothing).
        Anything else is unexpected (kept in ``unexpected``).
        """
        op, key = inp[0], inp[1]
        call = self.now()
        if op == "get":
            r = cluster.get(node, key)
        elif op == "put":
            r = cluster.put(node, key, inp[2])
        elif op == "append":
            r = cluster.request(node, "POST", kv_path(key, "op=append"), inp[2].encode())
        elif op == "delete":
            r = cluster.request(node, "DELETE", kv_path(key))
        else:
            raise ValueError(op)
        ret = self.now()
        if r.ok or (op == "get" and r.status == 404):
            out = r.body.get("value") if (op == "get" and r.status == 200) else None
            self.record(client, call, ret, inp, out)
        elif r.status == 503:
            with self._lock:
                self.counts["fail"] += 1
        elif r.status in (0, 504):
            if op == "get":
                with self._lock:
                    self.counts["fail"] += 1
            else:
                self.record(client, call, None, inp, None)
        else:
            with self._lock:
                self.unexpected.append(f"{node} {inp}: {r.status} {r.body!r}")
            if op != "get":
                self.record(client, call, None, inp, None)
        return r
