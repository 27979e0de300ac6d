"""The Redis-protocol front end: ``redis-cli``, redis-py and ``redis-benchmark`` work unchanged.

:class:`RespServer` is an asyncio TCP server that turns Redis commands into key-value commands
of :mod:`quorumkit.kv.machine` and hands them to an *executor* (an ``async`` callable that runs
one kv command and returns its result: the node runtime, or a local state machine in tests).
It knows nothing about consensus. :class:`RespParser` is its incremental, size-limited request
parser, usable on its own.

Rules of this module:

1. **Requests** are RESP2 arrays of bulk strings (``*2\\r\\n$3\\r\\nGET\\r\\n$1\\r\\nk\\r\\n``) or
   inline commands (``PING\\r\\n``, telnet style, with Redis quoting rules). Nothing nests: a
   request array may hold bulk strings only. A request starting with ``$ + - :`` or a control
   byte, a bad or negative length, a count above ``max_multibulk_len``, a missing CRLF or an
   inline line that looks like HTTP (``POST``, ``Host:``) is a *protocol error*: the server
   replies ``-ERR Protocol error: ...`` after the replies of the commands before it, closes that
   connection and counts it in ``stats["protocol_errors"]``. A request larger than
   ``max_request_bytes`` (all of its bytes, headers included) is refused the same way and
   counted in ``stats["too_large"]``. The parser only ever raises :class:`ProtocolError` (of
   which :class:`RequestTooLarge` is a kind) and buffers at most one read past the limit.
2. **Pipelining**: all commands of a read are answered, in order. Commands of one connection run
   one after the other; connections run concurrently. Replies are flushed in batches.
3. **Values and keys** are bytes on the wire. A bulk string that is valid UTF-8 is passed to the
   executor as ``str``, anything else as ``bytes``; a ``str`` result is sent UTF-8 encoded,
   ``bytes`` as they are, an ``int`` in decimal. So every binary value round-trips exactly
   (``\\r\\n``, ``\\x00``, invalid UTF-8) and text keys are the same keys the HTTP front end sees.
4. **Command mapping**: GET -> ``("get", k)``; SET -> ``("put", k, v)``, and with NX/XX/GET a
   ``get`` + ``cas`` loop (NX alone: one ``cas(k, None, v)``); INCRBY/DECR/DECRBY -> a ``get`` + ``cas``
   loop (by the machine's integer rules, within 64 bits); DEL/UNLINK -> per key ``get``
   then ``delete``, counting the keys the ``get`` saw (two DELs racing on one key may both count
   it); APPEND -> a ``get`` + ``cas`` loop, so the returned length is exactly the length of the
   value it wrote and a text value may grow by non-UTF-8 bytes; INCR -> ``("incr", k)``;
   EXISTS/MGET/STRLEN/TYPE -> ``get``. Keys never expire: SET's EX/PX/EXAT/PXAT are refused
   (KEEPTTL is accepted, trivially). MULTI/EXEC, KEYS/SCAN, DBSIZE, FLUSH*, AUTH are refused
   with a clear ``-ERR``: use redis-py pipelines with ``transaction=False``.
5. **Errors**: a result ``{"error": name, "detail": d}`` becomes ``-ERR name: d``, except
   ``not_leader`` and ``unavailable`` (not applied: retry is safe) which become
   ``-TRYAGAIN name: d``, and ``timeout`` which says the outcome is unknown. An exception of
   the executor becomes ``-ERR internal: ...`` (logged on one line, never a traceback). Wrong
   arity and unknown commands get Redis's own messages. Every error reply counts in
   ``stats["errors"]``. Nothing a client sends can stop the server or affect other clients.
6. **Handshakes** work as clients expect: COMMAND (a small table), COMMAND COUNT/DOCS/INFO,
   CLIENT SETNAME/GETNAME/SETINFO/ID/LIST/INFO, SELECT 0, CONFIG GET (a few read-only
   parameters: ``save`` and ``appendonly`` for redis-benchmark), QUIT, INFO [section ...] in
   Redis INFO format built from the ``info()`` callable (nested mappings become sections).
7. **RESP2, and RESP3 on request**: a connection speaks RESP2 until it sends ``HELLO 3``
   (redis-py 8 does so by default and does not fall back on ``-NOPROTO``). RESP3 changes only
   the replies: null is ``_``, HELLO, CONFIG GET and COMMAND DOCS answer maps (``%``); all
   other replies are the same in both. ``HELLO 2`` switches back; other versions get
   ``-NOPROTO``. Requests are parsed the same way in both.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import json
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "REDIS_COMPAT_VERSION",
    "Executor",
    "ProtocolError",
    "RequestTooLarge",
    "RespParser",
    "RespServer",
]

logger = logging.getLogger(__name__)

Executor = Callable[[tuple[Any, ...]], Awaitable[Any]]
"""Runs one kv command (a tuple of :mod:`quorumkit.kv.machine`) and returns its result."""

REDIS_COMPAT_VERSION = "7.0.0"
"""The Redis version reported by INFO and HELLO (the command set is a small subset of it)."""

MAX_CAS_RETRIES = 64
"""Optimistic ``get`` + ``cas`` loops (APPEND, SET NX/XX/GET) give up after this many tries."""

_MAX_HEADER = 64  # bytes of a "*N\r\n" or "$N\r\n" line, CRLF included
_INT_RE = re.compile(rb"-?[0-9]{1,19}")
_READ_SIZE = 1 << 16
_FLUSH_BYTES = 1 << 16


# ---------------------------------------------------------------------------------- parser
class ProtocolError(Exception):
    """Malformed client input. Its message follows ``-ERR Protocol error: `` on the wire."""


class RequestTooLarge(ProtocolError):
    """A request larger than the parser's ``max_request_bytes``."""


