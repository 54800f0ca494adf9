"""Public IPsec captures nobody here made (tests/data/zeek-spicy-ipsec, zeek, ndpi, scapy: provenance in
each folder), frame by frame against tshark and against the expected outputs their projects ship
(Zeek's ipsec.log / AH events). Each class of disagreement these captures showed has its test:

* ESP under AH (RFC 4302 §3.1, an SA bundle of RFC 4301 §4.5): the ESP SA is an SA of its own and
  its packets count, as tshark dissects them (the AH's Next Header is 50).
* Two ESP flows of one CHILD SA read without keys: a burst answered one path round trip later is
  paired (the IKE exchanges between the peers measure that round trip).
* An IKE_SA_INIT from the original initiator is a request even with its R flag set (RFC 7296 §1.2,
  §2.2; a real client sends flags 0xff).
* A request sent just before the capture ends is no evidence of a dead peer.
* An IKE_AUTH lost as IP fragments is not "UDP 4500 blocked": fragments explain it as well.
* An unanswered phase-1 message (IKE_SA_INIT, IKEv1 Main/Aggressive Mode) is no dead peer, even
  when the capture starts mid-exchange and the SA's state is a guess.
* Text from the wire or from files is never rich markup in the text output: "[2001:db8::100]:500"
  stays an address and port (":100:" is an emoji code, "[fd00:…]" a tag), an ID "[/x]" does not
  crash it.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from conftest import CORPUS, DATA, ROOT, needs_tshark, public, public_dir, public_files
from conftest import field_cli as cli
from public_data import data_id

ZEEK = public_dir("zeek-spicy-ipsec")  # third-party: materialised at test time (tests/public_data.py)
NDPI = public_dir("ndpi")  # third-party: materialised at test time (tests/public_data.py)
ARKIME = public_dir("arkime")  # third-party: materialised at test time (tests/public_data.py)
KLIPS = public_dir("openswan-klips")
# third-party captures, none committed: materialised at test time (tests/public_data.py)
CAPTURES = [*(p for d in ("ndpi", "openswan-klips") for p in public_files(d) if p.suffix in (".cap", ".pcap", ".pcapng")),
            *(p for p in public_files("zeek-spicy-ipsec") if p.suffix in (".cap", ".pcap")), *(p for p in public_files("arkime") if p.suffix == ".pcap"), *public_files("openswan-unit"), *public_files("joy"), *public_files("libreswan"),
            *public_files("scapy"), *(p for p in public_files("zeek") if p.suffix == ".pcap")]
AH_ESP = ZEEK / "IPsec_ESP-AH_tunnel_mode.cap"
BURST = NDPI / "derived" / "ipsec_isakmp_esp-207-225.pcap"


def _id(p: Path) -> str:
    return data_id(p)


def summary(cap: Path) -> dict:
    return json.loads(cli("summary", str(cap), "--json"))


def packets(cap: Path) -> dict[int, dict]:
    return {d["frame"]: d for d in map(json.loads, cli("packets", str(cap), "--json").splitlines())}


def findings(cap: Path) -> list[dict]:
    return json.loads(cli("findings", str(cap), "--json"))["findings"]


def sas(cap: Path) -> dict:
    return json.loads(cli("sas", str(cap), "--json"))


TS_FIELDS = ("frame.number", "frame.time_epoch", "frame.protocols", "isakmp.ispi", "isakmp.rspi",
             "isakmp.exchangetype", "isakmp.messageid", "isakmp.version", "isakmp.flags", "esp.spi",
             "esp.sequence", "ah.spi", "ah.sequence", "ip.src", "ip.dst", "ipv6.src", "ipv6.dst")


@functools.cache
def tshark(cap: Path) -> dict[int, dict[str, str]]:
    """frame -> tshark 4.0's fields (no keys), first occurrence of each."""
    args = ["tshark", "-n", "-r", str(cap), "-T", "fields", "-E", "occurrence=f"]
    for f in TS_FIELDS:
        args += ["-e", f]
    out = subprocess.run(args, capture_output=True, text=True, timeout=120, check=True).stdout
    rows = {}
    for line in out.splitlines():
        cols = (line.split("\t") + [""] * len(TS_FIELDS))[:len(TS_FIELDS)]
        rows[int(cols[0])] = dict(zip(TS_FIELDS, cols, strict=True))
    return rows


