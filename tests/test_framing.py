"""Peer frames (net/framing.py) and the transport's receiving path: nothing a peer sends is
believed before it is checked, and bad bytes only ever raise FrameError (DESIGN.md, "The
runtime": frames are size-limited and validated; garbage gets the connection closed and a
counter bumped, never a crash)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quorumkit.codec import encode
from quorumkit.errors import PeerError
from quorumkit.net.framing import (
    DEFAULT_MAX_FRAME_BYTES,
    FRAME_VERSION,
    LENGTH,
    MAC_BYTES,
    Frame,
    FrameError,
    check_length,
    frame_mac,
    make_frame,
    parse_frame,
)
from quorumkit.net.messages import ClientForward, ClientForwardReply
from quorumkit.net.transport import Transport, _PeerReceiver
from quorumkit.protocols.raft.messages import AppendEntries, LogEntry, RequestVote

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
MEMBERS = frozenset({"n1", "n2", "n3"})

MESSAGES: list[Any] = [
    ClientForward(7, ("put", "k", "v")),
    ClientForwardReply(7, {"error": "timeout", "indeterminate": True}),
    RequestVote(3, "n1", 10, 2),
    AppendEntries(
        3, "n1", 9, 2, (LogEntry(3, ("put", "k", b"\x00\xff")), LogEntry(3, ("delete", "k"))), 9
    ),
]


def payload_of(frame: bytes) -> bytes:
    """The bytes after the length prefix (what parse_frame takes)."""
    (length,) = LENGTH.unpack(frame[: LENGTH.size])
    assert length == len(frame) - LENGTH.size
    return frame[LENGTH.size :]


def raw_body(obj: Any, key: bytes | None) -> bytes:
    """A payload with an arbitrary body, correctly MACed when ``key`` is given."""
    body = encode(obj)
    mac = hmac.new(key, body, hashlib.sha256).digest() if key else b""
    return body + mac


def reason_of(payload: bytes, key: bytes | None, me: str = "n2") -> str:
    with pytest.raises(FrameError) as info:
        parse_frame(payload, key, me, MEMBERS)
    return info.value.reason


# ----------------------------------------------------------------------------- round trip


@pytest.mark.parametrize("key", [KEY, None], ids=["hmac", "no-key"])
@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_make_frame_then_parse_frame_gives_back_sender_receiver_and_message(
    key: bytes | None, msg: Any
) -> None:
    frame = make_frame("n1", "n2", msg, key)
    (length,) = LENGTH.unpack(frame[:4])
    assert length == len(frame) - 4
    assert (
        frame[-MAC_BYTES:] == hmac.new(KEY, frame[4:-MAC_BYTES], hashlib.sha256).digest()
        if key
        else True
    )
    check_length(length, DEFAULT_MAX_FRAME_BYTES, key)
    parsed = parse_frame(payload_of(frame), key, "n2", MEMBERS)
    assert parsed == Frame("n1", "n2", msg)


def test_frame_error_is_a_peer_error_with_a_reason() -> None:
    err = FrameError("bad_mac", "x")
    assert isinstance(err, PeerError)
    assert err.reason == "bad_mac"
    assert str(err) == "bad_mac: x"


# ----------------------------------------------------------------------------- rejections


def test_bad_mac_wrong_cluster_key() -> None:
    frame = make_frame("n1", "n2", MESSAGES[0], OTHER_KEY)
    assert reason_of(payload_of(frame), KEY) == "bad_mac"


def test_bad_mac_a_flipped_bit_anywhere_in_body_or_mac() -> None:
    payload = bytearray(payload_of(make_frame("n1", "n2", MESSAGES[3], KEY)))
    for i in range(len(payload)):
        mutated = bytearray(payload)
        mutated[i] ^= 0x10
        assert reason_of(bytes(mutated), KEY) == "bad_mac", f"byte {i}"


def test_bad_mac_an_unauthenticated_frame_at_a_node_with_a_key() -> None:
    frame = make_frame("n1", "n2", MESSAGES[0], None)
    assert reason_of(payload_of(frame), KEY) == "bad_mac"


def test_bad_mac_a_payload_shorter_than_a_mac() -> None:
    assert reason_of(b"\x01" * (MAC_BYTES - 1), KEY) == "bad_mac"


@pytest.mark.parametrize(
    ("body", "key"),
    [
        (b"\xc1", None),  # a byte msgpack never uses
        (b"\x92\x01", None),  # an array cut short
        (encode([FRAME_VERSION, "n1", "n2", MESSAGES[0]]) + b"\x00", None),  # trailing bytes
    ],
    ids=["never-used-byte", "cut-short", "trailing-bytes"],
)
def test_malformed_bodies_that_do_not_decode(body: bytes, key: bytes | None) -> None:
    assert reason_of(body, key) == "malformed"


def test_malformed_a_mac_at_a_node_without_a_key_is_trailing_garbage() -> None:
    frame = make_frame("n1", "n2", MESSAGES[0], KEY)
    assert reason_of(payload_of(frame), None) == "malformed"


@pytest.mark.parametrize("key", [KEY, None], ids=["hmac", "no-key"])
@pytest.mark.parametrize(
    "obj",
    [
        ["n1", "n2", MESSAGES[0]],  # no version
        [FRAME_VERSION + 1, "n1", "n2", MESSAGES[0]],  # a future version
        [FRAME_VERSION, "n1", "n2", MESSAGES[0], "extra"],
        {"src": "n1"},
        "n1",
        42,
        [FRAME_VERSION, "n1", "n2", ("put", "k", "v")],  # not a protocol message
        [FRAME_VERSION, "n1", "n2", None],
    ],
    ids=["no-version", "future-version", "five-fields", "map", "str", "int", "tuple", "none"],
)
def test_malformed_headers_and_payloads(obj: Any, key: bytes | None) -> None:
    assert reason_of(raw_body(obj, key), key) == "malformed"


@pytest.mark.parametrize("key", [KEY, None], ids=["hmac", "no-key"])
@pytest.mark.parametrize("src", ["n9", "n2", "", 1, None, b"n1"], ids=repr)
def test_unknown_sender_not_a_member_or_the_receiver_itself(src: Any, key: bytes | None) -> None:
    payload = raw_body([FRAME_VERSION, src, "n2", MESSAGES[0]], key)
    assert reason_of(payload, key) == "unknown_sender"


@pytest.mark.parametrize("key", [KEY, None], ids=["hmac", "no-key"])
def test_misaddressed_a_frame_for_another_node(key: bytes | None) -> None:
    frame = make_frame("n1", "n3", MESSAGES[0], key)
    assert reason_of(payload_of(frame), key) == "misaddressed"
    # a valid frame for n3 replayed to n2 is refused even with a correct MAC
    assert parse_frame(payload_of(frame), key, "n3", MEMBERS).dst == "n3"


@pytest.mark.parametrize("key", [KEY, None], ids=["hmac", "no-key"])
def test_oversized_lengths_are_refused_before_reading(key: bytes | None) -> None:
    for length in (DEFAULT_MAX_FRAME_BYTES + 1, 2**32 - 1):
        with pytest.raises(FrameError) as info:
            check_length(length, DEFAULT_MAX_FRAME_BYTES, key)
        assert info.value.reason == "oversized"
    check_length(DEFAULT_MAX_FRAME_BYTES, DEFAULT_MAX_FRAME_BYTES, key)
    with pytest.raises(FrameError, match="oversized"):
        check_length(101, 100, key)


def test_truncated_lengths_too_short_to_hold_a_frame() -> None:
    for length in (0, 1, MAC_BYTES):
        with pytest.raises(FrameError) as info:
            check_length(length, DEFAULT_MAX_FRAME_BYTES, KEY)
        assert info.value.reason == "truncated"
    check_length(MAC_BYTES + 1, DEFAULT_MAX_FRAME_BYTES, KEY)
    with pytest.raises(FrameError) as info:
        check_length(0, DEFAULT_MAX_FRAME_BYTES, None)
    assert info.value.reason == "truncated"
    check_length(1, DEFAULT_MAX_FRAME_BYTES, None)


# ----------------------------------------------------------------------------- fuzz


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=300), keyed=st.booleans())
def test_fuzz_arbitrary_bytes_raise_only_frame_errors(data: bytes, keyed: bool) -> None:
    key = KEY if keyed else None
    try:
        frame = parse_frame(data, key, "n2", MEMBERS)
    except FrameError as exc:
        assert exc.reason in {"bad_mac", "malformed", "unknown_sender", "misaddressed"}
    else:  # astronomically unlikely with a key; possible without one
        assert key is None and frame.src in MEMBERS - {"n2"} and frame.dst == "n2"


_mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10_000), st.integers(1, 255)),
    st.tuples(st.just("cut"), st.integers(0, 10_000), st.just(0)),
    st.tuples(st.just("drop"), st.integers(0, 10_000), st.integers(1, 8)),
    st.tuples(st.just("insert"), st.integers(0, 10_000), st.integers(0, 255)),
)


def _mutate(payload: bytes, mutations: list[tuple[str, int, int]]) -> bytes:
    buf = bytearray(payload)
    for kind, pos, arg in mutations:
        if not buf:
            break
        i = pos % len(buf)
        if kind == "flip":
            buf[i] ^= arg
        elif kind == "cut":
            del buf[i:]
        elif kind == "drop":
            del buf[i : i + arg]
        else:
            buf.insert(i, arg)
    return bytes(buf)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    index=st.integers(0, len(MESSAGES) - 1),
    mutations=st.lists(_mutation, min_size=1, max_size=4),
    keyed=st.booleans(),
)
def test_fuzz_mutated_valid_frames_raise_only_frame_errors(
    index: int, mutations: list[tuple[str, int, int]], keyed: bool
) -> None:
    key = KEY if keyed else None
    payload = payload_of(make_frame("n1", "n2", MESSAGES[index], key))
    mutated = _mutate(payload, mutations)
    try:
        frame = parse_frame(mutated, key, "n2", MEMBERS)
    except FrameError:
        return
    # whatever survived is a well-formed frame from a member to us; with a key, only the
    # original bytes authenticate
    assert frame.src in MEMBERS - {"n2"} and frame.dst == "n2"
    if key is not None:
        assert mutated == payload


_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=8),
    st.binary(max_size=8),
    st.sampled_from(["n1", "n2", "n3", FRAME_VERSION]),
)
_values = st.recursive(
    _leaf,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    obj=st.one_of(_values, st.tuples(st.just(FRAME_VERSION), _values, _values, _values).map(list)),
    keyed=st.booleans(),
)
def test_fuzz_well_formed_msgpack_that_is_not_a_frame_is_refused(obj: Any, keyed: bool) -> None:
    key = KEY if keyed else None
    with pytest.raises(FrameError):  # correctly MACed, so only the structure is wrong
        parse_frame(raw_body(obj, key), key, "n2", MEMBERS)


@settings(max_examples=200, deadline=None)
@given(length=st.integers(0, 2**32 - 1), keyed=st.booleans())
def test_fuzz_check_length_accepts_exactly_the_sane_lengths(length: int, keyed: bool) -> None:
    key = KEY if keyed else None
    floor = MAC_BYTES if key else 0
    try:
        check_length(length, DEFAULT_MAX_FRAME_BYTES, key)
    except FrameError as exc:
        assert exc.reason == ("oversized" if length > DEFAULT_MAX_FRAME_BYTES else "truncated")
        assert length > DEFAULT_MAX_FRAME_BYTES or length <= floor
    else:
        assert floor < length <= DEFAULT_MAX_FRAME_BYTES


# ----------------------------------------------------------------------------- the transport


class _FakeConnection:
    """Stands in for an accepted connection's asyncio transport."""

    def __init__(self, peer: tuple[str, int] = ("127.0.0.1", 40000)) -> None:
        self.peer = peer
        self.closed = False

    def get_extra_info(self, name: str) -> Any:
        return self.peer if name == "peername" else None

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True


