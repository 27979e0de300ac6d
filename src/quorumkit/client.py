"""Python client of a quorumkit cluster (HTTP API), synchronous and asynchronous.

>>> c = Client(["127.0.0.1:8011", "127.0.0.1:8021", "127.0.0.1:8031"])   # doctest: +SKIP
>>> c.put("x", "1"); c.get("x")                                          # doctest: +SKIP
'1'

Rules: the client finds the leader (``/v1/status``) and talks to it; any node would do, since
followers forward. When the cluster says a client needs several matching answers
(``client_replies_needed`` in ``/v1/status``: f + 1 for PBFT, where up to f nodes may lie), the
client sends every request to every node and accepts a result once that many nodes returned
it. Every write runs in a client session (a random client id and a sequence
number), so a retry after a timeout or a lost connection is executed at most once. Reads are
linearizable unless ``stale=True``. Failures raise :class:`ClientError`; ``indeterminate`` on it
says whether the write may still have taken effect.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from typing import Any

from quorumkit.errors import QuorumkitError

RETRYABLE = (503, 504)


class ClientError(QuorumkitError):
    def __init__(self, message: str, *, indeterminate: bool = False) -> None:
        super().__init__(message)
        self.indeterminate = indeterminate


@dataclass(frozen=True)
class _Call:
    method: str
    path: str
    body: bytes | None
    write: bool


class _Core:
    """What the sync and async clients share: endpoints, sessions, request shapes, verdicts."""

    def __init__(
        self, endpoints: list[str] | str, timeout_s: float, retries: int, client_id: str | None
    ) -> None:
        eps = endpoints.split(",") if isinstance(endpoints, str) else list(endpoints)
        self.endpoints = [e.strip().removeprefix("http://").rstrip("/") for e in eps if e.strip()]
        if not self.endpoints:
            raise ClientError("no endpoints given")
        self.timeout_s = timeout_s
        self.retries = retries
        self.client_id = client_id or uuid.uuid4().hex
        self.seq = 0
        self.current = 0
        #: matching answers from distinct nodes needed to accept a result (1: trust the leader)
        self.quorum = 1

    def learn_quorum(self, status: dict[str, Any]) -> None:
        needed = status.get("client_replies_needed", 1)
        if isinstance(needed, int) and not isinstance(needed, bool) and needed > 1:
            if needed > len(self.endpoints):
                raise ClientError(
                    f"the cluster needs {needed} matching answers per request, but only "
                    f"{len(self.endpoints)} endpoints were given: list every node"
                )
            self.quorum = needed

    def url(self, path: str) -> str:
        return f"http://{self.endpoints[self.current]}{path}"

    def rotate(self) -> None:
        self.current = (self.current + 1) % len(self.endpoints)

    def headers(self, call: _Call, seq: int) -> dict[str, str]:
        h = {"Content-Type": "application/octet-stream"}
        if call.write:
            h["X-Client-Id"] = self.client_id
            h["X-Request-Seq"] = str(seq)
        return h

    @staticmethod
    def key_path(key: str) -> str:
        return "/v1/kv/" + urllib.parse.quote(key, safe="")

    @staticmethod
    def body(value: str | bytes) -> bytes:
        return value.encode() if isinstance(value, str) else value

    def next_seq(self, call: _Call) -> int:
        """The session sequence number of a new request (writes only; retries reuse it)."""
        if not call.write:
            return 0
        self.seq += 1
        return self.seq


class _Attempts:
    """The bookkeeping of one request's retries, shared by the sync and async clients."""

    def __init__(self, op: str, call: _Call, retries: int) -> None:
        self.op = op
        self.call = call
        self.retries = retries
        self.unknown = False
        self.last = ""

    def retry_status(self, r: _Retry) -> None:
        self.unknown = self.unknown or r.status == 504
        self.last = f"HTTP {r.status} {r.payload.get('error')}"

    def connection_lost(self, exc: BaseException) -> None:
        self.unknown = self.unknown or self.call.write  # the write may have arrived
        self.last = str(exc) or type(exc).__name__

    @staticmethod
    def backoff_s(attempt: int) -> float:
        return min(0.05 * 2.0**attempt, 1.0)

    def give_up(self) -> ClientError:
        return ClientError(
            f"{self.op} failed after {self.retries} attempts: {self.last}",
            indeterminate=self.unknown and self.call.write,
        )


class _Tally:
    """Quorum mode: answers per endpoint; a result wins once ``needed`` endpoints gave it."""

    def __init__(self, needed: int) -> None:
        self.needed = needed
        self.answers: dict[int, Any] = {}

    def add(self, endpoint: int, value: Any) -> bool:
        self.answers[endpoint] = value
        return sum(1 for v in self.answers.values() if v == value) >= self.needed


