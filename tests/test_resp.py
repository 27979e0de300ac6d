"""The RESP2 front end: redis-py (sync and asyncio), redis-cli and redis-benchmark work unchanged
against RespServer over a local KVStateMachine; malformed or oversized input gets an error and
a closed connection, never a crash, and other clients keep being served."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
import redis.asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quorumkit.kv import KVStateMachine, is_read_only
from quorumkit.net.resp import (
    ProtocolError,
    RequestTooLarge,
    RespParser,
    RespServer,
    encode_command,
    split_inline,
)

REDIS_CLI = shutil.which("redis-cli")
REDIS_BENCHMARK = shutil.which("redis-benchmark")


# ---------------------------------------------------------------------------------- helpers
def kv_executor(
    machine: KVStateMachine, delay: Callable[[], float] | None = None
) -> Callable[[tuple[Any, ...]], Any]:
    """An async executor over a local state machine (optionally with random delays)."""

    async def execute(command: tuple[Any, ...]) -> Any:
        await asyncio.sleep(delay() if delay else 0)
        if is_read_only(command):
            return machine.read(command)
        return machine.apply(command)

    return execute


class ServerThread:
    """A RespServer on 127.0.0.1:0 in its own event loop thread (sync clients block)."""

    def __init__(self, execute: Any = None, **kwargs: Any) -> None:
        self.machine = KVStateMachine()
        self.info: dict[str, Any] = {"node_id": "n1", "raft": {"term": 3, "role": "leader"}}
        kwargs.setdefault("info", lambda: self.info)
        self.server = RespServer(execute or kv_executor(self.machine), **kwargs)
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.server.start("127.0.0.1", 0))
        self._ready.set()
        self.loop.run_forever()

    def __enter__(self) -> ServerThread:
        self._thread.start()
        assert self._ready.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()

    @property
    def port(self) -> int:
        assert self.server.port is not None
        return self.server.port

    def client(self, **kwargs: Any) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5, **kwargs)

    def raw(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        return sock

    def stats(self) -> dict[str, int]:
        async def read() -> dict[str, int]:
            return dict(self.server.stats)

        return asyncio.run_coroutine_threadsafe(read(), self.loop).result(5)


@pytest.fixture
def srv() -> Iterator[ServerThread]:
    with ServerThread() as server:
        yield server


@pytest.fixture(params=[None, 2], ids=["default-protocol", "resp2"])
def r(srv: ServerThread, request: pytest.FixtureRequest) -> Iterator[redis.Redis]:
    """redis-py as users get it (RESP3 via HELLO 3 in redis-py 8) and pinned to RESP2."""
    kwargs = {} if request.param is None else {"protocol": request.param}
    client = srv.client(**kwargs)
    yield client
    client.close()


def recv_all(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """Everything the server sends until it closes the connection."""
    sock.settimeout(timeout)
    chunks = []
    while True:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


def recv_exactly(sock: socket.socket, expected: bytes) -> bytes:
    sock.settimeout(5)
    data = b""
    while len(data) < len(expected):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


@contextlib.contextmanager
def watchdog(seconds: int) -> Iterator[None]:
    """Fail instead of hanging (SIGALRM; main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise TimeoutError(f"parser did not finish within {seconds}s")

    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def parse_all(parser: RespParser, chunks: list[bytes]) -> list[list[bytes]]:
    out = []
    total = sum(len(c) for c in chunks)
    for chunk in chunks:
        parser.feed(chunk)
        for _ in range(total + 2):  # each command consumes at least one byte
            command = parser.get_command()
            if command is None:
                break
            out.append(command)
        else:
            raise AssertionError("parser returned more commands than bytes")
    return out


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)] or [b""]


# ---------------------------------------------------------------------------------- parser
def test_parser_reads_arrays_of_bulk_strings_and_keeps_binary_exactly() -> None:
    p = RespParser()
    p.feed(encode_command("SET", b"k\r\n", b"\x00\xff\r\n$3\r\n") + encode_command("GET", "k"))
    assert p.get_command() == [b"SET", b"k\r\n", b"\x00\xff\r\n$3\r\n"]
    assert p.get_command() == [b"GET", b"k"]
    assert p.get_command() is None
    assert p.buffered == 0


