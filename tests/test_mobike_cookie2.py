"""MOBIKE return routability (RFC 4555 §3.7) and announced addresses (§3.6) after a move.

tests/data/mobike (strongSwan, make.py): the mover's UPDATE_SA_ADDRESSES carries COOKIE2 and the
gateway's answer echoes it (tshark, decrypted with the gateway's charon log: frame 103's COOKIE2
09fc3741aec475a452777a4360f930b0 comes back in frame 106; nat-capture.pcap 15 → 17; in
unanswered-capture.pcap the update is never answered). strongSwan's gateway never checks the new
address with a COOKIE2 of its own (its ike_mobike task adds COOKIE2 only to an update it sends):
no other INFORMATIONAL carries one. §3.7: "the exchange responder MUST copy" COOKIE2 and the sender
MUST compare it and close the IKE SA if it differs. The differing and the missing echo are the
real answer (frame 106) with its COOKIE2 changed or taken out and encrypted again with the
gateway's SK_er (AES-GCM-16-256, RFC 5282) from its log; tshark decrypts them and checks the ICV.

The gateway's own check (§3.5: it MAY check the new address) is absent from every strongSwan
sample, so it is the real frames 107/108 (the gateway's first request to the moved client and its
answer, both decrypted by tshark) with N(COOKIE2) appended and encrypted again (SK_er, SK_ei).

Address lists (tshark, decrypted): IKE_AUTH frames 3 and 4 carry NO_ADDITIONAL_ADDRESSES, frame 11
ADDITIONAL_IP4_ADDRESS 198.18.0.3 (capture.pcap) or 10.0.0.1 (nat-capture.pcap: the client then
shows up as the NAT's 198.18.2.1, an address it never announced, which a NAT explains).
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DATA, SAMPLES, needs_tshark
from ike_reseal import reseal

from ipsecscope.capture import open_capture
from ipsecscope.session import Session

sys.path.insert(0, str(SAMPLES / "synthetic"))
from espgen import PcapWriter  # noqa: E402

HERE = DATA / "mobike"
CAP, KEYS = HERE / "capture.pcap", HERE / "charon-right.log"
NAT_CAP, NAT_KEYS = HERE / "nat-capture.pcap", HERE / "nat-charon-right.log"
LOST_CAP, LOST_KEYS = HERE / "unanswered-capture.pcap", HERE / "unanswered-charon-right.log"
UN_CAP, UN_KEYS = HERE / "unannounced-capture.pcap", HERE / "unannounced-charon-right.log"
COOKIE2 = bytes.fromhex("09fc3741aec475a452777a4360f930b0")  # frame 103's, echoed in 106 (tshark)
NOTIFY, COOKIE2_TYPE = 41, 16401


def _load(cap: Path, keys: Path) -> Session:
    s = Session()
    s.add_key_files([keys])
    s.load(cap)
    return s


def _findings(cap: Path, keys: Path) -> list[dict]:
    p = subprocess.run([sys.executable, "-m", "ipsecscope", "findings", "--json", "-k", str(keys), str(cap)],
                       capture_output=True, text=True, timeout=120)
    assert "Traceback" not in p.stderr, p.stderr
    return [f for f in json.loads(p.stdout)["findings"] if f["code"] == "IKE-MOBIKE-MOVE"]


@pytest.fixture(scope="module")
def wireshark_dir(tmp_path_factory) -> Path:
    """A Wireshark profile with the gateway's IKE keys (its ikev2_decryption_table)."""
    out = tmp_path_factory.mktemp("ws")
    subprocess.run([sys.executable, "-m", "ipsecscope", "keys", "convert", str(KEYS), "--to", "ikev2_table",
                    "-o", f"{out}/"], check=True, capture_output=True, timeout=60)
    return out


def _sk_er(session: Session) -> bytes:
    (sa,) = session.table.ike_sas.values()
    k = session.keys.ike_lookup(sa.ike_spi_i, sa.ike_spi_r)
    assert k is not None and len(k.sk_er) == 36  # AES-GCM-16-256: 32-byte key, 4-byte salt
    return k.sk_er