@needs_tshark
@pytest.mark.parametrize("cap", CAPTURES, ids=_id)
def test_ike_messages_and_esp_packets_agree_with_tshark_frame_by_frame(cap):
    """Every frame tshark dissects as ISAKMP is the same IKE message for ipsecscope (SPIs,
    exchange type, message ID, version); every ESP frame has tshark's SPI and sequence number;
    every AH flow tshark sees is ours with the same packets. A frame only ipsecscope calls IKE is
    one it counts malformed (an ISAKMP header of length 0 on port 500: tshark shows data)."""
    ts = tshark(cap)
    s = summary(cap)
    ours_ike = {m["frame"]: m for m in s["ike"]}
    rows = packets(cap)
    ah_theirs: Counter = Counter()
    malformed = {e["frame"] for e in s["malformed"]["examples"]}
    for n, t in ts.items():
        stack = t["frame.protocols"].split(":")
        ipsec = [i for i, p in enumerate(stack) if p in ("isakmp", "esp", "ah", "udpencap")]
        if ipsec and any(p in ("icmp", "icmpv6") for p in stack[:ipsec[0]]):
            continue  # an ICMP error quoting an IKE/ESP packet (ICMP under AH is AH traffic)
        if "isakmp" in stack:
            m = ours_ike.get(n)
            assert m is not None, f"frame {n}: tshark dissects ISAKMP, ipsecscope has no IKE message"
            assert (m["spi_i"], m["spi_r"], m["exchange_type"], m["msg_id"], m["version"]) == (
                t["isakmp.ispi"], t["isakmp.rspi"], int(t["isakmp.exchangetype"]), int(t["isakmp.messageid"], 16),
                int(t["isakmp.version"], 16) >> 4), n
        if "esp" in stack and t["esp.spi"]:
            r = rows[n]
            assert (r["kind"], int(r["spi"], 16), r["seq"]) == ("ESP", int(t["esp.spi"], 16), int(t["esp.sequence"])), n
        if "ah" in stack and not (n in malformed and rows[n]["kind"] == "MALFORMED"):
            # (an AH header shorter than its 12 fixed octets, RFC 4302 §2.2: tshark shows it
            # with the ICV missing, ipsecscope marks it malformed: Zeek's ipv6_zero_len_ah)
            src = t["ip.src"] or t["ipv6.src"]
            dst = t["ip.dst"] or t["ipv6.dst"]
            ah_theirs[(src, dst, int(t["ah.spi"], 16))] += 1
    only_ours = {n for n in ours_ike if "isakmp" not in ts[n]["frame.protocols"].split(":")}
    assert only_ours <= malformed, sorted(only_ours - malformed)
    assert Counter({(f["src"], f["dst"], int(f["spi"], 16)): f["packets"] for f in s["ah"]}) == ah_theirs


# ---- Zeek's expected outputs ----------------------------------------------------------------------

ZEEK_TRACES = {
    "basic": ZEEK / "ipsec_client.pcap",
    "ikev1-a": CORPUS / "ikev1-certs.pcap",
    "ikev1-b": ZEEK / "ipsec-ikev1-isakmp-aggressive-mode.pcap",
    "ikev1-c": public("suricata-verify/ikev1-rules/ikev1-isakmp-main-mode.pcap"),
    "ipsec_esp": ZEEK / "ipsec.cap",
}


def zeek_log(path: Path) -> list[dict[str, str]]:
    fields: list[str] = []
    rows = []
    for line in path.read_text().splitlines():
        if line.startswith("#fields"):
            fields = line.split("\t")[1:]
        elif line and not line.startswith("#"):
            rows.append(dict(zip(fields, line.split("\t"), strict=True)))
    return rows


