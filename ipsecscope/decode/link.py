"""Link layers: find where the IP header starts in a captured frame.

:func:`ip_offset` returns ``(ip_version, offset)``; ``ip_version`` is 4 or 6, or one of
``NOT_IP`` (ARP, LLDP, ...: not ours), ``TRUNCATED`` (the link header itself is cut off) or
``UNSUPPORTED`` (a link type we do not decode). Pure offsets over bytes: no objects per frame.
"""

from __future__ import annotations

NOT_IP = 0
TRUNCATED = -1
UNSUPPORTED = -2

ETH_IPV4 = 0x0800
ETH_IPV6 = 0x86DD
# 802.1Q customer tag, 802.1ad service tag (QinQ), and the pre-standard 0x9100 QinQ tag.
VLAN_TPIDS = frozenset((0x8100, 0x88A8, 0x9100, 0x9200))
# MPLS label stacks (RFC 3032; unicast, multicast) and PPPoE sessions (RFC 2516) carry IP on many
# provider and DSL links where VPN traffic is captured: the generic decoder walks both.
ETH_MPLS = frozenset((0x8847, 0x8848))
ETH_PPPOE = 0x8864
# PPP protocol numbers (RFC 1332 IPv4, RFC 5072 IPv6)
PPP_IPV4, PPP_IPV6 = 0x0021, 0x0057
# Ethertypes ip_offset looks behind for IP (besides IP itself and the VLAN tags it steps over).
ETH_CARRIERS = ETH_MPLS | {ETH_PPPOE}

# BSD loopback (LINKTYPE_NULL / LOOP) address families: AF_INET is 2 everywhere; AF_INET6 is
# 24 (NetBSD/OpenBSD), 28 (FreeBSD), 30 (macOS), 10 (Linux).
AF_INET = 2
AF_INET6 = frozenset((10, 24, 28, 30))

LINK_NAMES = {
    0: "BSD loopback (NULL)",
    1: "Ethernet",
    101: "raw IP",
    108: "OpenBSD loopback (LOOP)",
    9: "PPP",
    50: "PPP in HDLC-like framing",
    104: "Cisco HDLC",
    107: "Frame Relay",
    113: "Linux cooked (SLL)",
    117: "OpenBSD pflog",
    239: "Linux NFLOG",
    228: "raw IPv4",
    229: "raw IPv6",
    276: "Linux cooked v2 (SLL2)",
    109: "OpenBSD enc",
    133: "Juniper GGSN",
    136: "Juniper services",
    167: "Juniper PPPoE",
    178: "Juniper Ethernet",
    179: "Juniper PPP",
    180: "Juniper Frame Relay",
    181: "Juniper C-HDLC",
}

# LINKTYPE_ENC (OpenBSD enc(4), the IPsec pseudo-interface): a 12-octet header (address family,
# SPI, flags; the family and flags in the capturing host's byte order, the SPI in network order:
# tcpdump print-enc.c, Wireshark packet-enc.c) before the packet as the IPsec stack hands it over:
# the cleartext side of the SA, after decryption inbound and before encryption outbound (tunnel
# mode: the IP-in-IP packet between the gateways around the inner one).
ENC_HDRLEN = 12
ENC_M_CONF, ENC_M_AUTH, ENC_M_COMP, ENC_M_AUTH_AH = 0x0400, 0x0800, 0x1000, 0x2000

# Juniper's capture header (DLT_JUNIPER_*, libpcap pcap-linktype(7); tcpdump print-juniper.c,
# Wireshark packet-juniper.c): "MGC", a flags octet, optional extension TLVs (their total length
# in 2 octets), then the link header the link type names, or none ("no L2" flag: a 4-octet
# little-endian JUNOS protocol number instead).
JUNIPER_MAGIC = b"MGC"
JUNIPER_FLAG_PKT_IN, JUNIPER_FLAG_NO_L2, JUNIPER_FLAG_EXT = 0x01, 0x02, 0x80
# JUNOS protocol numbers of a frame without its link header that carry IP (Wireshark's
# "juniper.proto" table: 2 IP, 3 MPLS_IP and 6 IP6, 7 MPLS_IP6 are dissected as IP)
JUNIPER_PROTO_IPV4 = frozenset((2, 3))
JUNIPER_PROTO_IPV6 = frozenset((6, 7))
JUNIPER_PROTO_IPV4_SKIP4 = 0xA248  # 4 unknown octets, then IPv4 (packet-juniper.c)
# Juniper link types whose link header is Ethernet (the PPPoE PIC's frames are Ethernet's)
JUNIPER_ETHERNET = frozenset((178, 167))
JUNIPER_LINKTYPES = frozenset((133, 136, 167, 178, 179, 180, 181))


