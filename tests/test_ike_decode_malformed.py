"""Bad and unusual IKE input: real messages from the corpus, damaged in known ways, plus fuzzing.

The rule under test (RFC-independent, ours): parse_ike / parse_payload_chain never raise; a fault
stops the walk with a one-line reason that names the payload and the numbers, and everything
decoded before the fault is kept unchanged.

The synthetic messages at the end carry payloads the corpus has in clear nowhere (TS with IPv6,
CP, EAP, Delete with ESP SPIs, SKF, DN identities); they are written to a pcap and tshark is
the oracle for what they contain.
"""

from __future__ import annotations

import ipaddress
import struct
import subprocess
from pathlib import Path

import pytest
from conftest import CORPUS, ike_messages, needs_tshark
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_ike_decode import FIELDS, _hexnorm, messages, tshark_fields

from ipsecscope.decode.ike import parse_ike, parse_payload_chain
from ipsecscope.model import iana
from ipsecscope.model.ike import (
    CpPayload,
    DeletePayload,
    EapPayload,
    IdPayload,
    NotifyPayload,
    Payload,
    SaPayload,
    SkPayload,
    TsPayload,
)
from ipsecscope.model.packets import IkeDatagram


def dgram(data: bytes, frame: int = 1) -> IkeDatagram:
    return IkeDatagram(frame, 0.0, "198.18.0.1", "198.18.0.2", 500, 500, data)


def parse(data: bytes):
    return parse_ike(dgram(data))


def raw_of(name: str, frame: int) -> bytes:
    return next(m.raw for m in messages(name) if m.frame == frame)


V2_INIT = ("ikev2-decrypt-aes256cbc.pcapng", 1)  # SA KE Nonce N N N
V2_AUTH = ("ikev2-decrypt-aes256gcm16.pcap", 3)  # SK
V1_AGGR = ("ikev1-bug-12620.pcapng.gz", 1)  # SA KE Nonce ID VID x8
V1_MAIN = ("ikev1-bug-12610.pcapng.gz", 3)  # KE Nonce NAT-D NAT-D
REAL = [V2_INIT, V2_AUTH, V1_AGGR, V1_MAIN]


def offsets(raw: bytes) -> list[int]:
    """Offsets of the generic payload headers, walked independently of the decoder."""
    out, off, np = [], 28, raw[16]
    while np and off + 4 <= len(raw):
        out.append(off)
        np = raw[off]
        off += struct.unpack_from("!H", raw, off + 2)[0]
    return out


def set_u16(raw: bytes, off: int, value: int) -> bytes:
    return raw[:off] + struct.pack("!H", value) + raw[off + 2:]


def set_u8(raw: bytes, off: int, value: int) -> bytes:
    return raw[:off] + bytes([value]) + raw[off + 1:]


# ---- truncation -------------------------------------------------------------------------------


@pytest.mark.parametrize("src", REAL, ids=lambda s: f"{s[0]}#{s[1]}")
def test_every_truncation_keeps_a_prefix(src: tuple[str, int]) -> None:
    raw = raw_of(*src)
    full = parse(raw)
    assert full.malformed is None
    for n in range(len(raw)):
        m = parse(raw[:n])
        assert m.malformed, n
        if n < 28:
            assert m.malformed == f"IKE header truncated ({n} of 28 bytes)"
            assert m.payloads == ()
        else:
            assert m.payloads == full.payloads[: len(m.payloads)], n
            assert m.malformed == f"IKE header length {len(raw)} exceeds datagram ({n} bytes)"


def test_truncation_reason_names_the_payload() -> None:
    raw = raw_of(*V2_INIT)
    offs = offsets(raw)
    # Cut inside the third payload (Nonce) and make the header agree with the cut, so the only
    # fault is the Nonce's own length.
    cut = offs[2] + 10
    m = parse(raw[:16] + raw[16:24] + struct.pack("!I", cut) + raw[28:cut])
    nlen = struct.unpack_from("!H", raw, offs[2] + 2)[0]
    assert m.malformed == f"payload 3 (NONCE) length {nlen} exceeds message (10 bytes left)"
    assert [p.type for p in m.payloads] == [33, 34]


