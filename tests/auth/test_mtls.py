"""The verified client certificate's subject (:mod:`ep_server.auth.mtls`)."""

from __future__ import annotations

import pytest

from ep_server.auth import subject_from_auth_context

# What grpcio 1.85 (C core) put in context.auth_context() for the three cases,
# captured from a real aio server (values truncated).
MTLS_CONTEXT = {
    "transport_security_type": [b"ssl"],
    "x509_subject": [b"C=DE,O=Example\\, Inc,CN=alice"],
    "x509_common_name": [b"alice"],
    "x509_pem_cert": [b"-----BEGIN CERTIFICATE-----\nMIIBrDCCAVKgAwIBAgIU..."],
    "x509_subject_alternative_name": [
        b"alice.example.org",
        b"spiffe://example.org/alice",
        b"alice@example.org",
    ],
    "peer_dns": [b"alice.example.org"],
    "peer_uri": [b"spiffe://example.org/alice"],
    "peer_email": [b"alice@example.org"],
    "peer_spiffe_id": [b"spiffe://example.org/alice"],
    "security_level": [b"TSI_PRIVACY_AND_INTEGRITY"],
    "ssl_session_reused": [b"false"],
    "ssl_requested_server_name": [b"localhost"],
    "ssl_tls_version": [b"TLSv1.3"],
}
TLS_WITHOUT_CLIENT_CERT = {
    "transport_security_type": [b"ssl"],
    "security_level": [b"TSI_PRIVACY_AND_INTEGRITY"],
    "ssl_session_reused": [b"false"],
    "ssl_tls_version": [b"TLSv1.3"],
}
INSECURE = {"transport_security_type": [b"insecure"], "security_level": [b"TSI_SECURITY_NONE"]}


def test_subject_of_a_verified_client_certificate() -> None:
    assert subject_from_auth_context(MTLS_CONTEXT) == "C=DE,O=Example\\, Inc,CN=alice"


def test_subject_accepts_any_iterable_of_values() -> None:
    context = {key: tuple(values) for key, values in MTLS_CONTEXT.items()}
    assert subject_from_auth_context(context) == "C=DE,O=Example\\, Inc,CN=alice"


@pytest.mark.parametrize(
    "context",
    [
        {},
        INSECURE,
        TLS_WITHOUT_CLIENT_CERT,
        {**INSECURE, "x509_subject": [b"CN=alice"]},
        {**MTLS_CONTEXT, "transport_security_type": [b"alts"]},
        {**MTLS_CONTEXT, "transport_security_type": [b"ssl", b"insecure"]},
        {**MTLS_CONTEXT, "x509_subject": []},
        {**MTLS_CONTEXT, "x509_subject": [b""]},
        {**MTLS_CONTEXT, "x509_subject": [b"CN=a", b"CN=b"]},
        {**MTLS_CONTEXT, "x509_subject": [b"CN=\xff"]},
    ],
    ids=[
        "empty",
        "insecure",
        "tls-no-client-cert",
        "insecure-with-subject",
        "alts",
        "two-types",
        "no-subject-values",
        "empty-subject",
        "two-subjects",
        "not-utf8",
    ],
)
def test_no_subject(context: dict[str, list[bytes]]) -> None:
    assert subject_from_auth_context(context) is None


def test_subject_is_unicode() -> None:
    context = {**MTLS_CONTEXT, "x509_subject": ["CN=Jürgen,O=Sternwarte".encode()]}
    assert subject_from_auth_context(context) == "CN=Jürgen,O=Sternwarte"