class RespParser:
    """Incremental RESP2 request parser: :meth:`feed` bytes, then take commands from
    :meth:`get_command` until it returns ``None`` (the rest is incomplete).

    A command is a non-empty list of bytes (its name first). Limits: ``max_request_bytes`` per
    request (headers included), ``max_multibulk_len`` elements per request, ``max_bulk_len``
    bytes per bulk string (default: ``max_request_bytes``), ``max_inline_bytes`` per inline
    line. Only :class:`ProtocolError` is ever raised; after one, the parser stays failed.
    """

    def __init__(
        self,
        *,
        max_request_bytes: int = 1 << 20,
        max_multibulk_len: int = 1 << 20,
        max_bulk_len: int | None = None,
        max_inline_bytes: int = 1 << 16,
    ) -> None:
        self.max_request_bytes = max_request_bytes
        self.max_multibulk_len = max_multibulk_len
        self.max_bulk_len = max_request_bytes if max_bulk_len is None else max_bulk_len
        self.max_inline_bytes = min(max_inline_bytes, max_request_bytes)
        self._buf = bytearray()
        self._pos = 0
        self._args: list[bytes] = []
        self._remaining = 0  # bulk strings still expected by the current array
        self._bulk_len = -1  # length of the bulk string being read; -1: header not read yet
        self._cmd_bytes = 0  # bytes of the current request consumed so far
        self._failed: ProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned as part of a command."""
        return len(self._buf) - self._pos

    def feed(self, data: bytes) -> None:
        """Add received bytes."""
        self._buf += data

    def get_command(self) -> list[bytes] | None:
        """The next complete command, or ``None`` when more bytes are needed."""
        if self._failed is not None:
            raise self._failed
        try:
            return self._next()
        except ProtocolError as exc:
            self._failed = exc
            raise

    def _fail_large(self) -> RequestTooLarge:
        return RequestTooLarge(f"request larger than {self.max_request_bytes} bytes")

    def _header(self, kind: str) -> int | None:
        """Parse the ``*N``/``$N`` line at the current position (``None``: incomplete)."""
        buf, pos = self._buf, self._pos
        end = buf.find(b"\r\n", pos, pos + _MAX_HEADER)
        if end < 0:
            if len(buf) - pos >= _MAX_HEADER:
                raise ProtocolError(f"invalid {kind} length")
            return None
        digits = bytes(buf[pos + 1 : end])
        if _INT_RE.fullmatch(digits) is None:
            raise ProtocolError(f"invalid {kind} length")
        self._pos = end + 2
        self._cmd_bytes += end + 2 - pos
        return int(digits)

    def _next(self) -> list[bytes] | None:
        buf = self._buf
        while True:
            if self._remaining == 0:
                # at the start of a request
                if self._pos >= len(buf):
                    return self._incomplete()
                first = buf[self._pos]
                if first == 0x2A:  # '*'
                    self._cmd_bytes = 0
                    count = self._header("multibulk")
                    if count is None:
                        return self._incomplete()
                    if count > self.max_multibulk_len:
                        raise ProtocolError("invalid multibulk length")
                    if count <= 0:  # "*0" and "*-1" are empty requests: ignored, like Redis
                        continue
                    self._remaining = count
                    self._args = []
                    self._bulk_len = -1
                elif first in b"$+-:" or (first < 0x20 and first not in b"\t\r\n") or first == 0x7F:
                    raise ProtocolError(f"expected '*', got {_show_byte(first)}")
                else:
                    inline = self._inline()
                    if inline is None:
                        return self._incomplete()
                    if inline:
                        return inline
                    continue  # an empty line
            # inside an array: read bulk strings
            while self._remaining > 0:
                pos = self._pos
                if self._bulk_len < 0:
                    if pos >= len(buf):
                        return self._incomplete()
                    if buf[pos] != 0x24:  # '$'
                        raise ProtocolError(f"expected '$', got {_show_byte(buf[pos])}")
                    size = self._header("bulk")
                    if size is None:
                        return self._incomplete()
                    if size > self.max_request_bytes:
                        raise self._fail_large()
                    if size < 0 or size > self.max_bulk_len:
                        raise ProtocolError("invalid bulk length")
                    self._bulk_len = size
                    pos = self._pos
                size = self._bulk_len
                if len(buf) - pos < size + 2:
                    return self._incomplete()
                if buf[pos + size : pos + size + 2] != b"\r\n":
                    raise ProtocolError("expected CRLF after bulk string")
                self._args.append(bytes(buf[pos : pos + size]))
                self._pos = pos + size + 2
                self._cmd_bytes += size + 2
                self._bulk_len = -1
                self._remaining -= 1
                if self._cmd_bytes > self.max_request_bytes:
                    raise self._fail_large()
            args, self._args = self._args, []
            return args

    def _incomplete(self) -> list[bytes] | None:
        if self._remaining > 0 and self._cmd_bytes + self.buffered > self.max_request_bytes:
            raise self._fail_large()
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
        return None

    def _inline(self) -> list[bytes] | None:
        """An inline command (``[]`` for a blank line, ``None`` when incomplete)."""
        buf, pos = self._buf, self._pos
        end = buf.find(b"\n", pos, pos + self.max_inline_bytes + 1)
        if end < 0:
            if len(buf) - pos > self.max_inline_bytes:
                raise ProtocolError("too big inline request")
            return None
        line = bytes(buf[pos:end])
        self._pos = end + 1
        if line.endswith(b"\r"):
            line = line[:-1]
        args = split_inline(line)
        if args and args[0].lower() in (b"post", b"host:"):
            raise ProtocolError("this is a Redis-protocol port, not HTTP")
        return args


_SPACE = b" \t\r\n\v\f"
_ESCAPES = {ord("n"): 10, ord("r"): 13, ord("t"): 9, ord("b"): 8, ord("a"): 7}
_HEX = b"0123456789abcdefABCDEF"


def split_inline(line: bytes) -> list[bytes]:
    """Split an inline command line like Redis (``sdssplitargs``): whitespace separates words;
    ``"..."`` takes escapes (``\\n \\r \\t \\b \\a \\xHH`` and any escaped byte) and ``'...'``
    takes ``\\'``; a closing quote must end the word. Raises :class:`ProtocolError` on
    unbalanced quotes."""
    args: list[bytes] = []
    i, n = 0, len(line)
    while True:
        while i < n and line[i] in _SPACE:
            i += 1
        if i >= n:
            return args
        word = bytearray()
        quote = 0  # 0, '"' or "'"
        while True:
            if i >= n:
                if quote:
                    raise ProtocolError("unbalanced quotes in request")
                break
            c = line[i]
            if quote == 0x22:  # inside "..."
                if c == 0x5C and i + 3 < n and line[i + 1] == 0x78 and _is_hex2(line, i + 2):
                    word.append(int(line[i + 2 : i + 4], 16))
                    i += 4
                    continue
                if c == 0x5C and i + 1 < n:
                    word.append(_ESCAPES.get(line[i + 1], line[i + 1]))
                    i += 2
                    continue
                if c == 0x22:
                    if i + 1 < n and line[i + 1] not in _SPACE:
                        raise ProtocolError("unbalanced quotes in request")
                    i += 1
                    break
                word.append(c)
            elif quote == 0x27:  # inside '...'
                if c == 0x5C and i + 1 < n and line[i + 1] == 0x27:
                    word.append(0x27)
                    i += 2
                    continue
                if c == 0x27:
                    if i + 1 < n and line[i + 1] not in _SPACE:
                        raise ProtocolError("unbalanced quotes in request")
                    i += 1
                    break
                word.append(c)
            else:
                if c in _SPACE:
                    break
                if c in (0x22, 0x27) and not word:
                    quote = c
                else:
                    word.append(c)
            i += 1
        args.append(bytes(word))


def _is_hex2(line: bytes, i: int) -> bool:
    return line[i] in _HEX and line[i + 1] in _HEX


def _show_byte(b: int) -> str:
    return f"'{chr(b)}'" if 0x20 <= b < 0x7F else f"byte 0x{b:02x}"


# ---------------------------------------------------------------------------------- replies
OK = b"+OK\r\n"
NIL = b"$-1\r\n"
NULL3 = b"_\r\n"
EMPTY_ARRAY = b"*0\r\n"


def encode_simple(text: str) -> bytes:
    """A status reply (``+text``)."""
    return b"+" + _one_line(text).encode("utf-8", "replace") + b"\r\n"


def encode_error(text: str) -> bytes:
    """An error reply (``-PREFIX message``), on one line."""
    return b"-" + _one_line(text).encode("utf-8", "replace") + b"\r\n"


def encode_int(n: int) -> bytes:
    """An integer reply."""
    return b":%d\r\n" % n


def encode_bulk(data: bytes | None) -> bytes:
    """A bulk string reply (``None``: the nil bulk)."""
    if data is None:
        return NIL
    return b"$%d\r\n%b\r\n" % (len(data), data)


def encode_array(items: list[bytes]) -> bytes:
    """An array of already encoded replies."""
    return b"*%d\r\n" % len(items) + b"".join(items)


def encode_command(*args: bytes | str | int) -> bytes:
    """A request as a client sends it (for tests and tools)."""
    parts = [a if isinstance(a, bytes) else str(a).encode() for a in args]
    return encode_array([encode_bulk(p) for p in parts])


def _one_line(text: str) -> str:
    return " ".join(text.splitlines()) if text else text


def _arg(raw: bytes) -> str | bytes:
    """A key or value as the executor sees it: ``str`` when valid UTF-8, else ``bytes``."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw


