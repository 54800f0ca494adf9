"""Keys from the peer behind NAT decrypt a capture taken on the public side (issue 17).

samples/nat-napt is a real run (two strongSwan peers and a NAPT router): the initiator sits
at 10.0.0.1 behind a NAPT that shows it as 198.18.0.1; the capture is on the public side. Its own
log binds every CHILD SA to 10.0.0.1, the wire says 198.18.0.1 — same SPIs. IKE keys bind by
IKE SPIs, CHILD keys by SPI plus the address NAT did not change, and only where the ICV agrees.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import replace

import pytest
from conftest import DATA, IPSECSCOPE, SAMPLES

from ipsecscope.api import iter_decrypted
from ipsecscope.keys import load_keys
from ipsecscope.keys.formats import dump
from ipsecscope.keys.store import KeyStore
from ipsecscope.session import Session

NAT = SAMPLES / "nat-napt"
CAPTURE = NAT / "capture.pcapng"
PRIVATE, PUBLIC = "10.0.0.1", "198.18.0.1"


def session(keys) -> Session:
    s = Session()
    s.add_key_files(keys)
    s.load(CAPTURE)
    return s


@pytest.mark.parametrize("log", ["charon-left.log", "charon-right.log"])
def test_every_esp_packet_and_ike_message_decrypts_with_either_log_alone(log):
    s = session([NAT / log])
    flows = list(s.table.flows.values())
    assert sum(f.packets for f in flows) == 16
    assert all(f.decrypted == f.packets and not f.no_key and not f.icv_failed for f in flows), flows
    encrypted = [m for m in s.ike_messages.values() if any(p.type == 46 for p in m.payloads)]
    assert encrypted and s.stats.ike_decrypted == len(encrypted) and not s.stats.ike_icv_failed
    # the CLI decrypts every ESP packet too (it has no tracker: the keys alone must match)
    r = subprocess.run([*IPSECSCOPE, "decrypt", str(CAPTURE), "-k", str(NAT / log), "--jsonl", os.devnull],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "16 ESP: 16 decrypted, 0 icv_failed, 0 no_key" in r.stderr, r.stderr


def test_the_natted_peers_log_names_its_private_address():
    left = load_keys([NAT / "charon-left.log"])
    assert {k.src for k in left.esp} | {k.dst for k in left.esp} == {PRIVATE, "198.18.0.2"}
    assert all(left.esp_lookup(k.src, k.dst, k.spi) == k for k in left.esp)  # exact where it was logged


def _esp_sa_from_natted_peer(tmp_path, corrupt: bool = False):
    """What `keys convert --to esp_sa` writes on the NATed peer (its own addresses)."""
    store = load_keys([NAT / "charon-left.log"])
    out = KeyStore()
    for k in store.esp:
        if corrupt:
            k = replace(k, enc_key=bytes([k.enc_key[0] ^ 1]) + k.enc_key[1:])
        out.add_esp(k)
    f = tmp_path / "esp_sa"
    f.write_text(str(dump(out, "esp_sa", True)))
    return f


def _xfrm_from_natted_peer(tmp_path):
    """`ip xfrm state` as the NATed peer shows these SAs (aead rfc4106, espinudp encap)."""
    store = load_keys([NAT / "charon-left.log"])
    lines = []
    for k in store.esp:
        lines += [f"src {k.src} dst {k.dst}",
                  f"\tproto esp spi 0x{k.spi:08x} reqid 1 mode tunnel",
                  "\treplay-window 0 flag af-unspec",
                  f"\taead rfc4106(gcm(aes)) 0x{k.enc_key.hex()} 128",
                  "\tencap type espinudp sport 4500 dport 4500 addr 0.0.0.0"]
    f = tmp_path / "xfrm.txt"
    f.write_text("\n".join(lines) + "\n")
    return f


@pytest.mark.parametrize("make", [_esp_sa_from_natted_peer, _xfrm_from_natted_peer], ids=["esp_sa", "xfrm"])
def test_esp_keys_written_on_the_natted_peer_match_across_nat(tmp_path, make):
    f = make(tmp_path)
    s = session([f])
    flows = list(s.table.flows.values())
    assert all(f.decrypted == f.packets for f in flows) and sum(f.decrypted for f in flows) == 16
    assert {f.keys_nat for f in flows} == {f"{PRIVATE} -> {PUBLIC}"}
    sas = subprocess.run([*IPSECSCOPE, "sas", str(CAPTURE), "-k", str(f)], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert sas.returncode == 0 and f"keys matched across NAT ({PRIVATE} → {PUBLIC})" in sas.stdout
    assert all(p.status == "ok" and p.keys.nat for p in iter_decrypted(CAPTURE, load_keys([f])))


def test_a_nat_matched_key_the_icv_rejects_is_never_applied(tmp_path):
    f = _esp_sa_from_natted_peer(tmp_path, corrupt=True)
    for p in iter_decrypted(CAPTURE, load_keys([f])):
        assert p.status == "no_key", (p.frame, p.status)  # not icv_failed: the key is not this SA's
    s = session([f])
    assert all(not f.icv_failed and not f.decrypted and not f.keys_nat for f in s.table.flows.values())


def test_spi_alone_never_matches_when_ambiguous_or_unverifiable():
    left = load_keys([NAT / "charon-left.log"])
    k = left.esp[0]
    wire_src = PUBLIC if k.src == PRIVATE else k.src
    wire_dst = PUBLIC if k.dst == PRIVATE else k.dst
    assert left.esp_lookup(wire_src, wire_dst, k.spi).nat
    both = KeyStore()
    both.add_esp(k)
    both.add_esp(replace(k, src="10.9.9.9" if k.src == PRIVATE else k.src,
                         dst="10.9.9.9" if k.dst == PRIVATE else k.dst, enc_key=bytes(len(k.enc_key))))
    assert both.esp_lookup(wire_src, wire_dst, k.spi) is None  # two keys claim the SPI: no guess
    none = KeyStore()
    none.add_esp(replace(k, encr=12, enc_key=bytes(16), integ=0, auth_key=b""))  # AES-CBC, no integrity
    assert none.esp_lookup(wire_src, wire_dst, k.spi) is None  # no ICV could say it is wrong
    far = KeyStore()
    far.add_esp(replace(k, src="10.7.7.7", dst="10.8.8.8"))
    assert far.esp_lookup(wire_src, wire_dst, k.spi) is None  # both addresses differ: not one NAT


def test_keys_list_says_which_keys_the_capture_uses_and_across_which_nat(tmp_path):
    f = _esp_sa_from_natted_peer(tmp_path)
    r = subprocess.run([*IPSECSCOPE, "keys", "list", str(f), "--capture", str(CAPTURE)], capture_output=True,
                       text=True, timeout=120, env={**os.environ, "COLUMNS": "250"})
    assert r.returncode == 0, r.stderr
    rows = [ln for ln in r.stdout.splitlines() if "0x" in ln and "ESP" in ln]
    assert len(rows) == 4 and all(f"across NAT {PRIVATE} → {PUBLIC}" in ln for ln in rows), r.stdout


def test_keys_for_another_tunnel_are_called_so(tmp_path):
    """Issue 14: a log from another tunnel is not success. sas warns with the counts, and no
    longer says "give -k" when -k was given."""
    other = DATA / "keys" / "charon-cbc-sha2-pfs-right.log"
    r = subprocess.run([*IPSECSCOPE, "sas", str(CAPTURE), "-k", str(other)], capture_output=True, text=True,
                       timeout=120, env={**os.environ, "COLUMNS": "250"})
    assert (f"ipsecscope sas: warning: keys from {other} (1 IKE SA, 6 ESP SAs) match no SPI in this capture: "
            "another tunnel, host or rotated log?") in r.stderr
    assert "give -k" not in r.stdout and "the keys given hold none for this IKE SA" in r.stdout
    s = session([other])
    [m] = s.key_matches()
    assert m.matches_nothing and (m.ike, m.esp, m.ike_matched, m.esp_matched) == (1, 6, 0, 0)
    good = session([NAT / "charon-left.log"]).key_matches()
    assert [(m.ike_matched, m.esp_matched, m.matches_nothing) for m in good] == [(1, 4, False)]
