"""JSON Lines export of decrypted ESP: one object per ESP or AH packet, schema ``ipsecscope.decrypt/1``.

Fields (ESP)::

    schema       "ipsecscope.decrypt/1"
    frame        1-based frame number in the capture (as Wireshark numbers them)
    time         capture timestamp, seconds since the epoch (float); time_ns the exact integer
    src, dst     outer addresses; udp_encap true when the ESP rode in UDP 4500 (RFC 3948)
    spi          "0x%08x"
    seq          full sequence number (64-bit when the SA uses ESN); esn_hi its high 32 bits
    status       "ok" | "icv_failed" | "no_key" | "malformed" | "unsupported"
    reason       one line, only when status is not "ok"
    esp_len      bytes of ESP (SPI to ICV)
    next_header  ESP next header (4 = IPv4 tunnel, 41 = IPv6 tunnel, 6/17/1/58 transport, 59 dummy)
    inner_len    bytes of the inner packet (tunnel) or payload (transport)
    inner        summary: {"proto": "UDP", "src": ..., "dst": ..., "sport": ..., "dport": ...}
                 (tunnel mode: from the inner IP header; transport: outer addresses)
    inner_hex    the inner bytes, only with --hex
    sa           where the keys came from ("file:line" or "derived: ...")
    protocol     "ESP"

AH (RFC 4302; ``export/ah.py``) has the same fields but for ``udp_encap`` and ``esp_len``::

    protocol     "AH"
    status       the ICV: "ok" (verified) | "icv_failed" | "no_key" | "unsupported" | "unverifiable"
                 (the frame does not hold what the ICV covers); reason when not "ok"
    ah_len       bytes of AH (header, ICV, payload)
    next_header, inner_len, inner, inner_hex, nested
                 as for ESP, whenever the payload was written: every status but "icv_failed"
                 (AH encrypts nothing; a payload not verified is written, its status says so)
    nat          "logged -> wire" when the ICV verifies with the key file's address (a NAT rewrote it)
"""

from __future__ import annotations

import _socket as socket  # socket.py's C module, the same inet_* functions: no socket.py enums (~3.7 ms CPU)
import json
import struct
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..crypto.ah import AhResult
    from ..crypto.esp import SaState
    from ..model.packets import AhPacket

SCHEMA = "ipsecscope.decrypt/1"

_PROTO = {1: "ICMP", 2: "IGMP", 4: "IPv4", 6: "TCP", 17: "UDP", 41: "IPv6", 47: "GRE", 50: "ESP", 51: "AH",
          58: "ICMPv6", 59: "none", 89: "OSPF", 132: "SCTP"}
_addr_cache: dict[bytes, str] = {}
_dumps = json.JSONEncoder(separators=(",", ":")).encode


def _text(a: bytes) -> str:
    s = _addr_cache.get(a)
    if s is None:
        if len(_addr_cache) > 4096:
            _addr_cache.clear()
        s = _addr_cache[a] = socket.inet_ntop(socket.AF_INET if len(a) == 4 else socket.AF_INET6, a)
    return s


def proto_name(p: int) -> str:
    return _PROTO.get(p, str(p))


def _ports(proto: int, seg: bytes) -> dict:
    if proto in (6, 17, 132) and len(seg) >= 4:
        sport, dport = struct.unpack_from("!HH", seg, 0)
        return {"sport": sport, "dport": dport}
    if proto in (1, 58) and len(seg) >= 2:
        return {"icmp_type": seg[0], "icmp_code": seg[1]}
    return {}


