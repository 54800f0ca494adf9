"""ESP quoted in an ICMP error: a second inner record of the error's frame, never counted.

A NAT or host that will not take an ESP packet answers port unreachable quoting it *whole*
(samples/nat-rebind frame 13, samples/esp-rejected 12-18): the quote decrypts with its ICV
verified, and tshark dissects every layer of it, so display filters match them. A router that
drops a packet for its size quotes only the start of it in "fragmentation needed" (RFC 792,
RFC 1191): the SPI, the sequence number, the IV and the first cipher blocks, not the ICV.
tshark decrypts such a quote unchecked and reads a "trailer" from the middle of the payload;
ipsecscope decrypts the whole blocks the quote holds for the packet detail, marked not verified,
and its filter sees what tshark's sees there. Either way the quote is a copy of a packet already
sent: it is counted for no SA.
"""

from __future__ import annotations

import json

import pytest
from conftest import SAMPLES, needs_tshark

from ipsecscope.capture import open_capture
from ipsecscope.crypto.esp_open import decrypt_prefix, opener
from ipsecscope.decode.demux import Decoder
from ipsecscope.errors import DecryptError
from ipsecscope.keys import load_keys
from ipsecscope.model.packets import EspPacket
from ipsecscope.session import Session

MTU = SAMPLES / "mtu-small-link"


def test_the_quote_in_mtu_small_link_decrypts_to_the_packet_that_was_dropped():
    s = Session.from_files([MTU / "capture.pcapng"], [MTU / "keys"])
    d = s.detail(10)  # ICMP fragmentation needed, quoting ESP seq 3 of SPI 0x92649c9b (frame 9)
    q = d.quoted_esp
    assert q is not None and (q.spi, q.seq, q.src, q.dst) == (0x92649c9B, 3, "198.18.0.1", "198.18.0.2")
    assert q.plain is not None and "not verified" in q.note
    # the sender's own copy of that packet is frame 9: the quote's plaintext is its beginning
    sent = s.detail(9)
    assert sent.esp is not None and sent.esp.seq == 3 and sent.inner is not None
    assert len(q.plain) >= 400 and sent.inner.startswith(q.plain[:min(len(q.plain), len(sent.inner))])
    assert q.plain[12:20] == bytes([10, 1, 0, 1, 10, 2, 0, 1])  # the inner packet that was too big
    assert "10.1.0.1" in (q.summary or "")
    # never counted: the SA has exactly the ESP frames the capture carries for it
    flow = next(f for f in s.table.flows.values() if f.spi == 0x92649C9B)
    esp_frames = sum(1 for r in s.rows if r.kind == "ESP" and r.spi == 0x92649C9B)
    assert flow.packets == esp_frames and s.esp_decryptor.stats[(flow.src, flow.dst, flow.spi)].decrypted == esp_frames


def _esp_packets(cap):
    dec = Decoder()
    with open_capture(cap) as reader:
        for raw in reader:
            for p in dec.decode_all(raw):
                if isinstance(p, EspPacket):
                    yield p


