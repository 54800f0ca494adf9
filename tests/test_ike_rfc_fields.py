"""IKEv2 payloads that parse but contradict RFC 7296 (or the RFC their registry entry names) mark
their message malformed, visibly and counted, without losing the rest of the decode; a traffic
selector payload that breaks a rule gives the CHILD SA no selectors from it.

Built from samples/healthy-gcm: the IKE_SA_INIT pair (frames 1-2, clear text) with one field of
an SA or Notify changed, and IKE_AUTH / CREATE_CHILD_SA messages (frames 4, 11) decrypted with the
sample's keys, one TS / SA / Notify field changed, and encrypted again (AES-GCM-256) so they pass
their ICV. tshark 4.0 is the oracle for what still decodes: it shows every such payload."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import SAMPLES, needs_tshark
from test_ike_delete_fields import _reseal

from ipsecscope.capture import open_capture
from ipsecscope.decode.ike import parse_ike
from ipsecscope.model import iana
from ipsecscope.model.ike import SaPayload
from ipsecscope.model.packets import IkeDatagram

sys.path.insert(0, str(SAMPLES / "synthetic"))
from espgen import PcapWriter, with_udp_payload  # noqa: E402

SAMPLE = SAMPLES / "healthy-gcm"
KEYS = SAMPLE / "keys"
SA, N, TSI, TSR = 33, 41, 44, 45
Body = bytearray


def _walk(first: int, chain: bytes, ptype: int, edit: Callable[[Body], Body | None], nth: int = 1) -> bytes:
    """``chain`` (IKEv2 generic payloads) with the ``nth`` payload of ``ptype`` passed through
    ``edit`` (its body, after the 4-byte generic header); its length follows."""
    nxt, off, out, seen = first, 0, bytearray(), 0
    while nxt:
        n2, flags, ln = struct.unpack_from("!BBH", chain, off)
        body = Body(chain[off + 4:off + ln])
        if nxt == ptype:
            seen += 1
            if seen == nth:
                body = edit(body) or body
        out += struct.pack("!BBH", n2, flags, 4 + len(body)) + body
        off, nxt = off + ln, n2
    assert seen >= nth, f"payload {ptype} #{nth} not found"
    return bytes(out) + chain[off:]


def _clear(frame: bytes, ptype: int, edit, nth: int = 1) -> bytes:
    """An IKE_SA_INIT frame (UDP 500, no marker) with one payload edited; outer lengths follow."""
    ihl = (frame[14] & 15) * 4
    at = 14 + ihl + 8
    ike = frame[at:]
    out = bytearray(ike[:28]) + _walk(ike[16], ike[28:], ptype, edit, nth)
    struct.pack_into("!I", out, 24, len(out))
    return with_udp_payload(frame, bytes(out))


def _sealed(frame: bytes, ptype: int, edit, nth: int = 1) -> bytes:
    """An SK-only frame (UDP 4500) with one inner payload edited and encrypted again."""
    first = frame[14 + (frame[14] & 15) * 4 + 8 + 4 + 28]  # SK's next payload: the first inner one
    return _reseal(frame, lambda inner: _walk(first, inner, ptype, edit, nth))


def _set(off: int, value: int, fmt: str = "!B"):
    def edit(b: Body) -> Body:
        struct.pack_into(fmt, b, off, value)
        return b
    return edit


def _second_proposal(num: int):
    """The SA's one proposal followed by a copy numbered ``num`` (Last Substruc set right)."""
    def edit(b: Body) -> Body:
        b[0] = 2
        copy = Body(b)
        copy[0], copy[4] = 0, num
        return b + copy
    return edit


def _notify_data(ntype: int, data: bytes):
    def edit(b: Body) -> Body | None:
        if struct.unpack_from("!H", b, 2)[0] != ntype:
            return None
        return b[:4 + b[1]] + data
    return edit


def _ts0_ports(start: int, end: int, proto: int = 6):
    def edit(b: Body) -> Body:
        b[5] = proto  # selector 1: type, protocol, length, start port, end port
        struct.pack_into("!HH", b, 8, start, end)
        return b
    return edit


def _ts0_swap_addresses(b: Body) -> Body:
    b[12:16], b[16:20] = b[16:20], b[12:16]
    return b