def _receive(
    stream: bytes,
    key: bytes | None,
    sizes: Sequence[int] = (),
) -> tuple[list[tuple[str, Any]], dict[str, int], bool]:
    """Feed ``stream`` to n2's transport as one incoming connection, cut into pieces of
    ``sizes`` bytes (the rest in one piece), as TCP may cut it, then the end of the stream;
    what it delivered, what it counted, and whether it closed the connection."""
    got: list[tuple[str, Any]] = []
    pieces = []
    at = 0
    for size in [*sizes, len(stream)]:
        if at < len(stream):
            pieces.append(stream[at : at + size])
            at += size

    async def main() -> tuple[dict[str, int], bool]:
        t = Transport(
            "n2",
            {n: ("127.0.0.1", 1) for n in MEMBERS},
            lambda src, msg: got.append((src, msg)),
            key=key,
            max_frame_bytes=1 << 16,
        )
        conn = _FakeConnection()
        receiver = _PeerReceiver(t)
        receiver.connection_made(conn)  # type: ignore[arg-type]
        for piece in pieces:
            if conn.closed:
                break
            receiver.data_received(piece)
        if not conn.closed and not receiver.eof_received():
            conn.close()
        receiver.connection_lost(None)
        assert not t._conns  # a closed connection is forgotten
        return t.dropped, conn.closed

    dropped, closed = asyncio.run(main())
    return got, dropped, closed