def value_bytes(value: Any) -> bytes:
    """A stored value as bytes on the wire (the inverse of the argument rule for str/bytes)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, bool):
        return b"1" if value else b"0"
    if isinstance(value, (int, float)):
        return repr(value).encode()
    return json.dumps(value, separators=(",", ":"), default=repr).encode()


def _lower_text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace").lower()


def _show(raw: bytes, limit: int = 128) -> str:
    text = raw[:limit].decode("utf-8", "replace")
    return "".join(c if c.isprintable() else "?" for c in text)


class _CommandError(Exception):
    """Raised by command handlers: its message is the error reply (prefix included)."""


# ---------------------------------------------------------------------------------- server
@dataclass
class _Conn:
    id: int
    addr: str
    writer: asyncio.StreamWriter
    created: float
    name: str = ""
    lib_name: str = ""
    lib_ver: str = ""
    closing: bool = False
    proto: int = 2  # 3 after HELLO 3

    @property
    def nil(self) -> bytes:
        """The null reply of this connection's protocol."""
        return NULL3 if self.proto == 3 else NIL

    def value(self, value: Any) -> bytes:
        """A stored value (``None``: null) as a reply."""
        return self.nil if value is None else encode_bulk(value_bytes(value))

    def map(self, pairs: list[tuple[bytes, bytes]]) -> bytes:
        """A map of encoded replies: ``%N`` in RESP3, a flat array in RESP2."""
        head = b"%%%d\r\n" % len(pairs) if self.proto == 3 else b"*%d\r\n" % (2 * len(pairs))
        return head + b"".join(k + v for k, v in pairs)