def _rekey_spi_size(b: Body) -> Body:  # REKEY_SA (the first notify of frame 11) with a 3-byte SPI
    assert struct.unpack_from("!H", b, 2)[0] == 16393
    b[1] = 3
    return b[:7] + b[8:]


def _as_notify(ntype: int, data: bytes):
    """The payload (a Notify) turned into notify ``ntype`` with ``data``, no SPI."""
    def edit(b: Body) -> Body:
        return Body(struct.pack("!BBH", 0, 0, ntype)) + data
    return edit


def _spi_size(size: int):
    """The SA's first proposal with an SPI of ``size`` bytes (zeros padded or cut); length follows."""
    def edit(b: Body) -> Body:
        old = b[6]
        out = b[:6] + bytes([size]) + b[7:8] + (b[8:8 + old] + bytes(size))[:size] + b[8 + old:]
        struct.pack_into("!H", out, 2, struct.unpack_from("!H", b, 2)[0] + size - old)
        return out
    return edit


def _last_transform_flag(value: int):
    def edit(b: Body) -> Body:
        off, end = 8 + b[6], struct.unpack_from("!H", b, 2)[0]
        while off + struct.unpack_from("!H", b, off + 2)[0] < end:
            off += struct.unpack_from("!H", b, off + 2)[0]
        b[off] = value
        return b
    return edit


def _transforms(b: Body) -> list[Body]:
    """The first proposal's transforms (as on the wire)."""
    off, end, out = 8 + b[6], struct.unpack_from("!H", b, 2)[0], []
    while off < end:
        ln = struct.unpack_from("!H", b, off + 2)[0]
        out.append(Body(b[off:off + ln]))
        off += ln
    return out


def _proposal(b: Body, num: int, transforms: list[Body], more: int = 0) -> Body:
    """The first proposal of SA body ``b`` numbered ``num`` with ``transforms`` (Last Substruc,
    count and length follow)."""
    for i, t in enumerate(transforms):
        t[0] = 3 if i < len(transforms) - 1 else 0
    head = Body(b[:8 + b[6]])
    head[0], head[4], head[7] = more, num, len(transforms)
    out = head + b"".join(transforms)
    struct.pack_into("!H", out, 2, len(out))
    return out


def _drop_type(ttype: int, num: int | None = None):
    """The SA's one proposal without its transforms of ``ttype`` (renumbered ``num``)."""
    def edit(b: Body) -> Body:
        return _proposal(b, num or b[4], [t for t in _transforms(b) if t[4] != ttype])
    return edit


def _dh_only_first(b: Body) -> Body:
    """A proposal 1 carrying the D-H transform alone before the SA's own, now numbered 2: what
    a public capture's initiator sent (vpandian/sgw capture.pcap frame 1)."""
    return (_proposal(b, 1, [t for t in _transforms(b) if t[4] == 4], more=2)
            + _proposal(b, 2, _transforms(b)))


def _encr_id(tid: int):
    def edit(b: Body) -> Body:
        ts = _transforms(b)
        for t in ts:
            if t[4] == 1:
                struct.pack_into("!H", t, 6, tid)
        return _proposal(b, b[4], ts)
    return edit


def _transform(ttype: int, tid: int, attrs: bytes = b"") -> Body:
    """One transform substructure (RFC 7296 §3.3.2); _proposal sets its Last Substruc."""
    return Body(struct.pack("!BBHBBH", 0, 0, 8 + len(attrs), ttype, 0, tid) + attrs)


AES256 = struct.pack("!HH", 0x8000 | 14, 256)  # Key Length attribute (RFC 7296 §3.3.5)


def _add(*transforms: tuple) -> Callable[[Body], Body]:
    """The SA's one proposal with ``transforms`` ((type, id[, attrs]) each) after its own."""
    def edit(b: Body) -> Body:
        return _proposal(b, b[4], _transforms(b) + [_transform(*t) for t in transforms])
    return edit


