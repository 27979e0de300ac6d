"""The peer transport's send path: frames built from a message encoded once are the frames of
the codec, a message is reused only when it certainly encodes the same, and the frames sent
during one turn of the loop leave in one write per peer, in order."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quorumkit.codec import encode
from quorumkit.net.framing import frame_encoded, make_frame, parse_frame
from quorumkit.net.messages import ClientForward
from quorumkit.net.transport import Transport, _same_message
from quorumkit.protocols.raft.messages import AppendEntries, LogEntry

KEY = b"k" * 32
MEMBERS = frozenset({"n1", "n2", "n3"})

values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**63), 2**64 - 1),
        st.floats(allow_nan=False),
        st.text(max_size=5),
        st.binary(max_size=5),
    ),
    lambda inner: st.lists(inner, max_size=3).map(tuple),
    max_leaves=8,
)


@given(command=values, key=st.sampled_from([KEY, None]))
def test_a_frame_of_a_message_encoded_once_is_the_frame_of_the_codec(
    command: Any, key: Any
) -> None:
    msg = ClientForward(7, command)
    frame = frame_encoded("n1", "n2", encode(msg), key)
    assert frame == make_frame("n1", "n2", msg, key)
    got = parse_frame(frame[4:], key, "n2", MEMBERS)
    assert (got.src, got.dst, got.message) == ("n1", "n2", msg)


def test_only_messages_that_certainly_encode_the_same_are_reused() -> None:
    entries = (LogEntry(1, ("put", "k", "v")), LogEntry(1, None))
    a = AppendEntries(1, "n1", 0, 0, entries[:1] + entries[1:], 0, 0)
    b = AppendEntries(1, "n1", 0, 0, tuple(entries), 0, 0)
    assert a.entries is not b.entries and _same_message(a, b)
    assert not _same_message(a, AppendEntries(1, "n1", 0, 0, entries, 1, 0))
    # equal is not enough: 1 == True == 1.0 and 0.0 == -0.0, but they encode differently
    for x, y in ((1, True), (1, 1.0), (0.0, -0.0), (("put", "k", 1), ("put", "k", True))):
        assert x == y and encode(x) != encode(y)
        assert not _same_message(ClientForward(1, x), ClientForward(1, y))


@pytest.mark.parametrize("key", [KEY, None], ids=["hmac", "no-key"])
def test_frames_sent_in_one_turn_leave_in_one_write_per_peer_in_order(key: Any) -> None:
    """Two peers, several sends in one turn (some of the same message): every frame arrives,
    in order, with the right content, and each peer's connection got one write."""

    async def main() -> tuple[dict[str, list[Any]], dict[str, int]]:
        got: dict[str, list[Any]] = {"n2": [], "n3": []}
        servers = {}
        for n in ("n2", "n3"):
            t = Transport(
                n,
                {m: ("127.0.0.1", 0) for m in MEMBERS},
                lambda s, m, n=n: got[n].append(m),
                key=key,
            )
            await t.start("127.0.0.1", 0)
            servers[n] = t
        peers = {"n1": ("127.0.0.1", 0)}
        for n, t in servers.items():
            assert t.server is not None
            peers[n] = ("127.0.0.1", t.server.sockets[0].getsockname()[1])
        sender = Transport("n1", peers, lambda s, m: None, key=key)
        await sender.start("127.0.0.1", 0)
        writes = {"n2": 0, "n3": 0}
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 20
            while not all(p.connected for p in sender.peers.values()):
                assert loop.time() < deadline, "no connection"
                await asyncio.sleep(0.01)
            for n, peer in sender.peers.items():
                assert peer.writer is not None
                real = peer.writer.write

                def counting(data: Any, n: str = n, real: Any = real) -> None:
                    writes[n] += 1
                    real(data)

                peer.writer.write = counting  # type: ignore[method-assign]
            entries = (LogEntry(1, ("put", "k", "v")),)
            for i in range(5):
                ae = AppendEntries(1, "n1", i, 1, entries, i, 0)
                sender.send("n2", ae)
                sender.send("n3", AppendEntries(1, "n1", i, 1, tuple(entries), i, 0))
            sender.send("n2", ClientForward(1, ("put", "k", 1)))
            sender.send("n3", ClientForward(1, ("put", "k", True)))
            while sum(map(len, got.values())) < 12:
                assert loop.time() < deadline, f"frames lost: {got}"
                await asyncio.sleep(0.01)
        finally:
            await sender.stop()
            for t in servers.values():
                await t.stop()
        return got, writes

    got, writes = asyncio.run(main())
    assert writes == {"n2": 1, "n3": 1}
    for n in ("n2", "n3"):
        assert [m.prev_log_index for m in got[n][:5]] == list(range(5))
        assert all(m.entries == (LogEntry(1, ("put", "k", "v")),) for m in got[n][:5])
    assert got["n2"][5].command[2] is not True and got["n3"][5].command[2] is True
