"""Bad input against real node processes: the node keeps running and serving, or refuses to
start with one clear line (DESIGN.md, "The runtime" and "Conventions": garbage gets the
connection closed and a counter bumped, never a crash; errors users can act on get a clear
message and a non-zero exit code, never a traceback; nothing acknowledged is ever lost)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from quorumkit.net import wal
from quorumkit.net.framing import LENGTH, make_frame, read_key
from quorumkit.net.messages import ClientForward
from quorumkit.net.transport import Transport, _PeerReceiver
from quorumkit.protocols.raft.messages import RequestVote
from runtime_helpers import (
    PYTHON,
    RuntimeCluster,
    free_port,
    kv_path,
    node_argv,
    redis_client,
    running_cluster,
)

# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def sec(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RuntimeCluster]:
    """Three authenticated nodes with fault injection (the admin API is reachable)."""
    with running_cluster(tmp_path_factory.mktemp("sec"), 3, fault_injection=True) as c:
        yield c


def dropped(c: RuntimeCluster, node: str) -> dict[str, int]:
    st = c.status(node)
    assert st is not None, f"{node} does not answer /v1/status"
    return dict(st["dropped_frames"])


def dropped_metric(c: RuntimeCluster, node: str) -> dict[str, float]:
    r = c.request(node, "GET", "/metrics")
    assert r.status == 200
    text = r.body.decode() if isinstance(r.body, bytes) else str(r.body)
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "quorumkit_dropped_frames":
            for s in family.samples:
                out[s.labels["reason"]] = s.value
    return out


def still_serving(c: RuntimeCluster, node: str, tag: str) -> None:
    """``node`` is alive, answers HTTP and RESP, and takes part in consensus."""
    assert c.alive(node), c.log(node)
    key = f"alive-{tag}-{time.monotonic_ns()}"
    c.put_sure(node, key, tag)
    for n in c.ids:
        assert c.value(n, key) == tag
    assert redis_client(c.spec(node).resp_port).get(key) == tag


def send_raw(port: int, data: bytes, *, half_close: bool = False, timeout: float = 10) -> bytes:
    """Send ``data`` on a new connection and read until the peer closes it (what it sent)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(data)
            if half_close:
                s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            return b""  # closed on us while sending: also a close
        got = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                return got
            if not chunk:
                return got
            got += chunk
        raise AssertionError(f"the server did not close the connection; got {got[:200]!r}")


# ----------------------------------------------------------------------------- peer frames


FORGED_TERM = 10**6


def _frames(c: RuntimeCluster, target: str) -> dict[str, tuple[bytes, str, bool]]:
    """name -> (bytes to send at ``target``'s peer port, the expected reason, half-close)."""
    key = read_key(c.data_dir / "cluster.key")
    other = next(n for n in c.ids if n != target)
    third = next(n for n in c.ids if n not in (target, other))
    vote = RequestVote(FORGED_TERM, other, 10**9, FORGED_TERM)  # would depose the leader
    garbage = os.urandom(512)
    return {
        "wrong-hmac": (make_frame(other, target, vote, os.urandom(32)), "bad_mac", False),
        "no-hmac": (make_frame(other, target, vote, None), "bad_mac", False),
        "garbage": (LENGTH.pack(len(garbage)) + garbage, "bad_mac", False),
        "http-request": (b"GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n", "oversized", False),
        "oversized-length": (LENGTH.pack(2**32 - 1) + b"\x00" * 64, "oversized", False),
        "truncated": (make_frame(other, target, vote, key)[:-20], "truncated", True),
        # correctly authenticated (the sender has the key) yet wrong
        "not-a-frame": (
            _keyed(key, [1, other, target, ("put", "k", "v")]),
            "malformed",
            False,
        ),
        "unknown-sender": (make_frame("intruder", target, vote, key), "unknown_sender", False),
        "from-itself": (make_frame(target, target, vote, key), "unknown_sender", False),
        "misaddressed": (make_frame(other, third, vote, key), "misaddressed", False),
    }


def _keyed(key: bytes, obj: Any) -> bytes:
    import hashlib
    import hmac

    from quorumkit.codec import encode

    body = encode(obj)
    mac = hmac.new(key, body, hashlib.sha256).digest()
    return LENGTH.pack(len(body) + len(mac)) + body + mac


