"""`-Y` on decrypt and summary, and the packets table as text, against tshark on real captures."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from conftest import IPSECSCOPE, SAMPLES, needs_tshark, public

HEALTHY = SAMPLES / "healthy-gcm"
CAP = HEALTHY / "capture.pcapng"
KEYS = HEALTHY / "keys"


def tshark(cap: Path, flt: str, *fields: str, keys: Path | None = KEYS) -> list[list[str]]:
    env = dict(os.environ, WIRESHARK_CONFIG_DIR=str(keys)) if keys else dict(os.environ)
    out = subprocess.run(["tshark", "-n", "-r", str(cap), "-o", "esp.enable_encryption_decode:TRUE", "-Y", flt,
                          "-T", "fields", *[x for f in fields for x in ("-e", f)]],
                         env=env, capture_output=True, text=True, check=True).stdout
    return [ln.split("\t") for ln in out.splitlines()]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*IPSECSCOPE, *args], capture_output=True, text=True)


@needs_tshark
def test_decrypt_writes_only_what_the_filter_selects(tmp_path: Path) -> None:
    flt = "icmp.type == 8 && esp.sequence > 2"
    out = tmp_path / "clear.pcapng"
    r = run("decrypt", str(CAP), "-k", str(KEYS), "-o", str(out), "-Y", flt, "-q")
    assert r.returncode == 0, r.stderr
    want = tshark(CAP, flt, "icmp.ident", "icmp.seq")
    assert len(want) >= 3
    # the output holds those inner packets, in order, and nothing else
    assert tshark(out, "", "icmp.ident", "icmp.seq", keys=None) == want
    assert tshark(out, "icmp.type != 8", "frame.number", keys=None) == []


@needs_tshark
def test_summary_restricted_to_a_filter() -> None:
    flt = "isakmp.exchtype == 36 || esp.spi == 0x15b69dc5"
    r = run("summary", str(CAP), "-Y", flt, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["filter"] == flt
    ike = [m["frame"] for m in doc["ike"]]
    assert ike == [int(x[0]) for x in tshark(CAP, "isakmp.exchangetype == 36", "frame.number")]
    assert [f["spi"] for f in doc["esp"]] == ["0x15b69dc5"]
    assert doc["esp"][0]["packets"] == len(tshark(CAP, "esp.spi == 0x15b69dc5", "frame.number"))
    bad = run("summary", str(CAP), "-Y", "esp.spi = 1")
    assert bad.returncode == 2 and "bad display filter" in bad.stderr


def test_packets_text_shows_inner_packets_and_outer_spi() -> None:
    r = run("packets", str(CAP), "-k", str(KEYS), "-Y", "icmp.type == 0", "-c", "2")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 2
    assert "ESP" in lines[0] and "ESP seq 1 ▸ ICMP 10.2.0.1 → 10.1.0.1 Echo (ping) reply" in lines[0]
    assert "198.18.0.2:4500" in lines[0]  # outer addresses and SPI stay visible
    fields = run("packets", "--fields")
    assert "isakmp.exchangetype" in fields.stdout and "ipsecscope.finding" in fields.stdout


def _link_capture(path: Path) -> Path:
    """Frames that are not IP at all, as a LAN capture has them beside the IPsec traffic."""
    from scapy.contrib.lldp import LLDPDUChassisID, LLDPDUEndOfLLDPDU, LLDPDUPortID, LLDPDUTimeToLive
    from scapy.layers.eap import EAPOL
    from scapy.layers.l2 import ARP, LLC, STP, Dot1Q, Dot3, Ether
    from scapy.packet import Raw
    from test_capture_builders import esp, v4, write_pcap

    mac = "02:00:00:00:00:01"
    frames = [
        Ether(src=mac, dst="ff:ff:ff:ff:ff:ff") / ARP(psrc="198.18.0.1", pdst="198.18.0.2"),
        Ether(src=mac, dst="01:80:c2:00:00:0e") / LLDPDUChassisID(subtype=4, id=mac) / LLDPDUPortID(subtype=7, id="eth0")
        / LLDPDUTimeToLive(ttl=120) / LLDPDUEndOfLLDPDU(),
        Ether(src=mac, dst="01:80:c2:00:00:03") / EAPOL(version=2, type=1),
        Ether(src=mac, dst="ff:ff:ff:ff:ff:ff", type=0x88B5) / Raw(b"\x01" * 46),
        Dot3(src=mac, dst="01:80:c2:00:00:00") / LLC() / STP(),
        Ether(src=mac, dst="ff:ff:ff:ff:ff:ff") / Dot1Q(vlan=7) / ARP(psrc="198.18.0.1", pdst="198.18.0.2"),
        Ether(src=mac, dst="02:00:00:00:00:02") / v4(proto=50) / Raw(esp(0x1234, 1)),
    ]
    write_pcap(path, [bytes(f) for f in frames])
    return path


ISAKMP4500 = public("tcpdump/isakmp4500.pcap")  # third-party: materialised at test time (tests/public_data.py)


@needs_tshark
def test_frames_that_are_not_ip_say_what_they_are_as_tsharks_protocol_column(tmp_path: Path) -> None:
    """An ARP or LLDP frame had an empty Info (packets and the TUI's packet list): it names its
    EtherType as tshark's Protocol column does, or 'ethertype 0x88b5' where tshark shows the
    number, and 'LLC' for an 802.3 length-field frame."""
    for cap in (_link_capture(tmp_path / "lan.pcap"), ISAKMP4500):
        rows = [json.loads(x) for x in run("packets", "--json", str(cap)).stdout.splitlines()]
        want = tshark(cap, "not ip and not ipv6", "frame.number", "_ws.col.Protocol", "eth.len", keys=None)
        assert want
        got = {r["frame"]: r["info"] for r in rows if r["kind"] == "OTHER"}
        for frame, col, length in want:
            info = got[int(frame)]
            assert info == col or info == f"ethertype {col}" or (info == "LLC" and length), (frame, col, info)
        assert {"ARP"} <= set(got.values())
    assert sorted(set(got.values())) == ["ARP"]
    lan = {r["frame"]: r["info"] for r in map(json.loads, run("packets", "--json", str(tmp_path / "lan.pcap"))
                                                 .stdout.splitlines())}
    assert [lan[i] for i in range(1, 7)] == ["ARP", "LLDP", "EAPOL", "ethertype 0x88b5", "LLC", "ARP"]
    assert lan[7].startswith("ESP seq 1")
    text = run("packets", str(tmp_path / "lan.pcap")).stdout.splitlines()
    assert text[1].rstrip().endswith("LLDP")
    assert "198.18.0.1 → 198.18.0.2" in text[6]


@needs_tshark
def test_frames_that_are_not_ip_show_their_macs_as_tsharks_source_and_destination(tmp_path: Path) -> None:
    """A non-IP row's Source/Destination were empty; tshark shows the MAC addresses there. The text
    shows them too, JSON keeps src/dst "" (findings of the schema: an IP address or nothing), and an
    ip.src/ip.dst/ip.addr filter never matches a MAC."""
    cap = _link_capture(tmp_path / "lan.pcap")
    want = {int(f): (s, d) for f, s, d in tshark(cap, "not ip and not ipv6", "frame.number", "eth.src", "eth.dst",
                                                 keys=None)}
    assert len(want) == 6
    text = {int(ln.split()[0]): ln for ln in run("packets", str(cap)).stdout.splitlines()}
    for frame, (src, dst) in want.items():
        assert f"{src} → {dst}" in text[frame], (frame, text[frame])
    rows = [json.loads(x) for x in run("packets", "--json", str(cap)).stdout.splitlines()]
    assert [(r["src"], r["dst"]) for r in rows if r["kind"] == "OTHER"] == [("", "")] * 6
    for flt in ("ip.src", "ip.dst", "ip.addr", "ip.addr != 198.18.0.9", "ip.dst != 198.18.0.9"):
        got = [json.loads(x)["frame"] for x in run("packets", "--json", "-Y", flt, str(cap)).stdout.splitlines()]
        assert all(f not in want for f in got), (flt, got)
    bad = run("packets", "-Y", "ip.addr == 02:00:00:00:00:01", str(cap))
    assert not [ln for ln in bad.stdout.splitlines() if ln.split() and int(ln.split()[0]) in want]


@needs_tshark
def test_verbose_gives_ah_its_icv_line_and_tsharks_ah_tree(tmp_path: Path) -> None:
    """`packets -V`: an AH frame gets a line with its ICV check (tshark shows AH but never checks
    it) above tshark's tree of the frame as captured, AH header included; a frame whose ICV failed
    (decrypt's copy carries a comment there, its first PDML layer) keeps its tree too."""
    from conftest import DATA

    ah = DATA / "ah"
    r = run("packets", str(ah / "ah-v4.pcap"), "-k", str(ah / "ah-v4.keys.json"), "-V", "-Y",
            "frame.number in {1 6}")
    assert r.returncode == 0, r.stderr
    blocks = r.stdout.split("\n\n")
    assert "AH ICV verified (AUTH_HMAC_SHA1_96" in blocks[0] and "AH ICV failed" in blocks[1]
    assert all("Authentication Header" in b and "Internet Control Message Protocol" in b for b in blocks[:2])
    # ESP with a wrong key: every frame fails and is copied with a comment; each keeps its tree
    syn = SAMPLES / "synthetic"
    doc = json.loads((syn / "aead.keys.json").read_text())
    for e in doc["esp"]:
        e["enc_key"] = ("0" if e["enc_key"][0] != "0" else "1") + e["enc_key"][1:]
    bad = tmp_path / "bad.keys.json"
    bad.write_text(json.dumps(doc))
    first = tshark(syn / "aead.pcap", "esp", "frame.number", keys=None)[0][0]
    r = run("packets", str(syn / "aead.pcap"), "-k", str(bad), "-V", "-Y", f"frame.number == {first}")
    assert "Encapsulating Security Payload" in r.stdout, r.stdout
