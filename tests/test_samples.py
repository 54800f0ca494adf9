"""The committed samples (real strongSwan peers, samples/make_samples.sh) and a fresh run.

* Committed samples: tshark, given only the key tables we extracted from the charon logs,
  decrypts every IKE SK payload (integrity checksum correct) and every ESP packet (ICV good);
  without them it decrypts nothing. That proves the extraction (SPIs, directions, keys) right.
* Each sample shows what its scenario is about (the facts samples/README.md promises).
* The extractor gets the same keys from either peer's log alone.
* A fresh pair of peers in namespaces produces IKE_SA_INIT/IKE_AUTH and UDP-4500 ESP that
  decrypts with keys extracted from that run (root + strongSwan; marked netns).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, SAMPLES, needs_tshark

sys.path.insert(0, str(SAMPLES / "lib"))
import charon_keys  # noqa: E402
import truth  # noqa: E402

SAMPLE_NAMES = ["healthy-gcm", "cbc-sha2-pfs", "proposal-mismatch", "ike-proposal-mismatch",
                "ts-mismatch", "psk-mismatch", "dh-retry", "dead-peer", "ikev1-dead-peer",
                "nat-napt", "mtu-small-link", "esp-oneway-drop", "peer-restart", "redirect",
                "ike-frag-cert", "ike-frag-untrusted", "path-impairments", "nat-rebind",
                "esp-rejected", "ikev1-nat-rebind"]
NO_IKE_SA = {"ike-proposal-mismatch"}  # fails in IKE_SA_INIT: no keys, nothing encrypted
IKEV1 = {"ikev1-dead-peer", "ikev1-nat-rebind"}  # no SK payloads: encrypted IKEv1 messages, keys in ikev1_decryption_table
SK = "46"  # IKEv2 Encrypted and Authenticated payload
NOTIFY_CODES = {"NO_PROPOSAL_CHOSEN": "14", "TS_UNACCEPTABLE": "38",
                "AUTHENTICATION_FAILED": "24", "INVALID_KE_PAYLOAD": "17"}
EXCH = {34: "IKE_SA_INIT", 35: "IKE_AUTH", 36: "CREATE_CHILD_SA", 37: "INFORMATIONAL"}

# Peers whose logs name a private address the capture never shows (the NAPT rewrote it).
NATED = {"nat-napt", "nat-rebind", "ikev1-nat-rebind"}
# Inner packets bigger than the TUN MTU travel as inner IP fragments: not every ESP packet holds
# a whole ICMP message (tshark reassembles the inner fragments at the last one).
INNER_FRAGMENTS = {"mtu-small-link"}

FIELDS = ["frame.number", "ip.src", "isakmp.exchangetype", "isakmp.messageid", "isakmp.flags",
          "isakmp.ispi", "isakmp.rspi", "isakmp.typepayload", "isakmp.enc.decrypted",
          "isakmp.ikev2.integrity_checksum", "isakmp.notify.msgtype",
          "isakmp.key_exchange.dh_group", "isakmp.delete.spi", "esp.spi", "esp.icv_good",
          "icmp.type", "udp.dstport", "isakmp.hash", "udp.srcport", "isakmp.notify.data",
          "udpencap.nat_keepalive", "ip.dst", "icmp.mtu", "ip.len", "ip.flags.mf",
          "ip.frag_offset", "isakmp.frag.number", "isakmp.frag.total", "x509sat.printableString",
          "esp.sequence", "ip.proto"]


def tshark(capture: Path, keys: Path | None, tmp: Path) -> list[dict[str, list[str]]]:
    """One dict per frame: field -> all occurrences (empty list when absent)."""
    profile = tmp / ("keys" if keys else "nokeys")
    profile.mkdir(exist_ok=True)
    if keys:
        for f in ("esp_sa", "ikev2_decryption_table", "ikev1_decryption_table"):
            if (keys / f).exists():
                shutil.copyfile(keys / f, profile / f)
    env = {**os.environ, "WIRESHARK_CONFIG_DIR": str(profile)}
    cmd = ["tshark", "-n", "-r", str(capture), "-o", "esp.enable_encryption_decode:TRUE",
           "-o", "esp.enable_authentication_check:TRUE", "-T", "fields",
           "-E", "separator=\t", "-E", "occurrence=a", "-E", "aggregator=,"]
    for f in FIELDS:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60, check=True)
    rows = []
    for line in out.stdout.splitlines():
        cols = line.split("\t")
        rows.append({f: [v for v in c.split(",") if v] for f, c in zip(FIELDS, cols, strict=True)})
    return rows


def ike(rows: list[dict[str, list[str]]]) -> list[dict[str, list[str]]]:
    return [r for r in rows if r["isakmp.exchangetype"]]


def icmp_error(r: dict[str, list[str]]) -> bool:
    """An ICMP message on the outside (outer protocol 1): here, errors quoting an IPsec packet."""
    return r["ip.proto"][:1] == ["1"]


def esp(rows: list[dict[str, list[str]]]) -> list[dict[str, list[str]]]:
    """ESP packets (not an ICMP error quoting the start of one: its ICV is cut off; the outer
    protocol of such a frame is ICMP, 1)."""
    return [r for r in rows if r["esp.spi"] and not r["icmp.mtu"] and r["ip.proto"][:1] != ["1"]]


def _bridge_log(name: str) -> list[dict]:
    f = SAMPLES / name / "bridge.log"
    return [json.loads(ln) for ln in f.read_text().splitlines() if not ln.startswith("#")] if f.exists() else []


def _seq(r: dict[str, list[str]]) -> int:
    return int(r["esp.sequence"][0])


def is_response(r: dict[str, list[str]]) -> bool:
    return bool(int(r["isakmp.flags"][0], 16) & 0x20)


def exchanges(rows: list[dict[str, list[str]]]) -> list[str]:
    return [EXCH[int(r["isakmp.exchangetype"][0])] + (" resp" if is_response(r) else " req")
            for r in ike(rows)]


@pytest.fixture(scope="module")
def decoded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[list, list]]:
    """tshark output for each committed sample, (with keys, without keys)."""
    out = {}
    for name in SAMPLE_NAMES:
        tmp = tmp_path_factory.mktemp(name)
        cap = SAMPLES / name / "capture.pcapng"
        out[name] = (tshark(cap, SAMPLES / name / "keys", tmp), tshark(cap, None, tmp))
    return out


def test_sample_files_present():
    for name in SAMPLE_NAMES:
        d = SAMPLES / name
        for f in ("capture.pcapng", "charon-left.log", "charon-right.log", "keys/esp_sa",
                  "keys/ikev2_decryption_table"):
            assert (d / f).is_file(), f"{name}/{f} missing; run samples/make_samples.sh"
        assert (d / "capture.pcapng").stat().st_size < 64 * 1024, "samples must stay small"
        assert (d / "capture.pcapng").read_bytes()[:4] == b"\x0a\x0d\x0d\x0a", "pcapng SHB"


@needs_tshark
@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_sample_decrypts_with_extracted_keys(name, decoded):
    with_keys, no_keys = decoded[name]
    sk = [r for r in ike(with_keys) if SK in r["isakmp.typepayload"]]
    assert bool(sk) == (name not in NO_IKE_SA | IKEV1), "every other scenario reaches IKE_AUTH"
    if name in IKEV1:  # every encrypted IKEv1 message (flags bit E) decrypts: its HASH payload is read
        v1 = [r for r in ike(with_keys) if int(r["isakmp.flags"][0], 16) & 0x01]
        assert v1 and all(r["isakmp.hash"] for r in v1)
        assert not any(r["isakmp.hash"] for r in ike(no_keys) if int(r["isakmp.flags"][0], 16) & 0x01)
    for r in sk:
        frame = r["frame.number"][0]
        assert r["isakmp.enc.decrypted"], f"frame {frame}: SK payload not decrypted"
        assert not r["isakmp.ikev2.integrity_checksum"], f"frame {frame}: ICD incorrect"
    corrupted = {e["seq"] for e in _bridge_log(name) if e["action"] == "corrupt"}
    for r in esp(with_keys):
        frame = r["frame.number"][0]
        if corrupted and r["esp.spi"] and _seq(r) in corrupted:
            continue  # corrupted on purpose by the bridge (path-impairments): checked below
        assert r["esp.icv_good"] == ["1"], f"frame {frame}: ESP ICV not good"
        if name in INNER_FRAGMENTS:
            assert len(r["ip.src"]) >= 2, f"frame {frame}: no inner IP header after decryption"
        else:
            assert r["icmp.type"], f"frame {frame}: no ICMP inside the decrypted ESP"
    # Control: the same capture without keys decrypts nothing.
    assert not any(r["isakmp.enc.decrypted"] for r in no_keys)
    assert not any(r["icmp.type"] for r in esp(no_keys))
    # All ESP is UDP-encapsulated (kernel-libipsec, RFC 3948), all IKE after INIT on 4500.
    assert all(r["udp.dstport"] for r in esp(with_keys))


@needs_tshark
def test_healthy_gcm_story(decoded):
    rows, _ = decoded["healthy-gcm"]
    assert exchanges(rows) == [
        "IKE_SA_INIT req", "IKE_SA_INIT resp", "IKE_AUTH req", "IKE_AUTH resp",
        "CREATE_CHILD_SA req", "CREATE_CHILD_SA resp",      # CHILD_SA rekey (with KE: PFS)
        "INFORMATIONAL req", "INFORMATIONAL resp",          # delete of the old CHILD_SA
        "CREATE_CHILD_SA req", "CREATE_CHILD_SA resp",      # IKE_SA rekey
        "INFORMATIONAL req", "INFORMATIONAL resp",          # delete of the old IKE_SA
        "INFORMATIONAL req", "INFORMATIONAL resp",          # swanctl --terminate --child
        "INFORMATIONAL req", "INFORMATIONAL resp"]          # swanctl --terminate --ike
    ike_rows = ike(rows)
    assert len({(r["isakmp.ispi"][0], r["isakmp.rspi"][0]) for r in ike_rows[1:]}) == 2
    assert "16393" in ike_rows[4]["isakmp.notify.msgtype"]  # REKEY_SA
    assert ike_rows[4]["isakmp.key_exchange.dh_group"] == ["19"]
    spis = [r["esp.spi"][0] for r in esp(rows)]
    assert len(spis) == 18 and len(set(spis)) == 4
    # The CHILD delete names the inbound SPI of the rekeyed pair.
    assert {s.removeprefix("0x") for s in spis[-2:]} == {
        s for r in ike_rows[12:14] for s in r["isakmp.delete.spi"]}


@needs_tshark
def test_cbc_sha2_pfs_story(decoded):
    rows, _ = decoded["cbc-sha2-pfs"]
    ike_rows = ike(rows)
    kinds = exchanges(rows)
    assert kinds.count("CREATE_CHILD_SA req") == 2   # second CHILD_SA, then a rekey
    for r in ike_rows:
        if EXCH[int(r["isakmp.exchangetype"][0])] == "CREATE_CHILD_SA":
            assert r["isakmp.key_exchange.dh_group"] == ["14"], "PFS: MODP-2048 KE"
    assert len({r["esp.spi"][0] for r in esp(rows)}) == 6  # 2 children + 1 rekey, 2 SPIs each


@needs_tshark
@pytest.mark.parametrize(("name", "notify"), [("proposal-mismatch", "14"),  # NO_PROPOSAL_CHOSEN
                                              ("ts-mismatch", "38"),        # TS_UNACCEPTABLE
                                              ("psk-mismatch", "24"),       # AUTHENTICATION_FAILED
                                              ("ike-frag-untrusted", "24")])
def test_failure_notify_is_inside_ike_auth_response(name, notify, decoded):
    with_keys, no_keys = decoded[name]
    auth_resp = [r for r in ike(with_keys) if r["isakmp.exchangetype"] == ["35"] and is_response(r)]
    assert len(auth_resp) == 1 and notify in auth_resp[0]["isakmp.notify.msgtype"]
    assert not esp(with_keys)
    # Only visible with the keys: it is inside the SK payload.
    assert not any(notify in r["isakmp.notify.msgtype"] for r in no_keys)


@needs_tshark
def test_ike_proposal_mismatch_story(decoded):
    rows, _ = decoded["ike-proposal-mismatch"]
    assert exchanges(rows) == ["IKE_SA_INIT req", "IKE_SA_INIT resp"]
    resp = ike(rows)[1]
    assert resp["isakmp.notify.msgtype"] == ["14"] and resp["isakmp.rspi"] == ["0" * 16]
    assert ike(rows)[0]["isakmp.key_exchange.dh_group"] == ["14"]


@needs_tshark
def test_dh_retry_story(decoded):
    rows, _ = decoded["dh-retry"]
    init = ike(rows)[:4]
    assert exchanges(rows)[:4] == ["IKE_SA_INIT req", "IKE_SA_INIT resp",
                                   "IKE_SA_INIT req", "IKE_SA_INIT resp"]
    assert init[0]["isakmp.key_exchange.dh_group"] == ["19"]
    assert init[1]["isakmp.notify.msgtype"] == ["17"]  # INVALID_KE_PAYLOAD (cleartext)
    assert init[2]["isakmp.key_exchange.dh_group"] == ["14"]
    assert esp(rows), "the retried IKE SA carries traffic"


@needs_tshark
def test_dead_peer_story(decoded):
    rows, _ = decoded["dead-peer"]
    ike_rows = ike(rows)
    tail = ike_rows[4:]
    assert len(tail) == 4, "one DPD request and three retransmissions"
    assert all(not is_response(r) and r["isakmp.messageid"] == tail[0]["isakmp.messageid"]
               and r["isakmp.typepayload"] == [SK] for r in tail)
    # After the crash only the left side sends anything.
    first_dpd = int(tail[0]["frame.number"][0])
    late = [r for r in rows if int(r["frame.number"][0]) > first_dpd - 2]
    assert {r["ip.src"][0] for r in late} == {"198.18.0.1"}


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_both_peers_logs_give_the_same_keys(name):
    left = charon_keys.parse_log((SAMPLES / name / "charon-left.log").read_text())
    right = charon_keys.parse_log((SAMPLES / name / "charon-right.log").read_text())
    assert sorted(k.row() for k in left[0]) == sorted(k.row() for k in right[0])
    if name in NATED:
        # Each peer logs the addresses it knows: left its private one, right the NAPT's. The
        # SPIs and keys are the same (the NAPT rewrote addresses and ports, nothing else).
        def esp_keys(rows):
            return sorted((e.spi, e.encr, e.ekey, e.akey) for e in rows)
        assert esp_keys(left[1]) == esp_keys(right[1])
        assert {e.src for e in left[1]} | {e.dst for e in left[1]} == {"10.0.0.1", "198.18.0.2"}
        assert {e.src for e in right[1]} | {e.dst for e in right[1]} == {"198.18.0.1", "198.18.0.2"}
        return
    assert sorted(e.row() for e in left[1]) == sorted(e.row() for e in right[1])
    # (samples/lib/charon_keys.py reads IKEv2 keys only; IKEv1 phase-1 keys: test_keys_formats.py)
    assert bool(left[0]) == (name not in NO_IKE_SA | IKEV1), "IKE SAs that got past IKE_SA_INIT"


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_committed_tables_match_the_logs(name, tmp_path):
    d = SAMPLES / name
    charon_keys.write_tables(tmp_path, [d / "charon-left.log", d / "charon-right.log"])
    for f in ("esp_sa", "ikev2_decryption_table"):
        assert (tmp_path / f).read_text() == (d / "keys" / f).read_text()


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_ipsecscope_reads_the_same_keys_from_logs_and_tables(name):
    """ipsecscope.keys.load_keys on the raw charon logs agrees with the tables tshark accepted."""
    from ipsecscope.errors import KeyFileError
    from ipsecscope.keys import load_keys

    d = SAMPLES / name
    logs = [d / "charon-left.log", d / "charon-right.log"]
    if name in NO_IKE_SA:
        # Nothing got keys: an empty store or a typed KeyFileError saying so are both right.
        try:
            assert len(load_keys(logs)) == 0
        except KeyFileError as e:
            assert "key" in str(e)
        return
    from_logs = load_keys(logs)
    # A table of comments only (no SA of that kind in the scenario) is not a key file.
    tables = [d / "keys" / f for f in ("esp_sa", "ikev2_decryption_table")
              if any(not ln.startswith("#") for ln in (d / "keys" / f).read_text().splitlines())]
    from_tables = load_keys(tables)

    def esp_set(store):
        return {(k.src, k.dst, k.spi, k.encr, k.enc_key, k.integ, k.auth_key) for k in store.esp}

    def ike_set(store):
        return {(k.spi_i, k.spi_r, k.encr, k.sk_ei, k.sk_er, k.integ, k.sk_ai, k.sk_ar)
                for k in store.ike}

    assert esp_set(from_logs) == esp_set(from_tables)
    assert ike_set(from_logs) == ike_set(from_tables)


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_truth_json_is_current(name):
    """truth.json is what samples/lib/truth.py reads from the committed logs."""
    committed = json.loads((SAMPLES / name / "truth.json").read_text())
    assert committed == json.loads(json.dumps(truth.build(SAMPLES / name)))
    assert committed["expected"]["summary"]


@needs_tshark
@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_truth_agrees_with_tshark(name, decoded):
    """Two independent oracles: strongSwan's logs (truth.json) and tshark on the capture."""
    t = json.loads((SAMPLES / name / "truth.json").read_text())
    rows, _ = decoded[name]
    # IKE SAs that got keys: the SPI pairs of encrypted messages (plus a lone IKE_SA_INIT
    # response when IKE_AUTH failed before any SK payload was sent back: not the case here).
    seen_ike = {(r["isakmp.ispi"][0], r["isakmp.rspi"][0]) for r in ike(rows)
                if SK in r["isakmp.typepayload"]}
    assert {(k["spi_i"], k["spi_r"]) for k in t["ike_sas"]} == seen_ike
    seen_esp = {r["esp.spi"][0] for r in esp(rows)}
    logged = {c[k] for c in t["child_sas"] for k in ("spi_in", "spi_out")}
    # Every SPI carrying traffic was installed by strongSwan; a CHILD_SA may carry none.
    assert seen_esp <= logged
    if name != "dead-peer":
        assert seen_esp == logged
    exp = t["expected"]
    if "esp_packets" in exp:
        assert len(esp(rows)) == exp["esp_packets"]
        assert sum(r["esp.icv_good"] == ["1"] for r in esp(rows)) == exp["esp_decrypted"]
    for problem in exp["problems"]:
        if "notify" in problem:
            code = NOTIFY_CODES[problem["notify"]]
            assert any(code in r["isakmp.notify.msgtype"] for r in ike(rows))