def link_ethertype(linktype: int, data: bytes) -> int | None:
    """The EtherType of a frame that is not IP (past any VLAN tags; ``0`` for an 802.3
    length-field frame), for Ethernet and Linux cooked captures; None for IP, a cut-off link
    header or another link type. Only called for the rare frame that is neither IPsec nor IP."""
    if linktype in JUNIPER_ETHERNET:  # the Ethernet frame behind Juniper's header
        at = _juniper_head(data)
        return link_ethertype(1, data[at:]) if at >= 0 else None
    n = len(data)
    if linktype == 1:
        if n < 14:
            return None
        etype, off = (data[12] << 8) | data[13], 14
        while etype in VLAN_TPIDS:
            if n < off + 4:
                return None
            etype, off = (data[off + 2] << 8) | data[off + 3], off + 4
        if etype < 0x0600:
            return 0
    elif linktype == 113 and n >= 16:
        etype = (data[14] << 8) | data[15]
    elif linktype == 276 and n >= 20:
        etype = (data[0] << 8) | data[1]
    else:
        return None
    if etype in ETH_CARRIERS and ip_offset(linktype, data)[0] in (4, 6):
        return None
    return None if etype in (ETH_IPV4, ETH_IPV6) else etype


def _mac(b: bytes) -> str:
    return ":".join(f"{x:02x}" for x in b)


def link_addresses(linktype: int, data: bytes) -> tuple[str, str]:
    """(source, destination) MAC addresses of a frame that is not IP, as tshark's Source and
    Destination columns show them (Ethernet: both; Linux cooked SLL/SLL2 keep only the source, an
    address of 6 octets); ("", "") for other link types. Never filter fields: ``ip.src`` is an IP
    address only. Called on display for the few non-IP rows in view: the row store keeps no MACs."""
    if linktype in JUNIPER_ETHERNET:
        at = _juniper_head(data)
        return link_addresses(1, data[at:]) if at >= 0 else ("", "")
    n = len(data)
    if linktype == 1 and n >= 14:
        return _mac(data[6:12]), _mac(data[0:6])
    if linktype == 113 and n >= 16 and (data[4] << 8 | data[5]) == 6:  # SLL: halen, then 8 octets
        return _mac(data[6:12]), ""
    if linktype == 276 and n >= 20 and data[11] == 6:  # SLL2: halen at 11, address at 12
        return _mac(data[12:18]), ""
    return "", ""


def _ethertype(etype: int, off: int, data: bytes | None = None) -> tuple[int, int]:
    if etype == ETH_IPV4:
        return 4, off
    if etype == ETH_IPV6:
        return 6, off
    if data is not None:
        if etype in ETH_MPLS:
            return _mpls(data, off)
        if etype == ETH_PPPOE:
            return _pppoe(data, off)
    return NOT_IP, off


def _mpls(data: bytes, off: int) -> tuple[int, int]:
    """Past an MPLS label stack (RFC 3032 §2.1: 4 octets a label, S bit = bottom of stack): no
    field names the payload, so the first nibble tells IPv4 or IPv6 as for any MPLS LSR (RFC 3032
    §2.2: the label's FEC implies it); anything else (a pseudowire) is not IP."""
    n = len(data)
    while True:
        if n < off + 4:
            return TRUNCATED, off + 4
        bottom = data[off + 2] & 1
        off += 4
        if bottom:
            break
    if n <= off:
        return TRUNCATED, off + 1
    v = data[off] >> 4
    if v in (4, 6):
        return v, off
    # An Ethernet pseudowire (RFC 4448 §3): the customer's frame, behind a 4-octet control word
    # whose first nibble is 0 where one is used. No field says which: tshark guesses from the MAC
    # addresses' vendors; here the frame that leads to IP wins, plain first as tshark tries.
    for skip in (0, 4) if v == 0 else (0,):
        if n >= off + skip + 14:
            ver, at = ip_offset(1, data[off + skip:])
            if ver in (4, 6):
                return ver, off + skip + at
    return NOT_IP, off


