"""AH ICV verification with keys (RFC 4302 §3.3.3), against scapy's SecurityAssociation(AH, ...).

The captures in tests/data/ah were signed by scapy and then changed as a path changes packets
(mutable fields, options, a routing header on its way, fragments, a NAT, one flipped byte). The
oracle is scapy's own AH verification of each packet as its receiver would hold it: the routing
header played to its end, fragments reassembled (scapy's defragment); ipsecscope must say
"verified" exactly where scapy's check passes and "icv-bad" where it fails.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import DATA, IPSECSCOPE, ROOT, needs_tshark
from scapy.layers.inet import IP, defragment
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment, IPv6ExtHdrRouting, defragment6
from scapy.layers.ipsec import AH, IPSecIntegrityError, SecurityAssociation
from scapy.layers.l2 import Ether
from scapy.utils import PcapWriter, rdpcap

AH_DIR = DATA / "ah"

# The SAs of make.py: SPI -> (scapy algorithm, JSON key entry); the key entries are the oracle's
# keys too, read from the key files (one source for both sides).
SCAPY_ALGO = {"AUTH_HMAC_SHA1_96": "HMAC-SHA1-96", "AUTH_HMAC_SHA2_256_128": "SHA2-256-128",
              "AUTH_HMAC_SHA2_384_192": "SHA2-384-192", "AUTH_HMAC_SHA2_512_256": "SHA2-512-256",
              "AUTH_HMAC_MD5_96": "HMAC-MD5-96", "AUTH_AES_CMAC_96": "AES-CMAC-96"}
ESN_HI = {0xA4000004: 1, 0xA6000003: 2}  # make.py's high bits


def run(*args: str) -> subprocess.CompletedProcess:
    r = subprocess.run([*IPSECSCOPE, *args], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert "Traceback" not in r.stderr and r.returncode in (0, 1), r.stderr
    return r


def rows(cap: Path, *keys: Path) -> dict[int, dict]:
    args = [a for k in keys for a in ("-k", str(k))]
    out = run("packets", str(cap), *args, "--json").stdout
    return {r["frame"]: r for r in map(json.loads, out.splitlines())}


def key_entries(path: Path) -> dict[int, dict]:
    return {int(e["spi"], 16): e for e in json.loads(path.read_text())["esp"]}


def _receiver_view(ip):
    """The packet as its final destination holds it: an IPv6 Type 0 routing header with segments
    left is played to its end (RFC 8200 §4.4's address swap, what each hop does)."""
    if IPv6ExtHdrRouting in ip:
        rh = ip[IPv6ExtHdrRouting]
        while rh.segleft:
            i = len(rh.addresses) - rh.segleft
            addrs = list(rh.addresses)
            addrs[i], ip.dst = ip.dst, addrs[i]
            rh.addresses = addrs
            rh.segleft -= 1
        ip = ip.__class__(bytes(ip))
    return ip


def receiver_packets(cap: Path) -> dict:
    """frame (of the packet's last fragment) -> the AH packet as its receiver holds it (scapy):
    fragments reassembled, a routing header played to its end."""
    frames = rdpcap(str(cap))
    out: dict = {}
    # scapy's defragment() takes a datagram's fragments in list order: sorted by offset here, as a
    # receiver reassembles them whatever order they came in; the verdict is the frame's that
    # completed the datagram (its last fragment in capture order), as ipsecscope's rows show it
    v4 = sorted((p[IP] for p in frames if IP in p), key=lambda p: (p.id, p.frag))
    whole4 = {id(p): p for p in defragment(v4)} if v4 else {}
    last4 = {fr[IP].id: n for n, fr in enumerate(frames, 1) if IP in fr and (fr[IP].flags.MF or fr[IP].frag)}
    for n, fr in enumerate(frames, 1):
        ip = fr[IP] if IP in fr else fr[IPv6]
        if IP in fr and (ip.flags.MF or ip.frag):
            if last4[ip.id] != n:
                continue
            ip = next(p for p in whole4.values() if p.id == ip.id and not p.flags.MF and not p.frag)
        elif IPv6ExtHdrFragment in ip:
            if ip[IPv6ExtHdrFragment].m:
                continue
            ip = defragment6([f[IPv6] for f in frames if IPv6 in f and IPv6ExtHdrFragment in f])
        out[n] = _receiver_view(ip.__class__(bytes(ip)))
    return out


def scapy_verdicts(cap: Path, keys: dict[int, dict]) -> dict[int, bool]:
    """frame (of the packet's last fragment) -> scapy's verdict on its AH ICV."""
    out: dict[int, bool] = {}
    for n, ip in receiver_packets(cap).items():
        spi = ip[AH].spi
        k = keys[spi]
        sa = SecurityAssociation(AH, spi=spi, auth_algo=SCAPY_ALGO[k["integ"]],
                                 auth_key=bytes.fromhex(k["auth_key"]), esn_en=spi in ESN_HI,
                                 esn=ESN_HI.get(spi, 0))
        try:
            sa.decrypt(ip)
            out[n] = True
        except IPSecIntegrityError:
            out[n] = False
    return out


@pytest.mark.parametrize("name", ["ah-v4", "ah-v6", "ah-frag", "ah-frag-options"])
def test_icv_verdicts_match_scapy(name):
    cap, keys = AH_DIR / f"{name}.pcap", AH_DIR / f"{name.replace('-options', '')}.keys.json"
    want = scapy_verdicts(cap, key_entries(keys))
    got = rows(cap, keys)
    assert want and {n: got[n]["status"] for n in want} == {n: "verified" if ok else "icv-bad" for n, ok in want.items()}
    assert all(got[n]["kind"] != "AH" for n in got if n not in want)  # the first fragments are not AH packets


def test_fragments_with_first_fragment_only_options_verify():
    """RFC 791 copies Record Route and Timestamp (copy flag 0) into the first fragment only; the
    reassembled datagram's header is the first fragment's, and that is what the ICV covers (RFC 4302
    §3.4.1, the options zeroed as mutable). The header of the fragment that completes the datagram
    (in order: the last, without those options) once made every such packet "icv-bad"."""
    got = rows(AH_DIR / "ah-frag-options.pcap", AH_DIR / "ah-frag.keys.json")
    assert {n: r["status"] for n, r in got.items() if r["kind"] == "AH"} == {3: "verified", 6: "verified", 9: "verified"}
    # the sample is what the docstring says: Router Alert, Record Route, Timestamp in the first
    # fragment; Router Alert alone (copy flag set) in the others
    opts = [[o.option for o in f[IP].options] for f in rdpcap(str(AH_DIR / "ah-frag-options.pcap"))[:3]]
    assert opts == [[20, 7, 4, 0], [20], [20]]


def test_path_changes_that_ah_leaves_out_still_verify():
    """The frames a path changed in mutable fields verify; the corrupted one does not (README.md)."""
    v4, v6 = rows(AH_DIR / "ah-v4.pcap", AH_DIR / "ah-v4.keys.json"), rows(AH_DIR / "ah-v6.pcap", AH_DIR / "ah-v6.keys.json")
    assert [n for n, r in v4.items() if r["status"] != "verified"] == [6]
    assert v4[3]["status"] == v4[9]["status"] == "verified"  # TOS/DF/TTL; Record Route filled in
    assert all(r["status"] == "verified" for r in v6.values())  # flow label, mutable option, routing header
    assert v6[4]["dst"] == "2001:db8:ff::1"  # captured on its way, before its last hop


def test_esn_high_bits_in_sequence_and_inferred_without_the_flag(tmp_path):
    """ESN high bits (RFC 4302 §2.5.1) enter the ICV; a key file that does not say ESN has them
    inferred as for ESP (crypto.esn), and rows show the full 64-bit number."""
    doc = json.loads((AH_DIR / "ah-v4.keys.json").read_text())
    for e in doc["esp"]:
        e.pop("esn", None)
    k = tmp_path / "no-esn.keys.json"
    k.write_text(json.dumps(doc))
    for keys in (AH_DIR / "ah-v4.keys.json", k):
        got = rows(AH_DIR / "ah-v4.pcap", keys)
        assert [(got[n]["status"], got[n]["seq"]) for n in (12, 13, 14)] == [
            ("verified", (1 << 32) | (0xFFFFFFF0 + i)) for i in range(3)]


def test_xfrm_state_keys_verify_the_same():
    """`ip xfrm state` text with proto ah (keys/xfrm.py) gives the same answers as the JSON keys."""
    a = rows(AH_DIR / "ah-v4.pcap", AH_DIR / "ah-v4.keys.json")
    b = rows(AH_DIR / "ah-v4.pcap", AH_DIR / "ah-v4.xfrm.txt")
    assert {n: r["status"] for n, r in a.items()} == {n: r["status"] for n, r in b.items()}
    assert sorted({r["status"] for r in b.values()}) == ["icv-bad", "verified"]


def test_charon_log_ah_child_sa_keys_verify():
    """A charon log's "adding inbound/outbound AH SA" with the CHILD SA's integrity keys (keys/charon.py):
    the initiator's outbound SA takes the initiator key, its inbound one the responder key."""
    a = rows(AH_DIR / "ah-v4.pcap", AH_DIR / "ah-v4.keys.json")
    b = rows(AH_DIR / "ah-v4.pcap", AH_DIR / "ah-v4-charon.log")
    mine = [n for n, r in a.items() if r["spi"] in ("0xa4000001", "0xa4000002")]
    assert [b[n]["status"] for n in mine] == [a[n]["status"] for n in mine] == ["verified"] * 5 + ["icv-bad"] + ["verified"] * 3
    assert {b[n]["status"] for n in b if n not in mine} == {"no-key"}  # AH keys given, none for these SAs


def test_sas_counts_per_sa():
    doc = json.loads(run("sas", str(AH_DIR / "ah-v4.pcap"), "-k", str(AH_DIR / "ah-v4.keys.json"), "--json").stdout)
    got = {f["spi"]: (f["protocol"], f["packets"], f["decrypted"], f["icv_failed"], f["no_key"]) for f in doc["flows"]}
    assert got == {"0xa4000001": ("AH", 5, 5, 0, 0), "0xa4000002": ("AH", 4, 3, 1, 0),
                   "0xa4000003": ("AH", 2, 2, 0, 0), "0xa4000004": ("AH", 3, 3, 0, 0)}
    text = run("sas", str(AH_DIR / "ah-v4.pcap"), "-k", str(AH_DIR / "ah-v4.keys.json")).stdout
    assert "AH 0xa4000002: 4 pkts, 240 B, 3 verified" in text and "1 ICV failed" in text
    # the mode is read from what AH protects (next header 4: tunnel)
    modes = {c["flows"][0].split(":")[-1]: c["mode"] for c in doc["child_sas"]}
    assert modes["0xa4000003/AH"] == "tunnel" and modes["0xa4000004/AH"] == "transport"


def findings(cap: Path, keys: Path) -> list[dict]:
    return json.loads(run("findings", str(cap), "-k", str(keys), "--json").stdout)["findings"]


def test_finding_some_fail_is_corruption():
    fs = [f for f in findings(AH_DIR / "ah-v4.pcap", AH_DIR / "ah-v4.keys.json") if "ICV" in f["code"]]
    assert [(f["code"], f["severity"], f["frames"]) for f in fs] == [("AH-ICV-FAILED", "warning", [6])]
    assert "1 of 4 AH packets 198.18.0.2 -> 198.18.0.1 on SPI 0xa4000002" in fs[0]["title"]
    assert "corruption" in fs[0]["title"]


def test_finding_all_fail_wrong_key_names_nat_as_a_cause():
    fs = [f for f in findings(AH_DIR / "ah-v4.pcap", AH_DIR / "ah-wrong.keys.json") if "ICV" in f["code"]]
    assert [(f["code"], f["severity"]) for f in fs] == [("AH-ICV-FAILED", "error")]
    assert "5 of 5 AH packets" in fs[0]["title"] and "wrong key or algorithm, or a NAT" in fs[0]["title"]
    assert "RFC 4302 §3.3.3" in fs[0]["explanation"] and "Nothing in the capture shows a NAT" in fs[0]["explanation"]


@pytest.mark.parametrize("spi, integ, field, makes", [
    (0xa4000003, "AUTH_HMAC_SHA1_96", 32, "AUTH_HMAC_SHA1_96 makes 12"),  # field longer than 12 + padding
    (0xa4000001, "AUTH_HMAC_SHA2_512_256", 12, "AUTH_HMAC_SHA2_512_256 makes 32"),  # field too short
])
def test_icv_field_length_names_the_wrong_algorithm(tmp_path, spi, integ, field, makes):
    """A key file entry with the right key but another integrity algorithm: the ICV field's length
    (ICV plus alignment padding only, RFC 4302 §2.6) proves the algorithm wrong, so the finding and
    the rows say that, not "wrong key or a NAT"."""
    doc = json.loads((AH_DIR / "ah-v4.keys.json").read_text())
    for e in doc["esp"]:
        if int(e["spi"], 16) == spi:
            e["integ"] = integ
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps(doc))
    want = f"the icv field is {field} bytes, {makes.lower()}"
    (f,) = [f for f in findings(AH_DIR / "ah-v4.pcap", keys) if f["code"] == "AH-ICV-FAILED" and f"{spi:#010x}" in f["title"]]
    assert f["severity"] == "error" and "the key file names another integrity algorithm" in f["title"], f
    assert want in f["explanation"].lower()
    failed = [r for r in rows(AH_DIR / "ah-v4.pcap", keys).values() if r.get("spi") == f"{spi:#010x}"]
    assert failed and all(want in r["info"].lower() for r in failed), failed
    from ipsecscope.session import Session
    from ipsecscope.tui.widgets.sa_detail import flow_notes

    (flow,) = [f for f in Session.from_files([AH_DIR / "ah-v4.pcap"], [keys]).table.flows.values() if f.spi == spi]
    assert want in " ".join(str(t) for t in flow_notes([flow])).lower()  # the TUI's SA detail