def _netns_skip() -> str | None:
    sys.path.insert(0, str(ROOT / "tests"))
    from netns_peers import preflight

    return preflight() or (None if shutil.which("tshark") else "tshark not installed")


@pytest.mark.netns
@pytest.mark.skipif(_netns_skip() is not None, reason=str(_netns_skip()))
def test_fresh_pair_captures_and_decrypts(tmp_path):
    from netns_peers import StrongswanPair

    conf = SAMPLES / "conf" / "healthy-gcm"
    with StrongswanPair(tmp_path, (conf / "left.conf").read_text(),
                        (conf / "right.conf").read_text()) as pair:
        pair.initiate("net", ike="gcm")
        assert pair.ping(2) == 2
        assert "INSTALLED" in pair.list_sas("right")
        pair.terminate_ike("gcm")
    # Nothing left behind.
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert pair.tag not in listed and not pair.pids()

    charon_keys.write_tables(tmp_path / "fresh-keys", [pair.left.log, pair.right.log])
    rows = tshark(pair.capture_path, tmp_path / "fresh-keys", tmp_path)
    assert exchanges(rows)[:4] == ["IKE_SA_INIT req", "IKE_SA_INIT resp",
                                   "IKE_AUTH req", "IKE_AUTH resp"]
    esp_rows = esp(rows)
    assert len(esp_rows) == 4 and all(r["udp.dstport"] == ["4500"] for r in esp_rows)
    assert all(r["esp.icv_good"] == ["1"] and r["icmp.type"] for r in esp_rows)
    assert all(r["isakmp.enc.decrypted"] for r in ike(rows) if SK in r["isakmp.typepayload"])


