"""mTLS: the caller is the subject of the client certificate the transport verified.

A call without an ``authorization`` header is that subject
(``method="mtls"``) when the server verifies client certificates
(``[tls].client_ca``). The subject is read from what gRPC tells of the
connection, never from anything the caller sends.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

__all__ = ["subject_from_auth_context", "subject_from_der_certificate"]


def subject_from_auth_context(auth_context: Mapping[str, Iterable[bytes]]) -> str | None:
    """The verified client certificate's subject DN, from ``context.auth_context()``.

    gRPC (C core) fills the auth context of a TLS connection with
    ``transport_security_type = [b"ssl"]`` and, only when the client presented
    a certificate that verified against the server's client CA,
    ``x509_subject`` (the subject DN in RFC 2253 form, most significant RDN
    last, for example ``b"CN=alice,O=Example\\\\, Inc,C=DE"``),
    ``x509_common_name``, ``x509_pem_cert``, ``x509_subject_alternative_name``
    and ``peer_dns``/``peer_uri``/``peer_email``/``peer_spiffe_id``. Python's
    ``ssl_server_credentials`` either requires and verifies a client
    certificate or does not ask for one, so an ``x509_subject`` there was
    verified. Insecure connections say ``transport_security_type = [b"insecure"]``.

    Returns None unless the connection is TLS and exactly one non-empty,
    UTF-8 subject is present (anything else is not an identity to trust).
    """
    if _single(auth_context, "transport_security_type") != b"ssl":
        return None
    raw = _single(auth_context, "x509_subject")
    if not raw:
        return None
    try:
        subject = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return subject if subject.strip() else None


def _single(auth_context: Mapping[str, Iterable[bytes]], key: str) -> bytes | None:
    """The one value of ``key``; None when it has none or several."""
    values = list(auth_context.get(key) or ())
    return values[0] if len(values) == 1 else None


def subject_from_der_certificate(der: bytes) -> str | None:
    """The subject DN of a client certificate (DER) that the HTTP door's TLS
    verified, in the form gRPC gives it in ``x509_subject`` (RFC 2253/4514,
    most significant RDN last), so that one certificate is one identity
    whichever door it comes through. None for an empty subject or a
    certificate that cannot be read."""
    from cryptography import x509

    try:
        subject = x509.load_der_x509_certificate(der).subject.rfc4514_string()
    except ValueError:
        return None
    return subject if subject.strip() else None
