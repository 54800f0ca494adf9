"""Values of a field in one decoded message or quoted packet, as Python values (not columns).

The fields few frames have are evaluated per frame (``window._Sparse``): the IKE header and
payload fields of a decoded (and decrypted) message, of an IKE message an ICMP error quotes, and
every layer of an ESP packet an ICMP error quotes. tshark's layers, field by field.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import struct

from ..decode import inner as inner_mod
from ..decode.quoted import QuotedPacket, quoted_ike_dissected
from ..model.ike import FragmentPayload, IkeMessage, NotifyPayload, SaPayload, SkPayload

ECHO_TYPES = frozenset((0, 8, 13, 14, 15, 16, 17, 18))  # ICMP messages with identifier/sequence


def quoted_values(q: QuotedPacket, name: str) -> list:
    """Values of field ``name`` in the ESP (or AH) packet an ICMP error quotes, as tshark dissects
    it: the ESP/AH header, ESP's next header once decrypted, and every layer of the decrypted (AH:
    carried) packet (its IP header, transport header, DNS, and what it quotes in turn if it is an
    ICMP error)."""
    fam, _, sub = name.partition(".")
    if fam in ("esp", "ah") and (fam == "ah") != (q.protocol == "AH"):
        return []
    if fam == "ah":  # (AH does not encrypt: the layers below are what it carries, verified or not)
        if sub == "sequence":  # the 32 bits on the wire; none when the quote ends before them
            return [q.seq & 0xFFFFFFFF] if q.seq >= 0 else []
        return {"": [True], "spi": [q.spi]}.get(sub, [])
    if fam == "esp":
        if not sub:
            return [True]
        if sub == "spi":
            return [q.spi]
        if sub == "sequence":
            return [q.seq]
        if sub == "protocol":
            return [q.next_header] if q.next_header is not None else []
        return []
    s = q.inner
    if s is None:
        return []
    out: list = []
    l4 = bool(s.flags & inner_mod.L4)
    ql4 = bool(s.qver and s.qflags & inner_mod.L4)
    if fam in ("ip", "ipv6"):
        want = 4 if fam == "ip" else 6
        for ver, src, dst, proto in ((s.ver, s.src, s.dst, s.proto), (s.qver, s.qsrc, s.qdst, s.qproto)):
            if name == "ip.version" and ver:  # (an IPv6 header's too, as tshark)
                out.append(ver)
                continue
            if ver != want:
                continue
            if not sub:
                out.append(True)
            elif sub in ("src", "dst", "addr"):
                out += [ipaddress.ip_address(a) for a in ((src, dst) if sub == "addr" else (src if sub == "src" else dst,))]
            elif sub in ("proto", "nxt"):
                out.append(proto)
            elif sub == "version":
                out.append(ver)
        return out
    if fam in ("udp", "tcp"):
        pn = 17 if fam == "udp" else 6
        for has, proto, sp, dp in ((l4, s.proto, s.sport, s.dport), (ql4, s.qproto, s.qsport, s.qdport)):
            if has and proto == pn:
                out += {"": [True], "srcport": [sp], "dstport": [dp], "port": [sp, dp]}.get(sub, [])
        if fam == "tcp" and l4 and s.proto == 6 and sub.startswith("flags"):
            bit = {"flags": None, "flags.syn": 0x02, "flags.ack": 0x10, "flags.fin": 0x01, "flags.reset": 0x04,
                   "flags.push": 0x08}.get(sub, 0)
            if bit is None:
                out.append(s.tcpflags)
            elif bit:
                out.append(bool(s.tcpflags & bit))
        return out
    if fam in ("icmp", "icmpv6"):
        pn = 1 if fam == "icmp" else 58
        for has, proto, t, c in ((l4, s.proto, s.itype, s.icode), (ql4, s.qproto, s.qitype, s.qicode)):
            if has and proto == pn:
                out += {"": [True], "type": [t], "code": [c]}.get(sub, [])
        if sub in ("ident", "seq") and l4 and s.proto == pn == 1 and s.itype in ECHO_TYPES:
            out.append(s.sport if sub == "ident" else s.dport)
        return out
    if fam == "dns" and s.flags & inner_mod.DNS:
        return {"": [True], "id": [s.dns_id], "flags.response": [bool(s.flags & inner_mod.DNS_RESPONSE)],
                "qry.type": [s.dns_qtype] if s.dns_qtype else [],
                "qry.name": [s.dns_name] if s.dns_name else []}.get(sub, [])
    if fam == "udpencap" and not sub:
        if (l4 and s.proto == 17 and 4500 in (s.sport, s.dport)) or (
                ql4 and s.qproto == 17 and 4500 in (s.qsport, s.qdport)):
            return [True]
    return []


_IKE_HDR = struct.Struct("!8s8sBBBBII")


def quoted_ike_field(data: bytes, sub: str, msg: IkeMessage | None = None) -> list:
    """Values of ``isakmp.<sub>`` in the IKE message an ICMP error quotes (``data`` from its
    28-octet header, RFC 7296 §3.1, to the end of the quote; ``msg`` the session's decoding of it
    when tshark dissects its payloads, :func:`~ipsecscope.decode.quoted.quoted_ike_dissected`).
    tshark (4.0) shows a message cut off earlier by its header alone, without the Length field;
    otherwise every payload header the quote holds and the payloads it holds whole."""
    spi_i, spi_r, np_, ver, exch, flags, msg_id, length = _IKE_HDR.unpack_from(data)
    full = quoted_ike_dissected(data)
    if sub == "nextpayload":
        if not full or msg is None:
            return [np_]
        # the next-payload field of every payload header the quote holds (a payload cut short
        # shows its generic header only), then what the decoded payloads hold
        vals = [np_]
        ptype, off, n = np_, 28, min(len(data), length)
        while ptype and off + 4 <= n:
            vals.append(data[off])
            plen = data[off + 2] << 8 | data[off + 3]
            if plen < 4:
                break
            ptype, off = data[off], off + plen
        for p in msg.payloads:
            _sa_substructures(p, vals)
        _inner_chain(msg, vals)
        return vals
    if sub == "notify.msgtype":
        return ike_field(msg, sub) if full and msg is not None else []
    return {"ispi": [spi_i], "rspi": [spi_r], "exchangetype": [exch], "messageid": [msg_id], "version": [ver],
            "flags": [flags], "length": [length] if full else []}.get(sub, [])


def _inner_chain(msg: IkeMessage, vals: list) -> None:
    """The next-payload fields of a decrypted SK payload's chain (0 ending it), SA substructures too."""
    inner = list(msg.inner)
    for i, p in enumerate(inner):
        vals.append(inner[i + 1].type if i + 1 < len(inner) else 0)
        _sa_substructures(p, vals)