@pytest.mark.parametrize("name", ["aead", "cbc-ctr-hmac"])
def test_a_prefix_decrypts_to_the_start_of_the_full_plaintext(name):
    """Every construction ESP uses (GCM, CCM, ChaCha20, GMAC, CBC, CTR, NULL): the blocks a cut-off
    packet holds decrypt to exactly what the whole packet decrypts to."""
    store = load_keys([SAMPLES / "synthetic" / f"{name}.keys.json"])
    kinds = set()
    for pkt in _esp_packets(SAMPLES / "synthetic" / f"{name}.pcap"):
        keys = store.esp_lookup(pkt.src, pkt.dst, pkt.spi)
        if keys is None:
            continue
        o = opener(keys)
        full = o.open(pkt.data, None)  # authenticated: the reference
        kinds.add(o.encr.kind)
        block = o.encr.block if o.encr.kind == "cbc" else 1
        for cut in (8 + o.iv_len + block, 8 + o.iv_len + 17, len(pkt.data) // 2, len(pkt.data) - o.icv_len - 1):
            if cut > len(pkt.data):
                continue
            got = decrypt_prefix(keys, pkt.data[:cut])
            assert full.startswith(got), (o.encr.label, cut)
            assert len(got) >= min(len(full), cut - 8 - o.iv_len - (block - 1)), (o.encr.label, cut)
    assert kinds >= ({"gcm", "ccm", "chacha", "gmac"} if name == "aead" else {"cbc", "ctr", "null"})


def test_a_quote_without_a_whole_block_is_a_one_line_error():
    store = load_keys([SAMPLES / "synthetic" / "cbc-ctr-hmac.keys.json"])
    pkt = next(p for p in _esp_packets(SAMPLES / "synthetic" / "cbc-ctr-hmac.pcap") if p.spi == 0xCB000001)
    keys = store.esp_lookup(pkt.src, pkt.dst, pkt.spi)
    with pytest.raises(DecryptError) as exc:
        decrypt_prefix(keys, pkt.data[:8 + 16 + 15])
    assert "\n" not in str(exc.value) and keys.enc_key.hex() not in str(exc.value)


def test_packets_json_shows_no_fields_of_the_quoted_plaintext(capsys):
    """The filter agrees with tshark: the quote's SPI and sequence match, its plaintext does not."""
    from ipsecscope.cli import main

    assert main(["packets", str(MTU / "capture.pcapng"), "-k", str(MTU / "keys"), "-Y",
                 "esp.spi == 0x92649c9b && icmp.type == 3", "--json"]) == 0
    assert [json.loads(x)["frame"] for x in capsys.readouterr().out.splitlines()] == [10]
    assert main(["packets", str(MTU / "capture.pcapng"), "-k", str(MTU / "keys"), "-Y",
                 "icmp.type == 8 && frame.number == 10", "--json"]) == 0
    assert capsys.readouterr().out == ""


@needs_tshark
def test_esp_quoted_straight_over_ip_matches_as_in_tshark(tmp_path):
    """An ICMP error quoting ESP over IP (protocol 50, not UDP 4500): esp.spi / esp.sequence of
    the quote match, as tshark dissects it (..:icmp:ip:esp)."""
    import os
    import struct
    import subprocess

    from ipsecscope.cli.packets import filtered_frames
    from ipsecscope.model.filter import compile_filter

    def ip(src, dst, proto, payload, tot=None):
        return struct.pack("!BBHHHBBH4s4s", 0x45, 0, tot or 20 + len(payload), 0, 0x4000, 64, proto, 0,
                           bytes(src), bytes(dst)) + payload

    esp = struct.pack("!II", 0xC0FFEE01, 7) + bytes(range(256))
    quoted = ip([198, 18, 0, 1], [198, 18, 0, 2], 50, esp[:100], tot=1460)  # cut off, as routers do
    frame = b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ip([198, 18, 1, 1], [198, 18, 0, 1], 1,
                                                         struct.pack("!BBHHH", 3, 4, 0, 0, 1280) + quoted)
    cap = tmp_path / "icmp-quotes-esp.pcap"
    cap.write_bytes(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
                    + struct.pack("<IIII", 1, 0, len(frame), len(frame)) + frame)
    s = Session.from_files([cap])
    for flt in ("esp.spi == 0xc0ffee01 && esp.sequence == 7", "esp && icmp.type == 3", "esp.spi != 0xc0ffee01",
                "ip.proto == 50"):
        out = subprocess.run(["tshark", "-n", "-r", str(cap), "-Y", flt, "-T", "fields", "-e", "frame.number"],
                             env=dict(os.environ, WIRESHARK_CONFIG_DIR=str(tmp_path)), capture_output=True,
                             text=True, check=True).stdout
        assert filtered_frames(s, compile_filter(flt)) == [int(x) for x in out.split()], flt
    assert s.detail(1).quoted_esp.note == "no key for this SA"


NAT = SAMPLES / "nat-rebind"


def _only_frame(cap, index, tmp_path, corrupt_last: bool = False):
    """A pcap holding frame ``index`` of ``cap`` alone (optionally with its last byte flipped)."""
    import struct

    with open_capture(cap) as reader:
        raw = next(r for r in reader if r.index == index)
    data = bytearray(raw.data)
    if corrupt_last:
        data[-1] ^= 0x5A
    out = tmp_path / f"frame{index}.pcap"
    out.write_bytes(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, raw.linktype)
                    + struct.pack("<IIII", 1, 0, len(data), len(data)) + bytes(data))
    return out