@pytest.mark.netns
@pytest.mark.skipif(_netns_skip() is not None, reason=str(_netns_skip()))
def test_pair_tears_down_after_an_error(tmp_path):
    from netns_peers import StrongswanPair

    conf = SAMPLES / "conf" / "healthy-gcm"
    pair = StrongswanPair(tmp_path, (conf / "left.conf").read_text(),
                          (conf / "right.conf").read_text())
    with pytest.raises(RuntimeError, match="boom"), pair:
        assert pair.left.netns in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                                 text=True).stdout
        running = pair.pids()
        assert len(running) == 3  # two charons and tcpdump
        raise RuntimeError("boom")
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert pair.left.netns not in listed and pair.right.netns not in listed
    assert not pair.pids()
    assert all(not Path(f"/proc/{pid}").exists() for pid in running)
    # tcpdump was stopped cleanly: the capture is a pcap (µs, little-endian) with a header.
    assert pair.capture_path.read_bytes()[:4] == b"\xd4\xc3\xb2\xa1"


def _natd_hash(spi_i: str, spi_r: str, addr: str, port: int) -> str:
    """RFC 7296 §2.23: SHA-1(SPIi | SPIr | IP | port), as hex."""
    import hashlib
    import ipaddress

    data = (bytes.fromhex(spi_i) + bytes.fromhex(spi_r) + ipaddress.ip_address(addr).packed
            + port.to_bytes(2, "big"))
    return hashlib.sha1(data).hexdigest()  # noqa: S324 - the protocol's hash