def _answer(op: str, status: int, raw: bytes) -> Any:
    """The client-side meaning of one HTTP answer; raises _Retry for 503/504."""
    try:
        payload = json.loads(raw) if raw else {}
    except json.JSONDecodeError:
        payload = {"error": "bad_response", "detail": raw[:100].decode("latin-1")}
    if status in RETRYABLE:
        raise _Retry(status, payload)
    return _verdict(op, status, payload)


def _verdict(op: str, status: int, payload: dict[str, Any]) -> Any:
    if status == 404 and op == "get":
        return None
    if status == 412 and op == "cas":
        return False
    if status >= 400:
        raise ClientError(f"{op}: HTTP {status}: {payload.get('error')}: {payload.get('detail')}")
    if op == "get":
        value = payload.get("value")
        if payload.get("encoding") == "base64" and isinstance(value, str):
            import base64

            return base64.b64decode(value)
        return value
    if op == "cas":
        return True
    if op == "status":
        return payload
    return None


def _shape(op: str, key: str, value: Any = None, old: Any = None, stale: bool = False) -> _Call:
    path = _Core.key_path(key) if key else ""
    if op == "get":
        return _Call("GET", path + ("?consistency=stale" if stale else ""), None, False)
    if op == "put":
        return _Call("PUT", path, _Core.body(value), True)
    if op == "cas":
        q = urllib.parse.urlencode({"cas": old})
        return _Call("PUT", f"{path}?{q}", _Core.body(value), True)
    if op == "append":
        return _Call("POST", f"{path}?op=append", _Core.body(value), True)
    if op == "delete":
        return _Call("DELETE", path, None, True)
    if op == "status":
        return _Call("GET", "/v1/status", None, False)
    raise ClientError(f"unknown operation {op!r}")


