"""HTTP JSON front end (aiohttp): the key-value API, status, metrics and fault injection.

==========================================  ============================================
``GET /v1/kv/{key}``                        ``{"key", "value"}`` (404 when missing);
                                            linearizable (ReadIndex); ``?consistency=stale``
                                            reads this node's replica
``PUT /v1/kv/{key}``                        body is the value; ``?cas=OLD`` compare-and-set
                                            (412 when the value was not OLD)
``POST /v1/kv/{key}?op=append``             append the body to the value
``DELETE /v1/kv/{key}``                     delete
``GET /v1/status``                          node id, role, term, leader, commit/applied, peers
``GET /metrics``                            Prometheus text format
``POST/DELETE /v1/admin/faults``            fault injection (only with ``--fault-injection``)
==========================================  ============================================

Writes may carry ``X-Client-Id`` and ``X-Request-Seq`` headers: a retried request with the same
pair is executed at most once (client sessions). Errors are JSON ``{"error", "detail"}`` with
400 (bad request), 413 (too large), 503 (no leader / not available), 504 (outcome unknown).
"""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

from quorumkit.kv import session_command

if TYPE_CHECKING:
    from quorumkit.net.runtime import NodeRuntime

MAX_BODY_BYTES = 1 << 20


def _value_json(value: Any) -> dict[str, Any]:
    if isinstance(value, bytes):
        try:
            return {"value": value.decode("utf-8")}
        except UnicodeDecodeError:
            return {"value": base64.b64encode(value).decode(), "encoding": "base64"}
    return {"value": value}


def _error(status: int, error: str, detail: str, **extra: Any) -> web.Response:
    body = {"error": error, "detail": detail, **extra}
    return web.json_response(body, status=status)


def _result_response(result: Any, ok: dict[str, Any]) -> web.Response:
    if isinstance(result, dict) and "error" in result:
        err = str(result["error"])
        extra = {k: v for k, v in result.items() if k not in ("error", "detail")}
        detail = str(result.get("detail", err))
        if err in ("not_leader", "unavailable", "overloaded", "down"):
            return _error(503, err, detail, **extra)
        if err in ("timeout", "leader_changed") or result.get("indeterminate"):
            return _error(504, err, detail, **extra)
        return _error(400, err, detail, **extra)
    return web.json_response(ok)


