"""TCP transport between peers: one outgoing connection per peer, reconnect with backoff,
bounded send queues, validated and authenticated incoming frames.

Rules of this module:

1. ``send`` never blocks and never raises for network trouble: a frame for a peer whose queue
   is full is dropped and counted (consensus protocols retransmit).
2. Every incoming frame is checked (length limit, MAC, decoding, sender) before it reaches the
   node; a bad frame closes that connection and bumps ``dropped[reason]``. The node keeps
   serving.
3. Without a cluster key, only peers on loopback addresses are accepted.
4. Fault injection (for tests, as etcd's failpoints): frames to or from named peers can be
   dropped or delayed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random
from collections.abc import Callable
from typing import Any

from quorumkit.net.framing import (
    DEFAULT_MAX_FRAME_BYTES,
    LENGTH,
    FrameError,
    check_length,
    make_frame,
    parse_frame,
)

log = logging.getLogger("quorumkit.transport")


class _Peer:
    def __init__(self, node_id: str, host: str, port: int, limit: int) -> None:
        self.node_id = node_id
        self.host = host
        self.port = port
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(limit)
        self.connected = False
        self.task: asyncio.Task[None] | None = None


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
    ) -> None:
        self.node_id = node_id
        self.addresses = dict(peers)
        self.members = frozenset(peers)
        self.on_message = on_message
        self.key = key
        self.max_frame_bytes = max_frame_bytes
        self.peers = {
            p: _Peer(p, h, port, queue_limit) for p, (h, port) in peers.items() if p != node_id
        }
        self.dropped: dict[str, int] = {}
        self.sent_frames = 0
        self.received_frames = 0
        self.server: asyncio.base_events.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()
        self.drop_peers: set[str] = set()
        self.delay_s: dict[str, float] = {}
        self._closing = False

    # ------------------------------------------------------------------ lifecycle
    async def start(self, host: str, port: int) -> None:
        self.server = await asyncio.start_server(self._serve, host, port, limit=1 << 20)
        for peer in self.peers.values():
            peer.task = asyncio.create_task(self._sender(peer), name=f"send-{peer.node_id}")

    async def stop(self) -> None:
        self._closing = True
        for peer in self.peers.values():
            if peer.task is not None:
                peer.task.cancel()
        if self.server is not None:
            self.server.close()
        for w in list(self._conns):
            w.close()
        for peer in self.peers.values():
            if peer.task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await peer.task
        if self.server is not None:
            with contextlib.suppress(Exception):
                await self.server.wait_closed()

    def count(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    # ------------------------------------------------------------------ sending
    def send(self, dst: str, message: Any) -> None:
        peer = self.peers.get(dst)
        if peer is None:
            self.count("unknown_destination")
            return
        if dst in self.drop_peers:
            self.count("fault_injected")
            return
        frame = make_frame(self.node_id, dst, message, self.key)
        delay = self.delay_s.get(dst)
        if delay:
            asyncio.get_running_loop().call_later(delay, self._enqueue, peer, frame)
            return
        self._enqueue(peer, frame)

    def _enqueue(self, peer: _Peer, frame: bytes) -> None:
        try:
            peer.queue.put_nowait(frame)
        except asyncio.QueueFull:
            self.count("send_queue_full")

    async def _sender(self, peer: _Peer) -> None:
        backoff = 0.02
        while not self._closing:
            try:
                _, writer = await asyncio.wait_for(
                    asyncio.open_connection(peer.host, peer.port), timeout=2.0
                )
            except (TimeoutError, OSError):
                peer.connected = False
                await asyncio.sleep(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, 1.0)
                continue
            backoff = 0.02
            peer.connected = True
            try:
                while True:
                    frame = await peer.queue.get()
                    chunks = [frame]
                    while not peer.queue.empty() and len(chunks) < 512:
                        chunks.append(peer.queue.get_nowait())
                    writer.write(b"".join(chunks))
                    await writer.drain()
                    self.sent_frames += len(chunks)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # OSError from asyncio; RuntimeError from uvloop on a transport the peer reset
                log.debug("connection to %s lost: %s", peer.node_id, exc)
            finally:
                peer.connected = False
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()

    # ------------------------------------------------------------------ receiving
    def _allowed(self, writer: asyncio.StreamWriter) -> bool:
        if self.key:
            return True
        peer = writer.get_extra_info("peername")
        try:
            if not peer:
                return False
            addr = ipaddress.ip_address(peer[0])
            mapped = getattr(addr, "ipv4_mapped", None)  # ::ffff:127.0.0.1 is loopback too
            return bool(addr.is_loopback or (mapped is not None and mapped.is_loopback))
        except ValueError:
            return False

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self._allowed(writer):
            self.count("not_loopback")
            writer.close()
            return
        self._conns.add(writer)
        try:
            while True:
                header = await reader.readexactly(LENGTH.size)
                (length,) = LENGTH.unpack(header)
                check_length(length, self.max_frame_bytes, self.key)
                payload = await reader.readexactly(length)
                frame = parse_frame(payload, self.key, self.node_id, self.members)
                if frame.src in self.drop_peers:
                    self.count("fault_injected")
                    continue
                self.received_frames += 1
                delay = self.delay_s.get(frame.src)
                if delay:
                    asyncio.get_running_loop().call_later(
                        delay, self.on_message, frame.src, frame.message
                    )
                else:
                    self.on_message(frame.src, frame.message)
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                self.count("truncated")
        except FrameError as exc:
            self.count(exc.reason)
            log.warning("closing peer connection: %s", exc)
        except (OSError, ConnectionError):
            pass
        finally:
            self._conns.discard(writer)
            writer.close()

    def peer_states(self) -> dict[str, dict[str, Any]]:
        return {
            p.node_id: {
                "address": f"{p.host}:{p.port}",
                "connected": p.connected,
                "queued": p.queue.qsize(),
            }
            for p in self.peers.values()
        }
