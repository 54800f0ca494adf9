"""Peer configuration evidence from strongSwan charon logs (keys.charon -> KeyStore.peer_notes).

The samples' logs were written by real charon 5.9.8 peers; the SPIs and addresses a note is bound
to are checked against tshark's reading of the same capture, and the strongSwan keywords we make of
charon's "received proposals:" line against what our IKE decoder reads from the wire.
"""

from __future__ import annotations

import subprocess

import pytest
from conftest import SAMPLES, needs_tshark

from ipsecscope.errors import KeyFileError
from ipsecscope.keys import load_keys
from ipsecscope.keys.charon import swan_proposal_keyword
from ipsecscope.session import Session


def _notes(sample: str, side: str, kind: str | None = None):
    store = load_keys([SAMPLES / sample / f"charon-{side}.log"])
    return store, [n for n in store.peer_notes if kind is None or n.kind == kind]


def _tshark_first_spis(capture) -> tuple[str, str]:
    """(initiator address, SPIi hex) of the first IKE message, as tshark reads it."""
    out = subprocess.run(["tshark", "-n", "-r", str(capture), "-Y", "isakmp", "-T", "fields", "-e", "ip.src",
                          "-e", "isakmp.ispi"], capture_output=True, text=True, timeout=60, check=True).stdout
    src, spi = out.splitlines()[0].split("\t")
    return src, spi


def test_esp_proposal_mismatch_responder_log():
    _store, notes = _notes("proposal-mismatch", "right")
    conf = [n for n in notes if n.kind == "configured_proposals"]
    recv = [n for n in notes if n.kind == "received_proposals"]
    assert len(conf) == 1 and len(recv) == 1
    assert conf[0].text == "configured proposals: ESP:AES_GCM_16_256/NO_EXT_SEQ"
    assert conf[0].data["proto"] == "ESP" and conf[0].data["swan"] == ["aes256gcm16"]
    assert recv[0].data["swan"] == ["aes128-sha1"]
    # the responder wrote it: "IKE_SA mismatch[1] established between 198.18.0.2[...]...198.18.0.1[...]"
    assert (conf[0].local, conf[0].remote, conf[0].conn) == ("198.18.0.2", "198.18.0.1", "mismatch")
    assert conf[0].source.endswith("charon-right.log:177") and conf[0].ts == "2026-11-25T20:09:18.260"


@needs_tshark
@pytest.mark.parametrize("sample", ["proposal-mismatch", "ike-proposal-mismatch", "ts-mismatch", "psk-mismatch",
                                    "dh-retry"])
def test_notes_are_bound_to_the_ike_sa_and_peer_tshark_sees(sample):
    initiator, spi_i = _tshark_first_spis(SAMPLES / sample / "capture.pcapng")
    for side in ("left", "right"):
        _store, notes = _notes(sample, side)
        assert notes, f"{sample} {side}: a failure scenario leaves evidence in both logs"
        for n in notes:
            assert n.ike_sa is not None and n.ike_sa.split("_")[0] == spi_i
            assert (n.local == initiator) == (side == "left")
            assert {n.local, n.remote} == {"198.18.0.1", "198.18.0.2"}


def test_received_proposals_in_the_log_read_like_the_wire():
    """charon's "received proposals:" text, turned into keywords, equals what our decoder reads from
    the IKE messages themselves (the ESP one is encrypted: decrypted with the log's own keys)."""
    s = Session()
    s.add_key_files([SAMPLES / "proposal-mismatch" / "charon-left.log"])
    s.load(SAMPLES / "proposal-mismatch" / "capture.pcapng")
    (child,) = s.table.child_sas.values()
    _store, recv = _notes("proposal-mismatch", "right", "received_proposals")
    assert recv[0].data["swan"] == list(child.offered)

    s = Session()
    s.load(SAMPLES / "ike-proposal-mismatch" / "capture.pcapng")
    (sa,) = s.table.ike_sas.values()
    _store, recv = _notes("ike-proposal-mismatch", "right", "received_proposals")
    assert recv[0].data["swan"] == list(sa.offered) == ["aes128-sha1-modp2048"]


def test_log_without_keys_but_with_evidence_loads():
    store, notes = _notes("ike-proposal-mismatch", "right")
    assert len(store) == 0  # no IKE SA ever got keys
    assert [n.kind for n in notes] == ["received_proposals", "configured_proposals"]
    assert notes[1].data["swan"] == ["aes256gcm16-prfsha256-ecp256"]
    assert any("no keys in this log" in w for w in store.warnings)
    # the initiator's log only knows the refusal
    _store, left = _notes("ike-proposal-mismatch", "left")
    assert [(n.kind, n.data) for n in left] == [("peer_notify", {"notify": "NO_PROPOSAL_CHOSEN"})]


