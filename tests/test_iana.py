"""model.iana against two independent sources: tshark's own value tables (``tshark -G values``,
Wireshark 4.0.17) and the values printed in the RFCs that define them.

tshark 4.0.17 predates the newest assignments (16432+ status types, RFC 9370 ...), so tshark
is used for what it knows, and the RFC table below for a sample of well-known values.
"""

from __future__ import annotations

import subprocess
from enum import IntEnum
from functools import cache

import pytest
from conftest import needs_tshark

from ipsecscope.model import iana


@cache
def tshark_values() -> dict[str, list[list[tuple[int, int, str]]]]:
    """field -> list of value tables, each [(lo, hi, name)]; a field can carry several (v1, v2)."""
    out = subprocess.run(["tshark", "-G", "values"], capture_output=True, text=True, check=True).stdout
    tables: dict[str, list[list[tuple[int, int, str]]]] = {}
    last: tuple[str, int] | None = None
    for line in out.splitlines():
        cols = line.split("\t")
        if cols[0] not in ("V", "R") or len(cols) < 4 or not cols[1].startswith("isakmp."):
            continue
        if cols[0] == "R":
            lo, hi, name = int(cols[2]), int(cols[3]), cols[4]
        else:
            lo = hi = int(cols[2])
            name = cols[3]
        field = cols[1]
        # A new table starts whenever the values of a field go back down.
        if last is None or last[0] != field or lo <= last[1]:
            tables.setdefault(field, []).append([])
        tables[field][-1].append((lo, hi, name.strip()))
        last = (field, hi)
    return tables


def table_with(field: str, value: int, name: str) -> list[tuple[int, int, str]]:
    for t in tshark_values()[field]:
        if (value, value, name) in t:
            return t
    raise AssertionError(f"no {field} table with {value} {name}")


def _singles(table: list[tuple[int, int, str]]) -> dict[int, str]:
    return {lo: n for lo, hi, n in table if lo == hi and not n.upper().startswith(("RESERVED", "<UNKNOWN"))}


# Wireshark 4.0.17 names 46 "CHILD_SA_NOT_FOUND" (a copy-paste slip); IANA: AUTHORIZATION_FAILED.
_TSHARK_BUGS = {46}


@needs_tshark
def test_v2_notify_names_match_tshark() -> None:
    t = _singles(table_with("isakmp.notify.msgtype", 1, "UNSUPPORTED_CRITICAL_PAYLOAD"))
    assert len(t) >= 60
    for value, name in t.items():
        if value in _TSHARK_BUGS:
            continue
        assert iana.name(iana.NotifyType, value) == name, value


@needs_tshark
def test_v1_notify_names_match_tshark() -> None:
    t = _singles(table_with("isakmp.notify.msgtype", 1, "INVALID-PAYLOAD-TYPE"))
    for value, name in t.items():
        if name == "UNITY-UNKNOWN":
            continue
        assert iana.name(iana.Ikev1NotifyType, value) == name.replace("-", "_"), value


@pytest.mark.parametrize(("field", "probe", "enum", "prefix"), [
    ("isakmp.exchangetype", (34, "IKE_SA_INIT"), iana.ExchangeType, ""),
    ("isakmp.ts.type", (7, "TS_IPV4_ADDR_RANGE"), iana.TsType, ""),
    ("isakmp.cfg.attr.type", (22, "FTT_KAT"), iana.ConfigAttribute, ""),
    ("isakmp.cfg.attr.type", (16520, "XAUTH_TYPE"), iana.Ikev1ConfigAttribute, ""),
    ("isakmp.id.type", (3, "ID_RFC822_ADDR"), iana.IdType, "ID_"),
    ("isakmp.id.type", (4, "IPV4_ADDR_SUBNET"), iana.Ikev1IdType, "ID_"),
    ("isakmp.prop.protoid", (3, "ESP"), iana.ProtocolId, ""),
    ("isakmp.prop.protoid", (3, "IPSEC_ESP"), iana.Ikev1ProtocolId, "PROTO_"),
])
@needs_tshark
def test_registry_names_match_tshark(field: str, probe: tuple[int, str], enum: type[IntEnum], prefix: str) -> None:
    t = _singles(table_with(field, *probe))
    checked = 0
    for value, name in t.items():
        ours = iana.name(enum, value)
        if value == 0 or name.startswith(("CHKPT_", "KEY_LIST")) or " " in name or \
                name.lower().startswith(("unassigned", "future", "private")):
            continue
        if enum is iana.ExchangeType and value < 34:  # tshark keeps v1 and v2 exchanges in one table
            continue
        # tshark 4.0 prints the IKEv1 registry's names without the "ID_" / "PROTO_" prefix and
        # spells XAUTH_CHALLENGE "CHALLANGE".
        expected = name if name.startswith(prefix) else prefix + name
        expected = expected.replace("CHALLANGE", "CHALLENGE")
        if enum is iana.Ikev1IdType and value == 12:
            continue
        if enum is iana.ConfigAttribute and value in (5, 9, 11):  # RESERVED in RFC 7296, named by us
            continue
        assert ours == expected, (field, value)
        checked += 1
    assert checked >= 3


