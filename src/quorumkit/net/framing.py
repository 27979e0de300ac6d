"""Peer frames: length-prefixed msgpack with an HMAC, validated before anything is believed.

Rules of this module:

1. A frame is ``length (4 bytes, big-endian) | body | mac``. ``length`` counts body and mac and
   must not exceed ``max_frame_bytes``; an oversized length is refused before anything is read.
2. ``body`` is the codec encoding of ``[FRAME_VERSION, src, dst, message]``; ``mac`` is
   HMAC-SHA256(cluster key, body) when the cluster has a key, else empty. msgpack concatenates:
   the body is the array header, then the encodings of the four items, so a message encoded
   once can go into frames for several destinations (:func:`frame_encoded`).
3. :func:`parse_frame` raises :class:`FrameError` (a :class:`~quorumkit.errors.PeerError`) for
   anything wrong: a bad MAC, a body that does not decode, a wrong version, a sender that is not
   a member, a frame addressed to another node. The caller closes that connection and counts it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from quorumkit.codec import decode, encode, is_message
from quorumkit.errors import ConfigError, DecodeError, PeerError

FRAME_VERSION = 1
MAC_BYTES = 32
LENGTH = struct.Struct(">I")
DEFAULT_MAX_FRAME_BYTES = 16 * 1024 * 1024


class FrameError(PeerError):
    """A peer sent a frame that must not be believed."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Frame:
    src: str
    dst: str
    message: Any


#: one keyed HMAC state per cluster key: copying it is cheaper than keying a new one per frame
_KEYED: dict[bytes, hmac.HMAC] = {}


def frame_mac(key: bytes, body: bytes) -> bytes:
    """HMAC-SHA256(key, body) (rule 2)."""
    keyed = _KEYED.get(key)
    if keyed is None:
        if len(_KEYED) >= 8:  # a process talks to one cluster; never grow without bound
            _KEYED.clear()
        keyed = _KEYED[key] = hmac.new(key, digestmod=hashlib.sha256)
    mac = keyed.copy()
    mac.update(body)
    return mac.digest()


def make_frame(src: str, dst: str, message: Any, key: bytes | None) -> bytes:
    return frame_encoded(src, dst, encode(message), key)


_ARRAY4: Final = b"\x94"  # msgpack fixarray of 4 items


def frame_encoded(src: str, dst: str, encoded: bytes, key: bytes | None) -> bytes:
    """The frame of a message already encoded with :func:`quorumkit.codec.encode` (the same
    bytes as :func:`make_frame`)."""
    body = b"".join((_ARRAY4, encode(FRAME_VERSION), encode(src), encode(dst), encoded))
    mac = frame_mac(key, body) if key else b""
    return LENGTH.pack(len(body) + len(mac)) + body + mac


def check_length(length: int, max_frame_bytes: int, key: bytes | None) -> None:
    if length > max_frame_bytes:
        raise FrameError("oversized", f"frame of {length} bytes > limit {max_frame_bytes}")
    if length <= (MAC_BYTES if key else 0):
        raise FrameError("truncated", f"frame of {length} bytes is too short")


def parse_frame(payload: bytes, key: bytes | None, me: str, members: frozenset[str]) -> Frame:
    """Verify and decode the bytes after the length prefix."""
    if key:
        body, mac = payload[:-MAC_BYTES], payload[-MAC_BYTES:]
        want = frame_mac(key, body)
        if not hmac.compare_digest(mac, want):
            raise FrameError("bad_mac", "frame authentication failed (wrong cluster key?)")
    else:
        body = payload
    try:
        obj = decode(body)
    except DecodeError as exc:
        raise FrameError("malformed", str(exc)) from None
    if not (isinstance(obj, tuple) and len(obj) == 4 and obj[0] == FRAME_VERSION):
        raise FrameError("malformed", "frame header is not [version, src, dst, message]")
    _, src, dst, message = obj
    if not isinstance(src, str) or src not in members or src == me:
        raise FrameError("unknown_sender", f"sender {src!r:.40} is not a peer")
    if dst != me:
        raise FrameError("misaddressed", f"frame for {dst!r:.40} arrived at {me}")
    if not is_message(message):
        raise FrameError("malformed", "payload is not a protocol message")
    return Frame(src, dst, message)


def generate_key() -> bytes:
    return os.urandom(32)


def write_key(path: str | Path) -> None:
    p = Path(path)
    p.write_text(generate_key().hex() + "\n")
    p.chmod(0o600)


def read_key(path: str | Path) -> bytes:
    p = Path(path)
    try:
        text = p.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read cluster key {p}: {exc.strerror}") from None
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise ConfigError(
            f"cluster key {p} is not hex (make one with 'quorumkit keygen')"
        ) from None
    if len(key) < 16:
        raise ConfigError(f"cluster key {p} is too short ({len(key)} bytes; want >= 16)")
    return key