FRAME_CASES = [
    "wrong-hmac",
    "no-hmac",
    "garbage",
    "http-request",
    "oversized-length",
    "truncated",
    "not-a-frame",
    "unknown-sender",
    "from-itself",
    "misaddressed",
]


@pytest.mark.parametrize("case", FRAME_CASES)
def test_a_bad_peer_frame_closes_the_connection_and_is_counted_and_the_node_keeps_serving(
    sec: RuntimeCluster, case: str
) -> None:
    c = sec
    leader = c.wait_leader()
    target = leader  # the node with the most to lose
    data, reason, half_close = _frames(c, target)[case]
    before = dropped(c, target)
    term = c.status(target)["term"]  # type: ignore[index]
    reply = send_raw(c.spec(target).peer_port, data, half_close=half_close)
    assert reply == b""  # peers never answer on an incoming connection
    c.wait(
        lambda: dropped(c, target).get(reason, 0) == before.get(reason, 0) + 1,
        f"dropped_frames[{reason}] to go up by one",
    )
    assert dropped_metric(c, target)[reason] == dropped(c, target)[reason]
    # nothing was believed: the forged vote's huge term was not adopted
    st = c.status(target)
    assert st is not None and term <= st["term"] < FORGED_TERM
    still_serving(c, target, case)


def test_a_flood_of_bad_connections_does_not_disturb_the_cluster(sec: RuntimeCluster) -> None:
    c = sec
    frames = _frames(c, c.ids[0])
    before = sum(dropped(c, c.ids[0]).values())
    for _ in range(3):
        for node in c.ids:
            for data, _, half in frames.values():
                with socket.create_connection(
                    ("127.0.0.1", c.spec(node).peer_port), timeout=5
                ) as s:
                    try:
                        s.sendall(data)
                        if half:
                            s.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass  # closed on us mid-send: that is the point
    c.wait(
        lambda: sum(dropped(c, c.ids[0]).values()) >= before + 3 * len(frames),
        "every bad connection counted",
    )
    for n in c.ids:
        still_serving(c, n, "flood")


def test_idle_connections_beyond_the_bound_are_refused_and_the_node_keeps_serving(
    sec: RuntimeCluster,
) -> None:
    """Each accepted peer connection may buffer a frame up to the size limit before its MAC
    is checked, so their number is bounded (4 per other member): the rest are closed and
    counted. The node's real peers keep their connections."""
    c = sec
    node = c.ids[1]
    socks = [
        socket.create_connection(("127.0.0.1", c.spec(node).peer_port), timeout=5)
        for _ in range(12)
    ]
    try:
        c.wait(
            lambda: dropped(c, node).get("too_many_connections", 0) >= 12 - 8 + 2,
            "the connections beyond 8 (2 of them the real peers') refused and counted",
        )
        still_serving(c, node, "bounded")
    finally:
        for s in socks:
            s.close()


# -- without a cluster key: loopback peers only ------------------------------------------


class _Connection:
    """Stands in for an accepted connection's asyncio transport."""

    def __init__(self, peer: Any) -> None:
        self.peer = peer
        self.closed = False

    def get_extra_info(self, name: str) -> Any:
        return self.peer if name == "peername" else None

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


def _transport(key: bytes | None) -> Transport:
    peers = {n: ("127.0.0.1", 1) for n in ("n1", "n2", "n3")}
    return Transport("n1", peers, lambda s, m: None, key=key)


@pytest.mark.parametrize(
    ("peer", "allowed"),
    [
        (("127.0.0.1", 5000), True),
        (("127.8.9.10", 5000), True),
        (("::1", 5000, 0, 0), True),
        (("10.0.0.7", 5000), False),
        (("192.168.1.20", 5000), False),
        (("203.0.113.9", 5000), False),
        (("fe80::1", 5000, 0, 2), False),
        (("2001:db8::1", 5000, 0, 0), False),
        (None, False),
        (("not-an-ip", 1), False),
        pytest.param(
            ("::ffff:127.0.0.1", 5000, 0, 0),
            True,
            id="ipv4-mapped-loopback",
        ),
    ],
)
def test_without_a_cluster_key_only_loopback_peers_are_accepted(peer: Any, allowed: bool) -> None:
    assert _transport(None)._allowed(_Connection(peer)) is allowed  # type: ignore[arg-type]
    # with a key, every address may try (the MAC decides)
    assert _transport(b"k" * 32)._allowed(_Connection(peer)) is True  # type: ignore[arg-type]