@pytest.mark.parametrize("test", sorted(ZEEK_TRACES))
def test_ike_messages_are_zeeks(test):
    """The IKE messages of Zeek's ipsec.log (SPIs, version, exchange type, message ID, length) are
    ipsecscope's, as a multiset (the baseline is sorted); an IP-fragmented IKE_AUTH is one message
    of its reassembled length for both."""
    want = Counter((r["initiator_spi"], r["responder_spi"], int(r["maj_ver"]), int(r["exchange_type"]),
                    int(r["message_id"]), int(r["length"]))
                   for r in zeek_log(ZEEK / "baseline" / test / "ipsec.log"))
    got = Counter((m["spi_i"], m["spi_r"], m["version"], m["exchange_type"], m["msg_id"], m["length"])
                  for m in summary(ZEEK_TRACES[test])["ike"])
    assert got == want


def test_ah_packets_are_zeeks():
    """Zeek's ah_message_over_ip events (src, dst, SPI, sequence number) are the AH flows'."""
    events: Counter = Counter()
    seqs: dict[tuple, set[int]] = {}
    # The baseline prints each event's fields with no separator between them: here both addresses
    # are 10.0.0.x with one-digit x, the SPIs have ten decimal digits and the AH length is 12.
    ev = re.compile(r"ah_message_over_ip (10\.0\.0\.\d)(10\.0\.0\.\d)(\d{10})(\d+)12$")
    for line in (ZEEK / "baseline" / "ipsec_ah" / "stdout").read_text().splitlines():
        if line.startswith("ah_message_over_ip"):
            src, dst, spi, seq = ev.match(line).groups()  # type: ignore[union-attr]
            events[(src, dst, int(spi))] += 1
            seqs.setdefault((src, dst, int(spi)), set()).add(int(seq))
    assert sum(events.values()) == 10
    ah = summary(AH_ESP)["ah"]
    assert {(f["src"], f["dst"], int(f["spi"], 16)): f["packets"] for f in ah} == dict(events)
    for f in ah:
        s = seqs[(f["src"], f["dst"], int(f["spi"], 16))]
        assert (f["seq_min"], f["seq_max"]) == (min(s), max(s))


# ---- the classes ------------------------------------------------------------------------------------

@needs_tshark
def test_esp_under_ah_is_its_own_sa():
    """AH (next header 50) protecting ESP: tshark dissects ip:ah:esp; the ESP packets count, each
    direction's ESP SPI is an SA of its own beside the AH SA (RFC 4301 §4.1: SPI, destination and
    protocol), and the packet list shows the ESP (what the AH protects and what would decrypt)."""
    ts = tshark(AH_ESP)
    assert all(t["frame.protocols"].endswith(":ip:ah:esp") for t in ts.values())
    s = summary(AH_ESP)
    assert (s["counts"]["ah"], s["counts"]["esp"], s["counts"]["malformed"]) == (10, 10, 0)
    esp_theirs = Counter((t["ip.src"], t["ip.dst"], int(t["esp.spi"], 16)) for t in ts.values())
    assert {(f["src"], f["dst"], int(f["spi"], 16)): f["packets"] for f in s["esp"]} == dict(esp_theirs)
    children = sas(AH_ESP)["child_sas"]
    assert sorted((c["protocol"], c["spi_i"], c["spi_r"]) for c in children) == [
        ("AH", "0xba8bd060", "0x8179b705"), ("ESP", "0xfb5128a6", "0x48dac2e4")]
    rows = packets(AH_ESP)
    assert [r["kind"] for r in rows.values()] == ["ESP"] * 10