# ---- corrupted lengths ------------------------------------------------------------------------


@pytest.mark.parametrize("src", REAL, ids=lambda s: f"{s[0]}#{s[1]}")
def test_payload_length_too_big(src: tuple[str, int]) -> None:
    raw = raw_of(*src)
    full = parse(raw)
    offs = offsets(raw)
    k = len(offs) - 1 if len(offs) > 1 else 0
    left = len(raw) - offs[k]
    m = parse(set_u16(raw, offs[k] + 2, left + 100))
    name = m.malformed.split("(")[1].split(")")[0]
    assert m.malformed == f"payload {k + 1} ({name}) length {left + 100} exceeds message ({left} bytes left)"
    if not full.header.encrypted_v1:
        assert m.payloads == full.payloads[:k]


@pytest.mark.parametrize("src", [V2_INIT, V1_AGGR], ids=lambda s: s[0])
def test_payload_length_below_header(src: tuple[str, int]) -> None:
    raw = raw_of(*src)
    offs = offsets(raw)
    m = parse(set_u16(raw, offs[1] + 2, 2))
    assert m.malformed == "payload 2 (KE) length 2 is below the 4-byte header"
    assert len(m.payloads) == 1


def test_bad_proposal_length_keeps_going() -> None:
    raw = raw_of(*V2_INIT)
    full = parse(raw)
    offs = offsets(raw)
    m = parse(set_u16(raw, offs[0] + 4 + 2, 999))  # proposal 1 length
    assert m.malformed.startswith("payload 1 (SA): proposal 1 length 999 invalid")
    assert isinstance(m.payloads[0], Payload) and m.payloads[0].type == 33
    assert m.payloads[1:] == full.payloads[1:]  # the chain itself is intact


def test_transform_count_mismatch() -> None:
    raw = raw_of(*V1_AGGR)
    offs = offsets(raw)
    m = parse(set_u8(raw, offs[0] + 4 + 8 + 7, 13))  # SA(4) DOI/sit(8), #transforms is byte 7
    assert m.malformed == "payload 1 (SA): proposal 1 declares 13 transforms, has 12"
    assert len(m.payloads) == len(parse(raw).payloads)


def test_bad_attribute_length() -> None:
    raw = raw_of(*V2_INIT)
    offs = offsets(raw)
    # Transform 1 of proposal 1 has a TV key-length attribute; turn it into a TLV of 300 bytes.
    a = offs[0] + 4 + 8 + 8
    assert raw[a:a + 2] == b"\x80\x0e"
    m = parse(raw[:a] + b"\x00\x0e\x01\x2c" + raw[a + 4:])
    assert m.malformed == ("payload 1 (SA): proposal 1 transform 1: attribute 14 length 300 exceeds transform "
                           "(0 bytes left)")


# ---- unknown payloads, critical bit, header faults --------------------------------------------


def test_unknown_payload_type_kept_raw() -> None:
    raw = raw_of(*V2_INIT)
    full = parse(raw)
    offs = offsets(raw)
    m = parse(set_u8(raw, offs[1], 99))  # KE's next-payload: the Nonce becomes "type 99"
    assert m.malformed is None
    p = m.payloads[2]
    assert isinstance(p, Payload) and p.type == 99 and not p.critical
    assert p.body == full.payloads[2].data
    assert m.payloads[3:] == full.payloads[3:]
    m2 = parse(set_u8(set_u8(raw, offs[1], 99), offs[2] + 1, 0x80))
    assert m2.payloads[2].critical and m2.malformed is None


def test_critical_bit_on_known_payload() -> None:
    raw = raw_of(*V2_INIT)
    m = parse(set_u8(raw, offsets(raw)[1] + 1, 0x80))
    assert m.payloads[1].critical and m.payloads[1].group == 19


