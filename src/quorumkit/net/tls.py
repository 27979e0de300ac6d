"""Mutual TLS between peers: certificates, SSL contexts and the identity a certificate proves.

Rules of this module:

1. Both ends of a peer connection present a certificate signed by the cluster's CA and verify
   the other's (``CERT_REQUIRED`` on both sides). TLS 1.3 only.
2. A certificate names one node: its subject common name and a DNS subject alternative name
   are the node id. The dialling side checks that the certificate of the node it called names
   that node; the accepting side checks that every frame on the connection comes from the node
   its certificate names. Host names are not checked: peers are identified by node id, as in
   ``--peers``, not by DNS (the addresses may be bare IPs).
3. Wrong files (missing, unreadable, not PEM, a key that does not match its certificate) are a
   :class:`~quorumkit.errors.ConfigError` naming the file, before the node starts.
4. :func:`write_cluster_certs` (``quorumkit keygen --tls``) makes a CA and one certificate per
   node with ECDSA P-256 keys; private keys are written with mode 0600.
"""

from __future__ import annotations

import datetime
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quorumkit.errors import ConfigError

#: validity of certificates made by :func:`write_cluster_certs`
CERT_VALID_DAYS = 3650


@dataclass(frozen=True)
class TlsFiles:
    """This node's certificate and private key, and the CA certificate that signs its peers."""

    cert: Path
    key: Path
    ca: Path

    @classmethod
    def from_options(cls, cert: str | None, key: str | None, ca: str | None) -> TlsFiles | None:
        """All three or none (``--tls-cert``, ``--tls-key``, ``--tls-ca``)."""
        given = {"--tls-cert": cert, "--tls-key": key, "--tls-ca": ca}
        if not any(given.values()):
            return None
        missing = [flag for flag, value in given.items() if not value]
        if missing:
            raise ConfigError(
                "mutual TLS needs --tls-cert, --tls-key and --tls-ca together; missing "
                + ", ".join(missing)
                + " (make them with 'quorumkit keygen --tls --ids n1,n2,n3')"
            )
        assert cert and key and ca  # narrowed above
        files = cls(Path(cert), Path(key), Path(ca))
        for flag, path in (
            ("--tls-cert", files.cert),
            ("--tls-key", files.key),
            ("--tls-ca", files.ca),
        ):
            if not path.is_file():
                raise ConfigError(f"{flag} {path}: no such file")
        return files


def _context(files: TlsFiles, purpose: ssl.Purpose) -> ssl.SSLContext:
    ctx = ssl.SSLContext(
        ssl.PROTOCOL_TLS_SERVER if purpose is ssl.Purpose.CLIENT_AUTH else ssl.PROTOCOL_TLS_CLIENT
    )
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False  # rule 2: the node id is checked instead
    ctx.verify_mode = ssl.CERT_REQUIRED
    try:
        ctx.load_verify_locations(cafile=str(files.ca))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"--tls-ca {files.ca}: not a readable PEM CA certificate ({exc})"
        ) from None
    try:
        ctx.load_cert_chain(certfile=str(files.cert), keyfile=str(files.key))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"--tls-cert {files.cert} / --tls-key {files.key}: cannot load the certificate and "
            f"its key ({exc})"
        ) from None
    return ctx


def server_context(files: TlsFiles) -> ssl.SSLContext:
    """For accepting peers: present our certificate, require theirs."""
    return _context(files, ssl.Purpose.CLIENT_AUTH)


def client_context(files: TlsFiles) -> ssl.SSLContext:
    """For dialling peers: present our certificate, require theirs."""
    return _context(files, ssl.Purpose.SERVER_AUTH)


def certificate_names(peercert: dict[str, Any] | None) -> frozenset[str]:
    """The node ids a verified peer certificate (``SSLObject.getpeercert()``) names: its
    subject common name and its DNS alternative names."""
    if not peercert:
        return frozenset()
    names: set[str] = set()
    for rdn in peercert.get("subject", ()):
        for attr, value in rdn:
            if attr == "commonName":
                names.add(value)
    for kind, value in peercert.get("subjectAltName", ()):
        if kind == "DNS":
            names.add(value)
    return frozenset(names)


def names_text(names: frozenset[str]) -> str:
    """The node ids a certificate names, for messages: ``n1, n2`` or ``nobody``."""
    return ", ".join(sorted(names)) or "nobody"


def own_identity(files: TlsFiles) -> frozenset[str]:
    """The names in this node's own certificate (to warn when they do not include its id)."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    try:
        cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--tls-cert {files.cert}: not a PEM certificate ({exc})") from None
    names = {str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)}
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names.update(san.value.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        pass
    return frozenset(names)


def write_cluster_certs(folder: Path, ids: list[str], *, overwrite: bool = False) -> list[Path]:
    """A CA (``ca.pem``, ``ca.key``) and, per node id, ``<id>.pem`` and ``<id>.key`` signed by
    it. An existing CA is reused (so nodes can be added later); existing node files are kept
    unless ``overwrite``. Returns the files written."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    now = datetime.datetime.now(datetime.UTC)
    until = now + datetime.timedelta(days=CERT_VALID_DAYS)

    def save_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        path.chmod(0o600)
        written.append(path)

    ca_cert_path, ca_key_path = folder / "ca.pem", folder / "ca.key"
    if ca_cert_path.exists() and ca_key_path.exists():
        try:
            ca_cert = x509.load_pem_x509_certificate(ca_cert_path.read_bytes())
            loaded = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
        except ValueError as exc:
            raise ConfigError(
                f"{ca_cert_path} / {ca_key_path}: cannot read the CA ({exc})"
            ) from None
        if not isinstance(loaded, ec.EllipticCurvePrivateKey):
            raise ConfigError(f"{ca_key_path} is not an ECDSA key")
        ca_key = loaded
    else:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "quorumkit cluster CA")])
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(until)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(ca_key, hashes.SHA256())
        )
        save_key(ca_key_path, ca_key)
        ca_cert_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        written.append(ca_cert_path)

    for node_id in ids:
        cert_path, key_path = folder / f"{node_id}.pem", folder / f"{node_id}.key"
        if cert_path.exists() and key_path.exists() and not overwrite:
            continue
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_id)]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(until)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(node_id)]), critical=False)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        save_key(key_path, key)
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        written.append(cert_path)
    return written