@needs_tshark
def test_nat_napt_story(decoded):
    """The capture is on the NAPT's public side: the private 10.0.0.1 never shows, the
    translated ports are those the responder logged, NAT-D says the initiator is translated,
    and only the NATed peer sends keepalives."""
    rows, _ = decoded["nat-napt"]
    t = json.loads((SAMPLES / "nat-napt" / "truth.json").read_text())
    nat = t["expected"]["findings"][0]
    assert {a for r in rows for a in r["ip.src"][:1] + r["ip.dst"][:1]} == {"198.18.0.1", "198.18.0.2"}
    ike_rows = ike(rows)
    port500 = int(nat["translated"].split(":")[1])
    port4500 = int(nat["translated_natt"].split(":")[1])
    assert port500 not in (500, 4500) and port4500 not in (500, 4500, port500)
    init_req, init_resp = ike_rows[0], ike_rows[1]
    assert init_req["udp.srcport"] == [str(port500)] and init_req["udp.dstport"] == ["500"]
    # After IKE_SA_INIT everything (IKE and ESP) is on the translated 4500 mapping.
    for r in [*ike_rows[2:], *esp(rows)]:
        ports = {r["ip.src"][0]: r["udp.srcport"][0], r["ip.dst"][0]: r["udp.dstport"][0]}
        assert ports == {"198.18.0.1": str(port4500), "198.18.0.2": "4500"}
    spi_i, spi_r = init_resp["isakmp.ispi"][0], init_resp["isakmp.rspi"][0]
    notify = dict(zip(init_resp["isakmp.notify.msgtype"], init_resp["isakmp.notify.data"], strict=False))
    # The responder's NATD_D_IP hashes what it saw: the translated address, not 10.0.0.1:500.
    assert notify["16389"] == _natd_hash(spi_i, spi_r, "198.18.0.1", port500)
    req = dict(zip(init_req["isakmp.notify.msgtype"], init_req["isakmp.notify.data"], strict=False))
    # The initiator's NATD_D_IP matches the responder's real address: it is not translated
    # (its NATD_S_IP mismatch is strongSwan forcing encapsulation, see truth.json's note).
    assert req["16389"] == _natd_hash(spi_i, "0" * 16, "198.18.0.2", 500)
    assert notify["16388"] != _natd_hash(spi_i, spi_r, "198.18.0.2", 500)
    keepalives = [r for r in rows if r["udpencap.nat_keepalive"] or (
        r["udp.dstport"] == ["4500"] and not r["esp.spi"] and not r["isakmp.exchangetype"])]
    assert len(keepalives) == nat["keepalives"] >= 1
    assert {r["ip.src"][0] for r in keepalives} == {"198.18.0.1"}
    assert len({r["esp.spi"][0] for r in esp(rows)}) == t["expected"]["esp_spis"]


