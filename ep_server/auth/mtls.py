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
    verified, in the form gRPC gives it in ``x509_subject`` (OpenSSL's
    RFC 2253 printing, most significant RDN last: ``emailAddress=`` and
    ``GN=``, not RFC 4514's dotted OIDs; ``Zo\\C3\\AB``, not ``Zoë``), so
    that one certificate is one identity whichever door it comes through.
    None for an empty subject or a certificate that cannot be read."""
    from cryptography import x509

    try:
        subject = _subject_text(x509.load_der_x509_certificate(der).tbs_certificate_bytes)
    except (ValueError, IndexError):  # UnicodeDecodeError is a ValueError
        return None
    return subject if subject.strip() else None


# --- A certificate's subject as gRPC gives it --------------------------------------

#: The short names BoringSSL (gRPC's TLS) writes for attribute types, by
#: arc: "number:name" pairs. An attribute of any other type is written as
#: its dotted OID and its DER value in hex ("1.2.3.4=#0C026869"). Read off
#: grpcio's own ``x509_subject``s (tests/http/test_pipeline.py checks them).
_SHORT_NAME_ARCS = (
    (
        "2.5.4.",
        "3:CN 4:SN 5:serialNumber 6:C 7:L 8:ST 9:street 10:O 11:OU 12:title 13:description "
        "14:searchGuide 15:businessCategory 16:postalAddress 17:postalCode 18:postOfficeBox "
        "19:physicalDeliveryOfficeName 20:telephoneNumber 21:telexNumber "
        "22:teletexTerminalIdentifier 23:facsimileTelephoneNumber 24:x121Address "
        "25:internationaliSDNNumber 26:registeredAddress 27:destinationIndicator "
        "28:preferredDeliveryMethod 29:presentationAddress 30:supportedApplicationContext "
        "31:member 32:owner 33:roleOccupant 34:seeAlso 35:userPassword 36:userCertificate "
        "37:cACertificate 38:authorityRevocationList 39:certificateRevocationList "
        "40:crossCertificatePair 41:name 42:GN 43:initials 44:generationQualifier "
        "45:x500UniqueIdentifier 46:dnQualifier 47:enhancedSearchGuide 48:protocolInformation "
        "49:distinguishedName 50:uniqueMember 51:houseIdentifier 52:supportedAlgorithms "
        "53:deltaRevocationList 54:dmdName 65:pseudonym 72:role",
    ),
    (
        "0.9.2342.19200300.100.1.",
        "1:UID 2:textEncodedORAddress 3:mail 4:info 5:favouriteDrink 6:roomNumber 7:photo "
        "8:userClass 9:host 10:manager 11:documentIdentifier 12:documentTitle "
        "13:documentVersion 14:documentAuthor 15:documentLocation 20:homeTelephoneNumber "
        "21:secretary 22:otherMailbox 23:lastModifiedTime 24:lastModifiedBy 25:DC 26:aRecord "
        "27:pilotAttributeType27 28:mXRecord 29:nSRecord 30:sOARecord 31:cNAMERecord "
        "37:associatedDomain 38:associatedName 39:homePostalAddress 40:personalTitle "
        "41:mobileTelephoneNumber 42:pagerTelephoneNumber 43:friendlyCountryName "
        "45:organizationalStatus 46:janetMailbox 47:mailPreferenceOption 48:buildingName "
        "49:dSAQuality 50:singleLevelQuality 51:subtreeMinimumQuality "
        "52:subtreeMaximumQuality 53:personalSignature 54:dITRedirect 55:audio "
        "56:documentPublisher",
    ),
    (
        "1.2.840.113549.1.9.",
        "1:emailAddress 2:unstructuredName 3:contentType 4:messageDigest 5:signingTime "
        "6:countersignature 7:challengePassword 8:unstructuredAddress "
        "9:extendedCertificateAttributes 14:extReq 15:SMIME-CAPS 16:SMIME 20:friendlyName "
        "21:localKeyID",
    ),
)
_SHORT_NAMES = {
    arc + number: name
    for arc, pairs in _SHORT_NAME_ARCS
    for number, _, name in (pair.partition(":") for pair in pairs.split())
}
#: How many bytes a character takes in each string type BoringSSL prints
#: (0: UTF-8); a value of another type is written as DER in hex.
_CHAR_BYTES = {12: 0, 18: 1, 19: 1, 20: 1, 22: 1, 23: 1, 24: 1, 26: 1, 28: 4, 30: 2}
_CODEC = {0: "utf-8", 1: "latin-1", 2: "utf-16-be", 4: "utf-32-be"}
_SPECIAL = frozenset(b',+"\\<>;')


def _der(data: bytes, at: int) -> tuple[int, int, int]:
    """The DER element at ``at`` in ``data``: (tag, start of its content, end)."""
    tag, length, at = data[at], data[at + 1], at + 2
    if tag & 0x1F == 0x1F:
        raise ValueError("a tag of more than one byte")
    if length & 0x80:
        size = length & 0x7F
        if not 1 <= size <= 4:
            raise ValueError("a length of more than 4 bytes")
        length, at = int.from_bytes(data[at : at + size], "big"), at + size
    if at + length > len(data):
        raise ValueError("an element longer than its container")
    return tag, at, at + length


def _children(data: bytes, start: int, end: int) -> list[tuple[int, int, int, int]]:
    """The elements inside ``data[start:end]``: (tag, start, content start, end)."""
    found = []
    while start < end:
        tag, content, stop = _der(data, start)
        found.append((tag, start, content, stop))
        start = stop
    return found


def _oid(value: bytes) -> str:
    numbers, n = [], 0
    for byte in value:
        n = n << 7 | byte & 0x7F
        if not byte & 0x80:
            numbers.append(n)
            n = 0
    first = min(numbers[0] // 40, 2)
    return ".".join(map(str, [first, numbers[0] - 40 * first, *numbers[1:]]))


def _escaped(text: str) -> str:
    """An attribute value escaped as OpenSSL's ``ASN1_STRFLGS_RFC2253``
    does: RFC 2253's specials with a backslash, and control characters and
    every byte of a non-ASCII character's UTF-8 as ``\\XX``."""
    data = text.encode("utf-8")
    out = []
    for i, byte in enumerate(data):
        if byte < 0x20 or byte >= 0x7F:
            out.append(f"\\{byte:02X}")
        elif (
            byte in _SPECIAL or (i == 0 and byte in b"# ") or (i == len(data) - 1 and byte == 0x20)
        ):
            out.append("\\" + chr(byte))
        else:
            out.append(chr(byte))
    return "".join(out)


def _subject_text(tbs: bytes) -> str:
    """The subject of a TBSCertificate (DER) as BoringSSL's
    ``X509_NAME_print_ex(..., XN_FLAG_RFC2253)`` writes it, which is what
    gRPC gives as ``x509_subject``: the RDNs last first, separated by ","
    (and the attributes of one RDN, also last first, by "+")."""
    _, start, end = _der(tbs, 0)
    fields = _children(tbs, start, end)
    if fields and fields[0][0] == 0xA0:  # [0] version
        fields = fields[1:]
    _, _, name_start, name_end = fields[4]  # serial, signature, issuer, validity, subject
    rdns = []
    for _, _, set_start, set_end in _children(tbs, name_start, name_end):
        attributes = []
        for _, _, seq_start, seq_end in _children(tbs, set_start, set_end):
            (_, _, oid_start, oid_end), (tag, whole, value, stop) = _children(
                tbs, seq_start, seq_end
            )
            oid = _oid(tbs[oid_start:oid_end])
            name = _SHORT_NAMES.get(oid)
            if name is None or tag not in _CHAR_BYTES:
                attributes.append(f"{name or oid}=#{tbs[whole:stop].hex().upper()}")
            else:
                text = tbs[value:stop].decode(_CODEC[_CHAR_BYTES[tag]])
                attributes.append(f"{name}={_escaped(text)}")
        rdns.append("+".join(reversed(attributes)))
    return ",".join(reversed(rdns))