def test_log_with_neither_keys_nor_evidence_still_raises(tmp_path):
    f = tmp_path / "charon.log"
    text = (SAMPLES / "healthy-gcm" / "charon-left.log").read_text().splitlines()
    f.write_text("\n".join(ln for ln in text if " => " not in ln and "    0:" not in ln) + "\n")
    with pytest.raises(KeyFileError):
        load_keys([f])


def test_ts_auth_dh_notes():
    _s, ts = _notes("ts-mismatch", "right", "ts_config")
    assert [n.data for n in ts] == [{"event": "unacceptable", "local": ["10.9.0.0/24"], "remote": ["10.1.0.0/24"]}]
    _s, auth = _notes("psk-mismatch", "right", "auth")
    assert auth[0].data == {"reason": "psk_mismatch", "local_id": "right.ipsecscope.test",
                            "remote_id": "left.ipsecscope.test", "tried": 1}
    _s, dh = _notes("dh-retry", "right", "dh")
    assert (dh[0].data["received"], dh[0].data["configured"]) == ("ECP_256", "MODP_2048")
    assert (dh[0].data["received_id"], dh[0].data["configured_id"]) == (19, 14)
    _s, dh = _notes("dh-retry", "left", "dh")
    assert (dh[0].data["sent"], dh[0].data["requested"]) == ("ECP_256", "MODP_2048")


def test_merge_keeps_one_note_per_log_line():
    logs = [SAMPLES / "proposal-mismatch" / "charon-right.log"]
    once = load_keys(logs)
    twice = load_keys(logs + logs)
    assert len(twice.peer_notes) == len(once.peer_notes) == 2


@pytest.mark.parametrize("text,want", [
    ("ESP:AES_GCM_16_256/NO_EXT_SEQ", "aes256gcm16"),
    ("ESP:AES_CBC_128/HMAC_SHA1_96/NO_EXT_SEQ", "aes128-sha1"),
    ("ESP:AES_CBC_256/HMAC_SHA2_256_128/MODP_2048/EXT_SEQ", "aes256-sha256-modp2048-esn"),
    ("IKE:AES_GCM_16_256/PRF_HMAC_SHA2_256/ECP_256", "aes256gcm16-prfsha256-ecp256"),
    ("IKE:AES_CBC_128/HMAC_SHA1_96/PRF_HMAC_SHA1/MODP_2048", "aes128-sha1-modp2048"),
    ("IKE:CHACHA20_POLY1305/PRF_HMAC_SHA2_512/CURVE_25519", "chacha20poly1305-prfsha512-curve25519"),
])
def test_swan_proposal_keyword(text, want):
    assert swan_proposal_keyword(text) == want


CFG2 = SAMPLES.parent / "tests" / "data" / "peerlog" / "ts-mismatch-cfg2"


def test_cfg2_log_gives_the_connection_as_loaded():
    """At cfg 2 charon dumps each connection vici loads: the responder's selectors and proposals
    as configured (tests/data/peerlog/make_peerlog.py, real charon 5.9.8)."""
    store = load_keys([CFG2 / "charon-right.log"])
    (conn,) = [n for n in store.peer_notes if n.kind == "conn_config"]
    assert conn.conn == "ts" and (conn.local, conn.remote) == ("198.18.0.2", "198.18.0.1")
    assert conn.data["children"] == {"net": {"local_ts": ["10.2.0.0/24"], "remote_ts": ["10.1.0.0/24"],
                                             "proposals": ["ESP:AES_GCM_16_256/NO_EXT_SEQ"], "swan": ["aes256gcm16"]}}
    assert conn.data["swan"] == ["aes256gcm16-prfsha256-ecp256"]
    assert conn.data["ids"] == {"local": "right.ipsecscope.test", "remote": "left.ipsecscope.test"}
    ts = [n.data for n in store.peer_notes if n.kind == "ts_config"]
    assert {"event": "proposing", "side": "us", "ts": ["10.2.0.0/24"]} in ts
    assert {"event": "looking", "local": ["10.9.0.0/24"], "remote": ["10.1.0.0/24"]} in ts
    # the initiator's dump holds its own (mismatched) selectors
    (left,) = [n for n in load_keys([CFG2 / "charon-left.log"]).peer_notes if n.kind == "conn_config"]
    assert left.data["children"]["net"]["remote_ts"] == ["10.9.0.0/24"]