def _truth(name: str) -> dict:
    return json.loads((SAMPLES / name / "truth.json").read_text())


def _outer(r: dict[str, list[str]]) -> tuple[str, str]:
    return r["ip.src"][0], r["ip.dst"][0]


@needs_tshark
def test_mtu_small_link_story(decoded):
    """One oversized ESP packet, the router's ICMP fragmentation-needed quoting its SPI, then
    outer IP fragments both ways (the senders learnt or have the 1280-byte MTU)."""
    rows, _ = decoded["mtu-small-link"]
    f = _truth("mtu-small-link")["expected"]["findings"][0]
    icmp = [r for r in rows if r["icmp.mtu"]]
    assert len(icmp) == f["icmp_frames"]
    # The ICMP error's outer header comes from the router; the quoted packet is the ESP one.
    assert icmp[0]["ip.src"][0] == f["icmp_from"] and icmp[0]["icmp.mtu"] == [str(f["path_mtu"])]
    assert icmp[0]["esp.spi"] == [f["spi"]] and icmp[0]["udp.dstport"] == ["4500"]
    assert icmp[0]["ip.len"][1] == str(f["outer_size"])
    big = [r for r in esp(rows) if int(r["ip.len"][0]) > f["path_mtu"]]
    assert len(big) == f["dropped"] and int(big[0]["frame.number"][0]) < int(icmp[0]["frame.number"][0])
    first_frags = [r for r in rows if r["ip.flags.mf"][:1] == ["1"] and r["ip.frag_offset"][:1] == ["0"]
                   and not r["esp.spi"]]
    per_dir: dict[str, int] = {}
    for r in first_frags:
        per_dir[">".join(_outer(r))] = per_dir.get(">".join(_outer(r)), 0) + 1
    assert per_dir == f["fragmented"]
    # every fragment fits the link; the reassembled packets are ESP on the same SA
    assert all(int(r["ip.len"][0]) <= f["path_mtu"] for r in first_frags)


