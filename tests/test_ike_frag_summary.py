"""``summary`` (no keys) on IKE fragments: IKEv1 pieces (payload 132) are joined and the frame
completing a message lists that message; pieces of a message that never completed say which
fragment was lost; IKEv2 SKF rows (RFC 7383, not joinable without keys) name their numbers alike.

Before, every IKEv1 piece was a bare "FRAG" row of the piece's header: the engineer saw neither
that MM5/MM6 (ID, CERT, SIG, encrypted) had been sent and received whole, nor which piece of the
failing one never came. Data: tests/data/ikev1-frag (strongSwan 5.9.8, make.py), tests/data/ikev2-skf.
Oracles: the receiving charon's "reassembled fragmented IKE message (N bytes)" lines, and the
capture's own pieces.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from conftest import DATA, IPSECSCOPE

V1 = DATA / "ikev1-frag"
SKF = DATA / "ikev2-skf" / "gcm" / "capture.pcapng"


def _summary(path: Path, *args: str) -> dict:
    out = subprocess.run([*IPSECSCOPE, "summary", "--json", *args, str(path)], capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out)


def _text(path: Path) -> str:
    return subprocess.run([*IPSECSCOPE, "summary", str(path)], capture_output=True, text=True, check=True).stdout


def _rows(doc: dict) -> dict[int, dict]:
    return {r["frame"]: r for r in doc["ike"]}


@pytest.mark.parametrize("generic", [False, True])
def test_piece_lost_once_then_reassembled(generic: bool) -> None:
    doc = _summary(V1 / "mm-frag-lost.pcap", *(["--generic"] if generic else []))
    rows = _rows(doc)
    # fragment 2/2 came first (frame 5); fragment 1's first copy was lost, the resent one
    # (frame 6) completes MM5: that row is MM5 itself, encrypted, whole
    assert rows[5]["fragment"] == {"number": 2, "total": 2, "last": True, "fragment_id": 1, "msg_id": 0,
                                   "repeat": False, "lost": [], "given_up": None}
    mm5 = rows[6]
    assert mm5["reassembled_from"] == [6, 5]
    assert (mm5["exchange"], mm5["msg_id"], mm5["encrypted"]) == ("IDENTITY_PROTECTION", 0, True)
    assert mm5["payloads"] == ["ID", "<encrypted>"]
    assert rows[7]["fragment"]["repeat"] and rows[7]["reassembled_from"] == []
    # MM6's total is known at the end although its first piece came before the last-flagged one
    assert rows[8]["fragment"]["total"] == 2 and rows[9]["reassembled_from"] == [8, 9]
    # the lengths the receiving charons say they reassembled
    for log, frame in (("charon-right", 6), ("charon-left", 9)):
        (n,) = map(int, re.findall(r"reassembled fragmented IKE message \((\d+) bytes\)",
                                   (V1 / f"mm-frag-lost.{log}.log").read_text()))
        assert rows[frame]["length"] == n
    assert doc["ike_fragments_lost"] == []
    text = _text(V1 / "mm-frag-lost.pcap")
    assert "reassembled from 2 fragments (frames 6, 5; Fragment ID 1), encrypted" in text


def test_piece_never_arriving_is_named_lost() -> None:
    doc = _summary(V1 / "mm-frag-never.pcap")
    rows = _rows(doc)
    for frame in (5, 6, 7, 8):
        f = rows[frame]["fragment"]
        assert (f["number"], f["total"], f["lost"], f["repeat"]) == (2, 2, [1], frame > 5), frame
        assert rows[frame]["reassembled_from"] == []
    assert doc["ike_fragments_lost"] == [{
        "version": 1, "src": "198.18.0.1", "dst": "198.18.0.2", "exchange": "IDENTITY_PROTECTION", "exchange_type": 2, "is_response": False,
        "msg_id": 0, "fragment_id": 1, "total": 2, "lost": [1], "last_lost": False, "have": [2],
        "frames": [5, 6, 7, 8]}]
    text = _text(V1 / "mm-frag-never.pcap")
    assert ("fragment 1/2 of Main Mode message ID 0 198.18.0.1 → 198.18.0.2 (Fragment ID 1), lost "
            "(fragment 2/2 arrived: frames 5, 6, 7, 8)") in text
    assert "fragment 2/2 of message ID 0 (Fragment ID 1) again; fragment 1/2 lost" in text


def test_aggressive_mode_reassembled_in_cleartext() -> None:
    """AM2 is cleartext: the completed row lists its payloads, not encrypted."""
    rows = _rows(_summary(V1 / "am-cert-frag.pcap"))
    am2 = rows[3]
    assert am2["reassembled_from"] == [2, 3] and not am2["encrypted"]
    assert am2["payloads"][:6] == ["SA", "KE", "NONCE", "ID", "CERT", "CR"] and am2["payloads"][-1] == "SIG"
    assert rows[5]["reassembled_from"] == [4, 5] and rows[5]["encrypted"]


def test_skf_numbers_and_a_lost_one(tmp_path: Path) -> None:
    """IKEv2 SKF rows name fragment k/N as IKEv1 pieces do; with one fragment taken out of the
    real capture (frame 4: IKE_AUTH request fragment 2/3), it is named lost."""
    scapy = pytest.importorskip("scapy.all")
    rows = _rows(_summary(SKF))
    assert [(rows[f]["fragment"]["number"], rows[f]["fragment"]["total"]) for f in (3, 4, 5, 6, 7)] == [
        (1, 3), (2, 3), (3, 3), (1, 2), (2, 2)]
    assert all(rows[f]["fragment"]["lost"] == [] for f in (3, 4, 5, 6, 7))
    pkts = scapy.rdpcap(str(SKF))
    cut = tmp_path / "skf-lost.pcap"
    scapy.wrpcap(str(cut), [p for i, p in enumerate(pkts, 1) if i != 4])
    doc = _summary(cut)
    rows = _rows(doc)
    assert rows[3]["fragment"]["lost"] == [2] and rows[4]["fragment"]["number"] == 3  # renumbered frames
    (lost,) = doc["ike_fragments_lost"]
    assert (lost["version"], lost["exchange"], lost["is_response"], lost["msg_id"], lost["lost"], lost["have"]) == (
        2, "IKE_AUTH", False, 1, [2], [1, 3])
    assert "fragment 2/3 of IKE_AUTH request message ID 1 198.18.0.1 → 198.18.0.2, lost" in _text(cut)


def test_last_piece_missing_and_display_filter(tmp_path: Path) -> None:
    """mm-cert-frag without frame 6 (MM5's last-flagged piece): how many pieces there were is
    unknown, the last one is named lost. With -Y, pieces the filter leaves out are not lost."""
    scapy = pytest.importorskip("scapy.all")
    pkts = scapy.rdpcap(str(V1 / "mm-cert-frag.pcap"))
    cut = tmp_path / "mm5-last-lost.pcap"
    scapy.wrpcap(str(cut), [p for i, p in enumerate(pkts, 1) if i != 6])
    doc = _summary(cut)
    (lost,) = doc["ike_fragments_lost"]
    assert (lost["total"], lost["lost"], lost["last_lost"], lost["have"], lost["frames"]) == (None, [], True, [1], [5])
    assert _rows(doc)[5]["fragment"]["last_lost"] is True
    text = _text(cut)
    assert ("the last fragment (the one flagged last) of Main Mode message ID 0 198.18.0.1 → 198.18.0.2 (Fragment "
            "ID 1), lost (fragment 1 arrived: frame 5)") in text
    assert "fragment 1 of message ID 0 (Fragment ID 1); the last fragment lost" in text
    filtered = _summary(V1 / "mm-frag-lost.pcap", "-Y", "frame.number == 6")
    assert filtered["ike_fragments_lost"] == [] and _rows(filtered)[6]["fragment"]["lost"] == []
