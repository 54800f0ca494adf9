"""SA identity (RFC 4301 §4.1: SPI + destination + protocol) and linear correlation cost.

Suricata's eve-flow-esp capture has one SPI on three SAs (two IPv4 destinations and IPv6); its
test.yaml is the oracle for the flows, tshark for the packet counts. The scaling tests assert a
ratio of CPU time between two sizes, never a time.
"""

from __future__ import annotations

import dataclasses
import gc
import re
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from conftest import SAMPLES, missing, needs_tshark, public_dir
from cpu_ratio import least_cpu_ratio

from ipsecscope.decode.ike import parse_ike
from ipsecscope.model.packets import EspPacket, IkeDatagram
from ipsecscope.model.sa import SaState
from ipsecscope.session import Session
from ipsecscope.state.tracker import Tracker

# suricata-verify's eve-flow-esp: materialised at test time from the shared corpus (tests/public_data.py)
EVE = public_dir("suricata-verify") / "eve-flow-esp"
needs_eve = pytest.mark.skipif(not (EVE / "input.pcap").exists(), reason=str(missing(EVE / "input.pcap")))


def suricata_flows(test_yaml: Path) -> set[tuple[str, str, int, int]]:
    """(src, dst, spi, packets to server) of each `event_type: flow` check in Suricata's test.yaml
    (a flat list of match blocks; read with a regex since PyYAML is not a dependency)."""
    out = set()
    for block in test_yaml.read_text().split("- filter:")[1:]:
        fields = dict(re.findall(r"^\s+([\w.]+): (\S+)\s*$", block, re.M))
        if fields.get("event_type") != "flow":
            continue
        src, dst = (str(_addr(fields[k])) for k in ("src_ip", "dest_ip"))
        out.add((src, dst, int(fields["spi"]), int(fields["flow.pkts_toserver"])))
    return out


def _addr(text: str) -> str:
    import ipaddress

    return str(ipaddress.ip_address(text))


@needs_eve
def test_one_spi_three_destinations_are_three_sas():
    s = Session()
    s.load(EVE / "input.pcap")
    t = s.table
    got = {(f.src, f.dst, f.spi, f.packets) for f in t.flows.values()}
    assert got == suricata_flows(EVE / "test.yaml")
    # Each flow is its own SA: no CHILD SA holds flows to two destinations or two SPIs.
    for c in t.child_sas.values():
        flows = c.flows(t)
        assert len({(f.dst, f.spi) for f in flows}) == 1, (c.id, [f.key for f in flows])
    by_spi = Counter(c.spi_r for c in t.child_sas.values())
    assert by_spi == {0x7B: 3, 0x141: 1}
    assert {c.responder for c in t.child_sas.values() if c.spi_r == 0x7B} == {"190.0.0.2", "190.0.0.3", "::2"}
    assert all(c.state == SaState.INFERRED for c in t.child_sas.values())
    # Two packets per SA is below ESP-ONE-WAY's threshold: the old merge reported 6 on one flow.
    assert not [f for f in s.findings if f.code == "ESP-ONE-WAY"]


