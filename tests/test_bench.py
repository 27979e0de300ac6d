"""``quorumkit bench``: the closed-loop load generator (issue 5, acceptance).

Against small in-process HTTP servers the tests check what the generator sends for each
target, that errors, closed connections and garbage are counted rather than crashing it, and
that latencies are summarised sanely; against a real 3-node cluster, that the CLI measures
writes over HTTP and RESP. No timing is asserted (only that answers came).
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from quorumkit.bench import BenchOptions, http_request, run_bench
from quorumkit.errors import ConfigError

Handler = Callable[[str, str, dict[str, str], bytes], tuple[int, bytes, dict[str, str]]]


async def _serve_http(
    handler: Handler, seen: list[tuple[str, str, dict[str, str], bytes]], close_after: bool
) -> asyncio.Server:
    """A tiny HTTP/1.1 server (keep-alive unless ``close_after``) that records requests."""

    async def conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode().split("\r\n")
                method, path, _ = lines[0].split(" ")
                headers = {}
                for ln in lines[1:]:
                    if ln:
                        k, _, v = ln.partition(":")
                        headers[k.strip().lower()] = v.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                seen.append((method, path, headers, body))
                status, out, extra = handler(method, path, headers, body)
                hdrs = {"Content-Length": str(len(out)), **extra}
                if close_after:
                    hdrs["Connection"] = "close"
                writer.write(
                    f"HTTP/1.1 {status} X\r\n".encode()
                    + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()).encode()
                    + b"\r\n"
                    + out
                )
                await writer.drain()
                if close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(conn, "127.0.0.1", 0)


def bench_against(
    handler: Handler, close_after: bool = False, **kw: Any
) -> tuple[dict[str, Any], list[tuple[str, str, dict[str, str], bytes]]]:
    seen: list[tuple[str, str, dict[str, str], bytes]] = []

    async def main() -> dict[str, Any]:
        server = await _serve_http(handler, seen, close_after)
        port = server.sockets[0].getsockname()[1]
        opts = BenchOptions(
            endpoints=(f"127.0.0.1:{port}",),
            **{"concurrency": 4, "duration_s": 0.4, "warmup_s": 0.1, **kw},
        )
        try:
            return await run_bench(opts)
        finally:
            server.close()

    return asyncio.run(main()), seen


def ok(method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes, Any]:
    return 200, b'{"ok": true}', {"Content-Type": "application/json"}


def test_writes_are_puts_of_the_value_over_the_key_space() -> None:
    result, seen = bench_against(ok, value_size=37, keys=50)
    assert result["ops"] > 0 and result["errors"] == 0
    assert result["ops_per_s"] == round(result["ops"] / 0.4, 1)
    assert 0 < result["p50_ms"] <= result["p99_ms"] <= result["p999_ms"]
    assert {m for m, *_ in seen} == {"PUT"}
    assert all(p.startswith("/v1/kv/key0000") and int(p[-6:]) < 50 for _, p, _, _ in seen)
    assert all(b == b"v" * 37 for *_, b in seen)
    assert all(h["host"].startswith("127.0.0.1:") for _, _, h, _ in seen)


def test_reads_are_gets_and_a_missing_key_is_an_answer() -> None:
    result, seen = bench_against(lambda *a: (404, b"{}", {}), read_ratio=1.0)
    assert result["ops"] > 0 and result["errors"] == 0
    assert {m for m, *_ in seen} == {"GET"}


def test_the_etcd_target_posts_base64_json_to_the_v3_gateway() -> None:
    result, seen = bench_against(ok, target="etcd", value_size=10)
    assert result["errors"] == 0 and result["ops"] > 0
    method, path, headers, body = seen[0]
    assert (method, path, headers["content-type"]) == ("POST", "/v3/kv/put", "application/json")
    doc = json.loads(body)
    assert base64.b64decode(doc["value"]) == b"v" * 10
    assert base64.b64decode(doc["key"]).startswith(b"key")


def test_failed_answers_are_counted_as_errors_not_operations() -> None:
    result, seen = bench_against(lambda *a: (503, b"busy", {}))
    assert seen and result["ops"] == 0 and result["errors"] > 0


def test_a_server_that_closes_every_connection_is_followed_by_reconnecting() -> None:
    result, seen = bench_against(ok, close_after=True, concurrency=2)
    assert result["errors"] == 0 and result["ops"] > 2
    assert len(seen) >= result["ops"]  # one request per connection, every one answered


def test_a_garbage_answer_is_an_error_and_the_worker_goes_on() -> None:
    calls = {"n": 0}

    async def main() -> dict[str, Any]:
        async def conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while True:
                    await reader.readuntil(b"\r\n\r\n")
                    await reader.readexactly(100)
                    calls["n"] += 1
                    if calls["n"] % 2:
                        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
                    else:
                        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(conn, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            return await run_bench(
                BenchOptions((f"127.0.0.1:{port}",), concurrency=1, duration_s=0.4, warmup_s=0)
            )
        finally:
            server.close()

    result = asyncio.run(main())
    assert result["errors"] > 0 and result["ops"] > 0


def test_an_unreachable_endpoint_is_errors_not_a_crash() -> None:
    from runtime_helpers import free_port

    opts = BenchOptions((f"127.0.0.1:{free_port()}",), concurrency=2, duration_s=0.2, warmup_s=0)
    result = asyncio.run(run_bench(opts))
    assert result["ops"] == 0 and result["errors"] > 0


def test_requests_are_well_formed_http() -> None:
    raw = http_request("PUT", "h:1", "/v1/kv/a", b"xyz")
    assert raw == b"PUT /v1/kv/a HTTP/1.1\r\nHost: h:1\r\nContent-Length: 3\r\n\r\nxyz"
    assert http_request("GET", "h:1", "/v1/kv/a") == b"GET /v1/kv/a HTTP/1.1\r\nHost: h:1\r\n\r\n"


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"concurrency": 0}, "--concurrency"),
        ({"read_ratio": 1.5}, "--read-ratio"),
        ({"target": "mongo"}, "unknown target"),
        ({"duration_s": 0}, "--duration"),
    ],
)
def test_bad_options_are_refused(bad: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        BenchOptions(("127.0.0.1:1",), **bad)


def test_the_cli_refuses_a_bad_flag_in_one_line() -> None:
    from runtime_helpers import run_cli

    proc = run_cli("bench", "--endpoints", "127.0.0.1:1", "-c", "0")
    assert proc.returncode == 2 and "--concurrency must be >= 1" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_cli_measures_a_real_cluster_over_http_and_resp(tmp_path: Path) -> None:
    from runtime_helpers import run_cli, running_cluster

    with running_cluster(tmp_path, 3) as cluster:
        for target in ("quorumkit", "resp"):
            proc = run_cli(
                "bench", "--data-dir", str(cluster.data_dir), "--target", target,
                "-c", "4", "-d", "1", "--warmup", "0.2", "--json",
            )  # fmt: skip
            assert proc.returncode == 0, proc.stderr
            result = json.loads(proc.stdout)
            assert result["target"] == target
            assert result["ops"] > 0 and result["errors"] == 0, result
        leader = cluster.wait_leader()
        # every write the bench made went through consensus: the leader's commit index moved
        st = cluster.status(leader)
        assert st is not None and st["commit_index"] >= result["ops"]
