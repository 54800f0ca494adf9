"""The decrypt loop's bulk step (export/bulk.py, numpy over a read window) against the per-record
loop it stands in for: same output bytes, same counters, whatever the capture holds between the
AES-GCM and CBC + HMAC runs (ICV failures, bad padding, payloads that hold no packet, nested ESP,
transport mode, dummy packets, TFC padding, ESP in UDP 4500, IKE on 4500, keepalives, unknown
SPIs, IPv6, fragments, a record cut off at the end) and whatever the read window cuts, for pcap
and pcapng (ns and µs interfaces), sequential and split over processes.

Ground truth: the general per-packet path (api.iter_decrypted) and the generator's own packets."""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import struct
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ipsecscope.api import iter_decrypted, load_keystore
from ipsecscope.capture import open_capture
from ipsecscope.export import bulk, engine, hotloop
from tests.conftest import SAMPLES
from tests.test_decrypt_mixed import as_pcapng  # the same frames as pcapng, one tsresol

SYN = SAMPLES / "synthetic"
sys.path.insert(0, str(SYN))
from espgen import PcapWriter, Sa, esp_encrypt, ether, ipv4, ipv6, udp  # noqa: E402

T0 = 1_764_000_000 * 10**9


def _esp_of(sa: Sa, seq: int, plain: bytes, iv: bytes) -> bytes:
    """ESP with an explicit plaintext (padding and trailer as given: espgen always pads right)."""
    hdr = struct.pack("!II", sa.spi, seq)
    if sa.encr == "aes-gcm16":
        key, salt = sa.enc_key[:-4], sa.enc_key[-4:]
        return hdr + iv[:8] + AESGCM(key).encrypt(salt + iv[:8], plain, hdr)
    enc = Cipher(algorithms.AES(sa.enc_key), modes.CBC(iv[:16])).encryptor()
    esp = hdr + iv[:16] + enc.update(plain) + enc.finalize()
    return esp + hmac.new(sa.auth_key, esp, hashlib.sha256).digest()[:16]


