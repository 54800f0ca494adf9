"""The packet list (``packets`` text and --json, the TUI's rows, ``packets -Y``) says of IKE
fragments what ``summary`` says, in the same words (state.ike_frag_rows): each piece "fragment
k/N of message ID X", the frame completing a message that message "reassembled from N
fragments", and the pieces of a message that never completed "...; fragment 1/2 lost".

Before, the packet rows built their own words (session_packets._v1_piece): a message that never
completed was not marked on its pieces, a piece seen before the last-flagged one stayed
"fragment 1" after the number of pieces was known, and SKF rows named no fragment at all.
Data: tests/data/ikev1-frag (strongSwan 5.9.8: MM5's first piece never captured in
mm-frag-never, lost once then resent in mm-frag-lost), tests/data/ikev2-skf/gcm; oracle for the
numbers: tshark's isakmp.frag.* fields on the same frames.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import DATA, IPSECSCOPE

from ipsecscope.session import Session
from ipsecscope.state.ike_frag_rows import fragment_text

V1 = DATA / "ikev1-frag"
SKF = DATA / "ikev2-skf" / "gcm"


def _packets(path: Path, *args: str) -> dict[int, str]:
    out = subprocess.run([*IPSECSCOPE, "packets", "--json", *args, "--", str(path)], capture_output=True,
                         text=True, check=True).stdout
    return {d["frame"]: d["info"] for d in map(json.loads, out.splitlines())}


def _summary_rows(path: Path) -> dict[int, dict]:
    out = subprocess.run([*IPSECSCOPE, "summary", "--json", str(path)], capture_output=True, text=True,
                         check=True).stdout
    return {r["frame"]: r for r in json.loads(out)["ike"]}


@pytest.mark.parametrize("name", ["mm-frag-never", "mm-frag-lost", "am-cert-frag", "mm-cert-frag"])
def test_rows_say_what_summary_says(name: str) -> None:
    """Every fragment row of summary (no keys) ends the packet row's Info with the same words."""
    rows = _summary_rows(V1 / f"{name}.pcap")
    info = _packets(V1 / f"{name}.pcap")
    frags = {f: r for f, r in rows.items() if r["fragment"]}
    assert frags
    for frame, r in frags.items():
        assert info[frame].endswith(" " + fragment_text(r)), (frame, info[frame])


@pytest.mark.parametrize("keys", [False, True])
def test_never_completed_pieces_are_marked_lost(keys: bool) -> None:
    args = ("-k", str(V1 / "mm-frag-never.charon-left.log")) if keys else ()
    info = _packets(V1 / "mm-frag-never.pcap", *args)
    assert info[5] == "Main Mode v1 #0 [ FRAG ] fragment 2/2 of message ID 0 (Fragment ID 1); fragment 1/2 lost"
    for frame in (6, 7, 8):
        assert info[frame].endswith("fragment 2/2 of message ID 0 (Fragment ID 1) again; fragment 1/2 lost")
    # a display filter picks rows of the whole capture: the piece it keeps is still lost
    (only,) = _packets(V1 / "mm-frag-never.pcap", "-Y", "frame.number == 6", *args).values()
    assert only.endswith("; fragment 1/2 lost")


def test_reassembled_with_and_without_keys() -> None:
    plain = _packets(V1 / "mm-frag-lost.pcap")
    keyed = _packets(V1 / "mm-frag-lost.pcap", "-k", str(V1 / "mm-frag-lost.charon-left.log"))
    assert plain[6] == "Main Mode v1 #0 [ ID ] reassembled from 2 fragments (frames 6, 5; Fragment ID 1), encrypted"
    assert keyed[6] == ("Main Mode v1 #0 [ ID CERT SIG CR N(INITIAL_CONTACT) ] (decrypted) reassembled from 2 "
                        "fragments (frames 6, 5; Fragment ID 1)")
    # frame 8 (MM6's first piece) came before the last-flagged one: 1/2 once frame 9 said so
    for info in (plain, keyed):
        assert info[8].endswith("fragment 1/2 of message ID 0 (Fragment ID 1)"), info[8]
        assert "lost" not in " ".join(info.values())