def test_nat_proven_by_the_logged_address():
    """Keys logged behind a NAT (10.0.0.1) on packets whose source the NAT rewrote: every ICV fails
    on the wire and verifies with 10.0.0.1 put back, which proves the NAT (RFC 4302 §3.3.3)."""
    got = rows(AH_DIR / "ah-nat.pcap", AH_DIR / "ah-nat.keys.json")
    assert [r["status"] for r in got.values()] == ["icv-bad"] * 3
    assert all("ICV verifies with 10.0.0.1: NAT" in r["info"] for r in got.values())
    fs = [f for f in findings(AH_DIR / "ah-nat.pcap", AH_DIR / "ah-nat.keys.json") if f["code"] == "AH-ICV-FAILED"]
    assert len(fs) == 1 and fs[0]["severity"] == "error"
    assert "a NAT rewrote 10.0.0.1 to 198.18.0.1" in fs[0]["title"] and "3 of 3" in fs[0]["title"]
    text = run("sas", str(AH_DIR / "ah-nat.pcap"), "-k", str(AH_DIR / "ah-nat.keys.json")).stdout
    assert "ICV verifies with 10.0.0.1: NAT" in text


def test_fragmented_ah_is_named_ah_in_the_path_mtu_finding():
    """Outer IP fragments of AH packets are the same path-MTU trouble as ESP's, but the packets are
    AH (IP protocol 51): the finding must not call them ESP."""
    fs = [f for f in findings(AH_DIR / "ah-frag.pcap", AH_DIR / "ah-frag.keys.json") if f["code"] == "ESP-PATH-MTU"]
    assert len(fs) == 2  # the IPv4 and the IPv6 SA
    for f in fs:
        assert f["title"].startswith("1 AH packet arrived as outer IP fragments"), f["title"]
        assert "before AH can be checked" in f["explanation"] and "ESP" not in f["explanation"]


