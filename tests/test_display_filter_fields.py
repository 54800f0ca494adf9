"""Every display-filter field against tshark's own values, field for field, on captures that carry
each layer the fields read (outer, decrypted inner, quoted in ICMP errors, AH payloads, IPv6
extension headers inside and outside ESP, RFC 8229 TCP, tunnels, IKEv1/IKEv2).

One tshark pass a capture (``-T fields``, every field of :data:`ipsecscope.model.filter.FIELDS`
that tshark has, every occurrence) gives each frame's values; the filters are generated from
them: presence, and ``== v`` / ``!= v`` for the most and least common values of each field. The
frames each must select follow from tshark's semantics (Wireshark >= 3.6): ``==`` holds when any
occurrence equals, ``!=`` when the field is there and no occurrence equals, a bare field when it
is there; a protocol is there when ``frame.protocols`` names it. tests/test_display_filter_oracle.py
runs whole filters through tshark's own engine; this one covers every field.

Differences by design are listed in EXCUSED with the reason; each must still occur (a stale
excuse fails), so the list says what is different today.
"""

from __future__ import annotations

import collections
import functools
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import DATA, SAMPLES, need, needs_tshark, public

from ipsecscope.filtering import matches, source_of
from ipsecscope.model.filter import BYTES, FIELDS, PROTO, STRING, compile_filter
from ipsecscope.session import Session

# not tshark fields (ipsecscope.*), or printed in another precision than a filter compares
OURS_ONLY = ("ipsecscope.", "frame.time_")
VALUED = [f for f, d in FIELDS.items() if not f.startswith(OURS_ONLY) and d.type != PROTO and f != "frame.number"]
PROTOS = [f for f, d in FIELDS.items() if not f.startswith(OURS_ONLY) and d.type == PROTO]