@needs_tshark
def test_esp_oneway_drop_story(decoded):
    """After the nft rule: ESP only from left (as many as the router counted dropped replies),
    every DPD request answered, no unanswered IKE request."""
    rows, _ = decoded["esp-oneway-drop"]
    t = _truth("esp-oneway-drop")
    f = t["expected"]["findings"][0]
    last_back = max(int(r["frame.number"][0]) for r in esp(rows) if r["esp.spi"] == [f["silent_spi"]])
    after = [r for r in esp(rows) if int(r["frame.number"][0]) > last_back]
    assert {r["esp.spi"][0] for r in after} == {f["still_sending_spi"]}
    assert len(after) == f["esp_after_stop"]
    path_log = (SAMPLES / "esp-oneway-drop" / "path.log").read_text()
    assert f"counter packets {f['dropped_on_path']} " in path_log
    late_ike = [r for r in ike(rows) if int(r["frame.number"][0]) > last_back]
    reqs = {r["isakmp.messageid"][0] for r in late_ike if not is_response(r)}
    resps = {r["isakmp.messageid"][0] for r in late_ike if is_response(r)}
    assert reqs == resps and len(reqs) >= f["dpd_requests_answered"]
    assert {_outer(r) for r in late_ike if is_response(r)} == {("198.18.0.2", "198.18.0.1")}


@needs_tshark
def test_peer_restart_story(decoded):
    """Stale ESP and a DPD retransmitted into silence on the old IKE SA, no INVALID_SPI /
    INVALID_IKE_SPI from strongSwan, then a fresh IKE SA answered at once; the responder's log
    has two daemon starts."""
    rows, _ = decoded["peer-restart"]
    f = _truth("peer-restart")["expected"]["findings"][0]
    old_i, old_r = f["stale_ike_sa"].split("_")
    new_i, new_r = f["recovered_ike_sa"].split("_")
    old = [r for r in ike(rows) if r["isakmp.ispi"] == [old_i] and r["isakmp.rspi"] == [old_r]]
    dpd = [r for r in old if r["isakmp.exchangetype"] == ["37"]]
    assert len(dpd) == f["unanswered_dpd_transmissions"] and not any(is_response(r) for r in dpd)
    assert len({r["isakmp.messageid"][0] for r in dpd}) == 1
    last_back = max(int(r["frame.number"][0]) for r in rows if r["ip.src"][:1] == ["198.18.0.2"]
                    and int(r["frame.number"][0]) < int(dpd[0]["frame.number"][0]))
    new_init = [r for r in ike(rows) if r["isakmp.ispi"] == [new_i]]
    stale = [r for r in esp(rows) if last_back < int(r["frame.number"][0]) < int(new_init[0]["frame.number"][0])]
    assert {r["esp.spi"][0] for r in stale} == set(f["stale_spis"]) and len(stale) == f["stale_esp_packets"]
    assert exchanges(new_init[:2]) == ["IKE_SA_INIT req", "IKE_SA_INIT resp"]
    assert not any(code in r["isakmp.notify.msgtype"] for r in ike(rows) for code in ("4", "11"))
    log = (SAMPLES / "peer-restart" / "charon-right.log").read_text()
    assert log.count("Starting IKE charon daemon") == f["peer_log"]["daemon_starts"] == 2
    assert log.count("IKE_SA checkout not successful") == f["peer_log"]["stale_ike_sa_checkouts_failed"]