Handler = Callable[[_Conn, list[bytes]], Awaitable[bytes]]


@dataclass(frozen=True)
class _Spec:
    handler: Handler
    min_args: int  # including the command name
    max_args: int | None
    flags: tuple[str, ...] = ()
    first_key: int = 0
    last_key: int = 0
    step: int = 0

    @property
    def arity(self) -> int:
        """Redis's arity convention: exact count, or minus the minimum for variadic ones."""
        return self.min_args if self.max_args == self.min_args else -self.min_args


_REFUSED = {
    "multi": "MULTI/EXEC transactions are not supported (use pipelines with transaction=False)",
    "exec": "EXEC without MULTI: transactions are not supported",
    "discard": "DISCARD without MULTI: transactions are not supported",
    "watch": "WATCH is not supported: transactions are not supported",
    "keys": "KEYS is not supported by the replicated store",
    "scan": "SCAN is not supported by the replicated store",
    "dbsize": "DBSIZE is not supported by the replicated store",
    "flushdb": "FLUSHDB is not supported by the replicated store",
    "flushall": "FLUSHALL is not supported by the replicated store",
    "expire": "keys do not expire in quorumkit",
    "pexpire": "keys do not expire in quorumkit",
    "auth": "AUTH is not supported: this server has no passwords (protect the port)",
}

_CONFIG_KEYS = ("save", "appendonly", "databases", "maxclients", "port", "proto-max-bulk-len")


