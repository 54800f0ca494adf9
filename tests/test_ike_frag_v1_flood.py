"""A flood of IKEv1 fragments (payload 132) that never complete keeps memory bounded, and every
piece refused or set given up is a counted, visible malformed mark (state/ikev1_frag,
decode/fragsets).

The flood is a real capture's piece (tests/data/ikev1-frag/mm-frag-never.pcap frame 5: strongSwan's
MM5 fragment 2/2, whose fragment 1 never arrived) sent again under thousands of Fragment IDs, as
a broken or hostile sender would: written with scapy into a pcap in the test's temporary
directory, then read by the session, ``findings`` and ``summary`` as any capture is. Before the
bounds, every Fragment ID became a set listed on the IKE SA forever (and one finding each), and
nothing said pieces had been dropped.
"""

from __future__ import annotations

import json
import struct
import subprocess
from pathlib import Path

import pytest
from conftest import DATA, IPSECSCOPE

from ipsecscope.session import Session
from ipsecscope.state.ikev1_frag import (
    MAX_BYTES,
    MAX_FRAGMENTS,
    MAX_PENDING,
    MAX_SETS_PER_SA,
    MAX_TOTAL_BYTES,
)

scapy = pytest.importorskip("scapy.all")

REAL = DATA / "ikev1-frag" / "mm-frag-never.pcap"
FLOOD = 3000  # Fragment IDs, each one piece that never completes


def _real_piece() -> tuple[bytes, int, int]:
    """The real piece's ISAKMP bytes, its capture time, and its Fragment payload's offset."""
    s = Session()
    s.load(REAL)
    msg = s.ike_messages[5]
    assert msg.non_esp_marker and msg.raw[16] == 132  # next payload: Fragment
    return msg.raw, int(msg.ts), 28


def _piece(raw: bytes, off: int, frag_id: int, number: int, last: bool, data: bytes | None = None) -> bytes:
    """``raw`` with another Fragment ID / number / last flag (and optionally other data), the
    ISAKMP and payload lengths kept right."""
    body = raw[off + 8:] if data is None else data
    frag = struct.pack("!BBHHBB", 0, 0, 8 + len(body), frag_id, number, int(last)) + body
    head = bytearray(raw[:off])
    struct.pack_into("!I", head, 24, off + len(frag))
    return bytes(head) + frag


def _write(path: Path, pieces: list[bytes], t0: int) -> None:
    pkts = []
    for i, p in enumerate(pieces):
        pkt = (scapy.Ether() / scapy.IP(src="198.18.0.1", dst="198.18.0.2")
               / scapy.UDP(sport=4500, dport=4500) / scapy.Raw(b"\0\0\0\0" + p))  # non-ESP marker, RFC 3948 §2.2
        pkt.time = t0 + i * 0.001
        pkts.append(pkt)
    scapy.wrpcap(str(path), pkts)


@pytest.fixture(scope="module")
def flood(tmp_path_factory: pytest.TempPathFactory) -> Path:
    raw, t0, off = _real_piece()
    path = tmp_path_factory.mktemp("v1flood") / "flood.pcap"
    _write(path, [_piece(raw, off, 1000 + i, 2, True) for i in range(FLOOD)], t0)
    return path