@needs_tshark
def test_a_burst_answered_a_round_trip_later_is_one_child_sa():
    """ipsecscope without keys pairs two opposite ESP flows only when the reverse starts while the
    first is active. Here 192.168.2.100 sends 3 packets within 1 ms and the gateway's reply starts
    49 ms later, more than twice the burst's own packet interval after its last packet (the old rule
    split them into two one-way SAs, two ESP-ONE-WAY warnings). The reply is one round trip away,
    which the peers' IKE exchanges measured: the pair is one CHILD SA, and nothing is one-way."""
    ts = tshark(BURST)
    fwd = [float(t["frame.time_epoch"]) for t in ts.values() if t["esp.spi"] == "0x02dcd9b5"]
    rev = [float(t["frame.time_epoch"]) for t in ts.values() if t["esp.spi"] == "0xc3cdf820"]
    before = [t for t in fwd if t < rev[0]]
    rhythm = (before[-1] - before[0]) / (len(before) - 1)
    gap = rev[0] - before[-1]
    assert gap > 2 * rhythm and gap < 0.1
    # the IKE round trips tshark sees between the two peers (request -> response, same message ID)
    reqs = {}
    rtts = []
    for t in ts.values():
        if t["isakmp.flags"]:
            key = (t["isakmp.exchangetype"], t["isakmp.messageid"])
            if int(t["isakmp.flags"], 16) & 0x20 and t["ip.src"] == "109.237.187.131" and key in reqs:
                rtts.append(float(t["frame.time_epoch"]) - reqs.pop(key))
            elif t["ip.src"] == "192.168.2.100":
                reqs[key] = float(t["frame.time_epoch"])
    assert max(rtts) > gap
    (child,) = sas(BURST)["child_sas"]
    assert (child["spi_i"], child["spi_r"]) == ("0xc3cdf820", "0x02dcd9b5")
    assert child["inferred_reason"].startswith("paired: ")
    assert not [f for f in findings(BURST) if f["code"] == "ESP-ONE-WAY"]


@needs_tshark
def test_ike_sa_init_from_the_initiator_with_flags_0xff_is_a_request():
    """Frame 1's flags byte is 0xff: tshark reads "Initiator, Response". The gateway answers it
    with a COOKIE (frame 2), the client retries (frame 3) and the SA comes up: it was the request,
    and the exchanges pair as such; the initiator's NAT-T source port is its request's (10500)."""
    ts = tshark(BURST)
    assert ts[1]["isakmp.flags"] == "0xff" and ts[2]["isakmp.flags"] == "0x20"
    m = summary(BURST)["ike"][0]
    assert (m["frame"], m["is_initiator"], m["is_response"]) == (1, True, False)
    (sa,) = sas(BURST)["ike_sas"]
    assert sa["state"] == "established"
    init = [x for x in sa["exchanges"] if x["exchange"] == "IKE_SA_INIT"]
    assert [(x["request_frames"], x["response_frames"]) for x in init] == [([1], [2]), ([3], [4])]
    nat = next(f for f in findings(BURST) if f["code"] == "IKE-NAT-DETECTED")
    assert "192.168.2.100:10500 as captured" in nat["explanation"]


def test_a_request_at_the_end_of_the_capture_is_no_dead_peer():
    """The gateway's INFORMATIONAL request is the capture's last frame: nothing could answer it
    within the capture, so it says nothing about the peer being dead."""
    assert summary(BURST)["ike"][-1]["frame"] == 19
    assert not [f for f in findings(BURST) if f["code"] in ("IKE-DEAD-PEER", "IKE-NO-RESPONSE")]


def test_an_ip_fragmented_ike_auth_is_not_udp_4500_blocked():
    """ipsec_client: IKE_SA_INIT answered on 500, then IKE_AUTH on 4500 three times, each time in
    IP fragments, never answered. Lost fragments explain that as well as a blocked port: one
    finding, IKE-IP-FRAGMENTED, not also IKE-UDP4500-BLOCKED."""
    codes = [f["code"] for f in findings(ZEEK / "ipsec_client.pcap")]
    assert "IKE-IP-FRAGMENTED" in codes and "IKE-UDP4500-BLOCKED" not in codes


OUT_OF_ORDER = NDPI / "derived" / "ipsec_isakmp_esp-1-19.pcap"


@needs_tshark
def test_records_out_of_time_order():
    """The nDPI capture is not in time order: frames 16-19 (IKE_SA_INIT, a COOKIE, the retry, the
    answer) are 0.1 s older than frame 1 (IKE_AUTH of the same SA). The capture spans its earliest
    to its latest time (as capinfos says), the late IKE_SA_INIT joins the SA its SPIi names instead of
    starting one nobody answers, and a request is not 'unanswered' for a negative time."""
    times = {n: float(t["frame.time_epoch"]) for n, t in tshark(OUT_OF_ORDER).items()}
    assert times[16] < times[1] and max(times.values()) > times[19]
    doc = sas(OUT_OF_ORDER)
    assert (doc["first_time"], doc["last_time"]) == pytest.approx((min(times.values()), max(times.values())))
    (sa,) = doc["ike_sas"]
    assert (sa["spi_i"], sa["spi_r"], sa["state"]) == ("b64ef32131a48952", "86babd3904886955", "established")
    init = [(x["request_frames"], x["response_frames"]) for x in sa["exchanges"] if x["exchange"] == "IKE_SA_INIT"]
    assert init == [([16], [17]), ([18], [19])]
    assert not [f for f in findings(OUT_OF_ORDER) if f["code"] in ("IKE-NO-RESPONSE", "IKE-DEAD-PEER")]