def _ah_proposals(*answer: bool) -> Callable[[Body], Body]:
    """The ESP proposal turned into AH (its SPI kept): proposal 1 with INTEG HMAC-SHA2-256-128 and
    the ESP proposal's ESN transform, as an AH proposal carries (RFC 7296 §3.3.3); an offer adds a
    proposal 2 with the ESN transform alone."""
    def edit(b: Body) -> Body:
        esn = [t for t in _transforms(b) if t[4] == 5]
        props = [_proposal(b, 1, [_transform(3, 12), *esn], more=0 if answer else 2)]
        if not answer:
            props.append(_proposal(b, 2, [Body(t) for t in esn]))
        for pr in props:
            pr[5] = 2  # protocol AH
        return Body(b"".join(props))
    return edit


# name: (frame, how, reason in the malformed note)
MUTATIONS = {
    "proposal-numbered-2-in-offer": (1, lambda f: _clear(f, SA, _set(4, 2)),
                                     "the first proposal of an offer is numbered 2, not 1 (RFC 7296 §3.3.1)"),
    "proposals-1-3": (1, lambda f: _clear(f, SA, _second_proposal(3)),
                      "proposals numbered 1, 3; an offer numbers them 1, 2"),
    "proposal-last-substruc-2": (2, lambda f: _clear(f, SA, _set(0, 2)),
                                 "proposal 1 Last Substruc 2, 0: it is the last (RFC 7296 §3.3.1)"),
    "transform-last-substruc-3": (2, lambda f: _clear(f, SA, _last_transform_flag(3)),
                                  "transform 3 Last Substruc 3, 0: it is the last (RFC 7296 §3.3.2)"),
    "ike-spi-in-init": (1, lambda f: _clear(f, SA, _spi_size(8)),
                        "proposal 1 has an IKE SPI of 8 bytes in IKE_SA_INIT, where the SPI size is 0"),
    "proposal-protocol-9": (4, lambda f: _sealed(f, SA, _set(5, 9)), "proposal 1 protocol ID 9 is unassigned"),
    "esp-spi-size-8": (4, lambda f: _sealed(f, SA, _spi_size(8)), "proposal 1 ESP SPI size 8; 4 (RFC 7296 §3.3.1)"),
    "cookie-65": (2, lambda f: _clear(f, N, _as_notify(16390, b"\x01" * 65)),
                  "COOKIE data is 65 bytes, a cookie takes 1 to 64 (RFC 7296 §2.6)"),
    "sig-hash-odd": (1, lambda f: _clear(f, N, _as_notify(16431, b"\x00\x02\x00")),
                     "SIGNATURE_HASH_ALGORITHMS data is 3 bytes, not a list of 2-byte hash algorithm numbers"),
    "invalid-ke-3": (2, lambda f: _clear(f, N, _as_notify(17, b"\x00\x13\x00")),
                     "INVALID_KE_PAYLOAD data is 3 bytes, the accepted D-H group takes 2 (RFC 7296 §3.10.1)"),
    "rekey-sa-spi-3": (11, lambda f: _sealed(f, N, _rekey_spi_size), "REKEY_SA names protocol 3 with an SPI of 3 bytes"),
    "ts-type-11": (4, lambda f: _sealed(f, TSR, _set(4, 11)), "selector 1 TS type 11 is unassigned"),
    "ts-count-0": (4, lambda f: _sealed(f, TSR, lambda b: Body(4)),
                   "no traffic selectors; a TS payload carries one or more (RFC 7296 §2.9)"),
    "ts-addresses-swapped": (4, lambda f: _sealed(f, TSR, _ts0_swap_addresses),
                             "selector 1 start address 10.2.0.255 is above end address 10.2.0.0"),
    "ts-ports-reversed": (4, lambda f: _sealed(f, TSR, _ts0_ports(443, 80)), "start port 443 is above end port 80"),
    "ts-proto-0-port-80": (4, lambda f: _sealed(f, TSR, _ts0_ports(80, 80, 0)), "protocol 0 with ports 80-80"),
    # inside SK the header's Response flag says offer or answer, as in clear text
    "sk-offer-numbered-2": (3, lambda f: _sealed(f, SA, _set(4, 2)),
                            "encrypted payloads: payload 5 (SA): the first proposal of an offer is numbered 2, not 1 "
                            "(RFC 7296 §3.3.1)"),
    "sk-rekey-offer-numbered-3": (11, lambda f: _sealed(f, SA, _set(4, 3)),
                                  "the first proposal of an offer is numbered 3, not 1 (RFC 7296 §3.3.1)"),
    "answer-2-proposals": (2, lambda f: _clear(f, SA, _second_proposal(2)),
                           "payload 1 (SA): an answer carries 2 proposals; the responder accepts a single one "
                           "(RFC 7296 §2.7)"),
    "sk-answer-2-proposals": (4, lambda f: _sealed(f, SA, _second_proposal(2)),
                              "an answer carries 2 proposals; the responder accepts a single one (RFC 7296 §2.7)"),
    # notify data an RFC fixes: none at all (frame 1's third notify), 4 octets, 8-64 octets
    "fragmentation-supported-with-data": (1, lambda f: _clear(f, N, _notify_data(16430, b"\x00\x01"), 3),
                                          "IKEV2_FRAGMENTATION_SUPPORTED data is 2 bytes, IKEV2_FRAGMENTATION_SUPPORTED "
                                          "takes 0 (RFC 7383 §2.3)"),
    "set-window-size-2": (3, lambda f: _sealed(f, N, _as_notify(16385, b"\x00\x02")),
                          "SET_WINDOW_SIZE data is 2 bytes, a window size takes 4 (RFC 7296 §2.3)"),
    # RFC 7296 §3.3.3: the transform types a proposal of each protocol carries, offer and answer
    "dh-only-proposal": (1, lambda f: _clear(f, SA, _dh_only_first),
                         "payload 1 (SA): proposal 1 IKE has no ENCR or PRF transform; an IKE proposal carries "
                         "ENCR, PRF, D-H and INTEG unless its cipher is AEAD (RFC 7296 §3.3.3, RFC 5282 §8)"),
    "answer-no-prf": (2, lambda f: _clear(f, SA, _drop_type(2)), "proposal 1 IKE has no PRF transform"),
    "offer-no-dh": (1, lambda f: _clear(f, SA, _drop_type(4)), "proposal 1 IKE has no D-H transform"),
    "offer-cbc-no-integ": (1, lambda f: _clear(f, SA, _encr_id(12)), "proposal 1 IKE has no INTEG transform"),
    "sk-esp-offer-no-esn": (3, lambda f: _sealed(f, SA, _drop_type(5)),
                            "encrypted payloads: payload 5 (SA): proposal 1 ESP has no ESN transform; an ESP "
                            "proposal carries ENCR, ESN and INTEG unless its cipher is AEAD (RFC 7296 §3.3.3"),
    "sk-esp-answer-no-encr": (4, lambda f: _sealed(f, SA, _drop_type(1)), "proposal 1 ESP has no ENCR transform"),
    "sk-esp-answer-cbc-no-integ": (4, lambda f: _sealed(f, SA, _encr_id(12)),
                                   "proposal 1 ESP has no INTEG transform"),
    # RFC 5282 §8 / RFC 7296 §3.3: a proposal whose ciphers are all AEAD proposes no INTEG (or NONE)
    "offer-aead-with-integ": (1, lambda f: _clear(f, SA, _add((3, 12))),
                              "payload 1 (SA): proposal 1 IKE has AUTH_HMAC_SHA2_256_128 beside its AEAD cipher "
                              "ENCR_AES_GCM_16; a proposal whose ciphers are all AEAD carries no INTEG transform, "
                              "or INTEG NONE (RFC 5282 §8, RFC 7296 §3.3)"),
    "answer-aead-with-integ": (2, lambda f: _clear(f, SA, _add((3, 2))),
                               "proposal 1 IKE has AUTH_HMAC_SHA1_96 beside its AEAD cipher ENCR_AES_GCM_16"),
    "sk-esp-offer-aead-with-integ": (3, lambda f: _sealed(f, SA, _add((3, 12), (3, 0))),
                                     "encrypted payloads: payload 5 (SA): proposal 1 ESP has AUTH_HMAC_SHA2_256_128 "
                                     "beside its AEAD cipher ENCR_AES_GCM_16"),
    "sk-esp-offer-chacha-with-integ": (3, lambda f: _sealed(f, SA, lambda b: _add((3, 12))(_encr_id(28)(b))),
                                       "proposal 1 ESP has AUTH_HMAC_SHA2_256_128 beside its AEAD cipher "
                                       "ENCR_CHACHA20_POLY1305"),
    "sk-esp-answer-aead-with-integ": (4, lambda f: _sealed(f, SA, _add((3, 12))),
                                      "payload 3 (SA): proposal 1 ESP has AUTH_HMAC_SHA2_256_128 beside its AEAD"),
    # Camellia-CCM (RFC 5529 §3.2: used as AES-CCM, an authenticated encryption algorithm of RFC
    # 5282 §8) for IKE and ESP; AES-GMAC for ESP (RFC 4543 §3: an ESP combined mode, RFC 7296 §3.3)
    "offer-camellia-ccm-with-integ": (1, lambda f: _clear(f, SA, lambda b: _add((3, 12))(_encr_id(27)(b))),
                                      "payload 1 (SA): proposal 1 IKE has AUTH_HMAC_SHA2_256_128 beside its AEAD "
                                      "cipher ENCR_CAMELLIA_CCM_16; a proposal whose ciphers are all AEAD carries no "
                                      "INTEG transform, or INTEG NONE (RFC 5529 §3.2, RFC 5282 §8, RFC 7296 §3.3)"),
    "sk-esp-offer-camellia-ccm-with-integ": (3, lambda f: _sealed(f, SA, lambda b: _add((3, 2))(_encr_id(25)(b))),
                                             "proposal 1 ESP has AUTH_HMAC_SHA1_96 beside its AEAD cipher "
                                             "ENCR_CAMELLIA_CCM_8"),
    "sk-esp-offer-gmac-with-integ": (3, lambda f: _sealed(f, SA, lambda b: _add((3, 12))(_encr_id(21)(b))),
                                     "encrypted payloads: payload 5 (SA): proposal 1 ESP has AUTH_HMAC_SHA2_256_128 "
                                     "beside its AEAD cipher ENCR_NULL_AUTH_AES_GMAC; a proposal whose ciphers are "
                                     "all AEAD carries no INTEG transform, or INTEG NONE (RFC 4543 §3, RFC 7296 §3.3)"),
    "sk-esp-answer-gmac-with-integ": (4, lambda f: _sealed(f, SA, lambda b: _add((3, 12))(_encr_id(21)(b))),
                                      "proposal 1 ESP has AUTH_HMAC_SHA2_256_128 beside its AEAD cipher "
                                      "ENCR_NULL_AUTH_AES_GMAC"),
    "sk-esp-answer-gmac-cbc-with-integ": (4, lambda f: _sealed(f, SA, lambda b: _add((1, 12, AES256), (3, 12))(
                                              _encr_id(21)(b))),
                                          "proposal 1 ESP: the answer selects AUTH_HMAC_SHA2_256_128 with AEAD cipher "
                                          "ENCR_NULL_AUTH_AES_GMAC; an SA with an AEAD cipher has no integrity "
                                          "algorithm selected (RFC 4543 §3, RFC 7296 §3.3)"),
    # an answer is one choice (RFC 7296 §2.7): AEAD selected with INTEG, even beside a plain cipher
    "answer-aead-cbc-with-integ": (2, lambda f: _clear(f, SA, _add((1, 12, AES256), (3, 12))),
                                   "payload 1 (SA): proposal 1 IKE: the answer selects AUTH_HMAC_SHA2_256_128 with "
                                   "AEAD cipher ENCR_AES_GCM_16; an SA with an AEAD cipher has no integrity algorithm "
                                   "selected (RFC 5282 §8)"),
    "sk-esp-answer-aead-cbc-with-integ": (4, lambda f: _sealed(f, SA, _add((1, 12, AES256), (3, 12))),
                                          "proposal 1 ESP: the answer selects AUTH_HMAC_SHA2_256_128 with AEAD"),
    # the AH branch of RFC 7296 §3.3.3 (AH: INTEG and ESN); proposal 1 beside it is right
    "sk-ah-offer-no-integ": (3, lambda f: _sealed(f, SA, _ah_proposals()),
                             "encrypted payloads: payload 5 (SA): proposal 2 AH has no INTEG transform; an AH proposal "
                             "carries INTEG and ESN (RFC 7296 §3.3.3)"),
    "cookie2-4": (3, lambda f: _sealed(f, N, _as_notify(16401, b"\x01" * 4)),
                  "COOKIE2 data is 4 bytes, a COOKIE2 takes 8 to 64 (RFC 4555 §4.2.5)"),
}
# What RFC 7296 allows stays clean: OPAQUE ports (§3.13.1), a TCP port range, a second proposal
# numbered 2, an answer numbered as the proposal it accepted.
SOUND = {
    "ts-opaque": (4, lambda f: _sealed(f, TSR, _ts0_ports(65535, 0))),
    "ts-tcp-80-443": (4, lambda f: _sealed(f, TSR, _ts0_ports(80, 443))),
    "proposals-1-2": (1, lambda f: _clear(f, SA, _second_proposal(2))),
    "answer-numbered-2": (2, lambda f: _clear(f, SA, _set(4, 2))),
    "sk-answer-numbered-2": (4, lambda f: _sealed(f, SA, _set(4, 2))),
    "sk-offer-proposals-1-2": (3, lambda f: _sealed(f, SA, _second_proposal(2))),
    # an AEAD cipher needs no INTEG (healthy-gcm's own proposals); a private-use cipher might be one
    "sk-esp-offer-private-encr": (3, lambda f: _sealed(f, SA, _encr_id(1024))),
    "offer-ccm-no-integ": (1, lambda f: _clear(f, SA, _encr_id(16))),
    # a single INTEG NONE beside AEAD (RFC 7296 §3.3); an offer mixing AEAD and plain ciphers with
    # INTEG: two proposals are asked for in prose only, RFC 5282 §8 forbids INTEG when all are AEAD
    "offer-aead-integ-none": (1, lambda f: _clear(f, SA, _add((3, 0)))),
    "offer-aead-cbc-with-integ": (1, lambda f: _clear(f, SA, _add((1, 12, AES256), (3, 12)))),
    "sk-esp-offer-aead-cbc-with-integ": (3, lambda f: _sealed(f, SA, _add((1, 12, AES256), (3, 12)))),
    "sk-esp-answer-aead-integ-none": (4, lambda f: _sealed(f, SA, _add((3, 0)))),
    # Camellia-CCM and AES-GMAC alone or with a single INTEG NONE; AES-GMAC in an IKE proposal, which
    # RFC 4543 §5.1 leaves undefined (no combined mode of an IKE SA, so not this rule's)
    "sk-esp-offer-camellia-ccm-no-integ": (3, lambda f: _sealed(f, SA, _encr_id(26))),
    "sk-esp-offer-gmac-integ-none": (3, lambda f: _sealed(f, SA, lambda b: _add((3, 0))(_encr_id(21)(b)))),
    "offer-camellia-ccm-integ-none": (1, lambda f: _clear(f, SA, lambda b: _add((3, 0))(_encr_id(25)(b)))),
    "offer-gmac-with-integ": (1, lambda f: _clear(f, SA, lambda b: _add((3, 12))(_encr_id(21)(b)))),
    # AH with INTEG and ESN, offer and answer
    "sk-ah-answer": (4, lambda f: _sealed(f, SA, _ah_proposals(True))),
    "set-window-size-4": (3, lambda f: _sealed(f, N, _as_notify(16385, b"\x00\x00\x00\x05"))),
    "cookie2-8": (3, lambda f: _sealed(f, N, _as_notify(16401, b"\x01" * 8))),
    # no RFC rule on their data: MOBIKE_SUPPORTED's "MUST be ignored" when received (RFC 4555
    # §4.2.1); INITIAL_CONTACT (RFC 7296 §2.4) and USE_TRANSPORT_MODE (§1.3.1) say nothing of it
    "mobike-supported-with-data": (3, lambda f: _sealed(f, N, _as_notify(16396, b"\x01\x02"))),
    "initial-contact-with-data": (3, lambda f: _sealed(f, N, _notify_data(16384, b"\x01"))),
    "use-transport-mode-with-data": (3, lambda f: _sealed(f, N, _as_notify(16391, b"\x01"))),
}