# capture -> (ipsecscope's keys, tshark's profile directory or esp_sa table), both optional
CAPTURES = {
    "healthy-gcm": (SAMPLES / "healthy-gcm" / "capture.pcapng", SAMPLES / "healthy-gcm" / "keys"),
    "cbc-sha2-pfs": (SAMPLES / "cbc-sha2-pfs" / "capture.pcapng", SAMPLES / "cbc-sha2-pfs" / "keys"),
    "ikev1-nat-rebind": (SAMPLES / "ikev1-nat-rebind" / "capture.pcapng", SAMPLES / "ikev1-nat-rebind" / "keys"),
    "mtu-small-link": (SAMPLES / "mtu-small-link" / "capture.pcapng", SAMPLES / "mtu-small-link" / "keys"),
    "synthetic/icmp-quoted": (SAMPLES / "synthetic" / "icmp-quoted.pcap", SAMPLES / "synthetic" / "icmp-quoted.esp_sa"),
    "synthetic/cbc-ctr-hmac": (SAMPLES / "synthetic" / "cbc-ctr-hmac.pcap", SAMPLES / "synthetic" / "cbc-ctr-hmac.esp_sa"),
    "synthetic/ipv6-transport-natt": (SAMPLES / "synthetic" / "ipv6-transport-natt.pcap",
                                      SAMPLES / "synthetic" / "ipv6-transport-natt.esp_sa"),
    "ipv6-ext": (DATA / "ipv6-ext" / "ipv6-ext.pcap", None),
    "ipv6-ext-inner": (DATA / "ipv6-ext" / "ipv6-ext-inner.pcap", DATA / "ipv6-ext" / "ipv6-ext-inner.esp_sa"),
    "ipv6-frag-ike": (DATA / "ipv6-ext" / "ipv6-frag-ike.pcap", None),
    "rfc8229": (DATA / "rfc8229" / "ikev2-tcp.pcap", None),
    "tunnels/gre-key": (DATA / "tunnels" / "gre-key.pcap", None),
    "tunnels/vxlan": (DATA / "tunnels" / "vxlan.pcap", None),
    "tunnels/plain-inside": (DATA / "tunnels" / "plain-inside.pcap", None),
    "tunnels/frag-inside": (DATA / "tunnels" / "frag-inside.pcap", SAMPLES / "healthy-gcm" / "keys"),
    "tunnels/icmp-quoted-inside": (DATA / "tunnels" / "icmp-quoted-inside.pcap",
                                   SAMPLES / "synthetic" / "icmp-quoted.esp_sa"),
    "tunnels/ah-quoted-inside": (DATA / "tunnels" / "ah-quoted-inside.pcap", None),
    "ah-v4": (DATA / "ah" / "ah-v4.pcap", None),
    "ah-v6": (DATA / "ah" / "ah-v6.pcap", None),
    "ah-esp": (DATA / "ah" / "ah-esp.pcap", None),
    "ah-frag": (DATA / "ah" / "ah-frag.pcap", None),
    "ah-quoted": (DATA / "ah" / "ah-quoted.pcap", None),
    "ipv6-ext-esp": (DATA / "ipv6-ext" / "ipv6-ext-esp.pcap", DATA / "ipv6-ext" / "ipv6-ext-esp.esp_sa"),
    "ah-tunnels/ah-v6-gre": (DATA / "ah-tunnels" / "ah-v6-gre.pcap", None),
    "zeek/ip6_esp": (public("zeek/ip6_esp.pcap"), None),
    "tcpdump/isakmp4500": (public("tcpdump/isakmp4500.pcap"), None),
    "zeek-spicy-ipsec/ipsec-ikev1-zero-length": (public("zeek-spicy-ipsec/ipsec-ikev1-zero-length.pcap"), None),
    "malformed-ip": (DATA / "malformed-ip" / "malformed-ip.pcap", None),
    "bad/malformed": (DATA / "bad" / "malformed.pcap", None),
    "linktypes/enc": (DATA / "linktypes" / "enc.pcap", None),  # OpenBSD enc(4): enc.spi / enc.flags
    "linktypes/enc-rekey": (DATA / "linktypes" / "enc-rekey.pcap", None),  # big-endian header, six SPIs
}
# capture -> (field prefix, frames, why the tools differ there on purpose); the field's filters
# are compared on the other frames. (Frames whose ESP only one tool opens are left out everywhere,
# as the oracle does: tshark, with no authentication check by default, dissects the plaintext of
# ESP whose ICV fails, where ipsecscope shows no inner packet; ipsecscope decrypts algorithms
# tshark 4.0 lacks, ChaCha20-Poly1305 among them.)
EXCUSED: dict[str, list[tuple[str, set[int] | None, str]]] = {
    "rfc8229": [
        ("esp", None, "tshark 4.0 does not dissect RFC 8229 records (its TCP encapsulation dissector is off "
                      "by default, and forced reads the length field as the SPI); ipsecscope shows them"),
        ("isakmp", None, "as esp"),
    ],
    "synthetic/cbc-ctr-hmac": [
        ("esp.protocol", None, "tshark adds ESP's trailer fields after the inner packet's dissection, and "
                               "this capture's inner DNS messages are malformed (an exception ends it)"),
    ],
    "malformed-ip": [
        ("ah.sequence", {7}, "AH with Payload Len 0 is 8 octets (RFC 4302 §2.2), shorter than its fixed 12: tshark "
                             "reads a sequence number from the octets that length puts behind AH, ipsecscope none"),
        ("icmp", {7}, "the packet behind that AH: tshark dissects it from octet 8, ipsecscope not behind a broken "
                      "AH header"),
    ],
    "bad/malformed": [
        ("isakmp.nextpayload", {1}, "an IKE payload chain in a broken message: tshark reads the next payload "
                                    "field of the cut payload, ipsecscope stops at the header"),
        ("isakmp.length", {2}, "an IKE header whose Length (1000) runs past the datagram: tshark's dissection "
                               "ends with an exception at that field, ipsecscope shows the header's value"),
    ],
    "synthetic/icmp-quoted": [
        # an ESP packet cut off inside an ICMP error, which tshark 'decrypts' anyway, reading a
        # trailer from the cut: it then dissects the bytes in front as the extension header that
        # would-be trailer's Next Header names (0, 44); ipsecscope makes no header of them
        ("ipv6.hopopts", {52, 61}, "tshark dissects a cut-off quoted ESP's bytes as a Hop-by-Hop header"),
        ("ipv6.fraghdr", {24}, "tshark dissects a cut-off quoted ESP's bytes as a Fragment header"),
    ],
    "tunnels/icmp-quoted-inside": [  # the same frames inside tunnels: the same difference
        ("ipv6.hopopts", {52, 61}, "tshark dissects a cut-off quoted ESP's bytes as a Hop-by-Hop header"),
        ("ipv6.fraghdr", {24}, "tshark dissects a cut-off quoted ESP's bytes as a Fragment header"),
    ],
}


def _profile(keys: Path | None, tmp: Path) -> Path:
    if keys is None or keys.is_dir():
        return keys or tmp
    shutil.copy(keys, tmp / "esp_sa")
    return tmp


def _session_keys(keys: Path | None) -> list[Path]:
    if keys is None:
        return []
    return [keys.with_suffix(".keys.json")] if keys.suffix == ".esp_sa" and keys.with_suffix(".keys.json").exists() \
        else [keys]


@functools.cache
def _tshark_fields() -> frozenset[str]:
    out = subprocess.run(["tshark", "-G", "fields"], capture_output=True, text=True, check=True).stdout
    return frozenset(line.split("\t")[2] for line in out.splitlines() if line.count("\t") >= 2)


