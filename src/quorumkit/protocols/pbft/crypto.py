"""Ed25519 keys and signatures of PBFT (Castro & Liskov 1999, §3: "all replicas know the
others' public keys to verify signatures"; TOCS 2002 §2.1, signed messages <m>_i, m signed by i).

Rules of this module:

1. One key pair per replica and per client. A :class:`Keyring` holds the public keys of every
   replica and client and the private key of its own identity; it signs and verifies bytes.
2. A signature covers the canonical msgpack encoding (:mod:`quorumkit.codec`) of a message
   *without* its ``signature`` field (:func:`signing_bytes`): the message tag followed by every
   other field in field order, nested messages included with their own signatures.
3. In the simulator keys derive deterministically from the identity (``private key =
   sha256(b"quorumkit-sim/" + identity)``) so that runs are reproducible; anyone can derive
   any simulated key, which is fine for a simulation whose byzantine behaviours are written to
   use their own key only. In a deployment keys come from files (:meth:`Keyring.from_files`,
   :meth:`Keyring.from_cluster_config`), made by :func:`generate_keypair` /
   :func:`write_keypair`.
4. Proxy clients (a replica acting as a client for a plain kv command, see ``node.py``) use the
   identities ``"<replica>/<lane>"`` and sign with the replica's key: :func:`key_owner` maps an
   identity to the identity whose key signs for it.
5. For MAC authenticators (``auth="mac"``, see ``auth.py``) every replica also has a static
   X25519 key pair. The session key of replicas a and b is HKDF-SHA256 over their X25519 shared
   secret with both identities (sorted) as ``info`` (:meth:`Keyring.mac_key`): only a and b can
   compute it, nothing a third replica holds derives it. Simulated X25519 keys derive like the
   Ed25519 ones, from a different label (``sha256(b"quorumkit-sim-x25519/" + identity)``); in a
   deployment they are the files ``<identity>.x25519.key`` / ``.x25519.pub`` that
   :func:`write_keypair` writes next to the Ed25519 ones, and the cluster configuration lists
   the public ones in its ``"x25519"`` section (optional: without it only ``auth="signatures"``
   works).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from quorumkit.codec import encode, message_tag
from quorumkit.errors import ConfigError

SIM_KEY_PREFIX = b"quorumkit-sim/"
SIM_X25519_PREFIX = b"quorumkit-sim-x25519/"
MAC_KEY_INFO = b"quorumkit.pbft/mac-session-key/v1"
SIGNATURE_BYTES = 64
_CLIENT_RE = re.compile(r"c[0-9]{1,12}")
_LANE_RE = re.compile(r"[0-9]{1,6}")


def digest(data: bytes) -> bytes:
    """The message digest D(m) of the paper (§4.2): SHA-256."""
    return hashlib.sha256(data).digest()


def key_owner(identity: str) -> str:
    """The identity whose key signs for ``identity`` (``"n2/7"`` -> ``"n2"``)."""
    owner, sep, lane = identity.partition("/")
    if sep and not _LANE_RE.fullmatch(lane):
        return ""
    return owner


_UNSIGNED: dict[type[Any], tuple[str, ...]] = {}


def _unsigned_fields(cls: type[Any]) -> tuple[str, ...]:
    names = _UNSIGNED.get(cls)
    if names is None:
        names = tuple(f.name for f in dataclasses.fields(cls) if f.name != "signature")
        _UNSIGNED[cls] = names
    return names


def signing_bytes(msg: Any) -> bytes:
    """The bytes a signature of ``msg`` covers: its encoding without the signature field."""
    cls = type(msg)
    values = [message_tag(cls)]
    values.extend(getattr(msg, name) for name in _unsigned_fields(cls))
    return encode(values)


# --------------------------------------------------------------------------- key material


def sim_private_bytes(identity: str) -> bytes:
    """The simulator's deterministic private key of ``identity`` (raw 32 bytes)."""
    return hashlib.sha256(SIM_KEY_PREFIX + identity.encode()).digest()


