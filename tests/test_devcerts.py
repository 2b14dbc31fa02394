"""``ep-server dev-certs``: a throwaway CA, server and client certificate."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from ep_server.cli import main
from ep_server.devcerts import FILES, make_dev_certs


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_the_server_certificate_names_this_machine_and_more(tmp_path: Path) -> None:
    make_dev_certs(tmp_path, ["ep.example.org", "10.0.0.7"])
    san = _cert(tmp_path / "server.pem").extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    assert san.value.get_values_for_type(x509.DNSName) == ["localhost", "ep.example.org"]
    assert san.value.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address(a) for a in ("127.0.0.1", "::1", "10.0.0.7")
    ]


def test_both_certificates_are_issued_by_the_ca_for_their_use(tmp_path: Path) -> None:
    make_dev_certs(tmp_path, client="alice")
    ca = _cert(tmp_path / "ca.pem")
    for stem, usage in (("server", "SERVER_AUTH"), ("client", "CLIENT_AUTH")):
        cert = _cert(tmp_path / f"{stem}.pem")
        cert.verify_directly_issued_by(ca)
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert list(eku) == [getattr(ExtendedKeyUsageOID, usage)]
    assert "CN=alice" in _cert(tmp_path / "client.pem").subject.rfc4514_string()


def test_keys_are_private_and_the_ca_key_is_not_kept(tmp_path: Path) -> None:
    written = make_dev_certs(tmp_path / "new")
    assert [p.name for p in written] == list(FILES)
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == sorted(FILES)
    for key in ("server.key", "client.key"):
        assert stat.S_IMODE((tmp_path / "new" / key).stat().st_mode) == 0o600


def test_the_command_refuses_to_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["dev-certs", str(tmp_path)]) == 0
    before = (tmp_path / "ca.pem").read_bytes()
    assert main(["dev-certs", str(tmp_path)]) == 1
    assert "ca.pem exists; choose an empty folder" in capsys.readouterr().err
    assert (tmp_path / "ca.pem").read_bytes() == before