def test_without_ah_keys_nothing_is_checked():
    """No AH key: AH rows as before (no status), no verifier built; ESP keys alone build none either."""
    from ipsecscope.session import Session

    plain = rows(AH_DIR / "ah-v4.pcap")
    assert {r["status"] for r in plain.values()} == {""}
    s = Session.from_files([str(AH_DIR / "ah-v4.pcap")], [str(ROOT / "samples" / "synthetic" / "aead.keys.json")])
    assert s.stats.ah == 14 and s.ah_verifier is None and s.stats.ah_verified == 0
    s = Session.from_files([str(AH_DIR / "ah-v4.pcap")], [str(AH_DIR / "ah-v4.keys.json")])
    assert s.ah_verifier is not None and (s.stats.ah_verified, s.stats.ah_icv_failed) == (13, 1)


def test_cut_by_the_snap_length_is_not_checked(tmp_path):
    """A frame cut short holds less than the ICV covers: not checked (never "icv-bad"), and why."""
    cut = tmp_path / "cut.pcap"
    with PcapWriter(str(cut), linktype=1, snaplen=64) as w:
        for p in rdpcap(str(AH_DIR / "ah-v4.pcap"))[:2]:
            short = Ether(bytes(p)[:64])
            short.time, short.wirelen = p.time, len(p)
            w.write(short)
    got = rows(cut, AH_DIR / "ah-v4.keys.json")
    assert [r["status"] for r in got.values()] == ["unverified"] * 2
    assert "ICV not checked: the capture holds" in got[1]["info"]