def test_parser_waits_for_a_split_frame_byte_by_byte() -> None:
    frame = encode_command("SET", "key", "value")
    p = RespParser()
    for byte in frame[:-1]:
        p.feed(bytes([byte]))
        assert p.get_command() is None
    p.feed(frame[-1:])
    assert p.get_command() == [b"SET", b"key", b"value"]


def test_parser_inline_commands_follow_redis_quoting() -> None:
    p = RespParser()
    p.feed(b'PING\r\n\r\n  set  k  "a b\\x41\\n"  \'it\\\'s\'\nECHO ""\r\n')
    assert p.get_command() == [b"PING"]
    assert p.get_command() == [b"set", b"k", b"a bA\n", b"it's"]
    assert p.get_command() == [b"ECHO", b""]
    assert p.get_command() is None
    assert split_inline(b"") == []
    for bad in (b'GET "k', b"GET 'k", b'GET "k"x'):
        with pytest.raises(ProtocolError, match="unbalanced"):
            split_inline(bad)


def test_parser_empty_arrays_are_ignored() -> None:
    p = RespParser()
    p.feed(b"*0\r\n*-1\r\n" + encode_command("PING"))
    assert p.get_command() == [b"PING"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"*99999999999\r\n", "invalid multibulk length"),
        (b"*abc\r\n", "invalid multibulk length"),
        (b"*" + b"1" * 80, "invalid multibulk length"),
        (b"*1\r\n$-5\r\n", "invalid bulk length"),
        (b"*1\r\n$x\r\n", "invalid bulk length"),
        (b"*1\r\n*1\r\n$4\r\nPING\r\n", "expected '\\$', got '\\*'"),
        (b"*1\r\n:1\r\n", "expected '\\$', got ':'"),
        (b"*1\r\n$4\r\nPINGxx", "expected CRLF"),
        (b"$4\r\nPING\r\n", "expected '\\*', got '\\$'"),
        (b"+OK\r\n", "expected '\\*', got '\\+'"),
        (b"\x00\x01garbage\r\n", "byte 0x00"),
        (b"POST / HTTP/1.1\r\n", "not HTTP"),
        (b"GET" + b"x" * 70000, "too big inline request"),
    ],
)
def test_parser_rejects_malformed_requests(data: bytes, message: str) -> None:
    p = RespParser()
    p.feed(data)
    with pytest.raises(ProtocolError, match=message):
        p.get_command()
    with pytest.raises(ProtocolError):  # a failed parser stays failed
        p.get_command()


def test_parser_limits_request_size_including_declared_and_accumulated_bytes() -> None:
    p = RespParser(max_request_bytes=100)
    p.feed(b"*1\r\n$101\r\n")
    with pytest.raises(RequestTooLarge):
        p.get_command()
    p = RespParser(max_request_bytes=100)
    p.feed(b"*20\r\n" + b"$5\r\nhello\r\n" * 10)  # complete bulks, request not finished
    with pytest.raises(RequestTooLarge):
        p.get_command()
    p = RespParser(max_request_bytes=100)
    p.feed(encode_command("SET", "k", "v" * 60))  # fits
    assert p.get_command() is not None
    p = RespParser(max_multibulk_len=3)
    p.feed(b"*4\r\n")
    with pytest.raises(ProtocolError, match="multibulk"):
        p.get_command()


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(data=st.binary(max_size=600), cuts=st.lists(st.integers(0, 600), max_size=8))
def test_parser_fuzz_arbitrary_bytes_only_raise_protocol_error_and_never_hang(
    data: bytes, cuts: list[int]
) -> None:
    p = RespParser(max_request_bytes=256, max_multibulk_len=64, max_inline_bytes=128)
    with watchdog(10):
        try:
            parse_all(p, split_at(data, cuts))
        except ProtocolError:
            pass
        assert p.buffered <= len(data)


resp_prefixes = st.sampled_from([b"*", b"$", b"\r\n", b"-1", b"0", b"3", b"99999999999", b"PING"])


@settings(max_examples=300, deadline=None)
@given(parts=st.lists(st.one_of(resp_prefixes, st.binary(max_size=8)), max_size=40))
def test_parser_fuzz_near_valid_frames(parts: list[bytes]) -> None:
    p = RespParser(max_request_bytes=512)
    with watchdog(10):
        try:
            parse_all(p, parts)
        except ProtocolError:
            pass


