"""Session rows: the packed RowStore a file load fills must read back exactly the FrameRow objects
the plain path builds (live mode keeps FrameRow objects in a ring, built by the same code as
before the store existed). Real captures: the strongSwan samples, the synthetic ESP set (ESN wrap,
IPv6/NAT-T, AEAD, CBC) with and without keys, the Wireshark corpus and the bad-input files."""

from __future__ import annotations

import bisect
import glob
from pathlib import Path

import pytest
from conftest import DATA, ROOT, SAMPLES, corpus_captures, is_public, need, public
from public_data import data_id

from ipsecscope.model.packets import FrameRow
from ipsecscope.rowstore import RowStore
from ipsecscope.session import Session

CAPTURES = sorted(
    glob.glob(str(SAMPLES / "*" / "*.pcap*")) + [str(p) for p in corpus_captures()]
    + glob.glob(str(DATA / "bad" / "*.pcap*")) + [str(public("tcpdump/isakmp4500.pcap"))]  # (ARP frames) + glob.glob(str(DATA / "findings" / "**" / "*.pcap*"), recursive=True)
)
CAPTURES = [c for c in CAPTURES if not c.endswith(".json")]


def _keys(path: str) -> list[str]:
    stem = path.rsplit(".pcap", 1)[0]
    return sorted(glob.glob(stem + ".keys.json") + glob.glob(path.rsplit("/", 1)[0] + "/keys/*"))


def _load(path: str, keys: list[str], **kw) -> Session:
    s = Session(**kw)
    if keys:
        s.add_key_files(keys)
    try:
        s.load(path)
    except Exception as exc:  # a file that is not a capture fails the same way on both paths
        s.error = type(exc).__name__  # type: ignore[attr-defined]
    return s


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: data_id(Path(p)) if is_public(Path(p)) else str(Path(p).relative_to(ROOT)))
def test_rowstore_equals_framerow_path(path: str) -> None:
    assert CAPTURES
    need(Path(path))  # third-party ones are materialised at test time (tests/public_data.py)
    for keys in ([], _keys(path)):
        packed = _load(path, keys)
        plain = _load(path, keys, max_rows=10**9)  # live-mode ring: FrameRow objects
        assert isinstance(packed.rows, RowStore)
        assert getattr(packed, "error", None) == getattr(plain, "error", None)
        assert len(packed.rows) == len(plain.rows)
        assert list(packed.rows) == list(plain.rows)
        assert [packed.rows[i] for i in range(len(packed.rows))] == list(plain.rows)
        assert repr(packed.stats) == repr(plain.stats)
        for row in list(plain.rows)[:40]:  # frame lookups and detail re-reads agree too
            assert packed.row(row.frame) == plain.row(row.frame)
            a, b = packed.detail(row.frame), plain.detail(row.frame)
            assert (a.raw, a.inner, a.malformed) == (b.raw, b.inner, b.malformed)
        if not keys:
            break