@functools.lru_cache(maxsize=4096)
def _sim_private_key(identity: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(sim_private_bytes(identity))


@functools.lru_cache(maxsize=4096)
def _sim_public_key(identity: str) -> Ed25519PublicKey:
    return _sim_private_key(identity).public_key()


def sim_x25519_private_bytes(identity: str) -> bytes:
    """The simulator's deterministic X25519 private key of ``identity`` (rule 5)."""
    return hashlib.sha256(SIM_X25519_PREFIX + identity.encode()).digest()


def derive_mac_key(
    private: X25519PrivateKey, own: str, peer: str, peer_public: X25519PublicKey
) -> bytes:
    """The session key of ``own`` and ``peer`` (rule 5): HKDF-SHA256 over the X25519 shared
    secret, ``info`` naming both identities in sorted order (both ends derive the same key)."""
    shared = private.exchange(peer_public)
    a, b = sorted((own, peer))
    info = MAC_KEY_INFO + b"/" + a.encode() + b"/" + b.encode()
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(shared)


@functools.lru_cache(maxsize=4096)
def _sim_mac_key(own: str, peer: str) -> bytes:
    private = X25519PrivateKey.from_private_bytes(sim_x25519_private_bytes(own))
    public = X25519PrivateKey.from_private_bytes(sim_x25519_private_bytes(peer)).public_key()
    return derive_mac_key(private, own, peer, public)


def _raw_x25519_public(key: X25519PublicKey) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def generate_x25519_keypair() -> tuple[bytes, bytes]:
    """A fresh X25519 key pair ``(private, public)``, raw 32 bytes each."""
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
    )

    key = X25519PrivateKey.generate()
    private = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    return private, _raw_x25519_public(key.public_key())


def x25519_public_from_private(private: bytes) -> bytes:
    """The raw X25519 public key of a raw X25519 private key."""
    if len(private) != 32:
        raise ConfigError(f"an X25519 private key has 32 bytes, got {len(private)}")
    return _raw_x25519_public(X25519PrivateKey.from_private_bytes(private).public_key())


def x25519_key_path(private_key_file: str | os.PathLike[str]) -> Path:
    """The X25519 private key file that goes with an Ed25519 one (``n1.key`` ->
    ``n1.x25519.key``)."""
    p = Path(private_key_file)
    stem = p.name[: -len(".key")] if p.name.endswith(".key") else p.name
    return p.with_name(f"{stem}.x25519.key")


def _raw_public(key: Ed25519PublicKey) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def _raw_private(key: Ed25519PrivateKey) -> bytes:
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
    )

    return key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())


def generate_keypair() -> tuple[bytes, bytes]:
    """A fresh Ed25519 key pair ``(private, public)``, raw 32 bytes each (for ``quorumkit
    keygen --ed25519``; uses the operating system's randomness)."""
    key = Ed25519PrivateKey.generate()
    return _raw_private(key), _raw_public(key.public_key())


def public_from_private(private: bytes) -> bytes:
    """The raw public key of a raw private key."""
    return _raw_public(_load_private(private).public_key())


def _load_private(raw: bytes) -> Ed25519PrivateKey:
    if len(raw) != 32:
        raise ConfigError(f"an Ed25519 private key has 32 bytes, got {len(raw)}")
    return Ed25519PrivateKey.from_private_bytes(raw)