def test_header_faults() -> None:
    raw = raw_of(*V2_INIT)
    assert parse(raw[:10]).malformed == "IKE header truncated (10 of 28 bytes)"
    assert parse(set_u8(raw, 17, 0x30)).malformed == "unsupported IKE major version 3"
    assert parse(raw[:24] + struct.pack("!I", 20) + raw[28:]).malformed == \
        "IKE header length 20 is below the 28-byte header"
    # Bytes after the declared length are not part of the message.
    extra = parse(raw + b"\x00" * 7)
    assert extra.malformed is None and extra.payloads == parse(raw).payloads and extra.raw == raw
    # Bytes inside the declared length but after the last payload are.
    longer = raw[:24] + struct.pack("!I", len(raw) + 4) + raw[28:] + b"\0" * 4
    assert parse(longer).malformed == "4 bytes after the last payload"


def test_ikev1_padding_after_decrypted_chain_is_accepted() -> None:
    raw = raw_of(*V1_MAIN)
    ps, bad = parse_payload_chain(raw[16], raw[28:] + b"\0" * 7, 1, 28)
    assert bad is None and ps == parse(raw).payloads


def test_payload_chain_v2_matches_message() -> None:
    raw = raw_of(*V2_INIT)
    ps, bad = parse_payload_chain(raw[16], raw[28:], 2, 28)
    assert bad is None and ps == parse(raw).payloads
    ps, bad = parse_payload_chain(33, b"", 2)
    assert ps == () and bad == "payload 1 (SA) missing: message ends after payload 0"


def test_datagram_fields_copied() -> None:
    d = IkeDatagram(7, 1.5, "2001:db8::1", "2001:db8::2", 4500, 4501, raw_of(*V2_INIT), transport="tcp",
                    non_esp_marker=True, ip_fragmented=True, ip_version=6)
    m = parse_ike(d)
    assert (m.frame, m.ts, m.src, m.dst, m.sport, m.dport) == (7, 1.5, "2001:db8::1", "2001:db8::2", 4500, 4501)
    assert (m.transport, m.non_esp_marker, m.ip_fragmented) == ("tcp", True, True)


# ---- fuzzing ----------------------------------------------------------------------------------

_FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_FUZZ
@given(st.binary(max_size=300))
def test_fuzz_random_bytes(data: bytes) -> None:
    m = parse(data)
    assert m.malformed is None or not m.malformed.startswith("internal")
    assert "\n" not in (m.malformed or "")


@_FUZZ
@given(st.sampled_from(REAL), st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)), max_size=6))
def test_fuzz_mutated_real_messages(src: tuple[str, int], flips: list[tuple[int, int]]) -> None:
    b = bytearray(raw_of(*src))
    for pos, val in flips:
        b[pos % len(b)] = val
    m = parse(bytes(b))
    assert m.malformed is None or not m.malformed.startswith("internal"), m.malformed


@_FUZZ
@given(st.integers(0, 255), st.binary(max_size=400), st.sampled_from([1, 2]))
def test_fuzz_payload_chain(first: int, data: bytes, version: int) -> None:
    ps, bad = parse_payload_chain(first, data, version)
    assert bad is None or not bad.startswith("internal"), bad


@_FUZZ
@given(st.sampled_from([33, 35, 37, 39, 41, 42, 43, 44, 47, 48, 53]), st.binary(max_size=120))
def test_fuzz_every_v2_payload_body(ptype: int, body: bytes) -> None:
    data = bytes([0, 0]) + struct.pack("!H", len(body) + 4) + body
    ps, bad = parse_payload_chain(ptype, data, 2)
    assert len(ps) == 1 and (bad is None or not bad.startswith("internal")), bad


@_FUZZ
@given(st.sampled_from([1, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 20, 21, 130, 131]), st.binary(max_size=120))
def test_fuzz_every_v1_payload_body(ptype: int, body: bytes) -> None:
    data = bytes([0, 0]) + struct.pack("!H", len(body) + 4) + body
    ps, bad = parse_payload_chain(ptype, data, 1)
    assert len(ps) == 1 and (bad is None or not bad.startswith("internal")), bad


# ---- synthetic payloads, checked by tshark ------------------------------------------------------


def gen(np: int, body: bytes, flags: int = 0) -> bytes:
    return struct.pack("!BBH", np, flags, len(body) + 4) + body