def test_without_a_cluster_key_a_non_loopback_connection_is_closed_unread_and_counted() -> None:
    delivered: list[Any] = []

    async def main() -> tuple[dict[str, int], bool]:
        peers = {n: ("127.0.0.1", 1) for n in ("n1", "n2", "n3")}
        t = Transport("n1", peers, lambda s, m: delivered.append(m), key=None)
        conn = _Connection(("10.1.2.3", 40000))
        receiver = _PeerReceiver(t)
        receiver.connection_made(conn)  # type: ignore[arg-type]
        receiver.data_received(make_frame("n2", "n1", ClientForward(1, ("put", "k", "v")), None))
        return t.dropped, conn.closed

    counts, closed = asyncio.run(main())
    assert counts == {"not_loopback": 1} and closed and delivered == []


def test_an_unauthenticated_cluster_works_on_loopback_and_says_it_is_unauthenticated(
    tmp_path: Path,
) -> None:
    with running_cluster(tmp_path, 3, authenticated=False) as c:
        assert not (c.data_dir / "cluster.key").exists()
        leader = c.wait_leader()
        c.put_sure(leader, "k", "v")
        assert {c.value(n, "k") for n in c.ids} == {"v"}
        for n in c.ids:
            assert "UNAUTHENTICATED" in c.log(n)
            assert "not_loopback" not in dropped(c, n)
        # a frame made with some key is refused by a node that has none
        port = c.spec(leader).peer_port
        other = next(n for n in c.ids if n != leader)
        forged = RequestVote(FORGED_TERM, other, 0, 0)
        send_raw(port, make_frame(other, leader, forged, b"k" * 32))
        c.wait(lambda: dropped(c, leader).get("malformed") == 1, "a malformed frame counted")
        assert c.status(leader)["term"] < FORGED_TERM  # type: ignore[index]


# ----------------------------------------------------------------------------- LMDB corruption


def _flip_log_record(state_dir: Path, index: int) -> Path:
    """Flip one bit of log entry ``index`` in its write-ahead log record (nodes keep their log
    in ``state/wal``, storage_lmdb's FORMAT_WAL), in place; the record must not be the last
    one (a damaged last record is a torn write, repaired). Returns the segment file."""
    for seg in sorted((state_dir / "wal").glob("*.wal")):
        data = seg.read_bytes()
        offset = wal.SEGMENT_HEADER_BYTES
        while True:
            magic, length, _, _, _ = struct.unpack_from(">IIQII", data, offset)
            if magic != wal.BATCH_MAGIC:
                break
            start = offset + wal.BATCH_HEADER_BYTES
            pos = start
            for kind, first, entries in wal.parse_ops(data[start : start + length]):
                pos += 9 + (4 if kind == wal.OP_APPEND else 0)
                for i, entry in enumerate(entries):
                    pos += 4
                    if first + i == index:
                        nxt = start + length + (-length % 8)
                        assert data[nxt : nxt + 4] == wal.BATCH_MAGIC.to_bytes(4, "big")
                        with open(seg, "r+b") as f:
                            f.seek(pos + len(entry) - 1)
                            f.write(bytes([entry[-1] ^ 0x01]))
                        return seg
                    pos += len(entry)
            offset = start + length + (-length % 8)
    raise AssertionError(f"no log entry {index} in the WAL of {state_dir}")


def _names_entry(message: str, index: int) -> bool:
    """The message names the damaged record as holding log entry ``index``."""
    one = re.search(r"\(log entry (\d+)\)", message)
    many = re.search(r"\(log entries (\d+)-(\d+)\)", message)
    if one:
        return int(one.group(1)) == index
    return bool(many) and int(many.group(1)) <= index <= int(many.group(2))  # type: ignore[union-attr]


class Corruption:
    cluster: RuntimeCluster
    victim: str
    acked: dict[str, str]
    start: subprocess.CompletedProcess[str]
    in_use: subprocess.CompletedProcess[str]
    segment: Path


