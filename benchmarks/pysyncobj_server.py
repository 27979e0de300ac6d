"""One node of a PySyncObj key-value cluster behind a small HTTP API, for benchmarks/compare.py.

PySyncObj (PyPI ``pysyncobj``) replicates a Python object with Raft. Each node is one process
running this script: a ``SyncObj`` holding a ``ReplDict``, and a threaded HTTP/1.1 server with

==========================  ================================================================
``PUT /v1/kv/{key}``        body is the value; answers 200 only once the write is committed
                            and applied on this node (``ReplDict.set(..., sync=True)``).
                            Any node accepts writes: PySyncObj forwards a command submitted on
                            a follower to the leader itself. 503 when the command failed
                            (no leader, leader changed, ...), 504 on timeout.
``GET /v1/kv/{key}``        this node's replica (a local, possibly stale read); 404 if missing
``GET /v1/status``          ``{"self", "leader", "is_leader", "state", "term", "commit_idx",
                            "last_applied", "ready"}``
==========================  ================================================================

so ``quorumkit bench --target http-kv`` can drive it. ``appendEntriesUseBatch`` is off by
default (PySyncObj's batching holds each write for up to ``appendEntriesPeriod``, 100 ms).
PySyncObj keeps its log in memory unless ``--journal`` is given, and never fsyncs it.

    python benchmarks/pysyncobj_server.py --self 127.0.0.1:7100 \\
        --partners 127.0.0.1:7110,127.0.0.1:7120 --http 127.0.0.1:7101
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pysyncobj import SyncObj, SyncObjConf, SyncObjException  # type: ignore[import-untyped]
from pysyncobj.batteries import ReplDict  # type: ignore[import-untyped]

KV_PREFIX = "/v1/kv/"


class KVServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(
        self, address: tuple[str, int], syncobj: SyncObj, kv: ReplDict, timeout_s: float
    ) -> None:
        super().__init__(address, KVHandler)
        self.syncobj = syncobj
        self.kv = kv
        self.write_timeout_s = timeout_s


class KVHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the benchmark client expects
    # headers and body are two writes: without TCP_NODELAY, Nagle's algorithm and the
    # client's delayed ACK add ~40 ms to every response
    disable_nagle_algorithm = True
    server: KVServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _key(self) -> str | None:
        path = self.path.split("?", 1)[0]
        if not path.startswith(KV_PREFIX) or len(path) == len(KV_PREFIX):
            return None
        return path[len(KV_PREFIX) :]

    def do_PUT(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        value = self.rfile.read(length) if length else b""
        key = self._key()
        if key is None:
            self._reply(404, {"error": "not_found", "detail": self.path})
            return
        try:
            self.server.kv.set(key, value, sync=True, timeout=self.server.write_timeout_s)
        except SyncObjException as exc:
            code = 504 if exc.errorCode == "Timeout" else 503
            self._reply(code, {"error": str(exc.errorCode), "detail": "write not committed"})
            return
        self._reply(200, {"key": key, "ok": True})

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] == "/v1/status":
            self._reply(200, status(self.server.syncobj))
            return
        key = self._key()
        if key is None:
            self._reply(404, {"error": "not_found", "detail": self.path})
            return
        value = self.server.kv.get(key)
        if value is None:
            self._reply(404, {"key": key, "value": None})
            return
        self._reply(200, {"key": key, "value": value.decode("utf-8", "replace")})


def status(syncobj: SyncObj) -> dict[str, Any]:
    st = syncobj.getStatus()
    leader = st.get("leader")
    me = st.get("self")
    return {
        "self": getattr(me, "id", str(me)),
        "leader": getattr(leader, "id", None) if leader is not None else None,
        "is_leader": bool(syncobj._isLeader()),
        "state": st.get("state"),
        "term": st.get("raft_term"),
        "commit_idx": st.get("commit_idx"),
        "last_applied": st.get("last_applied"),
        "ready": bool(syncobj.isReady()),
    }


def split_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise SystemExit(f"pysyncobj_server: error: expected HOST:PORT, got {text!r}")
    return host, int(port)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description="One PySyncObj node (ReplDict) with a PUT/GET /v1/kv/{key} HTTP API."
    )
    p.add_argument("--self", dest="self_addr", required=True, help="HOST:PORT for Raft peers.")
    p.add_argument(
        "--partners", required=True, help="The other nodes' Raft HOST:PORT, comma-separated."
    )
    p.add_argument("--http", required=True, help="HOST:PORT of the HTTP API.")
    p.add_argument("--journal", default=None, help="Journal file (default: log in memory).")
    p.add_argument(
        "--batch",
        action="store_true",
        help="Keep PySyncObj's appendEntriesUseBatch=True (holds writes up to 100 ms).",
    )
    p.add_argument(
        "--write-timeout", type=float, default=5.0, help="Seconds a PUT waits for commit."
    )
    args = p.parse_args(argv)

    conf = SyncObjConf(appendEntriesUseBatch=args.batch, journalFile=args.journal)
    kv = ReplDict()
    partners = [a.strip() for a in args.partners.split(",") if a.strip()]
    syncobj = SyncObj(args.self_addr, partners, conf=conf, consumers=[kv])
    server = KVServer(split_address(args.http), syncobj, kv, args.write_timeout)

    def on_signal(signum: int, frame: Any) -> None:
        # shutdown() blocks until serve_forever() returns, so call it from another thread
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        syncobj.destroy()
    sys.exit(0)


if __name__ == "__main__":
    main()