def _notifies(inner: bytes) -> list[tuple[int, int]]:
    """(offset, notify type) of each payload of a chain of Notify payloads (all the answer holds)."""
    out, at = [], 0
    while at < len(inner):
        out.append((at, struct.unpack_from("!H", inner, at + 6)[0]))
        at += struct.unpack_from("!H", inner, at + 2)[0]
    return out


def _cookie_changed(inner: bytes) -> bytes:
    at = inner.index(COOKIE2)
    return inner[:at + 15] + bytes([inner[at + 15] ^ 0xFF]) + inner[at + 16:]


def _cookie_dropped(inner: bytes) -> bytes:
    chain = _notifies(inner)
    assert chain[-1][1] == COOKIE2_TYPE  # the last payload: its predecessor's Next Payload ends the chain
    out = bytearray(inner[:chain[-1][0]])
    out[chain[-2][0]] = 0
    return bytes(out)


@pytest.fixture(scope="module", params=["different", "missing"])
def altered(request, tmp_path_factory) -> tuple[str, Path]:
    """capture.pcap with frame 106 (the update's answer) echoing another COOKIE2, or none."""
    key = _sk_er(_load(CAP, KEYS))
    edit = _cookie_changed if request.param == "different" else _cookie_dropped
    out = tmp_path_factory.mktemp("cookie2") / f"cookie2-{request.param}.pcap"
    with open_capture(CAP) as r, PcapWriter(out) as w:
        for f in r:
            w.write(f.ts_ns, reseal(bytes(f.data), key, edit) if f.index == 106 else bytes(f.data))
    return request.param, out


CHECK = bytes.fromhex("5a17c0ffee5a17c0ffee5a17c0ffee00")  # the gateway's own cookie in the altered check


def _with_cookie2(cookie: bytes):
    """An ``edit`` for :func:`_reseal` appending N(COOKIE2 ``cookie``) to the inner payload chain
    (the last payload's Next Payload becomes Notify)."""

    def edit(inner: bytes) -> bytes:
        at = 0
        while at + struct.unpack_from("!H", inner, at + 2)[0] < len(inner):
            at += struct.unpack_from("!H", inner, at + 2)[0]
        out = bytearray(inner)
        out[at] = NOTIFY
        return bytes(out) + struct.pack("!BBHBBH", 0, 0, 8 + len(cookie), 0, 0, COOKIE2_TYPE) + cookie

    return edit


@pytest.fixture(scope="module", params=["same", "different"])
def checked(request, tmp_path_factory) -> tuple[str, Path]:
    """capture.pcap with the gateway's first request to the moved client (frame 107, its
    INFORMATIONAL deleting CHILD_SA #1's old SA) carrying a COOKIE2 of its own, as RFC 4555 §3.5
    lets the responder check a new address, and the client's answer (108) echoing it (or another)."""
    s = _load(CAP, KEYS)
    (sa,) = s.table.ike_sas.values()
    k = s.keys.ike_lookup(sa.ike_spi_i, sa.ike_spi_r)
    echo = CHECK if request.param == "same" else CHECK[:-1] + b"\x01"
    edits = {107: lambda f: reseal(f, k.sk_er, _with_cookie2(CHECK)),
             108: lambda f: reseal(f, k.sk_ei, _with_cookie2(echo))}
    out = tmp_path_factory.mktemp("check") / f"check-{request.param}.pcap"
    with open_capture(CAP) as r, PcapWriter(out) as w:
        for f in r:
            w.write(f.ts_ns, edits[f.index](bytes(f.data)) if f.index in edits else bytes(f.data))
    return request.param, out