@pytest.fixture(scope="module")
def corruption(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Corruption]:
    """A follower's log record is flipped while it is stopped; it is then started by hand."""
    out = Corruption()
    with running_cluster(tmp_path_factory.mktemp("corrupt"), 3, fsync=True) as c:
        out.cluster = c
        leader = c.wait_leader()
        victim = next(n for n in c.ids if n != leader)
        out.victim = victim
        out.acked = {}
        for i in range(30):
            key, value = f"acked-{i}", f"v{i}"
            c.put_sure(c.ids[i % 3], key, value)
            out.acked[key] = value
        c.wait(lambda: c.value(victim, "acked-29", stale=True) == "v29", "the victim up to date")
        # a second process on a running node's data dir must refuse to start
        out.in_use = subprocess.run(
            node_argv(c, leader), capture_output=True, text=True, timeout=60
        )
        c.kill(victim, signal.SIGTERM)
        out.segment = _flip_log_record(c.data_dir / victim / "state", 5)
        out.start = subprocess.run(node_argv(c, victim), capture_output=True, text=True, timeout=60)
        yield out


def test_a_corrupted_record_stops_the_node_at_start_and_the_cluster_loses_nothing(
    corruption: Corruption,
) -> None:
    c, victim = corruption.cluster, corruption.victim
    assert corruption.start.returncode != 0, corruption.start.stderr
    assert _names_entry(corruption.start.stderr, 5), corruption.start.stderr
    assert str(c.data_dir / victim / "state") in corruption.start.stderr
    # the two others serve, and every acknowledged write is there
    live = [n for n in c.ids if n != victim]
    leader = c.wait_leader(live)
    for n in live:
        for key, value in corruption.acked.items():
            assert c.value(n, key) == value
    c.put_sure(leader, "after-corruption", "yes")
    for n in live:
        assert c.value(n, "after-corruption") == "yes"
    assert not c.alive(victim)


def test_a_node_wiped_as_the_corruption_message_says_catches_up_from_the_leader(
    corruption: Corruption,
) -> None:
    c, victim = corruption.cluster, corruption.victim
    live = [n for n in c.ids if n != victim]
    leader = c.wait_leader(live)
    term = c.status(leader)["term"]  # type: ignore[index]
    c.put_sure(leader, "before-wipe", "yes")
    shutil.rmtree(c.data_dir / victim)
    c.start_node(victim)
    c.wait_serving([victim])
    deadline = time.monotonic() + 6
    while c.value(victim, "before-wipe", stale=True) != "yes":
        st = c.status(leader)
        if st is None or st["term"] != term or st["role"] != "leader":
            pytest.skip("the leader changed meanwhile (a new leader repairs the node): no verdict")
        assert time.monotonic() < deadline, "the wiped node did not catch up"
        time.sleep(0.1)
    for key, value in corruption.acked.items():
        assert c.value(victim, key, stale=True) == value


def _one_clear_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("quorumkit: error: "), lines[0]
    return lines[0]


def test_a_corrupted_record_is_reported_in_one_line_naming_the_file_and_record(
    corruption: Corruption,
) -> None:
    c, victim = corruption.cluster, corruption.victim
    line = _one_clear_line(corruption.start)
    assert str(c.data_dir / victim / "state") in line
    assert f"WAL file {corruption.segment}, batch record " in line
    assert _names_entry(line, 5)
    assert "checksum mismatch" in line


def test_a_second_node_on_a_data_dir_in_use_refuses_in_one_line(corruption: Corruption) -> None:
    proc = corruption.in_use
    assert proc.returncode != 0
    line = _one_clear_line(proc)
    assert "in use" in line


def test_a_second_node_on_a_data_dir_in_use_refuses_to_start(corruption: Corruption) -> None:
    proc = corruption.in_use
    assert proc.returncode != 0
    assert "in use" in proc.stderr


# ----------------------------------------------------------------------------- HTTP


def _json_post(c: RuntimeCluster, node: str, path: str, body: bytes) -> Any:
    return c.request(node, "POST", path, body, {"Content-Type": "application/json"})


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"\xff\xfe",
        b"",
        b"[1, 2]",
        b'"drop"',
        b'{"drop": "n2"}',
        b'{"drop": ["n9"]}',
        b'{"delay_ms": ["n2"]}',
        b'{"delay_ms": {"n9": 5}}',
    ],
    ids=[
        "syntax",
        "not-utf8",
        "empty",
        "array",
        "string",
        "drop-str",
        "unknown-peer",
        "delay-list",
        "delay-unknown-peer",
    ],
)
def test_bad_fault_specs_are_refused_with_400(sec: RuntimeCluster, body: bytes) -> None:
    c = sec
    n = c.ids[0]
    r = _json_post(c, n, "/v1/admin/faults", body)
    assert r.status == 400, r
    assert r.body["error"] == "bad_request"
    assert c.status(n) is not None