@needs_tshark
def test_an_ah_header_cut_by_the_snap_length_is_its_sas_packet(tmp_path):
    """The snap length can end inside AH's ICV (50 bytes: Ethernet, IPv4, AH's 12 fixed octets and
    4 of the ICV; -s 64 does the same to IPv6 AH with a 16-byte ICV). Each packet was "malformed:
    AH header says 24 bytes, only 16 present", no AH flow at all; tshark reads SPI and sequence
    number (RFC 4302 §2: the fixed part is whole) and so do we now: the packet counts on its flow,
    its ICV unverifiable, never failed. A frame cut inside the fixed part stays malformed."""
    cut = tmp_path / "cut.pcap"
    subprocess.run(["editcap", "-s", "50", str(AH_DIR / "ah-v4.pcap"), str(cut)], check=True, timeout=60)
    out = subprocess.run(["tshark", "-n", "-r", str(cut), "-T", "fields", "-e", "frame.number", "-e", "ah.spi",
                          "-e", "ah.sequence"], capture_output=True, text=True, timeout=60, check=True).stdout
    theirs = {int(f): (spi, int(seq)) for f, spi, seq in (ln.split("\t") for ln in out.splitlines()) if spi}
    got = rows(cut, AH_DIR / "ah-v4.keys.json")
    assert len(theirs) == 13 and 9 not in theirs  # frame 9's IPv4 options push AH past the cut
    assert {f: (r["spi"], r["seq"]) for f, r in got.items() if r["kind"] == "AH"} == theirs
    assert {r["status"] for f, r in got.items() if f in theirs} == {"unverified"}
    assert got[9]["kind"] == "MALFORMED" and "AH header truncated" in got[9]["info"]
    flows = {x["spi"]: (x["packets"], x["icv_failed"]) for x in json.loads(
        run("sas", str(cut), "-k", str(AH_DIR / "ah-v4.keys.json"), "--json").stdout)["flows"]}
    assert flows == {"0xa4000001": (4, 0), "0xa4000002": (4, 0), "0xa4000003": (2, 0), "0xa4000004": (3, 0)}


