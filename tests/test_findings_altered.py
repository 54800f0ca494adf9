"""Findings that need a broken network we cannot order from strongSwan on demand: real sample
frames replayed with a changed order or timing, or one real IKE payload edited. Each test says
which real-world fault the edit reproduces."""

from __future__ import annotations

import dataclasses

from conftest import CORPUS, SAMPLES

from ipsecscope.capture import open_capture
from ipsecscope.model.ike import IkeMessage, TrafficSelector, TsPayload
from ipsecscope.model.sa import SaState, Severity
from ipsecscope.session import Session

HEALTHY = SAMPLES / "healthy-gcm"


def frames(path=HEALTHY / "capture.pcapng"):
    with open_capture(path) as r:
        return {raw.index: raw for raw in r}


def keyed_session() -> Session:
    s = Session()
    s.add_key_files([HEALTHY / "keys" / "ikev2_decryption_table", HEALTHY / "keys" / "esp_sa"])
    return s


def at(raw, ts):
    return dataclasses.replace(raw, ts=ts, ts_ns=int(ts * 1e9))


def test_udp_4500_blocked():
    """IKE_SA_INIT answered on 500, IKE_AUTH on 4500 retransmitted and never answered."""
    f = frames()
    s = keyed_session()
    for n in (1, 2, 3):
        s.feed(f[n])
    t3 = f[3].ts
    for i, delay in enumerate((1.0, 3.0, 7.0)):
        s.feed(dataclasses.replace(at(f[3], t3 + delay), index=100 + i))
    (fd,) = [x for x in s.findings if x.code == "IKE-UDP4500-BLOCKED"]
    assert fd.severity == Severity.ERROR and fd.frames == (3, 100, 101, 102)
    assert "198.18.0.2" in fd.title and "4 times" in fd.explanation


def test_unanswered_ike_sa_init():
    f = frames()
    s = Session()
    for i, delay in enumerate((0.0, 1.0, 2.0)):
        s.feed(dataclasses.replace(at(f[1], f[1].ts + delay), index=1 + i))
    (fd,) = [x for x in s.findings if x.code == "IKE-NO-RESPONSE"]
    assert fd.severity == Severity.ERROR and "IKE_SA_INIT" in fd.title
    assert next(iter(s.table.ike_sas.values())).state == SaState.INITIATING


def test_esp_after_delete():
    """The old CHILD SA's packets keep coming 5 s after its Delete (a peer that ignored it)."""
    f = frames()
    s = keyed_session()
    t14 = f[14].ts
    for n in range(1, 15):
        if not 5 <= n <= 10:
            s.feed(f[n])
    for n in range(5, 11):
        s.feed(at(f[n], t14 + 5 + n * 0.1))
    fs = [x for x in s.findings if x.code == "ESP-AFTER-DELETE"]
    assert len(fs) == 2 and all(x.severity == Severity.WARNING for x in fs)
    assert {x.frames for x in fs} == {(5, 7, 9), (6, 8, 10)}
    assert all("deleted by 198.18.0.1" in x.explanation for x in fs)


def test_rekey_overlap():
    """After the rekey (frame 12) the old SPIs carry traffic for 20 more seconds."""
    f = frames()
    s = keyed_session()
    t12 = f[12].ts
    for n in range(1, 13):
        if not 5 <= n <= 10:
            s.feed(f[n])
    for n in range(5, 11):
        s.feed(at(f[n], t12 + 1 + (n - 5) * 4))
    for n in range(13, 35):
        s.feed(at(f[n], f[n].ts + 30))
    fs = [x for x in s.findings if x.code == "ESP-REKEY-OVERLAP"]
    assert len(fs) == 2 and all(x.severity == Severity.WARNING for x in fs)
    assert any("for 20.0 s" in x.title or "for 21.0 s" in x.title for x in fs)


def test_inner_traffic_outside_negotiated_selectors():
    """The responder narrows TSi to one host; the initiator still sends from 10.1.0.1."""
    s = keyed_session()
    on_ike = s.tracker.on_ike

    def narrowed(msg: IkeMessage) -> None:
        if msg.header.exchange == 35 and msg.header.is_response and msg.inner:
            one = TrafficSelector(7, 0, 0, 65535, "10.1.0.200", "10.1.0.200")
            inner = tuple(dataclasses.replace(p, selectors=(one,)) if isinstance(p, TsPayload) and p.type == 44
                          else p for p in msg.inner)
            msg = dataclasses.replace(msg, inner=inner)
        on_ike(msg)

    s.tracker.on_ike = narrowed
    s.load(HEALTHY / "capture.pcapng")
    fs = [x for x in s.findings if x.code == "ESP-OUTSIDE-TS"]
    assert fs and all("10.1.0.200" in x.explanation for x in fs)
    assert any("10.1.0.1 -> 10.2.0.1" in x.explanation for x in fs)
    assert {x.code for x in s.findings} >= {"IKE-TS-NARROWED"}


def test_nat_hashes_match_without_nat():
    """RFC 7296 §2.23 hashes computed right: the corpus peers are not NATed, the samples force
    UDP encapsulation on both sides (strongSwan encap=yes fakes both source hashes)."""
    s = Session()
    s.load(CORPUS / "ikev2-decrypt-aes256gcm16.pcap")
    (sa,) = s.table.ike_sas.values()
    assert (sa.nat_initiator, sa.nat_responder, sa.nat_detected) == (False, False, False)
    s = Session()
    s.load(HEALTHY / "capture.pcapng")
    first = next(iter(s.table.ike_sas.values()))
    assert first.nat_initiator and first.nat_responder and first.nat_t


def test_ike_fragments_act_once_on_the_complete_message():
    """RFC 7383 SKF: IKE_AUTH in 3 + 2 fragments (real strongSwan capture with fragment_size)."""
    d = SAMPLES.parent / "tests" / "data" / "ikev2-skf" / "gcm"
    s = Session()
    s.add_key_files([d / "charon-left.log"])
    s.load(d / "capture.pcapng")
    (sa,) = s.table.ike_sas.values()
    auth = next(x for x in sa.exchanges if x.exchange == 35)
    assert auth.fragments == 3 and auth.retransmits == 0 and len(auth.response_frames) == 2
    (c,) = s.table.child_sas.values()
    assert c.failure is None and c.proposal == "aes256gcm16" and c.deleted_by == "198.18.0.1"
    assert all(fl.child_sa == c.id and fl.decrypted == fl.packets for fl in s.table.flows.values())


def test_esp_on_spi_no_exchange_created():
    """After healthy-gcm's (decrypted) IKE, ESP between the same peers on SPIs from another run
    (cbc-sha2-pfs, whose IKE is left out): the receiver has no such SA."""
    s = keyed_session()
    f = frames()
    for n in sorted(f):
        s.feed(f[n])
    end = f[max(f)].ts
    other = frames(SAMPLES / "cbc-sha2-pfs" / "capture.pcapng")
    t0 = min(r.ts for r in other.values())
    fed = 0
    for n in sorted(other):
        if s.decoder.decode(other[n]).__class__.__name__ == "EspPacket":
            r = other[n]
            ts = end + 1 + (r.ts - t0)
            s.feed(dataclasses.replace(r, index=1000 + n, ts=ts, ts_ns=int(ts * 1e9)))
            fed += 1
    assert fed == 20
    fs = [x for x in s.findings if x.code == "ESP-UNKNOWN-SPI"]
    assert len(fs) == 6 and all(x.severity == Severity.WARNING for x in fs)
    assert all(c.state == SaState.INFERRED for c in s.table.child_sas.values() if c.id > 2)