@pytest.mark.parametrize(
    "body",
    [
        b'{"delay_ms": {"n2": "abc"}}',
        b'{"delay_ms": {"n2": null}}',
        b'{"drop": [["n2"]]}',
        b'{"drop": ["n2"], "delay_ms": {"n3": "x"}}',
    ],
    ids=["delay-str", "delay-null", "drop-list", "half-applied"],
)
def test_bad_fault_values_are_refused_with_400_and_change_nothing(
    sec: RuntimeCluster, body: bytes
) -> None:
    c = sec
    n = c.ids[0]
    try:
        before = dropped(c, n).get("fault_injected", 0)
        r = _json_post(c, n, "/v1/admin/faults", body)
        time.sleep(0.3)  # heartbeats flow: a half-applied drop would count them
        assert r.status == 400, r
        assert dropped(c, n).get("fault_injected", 0) == before
    finally:
        c.heal(n)


def test_fault_injection_round_trip_and_refused_without_the_flag(
    sec: RuntimeCluster, tmp_path: Path
) -> None:
    c = sec
    n = c.ids[0]
    r = _json_post(c, n, "/v1/admin/faults", json.dumps({"delay_ms": {c.ids[1]: 1}}).encode())
    assert r.status == 200 and r.body == {"drop": [], "delay_ms": {c.ids[1]: 1}}
    r = c.heal(n)
    assert r.status == 200 and r.body == {"drop": [], "delay_ms": {}}
    still_serving(c, n, "faults")


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_over_1_mib_is_refused_with_413_and_nothing_is_written(
    sec: RuntimeCluster, chunked: bool
) -> None:
    c = sec
    n = c.ids[1]
    key = f"huge-{chunked}"
    big = b"x" * ((1 << 20) + 1)
    if chunked:
        status = _chunked_put(c.spec(n).http_port, kv_path(key), big)
    else:
        status = c.request(n, "PUT", kv_path(key), big).status
    assert status == 413
    assert c.value(n, key) is None
    # exactly 1 MiB is accepted and replicated
    ok = b"y" * (1 << 20)
    assert c.request(n, "PUT", kv_path(key), ok).ok
    assert {len(c.value(m, key)) for m in c.ids} == {1 << 20}
    still_serving(c, n, f"413-{chunked}")


@pytest.mark.parametrize("pieces", [1, 3])
def test_a_body_that_arrives_after_its_headers_is_read_whole(
    sec: RuntimeCluster, pieces: int
) -> None:
    """The handler runs once the headers are in; a body still on its way is awaited (the
    front end reads a body that came with its headers without awaiting)."""
    c = sec
    n = c.ids[0]
    key = f"late-body-{pieces}"
    body = b"0123456789abcdef" * 4
    with socket.create_connection(("127.0.0.1", c.spec(n).http_port), timeout=15) as s:
        head = f"PUT {kv_path(key)} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
        s.sendall(head.encode())
        step = len(body) // pieces
        for i in range(pieces):
            time.sleep(0.15)
            s.sendall(body[i * step : len(body) if i == pieces - 1 else (i + 1) * step])
        answer = _read_until(s, b"\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    assert c.value(n, key) == body.decode()


def _chunked_put(port: int, path: str, body: bytes) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=15) as s:
        s.sendall(f"PUT {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
        try:
            for i in range(0, len(body), 1 << 16):
                chunk = body[i : i + (1 << 16)]
                s.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            s.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed early
        head = _read_until(s, b"\r\n")
    return int(head.split(b" ", 2)[1])


def _read_until(s: socket.socket, marker: bytes) -> bytes:
    """What the server sent until ``marker`` arrived or it closed the connection."""
    got = b""
    while marker not in got:
        chunk = s.recv(4096)
        if not chunk:
            break
        got += chunk
    return got


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/nope", 404),
        ("GET", "/v1/kv", 404),
        ("GET", "/v1/kv/", 404),
        ("GET", "/v1/kv/a/b", 404),
        ("GET", "/v2/status", 404),
        ("GET", "/metrics/x", 404),
        ("PATCH", "/v1/kv/k", 405),
        ("POST", "/v1/status", 405),
        ("POST", "/v1/kv/k?op=increment", 400),
        ("GET", "/v1/kv/k?consistency=eventual", 400),
    ],
)
def test_unknown_paths_and_methods_and_bad_queries(
    sec: RuntimeCluster, method: str, path: str, status: int
) -> None:
    c = sec
    r = c.request(c.ids[2], method, path, b"v" if method in ("POST", "PATCH") else None)
    assert r.status == status, r
    assert c.status(c.ids[2]) is not None