def test_session_rows_settle_when_the_set_completes() -> None:
    """The rows the TUI shows (Session.rows) carry the same words once the capture is read."""
    s = Session.from_files([V1 / "mm-frag-never.pcap"])
    info = {r.frame: r.info for r in s.rows if r.kind == "IKE"}
    assert all(info[f].endswith("; fragment 1/2 lost") for f in (5, 6, 7, 8))


def _tshark_skf(path: Path) -> dict[int, tuple[int, int]]:
    if shutil.which("tshark") is None:
        pytest.skip("tshark not installed")
    out = subprocess.run(["tshark", "-r", str(path), "-Y", "isakmp.frag.total", "-T", "fields", "-e", "frame.number",
                          "-e", "isakmp.frag.number", "-e", "isakmp.frag.total"], capture_output=True, text=True,
                         check=True).stdout
    return {int(f): (int(n), int(t)) for f, n, t in (ln.split("\t") for ln in out.splitlines())}


def test_skf_numbers_as_tshark_and_joined_with_keys() -> None:
    cap = SKF / "capture.pcapng"
    plain = _packets(cap)
    keyed = _packets(cap, "-k", str(SKF / "charon-left.log"))
    want = _tshark_skf(cap)
    assert sorted(want) == [3, 4, 5, 6, 7]
    for frame, (n, t) in want.items():
        assert plain[frame].endswith(f"[ SKF ] fragment {n}/{t} of message ID 1"), plain[frame]
    assert keyed[3].endswith("[ SKF ] (decrypted) fragment 1/3 of message ID 1")
    assert "IDi" in keyed[5] and keyed[5].endswith("(decrypted) reassembled from 3 fragments (frames 3, 4, 5)")
    assert keyed[7].endswith("(decrypted) reassembled from 2 fragments (frames 6, 7)")


@pytest.mark.parametrize("keys", [False, True])
def test_skf_fragment_never_captured(tmp_path: Path, keys: bool) -> None:
    """The real capture without frame 4 (IKE_AUTH request fragment 2/3): its other pieces say so,
    with keys too (the decryptor cannot join the message either)."""
    scapy = pytest.importorskip("scapy.all")
    cut = tmp_path / "skf-lost.pcap"
    scapy.wrpcap(str(cut), [p for i, p in enumerate(scapy.rdpcap(str(SKF / "capture.pcapng")), 1) if i != 4])
    info = _packets(cut, *(("-k", str(SKF / "charon-left.log")) if keys else ()))
    assert info[3].endswith("fragment 1/3 of message ID 1; fragment 2/3 lost"), info[3]
    assert info[4].endswith("fragment 3/3 of message ID 1; fragment 2/3 lost"), info[4]
    assert "lost" not in info[5] + info[6]  # the response, complete


FRAG_FILTERS = ["isakmp.frag.number == 2", "isakmp.frag.total == 3", "isakmp.frag.seq == 1",
                "isakmp.frag.packetid == 1 && isakmp.frag.last == 1", "isakmp.frag.last == 0",
                "isakmp && !isakmp.frag.seq && !isakmp.frag.number"]


@pytest.mark.parametrize("cap", [V1 / "mm-frag-lost.pcap", V1 / "mm-frag-never.pcap", V1 / "am-cert-frag.pcap",
                                 SKF / "capture.pcapng"], ids=lambda p: p.parent.name + "/" + p.name)
def test_frag_filter_fields_select_what_tshark_selects(cap: Path) -> None:
    """isakmp.frag.* (tshark's names) select the frames tshark's -Y selects, the frame completing
    an IKEv1 message included (tshark shows its piece's Fragment payload)."""
    if shutil.which("tshark") is None:
        pytest.skip("tshark not installed")
    for flt in FRAG_FILTERS:
        want = subprocess.run(["tshark", "-r", str(cap), "-Y", flt, "-T", "fields", "-e", "frame.number"],
                              capture_output=True, text=True, check=True).stdout.split()
        got = _packets(cap, "-Y", flt)
        assert sorted(got) == sorted(map(int, want)), flt


