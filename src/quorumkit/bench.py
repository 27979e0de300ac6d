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
import random
import time
from dataclasses import dataclass
from typing import Any

from quorumkit.errors import ConfigError

TARGETS = ("quorumkit", "resp", "etcd", "http-kv")


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


class _Worker:
    def __init__(self, opts: BenchOptions, wid: int, session: Any) -> None:
        self.opts = opts
        self.rng = random.Random(opts.seed * 1000 + wid)
        self.session = session
        self.endpoint = opts.endpoints[wid % len(opts.endpoints)]
        self.value = ("v" * opts.value_size).encode()

    async def request(self, read: bool, key: str) -> bool:
        o = self.opts
        if o.target in ("quorumkit", "http-kv"):
            url = f"http://{self.endpoint}/v1/kv/{key}"
            if read:
                async with self.session.get(url) as r:
                    await r.read()
                    return bool(r.status in (200, 404))
            async with self.session.put(url, data=self.value) as r:
                await r.read()
                return bool(r.status == 200)
        if o.target == "etcd":
            k = base64.b64encode(key.encode()).decode()
            if read:
                async with self.session.post(
                    f"http://{self.endpoint}/v3/kv/range", json={"key": k}
                ) as r:
                    await r.read()
                    return bool(r.status == 200)
            v = base64.b64encode(self.value).decode()
            async with self.session.post(
                f"http://{self.endpoint}/v3/kv/put", json={"key": k, "value": v}
            ) as r:
                await r.read()
                return bool(r.status == 200)
        # resp: session is a redis.asyncio client
        try:
            if read:
                await self.session.get(key)
            else:
                await self.session.set(key, self.value)
        except Exception:
            return False
        return True


async def run_bench(opts: BenchOptions) -> dict[str, Any]:
    import aiohttp

    latencies: list[float] = []
    errors = 0
    done = 0
    start = time.perf_counter()
    measure_from = start + opts.warmup_s
    stop_at = measure_from + opts.duration_s
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
    session: Any = aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=10)
    )
    resp_clients: list[Any] = []

    async def worker(wid: int) -> None:
        nonlocal errors, done
        sess = session
        if opts.target == "resp":
            import redis.asyncio as aioredis

            host, _, port = opts.endpoints[wid % len(opts.endpoints)].rpartition(":")
            sess = aioredis.Redis(host=host, port=int(port), protocol=2)
            resp_clients.append(sess)
        w = _Worker(opts, wid, sess)
        while True:
            now = time.perf_counter()
            if now >= stop_at:
                return
            read = w.rng.random() < opts.read_ratio
            key = f"key{w.rng.randrange(opts.keys):06d}"
            t0 = time.perf_counter()
            try:
                ok = await w.request(read, key)
            except (TimeoutError, aiohttp.ClientError, OSError):
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
        await asyncio.gather(*(worker(i) for i in range(opts.concurrency)))
    finally:
        await session.close()
        for c in resp_clients:
            await c.aclose()
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