commands_st = st.lists(
    st.lists(st.binary(max_size=40), min_size=1, max_size=6), min_size=1, max_size=10
)


@settings(max_examples=200, deadline=None)
@given(commands=commands_st, cuts=st.lists(st.integers(0, 5000), max_size=10))
def test_parser_round_trips_any_pipeline_split_anywhere(
    commands: list[list[bytes]], cuts: list[int]
) -> None:
    wire = b"".join(encode_command(*c) for c in commands)
    assert parse_all(RespParser(), split_at(wire, cuts)) == commands


# ---------------------------------------------------------------------------------- redis-py
def test_ping_echo_and_handshake_commands(r: redis.Redis) -> None:
    assert r.ping() is True
    assert r.echo(b"hi\r\nthere") == b"hi\r\nthere"
    assert r.client_setname("tester") is True
    assert r.client_getname() in (b"tester", "tester")  # RESP3 callbacks decode it
    assert isinstance(r.client_id(), int)
    assert r.execute_command("SELECT", 0) is True
    with pytest.raises(redis.ResponseError, match="DB index is out of range"):
        r.execute_command("SELECT", 1)
    assert r.config_get("save") == {"save": ""}
    assert r.config_get("appendonly") == {"appendonly": "no"}
    assert r.command_count() > 10
    assert "get" in r.command()
    assert r.command()["get"]["arity"] == 2
    with pytest.raises(redis.ResponseError, match="NOPROTO"):
        r.execute_command("HELLO", 4)


def test_hello_switches_replies_between_resp2_and_resp3(srv: ServerThread) -> None:
    sock = srv.raw()
    sock.sendall(b"GET nope\r\nHELLO 3 SETNAME x\r\nGET nope\r\nCONFIG GET save\r\n")
    sock.sendall(b"HELLO 2\r\nGET nope\r\nQUIT\r\n")
    data = recv_all(sock)
    sock.close()
    hello3, rest = data[len(b"$-1\r\n") :].split(b"_\r\n", 1)
    assert data.startswith(b"$-1\r\n%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n")
    assert b"$5\r\nproto\r\n:3\r\n" in hello3
    assert rest.startswith(b"%1\r\n$4\r\nsave\r\n$0\r\n\r\n*14\r\n")
    assert b"$5\r\nproto\r\n:2\r\n" in rest
    assert rest.endswith(b"$-1\r\n+OK\r\n")


def test_set_get_round_trips_binary_values_and_text(r: redis.Redis) -> None:
    values = [b"plain", b"with\r\nCRLF", b"\x00nul\x00", bytes(range(256)), b"", "naïve €".encode()]
    for i, value in enumerate(values):
        assert r.set(f"k{i}", value) is True
        assert r.get(f"k{i}") == value
    assert r.set(b"\xff\r\nkey", b"v") is True
    assert r.get(b"\xff\r\nkey") == b"v"
    assert r.get("missing") is None
    assert r.mget("k0", "missing", "k1") == [b"plain", None, b"with\r\nCRLF"]
    assert r.strlen("k4") == 0
    assert r.type("k0") == b"string"
    assert r.type("missing") == b"none"


def test_text_values_reach_the_executor_as_str_and_binary_as_bytes(
    srv: ServerThread, r: redis.Redis
) -> None:
    r.set("t", "naïve")
    r.set("b", b"\xff\xfe")
    assert srv.machine.data["t"] == "naïve"
    assert srv.machine.data["b"] == b"\xff\xfe"


def test_del_counts_only_keys_that_existed(r: redis.Redis) -> None:
    r.set("a", 1)
    r.set("b", 2)
    assert r.delete("a", "b", "nope") == 2
    assert r.delete("a") == 0
    assert r.get("a") is None
    assert r.exists("a", "b") == 0
    r.set("c", "x")
    assert r.exists("c", "c", "nope") == 2


def test_append_returns_the_new_length_even_across_text_and_binary(r: redis.Redis) -> None:
    assert r.append("s", "hello") == 5
    assert r.append("s", " world") == 11
    assert r.get("s") == b"hello world"
    assert r.append("s", b"\xff\x00") == 13
    assert r.get("s") == b"hello world\xff\x00"
    r.incr("n")
    assert r.append("n", "0") == 2
    assert r.get("n") == b"10"


