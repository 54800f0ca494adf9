"""decode/inner_bulk.py (a run of decrypted payloads summarised with numpy) gives exactly the
records, address table, side tables and Info text of decode/inner.py packet by packet.

The hot loop (session_fast) hands it every run it decrypted; tests/test_session_fast.py compares
the two paths on every capture. Here the edges no capture of the suite has are built on purpose:
inner IP fragments (completing across runs), IPv4 options, IPv6 extension headers and fragment
headers, TFC padding, headers cut short (marked truncated, as packet by packet), ICMP errors
quoting IPsec, DNS, transport mode, tiny payloads; then thousands of valid packets with random
bytes changed.
"""

from __future__ import annotations

import random
import struct
import sys

import numpy as np
import pytest
from conftest import SAMPLES

from ipsecscope.crypto.esp import trim_tfc
from ipsecscope.decode import inner as inner_mod
from ipsecscope.decode.inner import InnerStore
from ipsecscope.decode.inner_bulk import add_run

sys.path.insert(0, str(SAMPLES / "synthetic"))
from espgen import icmp_echo, icmpv6_echo, ipv4, ipv6, tcp, udp  # noqa: E402


def _v4frag(src: str, dst: str, proto: int, body: bytes, ident: int, off: int, more: bool) -> bytes:
    p = bytearray(ipv4(src, dst, proto, body, ident=ident))
    p[6:8] = ((0x2000 if more else 0) | off // 8).to_bytes(2, "big")
    return bytes(p)


def _v4options(src: str, dst: str, proto: int, body: bytes) -> bytes:
    """An IPv4 header with 4 octets of options (NOPs and an end of list, RFC 791 §3.1)."""
    h = bytearray(ipv4(src, dst, proto, body)[:20])
    h[0] = 0x46
    h[2:4] = (24 + len(body)).to_bytes(2, "big")
    return bytes(h) + b"\x01\x01\x01\x00" + body


def _v6frag(src: str, dst: str, nh: int, body: bytes, ident: int, off: int, more: bool) -> bytes:
    return ipv6(src, dst, 44, struct.pack("!BBHI", nh, 0, off | int(more), ident) + body)


def _dns(qid: int, name: str, response: bool = False) -> bytes:
    q = b"".join(bytes([len(x)]) + x.encode() for x in name.split(".")) + b"\0" + struct.pack("!HH", 28, 1)
    return struct.pack("!HHHHHH", qid, 0x8180 if response else 0x0100, 1, 0, 0, 0) + q


def _cases() -> list[tuple[bytes, int]]:
    """(payload as decrypted, before TFC padding is cut; next header)."""
    a, b = "10.1.0.1", "10.2.0.1"
    x, y = "2001:db8::1", "2001:db8:0:1::2"
    big = udp(a, b, 4000, 5001, bytes(range(256)) * 6)
    v6big = udp(x, y, 4000, 5001, bytes(200))
    quoted_udp = ipv4("198.18.0.1", "198.18.0.2", 17, udp("198.18.0.1", "198.18.0.2", 4500, 4500,
                                                           struct.pack("!II", 0xC0FFEE01, 7) + bytes(40)))
    quoted_esp = ipv4("198.18.0.1", "198.18.0.2", 50, struct.pack("!II", 0xC0FFEE02, 9) + bytes(40))
    hbh = struct.pack("!BB", 17, 0) + bytes(6)  # hop-by-hop options, 8 octets, then UDP
    dst_opts = struct.pack("!BB", 6, 0) + bytes(6)
    out = [
        (ipv4(a, b, 17, udp(a, b, 4000, 5001, b"x" * 36)), 4),
        (ipv4(a, b, 6, tcp(a, b, 443, 5555, 1, b"y" * 10, flags=0x12)), 4),
        (ipv4(a, b, 6, tcp(a, b, 443, 5555, 1, b"", flags=0xC2)), 4),
        (ipv4(a, b, 1, icmp_echo(7, 1, b"p" * 20)), 4),
        (ipv4(b, a, 1, icmp_echo(7, 1, b"p" * 20, reply=True)), 4),
        (ipv4(a, b, 1, icmp_echo(7, 1, b"")[:6]), 4),  # ICMP of 6 octets: no identifier/sequence
        (ipv4(a, b, 1, b"\x03\x03\0\0\0\0\0\0" + quoted_udp[:48]), 4),  # port unreachable quoting ESP-in-UDP
        (ipv4(a, b, 1, b"\x03\x04\0\0\0\0\x05\x00" + quoted_esp[:28]), 4),  # frag needed quoting raw ESP
        (ipv4(a, b, 17, udp(a, b, 5353, 53, _dns(0x1234, "example.org"))), 4),
        (ipv4(b, a, 17, udp(b, a, 53, 5353, _dns(0x1234, "example.org", True))), 4),
        (ipv4(a, b, 47, b"\0\0\x08\0" + bytes(20)), 4),  # GRE: IP layer only
        (ipv4(a, b, 17, udp(a, b, 1, 2, b"") + b"\0" * 30), 4),  # TFC padding after the packet
        (ipv4(a, b, 17, udp(a, b, 1, 2, b"z" * 20))[:30], 4),  # cut short: truncated
        (ipv4(a, b, 6, b"\0" * 10), 4),  # TCP header of 10 octets
        (ipv4(a, b, 17, b"\0" * 5), 4),
        (_v4options(a, b, 17, udp(a, b, 9, 9, b"o")), 4),  # IPv4 options (IHL 6)
        (b"\x44" + bytes(30), 4),  # IHL 4
        (b"\x60" + bytes(30), 4),  # not IPv4
        (b"", 4),
        (b"\x45", 4),
        (_v4frag(a, b, 17, big[:800], 77, 0, True), 4),
        (ipv4(a, b, 1, icmp_echo(8, 2, b"q")), 4),
        (_v4frag(a, b, 17, big[800:], 77, 800, False), 4),  # completes datagram 77
        (_v4frag(a, b, 17, big[800:], 78, 800, False), 4),  # datagram 78, last part first
        (ipv6(x, y, 17, udp(x, y, 4000, 5001, b"v" * 30)), 41),
        (ipv6(x, y, 6, tcp(x, y, 80, 50000, 9, b"w", flags=0x11)), 41),
        (ipv6(x, y, 58, icmpv6_echo(x, y, 3, 4, b"e" * 8)), 41),
        (ipv6(y, x, 58, b"\x01\x04\0\0\0\0\0\0" + ipv6(x, y, 17, udp(x, y, 500, 500, bytes(36)))[:60]), 41),
        (ipv6(x, y, 0, hbh + udp(x, y, 7, 8, b"h")), 41),  # hop-by-hop then UDP
        (ipv6(x, y, 60, dst_opts + tcp(x, y, 7, 8, 1, b"d")), 41),  # destination options then TCP
        (ipv6(x, y, 43, struct.pack("!BBBB", 58, 0, 0, 0) + bytes(4) + icmpv6_echo(x, y, 1, 1, b"")), 41),
        (ipv6(x, y, 17, udp(x, y, 1, 2, b"t")) + bytes(24), 41),  # TFC padding
        (ipv6(x, y, 17, udp(x, y, 1, 2, b"t" * 40))[:50], 41),  # cut short
        (ipv6(x, y, 17, b"")[:40] + bytes(8), 41),  # payload length 0 (a jumbogram's), bytes after
        (bytes(20), 41),
        (_v6frag(x, y, 17, v6big[:104], 5, 0, True), 41),
        (_v6frag(x, y, 17, v6big[104:], 5, 104, False), 41),  # completes
        (udp(a, b, 4000, 4001, b"transport"), 17),  # transport mode
        (tcp(a, b, 1, 2, 3, b"transport"), 6),
        (icmp_echo(1, 1, b""), 1),
        (b"\x03\x01\0\0\0\0\0\0" + quoted_esp[:28], 1),  # transport-mode ICMP error
        (b"\x80\0", 58),
        (b"", 59),
        (b"\xff" * 3, 17),
        (b"anything", 132),
    ]
    # transport headers of every length around the ones each protocol needs (UDP 8, TCP 14 for
    # the flags, ICMP 4 / 8 / more for a quote, DNS past the UDP header)
    for proto, head in ((6, b"\x01\x02\x03\x04"), (17, b"\x00\x35\x10\x00"), (17, b"\x10\x00\x20\x00"),
                        (1, b"\x03\x01"), (1, b"\x08\x00"), (58, b"\x01\x00"), (58, b"\x80\x00")):
        for room in range(0, 17):
            body = (head + bytes(range(40, 60)))[:room]
            out += [(ipv4(a, b, proto, body), 4), (ipv6(x, y, proto, body), 41), (body, proto)]
    return out


def _per_packet(items: list[tuple[int, bytes, int]]) -> InnerStore:
    st = InnerStore()
    for f, data, nh in items:
        st.add(f, trim_tfc(data, nh), nh)
    return st


def _bulk(items: list[tuple[int, bytes, int]], cuts: list[int]) -> InnerStore:
    st = InnerStore()
    for lo, hi in zip([0, *cuts], [*cuts, len(items)], strict=True):
        part = items[lo:hi]
        if not part:
            continue
        lens = np.array([len(d) for _f, d, _nh in part], np.int64)
        buf = np.frombuffer(b"".join(d for _f, d, _nh in part) or b"\0", np.uint8)
        add_run(st, np.array([f for f, _d, _nh in part], np.int64), buf, np.cumsum(lens) - lens, lens,
                np.array([nh for _f, _d, nh in part], np.int16))
    return st


def _same(a: InnerStore, b: InnerStore) -> None:
    assert len(a) == len(b)
    last = a.frames[-1] if len(a) else 0
    assert a.window(0, last) == b.window(0, last)
    assert a.addrs == b.addrs
    assert a.dns_names == b.dns_names
    assert a.quoted == b.quoted
    for f in a.frames:
        assert a.record(f) == b.record(f)
        assert a.info(f) == b.info(f)


@pytest.mark.parametrize("cuts", [[], [1, 5, 21, 22, 23, 36], list(range(1, 500))], ids=["one-run", "runs", "singles"])
def test_edges_bulk_equals_per_packet(cuts):
    items = [(3 * i + 10, d, nh) for i, (d, nh) in enumerate(_cases())]
    ref = _per_packet(items)
    _same(ref, _bulk(items, cuts))
    flags = {f: ref.record(f)[4] for f in ref.frames}
    info = {f: ref.info(f) for f in ref.frames}
    # the edges are what they claim to be
    assert sum(1 for v in flags.values() if v & inner_mod.TRUNCATED) >= 4
    assert sum(1 for v in flags.values() if v & inner_mod.FRAGMENT) >= 2  # fragments still waiting
    assert any("Len=1536" in t for t in info.values())  # datagram 77 reassembled by the frame completing it
    assert any(t.startswith("UDP 2001:db8::1 → 2001:db8:0:1::2 7 → 8") for t in info.values())  # after hop-by-hop
    assert any("Standard query response 0x1234 AAAA example.org" in t for t in info.values())
    assert any(q[0] == "esp" and q[1] == 0xC0FFEE02 for q in ref.quoted.values())
    assert any(t.startswith("UDP 10.1.0.1 → 10.2.0.1 1 → 2 Len=0") for t in info.values())  # TFC padding cut
    assert "UDP 10.1.0.1 → 10.2.0.1 9 → 9 Len=1" in info.values()  # behind IPv4 options


def test_frames_already_recorded_keep_their_first_record():
    items = [(i + 1, d, nh) for i, (d, nh) in enumerate(_cases()[:6])]
    st = _bulk(items, [])
    again = [(f, ipv4("10.9.9.9", "10.9.9.8", 17, udp("10.9.9.9", "10.9.9.8", 1, 1, b"")), 4) for f, _d, _nh in items]
    lens = np.array([len(d) for _f, d, _nh in again], np.int64)
    add_run(st, np.array([f for f, _d, _nh in again], np.int64),
            np.frombuffer(b"".join(d for _f, d, _nh in again), np.uint8), np.cumsum(lens) - lens, lens,
            np.full(len(again), 4, np.int16))
    _same(_per_packet(items), st)


def test_mutated_packets_bulk_equals_per_packet():
    """Valid packets of every kind with 1-3 random bytes changed (lengths, versions, protocols,
    ports, types...), in runs of random size: the same records either way."""
    rnd = random.Random(1505)
    base = _cases()
    items = []
    for f in range(1, 6001):
        data, nh = base[rnd.randrange(len(base))]
        data = bytearray(data)
        for _ in range(rnd.randint(1, 3)):
            if data:
                data[rnd.randrange(min(len(data), 64))] = rnd.choice((0, 1, 4, 6, 17, 41, 44, 53, 58, 0x45, 0x60, 0xFF,
                                                                      rnd.randrange(256)))
        if rnd.random() < 0.1:
            data = data[:rnd.randrange(len(data) + 1)]
        items.append((f, bytes(data), nh if rnd.random() < 0.9 else rnd.choice((4, 41, 6, 17, 1, 58))))
    cuts = sorted(rnd.sample(range(1, len(items)), 300))
    _same(_per_packet(items), _bulk(items, cuts))


def test_store_keeps_rare_fields_aside():
    """Records are columns of 32 bytes; the DNS and ICMP-quote fields only for records that have
    them."""
    items = [(i + 1, d, nh) for i, (d, nh) in enumerate(_cases())]
    st = _bulk(items, [])
    assert sum(c.itemsize for c in st._core) + st.frames.itemsize == 32
    rare = {f for f in st.frames if any(st.record(f)[14:])}
    assert set(st._rare_frames) == rare and 0 < len(rare) < len(st) // 2
    before = {f: st.record(f) for f in st.frames}
    cut = items[20][0]
    st.prune(cut)
    assert all(f >= cut for f in st._rare_frames) and len(st._rare[0]) == len(st._rare_frames)
    assert {f: st.record(f) for f in st.frames} == {f: r for f, r in before.items() if f >= cut}


@pytest.mark.parametrize("bulk_min", [1, 10**9], ids=["bulk", "per-packet"])
def test_session_fast_equals_general_on_every_edge(tmp_path, monkeypatch, bulk_min):
    """The edges as the decrypted inner packets of real ESP (an AES-GCM SA, taken inline by the
    hot loop, and an AES-CBC+HMAC one, through the decryptor) in one capture: the hot loop's rows,
    Info texts and inner records are the general path's, whether runs are accounted in bulk or
    packet by packet; filters on inner fields select the same frames."""
    import json

    from espgen import Sa, esp_encrypt, ether
    from test_session_fast import _load

    from ipsecscope import session_esp, session_fast
    from ipsecscope.filtering import matches, source_of
    from ipsecscope.model.filter import compile_filter
    from ipsecscope.session import Session

    rnd = random.Random(77)
    gcm = Sa(0xA1000001, "198.18.1.1", "198.18.2.2", "aes-gcm16", rnd.randbytes(36))
    cbc = Sa(0xB1000001, "198.18.3.3", "198.18.4.4", "aes-cbc", rnd.randbytes(16), "sha256", rnd.randbytes(32))
    frames = []
    for k, (data, nh) in enumerate(_cases() * 2):
        if nh == 4 and len(data) >= 20 and data[0] >> 4 == 4 and 20 <= (data[2] << 8 | data[3]) <= len(data):
            pass  # an IPv4 packet the payload check accepts
        elif nh == 41 and len(data) >= 40 and data[0] >> 4 == 6 and (data[4] << 8 | data[5]) + 40 <= len(data):
            pass
        elif nh in (4, 41) or not data:
            continue  # the ESP payload check calls these malformed: no inner record either way
        sa = cbc if k % 5 == 0 else gcm
        e = esp_encrypt(sa, k + 1, data, nh, struct.pack("!Q", k) * 2)
        frames.append(ether(ipv4(sa.src, sa.dst, 50, e)))
    out = [struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 262144, 1)]
    for i, f in enumerate(frames):
        out.append(struct.pack("<IIII", 1_700_000_000 + i, 0, len(f), len(f)) + f)
    cap = tmp_path / "edges.pcap"
    cap.write_bytes(b"".join(out))
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"schema": "ipsecscope.keys/1", "esp": [gcm.json_entry(), cbc.json_entry()]}))
    monkeypatch.setattr(session_esp, "BULK_MIN", bulk_min)
    fast = _load(str(cap), [str(keys)], True, monkeypatch)
    assert fast[0] != "error" and fast == _load(str(cap), [str(keys)], False, monkeypatch)
    rows, (records, addrs, dns, quoted, _nested) = fast[2]
    decrypted = sum(r[11] == "decrypted" for r in rows)  # (short transport headers are malformed ESP)
    assert len(rows) == len(frames) and decrypted > 0.8 * len(frames)
    assert len(records) // inner_mod.REC_SIZE == decrypted and dns and quoted
    monkeypatch.setattr(session_esp, "BULK_MIN", bulk_min)
    s = Session()
    s.add_key_files([keys])
    s.load(cap)
    for text in ("ipv6 && udp.port == 8", "icmp.type == 3", "dns.qry.name == \"example.org\"", "tcp.flags.syn == 1",
                 "icmp.seq == 1", "udp.dstport == 5001 && ip.proto == 17", "icmpv6.type == 128", "dns.flags.response == 1"):
        got = matches(compile_filter(text), source_of(s))
        monkeypatch.setattr(session_fast, "eligible", lambda *a: None)
        g = Session()
        g.add_key_files([keys])
        g.load(cap)
        monkeypatch.undo()
        monkeypatch.setattr(session_esp, "BULK_MIN", bulk_min)
        assert got and got == matches(compile_filter(text), source_of(g)), text