@needs_tshark
def test_the_other_peers_own_check_of_the_new_address(checked: tuple[str, Path], wireshark_dir: Path) -> None:
    how, cap = checked
    out = subprocess.run(["tshark", "-n", "-r", str(cap), "-Y", f"isakmp.notify.msgtype == {COOKIE2_TYPE}", "-T",
                          "fields", "-e", "frame.number", "-e", "isakmp.notify.data"],
                         env=dict(os.environ, WIRESHARK_CONFIG_DIR=str(wireshark_dir)),
                         capture_output=True, text=True, timeout=60, check=True).stdout.split()
    assert out[4:] == ["107", CHECK.hex(), "108", (CHECK if how == "same" else CHECK[:-1] + b"\x01").hex()]
    (sa,) = _load(cap, KEYS).table.ike_sas.values()
    (u,) = sa.mobike_updates
    assert (u.check_frame, u.check_echo, u.cookie2_echo) == (107, how, "same")
    (f,) = _findings(cap, KEYS)
    assert "The responder checked 198.18.0.3 itself with COOKIE2 (frame 107, RFC 4555 §3.5, §3.7): " in f["explanation"]
    assert "sent no return routability check" not in f["explanation"]
    assert 107 in f["frames"]
    if how == "same":
        assert f["severity"] == "info" and "echoed unchanged, the new address is verified." in f["explanation"]
    else:
        assert f["severity"] == "warning" and f["title"].endswith("(COOKIE2 of the responder's check echoed differently)")
        assert "the answer echoed a different COOKIE2: the responder must close the IKE SA." in f["explanation"]


def test_the_update_and_its_answer_carry_the_same_cookie2() -> None:
    (sa,) = _load(CAP, KEYS).table.ike_sas.values()
    (u,) = sa.mobike_updates
    assert (u.frame, u.answered_frame, u.cookie2_sent, u.cookie2_echo) == (103, 106, COOKIE2, "same")
    assert u.check_frame is None  # strongSwan's gateway sends no COOKIE2 check of its own


@needs_tshark
def test_cookie2_frames_are_the_ones_tshark_decrypts(wireshark_dir: Path) -> None:
    out = subprocess.run(["tshark", "-n", "-r", str(CAP), "-Y", f"isakmp.notify.msgtype == {COOKIE2_TYPE}", "-T",
                          "fields", "-e", "frame.number", "-e", "isakmp.notify.msgtype", "-e", "isakmp.notify.data"],
                         env=dict(os.environ, WIRESHARK_CONFIG_DIR=str(wireshark_dir)),
                         capture_output=True, text=True, timeout=60, check=True).stdout.splitlines()
    cookies = {}
    for ln in out:
        frame, types, data = ln.split("\t")
        cookies[int(frame)] = dict(zip(types.split(","), data.split(","), strict=True))[str(COOKIE2_TYPE)]
    assert cookies == {103: COOKIE2.hex(), 106: COOKIE2.hex()}


def test_mobike_line_and_finding_say_the_new_path_was_verified() -> None:
    for cap, keys in ((CAP, KEYS), (NAT_CAP, NAT_KEYS)):
        (f,) = _findings(cap, keys)
        assert f["severity"] == "info"
        assert "The answer echoed the update's COOKIE2 unchanged: the return routability check of the new path " \
               "passed" in f["explanation"]
        assert "sent no return routability check of its own" in f["explanation"]
    p = subprocess.run([sys.executable, "-m", "ipsecscope", "sas", "-k", str(KEYS), str(CAP)],
                       capture_output=True, text=True, timeout=120)
    (line,) = [ln for ln in p.stdout.splitlines() if "MOBIKE:" in ln]
    assert line.endswith("answered (frame 106), COOKIE2 echoed: new path verified")


def test_unanswered_update_verifies_nothing() -> None:
    (sa,) = _load(LOST_CAP, LOST_KEYS).table.ike_sas.values()
    (u,) = sa.mobike_updates
    assert u.cookie2 and u.answered_frame is None and u.cookie2_echo == ""
    (f,) = _findings(LOST_CAP, LOST_KEYS)
    assert f["severity"] == "warning" and "COOKIE2 echoed" not in f["explanation"]


