"""Packets decoded after later frames are judged as if they had come in capture order.

The correlation is a state machine fed frame by frame: an IKE response is read against its request,
an ESP packet against the CHILD SAs up at its time, a flow's pair against the flows seen so far.
Some packets are known only frames later: the records of an RFC 8229 stream behind a segment the
capture lacks (decode.tcpencap gives the gap up at the end of the capture, FIN/RST, overflow or a
live timeout), the IKE message an IP datagram's first fragment starts when the rest never comes
(decode.demux._lost_ike). They reached the tracker then, after everything that came later.

tests/data/rfc8229/ikev2-tcp-lost.pcap (ikev2-tcp.pcap with half of the IKE_AUTH request's segment
never captured; keys samples/healthy-gcm/keys): every initiator record after the gap was decoded at
the end, so CREATE_CHILD_SA and INFORMATIONAL requests came after their responses and the
initiator's ESP after the deletes: three INFERRED CHILD SAs, three ESP-ONE-WAY warnings, the NAT
verdict turned into "UDP encapsulation forced". Now the frames after the gap wait for it
(session_packets), and the capture reads as the full one does but for what was lost: the IKE_AUTH
request (IKE-RESPONSE-NO-REQUEST says the capture missed it), whose initiator SPI the responder's
ESP supplies (state.traffic.fill_half), and the gap (CAPTURE-MALFORMED).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import DATA, SAMPLES, need, public
from conftest import field_cli as cli
from ike_reseal import keep_frames

from ipsecscope.capture import open_capture
from ipsecscope.session import Session

FULL = DATA / "rfc8229" / "ikev2-tcp.pcap"
LOST = DATA / "rfc8229" / "ikev2-tcp-lost.pcap"
KEYS = SAMPLES / "healthy-gcm" / "keys"


def _sas(cap: Path) -> dict:
    return json.loads(cli("sas", "--json", "-k", str(KEYS), str(cap)))


def _findings(cap: Path) -> list[dict]:
    return json.loads(cli("findings", "--json", "-k", str(KEYS), str(cap)))["findings"]


def _flows(doc: dict) -> dict[tuple, tuple]:
    """(src, dst, SPI) -> (its CHILD SA's SPIs, how it was made, state, packets, decrypted)."""
    children = {c["id"]: c for c in doc["child_sas"]}
    out = {}
    for f in doc["flows"]:
        c = children[f["child_sa"]]
        out[(f["src"], f["dst"], f["spi"])] = (c["spi_i"], c["spi_r"], c["created_by"], c["state"], f["packets"],
                                               f["decrypted"])
    return out


def test_esp_is_bound_to_the_ike_auth_child_sa_both_ways() -> None:
    full, lost = _sas(FULL), _sas(LOST)
    assert _flows(lost) == _flows(full)
    first = next(c for c in lost["child_sas"] if c["created_by"] == "IKE_AUTH")
    assert (first["spi_i"], first["spi_r"], first["proposal"]) == ("0x427e7d84", "0x15b69dc5", "aes256gcm16")
    assert first["inferred_reason"].startswith("paired: the initiator's SPI 0x427e7d84 read from its traffic")
    assert not [c for c in lost["child_sas"] if c["state"] == "INFERRED"]
    auth = lost["ike_sas"][0]["exchanges"][1]
    assert (auth["exchange"], auth["request_frames"], auth["response_frames"]) == ("IKE_AUTH", [], [7])


def test_findings_are_the_full_captures_and_what_was_lost() -> None:
    full = {f["code"]: f for f in _findings(FULL)}
    lost = {f["code"]: f for f in _findings(LOST)}
    assert set(lost) == set(full) | {"CAPTURE-MALFORMED", "IKE-RESPONSE-NO-REQUEST"}
    assert "ESP-ONE-WAY" not in lost
    assert lost["IKE-NAT-DETECTED"]["title"] == full["IKE-NAT-DETECTED"]["title"] == (
        "NAT detected: initiator is behind a NAT (seen as 198.18.0.1:500, the NAT's address)")
    gap = lost["CAPTURE-MALFORMED"]
    assert gap["frames"] == [8] and "RFC 8229 TCP stream gap" in gap["explanation"]
    assert gap["hint"].startswith("1 TCP segment of an RFC 8229 stream is not in the capture")
    missed = lost["IKE-RESPONSE-NO-REQUEST"]
    assert missed["severity"] == "info" and missed["frames"] == [7, 8]
    assert missed["title"] == ("An IKE_AUTH request from 198.18.0.1 not captured, its response from 198.18.0.2 was")
    assert "(IKE_SA_INIT, frame 1)" in missed["explanation"] and "Frame 8 marks a gap" in missed["explanation"]
    assert "IKE-RESPONSE-NO-REQUEST" not in full


def _rows(cap: Path, live: bool) -> dict[int, list[tuple[str, str]]]:
    s = Session(max_rows=10**6) if live else Session()
    s.add_key_files([KEYS])
    if live:  # fed frame by frame, as a live capture is, then ended
        with open_capture(cap) as r:
            for raw in r:
                s.feed(raw)
        s.end_of_input(None)
        s.finish()
    else:
        s.load(cap)
    out: dict[int, list[tuple[str, str]]] = {}
    for r in s.rows:
        out.setdefault(r.frame, []).append((r.kind, r.info if r.kind != "OTHER" else ""))
    return out


@pytest.mark.parametrize("live", [False, True])
def test_rows_after_the_gap_read_as_in_the_full_capture(live: bool) -> None:
    full, lost = _rows(FULL, live), _rows(LOST, live)
    assert set(lost) == set(full)
    for frame, rows in full.items():
        if frame == 6:  # the IKE_AUTH request's segment, half of it never captured
            assert lost[6] == [("OTHER", "")]
        elif frame == 8:  # the first frame after the gap: its record, then the gap's mark
            assert lost[8][0] == rows[0] and lost[8][1][0] == "MALFORMED"
        else:
            assert lost[frame] == rows, frame
    # the ESP after the gap decrypted on its frame (the ping inside), as in the full capture
    assert lost[10][0][1].startswith("ESP seq 2 ▸ ICMP 10.1.0.1 → 10.2.0.1 Echo (ping) request")


def test_esp_one_way_over_tcp_says_tcp() -> None:
    """The one-way ESP text for a CHILD SA over RFC 8229: its ESP shares the TCP connection with
    IKE (it said "Its ESP is IP protocol 50 while its IKE (UDP 4500/40000) gets through")."""
    from ipsecscope.analysis.rules.common import esp_silence_cause

    s = Session.from_files([FULL], [KEYS])
    flow = next(f for f in s.table.flows.values() if f.spi == 0x15b69dc5)
    why, hint, _frames = esp_silence_cause(s.table, s.table.child_sas[flow.child_sa], flow, "198.18.0.2", None)
    assert "Its ESP travels in the same TCP connection as the IKE messages that do get through (RFC 8229)" in why
    assert "IP protocol 50" not in why and "UDP" not in why and "UDP" not in hint


@pytest.mark.parametrize("cap,frame", [(FULL, 6), (LOST, 7)])
def test_nat_texts_say_tcp(cap: Path, frame: int) -> None:
    """IKE moved to TCP 4500, not UDP (the IKE_AUTH response shows the move when its request was
    not captured)."""
    nat = next(f for f in _findings(cap) if f["code"] == "IKE-NAT-DETECTED")
    assert (f"IKE moved from UDP 500 to TCP 4500 in IKE_AUTH (frame {frame}) and ESP travels in the same TCP "
            "connection (RFC 8229).") in nat["explanation"]
    assert "198.18.0.1:40000 on TCP 4500" in nat["explanation"] and "UDP-encapsulated" not in nat["explanation"]
    assert nat["frames"] == [1, 2, frame] and "TCP connection to port 4500" in nat["hint"]
    text = cli("sas", "-k", str(KEYS), str(cap))
    assert text.count("; IKE and ESP in TCP 4500 (RFC 8229)") == 2 and "NAT-T on UDP" not in text


# Zeek's ipsec_client.pcap: a strongSwan client's 3,468-octet IKE_AUTH in three IP fragments, sent
# three times (frames 3-5, 6-8, 9-11), never answered. Kept: IKE_SA_INIT, the first try's first
# fragment only, the second try without its first fragment, the third whole.
ZEEK = public("zeek-spicy-ipsec/ipsec_client.pcap")
KEEP = (1, 2, 3, 7, 8, 9, 10, 11)


@pytest.fixture(scope="module")
def lost_first(tmp_path_factory: pytest.TempPathFactory) -> Path:
    need(ZEEK)
    return keep_frames(ZEEK, KEEP, tmp_path_factory.mktemp("order") / "first-try-cut.pcap")


def test_ike_from_a_lost_datagram_is_judged_at_its_frame(lost_first: Path) -> None:
    """The first try (frame 3), known from its first fragment when the capture ends, is the
    exchange's first request and the whole third try (frame 8) its retransmission; it was filed
    after the third try (request frames [8, 3], timed at the third try, no retransmission, the
    float to 4500 dated at frame 8)."""
    (sa,) = json.loads(cli("sas", "--json", str(lost_first)))["ike_sas"]
    auth = sa["exchanges"][1]
    assert (auth["exchange"], auth["request_frames"], auth["retransmits"]) == ("IKE_AUTH", [3, 8], 1)
    rows = [json.loads(line) for line in cli("packets", "--json", str(lost_first)).splitlines()]
    assert auth["request_time"] == rows[2]["time"]
    found = {f["code"]: f for f in json.loads(cli("findings", "--json", str(lost_first)))["findings"]}
    assert found["IKE-IP-FRAGMENTED"]["time"] == rows[2]["time"]
    assert "IKE floated from UDP 500 to 4500 in IKE_AUTH (frame 3)" in found["IKE-NAT-DETECTED"]["explanation"]
    assert "IKE-NO-RESPONSE" not in found


def test_past_the_bound_the_held_frames_go_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """A gap that holds more frames than the bound: they all go on then (the gap is not waited for
    again) and its records come late, as before the hold; every frame still has its rows, and
    the counts add up (each frame counted once, the gap's mark once)."""
    from ipsecscope import session_packets

    monkeypatch.setattr(session_packets, "MAX_HELD_FRAMES", 4)
    s = Session()
    s.add_key_files([KEYS])
    s.load(LOST)
    assert not s._held and s._hold_past > 8
    frames = {r.frame for r in s.rows}
    assert frames == set(range(1, 38))
    st = s.stats
    assert st.malformed == {"tcp": 1} and (st.ike, st.esp) == (15, 18)
    assert st.other == sum(1 for r in s.rows if r.kind == "OTHER") == 4  # SYN, SYN-ACK, ACK, frame 6