# ---- Arkime's expected session records ---------------------------------------------------------

ALG = {"aes-cbc": "aes", "prf-hmac-sha2-512": "sha512", "sha2-512": "sha512", "ecp384": "ecp384"}
EXCHANGES = {"ike-sa-init": "IKE_SA_INIT", "ike-auth": "IKE_AUTH", "create-child-sa": "CREATE_CHILD_SA",
             "informational": "INFORMATIONAL", "identity-protection": "Main Mode", "quick-mode": "Quick Mode"}


@pytest.mark.parametrize("name", ["IKEv1", "IKEv2", "ike-cert_synthetic"])
def test_ike_sas_are_arkimes(name):
    """Arkime's isakmp session records: the initiator / responder SPIs, exchange types, version and
    (IKEv1, IKEv2) the negotiated encryption, PRF/hash and DH group are ipsecscope's IKE SAs'."""
    cap = ARKIME / f"{name}.pcap"
    want_spi_i, want_spi_r, want_x, want_alg = set(), set(), set(), set()
    for sess in json.loads((ARKIME / f"{name}.test").read_text())["sessions3"]:
        ik = sess["body"].get("isakmp")
        if not ik:
            continue
        want_spi_i |= set(ik["initiatorSpi"])
        want_spi_r |= set(ik.get("responderSpi", ()))
        want_x |= {EXCHANGES[x] for x in ik["exchangeType"]}
        want_alg |= {ALG[a] for k in ("encryption", "hash", "dhGroup") for a in ik.get(k, ())}
    doc = sas(cap)
    assert {sa["spi_i"] for sa in doc["ike_sas"]} == want_spi_i
    assert {sa["spi_r"] for sa in doc["ike_sas"]} - {"0000000000000000"} == want_spi_r
    assert {x["exchange"] for sa in doc["ike_sas"] for x in sa["exchanges"]} == want_x
    for sa in doc["ike_sas"]:
        if sa["proposal"]:  # "aes256-sha512-ecp384": every part Arkime names is in it
            assert all(a in sa["proposal"] for a in want_alg), (sa["proposal"], want_alg)
    assert any(sa["proposal"] for sa in doc["ike_sas"]) == bool(want_alg)


def test_unanswered_main_mode_mid_exchange_is_not_a_dead_peer():
    """ike-cert_synthetic's Main Mode messages (frames 1 and 3) carry both cookies and an SA
    payload, which only the responder sends beside its cookie (MM2, RFC 2409 §5): each is an answer
    to a request the capture does not hold, in an IKE SA that never came up. Not a dead peer, and
    no request went unanswered (they were read as the initiator's, unanswered:
    tests/test_ikev1_roles.py)."""
    fs = findings(ARKIME / "ike-cert_synthetic.pcap")
    assert not [f for f in fs if f["code"] == "IKE-DEAD-PEER"]
    assert not [f for f in fs if f["code"] == "IKE-NO-RESPONSE" and "Main Mode" in f["title"]]
    sas = json.loads(cli("sas", str(ARKIME / "ike-cert_synthetic.pcap"), "--json"))["ike_sas"]
    mm = {s["responder"]: s["state"] for s in sas if s["version"] == 1 and s["responder_port"] == 500}
    assert mm == {"10.1.1.100": "initiating", "2001:db8::100": "initiating"}