def test_flood_of_fragment_ids_is_bounded_and_marked(flood: Path) -> None:
    s = Session()
    s.load(flood)
    r = s.v1_fragments
    assert r is not None
    assert r.fragments == FLOOD and r.reassembled == 0
    assert len(r.pending()) == MAX_PENDING and r.given_up == FLOOD - MAX_PENDING
    # every piece whose arrival gave up the oldest set carries the mark, and is counted
    assert s.stats.malformed == {"ike": FLOOD - MAX_PENDING}
    marked = [m for m in s.ike_messages.values() if m.malformed]
    assert len(marked) == FLOOD - MAX_PENDING
    assert marked[0].frame == MAX_PENDING + 1
    assert "IKEv1 fragment limit: more than 256 incomplete messages at once; gave up Fragment ID 1000 " \
           "from 198.18.0.1 (pieces in frames 1)" == marked[0].malformed
    (sa,) = s.table.ike_sas.values()
    assert len(sa.v1_fragment_sets) == MAX_SETS_PER_SA
    assert sa.v1_fragment_sets_over == FLOOD - MAX_SETS_PER_SA
    # one finding for the flood, not one per Fragment ID
    lost = [f for f in s.findings if f.code == "IKE-FRAGMENT-LOST"]
    assert len(lost) == 1 and f"{FLOOD} IKEv1 fragmented messages" in lost[0].title
    assert "given up at a reassembly limit" in lost[0].explanation
    assert any(f.code == "CAPTURE-MALFORMED" for f in s.findings)


def test_flood_in_summary_is_counted(flood: Path) -> None:
    out = subprocess.run([*IPSECSCOPE, "summary", "--json", str(flood)], capture_output=True, text=True,
                         check=True).stdout
    doc = json.loads(out)
    assert doc["counts"]["ike"] == FLOOD
    assert doc["counts"]["malformed"] == doc["malformed"]["by_layer"]["ike"] == FLOOD - MAX_PENDING
    assert doc["malformed"]["examples"][0]["reason"].startswith("IKEv1 fragment limit: more than 256")
    # the sets still held at the end are the ones listed lost; the rows of those given up say so
    assert len(doc["ike_fragments_lost"]) == MAX_PENDING
    assert {d["fragment_id"] for d in doc["ike_fragments_lost"]} == set(range(1000 + FLOOD - MAX_PENDING, 1000 + FLOOD))
    given_up = [r for r in doc["ike"] if r["fragment"]["given_up"]]
    assert len(given_up) == FLOOD - MAX_PENDING
    assert given_up[0]["fragment"]["given_up"] == "more than 256 incomplete messages at once"


def test_big_pieces_bounded_in_bytes(tmp_path: Path) -> None:
    """Pieces of 60 000 bytes: one message past MAX_BYTES is given up, and all incomplete ones
    together never hold more than MAX_TOTAL_BYTES; the number 0 and one past MAX_FRAGMENTS are
    refused. Every drop is a malformed mark."""
    raw, t0, off = _real_piece()
    data = bytes(range(256)) * 234  # 59 904 bytes
    one = [_piece(raw, off, 7, n, False, data) for n in range(1, MAX_BYTES // len(data) + 2)]
    many = [_piece(raw, off, 100 + i, 1, False, data) for i in range(100)]
    odd = [_piece(raw, off, 9, 0, False), _piece(raw, off, 9, MAX_FRAGMENTS + 1, True)]
    path = tmp_path / "big.pcap"
    _write(path, one + many + odd, t0)
    s = Session()
    s.load(path)
    r = s.v1_fragments
    assert r is not None
    held = r._pending  # noqa: SLF001 - the bound itself is what is tested
    assert held.bytes <= MAX_TOTAL_BYTES and held.bytes == len(held) * len(data)
    assert len(held) == MAX_TOTAL_BYTES // len(data)
    reasons = [m.malformed for _, m in sorted(s.ike_messages.items()) if m.malformed]
    assert reasons[0] == (f"IKEv1 fragment limit: more than {MAX_BYTES} bytes in pieces of one message; gave up "
                          f"Fragment ID 7 from 198.18.0.1 (pieces in frames 1, 2, 3, 4)")
    assert sum("bytes held in incomplete messages" in x for x in reasons) == 100 - len(held)
    # number 0: the decoder's mark (one is enough); past MAX_FRAGMENTS: the reassembler's
    assert reasons[-2:] == ["payload 1 (FRAG): fragment number 0 (pieces are numbered from 1)",
                            f"IKEv1 fragment number {MAX_FRAGMENTS + 1} outside 1..{MAX_FRAGMENTS}: not reassembled"]
    assert s.stats.malformed == {"ike": len(reasons)} and r.refused == 2