def _ppp_protocol(proto: int, off: int) -> tuple[int, int]:
    if proto == PPP_IPV4:
        return 4, off
    if proto == PPP_IPV6:
        return 6, off
    return NOT_IP, off


def _pppoe(data: bytes, off: int) -> tuple[int, int]:
    """PPPoE session stage (RFC 2516 §5.3): version/type, code 0, session id, length (6 octets),
    then the PPP protocol field (2 octets, RFC 1661 §2)."""
    if len(data) < off + 8:
        return TRUNCATED, off + 8
    if data[off] != 0x11 or data[off + 1] != 0:  # version 1, type 1; code 0 = session data
        return NOT_IP, off
    return _ppp_protocol((data[off + 6] << 8) | data[off + 7], off + 8)


NFULA_PAYLOAD = 9  # the logged packet's TLV in an NFLOG record


def _nflog(data: bytes) -> tuple[int, int]:
    """LINKTYPE_NFLOG (Linux iptables/nftables NFLOG, as libreswan's test suite captures): a 4-octet
    header (address family, version 0, resource id), then TLVs (length incl. its 4-octet head,
    type; both in the writing host's byte order, each padded to 4 octets); the packet is the
    NFULA_PAYLOAD value. Byte order: the one in which the first TLV's length fits the frame."""
    n = len(data)
    if n < 8:
        return TRUNCATED, 8
    fam = data[0]
    little = 4 <= int.from_bytes(data[4:6], "little") <= n - 4
    p = 4
    while p + 4 <= n:
        tlen = int.from_bytes(data[p:p + 2], "little" if little else "big")
        ttype = int.from_bytes(data[p + 2:p + 4], "little" if little else "big")
        if tlen < 4:
            return NOT_IP, p
        if ttype == NFULA_PAYLOAD:
            if p + tlen > n:
                return TRUNCATED, p + tlen
            off = p + 4
            v = data[off] >> 4 if off < n else 0
            if fam == AF_INET and v == 4 or fam in AF_INET6 and v == 6:
                return v, off
            return NOT_IP, off
        p += (tlen + 3) & ~3
    return TRUNCATED, p + 4


def _pflog(data: bytes) -> tuple[int, int]:
    """LINKTYPE_PFLOG (OpenBSD pf's log): header length in octet 0 (padded to 4 octets), the
    address family in octet 1 (the logging host's AF_INET / AF_INET6), then the packet."""
    n = len(data)
    if n < 4:
        return TRUNCATED, 4
    off = (data[0] + 3) & ~3
    if off < 4 or n < off + 1:
        return TRUNCATED, max(off + 1, 4)
    fam = data[1]
    v = data[off] >> 4
    if fam == AF_INET and v == 4 or fam in AF_INET6 and v == 6:
        return v, off
    return NOT_IP, off


# RFC 2427 §3 NLPIDs (ISO/IEC TR 9577) for IP routed over Frame Relay; 0x80 = a SNAP header follows.
NLPID_IPV4, NLPID_IPV6, NLPID_SNAP = 0xCC, 0x8E, 0x80


def _frelay(data: bytes, start: int = 0) -> tuple[int, int]:
    """LINKTYPE_FRELAY: the Q.922 address (2 to 4 octets: each one's low bit, EA, is set in the
    last), the UI control octet 0x03, optional 0x00 padding, then the NLPID (RFC 2427 §3): IPv4,
    IPv6, or SNAP (OUI 00-00-00, then an Ethertype; RFC 2427 §4.1). ``start``: where the frame
    starts (behind a capture header)."""
    n = len(data)
    off = start
    while off < min(n, start + 4) and not data[off] & 1:
        off += 1
    off += 1  # the octet with EA set
    if n < off + 2:
        return TRUNCATED, off + 2
    if data[off] != 0x03:  # not a UI frame: Q.933 signalling or another control field
        return NOT_IP, off
    off += 1
    if data[off] == 0x00:  # RFC 2427 §3: a pad octet aligns what follows
        off += 1
        if n <= off:
            return TRUNCATED, off + 1
    nlpid = data[off]
    if nlpid == NLPID_IPV4:
        return 4, off + 1
    if nlpid == NLPID_IPV6:
        return 6, off + 1
    if nlpid == NLPID_SNAP:
        if n < off + 6:
            return TRUNCATED, off + 6
        if data[off + 1:off + 4] == b"\0\0\0":
            return _ethertype((data[off + 4] << 8) | data[off + 5], off + 6, data)
    return NOT_IP, off