class RespServer:
    """An asyncio Redis-protocol server in front of a kv executor (see the module docstring).

    ``stats`` counts ``connections`` (accepted in total), ``connected`` (open now),
    ``rejected_connections`` (over ``max_connections``), ``commands``, ``errors`` (error
    replies), ``protocol_errors`` and ``too_large`` (connections closed for bad or oversized
    requests).
    """

    def __init__(
        self,
        execute: Executor,
        *,
        info: Callable[[], Mapping[str, Any]],
        max_request_bytes: int = 1 << 20,
        max_connections: int = 1024,
    ) -> None:
        self._execute = execute
        self._info = info
        self.max_request_bytes = max_request_bytes
        self.max_connections = max_connections
        self.host: str | None = None
        self.port: int | None = None
        self.stats: dict[str, int] = dict.fromkeys(
            (
                "connections",
                "connected",
                "rejected_connections",
                "commands",
                "errors",
                "protocol_errors",
                "too_large",
            ),
            0,
        )
        self._server: asyncio.Server | None = None
        self._conns: dict[int, _Conn] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._next_id = 1
        self._started = time.monotonic()
        self._commands: dict[bytes, _Spec] = self._command_table()

    # ------------------------------------------------------------------ lifecycle
    async def start(self, host: str, port: int) -> None:
        """Listen on ``host:port`` (``port`` 0 picks a free port: read :attr:`port`)."""
        if self._server is not None:
            raise RuntimeError("RespServer already started")
        self._server = await asyncio.start_server(self._handle, host, port)
        sock = self._server.sockets[0]
        self.host, self.port = sock.getsockname()[:2]
        self._started = time.monotonic()

    async def stop(self) -> None:
        """Close the listener and every client connection; wait for their tasks to end."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for conn in list(self._conns.values()):
            conn.closing = True
            conn.writer.close()
        tasks = [t for t in self._tasks if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    # ------------------------------------------------------------------ connections
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if self._server is None or len(self._conns) >= self.max_connections:
            self.stats["rejected_connections"] += 1
            with contextlib.suppress(Exception):
                writer.write(encode_error("ERR max number of clients reached"))
                writer.close()
            return
        peer = writer.get_extra_info("peername")
        addr = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else str(peer)
        conn = _Conn(self._next_id, addr, writer, time.time())
        self._next_id += 1
        self._conns[conn.id] = conn
        if task is not None:
            self._tasks.add(task)
        self.stats["connections"] += 1
        self.stats["connected"] += 1
        try:
            await self._serve(conn, reader, writer)
        except (ConnectionError, OSError):
            pass  # the client went away
        except asyncio.CancelledError:
            pass  # stop()
        except Exception as exc:  # a bug here must not take the server down
            logger.warning("RESP connection %s failed: %r", conn.addr, exc)
            logger.debug("RESP connection failure", exc_info=True)
        finally:
            self._conns.pop(conn.id, None)
            if task is not None:
                self._tasks.discard(task)
            self.stats["connected"] -= 1
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def _serve(
        self, conn: _Conn, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        parser = RespParser(max_request_bytes=self.max_request_bytes)
        while not conn.closing:
            data = await reader.read(_READ_SIZE)
            if not data:
                return
            parser.feed(data)
            out: list[bytes] = []
            size = 0
            try:
                while not conn.closing:
                    command = parser.get_command()
                    if command is None:
                        break
                    reply = await self._dispatch(conn, command)
                    out.append(reply)
                    size += len(reply)
                    if size >= _FLUSH_BYTES:
                        writer.write(b"".join(out))
                        out, size = [], 0
                        await writer.drain()
            except RequestTooLarge as exc:
                self.stats["too_large"] += 1
                out.append(encode_error(f"ERR Protocol error: {exc}"))
                conn.closing = True
            except ProtocolError as exc:
                self.stats["protocol_errors"] += 1
                out.append(encode_error(f"ERR Protocol error: {exc}"))
                conn.closing = True
            if out:
                writer.write(b"".join(out))
                await writer.drain()
        with contextlib.suppress(Exception):
            if writer.can_write_eof():
                writer.write_eof()

    async def _dispatch(self, conn: _Conn, args: list[bytes]) -> bytes:
        self.stats["commands"] += 1
        spec = self._commands.get(args[0].lower())
        reply: bytes
        if spec is None:
            name = _lower_text(args[0])
            if name in _REFUSED:
                reply = encode_error(f"ERR {_REFUSED[name]}")
            else:
                shown = " ".join(f"'{_show(a, 32)}'" for a in args[1:4])
                reply = encode_error(
                    f"ERR unknown command '{_show(args[0])}', with args beginning with: {shown}"
                )
        elif len(args) < spec.min_args or (spec.max_args is not None and len(args) > spec.max_args):
            reply = encode_error(
                f"ERR wrong number of arguments for '{_lower_text(args[0])}' command"
            )
        else:
            try:
                return await spec.handler(conn, args)
            except _CommandError as exc:
                reply = encode_error(str(exc))
            except Exception as exc:  # a bug in a handler: answer, log one line, go on
                logger.warning("RESP command %s failed: %r", _show(args[0]), exc)
                reply = encode_error(f"ERR internal: {type(exc).__name__}: {exc}")
        self.stats["errors"] += 1
        return reply

    # ------------------------------------------------------------------ executor
    async def _exec(self, command: tuple[Any, ...]) -> Any:
        try:
            result = await self._execute(command)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.warning("executor failed on %s: %r", command[0], exc)
            raise _CommandError(f"ERR internal: {type(exc).__name__}: {exc}") from None
        if isinstance(result, dict) and isinstance(result.get("error"), str):
            raise _CommandError(_error_text(result))
        return result

    async def _cas(self, key: str | bytes, old: Any, new: Any) -> bool:
        done = await self._exec(("cas", key, old, new))
        if not isinstance(done, bool):
            raise _CommandError(f"ERR internal: cas returned {type(done).__name__}")
        return done

    # ------------------------------------------------------------------ commands
    def _command_table(self) -> dict[bytes, _Spec]:
        ro, wr, fast, admin = "readonly", "write", "fast", "admin"
        table = {
            "ping": _Spec(self._ping, 1, 2, (fast,)),
            "echo": _Spec(self._echo, 2, 2, (fast,)),
            "get": _Spec(self._get, 2, 2, (ro, fast), 1, 1, 1),
            "mget": _Spec(self._mget, 2, None, (ro, fast), 1, -1, 1),
            "set": _Spec(self._set, 3, None, (wr,), 1, 1, 1),
            "setnx": _Spec(self._setnx, 3, 3, (wr, fast), 1, 1, 1),
            "del": _Spec(self._del, 2, None, (wr,), 1, -1, 1),
            "unlink": _Spec(self._del, 2, None, (wr, fast), 1, -1, 1),
            "exists": _Spec(self._exists, 2, None, (ro, fast), 1, -1, 1),
            "append": _Spec(self._append, 3, 3, (wr,), 1, 1, 1),
            "incr": _Spec(self._incr, 2, 2, (wr, fast), 1, 1, 1),
            "incrby": _Spec(self._incr, 3, 3, (wr, fast), 1, 1, 1),
            "decr": _Spec(self._incr, 2, 2, (wr, fast), 1, 1, 1),
            "decrby": _Spec(self._incr, 3, 3, (wr, fast), 1, 1, 1),
            "strlen": _Spec(self._strlen, 2, 2, (ro, fast), 1, 1, 1),
            "type": _Spec(self._type, 2, 2, (ro, fast), 1, 1, 1),
            "info": _Spec(self._info_cmd, 1, None, ()),
            "command": _Spec(self._command, 1, None, ()),
            "client": _Spec(self._client, 2, None, ()),
            "hello": _Spec(self._hello, 1, None, (fast,)),
            "select": _Spec(self._select, 2, 2, (fast,)),
            "config": _Spec(self._config, 2, None, (admin,)),
            "quit": _Spec(self._quit, 1, None, (fast,)),
        }
        return {name.encode(): spec for name, spec in table.items()}

    async def _ping(self, conn: _Conn, args: list[bytes]) -> bytes:
        return encode_bulk(args[1]) if len(args) > 1 else b"+PONG\r\n"

    async def _echo(self, conn: _Conn, args: list[bytes]) -> bytes:
        return encode_bulk(args[1])

    async def _get_value(self, key: bytes) -> Any:
        return await self._exec(("get", _arg(key)))

    async def _get(self, conn: _Conn, args: list[bytes]) -> bytes:
        value = await self._get_value(args[1])
        return conn.value(value)

    async def _mget(self, conn: _Conn, args: list[bytes]) -> bytes:
        items = []
        for key in args[1:]:
            value = await self._get_value(key)
            items.append(conn.value(value))
        return encode_array(items)

    async def _set(self, conn: _Conn, args: list[bytes]) -> bytes:
        key, value = _arg(args[1]), _arg(args[2])
        nx = xx = want_old = False
        for opt in args[3:]:
            word = opt.upper()
            if word == b"NX" and not xx:
                nx = True
            elif word == b"XX" and not nx:
                xx = True
            elif word == b"GET":
                want_old = True
            elif word == b"KEEPTTL":
                pass  # keys never expire: keeping "the TTL" changes nothing
            elif word in (b"EX", b"PX", b"EXAT", b"PXAT"):
                raise _CommandError(
                    f"ERR SET option {word.decode()} is not supported: keys do not expire"
                )
            else:
                raise _CommandError("ERR syntax error")
        if not (nx or xx or want_old):
            await self._exec(("put", key, value))
            return OK
        if nx and not want_old:
            return OK if await self._cas(key, None, value) else conn.nil
        for _ in range(MAX_CAS_RETRIES):
            old = await self._exec(("get", key))
            if (nx and old is not None) or (xx and old is None):
                return conn.value(old) if want_old else conn.nil
            if await self._cas(key, old, value):
                return conn.value(old) if want_old else OK
        raise _CommandError("TRYAGAIN contention: the key kept changing, SET not applied")

    async def _setnx(self, conn: _Conn, args: list[bytes]) -> bytes:
        return encode_int(1 if await self._cas(_arg(args[1]), None, _arg(args[2])) else 0)

    async def _del(self, conn: _Conn, args: list[bytes]) -> bytes:
        count = 0
        for raw in args[1:]:
            key = _arg(raw)
            if await self._exec(("get", key)) is not None:
                await self._exec(("delete", key))
                count += 1
        return encode_int(count)

    async def _exists(self, conn: _Conn, args: list[bytes]) -> bytes:
        count = 0
        for key in args[1:]:
            if await self._get_value(key) is not None:
                count += 1
        return encode_int(count)

    async def _append(self, conn: _Conn, args: list[bytes]) -> bytes:
        key, raw = _arg(args[1]), args[2]
        for _ in range(MAX_CAS_RETRIES):
            old = await self._exec(("get", key))
            data = raw if old is None else value_bytes(old) + raw
            if await self._cas(key, old, _arg(data)):
                return encode_int(len(data))
        raise _CommandError("TRYAGAIN contention: the key kept changing, APPEND not applied")

    async def _incr(self, conn: _Conn, args: list[bytes]) -> bytes:
        """INCR, INCRBY, DECR, DECRBY: ``("incr", k)`` for +1, else a ``get`` + ``cas`` loop."""
        name = args[0].lower()
        step = 1 if len(args) == 2 else _int64_arg(args[2])
        if name.startswith(b"decr"):
            step = -step
        key = _arg(args[1])
        if step == 1:
            result = await self._exec(("incr", key))
            if not isinstance(result, int) or isinstance(result, bool):
                raise _CommandError(f"ERR internal: incr returned {type(result).__name__}")
            return encode_int(result)
        for _ in range(MAX_CAS_RETRIES):
            old = await self._exec(("get", key))
            new = _as_integer(old) + step
            if not _INT64_MIN <= new <= _INT64_MAX:
                raise _CommandError("ERR increment or decrement would overflow")
            if await self._cas(key, old, new):
                return encode_int(new)
        raise _CommandError("TRYAGAIN contention: the key kept changing, increment not applied")

    async def _strlen(self, conn: _Conn, args: list[bytes]) -> bytes:
        value = await self._get_value(args[1])
        return encode_int(0 if value is None else len(value_bytes(value)))

    async def _type(self, conn: _Conn, args: list[bytes]) -> bytes:
        value = await self._get_value(args[1])
        return b"+none\r\n" if value is None else b"+string\r\n"

    async def _info_cmd(self, conn: _Conn, args: list[bytes]) -> bytes:
        wanted = {_lower_text(a) for a in args[1:]}
        return encode_bulk(self.info_text(wanted).encode("utf-8", "replace"))

    def info_text(self, sections: set[str] | None = None) -> str:
        """The INFO reply: Redis's format, our sections plus those of ``info()``."""
        out: dict[str, dict[str, Any]] = {
            "server": {
                "redis_version": REDIS_COMPAT_VERSION,
                "redis_mode": "standalone",
                "quorumkit_resp": 1,
                "process_id": os.getpid(),
                "tcp_port": self.port or 0,
                "uptime_in_seconds": int(time.monotonic() - self._started),
            },
            "clients": {
                "connected_clients": self.stats["connected"],
                "maxclients": self.max_connections,
            },
            "stats": {
                "total_connections_received": self.stats["connections"],
                "rejected_connections": self.stats["rejected_connections"],
                "total_commands_processed": self.stats["commands"],
                "total_error_replies": self.stats["errors"],
                "protocol_errors": self.stats["protocol_errors"],
                "too_large_requests": self.stats["too_large"],
            },
        }
        try:
            extra = self._info()
        except Exception as exc:
            extra = {"info_error": f"{type(exc).__name__}: {exc}"}
        for name, value in extra.items():
            if isinstance(value, Mapping):
                out.setdefault(_info_key(str(name)).lower(), {}).update(value)
            else:
                out.setdefault("quorumkit", {})[str(name)] = value
        everything = not sections or sections & {"all", "everything", "default"}
        blocks = []
        for name, fields in out.items():
            if not everything and name not in (sections or set()):
                continue
            lines = [f"# {name.capitalize()}"]
            lines += [f"{_info_key(str(k))}:{_info_value(v)}" for k, v in fields.items()]
            blocks.append("\r\n".join(lines) + "\r\n")
        return "\r\n".join(blocks)

    async def _command(self, conn: _Conn, args: list[bytes]) -> bytes:
        sub = _lower_text(args[1]) if len(args) > 1 else ""
        if sub == "":
            return encode_array([self._command_entry(n, s) for n, s in self._commands.items()])
        if sub == "count":
            return encode_int(len(self._commands))
        if sub == "info":
            names = args[2:] or list(self._commands)
            items = []
            for name in names:
                spec = self._commands.get(name.lower())
                items.append(conn.nil if spec is None else self._command_entry(name.lower(), spec))
            return encode_array(items)
        if sub == "docs":
            return conn.map([])
        if sub in ("list", "getkeys"):
            return EMPTY_ARRAY
        raise _CommandError(f"ERR unknown subcommand '{_show(args[1])}' for 'command'")

    @staticmethod
    def _command_entry(name: bytes, spec: _Spec) -> bytes:
        return encode_array(
            [
                encode_bulk(name),
                encode_int(spec.arity),
                encode_array([encode_simple(f) for f in spec.flags]),
                encode_int(spec.first_key),
                encode_int(spec.last_key),
                encode_int(spec.step),
                EMPTY_ARRAY,  # ACL categories, tips, key specs, subcommands (Redis 7 layout)
                EMPTY_ARRAY,
                EMPTY_ARRAY,
                EMPTY_ARRAY,
            ]
        )

    async def _client(self, conn: _Conn, args: list[bytes]) -> bytes:
        sub = _lower_text(args[1])
        if sub == "setname" and len(args) == 3:
            name = args[2].decode("utf-8", "replace")
            if any(c.isspace() or not c.isprintable() for c in name):
                raise _CommandError(
                    "ERR Client names cannot contain spaces, newlines or special characters."
                )
            conn.name = name
            return OK
        if sub == "getname" and len(args) == 2:
            return encode_bulk(conn.name.encode()) if conn.name else conn.nil
        if sub == "id" and len(args) == 2:
            return encode_int(conn.id)
        if sub == "setinfo" and len(args) == 4:
            attr = _lower_text(args[2])
            if attr == "lib-name":
                conn.lib_name = _show(args[3])
            elif attr == "lib-ver":
                conn.lib_ver = _show(args[3])
            else:
                raise _CommandError(f"ERR Unrecognized option '{_show(args[2])}'")
            return OK
        if sub == "info" and len(args) == 2:
            return encode_bulk(self._client_line(conn).encode())
        if sub == "list":
            lines = "".join(self._client_line(c) for c in self._conns.values())
            return encode_bulk(lines.encode())
        if sub in ("no-evict", "no-touch", "reply") and len(args) == 3:
            return OK
        raise _CommandError(
            f"ERR unknown subcommand or wrong number of arguments for 'client|{sub}'"
        )

    def _client_line(self, conn: _Conn) -> str:
        age = int(time.time() - conn.created)
        return (
            f"id={conn.id} addr={conn.addr} name={conn.name} age={age} db=0 "
            f"lib-name={conn.lib_name} lib-ver={conn.lib_ver}\n"
        )

    async def _hello(self, conn: _Conn, args: list[bytes]) -> bytes:
        proto = conn.proto
        if len(args) > 1:
            if _INT_RE.fullmatch(args[1]) is None:
                raise _CommandError("ERR Protocol version is not an integer or out of range")
            proto = int(args[1])
            if proto not in (2, 3):
                raise _CommandError("NOPROTO sorry, this protocol version is not supported")
        rest, name, i = args[2:], conn.name, 0
        while i < len(rest):
            opt = rest[i].upper()
            if opt == b"AUTH" and i + 2 < len(rest):
                raise _CommandError(f"ERR {_REFUSED['auth']}")
            if opt == b"SETNAME" and i + 1 < len(rest):
                name = _show(rest[i + 1])
                i += 2
                continue
            raise _CommandError(f"ERR Syntax error in HELLO option '{_show(rest[i])}'")
        conn.proto, conn.name = proto, name
        return conn.map(
            [
                (encode_bulk(b"server"), encode_bulk(b"redis")),
                (encode_bulk(b"version"), encode_bulk(REDIS_COMPAT_VERSION.encode())),
                (encode_bulk(b"proto"), encode_int(proto)),
                (encode_bulk(b"id"), encode_int(conn.id)),
                (encode_bulk(b"mode"), encode_bulk(b"standalone")),
                (encode_bulk(b"role"), encode_bulk(b"master")),
                (encode_bulk(b"modules"), EMPTY_ARRAY),
            ]
        )

    async def _select(self, conn: _Conn, args: list[bytes]) -> bytes:
        if _INT_RE.fullmatch(args[1]) is None:
            raise _CommandError("ERR value is not an integer or out of range")
        if int(args[1]) != 0:
            raise _CommandError("ERR DB index is out of range")
        return OK

    async def _config(self, conn: _Conn, args: list[bytes]) -> bytes:
        sub = _lower_text(args[1])
        if sub == "get" and len(args) >= 3:
            values = {
                "save": "",
                "appendonly": "no",
                "databases": "1",
                "maxclients": str(self.max_connections),
                "port": str(self.port or 0),
                "proto-max-bulk-len": str(self.max_request_bytes),
            }
            found: dict[str, str] = {}
            for pattern in args[2:]:
                pat = _lower_text(pattern)
                for key in _CONFIG_KEYS:
                    if fnmatch.fnmatchcase(key, pat):
                        found[key] = values[key]
            return conn.map(
                [(encode_bulk(k.encode()), encode_bulk(v.encode())) for k, v in found.items()]
            )
        if sub == "resetstat" and len(args) == 2:
            for name in ("commands", "errors", "protocol_errors", "too_large"):
                self.stats[name] = 0
            return OK
        if sub in ("set", "rewrite"):
            raise _CommandError(f"ERR CONFIG {sub.upper()} is not supported")
        raise _CommandError(
            f"ERR unknown subcommand or wrong number of arguments for 'config|{sub}'"
        )

    async def _quit(self, conn: _Conn, args: list[bytes]) -> bytes:
        conn.closing = True
        return OK