class Client(_Core):
    """Synchronous client (standard library HTTP)."""

    def __init__(
        self,
        endpoints: list[str] | str,
        *,
        timeout_s: float = 5.0,
        retries: int = 8,
        client_id: str | None = None,
    ) -> None:
        super().__init__(endpoints, timeout_s, retries, client_id)
        self._find_leader()

    def _find_leader(self) -> None:
        for i in range(len(self.endpoints)):
            self.current = i
            try:
                st = self._once(_shape("status", ""), 0, "status")
            except (ClientError, OSError):
                continue
            self.learn_quorum(st)
            if st.get("role") == "leader" or self.quorum > 1:
                return
        self.current = 0

    def _once(self, call: _Call, seq: int, op: str) -> Any:
        req = urllib.request.Request(
            self.url(call.path), data=call.body, method=call.method, headers=self.headers(call, seq)
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        return _answer(op, status, raw)

    def _from_all(self, call: _Call, seq: int, op: str, attempts: _Attempts) -> tuple[bool, Any]:
        """Quorum mode: send to every endpoint at once; (True, result) once enough agree."""
        from concurrent.futures import ThreadPoolExecutor, as_completed

        tally = _Tally(self.quorum)

        def one(i: int) -> Any:
            return _At(i, self._once_at(i, call, seq, op))

        # not a with-block: a silent node must not hold the answer back (no wait on exit)
        pool = ThreadPoolExecutor(max_workers=len(self.endpoints))
        try:
            futures = [pool.submit(one, i) for i in range(len(self.endpoints))]
            for fut in as_completed(futures):
                try:
                    got = fut.result()
                except _Retry as r:
                    attempts.retry_status(r)
                    continue
                except (OSError, TimeoutError, ClientError) as exc:
                    attempts.connection_lost(exc)
                    continue
                if tally.add(got.endpoint, got.value):
                    return True, got.value
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        attempts.last = f"no {self.quorum} matching answers ({len(tally.answers)} answers)"
        return False, None

    def _once_at(self, i: int, call: _Call, seq: int, op: str) -> Any:
        req = urllib.request.Request(
            f"http://{self.endpoints[i]}{call.path}",
            data=call.body,
            method=call.method,
            headers=self.headers(call, seq),
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        return _answer(op, status, raw)

    def _run(self, op: str, call: _Call) -> Any:
        seq = self.next_seq(call)
        attempts = _Attempts(op, call, self.retries)
        for attempt in range(self.retries):
            if self.quorum > 1 and op != "status":
                done, value = self._from_all(call, seq, op, attempts)
                if done:
                    return value
                time.sleep(attempts.backoff_s(attempt))
                continue
            try:
                return self._once(call, seq, op)
            except _Retry as r:
                attempts.retry_status(r)
            except (OSError, TimeoutError) as exc:
                attempts.connection_lost(exc)
            self.rotate()
            time.sleep(attempts.backoff_s(attempt))
        raise attempts.give_up()

    def get(self, key: str, *, stale: bool = False) -> Any:
        return self._run("get", _shape("get", key, stale=stale))

    def put(self, key: str, value: str | bytes) -> None:
        self._run("put", _shape("put", key, value))

    def cas(self, key: str, old: str, new: str | bytes) -> bool:
        return bool(self._run("cas", _shape("cas", key, new, old)))

    def append(self, key: str, value: str | bytes) -> None:
        self._run("append", _shape("append", key, value))

    def delete(self, key: str) -> None:
        self._run("delete", _shape("delete", key))

    def status(self) -> dict[str, Any]:
        return dict(self._run("status", _shape("status", "")))


@dataclass(frozen=True)
class _At:
    endpoint: int
    value: Any


class _Retry(Exception):
    def __init__(self, status: int, payload: dict[str, Any]) -> None:
        super().__init__(status)
        self.status = status
        self.payload = payload


class AsyncClient(_Core):
    """Asynchronous client (aiohttp). Use ``async with AsyncClient(...) as c``."""

    def __init__(
        self,
        endpoints: list[str] | str,
        *,
        timeout_s: float = 5.0,
        retries: int = 8,
        client_id: str | None = None,
    ) -> None:
        super().__init__(endpoints, timeout_s, retries, client_id)
        self._session: Any = None
        self._probed = False

    async def __aenter__(self) -> AsyncClient:
        import aiohttp

        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _from_all(
        self, call: _Call, seq: int, op: str, attempts: _Attempts
    ) -> tuple[bool, Any]:
        """Quorum mode: send to every endpoint at once; (True, result) once enough agree."""
        import asyncio

        import aiohttp

        tally = _Tally(self.quorum)

        async def one(i: int) -> _At:
            return _At(i, await self._once(call, seq, op, endpoint=i))

        tasks = [asyncio.ensure_future(one(i)) for i in range(len(self.endpoints))]
        try:
            for next_done in asyncio.as_completed(tasks):
                try:
                    got = await next_done
                except _Retry as r:
                    attempts.retry_status(r)
                    continue
                except (TimeoutError, OSError, aiohttp.ClientError, ClientError) as exc:
                    attempts.connection_lost(exc)
                    continue
                if tally.add(got.endpoint, got.value):
                    return True, got.value
        finally:
            for t in tasks:
                t.cancel()
        attempts.last = f"no {self.quorum} matching answers ({len(tally.answers)} answers)"
        return False, None

    async def _once(self, call: _Call, seq: int, op: str, endpoint: int | None = None) -> Any:
        if self._session is None:
            await self.__aenter__()
        base = self.url(call.path) if endpoint is None else f"http://{self.endpoints[endpoint]}"
        url = base if endpoint is None else base + call.path
        async with self._session.request(
            call.method, url, data=call.body, headers=self.headers(call, seq)
        ) as resp:
            status = resp.status
            raw = await resp.read()
        return _answer(op, status, raw)

    async def _run(self, op: str, call: _Call) -> Any:
        import asyncio

        import aiohttp

        if self.quorum == 1 and not self._probed and op != "status":
            self._probed = True
            try:
                self.learn_quorum(await self._once(_shape("status", ""), 0, "status"))
            except (ClientError, _Retry, TimeoutError, OSError, aiohttp.ClientError):
                pass
        seq = self.next_seq(call)
        attempts = _Attempts(op, call, self.retries)
        for attempt in range(self.retries):
            if self.quorum > 1 and op != "status":
                done, value = await self._from_all(call, seq, op, attempts)
                if done:
                    return value
                await asyncio.sleep(attempts.backoff_s(attempt))
                continue
            try:
                return await self._once(call, seq, op)
            except _Retry as r:
                attempts.retry_status(r)
            except (TimeoutError, OSError, aiohttp.ClientError) as exc:
                attempts.connection_lost(exc)
            self.rotate()
            await asyncio.sleep(attempts.backoff_s(attempt))
        raise attempts.give_up()

    async def get(self, key: str, *, stale: bool = False) -> Any:
        return await self._run("get", _shape("get", key, stale=stale))

    async def put(self, key: str, value: str | bytes) -> None:
        await self._run("put", _shape("put", key, value))

    async def cas(self, key: str, old: str, new: str | bytes) -> bool:
        return bool(await self._run("cas", _shape("cas", key, new, old)))

    async def append(self, key: str, value: str | bytes) -> None:
        await self._run("append", _shape("append", key, value))

    async def delete(self, key: str) -> None:
        await self._run("delete", _shape("delete", key))

    async def status(self) -> dict[str, Any]:
        return dict(await self._run("status", _shape("status", "")))
