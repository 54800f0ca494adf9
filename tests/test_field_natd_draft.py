"""NAT-D numbered as NAT-T drafts 04-08 number it (tests/data/tcpdump: ISAKMP_sa_setup.pcap, BSD,
two Cisco routers in 2008). MM2 agrees on draft-ietf-ipsec-nat-t-ike-07 by Vendor ID, and MM3/MM4
end with two payloads of type 15 holding 20 octets each: NAT-D as drafts 04-08 numbered it before
RFC 3947 gave it 20 (racoon calls 15 "NATD_BADDRAFT"); 15 is GDOI's SAK (RFC 3547), which only
travels in GROUPKEY-PULL/PUSH. tshark reads them as SAK and marks the frames malformed;
ipsecscope listed "SAK SAK" and never checked NAT. The hashes are SHA-1(CKY-I | CKY-R | IP | port)
of the addresses captured (recomputed here from tshark's udp.payload): no NAT, and now the SA says
so (checked, none) instead of not knowing."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import struct
import subprocess

from conftest import field_cli as cli
from conftest import needs_tshark, public

CAP = public("tcpdump/ISAKMP_sa_setup.pcap")  # third-party: materialised at test time (tests/public_data.py)


def _tshark(frame: int, *fields: str) -> list[str]:
    out = subprocess.run(["tshark", "-n", "-r", str(CAP), "-Y", f"frame.number == {frame}", "-T", "fields",
                          *(a for f in fields for a in ("-e", f))], capture_output=True, text=True, timeout=60,
                         check=True).stdout
    return out.rstrip("\n").split("\t")


def _chain(msg: bytes) -> list[tuple[int, bytes]]:
    """(type, body) of each payload of an unencrypted ISAKMP message (RFC 2408 §3.1, §3.2)."""
    out, ptype, off = [], msg[16], 28
    while ptype:
        nxt, plen = msg[off], struct.unpack_from("!H", msg, off + 2)[0]
        out.append((ptype, msg[off + 4:off + plen]))
        ptype, off = nxt, off + plen
    return out


def _natd(msg: bytes, addr: str, port: str) -> bytes:
    return hashlib.sha1(msg[:16] + ipaddress.ip_address(addr).packed + int(port).to_bytes(2, "big")).digest()


@needs_tshark
def test_type_15_payloads_are_draft_nat_d_over_the_captured_addresses() -> None:
    assert "draft-ietf-ipsec-nat-t-ike-07" in _tshark(2, "isakmp.vid_string")[0]
    for frame in (3, 4):
        payload, src, dst, sport, dport, malformed = _tshark(frame, "udp.payload", "ip.src", "ip.dst", "udp.srcport",
                                                             "udp.dstport", "_ws.malformed")
        assert malformed  # tshark: GDOI SAK read over a hash
        msg = bytes.fromhex(payload)
        natd = [body for t, body in _chain(msg) if t == 15]
        assert natd == [_natd(msg, dst, dport), _natd(msg, src, sport)]  # RFC 3947 §3.2: the receiver's first


def test_rows_name_them_nat_d_and_the_sa_checked_nat() -> None:
    ike = {m["frame"]: m for m in json.loads(cli("summary", "--json", str(CAP)))["ike"]}
    for frame in (3, 4):
        assert ike[frame]["payloads"][-2:] == ["NAT_D_DRAFT", "NAT_D_DRAFT"] and ike[frame]["malformed"] is None
    (sa,) = json.loads(cli("sas", "--json", str(CAP)))["ike_sas"]
    assert sa["nat"]["initiator"] is False and sa["nat"]["responder"] is False  # checked: both hashes match
    assert "NAT_D_DRAFT NAT_D_DRAFT ]" in cli("packets", str(CAP)).splitlines()[2]


def test_tui_packet_detail_names_them_nat_d_too() -> None:
    """The TUI packet detail's payload rows say what `packets` and `summary` say (one naming rule,
    model.ike.phase1_payload_label): NAT_D_DRAFT in MM3/MM4, never GDOI's SAK."""
    from conftest import ike_messages

    from ipsecscope.tui.widgets.packet_detail import payload_name

    names = [[payload_name(p, 1) for p in msg.payloads] for msg in ike_messages(CAP)]
    drafts = [n for n in names if "NAT_D_DRAFT" in n]
    assert len(drafts) == 2 and all(n[-2:] == ["NAT_D_DRAFT", "NAT_D_DRAFT"] for n in drafts), names
    assert not any(x.startswith("SAK") for n in names for x in n)