@needs_tshark
def test_every_tshark_value_known() -> None:
    """Every value tshark 4.0.17 names for these fields has an enum member here too."""
    cases = [
        ("isakmp.ipsec.attr.encap_mode", (61443, "UDP-Encapsulated-Tunnel (draft)"), iana.Ikev1EncapsulationMode,
         {61440}),
        ("isakmp.ipsec.attr.auth_algorithm", (5, "HMAC-SHA2-256"), iana.Ikev1AuthAlgorithm, set()),
        ("isakmp.ipsec.attr.type", (4, "Encapsulation-Mode"), iana.Ikev1IpsecAttribute, set()),
        ("isakmp.ike.attr.type", (12, "Life-Duration"), iana.Ikev1Attribute, {20}),
        ("isakmp.ike.attr.encryption_algorithm", (7, "AES-CBC"), iana.Ikev1EncrAlgorithm, {127, 128, 129}),
        ("isakmp.ike.attr.hash_algorithm", (4, "SHA2-256"), iana.Ikev1HashAlgorithm, {20}),
        ("isakmp.ike.attr.authentication_method", (65001, "XAUTHInitPreShared"), iana.Ikev1AuthMethod, {6, 7, 8}),
        ("isakmp.nextpayload", (130, "NAT-D (draft-ietf-ipsec-nat-t-ike-01 to 03)"), iana.Ikev1Payload, set()),
        ("isakmp.exchangetype", (32, "Quick Mode"), iana.Ikev1Exchange, set(range(34, 39))),
        ("isakmp.auth.method", (14, "Digital Signature"), iana.AuthMethod, set()),
        ("isakmp.cert.encoding", (14, "OCSP Content"), iana.CertEncoding, {5}),
        ("isakmp.notify.data.signature_hash_algorithms", (2, "SHA2-256"), iana.HashAlgorithm, set()),
    ]
    for field, probe, enum, skip in cases:
        t = _singles(table_with(field, *probe))
        for value, name in t.items():
            if value == 0 or value in skip or name.lower().startswith(("unassigned", "private", "future")):
                continue
            if field == "isakmp.nextpayload" and 33 <= value <= 53:  # the IKEv2 half of the table
                continue
            try:
                enum(value)
            except ValueError:
                pytest.fail(f"{enum.__name__} lacks {value} ({name}) that tshark names in {field}")