@pytest.mark.parametrize("key", [KEY, None], ids=["hmac", "no-key"])
def test_transport_delivers_valid_frames_and_closes_at_the_first_bad_one(key: bytes | None) -> None:
    good = [make_frame("n1", "n2", m, key) for m in MESSAGES[:2]]
    bad = make_frame("n3", "n1", MESSAGES[2], key)  # misaddressed
    after = make_frame("n3", "n2", MESSAGES[3], key)  # never read: the connection is closed
    got, dropped, closed = _receive(b"".join([*good, bad, after]), key)
    assert got == [("n1", MESSAGES[0]), ("n1", MESSAGES[1])]
    assert dropped == {"misaddressed": 1}
    assert closed


@pytest.mark.parametrize(
    ("stream", "reason"),
    [
        (LENGTH.pack(2**32 - 1) + b"x" * 10, "oversized"),
        (LENGTH.pack((1 << 16) + 1), "oversized"),
        (LENGTH.pack(200) + b"y" * 50, "truncated"),  # the peer hung up mid-frame
        (LENGTH.pack(5), "truncated"),  # shorter than a MAC
        (LENGTH.pack(64) + bytes(64), "bad_mac"),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "oversized"),  # an HTTP client at the peer port
    ],
    ids=["max-length", "over-limit", "hung-up", "tiny", "zeros", "http"],
)
def test_transport_counts_each_kind_of_garbage_and_delivers_nothing(
    stream: bytes, reason: str
) -> None:
    got, dropped, closed = _receive(stream, KEY)
    assert got == []
    assert dropped == {reason: 1}
    assert closed