def _theirs(cap: Path, prof: Path) -> tuple[list[str], dict[int, tuple[list[str], dict[str, list[str]]]]]:
    """frame -> (frame.protocols' names in order, field -> every value): one tshark pass."""
    fields = [f for f in VALUED + PROTOS if f in _tshark_fields() and f != "frame"]
    args = ["tshark", "-n", "-r", str(cap), "-o", "esp.enable_encryption_decode:TRUE", "-T", "fields",
            "-E", "occurrence=a", "-E", "aggregator=|", "-e", "frame.number", "-e", "frame.protocols"]
    for f in fields:
        args += ["-e", f]
    out = subprocess.run(args, env=dict(os.environ, WIRESHARK_CONFIG_DIR=str(prof)), capture_output=True,
                         text=True, timeout=300, check=True).stdout
    rows = {}
    for line in out.split("\n"):
        if line:
            n, protos, *vals = line.split("\t")
            rows[int(n)] = (protos.split(":"), {f: [x for x in v.split("|") if x] for f, v in
                                                     zip(fields, vals, strict=True)})
    return fields, rows


def _own_esp_inner(protos: list[str]) -> bool:
    """tshark dissected something inside the frame's own ESP, not inside an ESP packet an ICMP
    error quotes (as tests/test_display_filter_oracle.py reads frame.protocols)."""
    head, sep, tail = ":".join(protos).partition(":esp:")
    return bool(sep and tail) and not {"icmp", "icmpv6"} & set(head.split(":"))


def _literal(field: str, v: str) -> str:
    t = FIELDS[field].type
    if t == BYTES:
        return ":".join(v[i:i + 2] for i in range(0, len(v), 2))
    return json.dumps(v) if t == STRING else v


def _filters(fields: list[str], rows: dict) -> list[tuple[str, str, list[int]]]:
    """(field, filter, the frames tshark's values say it selects)."""
    # a protocol's layer is in frame.protocols; a field without a value (udpencap.nat_keepalive)
    # prints something where it is there
    out = [(p, p, [n for n, (ps, vs) in rows.items() if p in ps or p == "frame" or vs.get(p)]) for p in PROTOS]
    for f in (f for f in fields if f in VALUED):
        has = [n for n, (_p, vs) in rows.items() if vs[f]]
        out.append((f, f, has))
        common = [v for v, _c in collections.Counter(v for _p, vs in rows.values() for v in set(vs[f])).most_common()]
        for v in dict.fromkeys(common[:2] + common[-1:]):
            lit = _literal(f, v)
            out.append((f, f"{f} == {lit}", [n for n, (_p, vs) in rows.items() if v in vs[f]]))
            out.append((f, f"{f} != {lit}", [n for n, (_p, vs) in rows.items() if vs[f] and v not in vs[f]]))
    return out


@needs_tshark
@pytest.mark.parametrize("name", list(CAPTURES))
def test_every_field_selects_what_tshark_shows(name: str, tmp_path: Path) -> None:
    cap, keys = CAPTURES[name]
    need(cap)  # third-party captures are materialised at test time (tests/public_data.py)
    fields, rows = _theirs(cap, _profile(keys, tmp_path))
    session = Session.from_files([cap], keys=_session_keys(keys))
    ours_inner = {r.frame for r in session.rows if r.kind == "ESP" and r.status == "decrypted"}
    theirs_inner = {n for n, (ps, _v) in rows.items() if _own_esp_inner(ps)}
    icv_bad = {r.frame for r in session.rows if r.status == "icv-bad"}
    assert not theirs_inner - ours_inner - icv_bad, "tshark opened ESP ipsecscope did not"
    icv_bad |= ours_inner ^ theirs_inner
    src = source_of(session)
    excused = EXCUSED.get(name, [])
    used: set[str] = set()
    wrong, tried = [], 0
    for field, flt, expected in _filters(fields, rows):
        got = matches(compile_filter(flt), src)
        tried += bool(expected)
        skip = set(icv_bad)
        for prefix, frames, _why in excused:
            if field.startswith(prefix):
                skip |= frames if frames is not None else {*expected, *got}
                if got != expected:
                    used.add(prefix)  # (a difference it excuses, or another one it must not hide)
        expected = [f for f in expected if f not in skip]
        got = [f for f in got if f not in skip]
        if got != expected:
            wrong.append(f"{flt}: only tshark {sorted(set(expected) - set(got))[:10]}, "
                         f"only ipsecscope {sorted(set(got) - set(expected))[:10]}")
    assert not wrong, "\n".join(wrong)
    assert {p for p, _f, _w in excused} <= used, "an excuse that no longer applies"
    assert tried >= 20, f"only {tried} filters selected any frame"