@needs_tshark
def test_altered_echo_is_a_warning(altered: tuple[str, Path], wireshark_dir: Path) -> None:
    how, cap = altered
    # tshark decrypts the altered answer and checks its ICV: it is a well-formed answer
    out = subprocess.run(["tshark", "-n", "-r", str(cap), "-Y", "frame.number == 106", "-V"],
                         env=dict(os.environ, WIRESHARK_CONFIG_DIR=str(wireshark_dir)),
                         capture_output=True, text=True, timeout=60, check=True).stdout
    assert "[correct]" in out and ("COOKIE2" in out) == (how == "different")
    (sa,) = _load(cap, KEYS).table.ike_sas.values()
    (u,) = sa.mobike_updates
    assert (u.answered_frame, u.cookie2_echo) == (106, how)
    (f,) = _findings(cap, KEYS)
    words = "COOKIE2 echoed differently" if how == "different" else "COOKIE2 not echoed"
    assert f["severity"] == "warning" and f["title"].endswith(f"({words})")
    assert "RFC 4555 §3.7" in f["explanation"] and "passed" not in f["explanation"]
    assert f["hint"].startswith("An answer whose COOKIE2 is not its request's is no answer to it")


def test_address_lists_are_the_ones_tshark_shows() -> None:
    (sa,) = _load(CAP, KEYS).table.ike_sas.values()
    assert sa.mobike_additional == [("initiator", 3, ()), ("responder", 4, ()), ("initiator", 11, ("198.18.0.3",)),
                                    ("initiator", 103, ())]
    (sa,) = _load(NAT_CAP, NAT_KEYS).table.ike_sas.values()
    assert sa.mobike_additional[2] == ("initiator", 11, ("10.0.0.1",))


def test_move_to_an_announced_address_says_so_and_an_unannounced_one_is_info() -> None:
    (f,) = _findings(CAP, KEYS)
    assert "It had announced 198.18.0.3 as an additional address (frame 11, RFC 4555 §3.6)." in f["explanation"]
    assert "not an address" not in f["explanation"]
    (f,) = _findings(NAT_CAP, NAT_KEYS)
    assert f["severity"] == "info"
    assert ("198.18.2.1 is not an address the initiator announced: it announced only 10.0.0.1 "
            "(ADDITIONAL_IP*_ADDRESS in frame 11, RFC 4555 §3.6); the NAT in front of it") in f["explanation"]
    p = subprocess.run([sys.executable, "-m", "ipsecscope", "sas", "-k", str(NAT_KEYS), str(NAT_CAP)],
                       capture_output=True, text=True, timeout=120)
    assert "not an announced address" in p.stdout



def test_move_to_an_address_after_no_additional_addresses() -> None:
    """unannounced-capture.pcap (make.py unannounced): 198.18.0.3 came and 198.18.0.1 went at once;
    charon's log: "198.18.0.3 appeared on veth0", "198.18.0.1 disappeared", no ADD_4_ADDR, the update
    (frame 15, tshark) carries NO_ADD_ADDR; the last list before it is IKE_AUTH's (frame 3)."""
    log = UN_KEYS.with_name("unannounced-charon-left.log").read_text()
    assert "198.18.0.3 appeared on veth0" in log and "N(ADD_4_ADDR)" not in log
    (sa,) = _load(UN_CAP, UN_KEYS).table.ike_sas.values()
    assert sa.mobike_additional == [("initiator", 3, ()), ("responder", 4, ()), ("initiator", 15, ())]
    (f,) = _findings(UN_CAP, UN_KEYS)
    assert f["severity"] == "info" and f["frames"] == [11, 15, 16, 18]
    assert ("198.18.0.3 is not an address the initiator announced: it said it had no other address "
            "(NO_ADDITIONAL_ADDRESSES in frame 3, RFC 4555 §3.6); a NAT or an address it got after that list "
            "explains it.") in f["explanation"]
