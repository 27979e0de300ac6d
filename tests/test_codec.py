"""Wire encoding of protocol messages: roundtrips, and DecodeError (only) on bad bytes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import Any, Optional

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quorumkit import codec as codec_module
from quorumkit.codec import (
    EXT_MESSAGE,
    MAX_DEPTH,
    check_encodable,
    decode,
    decode_message,
    encode,
    is_message,
    message,
    message_tag,
    registered_types,
)
from quorumkit.errors import ConfigError, DecodeError, PeerError

# Message types of this file: module level only, tags "test.codec.*" (tags are global).


@message("test.codec.Point")
class Point:
    x: int
    y: int


@message("test.codec.Entry")
class Entry:
    term: int
    command: Any


@message("test.codec.Append")
class Append:
    term: int
    leader: str
    prev: tuple[int, int]
    entries: tuple[Entry, ...]
    commit: int


@message("test.codec.Optionals")
class Optionals:
    value: int | None
    name: Optional[str]  # noqa: UP045 - the typing.Optional spelling must work too
    ratio: float
    flag: bool
    blob: bytes


@message("test.codec.Dicts")
class Dicts:
    votes: dict[str, int]
    index: dict[int, tuple[str, ...]]
    by_point: dict[str, Point]


@message("test.codec.Anything")
class Anything:
    payload: Any


@message("test.codec.Defaults")
class Defaults:
    seq: int
    epoch: int = 0


@message("test.codec.Versioned", version=2)
class Versioned:
    a: int


class NotAMessage:
    pass


SAMPLES = [
    Point(1, -2),
    Entry(3, "set x 1"),
    Append(
        term=7,
        leader="n1",
        prev=(4, 6),
        entries=(Entry(6, ("put", "k", b"v")), Entry(7, None)),
        commit=5,
    ),
    Append(term=0, leader="", prev=(0, 0), entries=(), commit=0),
    Optionals(value=None, name=None, ratio=0.5, flag=False, blob=b""),
    Optionals(value=2**63 - 1, name="n\u00e9", ratio=-1e300, flag=True, blob=b"\x00\xff"),
    Dicts(
        votes={"n1": 1, "n2": 0},
        index={1: ("a", "b"), -5: ()},
        by_point={"origin": Point(0, 0)},
    ),
    Dicts(votes={}, index={}, by_point={}),
    Anything(Point(3, 4)),
    Anything({"k": (1, 2.5, "s", b"b", None, True), 7: Entry(1, Point(0, 1))}),
    Anything(None),
    Anything((Anything((Point(1, 1),)),)),
    Defaults(5),
    Defaults(5, 2),
    Versioned(9),
]


def ext(values: list[Any]) -> bytes:
    """Raw frame of a message ext holding ``values`` (``[tag, version, fields...]``)."""
    inner = msgpack.packb(values, use_bin_type=True)
    return msgpack.packb(msgpack.ExtType(EXT_MESSAGE, inner), use_bin_type=True)


# ----------------------------------------------------------------------------- roundtrips


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_every_message_roundtrips_to_an_equal_message_of_the_same_type(msg):
    """Messages have a stable wire encoding: decode(encode(m)) == m."""
    data = encode(msg)
    assert isinstance(data, bytes)
    back = decode(data)
    assert back == msg
    assert type(back) is type(msg)
    assert decode_message(data) == msg
    assert encode(back) == data


def _reference_encode(obj: Any) -> bytes:
    """The wire format written out the plain way (rule 2: a fresh ``packb`` per message): the
    codec's reused packers must produce exactly these bytes (stored WAL records, PBFT digests
    and signatures are over them)."""
    import dataclasses

    def default(o: Any) -> Any:
        tag, version = codec_module._TAGS[type(o)]
        values = [tag, version, *(getattr(o, f.name) for f in dataclasses.fields(o))]
        return msgpack.ExtType(
            EXT_MESSAGE, msgpack.packb(values, default=default, use_bin_type=True)
        )

    return msgpack.packb(obj, default=default, use_bin_type=True)


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_encoding_is_the_plain_msgpack_of_rule_2(msg):
    want = _reference_encode(msg)
    assert encode(msg) == want


def test_a_failed_encoding_leaves_no_trace_in_the_next_one():
    good = SAMPLES[2]
    want = encode(good)
    for _ in range(3):
        with pytest.raises(ConfigError):
            encode(Anything((Point(1, 2), Anything({1, 2}))))  # a set deep inside a message
        assert encode(good) == want
        assert decode(encode(Anything((good, good)))) == Anything((good, good))


def test_a_packer_that_packed_a_large_message_is_not_kept():
    """A reused Packer keeps a buffer as large as the largest message it packed: one that
    packed a snapshot-sized message is replaced, one that packed a small message is kept."""
    encode(SAMPLES[0])
    small = codec_module._packers.stack[0]
    encode(SAMPLES[0])
    assert codec_module._packers.stack[0] is small
    big = Anything({"blob": b"x" * (2 << 20)})
    assert decode(encode(big)) == big
    assert codec_module._packers.stack[0] is not small
    assert decode(encode(SAMPLES[0])) == SAMPLES[0]


def test_encoding_from_several_threads_at_once_gives_the_same_bytes():
    import threading

    wants = [encode(m) for m in SAMPLES]
    bad: list[str] = []

    def work(offset: int) -> None:
        for i in range(300):
            k = (i + offset) % len(SAMPLES)
            if encode(SAMPLES[k]) != wants[k]:
                bad.append(f"thread {offset}, sample {k}")

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert bad == []


def test_nested_messages_keep_their_types():
    msg = SAMPLES[2]
    back = decode(encode(msg))
    assert all(type(e) is Entry for e in back.entries)
    assert type(back.prev) is tuple


def test_sequences_decode_as_tuples():
    """Codec rule 4: sequences decode as tuples (messages are immutable)."""
    back = decode(encode(Anything([1, [2, 3]])))
    assert back == Anything((1, (2, 3)))
    assert decode(encode([Point(1, 2)])) == (Point(1, 2),)


def test_int_is_accepted_for_a_float_field_and_becomes_a_float():
    back = decode(encode(Optionals(None, None, 3, False, b"")))
    assert back.ratio == 3.0 and type(back.ratio) is float


def test_older_version_of_a_message_is_accepted():
    assert decode(ext(["test.codec.Versioned", 1, 4])) == Versioned(4)


def test_plain_values_roundtrip_without_messages():
    for value in (0, -1, "x", b"y", None, True, 1.5, (1, "a"), {"a": (1,)}):
        assert decode(encode(value)) == value


def test_registry_helpers():
    assert is_message(Point(1, 2)) and not is_message((1, 2)) and not is_message(Point)
    assert message_tag(Point) == message_tag(Point(0, 0)) == "test.codec.Point"
    assert registered_types()["test.codec.Append"] is Append


def test_messages_are_frozen_slotted_dataclasses():
    p = Point(1, 2)
    with pytest.raises(AttributeError):
        p.x = 5  # type: ignore[misc]
    assert not hasattr(p, "__dict__")
    assert hash(p) == hash(Point(1, 2))


@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers(min_value=-(2**63), max_value=2**64 - 1)
        | st.floats(allow_nan=False)
        | st.text(max_size=10)
        | st.binary(max_size=10),
        lambda children: (
            st.lists(children, max_size=4).map(tuple)
            | st.dictionaries(st.text(max_size=5) | st.integers(-100, 100), children, max_size=4)
            | st.builds(Point, st.integers(-5, 5), st.integers(-5, 5))
        ),
        max_leaves=20,
    )
)
@settings(max_examples=300, derandomize=True, database=None)
def test_any_field_roundtrips_arbitrary_msgpack_values(payload):
    """An Any-typed field carries any msgpack value, messages included, unchanged."""
    assert decode(encode(Anything(payload))) == Anything(payload)


@given(
    value=st.none() | st.integers(min_value=-(2**63), max_value=2**64 - 1),
    name=st.none() | st.text(max_size=20),
    ratio=st.floats(allow_nan=False),
    flag=st.booleans(),
    blob=st.binary(max_size=20),
)
@settings(max_examples=200, derandomize=True, database=None)
def test_typed_fields_roundtrip(value, name, ratio, flag, blob):
    msg = Optionals(value, name, ratio, flag, blob)
    assert decode(encode(msg)) == msg


# ----------------------------------------------------------------------------- encode errors


@pytest.mark.parametrize(
    "value",
    [object(), {1, 2}, frozenset({1}), NotAMessage(), Point(1, object()), Anything({3}), 2**70],
    ids=["object", "set", "frozenset", "plain-class", "nested-object", "nested-set", "bigint"],
)
def test_encoding_a_non_encodable_value_is_a_config_error(value):
    """Encoding is the caller's side: a non-encodable value is a ConfigError (a ValueError)."""
    with pytest.raises(ConfigError, match="not wire-encodable"):
        encode(value)
    with pytest.raises(ValueError):
        encode(value)
    reason = check_encodable(value)
    assert isinstance(reason, str) and reason
    assert check_encodable(Point(1, 2)) is None


