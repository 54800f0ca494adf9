"""AH quoted in an ICMP/ICMPv6 error (tests/data/ah/ah-quoted.pcap, make.py's quoted_packets):
read from the *quoted* IP header (RFC 792; RFC 4443 §2.4(c): the datagram from its IP header on),
never the error's own. A whole quote has its ICV checked over the quoted header (its IPv4
options, its IPv6 extension headers), as scapy's AH receiver checks the same bytes; a quote cut
off before the end is marked not verified; a quote is a copy of a packet already sent, counted
for no SA. Cut anywhere, a quote never raises.
"""

from __future__ import annotations

import json
import subprocess

from conftest import needs_tshark
from scapy.layers.inet import ICMP, IP
from scapy.layers.inet6 import IPv6
from scapy.layers.ipsec import AH, IPSecIntegrityError, SecurityAssociation
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from scapy.utils import PcapWriter, rdpcap
from test_ah import AH_DIR, SCAPY_ALGO, key_entries

from ipsecscope.decode.quoted import NOT_VERIFIED, VERIFIED
from ipsecscope.session import Session

CAP = AH_DIR / "ah-quoted.pcap"
KEYS = [AH_DIR / "ah-v4.keys.json", AH_DIR / "ah-v6.keys.json"]
ERRORS = (2, 4, 5, 6, 7, 9, 11, 12)  # the ICMP/ICMPv6 error frames
WHOLE, CUT = (2, 5, 6, 9, 12), (4, 7, 11)


def _quote(frame) -> bytes:
    """The quoted datagram of an error frame: after the ICMP/ICMPv6 header (8 octets) behind the
    error's own IP header (none of these errors has options or extension headers)."""
    ip = bytes(frame[Ether].payload)
    return ip[(ip[0] & 15) * 4 + 8:] if ip[0] >> 4 == 4 else ip[48:]


def _scapy_verdict(quote: bytes) -> bool:
    keys = {**key_entries(KEYS[0]), **key_entries(KEYS[1])}
    ip = IP(quote) if quote[0] >> 4 == 4 else IPv6(quote)
    k = keys[ip[AH].spi]
    sa = SecurityAssociation(AH, spi=ip[AH].spi, auth_algo=SCAPY_ALGO[k["integ"]], auth_key=bytes.fromhex(k["auth_key"]))
    try:
        sa.decrypt(ip)
        return True
    except IPSecIntegrityError:
        return False


def test_whole_quotes_are_checked_over_the_quoted_header_as_scapy_checks_them():
    s = Session.from_files([CAP], KEYS)
    frames = rdpcap(str(CAP))
    got = {f: s.quoted.ah(f) for f in ERRORS}
    assert all(q is not None and q.protocol == "AH" for q in got.values())
    for f in WHOLE:
        want = _scapy_verdict(_quote(frames[f - 1]))
        assert got[f].whole and got[f].verified == want, (f, got[f])
        assert got[f].status == (VERIFIED if want else "icv-bad")
    assert [f for f in WHOLE if got[f].verified] == [2, 5, 9, 12]  # frame 6's quote was corrupted
    for f in CUT:
        assert not got[f].whole and got[f].status == NOT_VERIFIED and "quote ends" in got[f].reason
    assert got[7].seq == -1 and "seq ?" in got[7].info()  # RFC 792's minimum: the SPI and no more
    assert (got[4].seq, got[11].seq) == (4, 2) and got[4].inner is not None  # cut: the payload as far as it goes
    # the quoted packet's addresses, the quoted payload (AH encrypts nothing)
    assert (got[2].src, got[2].dst, got[12].src) == ("198.18.0.1", "198.18.0.2", "2001:db8:b::2")
    assert "Echo (ping) request" in got[2].info() and "fd00:2::1 → fd00:1::1" in got[12].info()
    rows = {r.frame: r for r in s.rows}
    assert "quoted AH 0xa4000001 seq 1 ▸ ICMP Echo" in rows[2].info and "(icv-bad)" in rows[6].info
    assert "quoted AH 0xa4000001 seq 4 (cut off, not verified)" in rows[4].info
    # copies are counted for no SA: the four AH frames the capture carries, verified
    assert (s.stats.ah, s.stats.ah_verified, s.stats.ah_icv_failed) == (4, 4, 0)


def test_without_keys_a_whole_quote_says_so():
    s = Session.from_files([CAP], [])
    assert [s.quoted.ah(f).status for f in ERRORS] == ["no-key", NOT_VERIFIED, "no-key", "no-key", NOT_VERIFIED,
                                                        "no-key", NOT_VERIFIED, "no-key"]


@needs_tshark
def test_spi_and_sequence_are_tsharks(tmp_path):
    """tshark dissects the quoted AH header too: the same SPI and sequence number per error frame."""
    out = subprocess.run(["tshark", "-r", str(CAP), "-T", "fields", "-e", "frame.number", "-e", "ah.spi",
                          "-e", "ah.sequence"], capture_output=True, text=True, timeout=60, check=True).stdout
    theirs = {int(n): (int(spi, 16), int(seq) if seq else -1) for n, spi, seq in
              (line.split("\t") for line in out.splitlines())}
    s = Session.from_files([CAP], KEYS)
    assert {f: (s.quoted.ah(f).spi, s.quoted.ah(f).seq) for f in ERRORS} == {f: theirs[f] for f in ERRORS}


def test_a_quote_cut_anywhere_never_raises(tmp_path):
    """Every length of the two whole quotes (IPv4 with options, IPv6 behind extension headers), as
    a router's error quoting that much: a record marked not verified, or none when the quote ends
    before the SPI (nothing names an SA then); never an error."""
    from scapy.layers.inet6 import ICMPv6PacketTooBig

    frames = rdpcap(str(CAP))
    cap = tmp_path / "cut.pcap"
    n = 0
    with PcapWriter(str(cap), linktype=1) as w:
        for f in (5, 9):
            quote = _quote(frames[f - 1])
            for cut in range(len(quote)):
                if f == 5:
                    err = IP(src="198.18.9.9", dst="198.18.0.1") / ICMP(type=3, code=4, nexthopmtu=68) / Raw(quote[:cut])
                else:
                    err = IPv6(src="2001:db8:9::9", dst="2001:db8:a::1") / ICMPv6PacketTooBig(mtu=1280) / Raw(quote[:cut])
                w.write(Ether(src="02:00:00:00:00:02", dst="02:00:00:00:00:01") / err)
                n += 1
    s = Session.from_files([cap], KEYS)
    recs = [s.quoted.ah(i) for i in range(1, n + 1)]
    assert all(q is None or (not q.verified and q.status == NOT_VERIFIED) for q in recs)
    assert sum(q is not None for q in recs) > n // 2  # most cuts still show the quoted AH
    json.dumps([q.info() for q in recs if q is not None])