def test_a_whole_quote_is_decrypted_verified_and_counted_for_no_sa():
    s = Session.from_files([NAT / "capture.pcapng"], [NAT / "keys"])
    q = s.quoted.get(13)  # port unreachable from the NAT, quoting ESP seq 4 of SPI 0xcb037080 (frame 12)
    assert q is not None and q.whole and q.verified and q.status == "decrypted"
    assert (q.spi, q.seq, q.src, q.dst, q.next_header) == (0xCB037080, 4, "198.18.0.2", "198.18.0.1", 4)
    assert (q.inner.src, q.inner.dst, q.inner.proto, q.inner.itype) == ("10.2.0.1", "10.1.0.1", 1, 0)
    assert s.row(13).info.endswith("▸ quoted ESP 0xcb037080 seq 4 ▸ ICMP 10.2.0.1 → 10.1.0.1 Echo (ping) reply "
                                   "id=0x463d, seq=1/256, ttl=64")
    d = s.detail(13).quoted_esp
    assert d.verified and d.plain is not None and "ICV verified" in d.note and "10.2.0.1" in d.summary
    # never counted: the flow has exactly the ESP frames the capture carries for it, and the
    # sequence analysis saw seq 4 once (no replay, no duplicate)
    flow = next(f for f in s.table.flows.values() if f.spi == 0xCB037080)
    esp_frames = sum(1 for r in s.rows if r.kind == "ESP" and r.spi == 0xCB037080)
    assert flow.packets == esp_frames and s.esp_decryptor.stats[(flow.src, flow.dst, flow.spi)].decrypted == esp_frames
    assert not [f for f in s.findings if "REPLAY" in f.code]


def test_a_lone_quote_opens_no_sa_and_still_matches_its_inner_fields(tmp_path):
    from ipsecscope.cli.packets import filtered_frames
    from ipsecscope.model.filter import compile_filter

    s = Session.from_files([_only_frame(NAT / "capture.pcapng", 13, tmp_path)], [NAT / "keys"])
    assert s.quoted.get(1).status == "decrypted"
    assert s.esp_decryptor.stats == {} and not s.table.flows and s.stats.esp == 0
    for flt, want in (("icmp.type == 0 && icmp.type == 3", [1]), ("ip.src == 10.2.0.1", [1]), ("esp.protocol == 4", [1]),
                      ("icmp.seq == 1", [1]), ("icmp.type == 8", [])):
        assert filtered_frames(s, compile_filter(flt)) == want, flt


def test_a_whole_quote_whose_icv_fails_shows_only_its_headers(tmp_path):
    from ipsecscope.cli.packets import filtered_frames
    from ipsecscope.model.filter import compile_filter

    s = Session.from_files([_only_frame(NAT / "capture.pcapng", 13, tmp_path, corrupt_last=True)], [NAT / "keys"])
    q = s.quoted.get(1)
    assert q.whole and q.status == "icv-bad" and q.inner is None and q.next_header is None
    assert s.row(1).info.endswith("quoted ESP 0xcb037080 seq 4 (icv-bad)")
    assert filtered_frames(s, compile_filter("icmp.type == 0")) == []
    assert filtered_frames(s, compile_filter("esp.spi == 0xcb037080")) == [1]
    assert s.esp_decryptor.stats == {}


def test_a_cut_off_quote_stays_not_verified():
    s = Session.from_files([MTU / "capture.pcapng"], [MTU / "keys"])
    q = s.quoted.get(10)
    assert not q.whole and q.status == "not-verified" and not q.verified
    # tshark reads a next header from the would-be trailer; this one names no protocol it dissects
    assert q.next_header is None and q.inner is None
    assert s.row(10).info.endswith("quoted ESP 0x92649c9b seq 3 (cut off, not verified)")


def test_packets_json_shows_the_quoted_packet(capsys):
    from ipsecscope.cli import main

    assert main(["packets", str(NAT / "capture.pcapng"), "-k", str(NAT / "keys"), "-Y", "frame.number in {12 13}",
                 "--json"]) == 0
    sent, err = (json.loads(x) for x in capsys.readouterr().out.splitlines())
    assert sent["inner"]["quoted_esp"] is None
    q = err["inner"]["quoted_esp"]
    assert (q["spi"], q["seq"], q["status"], q["verified"], q["whole"], q["next_header"]) == (
        "0xcb037080", 4, "decrypted", True, True, 4)
    assert q["inner"]["info"] == sent["inner"]["info"]  # the copy of frame 12's packet


