"""``ep-server dev-certs DIR``: a throwaway CA with a server and a client
certificate, for trying TLS and mutual TLS on one machine.

Made with the ``cryptography`` package (ECDSA P-256 keys, SHA-256
signatures). The CA's private key is never written, so nothing more can be
issued from it: make a new set instead. Not for production: the
certificates expire after :data:`VALID_DAYS` days and name only this
machine (``localhost``, ``127.0.0.1``, ``::1`` and the names given).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["FILES", "VALID_DAYS", "make_dev_certs"]

#: Days the certificates are valid.
VALID_DAYS = 30
#: What :func:`make_dev_certs` writes, in order.
FILES = ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")
_LOCAL = ("localhost", "127.0.0.1", "::1")


def make_dev_certs(
    folder: Path, hosts: Iterable[str] = (), client: str = "ep-dev-client"
) -> list[Path]:
    """Write :data:`FILES` into ``folder`` (made if missing; keys mode 0600).

    :param hosts: names or IP addresses the server certificate also covers.
    :param client: the client certificate's subject common name, which is the
        identity a server with mutual TLS sees.
    :raises FileExistsError: when one of the files exists already.
    """
    folder.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        if (folder / name).exists():
            raise FileExistsError(f"{folder / name} exists; choose an empty folder")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("ep-server development CA")
    ca = _builder(ca_name, ca_name, ca_key).add_extension(
        x509.BasicConstraints(ca=True, path_length=0), critical=True
    )
    ca_cert = ca.sign(ca_key, hashes.SHA256())
    server_names = [_san(h) for h in dict.fromkeys([*_LOCAL, *hosts])]
    server = _leaf(ca_cert, ca_key, "localhost", ExtendedKeyUsageOID.SERVER_AUTH, server_names)
    client_pair = _leaf(ca_cert, ca_key, client, ExtendedKeyUsageOID.CLIENT_AUTH, [])
    written = [_write_pem(folder / "ca.pem", ca_cert.public_bytes(serialization.Encoding.PEM))]
    for stem, (cert, key) in (("server", server), ("client", client_pair)):
        written.append(_write_pem(folder / f"{stem}.pem", cert))
        written.append(_write_pem(folder / f"{stem}.key", key, private=True))
    return written


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(
    subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
    )


def _leaf(
    ca: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    common_name: str,
    usage: x509.ObjectIdentifier,
    names: list[x509.GeneralName],
) -> tuple[bytes, bytes]:
    """A certificate issued by ``ca`` and its key, both as PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    builder = _builder(_name(common_name), ca.subject, key)
    builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _write_pem(path: Path, data: bytes, private: bool = False) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    return path