def _capture(path: Path) -> tuple[Path, int, int]:
    """1500 ESP packets over 5 SAs (AES-GCM and AES-CBC + HMAC-SHA-256, raw and in UDP 4500), in
    runs of 3 per SA, with damage and oddities sprinkled in; returns (key file, packets that
    decrypt, packets that fail their ICV)."""
    rng = random.Random(15)
    sas = [Sa(0x6C000001, "198.18.1.1", "198.19.1.1", "aes-gcm16", rng.randbytes(36)),
           Sa(0x6C000002, "198.19.1.1", "198.18.1.1", "aes-gcm16", rng.randbytes(20)),
           Sa(0x6C000003, "198.18.2.1", "198.19.2.1", "aes-gcm16", rng.randbytes(36)),
           Sa(0x6C000004, "198.18.3.1", "198.19.3.1", "aes-cbc", rng.randbytes(32), "sha256", rng.randbytes(32)),
           Sa(0x6C000005, "198.18.4.1", "198.19.4.1", "aes-cbc", rng.randbytes(16), "sha256", rng.randbytes(32))]
    udp_sa = (2, 4)  # ESP in UDP 4500
    keys = path.with_suffix(".keys.json")
    keys.write_text(json.dumps({"schema": "ipsecscope.keys/1", "esp": [s.json_entry() for s in sas]}))
    seqs = [0] * len(sas)
    good = bad = 0
    with PcapWriter(path) as w:
        for i in range(1500):
            k = (i // 3) % len(sas)
            sa = sas[k]
            seqs[k] += 1
            size = (40, 300, 1400, 7)[i % 4]
            inner = ipv4(f"10.{k}.0.1", f"10.{k}.1.1", 17, udp(f"10.{k}.0.1", f"10.{k}.1.1", 5000, 6000, bytes(size)),
                         ident=i)
            nh, tfc = 4, 0
            iv = rng.randbytes(16)
            if i % 211 == 17:  # transport mode: next header 17, the general path rebuilds the IP header
                inner, nh = udp(sa.src, sa.dst, 5000, 6000, bytes(20)), 17
            elif i % 173 == 9:  # TFC padding after the inner packet (RFC 4303 §2.7)
                tfc = 24
            elif i % 199 == 33:  # nested ESP: an IPv4 packet of protocol 50 inside
                inner = ipv4("10.9.0.1", "10.9.0.2", 50, struct.pack("!II", 0x77, 1) + bytes(40))
            elif i % 251 == 41:  # an IPv6 packet tunnelled
                inner, nh = ipv6("fd00::1", "fd00::2", 17, udp("fd00::1", "fd00::2", 1, 2, bytes(30))), 41
            elif i % 157 == 19:  # a dummy packet (RFC 4303 §2.6): nothing written
                inner, nh = bytes(30), 59
            if i % 163 == 23:  # a pad length the payload cannot hold (RFC 4303 §2.4): malformed
                body = inner + bytes((-(len(inner) + 2)) % 16)
                esp = bytearray(_esp_of(sa, seqs[k], body + bytes((250, 4)), iv))
            elif i % 179 == 13 and sa.encr == "aes-gcm16":
                # a plaintext of 1 mod 16 bytes (not 4-byte aligned, RFC 4303 §2.4, yet it decrypts):
                # its pad length and next header lie in two keystream blocks
                pad = (-(len(inner) + 2) + 1) % 16
                esp = bytearray(_esp_of(sa, seqs[k], inner + bytes(range(1, pad + 1)) + bytes((pad, nh)), iv))
            elif i % 167 == 29:  # an inner IPv4 length past the payload: malformed on the general path
                longer = bytearray(inner)
                longer[2:4] = struct.pack("!H", len(inner) + 40)
                esp = bytearray(esp_encrypt(sa, seqs[k], bytes(longer), 4, iv))
            else:
                esp = bytearray(esp_encrypt(sa, seqs[k], inner, nh, iv, tfc=tfc))
            ok = True
            if i % 89 == 7:
                esp[-1] ^= 1  # ICV
                ok = False
            elif i % 149 == 11:
                esp[12] ^= 1  # IV (AES-GCM: the nonce; CBC: covered by the HMAC)
                ok = False
            if k in udp_sa:
                frame = ether(ipv4(sa.src, sa.dst, 17, udp(sa.src, sa.dst, 4500, 4500, bytes(esp), checksum=False)))
            else:
                frame = ether(ipv4(sa.src, sa.dst, 50, bytes(esp), ident=i))
            w.write(T0 + i * 1_234_567, frame)
            good += ok
            bad += not ok
            if i % 101 == 50:  # an unknown SPI, IKE on 4500, a NAT keepalive, a fragment
                w.write(T0 + i * 1_234_567 + 1, ether(ipv4("198.18.5.1", "198.19.5.1", 50,
                                                            struct.pack("!II", 0xDEAD, 1) + bytes(60))))
                w.write(T0 + i * 1_234_567 + 2, ether(ipv4(sas[2].src, sas[2].dst, 17, udp(
                    sas[2].src, sas[2].dst, 4500, 4500, bytes(4) + bytes(60), checksum=False))))
                w.write(T0 + i * 1_234_567 + 3, ether(ipv4(sas[2].src, sas[2].dst, 17, udp(
                    sas[2].src, sas[2].dst, 4500, 4500, b"\xff", checksum=False))))
                frag = bytearray(ether(ipv4(sa.src, sa.dst, 50, bytes(esp))))
                frag[20] |= 0x20  # more fragments
                w.write(T0 + i * 1_234_567 + 4, bytes(frag))
    return keys, good, bad


def _run(cap: Path, keys: Path, out: Path, *, bulk_on: bool, jobs: int = 1, monkeypatch) -> tuple:
    monkeypatch.setattr(hotloop, "BULK_MIN_BYTES", 0 if bulk_on else 1 << 62)
    s = engine.run(cap, load_keystore(keys), out=str(out), opts=engine.Options(), jobs=jobs, parallel_min_bytes=0)
    return (out.read_bytes(), s.frames, s.esp, s.decrypted, s.icv_failed, s.malformed, s.no_key, s.other,
            s.dummy, s.nested_decrypted, s.truncated, [(k, st.decrypted, st.icv_failed, st.malformed)
                                                       for k, st in s.per_sa])


@pytest.mark.parametrize("fmt", ["pcap", "pcapng-us", "pcapng-ns"])
def test_bulk_step_equals_the_per_record_loop(fmt: str, tmp_path: Path, monkeypatch) -> None:
    cap = tmp_path / "in.pcap"
    keys, good, damaged = _capture(cap)
    if fmt != "pcap":
        src, cap = cap, tmp_path / "in.pcapng"
        as_pcapng(src, cap, 9 if fmt == "pcapng-ns" else None)
    monkeypatch.setattr(bulk, "MIN_RUN", 2)
    taken = []
    plan = bulk.plan
    monkeypatch.setattr(bulk, "plan", lambda *a: taken.append(plan(*a)) or taken[-1])
    ref = _run(cap, keys, tmp_path / "ref.pcapng", bulk_on=False, monkeypatch=monkeypatch)
    assert not taken
    for window in (1 << 21, 5000, 700):
        monkeypatch.setattr(hotloop, "WINDOW", window)
        got = _run(cap, keys, tmp_path / f"bulk{window}.pcapng", bulk_on=True, monkeypatch=monkeypatch)
        assert got[1:] == ref[1:], window
        assert got[0] == ref[0], window
    # most records went through the bulk step, both kinds of SA (CBC + HMAC and AES-GCM)
    sas_taken = {e.st.opener.encr.kind for runs in taken for r in runs for e, _n in r[4]}
    assert sum(r[2] for runs in taken for r in runs) > 1000
    assert len(sas_taken) == 2
    # and the answer is the general path's and the generator's: every intact packet decrypted
    # (dummies and malformed ones counted apart), every damaged one an ICV failure
    general = list(iter_decrypted(tmp_path / "in.pcap", [keys]))
    assert (ref[3], ref[4], ref[5]) == (sum(p.status == "ok" for p in general),
                                        sum(p.status == "icv_failed" for p in general),
                                        sum(p.status == "malformed" for p in general))
    assert (ref[3] + ref[5], ref[4]) == (good, damaged)
    assert ref[5] > 0 and ref[8] > 0  # bad padding / lengths, dummy packets
    # every ESP frame counted once: decrypted, failed, malformed or without a key
    assert ref[2] == ref[3] + ref[4] + ref[5] + ref[6] == 1500 + 15
    with open_capture(tmp_path / "ref.pcapng") as r:
        written = [f.data for f in r]
    tunnelled = [p.inner for p in general if p.status == "ok" and p.next_header in (4, 41)]
    assert [d for d in written if d in set(tunnelled)] == tunnelled


def test_bulk_step_with_a_record_cut_off(tmp_path: Path, monkeypatch) -> None:
    """A capture whose last record is cut off: the bulk step leaves it to the per-record loop,
    which says so; every record before it is written as without the bulk step."""
    cap = tmp_path / "in.pcap"
    keys, _, _ = _capture(cap)
    data = cap.read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(data + struct.pack("<IIII", 1_764_000_100, 0, 400, 400) + data[-200:])
    monkeypatch.setattr(bulk, "MIN_RUN", 2)
    ref = _run(cut, keys, tmp_path / "ref.pcapng", bulk_on=False, monkeypatch=monkeypatch)
    got = _run(cut, keys, tmp_path / "got.pcapng", bulk_on=True, monkeypatch=monkeypatch)
    assert got == ref
    assert ref[10] and "truncated" in ref[10]


def test_bulk_step_split_over_processes(tmp_path: Path, monkeypatch) -> None:
    """-j 3 with the bulk step in every chunk: the bytes of one process without it."""
    cap = tmp_path / "in.pcap"
    keys, _, _ = _capture(cap)
    monkeypatch.setattr(bulk, "MIN_RUN", 2)
    monkeypatch.setattr(engine, "CHUNK_MIN_BYTES", 1)
    ref = _run(cap, keys, tmp_path / "ref.pcapng", bulk_on=False, monkeypatch=monkeypatch)
    par = _run(cap, keys, tmp_path / "par.pcapng", bulk_on=True, jobs=3, monkeypatch=monkeypatch)
    assert par == ref


def test_a_failure_before_the_first_success_is_still_an_early_failure(tmp_path: Path, monkeypatch) -> None:
    """The bulk step counts decrypted packets per run, in record order, so the per-record loop
    still sees an ICV failure that comes before an SA's first success in a chunk as such (what
    the ESN reconcile step keys on): the ESN capture of test_decrypt_export (its sequence
    numbers cross 2^32), split in chunks."""
    from tests.test_decrypt_export import _esn_capture

    cap = tmp_path / "esn.pcap"
    keys, good = _esn_capture(cap)
    monkeypatch.setattr(bulk, "MIN_RUN", 2)
    monkeypatch.setattr(engine, "CHUNK_MIN_BYTES", 1)
    monkeypatch.setattr(engine, "MAX_CHUNKS_PER_JOB", 4)
    ref = _run(cap, keys, tmp_path / "ref.pcapng", bulk_on=False, monkeypatch=monkeypatch)
    for jobs in (1, 3):
        got = _run(cap, keys, tmp_path / f"b{jobs}.pcapng", bulk_on=True, jobs=jobs, monkeypatch=monkeypatch)
        assert got == ref
    assert ref[3] == good


def test_the_first_window_is_planned_again_once_its_sas_are_known(tmp_path: Path, monkeypatch) -> None:
    """The whole capture in one read window: when it is read no SA is known yet, so the first
    packets go the per-record way; once they made their SAs, the rest of the window goes to the
    bulk step (planned again from where the loop is), with the per-record loop's bytes."""
    cap = tmp_path / "in.pcap"
    keys, _, _ = _capture(cap)
    assert cap.stat().st_size < hotloop.WINDOW
    monkeypatch.setattr(bulk, "MIN_RUN", 2)
    taken = []
    plan = bulk.plan
    monkeypatch.setattr(bulk, "plan", lambda *a: taken.append((a[1][0] if a[1] else -1, plan(*a))) or taken[-1][1])  # (a[1]: offsets)
    ref = _run(cap, keys, tmp_path / "ref.pcapng", bulk_on=False, monkeypatch=monkeypatch)
    got = _run(cap, keys, tmp_path / "got.pcapng", bulk_on=True, monkeypatch=monkeypatch)
    assert got == ref
    assert taken and all(o0 > 0 for o0, _runs in taken)  # planned again, from inside the window
    assert sum(r[2] for _o0, runs in taken for r in runs) > 1000


def _split_run(cap: Path, keys: Path, out: Path, jobs: int) -> tuple:
    s = engine.run(cap, load_keystore(keys), out=str(out), opts=engine.Options(), jobs=jobs, parallel_min_bytes=0)
    return (out.read_bytes(), s.frames, s.esp, s.decrypted, s.icv_failed, s.malformed, s.no_key, s.other, s.dummy,
            s.truncated), s.guesses_redone


def test_a_guessed_chunk_start_fooled_by_a_packet_is_walked_to_again(tmp_path: Path, monkeypatch) -> None:
    """A second process starts at a guessed record (capture.layout.guess), checked against where
    the first stopped. Here the split point falls inside a 60 kB UDP packet full of bytes that
    look like pcap records: the guess is wrong, the chunk is processed again from its true
    first record, and the output and counts are one process's; a record cut off at the end is
    named by its frame number in the whole file either way."""
    part = tmp_path / "part.pcap"
    keys, _, _ = _capture(part)
    recs = part.read_bytes()[24:]
    fake = struct.pack("<IIII", 1_764_000_000, 0, 40, 40) + bytes(40)
    payload = fake * (60_000 // len(fake))
    big = ether(ipv4("198.18.9.1", "198.19.9.1", 17, udp("198.18.9.1", "198.19.9.1", 9, 9, payload, checksum=False)))
    cap = tmp_path / "fooled.pcap"
    cut = struct.pack("<IIII", 1_764_000_100, 0, 400, 400) + bytes(100)  # the last record, cut off
    cap.write_bytes(part.read_bytes()[:24] + recs + struct.pack("<IIII", 1_764_000_050, 0, len(big), len(big)) + big
                    + recs + cut)
    monkeypatch.setattr(bulk, "MIN_RUN", 2)
    monkeypatch.setattr(hotloop, "BULK_MIN_BYTES", 0)
    monkeypatch.setattr(engine, "CHUNK_MIN_BYTES", 1)
    ref, _ = _split_run(cap, keys, tmp_path / "ref.pcapng", 1)
    par, redone = _split_run(cap, keys, tmp_path / "par.pcapng", 2)
    assert redone == 1
    assert par == ref
    assert ref[9] and f"frame {ref[1] + 1})" in ref[9]
    # the same capture without the fake records: the guess holds, nothing is done twice
    cap.write_bytes(part.read_bytes()[:24] + recs + recs + cut)
    ref, _ = _split_run(cap, keys, tmp_path / "ref2.pcapng", 1)
    par, redone = _split_run(cap, keys, tmp_path / "par2.pcapng", 2)
    assert redone == 0
    assert par == ref and "frame" in ref[9]


def test_bulk_step_cbc_block_sizes_and_icv_lengths(tmp_path: Path, monkeypatch) -> None:
    """CBC + HMAC runs of 8-byte (3DES) and 16-byte (AES) blocks with 96-, 128- and 256-bit ICVs
    (the bulk step compares ICVs as 32-bit words and reads a plaintext's first 10 bytes across
    cipher blocks): inner packets from 20 bytes (two and a half 3DES blocks) up, TFC padding,
    tampered ICVs and IVs give the bytes and counters of the per-record loop, and every SA goes
    through the bulk step."""
    rng = random.Random(8)
    sas = [Sa(0x6D000001, "198.18.1.1", "198.19.1.1", "3des", rng.randbytes(24), "sha1", rng.randbytes(20)),
           Sa(0x6D000002, "198.18.2.1", "198.19.2.1", "aes-cbc", rng.randbytes(16), "sha512", rng.randbytes(64)),
           Sa(0x6D000003, "198.19.3.1", "198.18.3.1", "aes-cbc", rng.randbytes(32), "md5", rng.randbytes(16))]
    keys = tmp_path / "in.keys.json"
    keys.write_text(json.dumps({"schema": "ipsecscope.keys/1", "esp": [s.json_entry() for s in sas]}))
    cap = tmp_path / "in.pcap"
    damaged = 0
    with PcapWriter(cap) as w:
        for i in range(900):
            k = (i // 5) % len(sas)
            sa = sas[k]
            if i % 7 == 3:  # the smallest tunnelled packet: a bare IPv4 header
                inner = ipv4(f"10.{k}.0.1", f"10.{k}.1.1", 253, b"")
            else:
                inner = ipv4(f"10.{k}.0.1", f"10.{k}.1.1", 17,
                             udp(f"10.{k}.0.1", f"10.{k}.1.1", 5000, 6000, rng.randbytes(rng.randrange(0, 300))))
            esp = bytearray(esp_encrypt(sa, i + 1, inner, 4, rng.randbytes(16), tfc=(0, 0, 5, 33)[i % 4]))
            if i % 61 == 7:
                esp[-1] ^= 1  # ICV
                damaged += 1
            elif i % 67 == 11:
                esp[9] ^= 1  # IV: the HMAC covers it
                damaged += 1
            w.write(T0 + i * 1000, ether(ipv4(sa.src, sa.dst, 50, bytes(esp), ident=i)))
    monkeypatch.setattr(bulk, "MIN_RUN", 2)
    taken = []
    plan = bulk.plan
    monkeypatch.setattr(bulk, "plan", lambda *a: taken.append(plan(*a)) or taken[-1])
    ref = _run(cap, keys, tmp_path / "ref.pcapng", bulk_on=False, monkeypatch=monkeypatch)
    assert (ref[3], ref[4]) == (900 - damaged, damaged)
    for window in (1 << 21, 3000):
        monkeypatch.setattr(hotloop, "WINDOW", window)
        got = _run(cap, keys, tmp_path / f"bulk{window}.pcapng", bulk_on=True, monkeypatch=monkeypatch)
        assert got[1:] == ref[1:], window
        assert got[0] == ref[0], window
    shapes = {(e.st.opener.encr.block, e.st.opener.icv_len) for runs in taken for r in runs for e, _n in r[4]}
    assert shapes == {(8, 12), (16, 32), (16, 12)}  # every SA through the bulk step
    assert sum(r[2] for runs in taken for r in runs) > 800


@pytest.mark.parametrize("odd", ["longer", "shorter", "both"])
def test_aes_gcm_blocks_of_unplanned_lengths(odd: str, tmp_path: Path, monkeypatch) -> None:
    """The bulk step decrypts AES-GCM plaintexts where their output blocks go if each is 28 +
    plaintext bytes long (an inner packet of a multiple of 4 bytes, least padding) and moves the
    others after the checks: every 13th block longer (inner length 2 mod 4, no padding), shorter
    (12 more padding bytes, an ICV failure now and then) or both, so the packets after it shift
    one way, the other, or both ways; the bytes and counters are the per-record loop's, and each
    way of moving them was taken."""
    rng = random.Random(4)
    sa = Sa(0x6E000001, "198.18.1.1", "198.19.1.1", "aes-gcm16", rng.randbytes(36))
    keys = tmp_path / "in.keys.json"
    keys.write_text(json.dumps({"schema": "ipsecscope.keys/1", "esp": [sa.json_entry()]}))
    cap = tmp_path / "in.pcap"
    with PcapWriter(cap) as w:
        for i in range(1200):
            odd_one = i % 13 == 5
            longer = odd_one and (odd == "longer" or (odd == "both" and i % 2))
            size = 4 * rng.randrange(0, 100) + (2 if longer else 0)
            inner = ipv4("10.0.0.1", "10.0.1.1", 17, udp("10.0.0.1", "10.0.1.1", 5000, 6000, bytes(size)))
            pad = (-(len(inner) + 2)) % 4 + (12 if odd_one and not longer else 0)
            esp = bytearray(_esp_of(sa, i + 1, inner + bytes(range(1, pad + 1)) + bytes((pad, 4)), rng.randbytes(8)))
            if odd != "longer" and i % 97 == 50:
                esp[-1] ^= 1  # ICV
            w.write(T0 + i * 1000, ether(ipv4(sa.src, sa.dst, 50, bytes(esp), ident=i)))
    monkeypatch.setattr(bulk, "MIN_RUN", 2)
    ways = set()
    place = bulk._place
    monkeypatch.setattr(bulk, "_place", lambda out, src, dst, ln, ix: ways.add(
        "none" if (dst == src).all() else "copy" if (dst > src).any() and (dst < src).any() else "moved")
        or place(out, src, dst, ln, ix))
    ref = _run(cap, keys, tmp_path / "ref.pcapng", bulk_on=False, monkeypatch=monkeypatch)
    assert ref[3] > 1100
    for window in (1 << 21, 20_000, 3000):
        monkeypatch.setattr(hotloop, "WINDOW", window)
        got = _run(cap, keys, tmp_path / f"bulk{window}.pcapng", bulk_on=True, monkeypatch=monkeypatch)
        assert got[1:] == ref[1:], window
        assert got[0] == ref[0], window
    assert ways >= {"none", "copy" if odd == "both" else "moved"}


def test_cbc_plaintexts_copied_a_step_apart(tmp_path: Path, monkeypatch) -> None:
    """The bulk step decrypts CBC packets grouped by plaintext length and copies each group's
    plaintexts out with one numpy call, a fixed step apart (bulk._copy_steps). Groups of AES
    (16-byte blocks) and 3DES (8) packets whose steps are equal but whose plaintexts start at
    other places in their pieces, groups holding an ICV failure or a packet whose TFC padding
    (RFC 4303 §2.7) makes its data far shorter than its group's (copying the group's length there
    would overwrite the next block's data): the bytes and counters of the per-record loop."""
    rng = random.Random(16)
    sas = [Sa(0x6E000001, "198.18.1.1", "198.19.1.1", "aes-cbc", rng.randbytes(32), "sha256", rng.randbytes(32)),
           Sa(0x6E000002, "198.18.2.1", "198.19.2.1", "3des", rng.randbytes(24), "sha1", rng.randbytes(20)),
           Sa(0x6E000003, "198.19.3.1", "198.18.3.1", "aes-cbc", rng.randbytes(16), "sha256", rng.randbytes(32))]
    keys = tmp_path / "in.keys.json"
    keys.write_text(json.dumps({"schema": "ipsecscope.keys/1", "esp": [s.json_entry() for s in sas]}))
    cap = tmp_path / "in.pcap"
    damaged = 0
    with PcapWriter(cap) as w:
        for i in range(1500):
            k = i % 3
            sa = sas[k]
            # inner lengths: AES 100 (plaintext 112, piece 144) and 3DES 116 (plaintext 120, piece
            # 144 too); 64; 440 (plaintext 448 both). A long packet is followed by a short one,
            # whose group is copied before its own.
            size, tfc = ((116 if k == 1 else 100), 64, 440)[(i // 3) % 3], 0
            if size == 440 and i % 17 == 2:
                size, tfc = 40, 400  # its plaintext as long as the group's, its data 400 bytes shorter
            inner = ipv4(f"10.{k}.0.1", f"10.{k}.1.1", 17, udp(f"10.{k}.0.1", f"10.{k}.1.1", 5000, 6000,
                                                                 rng.randbytes(size - 28)))
            esp = bytearray(esp_encrypt(sa, i + 1, inner, 4, rng.randbytes(16), tfc=tfc))
            if size == 116 and i % 7 == 1:  # (3DES packets only: the other groups stay whole)
                esp[-1] ^= 1  # ICV
                damaged += 1
            w.write(T0 + i * 1000, ether(ipv4(sa.src, sa.dst, 50, bytes(esp), ident=i)))
    copied = []
    steps = bulk._copy_steps

    def spy(*a):
        rest = steps(*a)
        copied.append(int(a[-1].sum()) - len(rest[0]))
        return rest
    monkeypatch.setattr(bulk, "_copy_steps", spy)
    ref = _run(cap, keys, tmp_path / "ref.pcapng", bulk_on=False, monkeypatch=monkeypatch)
    assert (ref[3], ref[4]) == (1500 - damaged, damaged)
    for window in (1 << 21, 60000):
        monkeypatch.setattr(hotloop, "WINDOW", window)
        copied.clear()
        got = _run(cap, keys, tmp_path / f"bulk{window}.pcapng", bulk_on=True, monkeypatch=monkeypatch)
        assert got[1:] == ref[1:], window
        assert got[0] == ref[0], window
        assert 600 < sum(copied) < 1500 - damaged, window  # most copied a group at a time, not all
