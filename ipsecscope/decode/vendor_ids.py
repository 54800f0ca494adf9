"""Known IKE Vendor ID payload values (IKEv1 VID 13, IKEv2 V 43).

Most vendor IDs are the MD5 of a fixed string, so the table keeps the string and computes the
hash once at import: anyone can check an entry with ``echo -n 'RFC 3947' | md5sum``. A few are
a hash prefix followed by version bytes (Cisco Unity, Microsoft NT5, Netscreen, Check Point);
those match on the prefix. :func:`vendor_name` is a dict lookup plus a short prefix scan.
"""

from __future__ import annotations

from hashlib import md5

# name shown to the user -> the string whose MD5 is the vendor ID
_MD5_OF: dict[str, str] = {
    "RFC 3947 NAT-T": "RFC 3947",
    "draft-ietf-ipsec-nat-t-ike-00": "draft-ietf-ipsec-nat-t-ike-00",
    "draft-ietf-ipsec-nat-t-ike-01": "draft-ietf-ipsec-nat-t-ike-01",
    "draft-ietf-ipsec-nat-t-ike-02": "draft-ietf-ipsec-nat-t-ike-02",
    # Early implementations hashed the name with a trailing newline; peers still send both.
    "draft-ietf-ipsec-nat-t-ike-02\\n": "draft-ietf-ipsec-nat-t-ike-02\n",
    "draft-ietf-ipsec-nat-t-ike-03": "draft-ietf-ipsec-nat-t-ike-03",
    "draft-ietf-ipsec-nat-t-ike-04": "draft-ietf-ipsec-nat-t-ike-04",
    "draft-ietf-ipsec-nat-t-ike-05": "draft-ietf-ipsec-nat-t-ike-05",
    "draft-ietf-ipsec-nat-t-ike-06": "draft-ietf-ipsec-nat-t-ike-06",
    "draft-ietf-ipsec-nat-t-ike-07": "draft-ietf-ipsec-nat-t-ike-07",
    "draft-ietf-ipsec-nat-t-ike-08": "draft-ietf-ipsec-nat-t-ike-08",
    "draft-ietf-ipsec-nat-t-ike-09": "draft-ietf-ipsec-nat-t-ike-09",
    "draft-ietf-ipsec-nat-t-ike": "draft-ietf-ipsec-nat-t-ike",
    "draft-stenberg-ipsec-nat-traversal-01": "draft-stenberg-ipsec-nat-traversal-01",
    "draft-stenberg-ipsec-nat-traversal-02": "draft-stenberg-ipsec-nat-traversal-02",
    "draft-huttunen-ipsec-esp-in-udp-01": "draft-huttunen-ipsec-esp-in-udp-01.txt",
    "strongSwan": "strongSwan",
    "Libreswan": "Libreswan",
    "Openswan": "Openswan",
    "FRAGMENTATION": "FRAGMENTATION",
    "Microsoft Vid-Initial-Contact": "Vid-Initial-Contact",
    "MS-Negotiation Discovery Capable": "MS-Negotiation Discovery Capable",
    "Microsoft IKE CGA version 1": "IKE CGA version 1",
    "MS-MamieExists": "MS-MamieExists",
    "Cisco Copyright (c) 2009": "Cisco Copyright (c) 2009",
    "CISCO-DELETE-REASON": "CISCO-DELETE-REASON",
    "CISCO-GRE-MODE": "CISCO-GRE-MODE",
    "CISCO-DYNAMIC-ROUTE": "CISCO-DYNAMIC-ROUTE",
    "draft-ietf-ipsec-heartbeats-00": "draft-ietf-ipsec-heartbeats-00.txt",
}

# Fixed values that are not the MD5 of a known string.
_EXACT_HEX: dict[str, str] = {
    "RFC 3706 DPD": "afcad71368a1f1c96b8696fc77570100",
    # First 8 bytes of MD5("draft-ietf-ipsra-isakmp-xauth-06.txt").
    "XAUTH": "09002689dfd6b712",
    "Netscreen-6": "699369228741c6d4ca094c93e242c9de19e7b7c60000000500000500",
    "FRAGMENTATION (Cisco)": "4048b7d56ebce88525e7de7f00d6c2d380000000",
    "FRAGMENTATION (Microsoft)": "4048b7d56ebce88525e7de7f00d6c2d3c0000000",
}

# Prefix entries: (prefix bytes, name). Longest prefixes first.
_PREFIX_HEX: tuple[tuple[str, str], ...] = (
    ("f4ed19e0c114eb516faaac0ee37daf2807b4381f", "Check Point"),
    ("699369228741c6d4ca094c93e242c9de19e7b7c6", "Netscreen/Juniper"),
    ("1e2b516905991c7d7c96fcbfb587e461", "Microsoft NT5 ISAKMPOAKLEY"),
    ("4048b7d56ebce88525e7de7f00d6c2d3", "FRAGMENTATION"),
    ("12f5f28c457168a9702d9fe274cc", "Cisco Unity"),
    ("882fe56d6fd20dbc2251613b2ebe5beb", "strongSwan"),
)

_MS_NT5_VERSIONS = {
    2: "Windows 2000", 3: "Windows XP", 4: "Windows Server 2003", 5: "Windows Vista",
    6: "Windows Server 2008 / Windows 7", 7: "Windows 7 / Server 2008 R2", 8: "Windows 8 / Server 2012",
    9: "Windows 10", 10: "Windows 10 / Server 2016",
}

KNOWN: dict[bytes, str] = {}
for _name, _text in _MD5_OF.items():
    KNOWN[md5(_text.encode()).digest()] = _name
for _name, _hex in _EXACT_HEX.items():
    KNOWN.setdefault(bytes.fromhex(_hex), _name)
_PREFIXES = tuple((bytes.fromhex(h), n) for h, n in _PREFIX_HEX)


def vendor_name(vid: bytes) -> str | None:
    """Name of a known vendor ID, or None.

    >>> vendor_name(bytes.fromhex("4a131c81070358455c5728f20e95452f"))
    'RFC 3947 NAT-T'
    """
    name = KNOWN.get(bytes(vid))
    if name is not None:
        return name
    for prefix, pname in _PREFIXES:
        if vid[: len(prefix)] == prefix:
            if pname.startswith("Microsoft NT5") and len(vid) == 20:
                ver = int.from_bytes(vid[16:20], "big")
                return f"{pname} ({_MS_NT5_VERSIONS.get(ver, f'version {ver}')})"
            if pname == "Cisco Unity" and len(vid) >= 16:
                return f"Cisco Unity {vid[14]}.{vid[15]}"
            return pname
    # Openswan/Libreswan send 12 printable bytes starting with "OE" (a truncated, base64 hash).
    if len(vid) == 12 and vid[:2] == b"OE" and all(0x20 < c < 0x7F for c in vid):
        return "Openswan/Libreswan (OE)"
    # Some vendors send readable text (Cisco IKEv2: "CISCO(COPYRIGHT)&Copyright (c) 2009 Cisco
    # Systems, Inc.", "FLEXVPN-SUPPORTED"); show it as it is. A hash is never all printable.
    if len(vid) >= 6 and all(0x20 <= c < 0x7F for c in vid):
        text = bytes(vid).decode("ascii")
        return f'"{text[:60]}…"' if len(text) > 60 else f'"{text}"'
    return None