def test_rowstore_sequence_behaviour() -> None:
    rows = [
        FrameRow(1, 1.5, "ESP", "198.18.0.1", "198.18.0.2", 0, 0, 100, 0xC0000001, 1, "ESP seq 1", "no-key", None, 3),
        FrameRow(2, 1.6, "ESP", "2001:db8::1", "2001:db8::2", 4500, 4500, 90, 7, (5 << 32) | 9,
                 f"ESP seq {(5 << 32) | 9} next IPv4", "decrypted", None, None),
        FrameRow(2, 1.6, "ESP", "198.18.0.1", "198.18.0.2", 0, 0, 100, 7, 2, "ESP seq 2 next 200", "replay"),
        FrameRow(3, 1.7, "IKE", "198.18.0.1", "198.18.0.2", 500, 500, 300, None, 0, "IKE_SA_INIT request #0 [ SA ]",
                 "", "aa_bb", None),
        FrameRow(4, 1.8, "AH", "198.18.0.1", "198.18.0.2", 0, 0, 80, 9, 4, "AH seq 4 next ICMP"),
        FrameRow(5, 1.9, "NAT-KA", "198.18.0.1", "198.18.0.2", 4500, 4500, 43, info="NAT-keepalive (RFC 3948 §2.3)"),
        FrameRow(6, 2.0, "OTHER", "", "", 0, 0, 60),
        FrameRow(7, 2.1, "ESP", "198.18.0.1", "198.18.0.2", 0, 0, 100, 7, 3, "not what it would say", "icv-bad"),
        FrameRow(8, 2.2, "WEIRD", "x", "y", 1, 2, 3, info="custom", status="gap"),
    ]
    store = RowStore()
    assert not store and len(store) == 0
    for r in rows:
        store.append(r)
    assert len(store) == len(rows) and store
    assert list(store) == rows and store[-1] == rows[-1] and store[2:5] == rows[2:5] and store[::-2] == rows[::-2]
    assert [store.frame_at(i) for i in range(len(rows))] == [r.frame for r in rows]
    assert bisect.bisect_left(store, 3, key=lambda r: r.frame) == 3
    with pytest.raises(IndexError):
        store[len(rows)]
    malformed = FrameRow(6, 2.0, "MALFORMED", "", "", 0, 0, 60, info="ip: fragment lost", status="malformed")
    store[6] = malformed
    store[3] = rows[0]
    assert store[6] == malformed and store[3] == rows[0] and store[4] == rows[4]


def test_live_mode_keeps_recent_frames_bytes_for_the_detail_pane(monkeypatch) -> None:
    """Live frames have no file to be re-read from: the detail pane's decode and hex view work
    from the bytes kept of the most recent frames (fed as LiveRunner feeds them), within a byte
    budget; older frames say they have none instead of failing."""
    import ipsecscope.session as session_mod
    from ipsecscope.capture import open_capture

    cap = SAMPLES / "healthy-gcm" / "capture.pcapng"
    with open_capture(cap) as r:
        frames = list(r)
    budget = sum(len(f.data) for f in frames[-10:])
    monkeypatch.setattr(session_mod, "LIVE_BYTES_KEPT", budget)
    s = Session(max_rows=1000)
    s.add_key_files(sorted((SAMPLES / "healthy-gcm" / "keys").iterdir()))
    for f in frames:
        s.feed(f)
    kept = [f for f in frames if s.detail(f.index) is not None and s.detail(f.index).raw]
    assert kept and kept == frames[-len(kept):] and sum(len(f.data) for f in kept) <= budget
    assert all(s.detail(f.index).raw == f.data for f in kept)
    esp = [f for f in kept if s.row(f.index).kind == "ESP"]
    assert esp and all(s.detail(f.index).inner for f in esp)  # decrypted again for the pane
    assert s.detail(frames[0].index).raw == b""  # older than the budget: none, and no error
    # a file session never keeps them (it re-reads the file)
    f2 = Session()
    f2.load(cap)
    assert not f2._live_raw and f2.detail(frames[0].index).raw == frames[0].data


def test_a_frame_that_is_not_ip_keeps_its_ethertype_not_its_text() -> None:
    """ARP/LLDP rows read back their Info ('ARP', 'ethertype 0x88b5', 'LLC') from the EtherType in
    the record's next-header slot: no side-table entry per frame. Texts it would not write again
    the same way are kept as they are."""
    infos = ["ARP", "LLDP", "ethertype 0x88b5", "ethertype 0x9100", "LLC", "PTPv2"]
    odd = ["ethertype 0xffff", "ethertype 0x0806", "ethertype 0x88B5", "DNS 10.0.0.1 → 10.0.0.2"]
    rows = [FrameRow(i + 1, float(i), "OTHER", "", "", 0, 0, 60, info=t) for i, t in enumerate(infos + odd)]
    rows.append(FrameRow(len(rows) + 1, 9.0, "OTHER", "10.0.0.1", "10.0.0.2", 0, 0, 60, info="ARP"))
    store = RowStore()
    for r in rows:
        store.append(r)
    assert list(store) == rows and [store[i] for i in range(len(rows))] == rows
    assert sorted(store._info.values()) == sorted([*odd, "ARP"])  # the link rows hold nothing beside their record