def test_text_output_is_not_markup():
    """sas / findings text: an IPv6 address with its port holds ":100:", rich's emoji code for 💯;
    it is printed as captured."""
    cap = ARKIME / "ike-cert_synthetic.pcap"
    out = cli("sas", str(cap))
    # bracketed beside the port (RFC 3986 §3.2.2), or "2001:db8::100:500" reads as one address
    assert "[2001:db8::200]:500 → [2001:db8::100]:500" in out and "\N{HUNDRED POINTS SYMBOL}" not in out
    # "[fd00:…]" starts like a rich tag (a letter after "["): printed, not swallowed as style
    out = cli("sas", str(ROOT / "samples" / "synthetic" / "hostile-text.pcap"))
    assert "[fd00:db8::100:1]:500 → [fd00:db8::100:2]:500" in out


def test_ids_and_names_from_the_wire_are_not_markup():
    """An IKE ID, a gateway name or a file name is text: "[/x]" or "[bold]" in it is printed as is
    (rich would raise MarkupError on an unmatched closing tag: a traceback on bad input)."""
    import io

    from rich.console import Console

    from ipsecscope.cli.sas import render
    from ipsecscope.model.sa import IkeExchange, IkeSa, SaTable

    sa = IkeSa(ike_spi_i=bytes(8), ike_spi_r=bytes(range(8)), version=2, initiator="2001:db8::100",
               responder="2001:db8::200", id_i="CN=[/x] O=[bold]Acme", id_r="fqdn:100:")
    sa.exchanges.append(IkeExchange(exchange=34, msg_id=0, requester="2001:db8::100", request_frames=[1],
                                    summary="IKE_SA_INIT answered with REDIRECT to [/gw].example"))
    table = SaTable()
    table.ike_sas[sa.key] = sa
    buf = io.StringIO()
    render(table, Console(file=buf, width=200, emoji=False))
    out = buf.getvalue()
    assert "IDs CN=[/x] O=[bold]Acme → fqdn:100:" in out and "REDIRECT to [/gw].example" in out


# ---- packetgen-plugin-ipsec: published keys, the plaintext beside each ESP packet -----------------

PG = public_dir("packetgen")  # third-party: materialised at test time (tests/public_data.py)
PG_KEYS = DATA / "packetgen" / "derived"  # ours: the specs' published keys as Wireshark tables
PG_ESP = [("esp4-cbc", "cbc-gcm"), ("esp4-ctr-hmac", "ctr-hmac"), ("esp4-gcm", "gcm"), ("esp-tfc", "cbc-gcm")]


@pytest.mark.parametrize(("name", "keys"), PG_ESP, ids=[n for n, _ in PG_ESP])
def test_esp_decrypts_to_the_plaintext_captured_beside_it(name, keys):
    """Frame 1 is ESP, frame 2 the IP packet packetgen encrypted into it: ipsecscope's decryption of
    frame 1 (ICV verified where there is one) is those bytes, up to the IP total length. esp-tfc
    pads the 84-byte packet to 1000 bytes (TFC padding, RFC 4303 §2.4, §2.7): the padding is not
    part of the packet. esp4-ctr-hmac authenticates with HMAC-SHA-256-96 and a 128-bit key: HMAC
    takes any key length (RFC 2104 §2), the ICV decides (it was refused as 'expected 256 bits')."""
    from ipsecscope import api
    from ipsecscope.capture import open_capture

    cap = PG / f"{name}.pcapng"
    red = {f.index: f for f in open_capture(cap)}[2].data[14:]  # Ethernet
    red = red[:int.from_bytes(red[2:4], "big")]  # IPv4 total length
    dec = {d.frame: d for d in api.iter_decrypted(cap, [PG_KEYS / f"{keys}.esp_sa"])}
    assert dec[1].status == "ok", dec[1].reason
    assert dec[1].ip_packet() == red
    assert dec[3].status == "no_key"  # the reply's key is not published
    if name == "esp-tfc":
        assert len(red) == 84 and len({f.index: f for f in open_capture(cap)}[1].data) == 1070