@pytest.mark.parametrize("chunk", [1, 3, 7, 64])
def test_transport_puts_frames_together_from_any_cut_of_the_stream(chunk: int) -> None:
    """TCP delivers bytes, not frames: a frame cut anywhere, or several frames in one read,
    arrive whole and in order."""
    frames = [make_frame("n1", "n2", m, KEY) for m in MESSAGES]
    stream = b"".join(frames)
    got, dropped, _ = _receive(stream, KEY, sizes=[chunk] * len(stream))
    assert got == [("n1", m) for m in MESSAGES]
    assert dropped == {}


def test_transport_a_connection_closed_between_frames_is_not_counted() -> None:
    got, dropped, _ = _receive(make_frame("n1", "n2", MESSAGES[0], KEY), KEY)
    assert got == [("n1", MESSAGES[0])]
    assert dropped == {}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n_good=st.integers(0, len(MESSAGES)),
    garbage=st.binary(max_size=200),
    cuts=st.lists(st.integers(1, 97), max_size=30),
)
def test_fuzz_the_receiver_delivers_the_valid_prefix_then_counts_one_reason(
    n_good: int, garbage: bytes, cuts: list[int]
) -> None:
    """Valid frames, then anything, cut into pieces anywhere: the valid frames arrive in
    order, nothing raises, and at most one reason is counted before the connection closes."""
    good = [make_frame("n1", "n2", m, KEY) for m in MESSAGES[:n_good]]
    got, dropped, closed = _receive(b"".join(good) + garbage, KEY, sizes=cuts)
    assert got[:n_good] == [("n1", m) for m in MESSAGES[:n_good]]
    assert len(got) == n_good  # garbage never passes the MAC (2**-256)
    assert sum(dropped.values()) == (1 if garbage else 0)
    assert closed


def test_frame_mac_is_hmac_sha256_for_every_key_however_they_alternate() -> None:
    keys = [bytes([i]) * 32 for i in range(20)]  # more keys than the keyed-state cache holds
    for round_ in range(2):
        for k in keys:
            body = b"body %d" % round_
            assert frame_mac(k, body) == hmac.new(k, body, hashlib.sha256).digest()


def test_accepted_connections_are_bounded_and_the_one_too_many_is_counted() -> None:
    async def main() -> tuple[list[bool], dict[str, int], int]:
        t = Transport("n2", {n: ("127.0.0.1", 1) for n in MEMBERS}, lambda src, msg: None, key=KEY)
        conns = [_FakeConnection() for _ in range(t.max_connections + 1)]
        receivers = [_PeerReceiver(t) for _ in conns]
        for conn, receiver in zip(conns, receivers, strict=True):
            receiver.connection_made(conn)  # type: ignore[arg-type]
        closed = [c.closed for c in conns]
        receivers[0].connection_lost(None)  # one goes: there is room again
        late = _FakeConnection()
        _PeerReceiver(t).connection_made(late)  # type: ignore[arg-type]
        return [*closed, late.closed], t.dropped, t.max_connections

    closed, dropped, limit = asyncio.run(main())
    assert limit == 8  # 4 per other member of three
    assert closed == [False] * limit + [True, False]
    assert dropped == {"too_many_connections": 1}