def _error_text(result: Mapping[str, Any]) -> str:
    name = str(result["error"])
    detail = result.get("detail")
    leader = result.get("leader")
    text = name if detail is None else f"{name}: {detail}"
    if leader is not None:
        text += f" (leader={leader})"
    if name in ("not_leader", "unavailable"):
        return f"TRYAGAIN {text}"
    if name == "timeout":
        return f"ERR {text} (outcome unknown: the command may have been applied)"
    return f"ERR {text}"


_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


def _int64_arg(raw: bytes) -> int:
    if _INT_RE.fullmatch(raw) is None or not _INT64_MIN <= int(raw) <= _INT64_MAX:
        raise _CommandError("ERR value is not an integer or out of range")
    return int(raw)


def _as_integer(value: Any) -> int:
    """A stored value as an integer, by the state machine's own ``incr`` rules."""
    if value is None:
        return 0
    if isinstance(value, (str, bytes)):
        try:
            return int(value)
        except ValueError:
            pass
    elif isinstance(value, int) and not isinstance(value, bool):
        return value
    raise _CommandError("ERR wrong_type: value is not an integer")


_INFO_KEY_RE = re.compile(r"[^A-Za-z0-9_.\-]")


def _info_key(key: str) -> str:
    return _INFO_KEY_RE.sub("_", key) or "_"


def _info_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, Mapping):
        return ",".join(f"{_info_key(str(k))}={_info_atom(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple, set, frozenset)):
        return ",".join(_info_atom(v) for v in value)
    return _one_line(str(value))


def _info_atom(value: Any) -> str:
    """A value inside a ``k=v,k=v`` or ``a,b`` list: no separators of its own."""
    text = _info_value(value) if not isinstance(value, (Mapping, list, tuple)) else str(value)
    return _one_line(text).replace(",", ";").replace("=", "~")