class HttpFrontEnd:
    def __init__(self, runtime: NodeRuntime) -> None:
        self.rt = runtime
        self.app = web.Application(client_max_size=MAX_BODY_BYTES)
        self.app.add_routes(
            [
                web.get("/v1/kv/{key}", self.get),
                web.put("/v1/kv/{key}", self.put),
                web.post("/v1/kv/{key}", self.post),
                web.delete("/v1/kv/{key}", self.delete),
                web.get("/v1/status", self.status),
                web.get("/metrics", self.metrics),
                web.post("/v1/admin/faults", self.set_faults),
                web.delete("/v1/admin/faults", self.clear_faults),
                web.get("/", self.index),
            ]
        )
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        self.runner = web.AppRunner(self.app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, host, port)
        await site.start()
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else port

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    # ------------------------------------------------------------------ helpers
    def _session(self, request: web.Request, op: tuple[Any, ...]) -> Any:
        client = request.headers.get("X-Client-Id")
        seq = request.headers.get("X-Request-Seq")
        if client is None or seq is None:
            return op
        try:
            n = int(seq)
            if not 0 <= n < 2**63:
                raise ValueError(seq)
        except ValueError:
            raise web.HTTPBadRequest(
                text=json.dumps(
                    {
                        "error": "bad_request",
                        "detail": "X-Request-Seq must be an integer in [0, 2**63)",
                    }
                ),
                content_type="application/json",
            ) from None
        return session_command(client[:128], n, op)

    async def _body(self, request: web.Request) -> str | bytes:
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            raise web.HTTPRequestEntityTooLarge(MAX_BODY_BYTES, request.content_length)
        content = request.content
        if content.is_eof() and request.content_length is not None:
            raw = content.read_nowait()  # the whole body has arrived (the usual case): no await
        else:
            raw = await request.read()
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw

    # ------------------------------------------------------------------ kv
    async def get(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        consistency = request.query.get("consistency", "linearizable")
        if consistency == "stale":
            result = self.rt.local_read(("get", key))
        elif consistency == "linearizable":
            result = await self.rt.execute(("get", key))
        else:
            return _error(400, "bad_request", "consistency is 'linearizable' or 'stale'")
        if isinstance(result, dict) and "error" in result:
            return _result_response(result, {})
        if result is None:
            return web.json_response({"key": key, "value": None}, status=404)
        return web.json_response({"key": key, **_value_json(result)})

    async def put(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        value = await self._body(request)
        if "cas" in request.query:
            old: Any = request.query["cas"]
            op: tuple[Any, ...] = ("cas", key, old, value)
            result = await self.rt.execute(self._session(request, op))
            if result is False:
                return _error(412, "cas_failed", f"value of {key!r} was not {old!r}")
            return _result_response(result, {"key": key, "ok": True})
        result = await self.rt.execute(self._session(request, ("put", key, value)))
        return _result_response(result, {"key": key, "ok": True})

    async def post(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        if request.query.get("op") != "append":
            return _error(400, "bad_request", "POST /v1/kv/{key} needs ?op=append")
        value = await self._body(request)
        result = await self.rt.execute(self._session(request, ("append", key, value)))
        return _result_response(result, {"key": key, "ok": True})

    async def delete(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        result = await self.rt.execute(self._session(request, ("delete", key)))
        return _result_response(result, {"key": key, "ok": True})

    # ------------------------------------------------------------------ status
    async def status(self, request: web.Request) -> web.Response:
        st = self.rt.status()
        # how many matching answers from distinct nodes a client should wait for (PBFT: f + 1)
        st["client_replies_needed"] = self.rt.protocol_cls.client_replies_needed(
            len(self.rt.config.peers), self.rt.protocol.config
        )
        return web.json_response(st)

    async def metrics(self, request: web.Request) -> web.Response:
        body = self.rt.metrics.render(self.rt.transport.dropped)
        return web.Response(
            body=body,
            content_type="text/plain",
            charset="utf-8",
            headers={"X-Prometheus-Format": "0.0.4"},
        )

    async def index(self, request: web.Request) -> web.Response:
        st = self.rt.status()
        return web.json_response(
            {
                "quorumkit": st["id"],
                "role": st.get("role"),
                "leader": st.get("leader"),
                "api": ["/v1/kv/{key}", "/v1/status", "/metrics"],
            }
        )

    # ------------------------------------------------------------------ fault injection
    async def set_faults(self, request: web.Request) -> web.Response:
        if not self.rt.config.fault_injection:
            return _error(403, "forbidden", "start the node with --fault-injection")
        try:
            spec = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _error(400, "bad_request", "body must be JSON")
        if not isinstance(spec, dict):
            return _error(400, "bad_request", "body must be a JSON object")
        drop = spec.get("drop", [])
        delay = spec.get("delay_ms", {})
        shape = '{"drop": [peer ids], "delay_ms": {peer id: milliseconds >= 0}}'
        if not isinstance(drop, list) or not isinstance(delay, dict):
            return _error(400, "bad_request", shape)
        if not all(isinstance(p, str) for p in drop):
            return _error(400, "bad_request", shape)
        delays: dict[str, float] = {}
        for p, ms in delay.items():
            if isinstance(ms, bool) or not isinstance(ms, (int, float)) or not 0 <= ms <= 60_000:
                return _error(400, "bad_request", f"delay for {p!r:.40} must be 0..60000 ms")
            delays[p] = float(ms) / 1000
        peers = set(self.rt.config.peers)
        unknown = [p for p in [*drop, *delays] if p not in peers]
        if unknown:
            return _error(400, "bad_request", f"unknown peers {unknown}")
        t = self.rt.transport
        t.drop_peers = set(drop)
        t.delay_s = delays
        return web.json_response({"drop": sorted(t.drop_peers), "delay_ms": delay})

    async def clear_faults(self, request: web.Request) -> web.Response:
        if not self.rt.config.fault_injection:
            return _error(403, "forbidden", "start the node with --fault-injection")
        self.rt.transport.drop_peers = set()
        self.rt.transport.delay_s = {}
        return web.json_response({"drop": [], "delay_ms": {}})