def _load_public(raw: bytes, identity: str) -> Ed25519PublicKey:
    if len(raw) != 32:
        raise ConfigError(f"public key of {identity!r}: expected 32 bytes, got {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def _parse_hex(text: str, what: str) -> bytes:
    try:
        return bytes.fromhex(text.strip())
    except ValueError:
        raise ConfigError(f"{what} is not hex-encoded key material") from None


def read_key_file(path: str | os.PathLike[str]) -> bytes:
    """A raw key read from a file holding its hex encoding (as :func:`write_keypair` writes)."""
    try:
        text = Path(path).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read key file {os.fspath(path)!r}: {exc}") from None
    return _parse_hex(text, f"key file {os.fspath(path)!r}")


def write_keypair(
    directory: str | os.PathLike[str], identity: str, *, overwrite: bool = False
) -> tuple[Path, Path, bytes]:
    """Generate a key pair for ``identity`` into ``directory``: ``<identity>.key`` (private,
    hex, mode 0600) and ``<identity>.pub`` (public, hex). Returns both paths and the raw
    public key."""
    if not identity or "/" in identity or identity.startswith("."):
        raise ConfigError(f"bad identity for a key pair: {identity!r}")
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    priv_path, pub_path = folder / f"{identity}.key", folder / f"{identity}.pub"
    if not overwrite and (priv_path.exists() or pub_path.exists()):
        raise ConfigError(f"key files for {identity!r} already exist in {folder}")
    private, public = generate_keypair()
    _write_private(priv_path, private)
    pub_path.write_text(public.hex() + "\n", encoding="ascii")
    write_x25519_keypair(folder, identity, overwrite=True)
    return priv_path, pub_path, public


def _write_private(path: Path, private: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(private.hex() + "\n")


def write_x25519_keypair(
    directory: str | os.PathLike[str], identity: str, *, overwrite: bool = False
) -> bytes:
    """Generate ``<identity>.x25519.key`` (private, hex, mode 0600) and ``.x25519.pub`` in
    ``directory`` (rule 5); returns the raw public key. Without ``overwrite`` an existing
    private key is kept and its public key returned (upgrades key folders made before MAC
    authenticators existed)."""
    if not identity or "/" in identity or identity.startswith("."):
        raise ConfigError(f"bad identity for a key pair: {identity!r}")
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    priv_path = folder / f"{identity}.x25519.key"
    pub_path = folder / f"{identity}.x25519.pub"
    if priv_path.exists() and not overwrite:
        public = x25519_public_from_private(read_key_file(priv_path))
    else:
        private, public = generate_x25519_keypair()
        _write_private(priv_path, private)
    pub_path.write_text(public.hex() + "\n", encoding="ascii")
    return public


# --------------------------------------------------------------------------- the keyring


class Keyring:
    """Public keys of all replicas and clients, and this identity's private key.

    ``simulated=True``: the keys of the replicas ``replicas`` and of clients named ``c<digits>``
    derive from their names (rule 3); ``public_keys`` is ignored.

    ``x25519_private`` / ``x25519_public`` (replicas only): the static X25519 keys from which
    the pairwise MAC session keys derive (rule 5; simulated keyrings derive their own).
    """

    def __init__(
        self,
        identity: str,
        private_key: bytes | None,
        public_keys: Mapping[str, bytes] | None = None,
        *,
        replicas: Iterable[str] = (),
        simulated: bool = False,
        x25519_private: bytes | None = None,
        x25519_public: Mapping[str, bytes] | None = None,
    ) -> None:
        self.identity = identity
        self.replicas = frozenset(replicas)
        self.simulated = simulated
        self._private = _load_private(private_key) if private_key is not None else None
        self._public: dict[str, Ed25519PublicKey] = {}
        self._x_private: X25519PrivateKey | None = None
        self._x_public: dict[str, X25519PublicKey] = {}
        self._mac_keys: dict[str, bytes] = {}
        if not simulated:
            for who, raw in (public_keys or {}).items():
                self._public[who] = _load_public(raw, who)
            if x25519_private is not None:
                if len(x25519_private) != 32:
                    raise ConfigError(
                        f"an X25519 private key has 32 bytes, got {len(x25519_private)}"
                    )
                self._x_private = X25519PrivateKey.from_private_bytes(x25519_private)
            for who, raw in (x25519_public or {}).items():
                if len(raw) != 32:
                    raise ConfigError(
                        f"X25519 public key of {who!r}: expected 32 bytes, got {len(raw)}"
                    )
                self._x_public[who] = X25519PublicKey.from_public_bytes(raw)

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def simulated_for(cls, identity: str, replicas: Iterable[str]) -> Keyring:
        """The simulator's keyring of ``identity`` (deterministic keys, rule 3)."""
        return cls(identity, sim_private_bytes(identity), replicas=replicas, simulated=True)

    @classmethod
    def from_files(
        cls,
        identity: str,
        private_key_file: str | os.PathLike[str] | None,
        public_keys: Mapping[str, str | bytes | os.PathLike[str]],
        *,
        replicas: Iterable[str] = (),
        x25519_private_file: str | os.PathLike[str] | None = None,
        x25519_public: Mapping[str, str | bytes | os.PathLike[str]] | None = None,
    ) -> Keyring:
        """A keyring from key files: ``public_keys`` (and ``x25519_public``) map identities to
        a raw key (bytes), its hex encoding, or a path to a ``.pub`` file."""
        loaded = _load_publics(public_keys)
        x_loaded = _load_publics(x25519_public or {})
        private = read_key_file(private_key_file) if private_key_file is not None else None
        x_private = read_key_file(x25519_private_file) if x25519_private_file is not None else None
        ring = cls(
            identity,
            private,
            loaded,
            replicas=replicas,
            x25519_private=x_private,
            x25519_public=x_loaded,
        )
        if private is not None and identity in loaded:
            if public_from_private(private) != loaded[identity]:
                raise ConfigError(
                    f"the private key of {identity!r} does not match its public key in the "
                    "cluster configuration"
                )
        if x_private is not None and identity in x_loaded:
            if x25519_public_from_private(x_private) != x_loaded[identity]:
                raise ConfigError(
                    f"the X25519 private key of {identity!r} does not match its public key in "
                    "the 'x25519' section of the cluster configuration"
                )
        return ring

    @classmethod
    def from_cluster_config(
        cls,
        path: str | os.PathLike[str],
        identity: str,
        private_key_file: str | os.PathLike[str] | None = None,
    ) -> Keyring:
        """A keyring from a JSON cluster configuration::

            {"replicas": {"n1": "<hex public key>", ...},
             "clients": {"c1": "<hex public key>", ...},
             "x25519": {"n1": "<hex X25519 public key>", ...},
             "keys_dir": "keys"}

        Public keys may also be paths to ``.pub`` files; ``x25519`` is optional (rule 5). The
        private key is ``private_key_file``, else ``<keys_dir>/<identity>.key`` (``keys_dir``
        relative to the configuration file; default: the file's directory); the X25519 private
        key is the ``.x25519.key`` file next to it, if there is one."""
        conf = load_cluster_config(path)
        replicas: dict[str, Any] = conf["replicas"]
        public: dict[str, Any] = {**conf["clients"], **replicas}
        if private_key_file is None:
            candidate = Path(conf["keys_dir"]) / f"{identity}.key"
            private_key_file = candidate if candidate.exists() else None
        x_file: Path | None = None
        if private_key_file is not None and conf["x25519"]:
            x_file = x25519_key_path(private_key_file)
            if not x_file.exists():
                x_file = None
        return cls.from_files(
            identity,
            private_key_file,
            public,
            replicas=replicas,
            x25519_private_file=x_file,
            x25519_public=conf["x25519"],
        )

    # -- use -------------------------------------------------------------------------------
    @property
    def can_sign(self) -> bool:
        return self._private is not None

    def sign(self, data: bytes) -> bytes:
        if self._private is None:
            raise ConfigError(f"no private key for {self.identity!r}: this keyring cannot sign")
        return self._private.sign(data)

    def public_key(self, identity: str) -> Ed25519PublicKey | None:
        """The public key that verifies ``identity``'s signatures (None: unknown identity)."""
        owner = key_owner(identity)
        if not owner:
            return None
        if self.simulated:
            if owner in self.replicas or (owner == identity and _CLIENT_RE.fullmatch(owner)):
                return _sim_public_key(owner)
            return None
        if owner != identity and owner not in self.replicas:
            return None  # only replicas act as proxy clients with lanes
        return self._public.get(owner)

    def knows(self, identity: str) -> bool:
        return self.public_key(identity) is not None

    def mac_problem(self, peers: Iterable[str]) -> str | None:
        """Why this keyring cannot derive MAC session keys with ``peers`` (None: it can)."""
        if self.simulated:
            return None
        if self._x_private is None:
            return f"no X25519 private key for {self.identity!r}"
        missing = sorted(p for p in peers if p != self.identity and p not in self._x_public)
        if missing:
            return f"no X25519 public keys of {missing}"
        return None

    def mac_key(self, peer: str) -> bytes | None:
        """The MAC session key this replica shares with replica ``peer`` (rule 5; None: no
        such key, e.g. a peer that is not a replica)."""
        key = self._mac_keys.get(peer)
        if key is not None:
            return key
        if peer == self.identity or peer not in self.replicas:
            return None
        if self.identity not in self.replicas:
            return None
        if self.simulated:
            key = _sim_mac_key(self.identity, peer)
        else:
            public = self._x_public.get(peer)
            if self._x_private is None or public is None:
                return None
            key = derive_mac_key(self._x_private, self.identity, peer, public)
        self._mac_keys[peer] = key
        return key

    def verify(self, identity: str, data: bytes, signature: bytes) -> bool:
        """True when ``signature`` is ``identity``'s signature of ``data``."""
        key = self.public_key(identity)
        if key is None or len(signature) != SIGNATURE_BYTES:
            return False
        try:
            key.verify(signature, data)
        except InvalidSignature:
            return False
        return True


def _load_publics(keys: Mapping[str, str | bytes | os.PathLike[str]]) -> dict[str, bytes]:
    loaded: dict[str, bytes] = {}
    for who, value in keys.items():
        if isinstance(value, bytes):
            loaded[who] = value
        elif isinstance(value, str) and re.fullmatch(r"[0-9a-fA-F]{64}", value.strip()):
            loaded[who] = bytes.fromhex(value.strip())
        else:
            loaded[who] = read_key_file(value)
    return loaded


def load_cluster_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate a JSON cluster key configuration (see
    :meth:`Keyring.from_cluster_config`); ``keys_dir`` comes back absolute."""
    p = Path(path)
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read cluster configuration {os.fspath(path)!r}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"cluster configuration {os.fspath(path)!r} is not JSON: {exc}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("replicas"), dict):
        raise ConfigError(f"cluster configuration {os.fspath(path)!r} needs a 'replicas' object")
    clients = raw.get("clients", {})
    if not isinstance(clients, dict):
        raise ConfigError("'clients' of the cluster configuration must be an object")
    x25519 = raw.get("x25519", {})
    if not isinstance(x25519, dict):
        raise ConfigError("'x25519' of the cluster configuration must be an object")
    for section in (raw["replicas"], clients, x25519):
        for who, value in section.items():
            if not isinstance(who, str) or not isinstance(value, str):
                raise ConfigError(f"key entry {who!r}: expected a string (hex key or path)")
    base = p.parent
    keys_dir = raw.get("keys_dir", ".")
    if not isinstance(keys_dir, str):
        raise ConfigError("'keys_dir' of the cluster configuration must be a string")
    folder = Path(keys_dir) if Path(keys_dir).is_absolute() else base / keys_dir

    def resolve(value: str) -> str:
        if re.fullmatch(r"[0-9a-fA-F]{64}", value.strip()):
            return value.strip()
        q = Path(value)
        return os.fspath(q if q.is_absolute() else base / q)

    return {
        "replicas": {k: resolve(v) for k, v in raw["replicas"].items()},
        "clients": {k: resolve(v) for k, v in clients.items()},
        "x25519": {k: resolve(v) for k, v in x25519.items()},
        "keys_dir": os.fspath(folder),
    }


def write_cluster_config(
    path: str | os.PathLike[str],
    replicas: Mapping[str, bytes],
    clients: Mapping[str, bytes] | None = None,
    keys_dir: str = ".",
    x25519: Mapping[str, bytes] | None = None,
) -> None:
    """Write a JSON cluster configuration with hex public keys (``x25519``: the replicas'
    X25519 public keys, for ``auth="mac"``)."""
    doc: dict[str, Any] = {
        "replicas": {k: v.hex() for k, v in replicas.items()},
        "clients": {k: v.hex() for k, v in (clients or {}).items()},
    }
    if x25519:
        doc["x25519"] = {k: v.hex() for k, v in x25519.items()}
    doc["keys_dir"] = keys_dir
    Path(path).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")


@functools.lru_cache(maxsize=256)
def client_keyring(keys: str | None, identity: str, replicas: tuple[str, ...] = ()) -> Keyring:
    """The keyring a client ``identity`` signs with: simulated when ``keys`` (a cluster
    configuration path) is None, else its ``<keys_dir>/<identity>.key``."""
    if keys is None:
        return Keyring.simulated_for(identity, replicas)
    ring = Keyring.from_cluster_config(keys, identity)
    if not ring.can_sign:
        raise ConfigError(f"no private key file for client {identity!r} next to {keys!r}")
    return ring