@needs_tshark
def test_the_protocols_tshark_dissects_after_esp_are_the_installed_tsharks():
    """decode.quoted.WIRESHARK_IP_PROTOCOLS (what a cut-off quote's would-be next header must name
    for tshark to dissect the rest) is tshark's "ip.proto" dissector table."""
    import subprocess

    from ipsecscope.decode.quoted import WIRESHARK_IP_PROTOCOLS

    out = subprocess.run(["tshark", "-G", "decodes"], capture_output=True, text=True, check=True).stdout
    table = {int(f[1]) for f in (ln.split("\t") for ln in out.splitlines()) if f[0] == "ip.proto"}
    assert table == WIRESHARK_IP_PROTOCOLS


def test_decrypt_export_writes_the_icmp_error_as_captured(tmp_path):
    """decrypt -o --keep-other: the error frame is written unchanged (its quote still encrypted) and
    no decrypted copy of the quoted packet is added — as tshark's `-U IP` export."""
    from ipsecscope.cli import main

    out = tmp_path / "clear.pcapng"
    assert main(["decrypt", str(NAT / "capture.pcapng"), "-k", str(NAT / "keys"), "-o", str(out), "--keep-other",
                 "-q"]) == 0
    with open_capture(NAT / "capture.pcapng") as reader:
        frames = list(reader)
    err = next(r for r in frames if r.index == 13).data
    with open_capture(out) as reader:
        written = [bytes(r.data) for r in reader]
    assert len(written) == len(frames) and written.count(bytes(err)) == 1


SYN_Q = SAMPLES / "synthetic" / "icmp-quoted"


def _synthetic_quoted():
    truth = json.loads(SYN_Q.with_suffix(".truth.json").read_text())["frames"]
    s = Session.from_files([SYN_Q.with_suffix(".pcap")], [SYN_Q.with_suffix(".keys.json")])
    return s, truth


def test_a_quote_behind_ipv6_extension_headers_is_decrypted_and_verified():
    """RFC 4443 §2.4(c): the error quotes the packet with its extension headers (hop-by-hop,
    destination options, an atomic fragment header, RFC 8200 §4); the ESP (raw or in UDP 4500)
    behind them is found, decrypted and its ICV verified, as without extension headers."""
    s, truth = _synthetic_quoted()
    sent = {int(f): t for f, t in truth.items() if "spi" in t}
    behind = 0
    # the whole quotes right after each ESP packet sent behind extension headers (frames 48, 54, 57, 63)
    for esp_frame in (48, 54, 57, 63):
        t = sent[esp_frame]
        q = s.quoted.get(esp_frame + 1)
        assert q is not None and q.whole and q.status == "decrypted", (esp_frame, q)
        assert (q.spi, q.seq) == (t["spi"], t["seq"])
        assert q.inner is not None and q.inner.info() == s.inner.get(esp_frame).info()
        behind += 1
    assert behind == 4
    # the SA counts only the packets the capture carries (the quotes are copies)
    for spi in (0x70000001, 0x70000005):
        flow = next(f for f in s.table.flows.values() if f.spi == spi)
        assert flow.packets == sum(1 for r in s.rows if r.kind == "ESP" and r.spi == spi)


def test_a_cut_off_quote_behind_extension_headers():
    """Packet too big quoting the chain cut inside it (no ESP), inside the ESP header (the SPI
    only, as tshark shows it) and past it (decrypted as far as it goes, not verified)."""
    from ipsecscope.decode.icmp import decode_error

    s, _truth = _synthetic_quoted()
    assert s.quoted.get(50) is None and "ESP" not in s.row(50).info  # cut in the fragment header
    assert s.quoted.get(51) is None and s.inner.quoted[51][:3] == ("esp", 0x70000001, None)  # 6 octets of ESP
    q = s.quoted.get(52)
    assert q is not None and not q.whole and q.status == "not-verified" and (q.spi, q.seq) == (0x70000001, 4)
    with open_capture(SYN_Q.with_suffix(".pcap")) as reader:
        raw = {r.index: r for r in reader}
    for frame, want in ((51, (0x70000001, None)), (52, (0x70000001, 4)), (56, (0x70000005, 4)), (50, None)):
        data = bytes(raw[frame].data)[14:]
        err = decode_error(frame, 0.0, 6, data[8:24], data[24:40], data[40:])
        assert (err.spi, err.seq) == want if want else err is None, frame