def test_keys_never_in_output():
    keys = AH_DIR / "ah-v4.keys.json"
    secrets = [e["auth_key"] for e in key_entries(keys).values()]
    cap = str(AH_DIR / "ah-v4.pcap")
    out = "".join(run(*cmd, cap, "-k", str(keys)).stdout for cmd in (("packets", "--json"), ("sas", "--json"),
                                                                     ("findings", "--json"), ("sas",)))
    assert not any(s in out.lower() for s in secrets)
    from ipsecscope.crypto.ah import AhResult
    from ipsecscope.keys import load_keys

    k = load_keys([keys]).esp[0]
    assert k.auth_key.hex() not in repr(AhResult("ok", keys=k, inner=b"x"))


def test_aes_xcbc_mac_96_rfc3566_vectors():
    """AES-XCBC-MAC-96 (RFC 3566 §4.6 test cases 1-3; scapy has no XCBC for AH) through AH's MAC."""
    from ipsecscope.crypto.ah import mac_for
    from ipsecscope.model.keys import EspSaKeys

    k = EspSaKeys(spi=1, encr=11, enc_key=b"", integ=5, auth_key=bytes(range(16)), protocol=2)
    mac, icv = mac_for(k)
    assert icv == 12
    for msg, want in ((b"", "75f0251d528ac01c4573dfd5"), (bytes(range(3)), "5b376580ae2f19afe7219cee"),
                      (bytes(range(16)), "d2a246fa349b68a79998a439")):
        assert next(mac((msg,), (None,))).hex() == want