@needs_tshark
def test_transport_mode_esn_decrypts_as_tshark(tmp_path):
    """esp-transport-esn: AES-256-GCM, transport mode, ESN (high bits 0): the reply decrypts to the
    ICMP echo reply tshark shows with the same key."""
    import shutil

    from ipsecscope import api

    cap = PG / "esp-transport-esn.pcapng"
    keys = PG_KEYS / "cbc-gcm.esp_sa"
    dec = {d.frame: d for d in api.iter_decrypted(cap, [keys])}
    assert dec[2].status == "ok" and not dec[2].tunnel and dec[2].next_header == 1
    shutil.copy(keys, tmp_path / "esp_sa")
    out = subprocess.run(["tshark", "-n", "-r", str(cap), "-o", "esp.enable_encryption_decode:TRUE",
                          "-Y", "frame.number == 2", "-T", "fields", "-e", "icmp.type", "-e", "icmp.ident"],
                         env={**os.environ, "WIRESHARK_CONFIG_DIR": str(tmp_path)},
                         capture_output=True, text=True, timeout=60).stdout.split()
    assert out[0] == "0"
    assert dec[2].ip_packet()[20] == 0  # ICMP type 0, echo reply, as tshark reads it


@pytest.mark.parametrize(("name", "table", "payloads"), [("ikev2", "ikev2-gcm", 12),
                                                         ("ikev2_cbc_hmac", "ikev2-cbc-hmac", 11)])
def test_ike_auth_decrypts_with_the_published_initiator_keys(name, table, payloads):
    """The specs publish SK_ei (and SK_ai) only: the IKE_AUTH request decrypts, its ICV verified, to
    as many payloads as packetgen's spec expects (the SK and what it carried); the response, keyed
    with zeros here, fails its ICV and shows nothing."""
    from ipsecscope import api
    from ipsecscope.session import Session

    s = Session(api.load_keystore([PG_KEYS / f"{table}.ikev2_decryption_table"]))
    s.load(PG / f"{name}.pcapng")
    req, resp = s.ike_messages[3], s.ike_messages[4]
    assert req.decrypted and req.icv_ok and len(list(req.all_payloads())) == payloads
    assert not resp.decrypted and resp.icv_ok is False


# ---- UDP port 500 shared with another well-known service -------------------------------------------

DNS_TO_500 = [public("tcpdump/dns-badlabel.pcap"), public("tcpdump/dns_fwdptr.pcap")]


@needs_tshark
@pytest.mark.parametrize("cap", DNS_TO_500, ids=_id)
def test_a_dns_reply_to_port_500_is_dns_not_malformed_ike(cap):
    """A DNS reply from port 53 to port 500 is no IKE message: tshark's UDP dissector tries the
    lower port's dissector first and shows DNS; its payload has no IKE header (major version 0).
    It was counted "malformed IKE"; now it is other traffic, in the summary (fast path) and in the
    packet list (generic decoder) alike."""
    ts = tshark(cap)
    assert [t["frame.protocols"].split(":")[-1] for t in ts.values()] == ["dns"]
    s = summary(cap)
    assert (s["counts"]["ike"], s["counts"]["malformed"], s["counts"]["other"]) == (0, 0, 1)
    (row,) = packets(cap).values()
    assert (row["kind"], row["info"].split()[0]) == ("OTHER", "DNS")


NAT_PORT_IKE = public("openswan-unit/lp104-v1rwnatN1.pcap")  # IKEv1 from a NAT's port 55044 to 500
LOW_PORT_IKE = public("tcpdump/isakmp-identification-segfault.pcap")  # IKEv1 from port 501 to 500


@needs_tshark
@pytest.mark.parametrize("cap", [NAT_PORT_IKE, LOW_PORT_IKE], ids=_id)
def test_ike_from_a_translated_port_stays_ike(cap):
    """A real IKE header from a port other than 500 (RFC 7296 §2.23: a NAT rewrites the source
    port) is IKE whatever that port is, a well-known one (501) included: every frame tshark
    dissects as ISAKMP is an IKE message with its SPI, none of them malformed by the port rule."""
    ts = {n: t for n, t in tshark(cap).items() if "isakmp" in t["frame.protocols"].split(":")}
    rows = packets(cap)
    assert ts
    assert {n for n, r in rows.items() if r["kind"] == "IKE"} == set(ts)
    for n, t in ts.items():
        assert rows[n]["ike_sa"].startswith(t["isakmp.ispi"]), n
    assert all(500 in (rows[n]["sport"], rows[n]["dport"]) and rows[n]["sport"] != rows[n]["dport"] for n in ts)
