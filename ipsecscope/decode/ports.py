"""Which UDP datagrams on the IKE ports are IKE: the port numbers (RFC 7296 §2, RFC 3948 §2) and
the rule for port 500 beside another well-known service's port, shared by the frame decoder
(decode/demux.py) and the readers of ICMP-quoted datagrams (decode/icmp.py, decode/inner.py).
"""

from __future__ import annotations

IKE_PORT = 500
NATT_PORT = 4500
IKE_HEADER_LEN = 28


def service_not_ike(sport: int, dport: int, body: bytes) -> bool:
    """A UDP datagram to or from port 500 whose other port is another well-known service's
    (1-1023, RFC 6335 §6: system ports) and whose payload is no IKE header: that service's reply
    or request (a DNS answer from port 53 sent to port 500), not a malformed IKE message.

    IKE is sent from and to port 500 (RFC 7296 §2.11); a NAT may rewrite the source port (RFC 7296
    §2.23, RFC 3948 §2), to a port a real peer still answers on, so an IKE header from any port
    stays IKE. What is not one -- shorter than the 28-octet header, a major version other than 1
    (RFC 2408 §3.1) or 2 (RFC 7296 §3.1), or a header Length below 28 -- is IKE only when both
    ports say nothing else: tshark's UDP dissector (packet-udp.c decode_udp_ports) tries the lower
    port's dissector first, so DNS on 53 -> 500 is DNS there too."""
    other = dport if sport == IKE_PORT else sport
    if not 0 < other < 1024 or other == IKE_PORT:
        return False
    if len(body) < IKE_HEADER_LEN:
        return True
    return body[17] >> 4 not in (1, 2) or (body[24] << 24 | body[25] << 16 | body[26] << 8 | body[27]) < IKE_HEADER_LEN