def test_incr_counts_and_refuses_non_integers(r: redis.Redis) -> None:
    assert r.incr("n") == 1
    assert r.incr("n") == 2
    r.set("m", "41")
    assert r.incr("m") == 42
    assert r.get("m") == b"42"
    assert r.incrby("m", 8) == 50
    assert r.decr("m") == 49
    assert r.decrby("m", 50) == -1
    assert r.incrby("fresh", -5) == -5
    r.set("word", "abc")
    with pytest.raises(redis.ResponseError, match="not an integer"):
        r.incr("word")
    with pytest.raises(redis.ResponseError, match="not an integer"):
        r.decr("word")
    with pytest.raises(redis.ResponseError, match="not an integer or out of range"):
        r.incrby("m", "x")
    r.set("big", str(2**63 - 2))
    assert r.incrby("big", 1) == 2**63 - 1
    with pytest.raises(redis.ResponseError, match="overflow"):
        r.incrby("big", 2)
    assert r.get("word") == b"abc"


def test_set_options_nx_xx_get_and_refused_expiry(r: redis.Redis) -> None:
    assert r.set("k", "1", nx=True) is True
    assert r.set("k", "2", nx=True) is None
    assert r.set("missing", "x", xx=True) is None
    assert r.get("missing") is None
    assert r.set("k", "3", xx=True) is True
    assert r.set("k", "4", get=True) == b"3"
    assert r.set("new", "v", get=True) is None
    assert r.get("new") == b"v"
    assert r.setnx("k", "5") is False
    assert r.setnx("other", "5") is True
    assert r.set("k", "5", keepttl=True) is True
    with pytest.raises(redis.ResponseError, match="not supported: keys do not expire"):
        r.set("k", "v", ex=10)
    with pytest.raises(redis.ResponseError, match="syntax error"):
        r.execute_command("SET", "k", "v", "NX", "XX")
    assert r.get("k") == b"5"


def test_wrong_arity_and_unknown_commands_get_redis_messages(r: redis.Redis) -> None:
    with pytest.raises(redis.ResponseError, match="wrong number of arguments for 'get' command"):
        r.execute_command("GET")
    with pytest.raises(redis.ResponseError, match="wrong number of arguments for 'incr' command"):
        r.execute_command("INCR", "a", "b")
    with pytest.raises(redis.ResponseError, match="unknown command 'FOO'"):
        r.execute_command("FOO", "bar")
    with pytest.raises(redis.ResponseError, match="MULTI/EXEC transactions are not supported"):
        r.execute_command("MULTI")
    with pytest.raises(redis.ResponseError, match="DBSIZE is not supported"):
        r.dbsize()
    assert r.ping()  # the connection survives command errors


def test_pipeline_of_100_commands_answers_all_in_order(r: redis.Redis) -> None:
    pipe = r.pipeline(transaction=False)
    for i in range(50):
        pipe.set(f"p{i}", i)
        pipe.incr("counter")
    results = pipe.execute()
    assert results == [x for i in range(50) for x in (True, i + 1)]
    pipe = r.pipeline(transaction=False)
    for i in range(100):
        pipe.get(f"p{i % 50}")
    assert pipe.execute() == [str(i % 50).encode() for i in range(100)]


def test_pipelined_replies_keep_order_when_the_executor_is_slow_and_uneven() -> None:
    rng = random.Random(7)
    machine = KVStateMachine()
    with ServerThread(kv_executor(machine, lambda: rng.random() * 0.002)) as srv:
        sock = srv.raw()
        wire = b"".join(encode_command("INCR", "c") for _ in range(200)) + b"PING\r\n"
        sock.sendall(wire)
        expected = b"".join(b":%d\r\n" % i for i in range(1, 201)) + b"+PONG\r\n"
        assert recv_exactly(sock, expected) == expected
        sock.close()


