"""The ESP or AH packet or IKE message an ICMP/ICMPv6 error frame quotes, opened for the session.

``Session._dispatch`` calls :func:`open_quote` for every ICMP error the decoder found quoting ESP
(``IcmpError.protocol == "ESP"``), and keeps the :class:`~ipsecscope.decode.quoted.QuotedPacket`
as the frame's second inner record; ``Session.detail`` calls it again for the plaintext. For an
error quoting AH it calls :func:`open_quote_ah`: the ICV of a whole quote checked over the
*quoted* IP header (the one AH follows, RFC 4302 §3.3.3), not the error's own. For an
error quoting IKE it calls :func:`open_quoted_ike`: a whole quoted message is decoded (and
decrypted) so that display filters see its payloads as tshark's do. ICMP errors are rare and take
the general path; nothing here touches an SA's state or counters (``EspDecryptor.open_copy``,
a decryptor of its own for IKE: the quote is a copy of a packet already sent).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .crypto.esp import EspDecryptor
from .crypto.esp_open import decrypt_prefix, tshark_prefix
from .crypto.ike_sk import SKF, IkeDecryptor
from .decode.icmp import NATT_PORT
from .decode.ike import parse_ike
from .decode.inner import parse
from .decode.ip import CHAIN_OK, walk_quoted_v6
from .decode.isakmp import HEADER_LEN
from .decode.link import ip_offset
from .decode.quoted import (
    DECRYPTED,
    NOT_VERIFIED,
    VERIFIED,
    QuotedPacket,
    quoted_ike_dissected,
    summarise,
    tshark_trailer,
)
from .model.ike import IkeMessage
from .model.packets import IcmpError, IkeDatagram, RawFrame

if TYPE_CHECKING:
    from .crypto.ah import AhVerifier

_STATUS = {"no_key": "no-key", "icv_failed": "icv-bad", "malformed": "malformed", "unsupported": "unsupported"}


def error_in(raw: RawFrame) -> tuple[IcmpError | None, RawFrame]:
    """The ICMP error ``raw`` carries (None: none) and the frame its quote is read from: inside a
    tunnel (GRE, IP in IP, VXLAN...) the tunnelled IP packet as LINKTYPE_RAW, as the load read it
    (``Session._dispatch``), else ``raw``. For the detail views: a frame decoded again."""
    from .decode.demux import Decoder

    dec = Decoder(icmp_errors=True)
    err = next((p for p in dec.decode_all(raw) if type(p) is IcmpError), None)
    ti = dec.tunnel_inner
    if err is not None and ti is not None and ti[0] == raw.index and ti[2]:
        raw = RawFrame(raw.index, raw.ts, raw.ts_ns, 101, ti[3][ti[4]:], raw.orig_len, raw.iface, raw.offset)
    return err, raw


def _error_ip(raw: RawFrame) -> tuple[bytes, int, tuple | None] | None:
    """(the ICMP error's IP datagram, where its ICMP header starts, what its quote holds beyond
    the ports as ``decode.inner.parse`` reads it: ("esp", ...) / ("isakmp", ...) / None)."""
    ver, off = ip_offset(raw.linktype, raw.data)
    if ver not in (4, 6):
        return None
    data = bytes(raw.data[off:])
    if ver == 4:
        if len(data) < 20:
            return None
        hl = (data[0] & 15) * 4
        data = data[:max(hl, (data[2] << 8) | data[3])]  # the outer datagram only (no Ethernet padding)
    else:
        if len(data) < 40:
            return None
        data = data[:40 + ((data[4] << 8) | data[5])]
        # the ICMPv6 header follows the error's own extension headers, if any (RFC 8200 §4)
        proto, hl, chain = walk_quoted_v6(data, data[6], 40, len(data))
        if proto != 58 or chain != CHAIN_OK:
            return None
    _rec, extra = parse(data, 4 if ver == 4 else 41, lambda _a: 0)
    return data, hl, extra if isinstance(extra, tuple) else None


def quoted_esp_bytes(raw: RawFrame) -> tuple[bytes, bool] | None:
    """(the quoted ESP packet from its SPI to the end of the quote, whether the quote holds the
    whole packet) of the ICMP error in ``raw``; None when it quotes no ESP."""
    got = _error_ip(raw)
    if got is None or got[2] is None or got[2][0] != "esp":
        return None
    data, hl, extra = got
    at = extra[3]
    q = hl + 8  # the quoted datagram starts after the ICMP header (RFC 792, RFC 4443 §2.1)
    if len(data) < q + 20:
        return None
    if data[q] >> 4 == 4:
        total = (data[q + 2] << 8) | data[q + 3]
    elif len(data) >= q + 40:
        total = 40 + ((data[q + 4] << 8) | data[q + 5])
    else:
        return None
    whole = len(data) - q >= total > at - q
    return data[at:q + total] if whole else data[at:], whole


def open_quote(dec: EspDecryptor, raw: RawFrame, err: IcmpError) -> tuple[QuotedPacket, bytes | None, int] | None:
    """The quoted packet of ``err`` (frame ``raw``): (record, plaintext — the inner packet of a
    whole quote, the decrypted prefix of a cut-off one — or None, bytes of ESP quoted)."""
    got = quoted_esp_bytes(raw)
    if got is None or len(got[0]) < 8:
        return None
    esp, whole = got
    spi, seq = int.from_bytes(esp[:4], "big"), int.from_bytes(esp[4:8], "big")
    src, dst, frame = err.quoted_src, err.quoted_dst, raw.index
    if whole:
        res = dec.open_copy(src, dst, spi, seq, esp)
        if res.ok and res.inner is not None:
            inner = summarise(frame, res.inner, res.next_header)
            return QuotedPacket(frame, src, dst, spi, seq, True, DECRYPTED, "", res.next_header, inner,
                                len(res.inner)), res.inner, len(esp)
        return QuotedPacket(frame, src, dst, spi, seq, True, _STATUS.get(res.status, res.status),
                            res.reason), None, len(esp)
    keys = dec.copy_keys(src, dst, spi)
    if keys is None:
        return QuotedPacket(frame, src, dst, spi, seq, False, "no-key", "no key for this SA"), None, len(esp)
    try:
        plain = decrypt_prefix(keys, esp)
    except Exception as exc:  # noqa: BLE001 - a cut-off quote we cannot open is shown, never fatal
        return QuotedPacket(frame, src, dst, spi, seq, False, "malformed", str(exc)), None, len(esp)
    # What tshark makes of it: a "trailer" read from the end of what it takes for the ciphertext.
    seen = tshark_prefix(keys, esp)
    trailer = tshark_trailer(seen) if seen is not None else None
    nh = inner = None
    if trailer is not None:
        nh = trailer[1]
        inner = summarise(frame, trailer[0], nh)
    reason = "the quote ends before the ICV (anyone on the path can forge an ICMP error)"
    return QuotedPacket(frame, src, dst, spi, seq, False, NOT_VERIFIED, reason, nh, inner, len(plain)), plain, len(esp)


_AH_STATUS = {"ok": VERIFIED, "icv_failed": "icv-bad", "no_key": "no-key", "unsupported": "unsupported",
              "unverifiable": "unverifiable"}


def quoted_datagram(raw: RawFrame) -> bytes | None:
    """The datagram the ICMP/ICMPv6 error in ``raw`` quotes, from its IP header to the end of the
    quote (after the ICMP header, RFC 792, RFC 4443 §2.1); None when ``raw`` holds no such error."""
    got = _error_ip(raw)
    return got[0][got[1] + 8:] if got is not None else None


def open_quote_ah(verifier: AhVerifier | None, raw: RawFrame, err: IcmpError) -> QuotedPacket | None:
    """The AH packet the ICMP error ``err`` (frame ``raw``) quotes, as a record: its ICV checked
    (``verifier``: the session's, None without AH keys) when the quote holds the whole datagram,
    over the quoted IP header (its IPv4 options, its IPv6 extension headers: RFC 792 and
    RFC 4443 §2.4(c) quote the datagram from its IP header on). A quote cut off before the end
    holds less than the ICV covers: "not-verified", its payload summarised as far as it goes (AH
    encrypts nothing). Never raises for what the quote holds; None when it holds no AH header."""
    q = quoted_datagram(raw)
    if q is None or err.spi is None:
        return None
    if len(q) >= 20 and q[0] >> 4 == 4:
        version, at, total = 4, (q[0] & 15) * 4, (q[2] << 8) | q[3]
    elif len(q) >= 40 and q[0] >> 4 == 6:
        nh, at, chain = walk_quoted_v6(q, q[6], 40, len(q))
        if nh != 51 or chain != CHAIN_OK:
            return None
        version, total = 6, 40 + ((q[4] << 8) | q[5])
    else:
        return None
    if at < 20 or len(q) < at + 8:
        return None
    whole = total > at and len(q) >= total
    ah = bytes(q[at:total] if whole else q[at:])
    src, dst, frame = err.quoted_src, err.quoted_dst, raw.index
    seq = err.seq if err.seq is not None else -1  # -1: the quote ends before the sequence number
    hlen = (ah[1] + 2) * 4
    nh = ah[0]
    inner = summarise(frame, ah[hlen:], nh) if len(ah) > hlen and nh not in (50, 59) else None
    if not whole or len(ah) < 12 or hlen > len(ah):
        return QuotedPacket(frame, src, dst, err.spi, seq, False, NOT_VERIFIED,
                            "the quote ends before the end of the packet the ICV covers (anyone on the path can "
                            "forge an ICMP error)", nh, inner, max(len(ah) - hlen, 0), "AH")
    if verifier is None:
        return QuotedPacket(frame, src, dst, err.spi, seq, True, "no-key", "no AH keys loaded", nh, inner,
                            len(ah) - hlen, "AH")
    try:
        res = verifier.check_copy(src, dst, err.spi, seq, bytes(q[:total]), version, ah)
    except Exception as exc:  # noqa: BLE001 - a quote we cannot check is shown, never fatal
        return QuotedPacket(frame, src, dst, err.spi, seq, True, "unverifiable",
                            f"internal error ({type(exc).__name__}); ICV not checked", nh, inner, len(ah) - hlen, "AH")
    return QuotedPacket(frame, src, dst, err.spi, (res.seq_hi << 32) | seq, True, _AH_STATUS.get(res.status, res.status),
                        res.reason, nh, inner, len(ah) - hlen, "AH")


def open_quoted_ike(dec: IkeDecryptor, raw: RawFrame, err: IcmpError, quoted: tuple | None = None,
                    ) -> IkeMessage | None:
    """The IKE message the ICMP error ``err`` (frame ``raw``) quotes, when tshark dissects its
    payloads (:func:`~ipsecscope.decode.quoted.quoted_ike_dissected`): decoded, and when quoted
    whole an IKEv2 SK payload decrypted with the IKE SA's keys, as tshark does with the same
    keys. ``quoted``: the frame's ``InnerStore.quoted`` entry when the caller has it (else the
    frame is read again). ``dec`` is the session's decryptor for quotes (its counters are not the
    capture's: the quote is a copy of a message already sent, and never goes to the tracker).
    None for a quote cut off earlier: tshark then shows its header only. IKEv1 and IKEv2
    fragments (SKF) are not decrypted: both need the exchange's state."""
    if quoted is None:  # what the frame's inner record holds already, when the caller has it
        got = _error_ip(raw)
        quoted = got[2] if got is not None else None
    if quoted is None or quoted[0] != "isakmp":
        return None
    ike = quoted[1]
    length = int.from_bytes(ike[24:28], "big")
    if not (HEADER_LEN <= length and quoted_ike_dissected(ike)):
        return None
    msg = parse_ike(IkeDatagram(raw.index, raw.ts, err.quoted_src, err.quoted_dst, err.sport, err.dport,
                                ike[:length], non_esp_marker=NATT_PORT in (err.sport, err.dport),
                                ip_version=err.ip_version))
    if (len(ike) >= length and msg.header.major == 2 and msg.encrypted
            and not any(p.type == SKF for p in msg.payloads)):
        msg = dec.decrypt(msg)
    return msg
