"""The correctness oracle for display filters: for every sample and every filter below,
``ipsecscope packets CAP -k KEYS -Y FILTER --json`` selects exactly the frames that
``tshark -r CAP -o esp.enable_encryption_decode:TRUE -Y FILTER`` selects, with the sample's keys
as WIRESHARK_CONFIG_DIR — over outer fields, decrypted inner fields, and both at once.

One difference is by design and is taken out of the comparison, frame by frame: tshark (4.0, no
authentication check by default) dissects the plaintext of ESP whose ICV fails, and cannot
decrypt some algorithms ipsecscope can; ipsecscope shows no inner fields for a packet that failed
its integrity check. Those frames are listed, and each must be one of the two cases.

An ESP packet an ICMP error quotes is the error frame's second inner packet: quoted whole, both
tools decrypt it and match its inner fields; cut off, tshark reads a "trailer" from the cut and
ipsecscope's filter matches what tshark makes of it (samples/synthetic/icmp-quoted, nat-rebind,
esp-rejected, mtu-small-link). Inner IP fragments carried by separate ESP packets are reassembled
by both tools.

tshark evaluates every filter of a sample in one pass (tests/tshark_filters.lua: a tap per filter,
compiled by tshark's own display filter engine as -Y compiles it): one start-up per sample, not per
filter, which was most of this file's time. Each pass is tied to -Y by its "esp" filter.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DATA, SAMPLES, needs_tshark

from ipsecscope.cli import main

FILTERS = [
    # the list
    "icmp.type == 0",
    "ip.dst == 10.2.1.0/24",
    "esp && !icmp",
    "frame.number >= 5 && frame.number <= 15 && esp",
    "isakmp.exchtype == 36",
    "(icmp.type == 8 || isakmp) && ip.src == 198.18.0.1",
    "esp.sequence > 2",
    "not ip.src == 10.1.0.0/16 and icmp",
    "esp.spi == {spi} && icmp.type == 8",
    # more, over outer and inner fields
    "ip.src != 198.18.0.1",
    "ip.addr == 10.0.0.0/8 && udp",
    "udp.port == 4500 && !esp",
    "udp.dstport in {{53, 1701}}",
    "tcp.flags.ack == 1 || tcp.port == 179",
    "icmpv6.type == 128 || ipv6.src == fd00::/8",
    "ip.proto == 1 and frame.len > 130",
    "dns && !esp",
    "udpencap && isakmp",
    "isakmp.nextpayload == 41 || isakmp.notify.msgtype == 16393",
    "isakmp.ispi && isakmp.messageid >= 2",
    "esp.sequence in {{1..3}} and not icmp.type == 0",
    "frame.time_relative > 1.0 && (esp || isakmp)",
    "icmp.seq ~= 1 && esp.spi != {spi}",
    "icmp.type == 3 && udp.dstport == 4500",
    "isakmp && icmp",
    # inside an ESP packet an ICMP/ICMPv6 error quotes (whole: decrypted; cut off: as tshark reads it)
    "icmp.type == 3 && icmp.type == 0",
    "(icmp.type == 3 || icmpv6.type in {{1, 2}}) && esp.protocol",
    "icmpv6.type == 1 && (icmpv6.type == 128 || ip.src == 10.0.0.0/8)",
    "icmpv6 && dns.qry.name contains \"example\"",
    "icmp && tcp.flags.syn == 1 && tcp.dstport == 443",
    "esp.protocol in {{1, 6, 17, 44, 88, 132}} && !udp.port == 53",
    "icmp.seq == 1 && icmp.type == 3",
    "ipv6.dst == fd00::/8 && udp.dstport == 5001 && icmpv6",
    "udp && !isakmp && !esp",
]
# IKE an ICMP error quotes: header fields; payloads (SA proposals/transforms, notifies, SK) when the
# quote holds the message up to 4 octets short of its Length, as tshark 4.0 dissects it. Every
# capture gets them (a failed negotiation too).
IKE_FILTERS = [
    "(icmp || icmpv6) && isakmp.nextpayload in {{0, 3, 35}}",
    "isakmp.length && !udp.srcport == 500",
    "isakmp.notify.msgtype in {{1, 16388}} || (isakmp.version == 0x10 && icmp)",
]

# Hosts talking inside GRE / IP in IP / ERSPAN / VXLAN / Geneve / GTP-U tunnels
# (tests/data/tunnels/plain-inside.pcap): every IP header of the frame is an occurrence, the
# tunnel's (198.51.100.1 -> .2, 2001:db8::a -> ::b) and the inner hosts' (10.1.0.5 <-> 10.2.0.7,
# fd00:1::5 <-> fd00:2::7)
TUNNEL_FILTERS = [
    "ip.addr == 10.2.0.7",
    "ip.src == 198.51.100.1 && icmp.type == 0",
    "ip.src == 198.51.100.1 && ip.src == 10.1.0.5 && udp.dstport == 53",
    "ipv6.src == 2001:db8::a && ip.dst == 10.2.0.7",
    "ip.src == 198.51.100.0/24 && ipv6.dst == fd00:1::/64",
    "ip.proto == 47 && tcp.flags.syn == 1",
    "ip.proto == 4 || ipv6.nxt == 41",
    "udp.dstport == 4789 && (icmp || dns || tcp)",
    "udp.port == 2152 && icmpv6.type == 128",
    "udp.dstport == 6081 && !ip.src == 10.0.0.0/8",
    "ip.dst == 10.1.0.5 && !ip.src == 198.51.100.1",
    "udp && !ip.proto == 17",
    "tcp.port == 443 && ip.version == 6",
    # frag-inside.pcap: fragments held for reassembly, and the frame that completes each
    "ip.src == 10.1.0.5 && !icmp",
    "ipv6.fraghdr && udp.dstport == 40006",
    "ip.proto == 1 && ip.proto == 47 && icmp.seq == 81",
    "esp.spi == 0x15b69dc5 && udp.dstport == 4789",
]


def _cases():
    for d in sorted(SAMPLES.iterdir()):
        if (d / "capture.pcapng").exists() and (d / "keys").is_dir():
            yield pytest.param(d / "capture.pcapng", d / "keys", None, id=d.name)
    # IP fragments, ICMP errors quoting IKE, IKEv1 rekeys (tests/data/findings)
    for d in sorted((DATA / "findings").iterdir()):
        if (d / "capture.pcapng").exists() and (d / "keys").is_dir():
            yield pytest.param(d / "capture.pcapng", d / "keys", None, id=f"findings/{d.name}")
    for p in sorted((SAMPLES / "synthetic").glob("*.pcap")):
        # the esp_sa table: what both tools can be given (the JSON keys hold algorithms tshark lacks)
        yield pytest.param(p, None, p.with_suffix(".esp_sa"), id=f"synthetic/{p.stem}")
    # no IPsec at all: any keys do for the command line
    yield pytest.param(DATA / "tunnels" / "plain-inside.pcap", SAMPLES / "healthy-gcm" / "keys", None,
                       id="tunnels/plain-inside")
    # IP fragments inside tunnels and of the tunnel's own packet, ESP among them (the sample's keys)
    yield pytest.param(DATA / "tunnels" / "frag-inside.pcap", SAMPLES / "healthy-gcm" / "keys", None,
                       id="tunnels/frag-inside")


def _own_esp_inner(protos: str) -> bool:
    """Whether tshark dissected something inside the frame's own ESP (frame.protocols), not inside
    an ESP packet an ICMP error quotes (..:icmp:ip:udp:udpencap:esp:data)."""
    head, sep, tail = protos.partition(":esp:")
    return bool(sep and tail) and not {"icmp", "icmpv6"} & set(head.split(":"))


def _tshark(cap: Path, prof: Path, flt: str, *fields: str) -> list[list[str]]:
    out = subprocess.run(
        ["tshark", "-n", "-r", str(cap), "-o", "esp.enable_encryption_decode:TRUE", "-Y", flt, "-T", "fields",
         *[x for f in (fields or ("frame.number",)) for x in ("-e", f)]],
        env=dict(os.environ, WIRESHARK_CONFIG_DIR=str(prof)), capture_output=True, text=True, check=True).stdout
    return [ln.split("\t") for ln in out.splitlines() if ln]


FILTER_TAPS = Path(__file__).with_name("tshark_filters.lua")


def _tshark_each(cap: Path, prof: Path, filters: list[str], tmp_path: Path) -> list[list[int]]:
    """The frames each of ``filters`` selects, in frame order, from one tshark pass."""
    assert not any("\n" in f for f in filters)
    listed = tmp_path / "filters.txt"
    listed.write_text("".join(f + "\n" for f in filters))
    out = subprocess.run(
        ["tshark", "-n", "-q", "-r", str(cap), "-o", "esp.enable_encryption_decode:TRUE",
         "-X", f"lua_script:{FILTER_TAPS}", "-X", f"lua_script1:{listed}"],
        env=dict(os.environ, WIRESHARK_CONFIG_DIR=str(prof)), capture_output=True, text=True, check=True).stdout
    frames: list[list[int]] = [[] for _ in filters]
    for line in out.splitlines():
        i, frame = line.split("\t")
        frames[int(i) - 1].append(int(frame))
    return frames


def _ours(cap: Path, keys: Path, flt: str, capsys) -> list[int]:
    assert main(["packets", str(cap), "-k", str(keys), "-Y", flt, "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    docs = [json.loads(x) for x in lines]
    assert all(d["schema"] == "ipsecscope.packets/1" for d in docs)
    return [d["frame"] for d in docs]


@needs_tshark
@pytest.mark.parametrize(("cap", "keydir", "esp_sa"), list(_cases()))
def test_packets_select_what_tshark_selects(cap: Path, keydir: Path | None, esp_sa: Path | None, tmp_path: Path,
                                            capsys) -> None:
    if keydir is None:
        keydir = tmp_path / "profile"
        keydir.mkdir()
        shutil.copy(esp_sa, keydir / "esp_sa")
    keys = keydir if esp_sa is None else esp_sa
    # Frames whose inner packet one tool sees and the other does not (see the module docstring).
    esp = _tshark(cap, keydir, "esp", "frame.number", "frame.protocols")
    theirs_inner = {int(n) for n, protos in esp if _own_esp_inner(protos)}
    assert main(["packets", str(cap), "-k", str(keys), "--json"]) == 0
    rows = {d["frame"]: d for d in map(json.loads, capsys.readouterr().out.splitlines())}
    ours_inner = {f for f, d in rows.items() if d["kind"] == "ESP" and d["inner"] is not None}
    differ = theirs_inner ^ ours_inner
    for f in differ:
        assert rows[f]["status"] == "icv-bad" or f not in theirs_inner, (
            f"frame {f}: tshark {'sees' if f in theirs_inner else 'does not see'} an inner packet, "
            f"ipsecscope's status is {rows[f]['status']!r}")
    assert len(differ) <= len(rows) // 3, f"too few frames comparable: {sorted(differ)}"
    spi = next((d["spi"] for d in rows.values() if d["kind"] == "ESP" and d["inner"]), "0x00000001")
    compared = 0
    # A capture of IKE alone (a failed negotiation) gets the filters; traffic gets them all.
    tunnels = cap.parent.name == "tunnels"
    templates = (FILTERS if ours_inner or tunnels else FILTERS[:9] + FILTERS[-11:-9] + FILTERS[-1:]) + IKE_FILTERS
    templates += TUNNEL_FILTERS if tunnels else []
    filters = [t.format(spi=spi) for t in templates]
    # Wireshark 4.0 spells the exchange type field isakmp.exchangetype (isakmp.exchtype later).
    *theirs, theirs_esp = _tshark_each(
        cap, keydir, [f.replace("isakmp.exchtype", "isakmp.exchangetype") for f in filters] + ["esp"], tmp_path)
    assert theirs_esp == [int(n) for n, _ in esp], "the one-pass taps select what -Y selects"
    for flt, expected in zip(filters, theirs, strict=True):
        got = _ours(cap, keys, flt, capsys)
        expected = [f for f in expected if f not in differ]
        got = [f for f in got if f not in differ]
        assert got == expected, f"{flt!r}: only tshark {sorted(set(expected) - set(got))}, " \
                                f"only ipsecscope {sorted(set(got) - set(expected))}"
        compared += bool(expected)
    # The filters must select something on a sample with traffic, or they prove nothing there.
    assert compared >= (5 if ours_inner else 1), f"only {compared} filters selected any frame"


def test_cli_runs_as_a_module_with_a_filter_error_pointing_at_it(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "ipsecscope", "packets", str(SAMPLES / "healthy-gcm" / "capture.pcapng"),
                        "-Y", "esp && ip.src = 10.1.0.1"], capture_output=True, text=True)
    assert r.returncode == 2
    assert "bad display filter" in r.stderr
    line, caret = r.stderr.splitlines()[1:3]
    assert caret.index("^") == line.index("=")  # the caret stands under the offending '='