def test_tui_shows_the_lost_mark() -> None:
    """The TUI's packet list, once the capture is loaded, shows the words written at its end
    (the rows are rewritten in place; what the screen shows is read after that)."""
    from test_tui import loaded, screen_lines, sync

    from ipsecscope.tui.app import create_app

    @sync
    async def run() -> list[str]:
        async with create_app(V1 / "mm-frag-never.pcap").run_test(size=(320, 40)) as pilot:
            await loaded(pilot)
            await pilot.press("2")  # the Packets tab
            await pilot.pause()
            return screen_lines(pilot.app)

    lines = [ln for ln in run() if "[ FRAG ]" in ln]
    assert len(lines) == 4 and all("fragment 1/2 lost" in ln for ln in lines), lines


def _fragments(path: Path, *args: str) -> dict[int, dict | None]:
    out = subprocess.run([*IPSECSCOPE, "packets", "--json", *args, "--", str(path)], capture_output=True,
                         text=True, check=True).stdout
    return {d["frame"]: d["fragment"] for d in map(json.loads, out.splitlines())}


@pytest.mark.parametrize("name", ["mm-frag-lost", "mm-frag-never", "am-cert-frag", "mm-cert-frag"])
def test_packets_json_fragment_object_is_tsharks_and_summarys(name: str) -> None:
    """packets --json carries each IKEv1 piece's numbers as a ``fragment`` object (not only in the
    Info's words): Fragment ID, number and last flag as tshark reads them (isakmp.frag.packetid,
    .seq, .last; the completing frame too: tshark shows its piece's payload), the rest as summary."""
    if shutil.which("tshark") is None:
        pytest.skip("tshark not installed")
    cap = V1 / f"{name}.pcap"
    got = _fragments(cap)
    out = subprocess.run(["tshark", "-r", str(cap), "-Y", "isakmp.frag.seq", "-T", "fields", "-e", "frame.number",
                          "-e", "isakmp.frag.packetid", "-e", "isakmp.frag.seq", "-e", "isakmp.frag.last"],
                         capture_output=True, text=True, check=True).stdout
    want = {int(f): (int(pid, 16), int(seq), last == "1") for f, pid, seq, last in
            (ln.split("\t") for ln in out.splitlines())}
    assert want and sorted(want) == sorted(f for f, d in got.items() if d is not None)
    for frame, (pid, seq, last) in want.items():
        d = got[frame]
        assert (d["fragment_id"], d["number"], d["last"]) == (pid, seq, last), frame
    for frame, r in _summary_rows(cap).items():  # summary's row of the same frame: the same facts
        if r["fragment"]:
            d = got[frame]
            assert {k: d[k] for k in r["fragment"]} == r["fragment"] and d["reassembled_from"] == r["reassembled_from"]
    if name == "mm-frag-never":
        assert all(got[f]["lost"] == [1] and got[f]["total"] == 2 for f in (5, 6, 7, 8))
    if name == "mm-frag-lost":
        assert got[6]["reassembled_from"] == [6, 5] and got[7]["repeat"] and got[9]["reassembled_from"] == [8, 9]


def test_packets_json_skf_fragment_object() -> None:
    """IKEv2 SKF (RFC 7383 §2.5): Fragment Number and Total Fragments as tshark reads them, no
    Fragment ID; with keys the completing frame names the pieces it was joined from."""
    cap = SKF / "capture.pcapng"
    want = _tshark_skf(cap)
    plain = _fragments(cap)
    keyed = _fragments(cap, "-k", str(SKF / "charon-left.log"))
    assert sorted(f for f, d in plain.items() if d is not None) == sorted(want)
    for frame, (n, t) in want.items():
        d = plain[frame]
        assert (d["number"], d["total"], d["last"], d["fragment_id"]) == (n, t, n == t, None)
        assert d["reassembled_from"] == [] and d["lost"] == []
    assert keyed[5]["reassembled_from"] == [3, 4, 5] and keyed[7]["reassembled_from"] == [6, 7]