def test_the_extension_header_walk_is_bounded_and_truncation_safe():
    from ipsecscope.decode.ip import (
        CHAIN_CUT,
        CHAIN_LATER_FRAGMENT,
        CHAIN_OK,
        MAX_QUOTED_EXT,
        walk_quoted_v6,
    )

    dopt = bytes((60, 0, 1, 4, 0, 0, 0, 0))  # destination options naming another one next
    long = dopt * (MAX_QUOTED_EXT + 4)
    nh, off, st = walk_quoted_v6(long, 60, 0, len(long))
    assert (nh, off, st) == (60, 8 * MAX_QUOTED_EXT, CHAIN_OK)  # stops, never loops on
    chain = bytes((0, 0, 1, 4, 0, 0, 0, 0)) + bytes((50, 1)) + bytes(14)  # hop-by-hop, 16-octet dest opts
    assert walk_quoted_v6(chain, 0, 0, len(chain)) == (50, 24, CHAIN_OK)
    for cut in range(len(chain)):
        nh, off, st = walk_quoted_v6(chain[:cut], 0, 0, cut)
        assert st == CHAIN_CUT and off <= cut, cut
    later = bytes((17, 0, 0x05, 0x01)) + bytes(4)  # fragment header, offset 160, M
    assert walk_quoted_v6(later, 44, 0, 8) == (17, 8, CHAIN_LATER_FRAGMENT)


@needs_tshark
def test_quoted_ike_fields_are_tsharks_frame_by_frame(tmp_path):
    """IKE an ICMP/ICMPv6 error quotes (UDP 500; 4500 after the non-ESP marker; IPv4, and IPv6
    behind a destination options header), whole and cut off at 27, 28, 40 octets, one octet short
    and, for the real capture, an IKE_AUTH decrypted with the IKE SA's keys: every isakmp field
    a filter can name holds tshark's values, frame by frame (tshark dissects the payloads of a
    quote at most 4 octets short of the message's Length, and shows a shorter one's header
    without its Length)."""
    import os
    import shutil
    import subprocess

    from conftest import DATA

    from ipsecscope.filtering import quoted_ike_field

    fields = ("ispi", "rspi", "nextpayload", "version", "exchangetype", "flags", "messageid", "length",
              "notify.msgtype")
    cases = [(SYN_Q.with_suffix(".pcap"), SYN_Q.with_suffix(".keys.json"), SYN_Q.with_suffix(".esp_sa")),
             (DATA / "findings" / "udp4500-unanswered" / "capture.pcapng",
              DATA / "findings" / "udp4500-unanswered" / "keys", None)]
    compared = 0
    for cap, keys, esp_sa in cases:
        prof = keys if esp_sa is None else tmp_path / cap.stem
        if esp_sa is not None:
            prof.mkdir()
            shutil.copy(esp_sa, prof / "esp_sa")
        out = subprocess.run(["tshark", "-n", "-r", str(cap), "-Y", "(icmp || icmpv6) && isakmp", "-T", "fields",
                              "-E", "occurrence=a", "-E", "aggregator=,", "-e", "frame.number",
                              *[x for f in fields for x in ("-e", f"isakmp.{f}")]],
                             env=dict(os.environ, WIRESHARK_CONFIG_DIR=str(prof)), capture_output=True, text=True,
                             check=True).stdout
        s = Session.from_files([cap], [keys])
        theirs = {int(r[0]): r[1:] for r in (ln.split("\t") for ln in out.splitlines())}
        quoted = {f: q for f, q in s.inner.quoted.items() if q[0] == "isakmp"}
        assert sorted(quoted) == sorted(theirs)
        for frame, q in quoted.items():
            for name, text in zip(fields, theirs[frame], strict=True):
                want = [int(x, 16) if name in ("ispi", "rspi") or x.startswith("0x") else int(x)
                        for x in text.split(",") if x]
                got = quoted_ike_field(q[1], name, s.quoted.ike(frame))
                got = [int.from_bytes(v, "big") if isinstance(v, bytes) else v for v in got]
                assert sorted(got) == sorted(want), (cap.name, frame, name)
            compared += 1
    assert compared >= 25