@pytest.mark.parametrize("seq", ["abc", "1.5", "", "0x10", "1e3", "--1"])
def test_a_bad_x_request_seq_is_refused_with_400_and_not_applied(
    sec: RuntimeCluster, seq: str
) -> None:
    c = sec
    n = c.ids[0]
    key = f"seq-{seq.encode().hex()}"
    r = c.request(n, "PUT", kv_path(key), b"v", {"X-Client-Id": "tester", "X-Request-Seq": seq})
    assert r.status == 400, r
    assert r.body["error"] == "bad_request"
    assert c.value(n, key) is None


def test_a_session_retry_is_applied_once_and_odd_sequence_numbers_do_not_crash(
    sec: RuntimeCluster,
) -> None:
    c = sec
    n = c.ids[1]
    key = f"sess-{time.monotonic_ns()}"
    h = {"X-Client-Id": f"c-{time.monotonic_ns()}", "X-Request-Seq": "1"}
    for _ in range(3):  # a retried append with the same (client, seq) runs once
        assert c.request(n, "POST", kv_path(key, "op=append"), b"a", h).ok
    assert c.value(n, key) == "a"
    for seq in ("-1", "0", str(2**63 - 1)):
        r = c.request(n, "PUT", kv_path(key), b"z", {**h, "X-Request-Seq": seq})
        assert r.status in (200, 400), r
    long_id = {"X-Client-Id": "x" * 10_000, "X-Request-Seq": "1"}
    assert c.request(n, "PUT", kv_path(key), b"z", long_id).status in (200, 400, 431)
    still_serving(c, n, "sessions")


@pytest.mark.parametrize(
    "role",
    [
        "leader",
        "follower",
    ],
)
def test_a_sequence_number_too_large_for_the_wire_is_a_400_at_any_node(
    sec: RuntimeCluster, role: str
) -> None:
    c = sec
    leader = c.wait_leader()
    n = leader if role == "leader" else next(x for x in c.ids if x != leader)
    key = f"seq-huge-{role}"
    h = {"X-Client-Id": "huge", "X-Request-Seq": str(2**70)}
    r = c.request(n, "PUT", kv_path(key), b"v", h)
    assert r.status == 400, r
    # refused at the HTTP edge (a session number must fit the wire), or by the state machine
    assert r.body["error"] in ("bad_request", "bad_command")
    assert c.value(n, key) is None


# ----------------------------------------------------------------------------- RESP