def summarize(inner: bytes, next_header: int, src: bytes, dst: bytes) -> dict:
    """Protocol, addresses and ports of a decrypted inner packet (cheap: header fields only)."""
    if next_header == 4 and len(inner) >= 20 and inner[0] >> 4 == 4:
        hl = (inner[0] & 15) * 4
        proto = inner[9]
        d = {"proto": proto_name(proto), "src": _text(bytes(inner[12:16])), "dst": _text(bytes(inner[16:20]))}
        frag = struct.unpack_from("!H", inner, 6)[0] & 0x1FFF
        if not frag:
            d.update(_ports(proto, inner[hl:hl + 4]))
        return d
    if next_header == 41 and len(inner) >= 40 and inner[0] >> 4 == 6:
        proto = inner[6]
        d = {"proto": proto_name(proto), "src": _text(bytes(inner[8:24])), "dst": _text(bytes(inner[24:40]))}
        d.update(_ports(proto, inner[40:44]))
        return d
    d = {"proto": proto_name(next_header), "src": _text(src), "dst": _text(dst), "mode": "transport"}
    d.update(_ports(next_header, inner[:4]))
    return d


def record(frame: int, ts_ns: int, st: SaState | None, src: bytes, dst: bytes, spi: int, seq_lo: int, seq_hi: int, status: str,
           next_header: int | None, inner: bytes | None, esp_len: int, with_hex: bool = False, *,
           reason: str = "", udp_encap: bool = False, nested: list | None = None, inner_src: bytes | None = None,
           inner_dst: bytes | None = None) -> str:
    """One JSON line (with the trailing newline). ``st`` is the SA's decryptor state (for the keys'
    source and ESN mode). ``nested``: the inner ESP layers of ESP-in-ESP (spi, src, dst, seq,
    status, reason), outermost first; then ``next_header``/``inner`` describe the innermost
    packet, whose transport-mode addresses are ``inner_src``/``inner_dst``."""
    esn = getattr(st, "mode", None)
    d = {
        "schema": SCHEMA, "frame": frame, "time": ts_ns / 1e9, "time_ns": ts_ns, "src": _text(src),
        "dst": _text(dst), "udp_encap": udp_encap, "spi": f"0x{spi:08x}", "seq": (seq_hi << 32) | seq_lo,
        "esn_hi": seq_hi, "esn": esn, "status": status, "esp_len": esp_len, "protocol": "ESP",
    }
    if status != "ok":
        d["reason"] = reason
    else:
        d["next_header"] = next_header
        d["inner_len"] = len(inner) if inner is not None else 0
        if nested:
            d["nested"] = nested
        if inner is not None and next_header != 59:
            d["inner"] = summarize(inner, next_header, inner_src or src, inner_dst or dst)
        if with_hex and inner is not None:
            d["inner_hex"] = bytes(inner).hex()
    keys = getattr(st, "keys", None)
    if keys is not None and keys.source:
        d["sa"] = keys.source
    return _dumps(d) + "\n"


def ah_record(pkt: AhPacket, ts_ns: int, res: AhResult, src: bytes, dst: bytes, next_header: int | None, inner: bytes | None,
              with_hex: bool = False, *, nested: list | None = None, inner_src: bytes | None = None,
              inner_dst: bytes | None = None) -> str:
    """One JSON line for an AH packet (``pkt``: decode's AhPacket, ``res``: crypto.ah's AhResult).
    ``inner`` None: nothing was written for it (ICV failed)."""
    d = {
        "schema": SCHEMA, "frame": pkt.frame, "time": ts_ns / 1e9, "time_ns": ts_ns, "src": _text(src),
        "dst": _text(dst), "protocol": "AH", "spi": f"0x{pkt.spi:08x}", "seq": (res.seq_hi << 32) | pkt.seq,
        "esn_hi": res.seq_hi, "esn": res.esn, "status": res.status, "ah_len": len(pkt.data),
    }
    if res.status != "ok":
        d["reason"] = res.reason
    if res.nat:
        d["nat"] = res.nat
    if inner is not None:
        d["next_header"] = next_header
        d["inner_len"] = len(inner)
        if nested:
            d["nested"] = nested
        if next_header != 59:
            d["inner"] = summarize(inner, next_header, inner_src or src, inner_dst or dst)
        if with_hex:
            d["inner_hex"] = bytes(inner).hex()
    keys = res.keys
    if keys is not None and keys.source:
        d["sa"] = keys.source
    return _dumps(d) + "\n"