@needs_tshark
def test_redirect_story(decoded):
    """REDIRECT (16407) inside the responder's INFORMATIONAL names 198.18.0.3 (RFC 5685 §8:
    GW ident type 1 = IPv4); the next IKE_SA_INIT goes there with REDIRECTED_FROM (16408)."""
    rows, no_keys = decoded["redirect"]
    f = _truth("redirect")["expected"]["findings"][0]
    red = [r for r in ike(rows) if "16407" in r["isakmp.notify.msgtype"]]
    assert len(red) == 1 and _outer(red[0]) == (f["from"], "198.18.0.1") and not is_response(red[0])
    data = dict(zip(red[0]["isakmp.notify.msgtype"], red[0]["isakmp.notify.data"], strict=False))
    assert data["16407"].startswith("0104c6120003")   # type IPv4, length 4, 198.18.0.3
    assert not any("16407" in r["isakmp.notify.msgtype"] for r in no_keys)  # it is encrypted
    new_i = f["new_ike_sa"].split("_")[0]
    init = [r for r in ike(rows) if r["isakmp.ispi"] == [new_i]][0]
    assert _outer(init) == ("198.18.0.1", f["to"]) and "16408" in init["isakmp.notify.msgtype"]
    assert {_outer(r) for r in esp(rows) if int(r["frame.number"][0]) > int(init["frame.number"][0])} == {
        ("198.18.0.1", "198.18.0.3"), ("198.18.0.3", "198.18.0.1")}


@needs_tshark
def test_esp_rejected_story(decoded):
    """After the nft reject rule on the responder: every ESP packet from left gets an ICMP port
    unreachable from 198.18.0.2 quoting its SPI and sequence number (as many as the rule counted),
    nothing comes back as ESP, and IKE on the same port still gets its answer."""
    rows, _ = decoded["esp-rejected"]
    f = _truth("esp-rejected")["expected"]["findings"][0]
    errs = [r for r in rows if icmp_error(r)]
    assert len(errs) == f["rejected_by_host"] == 4
    assert all(r["ip.src"][0] == f["icmp_from"] and r["icmp.type"][:1] == ["3"] for r in errs)
    by_frame = {r["frame.number"][0]: r for r in rows}
    for r in errs:  # each quotes the ESP packet just before it, SPI and sequence number
        sent = by_frame[str(int(r["frame.number"][0]) - 1)]
        assert r["esp.spi"] == sent["esp.spi"] == [f["refused_spi"]] and r["esp.sequence"] == sent["esp.sequence"]
    first = int(errs[0]["frame.number"][0])
    assert {_outer(r) for r in esp(rows) if int(r["frame.number"][0]) >= first} == {("198.18.0.1", "198.18.0.2")}
    late_ike = [r for r in ike(rows) if int(r["frame.number"][0]) > first]
    assert [is_response(r) for r in late_ike] == [False, True] and late_ike[1]["udp.srcport"] == ["4500"]
    log = (SAMPLES / "esp-rejected" / "path.log").read_text()
    assert f"counter packets {f['rejected_by_host']} " in log and "reject" in log


HEALTHY = [n for n in SAMPLE_NAMES
           if not _truth(n)["expected"]["problems"] and _truth(n)["expected"].get("max_severity", "info") == "info"]


@pytest.mark.parametrize("name", HEALTHY)
def test_healthy_samples_have_no_warnings(name):
    """A sample whose truth names no problem gets no warning or error from ipsecscope (with
    its keys): NAT, a redirect, rekeys and deletes are not faults."""
    r = subprocess.run([sys.executable, "-m", "ipsecscope", "findings", str(SAMPLES / name / "capture.pcapng"),
                        "-k", str(SAMPLES / name / "keys"), "--json"], capture_output=True, text=True,
                       timeout=120, cwd=ROOT)
    out = json.loads(r.stdout)
    assert out["counts"].get("error", 0) == 0 and out["counts"].get("warning", 0) == 0, out["findings"]