def _ppp(data: bytes) -> tuple[int, int]:
    """LINKTYPE_PPP / PPP_HDLC: optional address/control 0xff 0x03 (RFC 1662 §3.1), then the
    protocol field: 2 octets, or 1 when compressed (odd first octet, RFC 1661 §6.5)."""
    off = 2 if data[:2] == b"\xff\x03" else 0
    n = len(data)
    if n <= off:
        return TRUNCATED, off + 2
    if data[off] & 1:
        return _ppp_protocol(data[off], off + 1)
    if n < off + 2:
        return TRUNCATED, off + 2
    return _ppp_protocol((data[off] << 8) | data[off + 1], off + 2)


def _ether(data: bytes, off: int) -> tuple[int, int]:
    """An Ethernet II frame starting at ``off``; VLAN tags may be stacked (802.1ad QinQ)."""
    n = len(data)
    if n < off + 14:
        return TRUNCATED, off + 14
    etype = (data[off + 12] << 8) | data[off + 13]
    off += 14
    while etype in VLAN_TPIDS:
        if n < off + 4:
            return TRUNCATED, off + 4
        etype = (data[off + 2] << 8) | data[off + 3]
        off += 4
    if etype < 0x0600:  # 802.3 length field + LLC: not IP over Ethernet II
        return NOT_IP, off
    return _ethertype(etype, off, data)


def _host_u32(b: bytes) -> int:
    """A 32-bit field in the byte order of the host that wrote it (a small value: the half that
    is zero tells, as for LINKTYPE_NULL's family)."""
    v = int.from_bytes(b, "little")
    return int.from_bytes(b, "big") if v > 0xFFFF else v


def enc_header(data: bytes) -> tuple[int, int] | None:
    """LINKTYPE_ENC's (SPI, flags), or None when the header is cut off."""
    if len(data) < ENC_HDRLEN:
        return None
    return int.from_bytes(data[4:8], "big"), _host_u32(data[8:12])


def enc_flags_text(flags: int) -> str:
    """The SA's protection as tcpdump prints it: "authentic, confidential", "unprotected"."""
    words = [w for bit, w in ((ENC_M_AUTH, "authentic"), (ENC_M_CONF, "confidential"), (ENC_M_COMP, "compressed"),
                              (ENC_M_AUTH_AH, "AH")) if flags & bit]
    return ", ".join(words) or "unprotected"


def _enc(data: bytes) -> tuple[int, int]:
    if len(data) < ENC_HDRLEN:
        return TRUNCATED, ENC_HDRLEN
    fam = _host_u32(data[0:4])
    if fam == AF_INET:
        return 4, ENC_HDRLEN
    if fam in AF_INET6:
        return 6, ENC_HDRLEN
    return NOT_IP, ENC_HDRLEN


def _juniper_head(data: bytes) -> int:
    """Where the link header starts behind Juniper's capture header; -1 when there is none (not
    "MGC", cut off, or the "no L2" flag: :func:`_juniper` reads those)."""
    n = len(data)
    if n < 4 or data[:3] != JUNIPER_MAGIC:
        return -1
    off = 4
    if data[3] & JUNIPER_FLAG_EXT:
        if n < 6:
            return -1
        off = 6 + ((data[4] << 8) | data[5])
    return -1 if data[3] & JUNIPER_FLAG_NO_L2 or off > n else off


