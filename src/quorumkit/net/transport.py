"""TCP transport between peers: one outgoing connection per peer, reconnect with backoff,
bounded send queues, validated and authenticated incoming frames.

Rules of this module:

1. ``send`` never blocks and never raises for network trouble: a frame for a peer whose queue
   is full (too many frames waiting for a connection, or too many bytes the socket has not
   taken yet) is dropped and counted (consensus protocols retransmit).
2. Every incoming frame is checked (length limit, MAC, decoding, sender) before it reaches the
   node; a bad frame closes that connection and bumps ``dropped[reason]``. The node keeps
   serving. At most ``MAX_CONNECTIONS_PER_PEER`` accepted connections per other member are
   open at once; one more is closed at once and counted (``too_many_connections``).
3. Without a cluster key or mutual TLS, only peers on loopback addresses are accepted.
   With mutual TLS (``tls``, see :mod:`quorumkit.net.tls`) both ends verify the other's
   certificate: a connection to a peer whose certificate does not name that peer is closed,
   and a frame whose sender is not the node named by the connection's certificate closes the
   connection (``dropped["tls_identity_mismatch"]``). A failed handshake closes the
   connection and counts ``tls_handshake_failed``.
4. Fault injection (for tests, as etcd's failpoints): frames to or from named peers can be
   dropped or delayed.
5. Frames sent during one turn of the event loop leave together: one write per peer at the
   end of the turn, straight into the connection (no task switch per frame).
6. A message sent to several peers in a row is encoded once, when it is the same message:
   the same protocol message type and, field by field, the same objects, equal scalars of the
   same type, or tuples of the same objects (never mere ``==``: ``1 == True`` but they encode
   differently). Messages are immutable once sent (protocol.py rule 6: frozen dataclasses
   of immutable values), so the same objects encode the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random
import ssl
from collections.abc import Callable
from typing import Any, Final, cast

from quorumkit.codec import encode, is_message
from quorumkit.net.framing import (
    DEFAULT_MAX_FRAME_BYTES,
    LENGTH,
    Frame,
    FrameError,
    check_length,
    frame_encoded,
    parse_frame,
)
from quorumkit.net.tls import (
    TlsFiles,
    certificate_names,
    client_context,
    names_text,
    server_context,
)

log = logging.getLogger("quorumkit.transport")


#: bytes a connection may hold unsent before frames to that peer are dropped
MAX_UNSENT_BYTES = 32 * 1024 * 1024
#: seconds a TLS handshake may take before the connection is given up
TLS_HANDSHAKE_TIMEOUT_S = 3.0
#: seconds ``stop`` waits for the listening server to close
STOP_WAIT_S = 2.0
#: accepted peer connections open at once, per other member (rule 2: each may hold a frame
#: of up to ``max_frame_bytes`` in its buffer before the frame's MAC can be checked)
MAX_CONNECTIONS_PER_PEER = 4


_SCALARS: Final = frozenset({int, str, bytes, bool, type(None)})


def _same_message(a: Any, b: Any) -> bool:
    """Rule 6: do ``a`` and ``b`` certainly encode to the same bytes?"""
    if a is b:
        return True
    cls = type(a)
    if cls is not type(b) or not is_message(a):
        return False
    names = getattr(cls, "__slots__", None)
    if not isinstance(names, tuple):
        return False
    for name in names:
        x, y = getattr(a, name), getattr(b, name)
        if x is y:
            continue
        kind = type(x)
        if kind is not type(y):
            return False
        if kind is tuple:
            if len(x) != len(y) or any(p is not q for p, q in zip(x, y, strict=True)):
                return False
        elif kind not in _SCALARS or x != y:
            return False
    return True


class _Peer:
    def __init__(self, node_id: str, host: str, port: int) -> None:
        self.node_id = node_id
        self.host = host
        self.port = port
        #: frames waiting for the end of the turn, or for a connection
        self.out: list[bytes] = []
        self.writer: asyncio.StreamWriter | None = None
        self.connected = False
        self.task: asyncio.Task[None] | None = None


class _PeerReceiver(asyncio.Protocol):
    """One accepted peer connection (rule 2): frames are cut out of the bytes as they arrive
    and handed to the node in the same callback (no stream, no task switch per frame).

    On a TLS server the loop makes it when the TCP connection arrives and connects it when
    the handshake succeeds; one still unconnected after the handshake timeout failed its
    handshake and is counted (rule 3: asyncio and uvloop drop a failed server-side handshake
    without telling the server's protocol)."""

    def __init__(self, owner: Transport) -> None:
        self.owner = owner
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        #: node ids the peer's certificate names (TLS only)
        self.identity: frozenset[str] | None = None
        self.closed = False
        if owner._server_tls is not None:
            asyncio.get_running_loop().call_later(
                TLS_HANDSHAKE_TIMEOUT_S + 0.5, self._check_handshake
            )

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # a stream server's transport
        owner = self.owner
        if not owner._allowed(self.transport):
            owner.count("not_loopback")
            self._close()
            return
        if owner._closing:
            self._close()
            return
        if len(owner._conns) >= owner.max_connections:
            owner.count("too_many_connections")
            log.warning(
                "peer connection refused: %d peer connections are open already",
                len(owner._conns),
            )
            self._close()
            return
        owner._conns.add(self.transport)
        if owner._server_tls is not None:
            self.identity = certificate_names(self.transport.get_extra_info("peercert"))

    def _check_handshake(self) -> None:
        if self.transport is None and not self.owner._closing:
            self.owner.count("tls_handshake_failed")
            log.warning("peer connection refused: no TLS handshake with a certificate of the CA")

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        buffer = self.buffer
        buffer += data
        owner = self.owner
        start = 0
        end = len(buffer)
        try:
            while end - start >= LENGTH.size:
                (length,) = LENGTH.unpack_from(buffer, start)
                check_length(length, owner.max_frame_bytes, owner.key)
                stop = start + LENGTH.size + length
                if stop > end:
                    break
                payload = bytes(buffer[start + LENGTH.size : stop])
                start = stop
                owner._deliver(parse_frame(payload, owner.key, owner.node_id, owner.members), self)
        except FrameError as exc:
            owner.count(exc.reason)
            log.warning("closing peer connection: %s", exc)
            self._close()
            return
        finally:
            if start:
                del buffer[:start]

    def eof_received(self) -> bool:
        if self.buffer:
            self.owner.count("truncated")
            self.buffer.clear()
        return False  # close the connection

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.transport is not None:
            self.owner._conns.discard(self.transport)

    def _close(self) -> None:
        self.closed = True
        self.buffer.clear()
        if self.transport is not None:
            self.owner._conns.discard(self.transport)
            self.transport.close()


class Transport:
    def __init__(
        self,
        node_id: str,
        peers: dict[str, tuple[str, int]],
        on_message: Callable[[str, Any], None],
        *,
        key: bytes | None,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        queue_limit: int = 4096,
        tls: TlsFiles | None = None,
    ) -> None:
        self.node_id = node_id
        self.addresses = dict(peers)
        self.members = frozenset(peers)
        self.on_message = on_message
        self.key = key
        self.tls = tls
        # contexts are made here, so that bad files fail before the node starts (ConfigError)
        self._server_tls = server_context(tls) if tls else None
        self._client_tls = client_context(tls) if tls else None
        #: asyncio refuses a handshake timeout without TLS
        self._handshake_timeout_s = TLS_HANDSHAKE_TIMEOUT_S if tls else None
        self.max_frame_bytes = max_frame_bytes
        self.queue_limit = queue_limit
        self.max_connections = MAX_CONNECTIONS_PER_PEER * max(1, len(peers) - 1)
        self.peers = {p: _Peer(p, h, port) for p, (h, port) in peers.items() if p != node_id}
        self._flush_scheduled = False
        # the last message encoded: a protocol often sends the same message to several peers
        # (AppendEntries holding the same entries), encoded once (rule 6)
        self._last_message: Any = None
        self._last_encoded = b""
        self.dropped: dict[str, int] = {}
        self.sent_frames = 0
        self.received_frames = 0
        self.server: asyncio.base_events.Server | None = None
        #: accepted peer connections
        self._conns: set[asyncio.Transport] = set()
        self.drop_peers: set[str] = set()
        self.delay_s: dict[str, float] = {}
        self._closing = False

    # ------------------------------------------------------------------ lifecycle
    async def start(self, host: str, port: int) -> None:
        self.server = await asyncio.get_running_loop().create_server(
            lambda: _PeerReceiver(self),
            host,
            port,
            ssl=self._server_tls,
            ssl_handshake_timeout=self._handshake_timeout_s,
        )
        for peer in self.peers.values():
            peer.task = asyncio.create_task(self._sender(peer), name=f"send-{peer.node_id}")

    async def stop(self) -> None:
        self._closing = True
        for peer in self.peers.values():
            if peer.task is not None:
                peer.task.cancel()
        if self.server is not None:
            self.server.close()
        for conn in list(self._conns):
            conn.abort()  # stopping: no graceful TLS shutdown that waits for the peer
        for peer in self.peers.values():
            peer.out.clear()
        for peer in self.peers.values():
            if peer.task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await peer.task
        if self.server is not None:
            # asyncio waits here for every accepted connection to go; never hang on one
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), STOP_WAIT_S)

    def count(self, reason: str, n: int = 1) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + n

    # ------------------------------------------------------------------ sending
    def send(self, dst: str, message: Any) -> None:
        peer = self.peers.get(dst)
        if peer is None:
            self.count("unknown_destination")
            return
        if dst in self.drop_peers:
            self.count("fault_injected")
            return
        if not _same_message(message, self._last_message):
            self._last_encoded = encode(message)
            self._last_message = message
        frame = frame_encoded(self.node_id, dst, self._last_encoded, self.key)
        delay = self.delay_s.get(dst)
        if delay:
            asyncio.get_running_loop().call_later(delay, self._enqueue, peer, frame)
            return
        self._enqueue(peer, frame)

    def _enqueue(self, peer: _Peer, frame: bytes) -> None:
        if len(peer.out) >= self.queue_limit:
            self.count("send_queue_full")
            return
        peer.out.append(frame)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        self.flush()

    def flush(self) -> None:
        """Write what each connected peer has waiting, one write per peer: at the end of the
        turn, or now (a caller that knows a burst of sends is over)."""
        for peer in self.peers.values():
            if peer.out and peer.writer is not None:
                self._write(peer, peer.writer)

    def _write(self, peer: _Peer, writer: asyncio.StreamWriter) -> None:
        frames, peer.out = peer.out, []
        transport = writer.transport
        if transport.is_closing():  # lost: the sender task reconnects; these frames are gone
            self.count("connection_lost", len(frames))
            return
        if transport.get_write_buffer_size() > MAX_UNSENT_BYTES:
            self.count("send_queue_full", len(frames))
            return
        try:
            writer.write(frames[0] if len(frames) == 1 else b"".join(frames))
        except Exception as exc:  # RuntimeError from uvloop on a transport the peer reset
            log.debug("write to %s failed: %s", peer.node_id, exc)
            self.count("connection_lost", len(frames))
            transport.abort()
            return
        self.sent_frames += len(frames)

    async def _sender(self, peer: _Peer) -> None:
        """Keep one connection to ``peer`` open: connect, hand it to ``_flush``, wait for it to
        break, reconnect with backoff."""
        backoff = 0.02
        while not self._closing:
            try:
                reader, writer = await asyncio.wait_for(self._dial(peer), timeout=2.0)
            except ssl.SSLError as exc:
                self.count("tls_handshake_failed")
                log.warning("TLS handshake with %s failed: %s", peer.node_id, exc)
                writer = None
            except (TimeoutError, OSError):
                writer = None
            if writer is not None and self._client_tls is not None:
                names = certificate_names(writer.get_extra_info("peercert"))
                if peer.node_id not in names:
                    self.count("tls_identity_mismatch")
                    log.warning(
                        "peer %s at %s:%d presented a certificate for %s: not connecting",
                        peer.node_id,
                        peer.host,
                        peer.port,
                        names_text(names),
                    )
                    writer.close()
                    writer = None
            if writer is None:
                peer.connected = False
                await asyncio.sleep(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, 1.0)
                continue
            backoff = 0.02
            peer.connected = True
            peer.writer = writer
            try:
                if peer.out:
                    self._write(peer, writer)
                while await reader.read(65536):  # peers never write here: ends at EOF
                    pass
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # OSError from asyncio; RuntimeError from uvloop on a transport the peer reset
                log.debug("connection to %s lost: %s", peer.node_id, exc)
            finally:
                peer.connected = False
                peer.writer = None
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()

    async def _dial(self, peer: _Peer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(
            peer.host,
            peer.port,
            ssl=self._client_tls,
            ssl_handshake_timeout=self._handshake_timeout_s,
        )

    # ------------------------------------------------------------------ receiving
    def _allowed(self, transport: asyncio.BaseTransport) -> bool:
        if self.key or self.tls:
            return True
        peer = transport.get_extra_info("peername")
        try:
            if not peer:
                return False
            addr = ipaddress.ip_address(peer[0])
            mapped = getattr(addr, "ipv4_mapped", None)  # ::ffff:127.0.0.1 is loopback too
            return bool(addr.is_loopback or (mapped is not None and mapped.is_loopback))
        except ValueError:
            return False

    def _deliver(self, frame: Frame, conn: _PeerReceiver) -> None:
        """Hand a verified frame to the node (or drop or delay it: fault injection)."""
        if conn.identity is not None and frame.src not in conn.identity:
            raise FrameError(
                "tls_identity_mismatch",
                f"frame from {frame.src} on a connection whose certificate names "
                f"{names_text(conn.identity)}",
            )
        if frame.src in self.drop_peers:
            self.count("fault_injected")
            return
        self.received_frames += 1
        delay = self.delay_s.get(frame.src)
        if delay:
            asyncio.get_running_loop().call_later(delay, self.on_message, frame.src, frame.message)
        else:
            self.on_message(frame.src, frame.message)

    def peer_states(self) -> dict[str, dict[str, Any]]:
        return {
            p.node_id: {
                "address": f"{p.host}:{p.port}",
                "connected": p.connected,
                "queued": len(p.out),
            }
            for p in self.peers.values()
        }