@needs_tshark
@pytest.mark.parametrize("name", ["ike-frag-cert", "ike-frag-untrusted"])
def test_ike_fragmentation_story(name, decoded):
    """IKE_AUTH travels in RFC 7383 fragments (SKF, payload 53) that tshark reassembles and
    decrypts with the sample keys; no IP fragmentation; the certificate is inside."""
    rows, no_keys = decoded[name]
    t = _truth(name)["expected"]
    skf = [r for r in ike(rows) if "53" in r["isakmp.typepayload"]]
    assert not any(r["ip.flags.mf"][:1] == ["1"] or r["ip.frag_offset"][:1] not in ([], ["0"]) for r in rows)
    req = [r for r in skf if not is_response(r)]
    resp = [r for r in skf if is_response(r)]
    exp = t["findings"][0] if name == "ike-frag-cert" else t["problems"][0]
    assert len(req) == exp["request_fragments"] and [r["isakmp.frag.number"] for r in req] == [["1"], ["2"]]
    assert all(r["isakmp.frag.total"] == ["2"] for r in req)
    # The last fragment carries the reassembled, decrypted message: IDi, CERT (37), AUTH (39).
    assert req[-1]["isakmp.enc.decrypted"] and {"37", "39"} <= set(req[-1]["isakmp.typepayload"])
    assert not any(r["isakmp.enc.decrypted"] for r in no_keys)
    issuers = set(req[-1]["x509sat.printableString"])
    if name == "ike-frag-cert":
        assert len(resp) == exp["response_fragments"] and "ipsecscope sample CA" in issuers
        assert len(esp(rows)) == t["esp_packets"]
    else:
        assert not resp and "a CA the responder does not trust" in issuers
        log = (SAMPLES / name / "charon-right.log").read_text()
        assert all(line in log for line in exp["responder_log"])


def test_path_impairments_bridge_log_matches_the_capture():
    """The bridge's log is the ground truth: the frames it says it sent are in the capture (taken
    after it, on wan) byte for byte, the duplicate twice in a row, the reordered packet after the
    one it names, and the corrupted one differs from what the sender encrypted only in the byte
    it flipped -- which is why tshark (below) finds exactly one bad ICV."""
    import hashlib

    from ipsecscope.capture import open_capture

    d = SAMPLES / "path-impairments"
    log = [json.loads(ln) for ln in (d / "bridge.log").read_text().splitlines() if not ln.startswith("#")]
    with open_capture(d / "capture.pcapng") as reader:
        frames = [bytes(raw.data) for raw in reader]
    digests = [hashlib.sha256(f).hexdigest()[:16] for f in frames]
    esp_seq = []  # (frame index, spi, seq) of left -> right ESP-in-UDP
    for i, f in enumerate(frames):
        if f[12:14] == b"\x08\x00" and f[23] == 17 and f[26:30] == bytes([198, 18, 0, 1]):
            udp = 14 + (f[14] & 0x0F) * 4
            if f[udp + 2:udp + 4] == (4500).to_bytes(2, "big") and f[udp + 8:udp + 12] != b"\0" * 4:
                esp_seq.append((i, "0x" + f[udp + 8:udp + 12].hex(), int.from_bytes(f[udp + 12:udp + 16], "big")))
    by_action = {e["action"]: e for e in log}
    assert set(by_action) == {"dup", "corrupt", "reorder"}
    for e in log:
        for h in e["sha256"]:
            assert h in digests, (e["action"], h)
    dup = by_action["dup"]
    copies = [i for i, spi, seq in esp_seq if (spi, seq) == (dup["spi"], dup["seq"])]
    assert len(copies) == 2 and digests[copies[0]] == digests[copies[1]] == dup["sha256"][0]
    assert [seq for _i, _s, seq in esp_seq].count(dup["seq"]) == 2
    seqs = [seq for _i, _s, seq in esp_seq]
    r = by_action["reorder"]
    assert seqs.index(r["seq"]) == seqs.index(r["sent_after_seq"]) + 1
    t = _truth("path-impairments")["expected"]["findings"]
    assert (t[0]["seq"], t[1]["seq"], t[2]["seq"]) == (dup["seq"], by_action["corrupt"]["seq"], r["seq"])


@needs_tshark
def test_path_impairments_story(decoded):
    """With the keys, tshark finds exactly one bad ICV (the corrupted packet's sequence number),
    the duplicate decrypts both times, and the reordered one decrypts too."""
    rows, _ = decoded["path-impairments"]
    f = _truth("path-impairments")["expected"]["findings"]
    mine = [r for r in esp(rows) if r["esp.spi"] == [f[0]["spi"]]]
    assert len(mine) == f[1]["of_packets_on_spi"]
    bad = [r for r in mine if r["esp.icv_good"] != ["1"]]
    assert len(bad) == 1 == f[1]["packets"]
    assert all(r["icmp.type"] for r in mine if r not in bad)