@pytest.mark.parametrize(
    ("data", "expect"),
    [
        (b"\x00\x01\x02garbage\r\n", b"-ERR Protocol error"),
        (b"*1\r\n$99999999999\r\n", b"-ERR Protocol error"),
        (b"*99999999999\r\n", b"-ERR Protocol error"),
        (b"*2\r\n$3\r\nGET\r\n$-5\r\n", b"-ERR Protocol error"),
        (b"$5\r\nhello\r\n", b"-ERR Protocol error"),
        (b"POST / HTTP/1.1\r\nHost: x\r\n\r\n", b"-ERR Protocol error"),
        (b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2097152\r\n" + b"a" * 200_000, b"-ERR Protocol error"),
        (b"*1\r\n*1\r\n$4\r\nPING\r\n", b"-ERR Protocol error"),
    ],
    ids=[
        "control-bytes",
        "huge-bulk",
        "huge-count",
        "negative-bulk",
        "bare-bulk",
        "http",
        "2-mib-set",
        "nested-array",
    ],
)
def test_resp_garbage_and_huge_lengths_get_an_error_and_the_connection_closed(
    sec: RuntimeCluster, data: bytes, expect: bytes
) -> None:
    c = sec
    n = c.ids[2]
    reply = send_raw(c.spec(n).resp_port, data)
    assert reply.startswith(expect), reply
    assert reply.count(b"\r\n") == 1  # one error line, then the close
    r = redis_client(c.spec(n).resp_port)
    assert r.ping() is True
    assert r.set("after-garbage", "ok") is True and r.get("after-garbage") == "ok"


def test_resp_commands_before_the_garbage_are_answered_first(sec: RuntimeCluster) -> None:
    c = sec
    port = c.spec(c.ids[0]).resp_port
    reply = send_raw(port, b"PING\r\n*2\r\n$3\r\nGET\r\n$7\r\nnothere\r\n\x00oops\r\n")
    assert reply.startswith(b"+PONG\r\n$-1\r\n-ERR Protocol error"), reply


def test_resp_unknown_commands_and_wrong_arity_keep_the_connection(sec: RuntimeCluster) -> None:
    c = sec
    r = redis_client(c.spec(c.ids[1]).resp_port)
    with pytest.raises(redis.ResponseError, match="unknown command"):
        r.execute_command("FROBNICATE", "x")
    with pytest.raises(redis.ResponseError, match="wrong number of arguments"):
        r.execute_command("GET")
    with pytest.raises(redis.ResponseError):
        r.execute_command("MULTI")
    with pytest.raises(redis.ResponseError):
        r.set("ttl", "v", ex=10)
    assert r.set("resp-ok", "1") and r.incr("resp-ok") == 2
    r.set("resp-text", "abc")
    with pytest.raises(redis.ResponseError):
        r.incr("resp-text")
    assert r.get("resp-text") == "abc"


# ----------------------------------------------------------------------------- CLI


def _cli_cases(tmp: Path) -> dict[str, list[str]]:
    d = str(tmp / "data")
    p = f"n1=127.0.0.1:{free_port()}"

    def toml(name: str, text: str) -> str:
        path = tmp / f"{name}.toml"
        path.write_text(text)
        return str(path)

    (tmp / "shortkey").write_text("abcd\n")
    (tmp / "notkey").write_text("zz-not-hex\n")
    node = ["node", "--data-dir", d]
    return {
        "id-not-in-peers": [*node, "--id", "n4", "--peers", f"{p},n2=127.0.0.1:2"],
        "peers-no-port": [*node, "--id", "n1", "--peers", "n1=127.0.0.1"],
        "peers-no-id": [*node, "--id", "n1", "--peers", "127.0.0.1:7000"],
        "peers-bad-port": [*node, "--id", "n1", "--peers", "n1=127.0.0.1:http"],
        "peers-port-range": [*node, "--id", "n1", "--peers", "n1=127.0.0.1:70000"],
        "peers-twice": [*node, "--id", "n1", "--peers", f"{p},{p}"],
        "peers-empty": [*node, "--id", "n1", "--peers", ","],
        "http-bad": [*node, "--id", "n1", "--peers", p, "--http", "localhost"],
        "config-missing": [*node, "--id", "n1", "--peers", p, "--config", str(tmp / "none.toml")],
        "config-not-toml": [*node, "--id", "n1", "--peers", p, "--config", toml("bad", "x = [\n")],
        "config-options-not-table": [
            *node,
            "--id",
            "n1",
            "--peers",
            p,
            "--config",
            toml("o", "protocol_options = 5\n"),
        ],
        "config-unknown-option": [
            *node,
            "--id",
            "n1",
            "--peers",
            p,
            "--config",
            toml("u", "[protocol_options]\nbogus = 1\n"),
        ],
        "config-bad-timeouts": [
            *node,
            "--id",
            "n1",
            "--peers",
            p,
            "--config",
            toml("t", "[protocol_options]\nheartbeat_ms = 500\n"),
        ],
        "key-missing": [*node, "--id", "n1", "--peers", p, "--cluster-key", str(tmp / "nokey")],
        "key-missing-in-config": [
            *node,
            "--id",
            "n1",
            "--peers",
            p,
            "--config",
            toml("k", f'cluster_key = "{tmp / "nokey"}"\n'),
        ],
        "key-not-hex": [*node, "--id", "n1", "--peers", p, "--cluster-key", str(tmp / "notkey")],
        "key-too-short": [
            *node,
            "--id",
            "n1",
            "--peers",
            p,
            "--cluster-key",
            str(tmp / "shortkey"),
        ],
        "unknown-protocol": [*node, "--id", "n1", "--peers", p, "--protocol", "zab"],
        "missing-id": ["node", "--data-dir", d, "--peers", p],
        # typed TOML values of the wrong type
        "config-http-not-str": [
            *node,
            "--id",
            "n1",
            "--peers",
            p,
            "--config",
            toml("h", "http = 5\n"),
        ],
        "config-key-not-str": [
            *node,
            "--id",
            "n1",
            "--peers",
            p,
            "--config",
            toml("ck", "cluster_key = 5\n"),
        ],
        "config-option-wrong-type": [
            *node,
            "--id",
            "n1",
            "--peers",
            p,
            "--config",
            toml("w", '[protocol_options]\nsnapshot_threshold = "many"\n'),
        ],
    }


CLI_BUGS: dict[str, str] = {}  # every known bad-input bug is fixed


CLI_CASE_NAMES = [
    "id-not-in-peers",
    "peers-no-port",
    "peers-no-id",
    "peers-bad-port",
    "peers-port-range",
    "peers-twice",
    "peers-empty",
    "http-bad",
    "config-missing",
    "config-not-toml",
    "config-options-not-table",
    "config-unknown-option",
    "config-bad-timeouts",
    "key-missing",
    "key-missing-in-config",
    "key-not-hex",
    "key-too-short",
    "unknown-protocol",
    "missing-id",
    "config-http-not-str",
    "config-key-not-str",
    "config-option-wrong-type",
]


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(n, marks=pytest.mark.xfail(reason=CLI_BUGS[n], strict=True))
        if n in CLI_BUGS
        else n
        for n in CLI_CASE_NAMES
    ],
)
def test_quorumkit_node_bad_input_is_one_error_line_and_exit_code_2(
    tmp_path: Path,
    case: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """In process (fast): ``cli.main`` must turn the bad input into SystemExit(2) and one
    line; any other exception escaping it would be a traceback for the user."""
    import quorumkit.net.server
    from quorumkit.cli import main

    def must_not_run(config: Any) -> None:
        raise AssertionError(f"bad input {case} was accepted: the node would start")

    monkeypatch.setattr(quorumkit.net.server, "run_node", must_not_run)
    argv = _cli_cases(tmp_path)[case]
    with pytest.raises(SystemExit) as info:
        main(argv)
    out, err = capsys.readouterr()
    proc = subprocess.CompletedProcess(argv, info.value.code, out, err)
    assert proc.returncode == 2, (proc.returncode, err)
    _one_clear_line(proc)
    assert out == ""


def test_quorumkit_node_bad_input_in_a_real_process_has_no_traceback(tmp_path: Path) -> None:
    """The same, as the user sees it: a fresh interpreter, stderr and the exit code."""
    cases = _cli_cases(tmp_path)
    names = ["id-not-in-peers", "peers-no-port", "config-not-toml", "key-missing"]
    procs = {
        n: subprocess.Popen(
            [PYTHON, "-m", "quorumkit", *cases[n]],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in names
    }
    try:
        for n, proc in procs.items():
            out, err = proc.communicate(timeout=60)
            done = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
            assert done.returncode == 2, (n, err)
            line = _one_clear_line(done)
            assert out == "", n
            assert {
                "id-not-in-peers": "--id n4 is not in --peers",
                "peers-no-port": "expected HOST:PORT",
                "config-not-toml": "is not valid TOML",
                "key-missing": "cannot read cluster key",
            }[n] in line
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_quorumkit_node_on_a_port_in_use_is_one_error_line_and_exit_code_2(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.run(
            [
                *(PYTHON, "-m", "quorumkit", "node", "--id", "n1"),
                *("--peers", f"n1=127.0.0.1:{port}", "--data-dir", str(tmp_path / "d")),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 2, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("quorumkit: error:")]
    assert len(errors) == 1 and "cannot start node n1" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_keygen_writes_a_private_key_and_refuses_to_overwrite(tmp_path: Path) -> None:
    key = tmp_path / "k"
    first = subprocess.run(
        [PYTHON, "-m", "quorumkit", "keygen", "--out", str(key)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert first.returncode == 0, first.stderr
    assert len(read_key(key)) == 32 and (key.stat().st_mode & 0o777) == 0o600
    again = subprocess.run(
        [PYTHON, "-m", "quorumkit", "keygen", "--out", str(key)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 2 and again.stderr.startswith("quorumkit: error:")
    assert "Traceback" not in again.stderr