def test_info_is_redis_format_and_parses_with_redis_py(srv: ServerThread, r: redis.Redis) -> None:
    srv.info = {
        "node_id": "n1",
        "leader": None,
        "healthy": True,
        "raft": {"term": 3, "role": "leader", "peers": ["n2", "n3"], "match": {"n2": 4}},
        "weird": "line\r\nbreak",
    }
    info = r.info()
    assert info["redis_version"]
    assert info["node_id"] == "n1"
    assert info["healthy"] == 1
    assert info["term"] == 3
    assert info["role"] == "leader"
    assert info["peers"] == ["n2", "n3"]
    assert info["match"] == {"n2": 4}
    assert info["weird"] == "line break"
    assert r.info("raft") == {
        "term": 3,
        "role": "leader",
        "peers": ["n2", "n3"],
        "match": {"n2": 4},
    }
    assert r.info("nosuchsection") == {}
    sock = srv.raw()
    sock.sendall(b"INFO server\r\nQUIT\r\n")
    text = recv_all(sock)
    sock.close()
    assert text.startswith(b"$")
    assert text.split(b"\r\n", 1)[1].startswith(b"# Server\r\nredis_version:")
    assert b"# Raft" not in text


def test_info_survives_a_failing_info_callable() -> None:
    def broken() -> dict[str, Any]:
        raise RuntimeError("status unavailable")

    with ServerThread(info=broken) as srv:
        client = srv.client()
        assert "status unavailable" in client.info()["info_error"]
        client.close()


def test_runtime_errors_map_to_tryagain_and_err_and_exceptions_to_internal() -> None:
    outcome: dict[str, Any] = {}

    async def execute(command: tuple[Any, ...]) -> Any:
        if "raise" in outcome:
            raise ValueError("boom")
        return outcome.get("result")

    with ServerThread(execute) as srv:
        client = srv.client()
        assert client.ping()
        errors_before = srv.stats()["errors"]  # redis-py 8 tries CLIENT MAINT_NOTIFICATIONS
        outcome["result"] = {"error": "not_leader", "detail": "election in progress"}
        with pytest.raises(redis.exceptions.TryAgainError, match="not_leader: election"):
            client.set("k", "v")
        outcome["result"] = {"error": "unavailable", "detail": "no quorum"}
        with pytest.raises(redis.exceptions.TryAgainError, match="unavailable"):
            client.get("k")
        outcome["result"] = {"error": "timeout", "detail": "5s"}
        with pytest.raises(redis.ResponseError, match=r"timeout: 5s .*outcome unknown"):
            client.incr("k")
        outcome["result"] = {"error": "bad_command", "detail": "nope"}
        with pytest.raises(redis.ResponseError, match=r"^bad_command: nope"):
            client.get("k")
        outcome.clear()
        outcome["raise"] = True
        with pytest.raises(redis.ResponseError, match="internal: ValueError: boom"):
            client.get("k")
        outcome.clear()
        assert client.ping()
        assert srv.stats()["errors"] - errors_before == 5
        client.close()


def test_asyncio_client_concurrent_increments_are_all_counted(srv: ServerThread) -> None:
    async def main() -> tuple[int, list[Any]]:
        clients = [redis.asyncio.Redis(host="127.0.0.1", port=srv.port) for _ in range(10)]

        async def work(c: redis.asyncio.Redis) -> None:
            for _ in range(20):
                await c.incr("shared")

        await asyncio.gather(*(work(c) for c in clients))
        pipe = clients[0].pipeline(transaction=False)
        for i in range(100):
            pipe.append("log", f"{i},")
        lengths = await pipe.execute()
        value = int(await clients[0].get("shared"))
        for c in clients:
            await c.aclose()
        return value, lengths

    value, lengths = asyncio.run(main())
    assert value == 200
    assert lengths[-1] == len("".join(f"{i}," for i in range(100)))


# ---------------------------------------------------------------------------------- raw sockets
def test_inline_ping_and_commands_like_telnet(srv: ServerThread) -> None:
    sock = srv.raw()
    sock.sendall(b'PING\r\nset greeting "hello world"\r\nget greeting\nQUIT\r\n')
    assert recv_all(sock) == b"+PONG\r\n+OK\r\n$11\r\nhello world\r\n+OK\r\n"
    sock.close()