@needs_eve
@needs_tshark
def test_eve_flow_esp_counts_agree_with_tshark():
    out = subprocess.run(["tshark", "-n", "-r", str(EVE / "input.pcap"), "-Y", "esp", "-T", "fields",
                          "-e", "ip.dst", "-e", "ipv6.dst", "-e", "esp.spi"],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    want = Counter()
    for ln in out.splitlines():
        v4, v6, spi = ln.split("\t")
        want[(_addr(v4 or v6), int(spi, 16))] += 1
    s = Session()
    s.load(EVE / "input.pcap")
    got = Counter()
    for c in s.table.child_sas.values():
        for f in c.flows(s.table):
            got[(f.dst, f.spi)] += f.packets
    assert got == want


def _first_esp(name: str) -> tuple[Session, EspPacket]:
    from ipsecscope.capture import open_capture
    from ipsecscope.decode.demux import Decoder

    s = Session()
    s.load(SAMPLES / name / "capture.pcapng")
    dec = Decoder()
    with open_capture(SAMPLES / name / "capture.pcapng") as reader:
        for raw in reader:
            for pkt in dec.decode_all(raw):
                if isinstance(pkt, EspPacket):
                    return s, pkt
    raise AssertionError("no ESP in sample")


def test_same_spi_to_another_destination_is_not_the_negotiated_sa():
    """A real ESP packet of a negotiated CHILD SA, re-sent to another destination with the same
    SPI: a different SA (RFC 4301 §4.1), so it must not be counted on the negotiated one."""
    s, pkt = _first_esp("healthy-gcm")
    tr = s.tracker
    neg = tr.table.child_sas[tr.table.flows[(pkt.src, pkt.dst, pkt.spi, "ESP")].child_sa]
    before = sum(f.packets for f in neg.flows(tr.table))
    for dst in ("198.18.0.99", "2001:db8::2"):
        flow = tr.on_esp(dataclasses.replace(pkt, dst=dst, frame=10**6, ts=pkt.ts + 1))
        assert flow is not None and flow.child_sa != neg.id
        other = tr.table.child_sas[flow.child_sa]
        assert other.state == SaState.INFERRED and other.responder == dst
    assert sum(f.packets for f in neg.flows(tr.table)) == before
    # ... while the same SA (same destination) from the same sender still binds to it.
    flow = tr.on_esp(dataclasses.replace(pkt, frame=10**6 + 1, ts=pkt.ts + 2, seq=pkt.seq + 10**5))
    assert flow is not None and flow.child_sa == neg.id


# ------------------------------------------------------------------------------------- scaling


def _ratio(fn, small: int, big: int) -> float:
    """CPU time of ``fn(big)`` over ``fn(small)``, the sizes measured in turns (tests/cpu_ratio.py:
    measured one size after the other, a load change between them moved the ratio as much)."""
    return least_cpu_ratio(lambda: fn(small), lambda: fn(big))[0]


def _esp_flood(n: int) -> None:
    """n distinct SPIs each way between two peers, then the rules over the table (what `sas`
    and `findings` do); a real ESP packet's bytes as payload."""
    tr = Tracker()
    data = bytes(range(64))
    frame = 0
    for i in range(n):
        ts = i * 0.02  # 50 new SAs a second: pairing windows stay full
        frame += 1
        tr.on_esp(EspPacket(frame, ts, "198.18.0.1", "198.18.0.2", 0x10000 + i, 1, data))
        frame += 1
        tr.on_esp(EspPacket(frame, ts + 0.001, "198.18.0.2", "198.18.0.1", 0x90000000 + i, 1, data))
        frame += 1
        tr.on_esp(EspPacket(frame, ts + 0.002, "198.18.0.1", f"198.19.{i >> 8 & 255}.{i & 255}", 0x10000 + i, 1,
                            data))
    tr.finish()
    assert len(tr.table.child_sas) == 2 * n
    from ipsecscope.analysis.rules import evaluate

    evaluate(tr.table)
    for c in tr.table.child_sas.values():
        c.flows(tr.table)


def _init_flood_factory():
    """IKE_SA_INIT requests with distinct SPIi, cut from a real strongSwan request."""
    from conftest import ike_messages

    req = next(m for m in ike_messages(SAMPLES / "healthy-gcm" / "capture.pcapng")
               if m.header.exchange == 34 and not m.header.is_response)

    def run(n: int) -> None:
        tr = Tracker()
        raw = bytearray(req.raw)
        for i in range(n):
            raw[0:8] = (0x1000 + i).to_bytes(8, "big")
            dg = IkeDatagram(frame=i + 1, ts=i * 0.01, src=req.src, dst=req.dst, sport=500, dport=500,
                             data=bytes(raw))
            tr.on_ike(parse_ike(dg))
        tr.finish()
        assert len(tr.table.ike_sas) == n
        return tr

    return run


def test_correlation_cpu_grows_linearly_in_distinct_spis():
    small, big = 2000, 8000
    ratio = _ratio(_esp_flood, small, big)
    assert ratio < 6, f"4x the SPIs cost {ratio:.1f}x the CPU (linear is ~4, quadratic ~16)"


def test_correlation_cpu_grows_linearly_in_ike_sa_inits():
    run = _init_flood_factory()
    small, big = 1000, 4000
    ratio = _ratio(run, small, big)
    assert ratio < 6, f"4x the IKE_SA_INITs cost {ratio:.1f}x the CPU (linear is ~4, quadratic ~16)"


def test_inferred_cap_forgets_idle_sas_first():
    tr = Tracker(max_inferred=100, inferred_idle=5.0)
    data = bytes(64)
    # One busy inferred SA that keeps sending, then a flood of one-packet random SPIs.
    for i in range(1000):
        tr.on_esp(EspPacket(2 * i, i * 0.1, "198.18.0.1", "198.18.0.2", 0xAAAA, i + 1, data))
        tr.on_esp(EspPacket(2 * i + 1, i * 0.1, "198.18.0.7", "198.18.0.2", 0x20000 + i, 1, data))
        assert sum(1 for c in tr.table.child_sas.values() if c.state == SaState.INFERRED) <= 100
        assert len(tr.table.flows) <= 101
    busy = tr.table.flows[("198.18.0.1", "198.18.0.2", 0xAAAA, "ESP")]
    assert busy.packets == 1000  # never forgotten: it was never idle
    assert tr.inferred_forgotten == 1000 + 1 - 100
    ob = next(o for o in tr.table.observations if o.kind == "inferred_forgotten")
    assert ob.detail["count"] == tr.inferred_forgotten


def test_expire_forgets_idle_inferred_and_half_open_sas():
    """Live mode calls expire(now) once a second: idle INFERRED CHILD SAs and never-answered
    IKE_SA_INITs go, busy ones and negotiated SAs stay."""
    from conftest import ike_messages

    msgs = ike_messages(SAMPLES / "healthy-gcm" / "capture.pcapng")
    req = next(m for m in msgs if m.header.exchange == 34 and not m.header.is_response)
    tr = Tracker()
    for m in msgs:  # the real tunnel: negotiated SAs that expire() must leave alone
        tr.on_ike(m)
    negotiated = (len(tr.table.ike_sas), len(tr.table.child_sas))
    t0 = (tr.table.last_ts or 0.0) + 1
    raw = bytearray(req.raw)
    for i in range(30):
        raw[0:8] = (0x7000 + i).to_bytes(8, "big")
        tr.on_ike(parse_ike(IkeDatagram(frame=10**6 + i, ts=t0 + i, src="198.18.0.9", dst=req.dst, sport=500,
                                        dport=500, data=bytes(raw))))
        tr.on_esp(EspPacket(2 * 10**6 + i, t0 + i, "198.18.0.8", "198.18.0.2", 0x50000 + i, 1, bytes(64)))
    tr.on_esp(EspPacket(3 * 10**6, t0 + 100, "198.18.0.8", "198.18.0.2", 0x50000, 2, bytes(64)))
    assert len(tr.table.ike_sas) == negotiated[0] + 30
    gone = tr.expire(t0 + 100, max_age=60.0, max_inferred=1000)
    # SAs started at t0 .. t0+29 are idle for more than 60 s at t0+100, except SPI 0x50000.
    assert gone == 30 + 29
    assert (len(tr.table.ike_sas), len(tr.table.child_sas)) == (negotiated[0], negotiated[1] + 1)
    assert [k for k in tr.table.flows if k[0] == "198.18.0.8"] == [("198.18.0.8", "198.18.0.2", 0x50000, "ESP")]
    kinds = {o.kind: o.detail["count"] for o in tr.table.observations}
    assert kinds["inferred_forgotten"] == 29 and kinds["half_open_forgotten"] == 30
    # The cap alone: the oldest go first.
    assert tr.expire(t0 + 100, max_age=60.0, max_inferred=0) == 1


def test_forgotten_inferred_sas_are_freed():
    """A one-way flood (random SPIs, random sources) under the cap: the forgotten CHILD SAs and
    flows must not stay referenced by any index (live RSS must stay flat)."""
    from ipsecscope.model.sa import ChildSa, EspFlow

    def alive(cls) -> int:
        gc.collect()
        return sum(1 for o in gc.get_objects() if type(o) is cls)

    base_c, base_f = alive(ChildSa), alive(EspFlow)
    tr = Tracker(max_inferred=50)
    for i in range(3000):
        tr.on_esp(EspPacket(i, i * 0.5, f"198.19.{i >> 8 & 255}.{i & 255}", "198.18.0.2", 0x30000 + i, 1, bytes(32)))
        if i % 100 == 99:
            tr.expire(i * 0.5, max_age=20.0, max_inferred=50)
    assert alive(ChildSa) - base_c <= 50 and alive(EspFlow) - base_f <= 50
    assert len(tr.table.child_sas) <= 50 and len(tr.table.flows) <= 50


def _esp_ah_same_spi(path: Path) -> None:
    """Two hosts talking ESP and AH at once with the SAME SPIs (an SPI is chosen per protocol,
    RFC 4301 §4.1): 0x1000 inbound at B, 0x2000 inbound at A, for both protocols."""
    from scapy.layers.inet import ICMP, IP
    from scapy.layers.ipsec import AH, ESP
    from scapy.layers.l2 import Ether
    from scapy.utils import wrpcap

    a, b = "198.18.5.1", "198.18.5.2"
    pkts = []
    t = 1_700_000_000.0
    for i in range(1, 5):
        for src, dst, spi in ((a, b, 0x1000), (b, a, 0x2000)):
            e = Ether() / IP(src=src, dst=dst) / ESP(spi=spi, seq=i, data=bytes(range(32)))
            e.time = t
            h = Ether() / IP(src=src, dst=dst) / AH(spi=spi, seq=i, icv=bytes(12), nh=1, payloadlen=4) / ICMP()
            h.time = t + 0.01
            pkts += [e, h]
            t += 0.1
    wrpcap(str(path), pkts)


@needs_tshark
def test_esp_and_ah_with_one_spi_and_destination_are_two_sas(tmp_path):
    """RFC 4301 §4.1: SPI + destination + protocol name an SA. ESP and AH on the same SPI towards
    the same host are two SAs: two flows each with their own counters and sequence numbers, and
    two CHILD SAs (one per protocol) rather than one flow with doubled packets and replays."""
    cap = tmp_path / "esp-ah.pcap"
    _esp_ah_same_spi(cap)
    out = subprocess.run(["tshark", "-n", "-r", str(cap), "-T", "fields", "-e", "ip.dst",
                          "-e", "esp.spi", "-e", "ah.spi"],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    want = Counter()
    for ln in out.splitlines():
        dst, esp, ah = ln.split("\t")
        want[(dst, int(esp or ah, 16), "ESP" if esp else "AH")] += 1
    assert len(want) == 4 and set(want.values()) == {4}
    s = Session()
    s.load(cap)
    assert (s.stats.esp, s.stats.ah, s.stats.malformed) == (8, 8, {})
    t = s.table
    assert Counter({(f.dst, f.spi, f.protocol): f.packets for f in t.flows.values()}) == want
    assert set(t.flows) == {f.key for f in t.flows.values()} and all(len(k) == 4 for k in t.flows)
    for f in t.flows.values():  # in order, once each: no replay from the other protocol's numbers
        assert (f.seq_min, f.seq_max, f.duplicates, f.lost) == (1, 4, 0, 0), f
    by_proto = {c.protocol: c for c in t.child_sas.values()}
    assert len(t.child_sas) == 2 and set(by_proto) == {"ESP", "AH"}
    for proto, c in by_proto.items():
        assert {f.protocol for f in c.flows(t)} == {proto} and len(c.flows(t)) == 2
        assert {c.spi_i, c.spi_r} == {0x1000, 0x2000}
    assert not [x for x in s.findings if x.code in ("ESP-REPLAY", "ESP-ONE-WAY")]
    # JSON keys stay distinct: AH's carries its protocol.
    from ipsecscope.export.documents import flow_key

    assert len({flow_key(f) for f in t.flows.values()}) == 4


def _two_way_burst(n: int) -> None:
    """n one-packet SPIs one way, then n the other way, all inside the pairing window: every
    reverse flow has a crowd of candidates (a random-SPI flood both ways)."""
    tr = Tracker()
    data = bytes(range(64))
    for i in range(n):
        tr.on_esp(EspPacket(i + 1, i * 1e-4, "198.18.0.1", "198.18.0.2", 0x10000 + i, 1, data))
    for i in range(n):
        tr.on_esp(EspPacket(n + i + 1, 1.0 + i * 1e-4, "198.18.0.2", "198.18.0.1", 0x90000000 + i, 1, data))
    assert len(tr.table.child_sas) == 2 * n  # all unpaired: no reverse flow is the only one that fits


def test_inference_pairing_cpu_stays_linear_with_many_candidates():
    small, big = 2000, 8000
    ratio = _ratio(_two_way_burst, small, big)
    assert ratio < 6, f"4x the SPIs cost {ratio:.1f}x the CPU (linear is ~4, quadratic ~16)"


def test_unanswered_request_rule_cpu_grows_linearly_in_ike_sas():
    """IKE_SA_INIT requests each sent once and never answered, then the rules (IKE-NO-RESPONSE
    looks for the next IKE SA between the two peers): that look-up scanned every IKE SA for each
    request, quadratic (an ISAKMP reflection capture's 3,979 one-copy requests took 5.8 s)."""
    from ipsecscope.analysis.rules import evaluate

    flood = _init_flood_factory()

    def run(n: int) -> None:
        tr = flood(n)
        found = [f for f in evaluate(tr.table) if f.code == "IKE-NO-RESPONSE"]
        assert len(found) >= n // 2

    small, big = 1000, 4000
    ratio = _ratio(run, small, big)
    assert ratio < 6, f"4x the IKE SAs cost {ratio:.1f}x the CPU (linear is ~4, quadratic ~16)"