def _capture(path: Path, frame_no: int, how) -> None:
    with open_capture(SAMPLE / "capture.pcapng") as r, PcapWriter(path) as w:
        for f in r:
            w.write(f.ts_ns, how(f.data) if f.index == frame_no else f.data)


def _cli(*args: str) -> str:
    p = subprocess.run([sys.executable, "-m", "ipsecscope", *args, "-k", str(KEYS)], capture_output=True,
                       text=True, timeout=120)
    # findings exits 1 when it reports an error-level finding
    assert p.returncode in ((0, 1) if args[0] == "findings" else (0,)) and "Traceback" not in p.stderr, p.stderr
    return p.stdout


def _rows(cap: Path) -> dict[int, dict]:
    return {json.loads(x)["frame"]: json.loads(x) for x in _cli("packets", "--json", str(cap)).splitlines()}


def _payloads(info: str) -> list[str]:
    return info[info.index("[") + 1:info.index("]")].split()


@pytest.fixture(scope="module")
def original() -> dict[int, dict]:
    return _rows(SAMPLE / "capture.pcapng")


@pytest.mark.parametrize("name", MUTATIONS)
def test_rfc_contradiction_is_malformed_and_keeps_the_decode(tmp_path: Path, name: str, original) -> None:
    frame_no, how, why = MUTATIONS[name]
    cap = tmp_path / f"{name}.pcap"
    _capture(cap, frame_no, how)
    rows = _rows(cap)
    row = rows[frame_no]
    assert row["status"] == "malformed" and why in row["info"], row["info"]
    assert [f for f, r in rows.items() if r["status"] == "malformed"] == [frame_no]
    # every payload is still listed, in place (a Notify turned into another type keeps its place)
    assert len(_payloads(row["info"])) == len(_payloads(original[frame_no]["info"]))
    findings = json.loads(_cli("findings", "--json", str(cap)))["findings"]
    codes = [f["code"] for f in findings]
    # an answer whose SA is undecoded chose something unknown: no refusal is claimed
    assert "CAPTURE-MALFORMED" in codes and "IKE-CHILD-REFUSED" not in codes
    if name.startswith("ts-"):
        # the answer's selectors are not used: the CHILD SA keeps what was offered
        child = json.loads(_cli("sas", "--json", str(cap)))["child_sas"][0]
        assert child["ts_r"] == child["ts_r_offered"] == ["10.2.0.0-10.2.0.255"]