@pytest.mark.parametrize(
    "payload",
    [
        b"*99999999999\r\n",
        b"*1\r\n$-5\r\n",
        b"*2\r\n$3\r\nGET\r\n$x\r\n",
        b"$-5\r\n",
        b"\x00\xff\xfe garbage",
        b"*1\r\n*1\r\n$4\r\nPING\r\n",
        b"*1\r\n$4\r\nPINGxxxx",
        b"POST /v1/kv HTTP/1.1\r\nHost: x\r\n\r\n",
    ],
)
def test_malformed_input_gets_an_error_and_a_closed_connection_and_others_go_on(
    srv: ServerThread, payload: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    bystander = srv.client()
    bystander.set("before", "x")
    sock = srv.raw()
    sock.sendall(encode_command("PING") + payload)
    reply = recv_all(sock)
    assert reply.startswith(b"+PONG\r\n-ERR Protocol error: ")
    assert reply.endswith(b"\r\n") and reply.count(b"\r\n") == 2
    sock.close()
    assert srv.stats()["protocol_errors"] == 1
    assert bystander.get("before") == b"x"
    assert srv.client().ping()
    assert not [rec for rec in caplog.records if rec.levelname in ("ERROR", "CRITICAL")]
    bystander.close()


def test_truncated_frame_then_close_leaves_the_server_serving(srv: ServerThread) -> None:
    sock = srv.raw()
    sock.sendall(encode_command("SET", "k", "v")[:-3])
    sock.shutdown(socket.SHUT_WR)
    assert recv_all(sock) == b""
    sock.close()
    client = srv.client()
    assert client.get("k") is None
    assert client.ping()
    client.close()


def test_request_larger_than_the_limit_is_refused_and_counted() -> None:
    with ServerThread(max_request_bytes=1024) as srv:
        client = srv.client()
        client.set("small", "v" * 900)
        with pytest.raises(redis.ResponseError, match="request larger than 1024 bytes"):
            client.set("big", "v" * 2000)  # error reply, then the connection is closed
        sock = srv.raw()
        sock.sendall(b"*2\r\n$3\r\nGET\r\n$99999999999\r\n")
        assert recv_all(sock).startswith(b"-ERR Protocol error: request larger than 1024 bytes")
        sock.close()
        stats = srv.stats()
        assert stats["too_large"] == 2
        assert stats["protocol_errors"] == 0
        assert srv.client().get("small") == b"v" * 900
        assert srv.client().get("big") is None


def test_connections_over_the_limit_are_refused() -> None:
    with ServerThread(max_connections=2) as srv:
        first, second = srv.raw(), srv.raw()
        first.sendall(b"PING\r\n")
        second.sendall(b"PING\r\n")
        assert recv_exactly(first, b"+PONG\r\n") == b"+PONG\r\n"
        assert recv_exactly(second, b"+PONG\r\n") == b"+PONG\r\n"
        third = srv.raw()
        assert recv_all(third).startswith(b"-ERR max number of clients reached")
        first.close()
        second.close()
        third.close()
        deadline = time.monotonic() + 5
        while srv.stats()["connected"] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert srv.client().ping()
        assert srv.stats()["rejected_connections"] == 1


def test_stop_closes_client_connections() -> None:
    srv = ServerThread().__enter__()
    try:
        sock = srv.raw()
        sock.sendall(b"PING\r\n")
        assert recv_exactly(sock, b"+PONG\r\n") == b"+PONG\r\n"
    finally:
        srv.__exit__(None, None, None)
    assert recv_all(sock) == b""
    sock.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", srv.port), timeout=1).close()


# ---------------------------------------------------------------------------------- redis-tools
@pytest.mark.skipif(
    REDIS_CLI is None, reason="redis-cli not installed (apt-get install redis-tools)"
)
def test_redis_cli_set_and_get(srv: ServerThread) -> None:
    assert REDIS_CLI is not None

    def cli(*args: str) -> str:
        done = subprocess.run(
            [REDIS_CLI, "-p", str(srv.port), *args], capture_output=True, text=True, timeout=10
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    assert cli("SET", "a", "b") == "OK"
    assert cli("GET", "a") == "b"
    assert cli("PING") == "PONG"
    assert cli("INCR", "n") == "1"
    assert "redis_version:" in cli("INFO", "server")


@pytest.mark.skipif(
    REDIS_BENCHMARK is None, reason="redis-benchmark not installed (apt-get install redis-tools)"
)
def test_redis_benchmark_set_get_completes(srv: ServerThread) -> None:
    assert REDIS_BENCHMARK is not None
    done = subprocess.run(
        [REDIS_BENCHMARK, "-p", str(srv.port), "-t", "set,get", "-n", "2000", "-c", "10", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout + done.stderr
    assert "SET:" in out and "GET:" in out
    assert out.count("requests per second") == 2
    assert "WARNING" not in out and "ERROR" not in out
    assert srv.stats()["errors"] == 0
