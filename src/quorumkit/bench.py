"""``quorumkit bench``: a closed-loop load generator for a key-value cluster.

``concurrency`` workers each keep one request in flight; each picks a key uniformly from
``keys`` keys, writes a ``value_size``-byte value or (with ``read_ratio``) reads. Latency is
measured per request from send to answer; throughput counts successful requests per second of
the measured period (after a short warm-up). Targets:

``quorumkit`` (HTTP JSON API, any node; followers forward), ``resp`` (the Redis protocol of
quorumkit or of anything that speaks it), ``etcd`` (etcd's v3 JSON gateway, ``/v3/kv/put``),
``http-kv`` (any server with ``PUT/GET /v1/kv/{key}``, e.g. the PySyncObj wrapper in
``benchmarks/``).
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import time
from dataclasses import dataclass
from typing import Any

import httptools

from quorumkit.errors import ConfigError

TARGETS = ("quorumkit", "resp", "etcd", "http-kv")
#: a request without an answer after this long counts as an error (and its connection is
#: replaced)
REQUEST_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class BenchOptions:
    endpoints: tuple[str, ...]
    target: str = "quorumkit"
    concurrency: int = 16
    duration_s: float = 10.0
    warmup_s: float = 1.0
    value_size: int = 100
    keys: int = 10_000
    read_ratio: float = 0.0
    seed: int = 1

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise ConfigError(f"unknown target {self.target!r} (choose from {', '.join(TARGETS)})")
        if not self.endpoints:
            raise ConfigError("give at least one endpoint")
        if self.concurrency < 1:
            raise ConfigError("--concurrency must be >= 1")
        if not self.duration_s > 0 or self.warmup_s < 0:
            raise ConfigError("--duration must be > 0 and --warmup >= 0")
        if self.value_size < 1 or self.keys < 1:
            raise ConfigError("--value-size and --keys must be >= 1")
        if not 0 <= self.read_ratio <= 1:
            raise ConfigError("--read-ratio must be in [0, 1]")


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(p / 100 * (len(sorted_values) - 1))))
    return sorted_values[k]


class HttpConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection with one request in flight at a time (a closed-loop
    worker's). Responses are parsed by llhttp (``httptools``); the client costs a few tens of
    microseconds per request, so that on a small machine the load generator takes as little
    CPU from the servers under test as it can."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.body: list[bytes] = []
        self.keep_alive = True

    @classmethod
    async def open(cls, endpoint: str) -> HttpConnection:
        host, _, port = endpoint.rpartition(":")
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(cls, host.strip("[]"), int(port))
        return conn

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionError(f"malformed HTTP response: {exc}"))
            if self.transport is not None:
                self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._fail(exc or ConnectionError("connection closed by the server"))

    # httptools callbacks
    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.keep_alive = self.parser.should_keep_alive()
        waiter, self.waiter = self.waiter, None
        body, self.body = b"".join(self.body), []
        if waiter is not None and not waiter.done():
            waiter.set_result((self.parser.get_status_code(), body))

    def _fail(self, exc: BaseException) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    @property
    def usable(self) -> bool:
        return self.transport is not None and self.keep_alive and not self.transport.is_closing()

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        """Send one whole request; its (status, body)."""
        if self.transport is None:
            raise ConnectionError("not connected")
        self.waiter = asyncio.get_running_loop().create_future()
        self.body = []
        self.transport.write(raw)
        return await self.waiter

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def http_request(method: str, host: str, path: str, body: bytes = b"", json: bool = False) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n"
    if json:
        head += "Content-Type: application/json\r\n"
    if body or method in ("PUT", "POST"):
        head += f"Content-Length: {len(body)}\r\n"
    return (head + "\r\n").encode() + body


class _Worker:
    """One closed-loop client: one connection (HTTP or RESP), one request at a time."""

    def __init__(self, opts: BenchOptions, wid: int) -> None:
        self.opts = opts
        self.rng = random.Random(opts.seed * 1000 + wid)
        self.endpoint = opts.endpoints[wid % len(opts.endpoints)]
        self.value = ("v" * opts.value_size).encode()
        self.conn: HttpConnection | None = None
        self.redis: Any = None

    def _raw(self, read: bool, key: str) -> bytes:
        o, host = self.opts, self.endpoint
        if o.target == "etcd":
            k = base64.b64encode(key.encode()).decode()
            if read:
                body = json.dumps({"key": k}).encode()
                return http_request("POST", host, "/v3/kv/range", body, json=True)
            v = base64.b64encode(self.value).decode()
            body = json.dumps({"key": k, "value": v}).encode()
            return http_request("POST", host, "/v3/kv/put", body, json=True)
        if read:
            return http_request("GET", host, f"/v1/kv/{key}")
        return http_request("PUT", host, f"/v1/kv/{key}", self.value)

    async def request(self, read: bool, key: str) -> bool:
        o = self.opts
        if o.target == "resp":
            if self.redis is None:
                import redis.asyncio as aioredis

                host, _, port = self.endpoint.rpartition(":")
                self.redis = aioredis.Redis(host=host, port=int(port), protocol=2)
            try:
                if read:
                    await self.redis.get(key)
                else:
                    await self.redis.set(key, self.value)
            except Exception:
                return False
            return True
        if self.conn is None or not self.conn.usable:
            if self.conn is not None:
                self.conn.close()
            self.conn = await HttpConnection.open(self.endpoint)
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                status, _ = await self.conn.request(self._raw(read, key))
        except (TimeoutError, ConnectionError):
            self.conn.close()
            self.conn = None
            raise
        if read and o.target != "etcd":
            return status in (200, 404)
        return status == 200

    async def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        if self.redis is not None:
            await self.redis.aclose()


async def run_bench(opts: BenchOptions) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    done = 0
    start = time.perf_counter()
    measure_from = start + opts.warmup_s
    stop_at = measure_from + opts.duration_s
    workers = [_Worker(opts, i) for i in range(opts.concurrency)]

    async def worker(w: _Worker) -> None:
        nonlocal errors, done
        while True:
            now = time.perf_counter()
            if now >= stop_at:
                return
            read = w.rng.random() < opts.read_ratio
            key = f"key{w.rng.randrange(opts.keys):06d}"
            t0 = time.perf_counter()
            try:
                ok = await w.request(read, key)
            except (TimeoutError, OSError):  # ConnectionError is an OSError
                ok = False
            t1 = time.perf_counter()
            if t0 >= measure_from and t1 <= stop_at:
                if ok:
                    latencies.append(t1 - t0)
                    done += 1
                else:
                    errors += 1
            if not ok:
                await asyncio.sleep(0.01)

    try:
        await asyncio.gather(*(worker(w) for w in workers))
    finally:
        for w in workers:
            await w.close()
    latencies.sort()
    return {
        "target": opts.target,
        "endpoints": list(opts.endpoints),
        "concurrency": opts.concurrency,
        "duration_s": opts.duration_s,
        "value_size": opts.value_size,
        "keys": opts.keys,
        "read_ratio": opts.read_ratio,
        "ops": done,
        "errors": errors,
        "ops_per_s": round(done / opts.duration_s, 1),
        "p50_ms": round(percentile(latencies, 50) * 1000, 3),
        "p99_ms": round(percentile(latencies, 99) * 1000, 3),
        "p999_ms": round(percentile(latencies, 99.9) * 1000, 3),
    }