@pytest.mark.parametrize("name", SOUND)
def test_what_the_rfc_allows_stays_clean(tmp_path: Path, name: str) -> None:
    frame_no, how = SOUND[name]
    cap = tmp_path / f"{name}.pcap"
    _capture(cap, frame_no, how)
    assert _rows(cap)[frame_no]["status"] != "malformed"


@needs_tshark
@pytest.mark.parametrize("name", [n for n, m in MUTATIONS.items() if m[0] in (1, 2)])
def test_tshark_decodes_the_same_payloads(tmp_path: Path, name: str) -> None:
    """tshark keeps decoding the clear-text mutants; our payload list names the same notifies in the
    same order, and the proposals it numbers are the ones we read."""
    frame_no, how, _why = MUTATIONS[name]
    cap = tmp_path / f"{name}.pcap"
    _capture(cap, frame_no, how)
    out = subprocess.run(["tshark", "-r", str(cap), "-Y", f"frame.number == {frame_no}", "-T", "fields",
                          "-e", "isakmp.notify.msgtype", "-e", "isakmp.prop.number"],
                         capture_output=True, text=True, timeout=60, check=True).stdout.strip().split("\t")
    ours = [p[2:-1] for p in _payloads(_rows(cap)[frame_no]["info"]) if p.startswith("N(")]
    assert [iana.NotifyType(int(t)).name for t in out[0].split(",")] == ours
    sa = next(p for p in parse_ike(IkeDatagram(frame_no, 0.0, "a", "b", 500, 500, _ike(cap, frame_no))).payloads
              if isinstance(p, SaPayload))
    assert [int(x) for x in out[1].split(",")] == [p.num for p in sa.proposals]


def _ike(cap: Path, frame_no: int) -> bytes:
    with open_capture(cap) as r:
        f = next(f for f in r if f.index == frame_no)
    return bytes(f.data[14 + (f.data[14] & 15) * 4 + 8:])