def test_aes_cmac_96_rfc4494_vector():
    """AES-CMAC-96 (RFC 4494 §4, example 2: 16-byte message) through AH's MAC."""
    from ipsecscope.crypto.ah import mac_for
    from ipsecscope.model.keys import EspSaKeys

    k = EspSaKeys(spi=1, encr=11, enc_key=b"", integ=8, auth_key=bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c"),
                  protocol=2)
    mac, _icv = mac_for(k)
    assert next(mac((bytes.fromhex("6bc1bee22e409f96e93d7e117393172a"),), (None,))).hex() == "070a16b46b4d4144f79bdd9d"


def test_any_bytes_in_front_of_ah_give_an_answer_or_a_reason():
    """covered() reads what a frame holds, never past it, and never raises (bad input is a reason)."""
    from hypothesis import given
    from hypothesis import strategies as st

    from ipsecscope.crypto.ah import covered

    ah = bytes([59, 4]) + bytes(22)

    @given(st.binary(min_size=40, max_size=200), st.booleans())
    def check(data, frag):
        for version, head in ((4, bytes([0x40 | data[0] & 15]) + data[1:9] + b"\x33" + data[10:]),
                              (6, b"\x60" + data[1:])):
            got = covered(head, 0, version, ah, frag)
            assert type(got) is str or (isinstance(got[0], bytearray) and got[1] in (8, 12))
    check()