def chain(payloads: list[tuple[int, bytes]]) -> tuple[int, bytes]:
    """[(type, body)] -> (first type, bytes) with each next-payload field filled in."""
    out = b""
    for i, (_t, body) in enumerate(payloads):
        nxt = payloads[i + 1][0] if i + 1 < len(payloads) else 0
        out += gen(nxt, body)
    return payloads[0][0], out


def v2_message(payloads: list[tuple[int, bytes]], exch: int = 36, msg_id: int = 5) -> bytes:
    first, body = chain(payloads)
    return struct.pack("!8s8sBBBBII", b"\x11" * 8, b"\x22" * 8, first, 0x20, exch, 0x08, msg_id, 28 + len(body)) + body


def ts_v4(proto: int, sp: int, ep: int, a: str, b: str) -> bytes:
    return struct.pack("!BBHHH", 7, proto, 16, sp, ep) + ipaddress.IPv4Address(a).packed + ipaddress.IPv4Address(b).packed


def ts_v6(proto: int, sp: int, ep: int, a: str, b: str) -> bytes:
    return struct.pack("!BBHHH", 8, proto, 40, sp, ep) + ipaddress.IPv6Address(a).packed + ipaddress.IPv6Address(b).packed


def cp_attr(t: int, v: bytes) -> bytes:
    return struct.pack("!HH", t, len(v)) + v


# A DER Name "C=CH, O=strongSwan, CN=moon.strongswan.org" from a real strongSwan test certificate
# layout (SEQUENCE OF SET OF SEQUENCE {OID, PrintableString/UTF8String}).
def _der(tag: int, content: bytes) -> bytes:
    assert len(content) < 128
    return bytes([tag, len(content)]) + content


def _rdn(oid: bytes, tag: int, text: str) -> bytes:
    return _der(0x31, _der(0x30, _der(0x06, oid) + _der(tag, text.encode())))


DN = _der(0x30, _rdn(b"\x55\x04\x06", 0x13, "CH") + _rdn(b"\x55\x04\x0a", 0x0C, "strongSwan")
          + _rdn(b"\x55\x04\x03", 0x0C, "moon.strongswan.org"))

SYNTH = [
    v2_message([
        (41, struct.pack("!BBH", 3, 4, 16393) + bytes.fromhex("c0ffee01")),  # REKEY_SA
        (40, b"N" * 32),
        (44, struct.pack("!B3x", 3) + ts_v4(6, 443, 443, "10.1.0.0", "10.1.255.255")
         + ts_v6(0, 0, 65535, "2001:db8::", "2001:db8::ffff") + ts_v4(17, 500, 4500, "198.18.0.1", "198.18.0.1")),
        (45, struct.pack("!B3x", 1) + ts_v6(58, 0, 65535, "::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")),
        (42, struct.pack("!BBH", 3, 4, 2) + bytes.fromhex("1122334455667788")),
        (47, struct.pack("!B3x", 1) + cp_attr(1, b"") + cp_attr(3, b"") + cp_attr(8, b"")),
        (41, struct.pack("!BBH", 0, 0, 17) + struct.pack("!H", 31)),  # INVALID_KE_PAYLOAD -> curve25519
        (41, struct.pack("!BBH", 0, 0, 16430)),  # IKEV2_FRAGMENTATION_SUPPORTED
        (43, bytes.fromhex("882fe56d6fd20dbc2251613b2ebe5beb")),  # strongSwan
    ]),
    v2_message([
        (35, struct.pack("!B3x", 9) + DN),
        (48, struct.pack("!BBHB", 2, 7, 5 + 12, 1) + b"carol@sw.org"),  # EAP Response/Identity
        (47, struct.pack("!B3x", 2) + cp_attr(1, bytes([10, 3, 0, 1])) + cp_attr(3, bytes([8, 8, 8, 8]))),
    ], exch=35, msg_id=1),
    v2_message([(53, struct.pack("!HH", 2, 3) + b"\x00" * 40)], exch=35, msg_id=2),  # SKF 2/3
]