def test_tag_reuse_and_bad_version_are_refused_at_declaration():
    """Tags are unique across the process; versions start at 1 (run in a fresh process)."""
    script = textwrap.dedent(
        """
        from quorumkit.codec import message
        from quorumkit.errors import ConfigError

        @message("test.codec.sub.Once")
        class Once:
            a: int

        try:
            @message("test.codec.sub.Once")
            class Twice:
                a: int
        except ConfigError as exc:
            print("dup:", exc)
        try:
            @message("test.codec.sub.V0", version=0)
            class V0:
                a: int
        except ConfigError as exc:
            print("version:", exc)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert "dup:" in out and "registered twice" in out
    assert "version:" in out


# ----------------------------------------------------------------------------- decode errors


def test_decode_error_is_the_peers_fault_not_a_value_error():
    assert issubclass(DecodeError, PeerError)
    assert not issubclass(DecodeError, ValueError)


@pytest.mark.parametrize(
    "data",
    [b"", b"\xc1", b"\xff" * 8, b"\x93\x01", b"\xd9\x05ab", b"\xdd\xff\xff\xff\xff", b"\x80\x81"],
)
def test_garbage_bytes_raise_decode_error(data):
    with pytest.raises(DecodeError):
        decode(data)


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_every_truncation_of_a_valid_encoding_raises_decode_error(msg):
    data = encode(msg)
    assert decode(data) == msg  # control: the whole frame is fine
    for cut in range(len(data)):
        with pytest.raises(DecodeError):
            decode(data[:cut])


@pytest.mark.parametrize("junk", [b"\x00", b"\xc0", encode(Point(1, 2))])
def test_trailing_junk_raises_decode_error(junk):
    assert decode(encode(Point(1, 2))) == Point(1, 2)  # control
    with pytest.raises(DecodeError):
        decode(encode(Point(1, 2)) + junk)


def test_trailing_junk_inside_a_message_frame_raises_decode_error():
    inner = msgpack.packb(["test.codec.Point", 1, 1, 2], use_bin_type=True)
    assert decode(msgpack.packb(msgpack.ExtType(EXT_MESSAGE, inner))) == Point(1, 2)  # control
    with pytest.raises(DecodeError):
        decode(msgpack.packb(msgpack.ExtType(EXT_MESSAGE, inner + b"\x00")))


def test_unknown_tag_raises_decode_error():
    with pytest.raises(DecodeError, match="unknown message tag"):
        decode(ext(["test.codec.NoSuchMessage", 1, 1, 2]))
    with pytest.raises(DecodeError):
        decode(ext([17, 1, 1, 2]))


@pytest.mark.parametrize("version", [2, 3, 0, -1, "1", None, 1.0, True])
def test_newer_or_invalid_version_raises_decode_error(version):
    with pytest.raises(DecodeError, match="unsupported version"):
        decode(ext(["test.codec.Point", version, 1, 2]))


@pytest.mark.parametrize("fields", [[], [1], [1, 2, 3]])
def test_wrong_field_count_raises_decode_error(fields):
    with pytest.raises(DecodeError, match="fields"):
        decode(ext(["test.codec.Point", 1, *fields]))


def test_missing_defaulted_field_is_still_a_wrong_field_count():
    with pytest.raises(DecodeError):
        decode(ext(["test.codec.Defaults", 1, 5]))


@pytest.mark.parametrize(
    "values",
    [
        ["test.codec.Point", 1, "1", 2],
        ["test.codec.Point", 1, 1, 2.0],
        ["test.codec.Point", 1, 1, None],
        ["test.codec.Point", 1, 1, [2]],
        ["test.codec.Entry", 1, b"3", "cmd"],
        ["test.codec.Optionals", 1, "x", None, 0.5, False, b""],
        ["test.codec.Optionals", 1, None, 5, 0.5, False, b""],
        ["test.codec.Optionals", 1, None, None, "0.5", False, b""],
        ["test.codec.Optionals", 1, None, None, 0.5, 0, b""],
        ["test.codec.Optionals", 1, None, None, 0.5, False, "text"],
        ["test.codec.Append", 1, 1, "n1", [1], [], 0],
        ["test.codec.Append", 1, 1, "n1", [1, 2, 3], [], 0],
        ["test.codec.Append", 1, 1, "n1", 5, [], 0],
        ["test.codec.Append", 1, 1, "n1", [1, 2], [1, 2], 0],
        ["test.codec.Append", 1, 1, "n1", [1, 2], {"a": 1}, 0],
        ["test.codec.Dicts", 1, [], {}, {}],
        ["test.codec.Dicts", 1, {1: 1}, {}, {}],
        ["test.codec.Dicts", 1, {"a": "b"}, {}, {}],
        ["test.codec.Dicts", 1, {}, {"1": ()}, {}],
        ["test.codec.Dicts", 1, {}, {1: (2,)}, {}],
        ["test.codec.Dicts", 1, {}, {}, {"p": 1}],
    ],
)
def test_wrong_field_type_raises_decode_error(values):
    """The error names the message and the field that failed validation."""
    with pytest.raises(DecodeError, match=rf"^{values[0]}\.\w+: "):
        decode(ext(values))


def test_a_nested_message_of_the_wrong_type_raises_decode_error():
    append = Append(1, "n1", (0, 0), (Entry(1, None),), 0)
    assert decode(encode(append)) == append  # control
    bad = encode(append).replace(b"test.codec.Entry", b"test.codec.Point")
    assert bad != encode(append)
    with pytest.raises(DecodeError):
        decode(bad)
    wrong = Dicts({}, {}, {"p": Entry(1, 2)})  # type: ignore[dict-item]
    with pytest.raises(DecodeError):
        decode(encode(wrong))


@pytest.mark.parametrize("value", [True, False])
def test_bool_where_int_expected_raises_decode_error(value):
    """bool is an int subclass in Python, but not on the wire."""
    with pytest.raises(DecodeError, match="expected int"):
        decode(ext(["test.codec.Point", 1, value, 2]))
    with pytest.raises(DecodeError):
        decode(ext(["test.codec.Optionals", 1, value, None, 0.5, False, b""]))
    with pytest.raises(DecodeError):
        decode(ext(["test.codec.Optionals", 1, None, None, value, False, b""]))


def test_unknown_extension_type_raises_decode_error():
    with pytest.raises(DecodeError):
        decode(msgpack.packb(msgpack.ExtType(5, b"\x90")))
    with pytest.raises(DecodeError):
        decode(msgpack.packb(msgpack.ExtType(EXT_MESSAGE, msgpack.packb(5))))
    with pytest.raises(DecodeError):
        decode(msgpack.packb(msgpack.ExtType(EXT_MESSAGE, msgpack.packb(["test.codec.Point"]))))


def test_nesting_deeper_than_the_limit_raises_decode_error():
    ok: Any = Point(0, 0)
    for _ in range(MAX_DEPTH - 1):
        ok = Anything(ok)
    assert decode(encode(ok)) == ok
    too_deep = Anything(ok)
    with pytest.raises(DecodeError, match="nested too deeply"):
        decode(encode(too_deep))


def test_deeply_nested_plain_arrays_raise_decode_error():
    with pytest.raises(DecodeError):
        decode(b"\x91" * 100_000 + b"\xc0")


def test_non_bytes_input_raises_decode_error():
    for data in ("text", 5, None, [1]):
        with pytest.raises(DecodeError):
            decode(data)  # type: ignore[arg-type]
    assert decode(bytearray(encode(Point(1, 2)))) == Point(1, 2)
    assert decode(memoryview(encode(Point(1, 2)))) == Point(1, 2)


def test_decode_message_refuses_plain_values():
    with pytest.raises(DecodeError, match="expected a protocol message"):
        decode_message(encode((1, 2)))


# ----------------------------------------------------------------------------- fuzzing


FUZZ = settings(
    max_examples=1500,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def decode_or_decode_error(data: bytes) -> None:
    try:
        decode(data)
    except DecodeError:
        pass


@FUZZ
@given(st.binary(max_size=300))
def test_fuzz_arbitrary_bytes_decode_or_raise_decode_error_only(data):
    """Bad bytes are the peer's fault: DecodeError, never any other exception."""
    decode_or_decode_error(data)


@FUZZ
@given(st.binary(max_size=200))
def test_fuzz_arbitrary_bytes_inside_a_message_frame(data):
    decode_or_decode_error(msgpack.packb(msgpack.ExtType(EXT_MESSAGE, data)))
    decode_or_decode_error(ext(["test.codec.Append", 1]) + data)


MUTATION = st.tuples(
    st.sampled_from(["flip", "set", "insert", "delete"]),
    st.integers(min_value=0, max_value=10_000),
    st.integers(min_value=0, max_value=255),
)


@FUZZ
@given(st.sampled_from(SAMPLES), st.lists(MUTATION, min_size=1, max_size=6))
def test_fuzz_mutations_of_valid_encodings_decode_or_raise_decode_error_only(msg, mutations):
    """Any mutation of a valid frame decodes to some value or raises DecodeError."""
    data = bytearray(encode(msg))
    for op, pos, byte in mutations:
        if not data:
            data.append(byte)
            continue
        i = pos % len(data)
        if op == "flip":
            data[i] ^= 1 << (byte % 8)
        elif op == "set":
            data[i] = byte
        elif op == "insert":
            data.insert(i, byte)
        else:
            del data[i]
    decode_or_decode_error(bytes(data))