def test_one_integrity_table_for_esp_and_ah():
    """crypto.suites.integ_suite serves both protocols: AH adds AES-CMAC-96 and refuses NONE (AH is
    its ICV, RFC 4302 §2.6) with a message that says AH; ESP keeps NONE and never opens CMAC."""
    from ipsecscope.crypto.ah import AhVerifier
    from ipsecscope.crypto.suites import integ_suite
    from ipsecscope.decode.demux import Decoder
    from ipsecscope.errors import UnknownAlgorithmError
    from ipsecscope.keys import KeyStore
    from ipsecscope.model.iana import IntegTransform, ProtocolId
    from ipsecscope.model.keys import EspSaKeys

    assert integ_suite(IntegTransform.AUTH_AES_CMAC_96, ProtocolId.AH).kind == "cmac"
    assert integ_suite(IntegTransform.NONE).kind == "none"
    for integ, protocol, said in ((IntegTransform.NONE, ProtocolId.AH, "AH integrity NONE"),
                                  (IntegTransform.AUTH_AES_CMAC_96, ProtocolId.ESP, "ESP integrity AUTH_AES_CMAC_96")):
        with pytest.raises(UnknownAlgorithmError, match=said):
            integ_suite(integ, protocol)
    # an AH key naming no integrity: its packets are "unsupported", with the AH message
    store = KeyStore()
    store.add_esp(EspSaKeys(spi=0xA4000001, encr=11, enc_key=b"", integ=0, auth_key=b"", src="198.18.0.1",
                            dst="198.18.0.2", protocol=ProtocolId.AH))
    raw = rdpcap_raw(AH_DIR / "ah-v4.pcap", 1)
    pkt = Decoder().decode_all(raw)[0]
    res = AhVerifier(store).verify(pkt, raw.data, 14)  # (Ethernet: the IP header at byte 14)
    assert res.status == "unsupported" and "AH integrity NONE is not implemented" in res.reason


def rdpcap_raw(cap: Path, n: int):
    """Frame ``n`` of ``cap`` as the capture reader gives it."""
    from ipsecscope.capture import open_capture

    with open_capture(cap) as r:
        return next(f for f in r if f.index == n)


# ---- the payload AH protects, in the row's Info ----------------------------------------------------

AH_INFO_CAPTURES = [*(AH_DIR / n for n in ("ah-v4.pcap", "ah-v6.pcap", "ah-nat.pcap", "ah-frag.pcap",
                                           "ah-esn-wrap.pcap", "ah-quoted.pcap")),
                    *sorted((DATA / "ah-tunnels").glob("*.pcap"))]


def _tshark_info(cap: Path) -> dict[int, tuple[str, str, tuple[str, str]]]:
    """frame -> (Protocol, Info with runs of spaces as one, innermost IPv4 and IPv6 sources), tshark's."""
    out = subprocess.run(["tshark", "-n", "-r", str(cap), "-T", "fields", "-E", "occurrence=l", "-e", "frame.number",
                          "-e", "_ws.col.Protocol", "-e", "_ws.col.Info", "-e", "ip.src", "-e", "ipv6.src"],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    rows = {}
    for line in out.splitlines():
        n, proto, info, s4, s6 = line.split("\t")
        rows[int(n)] = (proto, " ".join(info.split()), (s4, s6))
    return rows


@needs_tshark
@pytest.mark.parametrize("cap", AH_INFO_CAPTURES, ids=lambda p: p.name)
def test_ah_rows_show_the_packet_they_protect_as_tshark_does(cap):
    """AH does not encrypt (RFC 4302 §2.2: the payload follows (Payload Len + 2) * 4 octets), so an
    AH row shows its payload's summary after "▸", as an ESP row shows its decrypted packet: in
    transport mode the transport header (ICMP echo, UDP ports), in tunnel mode the inner IP packet
    with its addresses. Its protocol and details are the ones tshark's Protocol and Info columns
    show for the frame (tshark names the top layer)."""
    ts = _tshark_info(cap)
    checked = 0
    for n, r in rows(cap).items():
        if r["kind"] != "AH":
            continue
        head, sep, inner = r["info"].partition(" ▸ ")
        assert sep, f"frame {n}: {r['info']}"
        proto, info, inner_src = ts[n]
        words = inner.split()
        assert words[0] == proto, (n, inner, proto)
        if len(words) > 3 and words[2] == "→" and not words[1].isdigit():  # tunnel mode: inner IP source
            assert words[1] == inner_src[":" in words[1]], (n, inner, inner_src)
            words = words[4:]
        else:
            words = words[1:]
        detail = " ".join(words).split(", hlim=")[0].split(", ttl=")[0].split(" —")[0]
        if proto != "DNS":  # (tshark names a DNS opcode, ipsecscope's summary does not: left as is)
            assert info.startswith(detail), (n, detail, info)
        checked += 1
    assert checked