@pytest.fixture(scope="module")
def synth_pcap(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from scapy.all import IP, UDP, Raw, wrpcap

    p = tmp_path_factory.mktemp("synth") / "synth.pcap"
    wrpcap(str(p), [IP(src="198.18.0.1", dst="198.18.0.2") / UDP(sport=500, dport=500) / Raw(m) for m in SYNTH])
    return p


@needs_tshark
def test_synthetic_payloads_match_tshark(synth_pcap: Path) -> None:
    rows = tshark_fields(synth_pcap, None)
    msgs = ike_messages(synth_pcap)
    assert [m.frame for m in msgs] == sorted(rows) == [1, 2, 3]
    for m in msgs:
        assert m.malformed is None, m.malformed
        for field, fn in FIELDS.items():
            assert fn(list(m.payloads)) == _hexnorm(field, rows[m.frame][field]), (m.frame, field)
    out = subprocess.run(["tshark", "-r", str(synth_pcap), "-T", "fields", "-e", "isakmp.frag.number",
                          "-e", "isakmp.frag.total", "-e", "isakmp.id.data.der_asn1_dn"],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[2].split("\t")[:2] == ["2", "3"]
    skf = msgs[2].payloads[0]
    assert isinstance(skf, SkPayload) and (skf.fragment_number, skf.total_fragments) == (2, 3)
    assert skf.offset == 28 and len(skf.body) == 40 and skf.first_payload == 0


def test_synthetic_payloads_decoded() -> None:
    m1, m2, _m3 = (parse(x) for x in SYNTH)
    n = {p.notify_type: p for p in m1.payloads if isinstance(p, NotifyPayload)}
    assert n[iana.NotifyType.REKEY_SA].decoded == {"spi": 0xC0FFEE01}
    assert n[iana.NotifyType.INVALID_KE_PAYLOAD].decoded == {"group": 31, "group_name": "CURVE25519"}
    assert n[iana.NotifyType.IKEV2_FRAGMENTATION_SUPPORTED].decoded == {"supported": True}
    tsi, tsr = (p for p in m1.payloads if isinstance(p, TsPayload))
    assert [str(s) for s in tsi.selectors] == ["10.1.0.0-10.1.255.255[6:443]", "2001:db8::-2001:db8::ffff",
                                               "198.18.0.1[17:500-4500]"]
    assert str(tsr.selectors[0]) == "::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff[58]"
    (d,) = (p for p in m1.payloads if isinstance(p, DeletePayload))
    assert d.protocol == 3 and d.spis == (bytes.fromhex("11223344"), bytes.fromhex("55667788"))
    (v,) = (p for p in m1.payloads if p.type == 43)
    assert v.name == "strongSwan"
    idp = m2.payloads[0]
    assert isinstance(idp, IdPayload) and idp.value == "C=CH, O=strongSwan, CN=moon.strongswan.org"
    eap = m2.payloads[1]
    assert isinstance(eap, EapPayload) and (eap.code, eap.identifier, eap.eap_type, eap.data) == (
        2, 7, 1, b"carol@sw.org")
    cp = m2.payloads[2]
    assert isinstance(cp, CpPayload) and cp.cfg_type == 2 and cp.attributes[0] == (1, bytes([10, 3, 0, 1]))


def test_dn_text_matches_cryptography() -> None:
    from cryptography import x509

    from ipsecscope.decode.ike import dn_to_text

    name = x509.Name.from_rfc4514_string("CN=moon.strongswan.org,O=strongSwan,C=CH")
    # cryptography prints most-specific first (RFC 4514); we print in DER order like strongSwan.
    assert dn_to_text(name.public_bytes()) == "C=CH, O=strongSwan, CN=moon.strongswan.org"
    assert dn_to_text(DN) == "C=CH, O=strongSwan, CN=moon.strongswan.org"
    assert dn_to_text(b"\x30\x05garbage") is None


def test_sa_payload_types_in_real_data() -> None:
    sa = next(p for p in parse(raw_of(*V2_INIT)).payloads if isinstance(p, SaPayload))
    assert [(t.type, t.id, t.key_length) for t in sa.proposals[0].transforms] == [
        (1, 12, 256), (3, 12, None), (2, 5, None), (4, 19, None)]
    assert CORPUS.is_dir()