def _juniper(linktype: int, data: bytes) -> tuple[int, int]:
    """DLT_JUNIPER_* as Wireshark's packet-juniper.c reads them (tshark is the reference here):
    the common header, then per link type Ethernet (ETHER, PPPOE), PPP behind 2 octets (PPP), Frame
    Relay (FRELAY), Cisco HDLC (CHDLC), IP behind a 12-octet (outbound) or 16-octet (inbound)
    service cookie (SERVICES: the MS/AS-PIC, where Junos runs IPsec services), or IP by a
    little-endian protocol number and VLAN (GGSN). Not "MGC": not a Juniper frame (tshark
    dissects nothing in it)."""
    n = len(data)
    if n < 4:
        return TRUNCATED, 4
    if data[:3] != JUNIPER_MAGIC:
        return NOT_IP, 0
    flags = data[3]
    off = 4
    if flags & JUNIPER_FLAG_EXT:
        if n < 6:
            return TRUNCATED, 6
        off = 6 + ((data[4] << 8) | data[5])
    if flags & JUNIPER_FLAG_NO_L2:
        if n < off + 4:
            return TRUNCATED, off + 4
        return _juniper_proto(int.from_bytes(data[off:off + 4], "little"), off + 4, n)
    if linktype in JUNIPER_ETHERNET:
        return _ether(data, off)
    if linktype == 179:  # PPP: 2 octets (address, control) before the protocol field
        if n < off + 4:
            return TRUNCATED, off + 4
        return _ppp_protocol((data[off + 2] << 8) | data[off + 3], off + 4)
    if linktype == 180:
        return _frelay(data, off)
    if linktype == 181:  # Cisco HDLC: address, control, Ethertype
        if n < off + 4:
            return TRUNCATED, off + 4
        return _ethertype((data[off + 2] << 8) | data[off + 3], off + 4, data)
    if linktype == 136:
        off += 16 if flags & JUNIPER_FLAG_PKT_IN else 12
        return (4, off) if n > off else (TRUNCATED, off + 1)
    # 133, GGSN: protocol (2 octets, little-endian), VLAN ID (2), then the packet
    if n < off + 4:
        return TRUNCATED, off + 4
    return _juniper_proto(data[off] | (data[off + 1] << 8), off + 4, n)


def _juniper_proto(proto: int, off: int, n: int) -> tuple[int, int]:
    if proto == JUNIPER_PROTO_IPV4_SKIP4:
        proto, off = 2, off + 4
    if proto in JUNIPER_PROTO_IPV4:
        return (4, off) if n > off else (TRUNCATED, off + 1)
    if proto in JUNIPER_PROTO_IPV6:
        return (6, off) if n > off else (TRUNCATED, off + 1)
    return NOT_IP, off


def ip_offset(linktype: int, data: bytes) -> tuple[int, int]:
    """Where IP starts in ``data`` for ``linktype`` (tcpdump.org LINKTYPE_* numbers)."""
    n = len(data)
    if linktype == 1:  # Ethernet II
        return _ether(data, 0)
    if linktype == 101:  # raw IP, version from the first nibble
        if n < 1:
            return TRUNCATED, 1
        v = data[0] >> 4
        return (v, 0) if v in (4, 6) else (NOT_IP, 0)
    if linktype == 228:
        return 4, 0
    if linktype == 229:
        return 6, 0
    if linktype == 113:  # Linux cooked v1: protocol at offset 14 (16-byte header)
        if n < 16:
            return TRUNCATED, 16
        return _ethertype((data[14] << 8) | data[15], 16, data)
    if linktype == 276:  # Linux cooked v2: protocol at offset 0 (20-byte header)
        if n < 20:
            return TRUNCATED, 20
        return _ethertype((data[0] << 8) | data[1], 20, data)
    if linktype == 9 or linktype == 50:
        return _ppp(data)
    if linktype == 104:  # Cisco HDLC: address (0x0f unicast, 0x8f broadcast), control 0, Ethertype
        if n < 4:
            return TRUNCATED, 4
        return _ethertype((data[2] << 8) | data[3], 4, data)
    if linktype == 107:
        return _frelay(data)
    if linktype == 239:
        return _nflog(data)
    if linktype == 117:
        return _pflog(data)
    if linktype == 109:
        return _enc(data)
    if linktype in JUNIPER_LINKTYPES:
        return _juniper(linktype, data)
    if linktype == 0 or linktype == 108:
        if n < 4:
            return TRUNCATED, 4
        if linktype == 108:  # LOOP: family in network byte order
            fam = int.from_bytes(data[:4], "big")
        else:  # NULL: host byte order of the capturing machine; guess by which half is zero
            fam = int.from_bytes(data[:4], "little")
            if fam > 0xFFFF:
                fam = int.from_bytes(data[:4], "big")
        if fam == AF_INET:
            return 4, 4
        if fam in AF_INET6:
            return 6, 4
        return NOT_IP, 4
    return UNSUPPORTED, 0