# RFC 7296 §3.10.1 and the RFCs that added later types, as printed in those documents.
RFC_NOTIFY = {
    1: "UNSUPPORTED_CRITICAL_PAYLOAD", 4: "INVALID_IKE_SPI", 5: "INVALID_MAJOR_VERSION", 7: "INVALID_SYNTAX",
    9: "INVALID_MESSAGE_ID", 11: "INVALID_SPI", 14: "NO_PROPOSAL_CHOSEN", 17: "INVALID_KE_PAYLOAD",
    24: "AUTHENTICATION_FAILED", 34: "SINGLE_PAIR_REQUIRED", 35: "NO_ADDITIONAL_SAS",
    36: "INTERNAL_ADDRESS_FAILURE", 37: "FAILED_CP_REQUIRED", 38: "TS_UNACCEPTABLE", 39: "INVALID_SELECTORS",
    43: "TEMPORARY_FAILURE", 44: "CHILD_SA_NOT_FOUND",
    16384: "INITIAL_CONTACT", 16385: "SET_WINDOW_SIZE", 16386: "ADDITIONAL_TS_POSSIBLE",
    16387: "IPCOMP_SUPPORTED", 16388: "NAT_DETECTION_SOURCE_IP", 16389: "NAT_DETECTION_DESTINATION_IP",
    16390: "COOKIE", 16391: "USE_TRANSPORT_MODE", 16392: "HTTP_CERT_LOOKUP_SUPPORTED", 16393: "REKEY_SA",
    16394: "ESP_TFC_PADDING_NOT_SUPPORTED", 16395: "NON_FIRST_FRAGMENTS_ALSO",
    16396: "MOBIKE_SUPPORTED",  # RFC 4555
    16430: "IKEV2_FRAGMENTATION_SUPPORTED",  # RFC 7383 §4
    16431: "SIGNATURE_HASH_ALGORITHMS",  # RFC 7427 §7
    16435: "USE_PPK", 16436: "PPK_IDENTITY", 16437: "NO_PPK_AUTH",  # RFC 8784 §6
    16438: "INTERMEDIATE_EXCHANGE_SUPPORTED",  # RFC 9242 §8
    16441: "ADDITIONAL_KEY_EXCHANGE",  # RFC 9370 §4
    16442: "USE_AGGFRAG",  # RFC 9347 §7
    16443: "SUPPORTED_AUTH_METHODS",  # RFC 9593 §6
    16444: "SA_RESOURCE_INFO",  # RFC 9611 §6
}


@pytest.mark.parametrize(("value", "name"), sorted(RFC_NOTIFY.items()))
def test_notify_names_match_rfcs(value: int, name: str) -> None:
    assert iana.NotifyType(value).name == name
    assert iana.NotifyType(value).is_error == (value < 16384) == iana.notify_is_error(value)


def test_name_helper_for_unknown_values() -> None:
    assert iana.name(iana.NotifyType, 12345) == "NotifyType 12345"
    assert iana.name(iana.Ikev1Exchange, 2) == "IDENTITY_PROTECTION"  # primary name, not the alias
    assert iana.Ikev1Exchange.MAIN_MODE is iana.Ikev1Exchange.IDENTITY_PROTECTION


def test_private_use_transforms_have_names():
    """Twofish, Serpent (strongSwan's private IDs) and RIPEMD-160 are named wherever a
    transform is printed, not "EncrTransform 1027" (issue 11, public captures)."""
    from ipsecscope.model import iana

    assert iana.name(iana.EncrTransform, iana.ENCR_TWOFISH_CBC) == "ENCR_TWOFISH_CBC" == iana.name(
        iana.EncrTransform, 1027)
    assert iana.name(iana.EncrTransform, 1026) == "ENCR_SERPENT_CBC"
    assert iana.name(iana.IntegTransform, 1100) == "AUTH_HMAC_RIPEMD160_96"
    assert iana.name(iana.EncrTransform, 1030) == "EncrTransform 1030"  # still says what it is


def test_twofish_key_is_named_in_findings(tmp_path):
    """A Twofish key for a real sample's SPI: the finding that it cannot be used names it."""
    import subprocess

    from conftest import IPSECSCOPE, ROOT, SAMPLES

    row = next(ln for ln in (SAMPLES / "healthy-gcm" / "keys" / "esp_sa").read_text().splitlines()
               if not ln.startswith("#")).split(",")
    row[4:8] = ['"TWOFISH-CBC"', '"0x0102030405060708090a0b0c0d0e0f10"', '"HMAC-SHA-256-128 [RFC4868]"',
                '"0x' + "11" * 32 + '"']
    (tmp_path / "esp_sa").write_text(",".join(row) + "\n")
    r = subprocess.run([*IPSECSCOPE, "findings", str(SAMPLES / "healthy-gcm" / "capture.pcapng"), "-k",
                        str(tmp_path / "esp_sa"), "--json"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    text = r.stdout
    assert "ENCR_TWOFISH_CBC" in text and "EncrTransform 1027" not in text