def _sa_substructures(p, vals: list) -> None:
    if isinstance(p, SaPayload):
        props = p.proposals
        for j, prop in enumerate(props):
            vals.append(2 if j + 1 < len(props) else 0)
            n = len(prop.transforms)
            vals.extend([3] * (n - 1) + [0] if n else [])


def _frag_field(msg: IkeMessage, sub: str) -> list:
    """``isakmp.frag.*``: an IKEv2 SKF payload's Fragment Number / Total Fragments (RFC 7383
    §2.5, ``number``/``total``), an IKEv1 Fragment payload's (132) Fragment ID, number and last
    flag (``packetid``/``seq``/``last``: tshark's names). The frame completing an IKEv1 message
    holds its last piece: tshark shows that piece's fields."""
    if sub in ("number", "total"):
        return [p.fragment_number if sub == "number" else p.total_fragments for p in msg.payloads
                if isinstance(p, SkPayload) and p.total_fragments]
    if sub not in ("packetid", "seq", "last"):
        return []
    fp = next((p for p in msg.payloads if isinstance(p, FragmentPayload)), None)
    if fp is not None:
        return [fp.frag_id if sub == "packetid" else fp.number if sub == "seq" else int(fp.last)]
    fs = msg.v1_fragments
    if fs is None or not msg.reassembled_from:
        return []
    num = next((n for n, f in fs.frames.items() if f == msg.frame), None)
    if num is None:
        return []
    return [fs.frag_id if sub == "packetid" else num if sub == "seq" else int(num == fs.last)]


def ike_field(msg: IkeMessage, sub: str) -> list:
    """Values of ``isakmp.<sub>`` in one message, as tshark shows them (decrypted payloads too)."""
    if sub.startswith("frag."):
        return _frag_field(msg, sub[5:])
    ph = msg.piece_header
    if ph is not None:
        # The frame completing an IKEv1 fragmented message: tshark shows the piece's ISAKMP
        # header (and its Fragment payload's Next Payload, 0) before the reassembled message's.
        whole = ike_field(dataclasses.replace(msg, piece_header=None), sub)
        piece = {"flags": [ph.flags], "length": [ph.length], "nextpayload": [ph.next_payload, 0]}.get(sub)
        return whole if piece is None else piece + whole
    h = msg.header
    if sub == "ispi":
        return [h.spi_i]
    if sub == "rspi":
        return [h.spi_r]
    if sub == "exchangetype":
        return [h.exchange]
    if sub == "messageid":
        return [h.msg_id]
    if sub == "version":
        return [h.major << 4 | h.minor]
    if sub == "flags":
        return [h.flags]
    if sub == "length":
        return [h.length]
    if sub == "nextpayload":
        # The header's and every payload's Next Payload field: the types of all payloads that
        # follow (RFC 7296 §3.2), inside a decrypted SK payload too, and 0 ending each chain.
        # An SA payload's proposal and transform substructures carry the field too (RFC 7296
        # §3.3.1/§3.3.2, RFC 2408 §3.5/§3.6: 2 "more proposals" / 3 "more transforms", 0 last).
        vals = [h.next_payload]
        if h.major == 1 and h.flags & 1:
            # IKEv1 with the Encryption bit (RFC 2408 §3.1): everything after the header is
            # ciphertext, no payload header tshark can read; decrypted, the payloads are ``inner``
            _inner_chain(msg, vals)
            return vals
        chain = list(msg.payloads)
        for i, p in enumerate(chain):
            if isinstance(p, SkPayload):
                vals.append(p.first_payload)
            else:
                vals.append(chain[i + 1].type if i + 1 < len(chain) else 0)
                _sa_substructures(p, vals)
        _inner_chain(msg, vals)
        return vals
    if sub == "notify.msgtype":
        return [p.notify_type for p in (*msg.payloads, *msg.inner) if isinstance(p, NotifyPayload)]
    return []
