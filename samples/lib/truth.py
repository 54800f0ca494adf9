"""samples/<scenario>/truth.json: what strongSwan itself says happened, plus what we expect found.

An oracle independent of tshark and of ipsecscope: it is read from the two charon logs.

* ``ike_sas``: SPIs and the negotiated IKE proposal (strongSwan's names) of every IKE SA that
  derived keys, in order.
* ``child_sas``: every CHILD_SA installed, from the initiator's (left) log: name, SPIs seen from
  left (``spi_in`` = sent by right, ``spi_out`` = sent by left), traffic selectors, ESP proposal
  (a DH group in it means PFS), and whether it replaced an older one (rekey).
* ``events``: a timeline of the significant log lines of both peers (established, rekeyed,
  deleted, error notifies received, rejected proposals/TS/auth, DPD, retransmits, giving up).
* ``expected``: what ipsecscope should report, written by hand per scenario (plain words and
  the facts to match), see samples/README.md.

Usage: ``python3 truth.py SAMPLE_DIR...`` (re-reads the logs and rewrites truth.json).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import charon_keys  # noqa: E402

LINE = re.compile(r"^(?P<time>\S+) \d+\[(?P<grp>[A-Z]+)\] (?:<(?P<ike>[^>]*)> )?(?P<msg>.*)$")
CHILD = re.compile(r"^(?P<dir>inbound |outbound )?CHILD_SA (?P<name>[^{]+)\{(?P<n>\d+)\} established "
                   r"with SPIs (?P<i>[0-9a-f]{8})_i (?P<o>[0-9a-f]{8})_o and TS (?P<l>.+?) === (?P<r>.+)$")
PROPOSAL = re.compile(r"^selected proposal: ESP:(?P<p>\S+)")
EVENTS = re.compile(
    r"^(IKE_SA \S+ (established|rekeyed) between .*"
    r"|(inbound )?CHILD_SA \S+ established with .*"
    r"|closing CHILD_SA .*|sending DELETE for .*|received DELETE for .*|IKE_SA deleted"
    r"|received \S+ notify(, no CHILD_SA built| error).*"
    r"|no acceptable proposal found|received proposals: .*|received proposals unacceptable"
    r"|configured proposals: .*|traffic selectors .* unacceptable"
    r"|tried \d+ shared key.*|.*MAC mismatched.*|DH group \S+ unacceptable.*"
    r"|peer didn't accept DH group.*|sending DPD request|retransmit \d+ of request.*"
    r"|giving up after .*|failed to establish CHILD_SA.*"
    r"|no issuer certificate found for .*|\s*issuer is .*|no trusted \S+ public key found for .*"
    r"|received end entity cert .*|redirected to .*|client got redirected from .*"
    r"|IKE_SA checkout not successful|Starting IKE charon daemon.*)$")

# Hand-written: what the analysis should conclude for each scenario (see samples/README.md).
EXPECTED: dict[str, dict[str, Any]] = {
    "healthy-gcm": {
        "summary": "one healthy tunnel: AES-GCM-16-256 IKE and ESP, CHILD_SA rekeyed with PFS "
                   "(ECP-256), IKE_SA rekeyed, then orderly CHILD and IKE deletes",
        "problems": [],
        "ike_sa_count": 2, "child_sa_generations": 2, "esp_packets": 18, "esp_decrypted": 18,
    },
    "cbc-sha2-pfs": {
        "summary": "two CHILD_SAs (different traffic selectors) under one IKE_SA, AES-CBC-256 + "
                   "HMAC-SHA2-256-128, PFS with MODP-2048 on every CREATE_CHILD_SA",
        "problems": [],
        "ike_sa_count": 1, "esp_spis": 6, "esp_packets": 20, "esp_decrypted": 20,
    },
    "proposal-mismatch": {
        "summary": "ESP proposal mismatch in IKE_AUTH: the IKE_SA is up but no CHILD_SA",
        "problems": [{"kind": "proposal mismatch", "exchange": "IKE_AUTH", "protocol": "ESP",
                      "notify": "NO_PROPOSAL_CHOSEN", "offered": "AES_CBC_128/HMAC_SHA1_96",
                      "responder_accepts": "AES_GCM_16_256 (only in the responder's log)",
                      "text": "proposal mismatch: offered ESP AES_CBC_128/HMAC_SHA1_96, the "
                              "responder answered NO_PROPOSAL_CHOSEN (it wants AES_GCM_16_256)"}],
        "needs_keys": True,
    },
    "ike-proposal-mismatch": {
        "summary": "IKE proposal mismatch in IKE_SA_INIT: no IKE_SA at all",
        "problems": [{"kind": "proposal mismatch", "exchange": "IKE_SA_INIT", "protocol": "IKE",
                      "notify": "NO_PROPOSAL_CHOSEN",
                      "offered": "AES_CBC_128/HMAC_SHA1_96/PRF_HMAC_SHA1/MODP_2048",
                      "responder_accepts": "AES_GCM_16_256/PRF_HMAC_SHA2_256/ECP_256 (only in "
                                           "the responder's log)",
                      "text": "proposal mismatch: offered IKE AES_CBC_128/HMAC_SHA1_96/"
                              "PRF_HMAC_SHA1/MODP_2048, the responder answered "
                              "NO_PROPOSAL_CHOSEN (it wants AES_GCM_16_256/PRF_HMAC_SHA2_256/"
                              "ECP_256)"}],
        "needs_keys": False,
    },
    "ts-mismatch": {
        "summary": "traffic selector mismatch in IKE_AUTH: the IKE_SA is up but no CHILD_SA",
        "problems": [{"kind": "traffic selector mismatch", "exchange": "IKE_AUTH",
                      "notify": "TS_UNACCEPTABLE", "tsi": "10.1.0.0/24", "tsr": "10.9.0.0/24",
                      "text": "traffic selectors 10.1.0.0/24 === 10.9.0.0/24 refused by the "
                              "responder (TS_UNACCEPTABLE); it has 10.2.0.0/24 === 10.1.0.0/24"}],
        "needs_keys": True,
    },
    "psk-mismatch": {
        "summary": "authentication failure: the responder rejects the initiator's PSK AUTH",
        "problems": [{"kind": "authentication failed", "exchange": "IKE_AUTH",
                      "notify": "AUTHENTICATION_FAILED", "auth_method": "shared key",
                      "idi": "left.ipsecscope.test",
                      "text": "the responder rejected the initiator's pre-shared-key AUTH "
                              "(AUTHENTICATION_FAILED): the PSKs differ"}],
        "needs_keys": True,
    },
    "dh-retry": {
        "summary": "DH group retry: INVALID_KE_PAYLOAD (ECP-256 -> MODP-2048), then a healthy "
                   "tunnel",
        "problems": [{"kind": "DH group retry", "exchange": "IKE_SA_INIT",
                      "notify": "INVALID_KE_PAYLOAD", "first_group": 19, "requested_group": 14,
                      "text": "the initiator's KE group ECP_256 (19) was refused, the responder "
                              "asked for MODP_2048 (14); the retry succeeded (one extra round "
                              "trip)"}],
        "needs_keys": False, "esp_packets": 6, "esp_decrypted": 6,
    },
    "dead-peer": {
        "summary": "the responder vanished after the tunnel came up: outbound ESP unanswered, "
                   "DPD retransmitted 3 times, then silence",
        "problems": [{"kind": "dead peer", "exchange": "INFORMATIONAL",
                      "text": "peer 198.18.0.2 stopped answering: ESP only outbound after frame "
                              "10, an empty INFORMATIONAL (DPD) request sent 4 times with the "
                              "same Message ID and never answered",
                      "unanswered_request_transmissions": 4}],
        "needs_keys": False,
    },
    "ikev1-dead-peer": {
        "summary": "IKEv1 tunnel up, DPD R-U-THEREs answered by both peers, then the responder "
                   "vanished: R-U-THEREs unacknowledged until the DPD timeout",
        "problems": [{"kind": "dead peer", "exchange": "INFORMATIONAL (IKEv1, RFC 3706 DPD)",
                      "text": "peer 198.18.0.2 stopped answering: ESP only outbound after frame 25, "
                              "R-U-THERE sent 3 times after its last R-U-THERE-ACK (frames 27, 29, "
                              "31), each a new Informational with its own message ID",
                      "unanswered_request_transmissions": 3}],
        "needs_keys": True,
    },
    "mtu-small-link": {
        "summary": "a 1280-byte link on the routed path: the first large ESP packet is dropped "
                   "with ICMP fragmentation needed (quoting its SPI), later ones travel as "
                   "outer IP fragments",
        "problems": [{"kind": "path MTU", "text": "ESP packets of 1460 bytes on SPI "
                      "left->right exceed the 1280-byte path MTU the router 198.18.1.1 reported; "
                      "one was dropped, the rest are fragmented"}],
        "ike_sa_count": 1, "esp_spis": 2, "lost_echoes": 1,
    },
    "esp-oneway-drop": {
        "summary": "the router drops ESP-in-UDP from the responder (nft, first payload word "
                   "non-zero) while IKE passes: ESP one way, every DPD answered",
        "problems": [{"kind": "one-way ESP with IKE alive",
                      "text": "ESP from 198.18.0.2 stopped while 198.18.0.2 kept answering DPD "
                              "in the same IKE SA: ESP is filtered on the path"}],
        "ike_sa_count": 1, "esp_spis": 2, "capture_at": "lan (left's side of the router)",
    },
    "esp-rejected": {
        "summary": "the responder's host firewall rejects ESP-in-UDP (nft reject, ICMP port "
                   "unreachable) while IKE on the same port passes",
        "problems": [{"kind": "ESP refused with ICMP",
                      "text": "198.18.0.2 answers ESP from 198.18.0.1 with ICMP port unreachable "
                              "quoting its SPI: its host does not take ESP in UDP 4500"}],
        "ike_sa_count": 1, "esp_spis": 2,
    },
    "peer-restart": {
        "summary": "the responder's charon is killed and restarted: stale ESP and DPD into "
                   "silence, then the initiator re-establishes (dpd_action = restart)",
        "problems": [{"kind": "peer restarted",
                      "text": "198.18.0.2 lost its state: ESP to the stale SPI and DPD on the "
                              "old IKE SA went unanswered, then a fresh IKE_SA_INIT was "
                              "answered at once"}],
        "ike_sa_count": 2, "esp_spis": 4,
    },
    "redirect": {
        "summary": "the responder redirects an established IKE SA to 198.18.0.3 (RFC 5685); "
                   "the initiator follows, the old IKE SA is deleted",
        "problems": [],
        "ike_sa_count": 2, "esp_spis": 4, "esp_packets": 8, "esp_decrypted": 8,
    },
    "path-impairments": {
        "summary": "a user-space bridge on the path duplicates the 3rd, corrupts the 5th and "
                   "delays the 7th left->right ESP packet past the 8th (bridge.log says which)",
        "problems": [{"kind": "path impairments", "text": "one ESP packet duplicated, one "
                      "corrupted (ICV failure at the receiver, its echo lost), one reordered"}],
        "ike_sa_count": 1, "esp_spis": 2, "capture_at": "wan (after the bridge)",
    },
    "ike-frag-cert": {
        "summary": "certificate authentication (RSA 3072, CERT + CERTREQ): both IKE_AUTH "
                   "messages are sent as 2 RFC 7383 fragments (SKF), then a healthy tunnel",
        "problems": [],
        "findings": [{"class": "IKE fragmentation (RFC 7383)", "severity": "info",
                      "exchange": "IKE_AUTH", "request_fragments": 2, "response_fragments": 2,
                      "auth": "RSA certificates"}],
        "not_reported": ["IKE-IP-FRAGMENTED", "IKE-CHILD-LIKELY-REFUSED"],
        "max_severity": "info",
        "ike_sa_count": 1, "esp_spis": 2, "esp_packets": 6, "esp_decrypted": 6,
    },
    "ike-frag-untrusted": {
        "summary": "the initiator's certificate is issued by a CA the responder does not trust: "
                   "the fragmented IKE_AUTH request is answered with AUTHENTICATION_FAILED",
        "problems": [{"kind": "authentication failed", "exchange": "IKE_AUTH",
                      "notify": "AUTHENTICATION_FAILED", "auth_method": "RSA signature",
                      "idi": "left.ipsecscope.test",
                      "issuer": "C=ZZ, O=elsewhere, CN=a CA the responder does not trust",
                      "request_fragments": 2,
                      "responder_log": ["no issuer certificate found for \"C=ZZ, O=elsewhere, "
                                        "CN=left.ipsecscope.test\"",
                                        "no trusted RSA public key found for "
                                        "'left.ipsecscope.test'"],
                      "text": "the responder rejected the initiator's certificate: its issuer "
                              "\"a CA the responder does not trust\" is not a trusted CA"}],
        "findings": [{"code": "IKE-AUTH-FAILED", "severity": "error", "side": "responder rejected initiator"}],
        "needs_keys": True,
    },
    "nat-rebind": {
        "summary": "the NAPT in front of the initiator drops its mappings mid-tunnel (new port range, "
                   "conntrack -D): the initiator's UDP 4500 traffic leaves from a new public port with "
                   "the same SPIs; the responder's next ESP goes to the old port (ICMP port unreachable "
                   "from the NAT) until the initiator's DPD from the new port tells it (RFC 7296 §2.23)",
        "problems": [],
        "keys_across_nat": {"log": "charon-left.log", "logged": "10.0.0.1", "wire": "198.18.0.1"},
    },
    "ikev1-nat-rebind": {
        "summary": "IKEv1 with NAT-T (RFC 3947): Main Mode finds the NAPT in front of the initiator (NAT-D) "
                   "and floats to 4500 at its 5th message; mid-tunnel the NAPT drops its mappings (new "
                   "port range, conntrack -D): the initiator's ESP in UDP and DPD leave from a new public "
                   "port with the same SPIs and cookies; the responder's ESP goes to the old port (ICMP "
                   "port unreachable from the NAT) until the DPD from the new port tells it",
        "problems": [],
        "keys_across_nat": {"log": "charon-left.log", "logged": "10.0.0.1", "wire": "198.18.0.1"},
    },
    "nat-napt": {
        "summary": "a healthy tunnel through a real NAPT: the initiator (10.0.0.1) is behind "
                   "it, the capture is on the public side (198.18.0.1 <-> 198.18.0.2); NAT-T "
                   "float to 4500, keepalives from the NATed peer, a CHILD_SA rekey",
        "problems": [],
        "ike_sa_count": 1, "child_sa_generations": 2, "esp_spis": 4,
        "esp_packets": 16, "esp_decrypted": 16,
        "decrypts_with_each_log": True,
        "keys_across_nat": {"log": "charon-left.log", "logged": "10.0.0.1", "wire": "198.18.0.1"},
    },
}


# Peers that are not the plain 198.18.0.1 <-> 198.18.0.2 pair (a router or NAT on the path).
PEERS: dict[str, dict[str, dict[str, str]]] = {
    "nat-napt": {"left": {"outer": "10.0.0.1", "public": "198.18.0.1", "role": "initiator",
                          "inner": "10.1.0.0/24", "behind": "NAPT 10.0.0.254 / 198.18.0.1"},
                 "right": {"outer": "198.18.0.2", "role": "responder", "inner": "10.2.0.0/24"}},
}
PEERS["nat-rebind"] = PEERS["ikev1-nat-rebind"] = PEERS["nat-napt"]
DEFAULT_PEERS = {"left": {"outer": "198.18.0.1", "role": "initiator", "inner": "10.1.0.0/24"},
                 "right": {"outer": "198.18.0.2", "role": "responder", "inner": "10.2.0.0/24"}}
RECEIVED = re.compile(r"received packet: from (?P<src>[\d.]+)\[(?P<sport>\d+)\] to "
                      r"(?P<dst>[\d.]+)\[(?P<dport>\d+)\]")


Lines = dict[str, list[tuple[str, str | None, str]]]


def _nat_napt(lines: Lines, _ike: list[dict[str, Any]], _child: list[dict[str, Any]], _sample: Path) -> dict[str, Any]:
    """What the NAPT did, from the responder's log (the translated source it received) and the
    initiator's (the keepalives it sent)."""
    ports: dict[int, int] = {}
    for _t, _ike, msg in lines["right"]:
        if (m := RECEIVED.search(msg)) and m["src"] == "198.18.0.1":
            ports.setdefault(int(m["dport"]), int(m["sport"]))
    keepalives = sum(msg.startswith("sending keep alive") for _t, _i, msg in lines["left"])
    return {"findings": [{
        "code": "IKE-NAT-DETECTED", "severity": "info", "side": "initiator",
        "behind_nat": "198.18.0.1",
        "private": "10.0.0.1:500", "private_natt": "10.0.0.1:4500",
        "translated": f"198.18.0.1:{ports[500]}", "translated_natt": f"198.18.0.1:{ports[4500]}",
        "float": "500 -> 4500 in IKE_AUTH",
        "keepalives": keepalives, "keepalives_from": "198.18.0.1",
        "responder_behind_nat": False,
        "note": "the responder's NATD_S_IP also mismatches: strongSwan with kernel-libipsec "
                "fakes it to force UDP encapsulation; the initiator's NATD_D_IP matches "
                "198.18.0.2:500, so the responder's address is not translated"}],
        "max_severity": "info"}


CONNTRACK_4500 = re.compile(r"src=10\.0\.0\.1 dst=198\.18\.0\.2 sport=4500 dport=4500 src=198\.18\.0\.2 "
                            r"dst=198\.18\.0\.1 sport=4500 dport=(?P<port>\d+)")
ENDPOINT_CHANGED = re.compile(r"remote endpoint changed from (?P<old>[\d.]+\[\d+\]) to (?P<new>[\d.]+\[\d+\])")


def _nat_rebind(lines: Lines, ike: list[dict[str, Any]], child: list[dict[str, Any]], sample: Path) -> dict[str, Any]:
    """The router's view (path.log: conntrack before and after the mapping was dropped) gives the
    old and new public port of the initiator's UDP 4500 flow; the responder's log says when it
    followed ("remote endpoint changed" on an authenticated message, RFC 7296 §2.23)."""
    text = (sample / "path.log").read_text()
    before, _, after = text.partition("# conntrack -L -p udp after")
    old = CONNTRACK_4500.search(before.split("nft:")[0])
    new = CONNTRACK_4500.search(after)
    assert old and new and old["port"] != new["port"], "path.log must show the 4500 mapping before and after"
    flushed = float(re.search(r"^# (\d+\.\d+) nft:", text, re.M)[1])  # type: ignore[index]
    moves = [(t, m["old"], m["new"]) for t, _i, msg in lines["right"]
             if (m := ENDPOINT_CHANGED.search(msg)) and m["old"].endswith(f"[{old['port']}]")]
    assert len(moves) == 1, "the responder logs one move of the initiator's NAT-T endpoint"
    rekeyed = [c for c in child if c["rekey"]]
    return {"findings": [{
        "code": "IKE-NAT-DETECTED", "severity": "info", "side": "initiator", "behind_nat": "198.18.0.1",
        "rebinding": {"peer": "initiator", "old": f"198.18.0.1:{old['port']}", "new": f"198.18.0.1:{new['port']}",
                      "spi_unchanged": child[0]["spi_out"], "mapping_dropped_at": flushed,
                      "responder_followed_log": {"time": moves[0][0], "old": moves[0][1], "new": moves[0][2]},
                      "source": "path.log (conntrack in the router namespace) and charon-right.log"},
        "note": "kernel-libipsec cannot move an installed SA to a new port: after following the "
                "new endpoint the responder rekeys the CHILD SA (CREATE_CHILD_SA from the responder)"}],
        "ike_sa_count": len(ike), "child_sa_generations": len(child), "responder_rekeyed_child": bool(rekeyed),
        "not_reported": ["ESP-ONE-WAY", "ESP-RETURN-STOPPED", "IKE-DEAD-PEER", "IKE-PEER-RESTARTED"],
        "max_severity": "info"}


def _ikev1_nat_rebind(lines: Lines, ike: list[dict[str, Any]], child: list[dict[str, Any]],
                      sample: Path) -> dict[str, Any]:
    """As nat-rebind, for IKEv1: the same router and responder logs. strongSwan's IKEv1 responder,
    once it follows the new endpoint, sets the CHILD SA up again with a Quick Mode of its own
    (kernel-libipsec cannot move an installed SA to a new port)."""
    out = _nat_rebind(lines, ike, child, sample)
    f = out["findings"][0]
    f["float"] = "500 -> 4500 in Main Mode (its 5th message, RFC 3947 §4)"
    f["note"] = ("kernel-libipsec cannot move an installed SA to a new port: after following the new "
                 "endpoint the responder sets the CHILD SA up again (a Quick Mode it initiates to the new port)")
    out.pop("responder_rekeyed_child", None)
    # charon_keys reads IKEv2 SAs only: the IKEv1 SAs are the initiator's "established" lines
    out["ike_sa_count"] = sum("] established between" in msg for _t, _i, msg in lines["left"])
    out["responder_quick_mode_after"] = any(
        "generating QUICK_MODE request" in msg for t, _i, msg in lines["right"]
        if t >= f["rebinding"]["responder_followed_log"]["time"])
    return out


def _mtu(_lines: Lines, _ike: list[dict[str, Any]], child: list[dict[str, Any]], _sample: Path) -> dict[str, Any]:
    return {"findings": [{
        "class": "mtu", "severity": "warning", "spi": child[0]["spi_out"],
        "sa_direction": "198.18.0.1>198.18.0.2", "outer_size": 1460, "path_mtu": 1280,
        "icmp_from": "198.18.1.1", "icmp_frames": 1, "dropped": 1,
        "fragmented": {"198.18.0.1>198.18.0.2": 2, "198.18.0.2>198.18.0.1": 2},
        "fix": "lower the tunnel MTU (kernel-libipsec mtu) or clamp the TCP MSS"}],
        "max_severity": "warning"}


def _oneway(lines: Lines, _ike: list[dict[str, Any]], child: list[dict[str, Any]], _sample: Path) -> dict[str, Any]:
    dpd = sum(msg == "sending DPD request" for _t, _i, msg in lines["left"])
    return {"findings": [{
        "class": "esp one-way, IKE alive", "codes": ["ESP-RETURN-STOPPED", "ESP-ONE-WAY"],
        "severity": "warning", "silent_spi": child[0]["spi_in"],
        "silent_direction": "198.18.0.2>198.18.0.1", "still_sending_spi": child[0]["spi_out"],
        "esp_after_stop": 6, "dropped_on_path": 6, "dpd_requests_answered": dpd,
        "cause": "ESP from 198.18.0.2 is filtered on the path (or its outbound SA/policy is "
                 "broken): the peer is alive, it answers every DPD in the same IKE SA"}],
        "not_reported": ["IKE-DEAD-PEER", "IKE-NO-RESPONSE"], "max_severity": "warning"}


def _rejected(_lines: Lines, _ike: list[dict[str, Any]], child: list[dict[str, Any]], sample: Path) -> dict[str, Any]:
    m = re.search(r"counter packets (\d+) ", (sample / "path.log").read_text())
    return {"findings": [{
        "class": "esp refused with ICMP", "codes": ["ESP-RETURN-STOPPED"], "severity": "warning",
        "refused_spi": child[0]["spi_out"], "refused_direction": "198.18.0.1>198.18.0.2",
        "icmp_from": "198.18.0.2", "icmp": "port unreachable", "rejected_by_host": int(m[1]) if m else None,
        "cause": "the receiver's host refuses ESP in UDP 4500 (firewall reject or no listener)"}],
        "not_reported": ["IKE-DEAD-PEER", "IKE-NO-RESPONSE"], "max_severity": "warning"}


def _restart(lines: Lines, ike: list[dict[str, Any]], child: list[dict[str, Any]], _sample: Path) -> dict[str, Any]:
    right = [msg for _t, _i, msg in lines["right"]]
    starts = [i for i, m in enumerate(right) if m.startswith("Starting IKE charon daemon")]
    stale = sum(m == "IKE_SA checkout not successful" for m in right)
    return {"findings": [{
        "class": "peer restarted", "side": "responder", "peer": "198.18.0.2",
        "severity": "error",
        "stale_ike_sa": f"{ike[0]['spi_i']}_{ike[0]['spi_r']}",
        "stale_spis": [child[0]["spi_out"]], "stale_esp_packets": 3,
        "unanswered_dpd_transmissions": 4, "invalid_spi_notifies": 0,
        "recovered_ike_sa": f"{ike[1]['spi_i']}_{ike[1]['spi_r']}",
        "recovery": "fresh IKE_SA_INIT answered at once (dpd_action = restart)",
        "peer_log": {"daemon_starts": len(starts),
                     "stale_ike_sa_checkouts_failed": stale},
        "note": "strongSwan 5.9.8 answers neither the stale IKE SA (no INVALID_IKE_SPI) nor the "
                "stale ESP (no INVALID_SPI): the restart is visible as silence followed by an "
                "immediately answered IKE_SA_INIT, and in the responder's log"}],
        "not_reported": ["IKE-DEAD-PEER"], "max_severity": "error"}


def _redirect(_lines: Lines, ike: list[dict[str, Any]], _child: list[dict[str, Any]], _sample: Path) -> dict[str, Any]:
    return {"findings": [{
        "class": "redirect", "notify": "REDIRECT", "severity": "info",
        "ike_sa": f"{ike[0]['spi_i']}_{ike[0]['spi_r']}", "from": "198.18.0.2",
        "to": "198.18.0.3", "exchange": "INFORMATIONAL (responder's request, RFC 5685 §6)",
        "new_ike_sa": f"{ike[1]['spi_i']}_{ike[1]['spi_r']}",
        "redirected_from_in_new_init": True,
        "state": "the first IKE SA ends REDIRECTED (then deleted), never INITIATING"}],
        "max_severity": "info"}


def _impair(_lines: Lines, _ike: list[dict[str, Any]], child: list[dict[str, Any]],
            sample: Path) -> dict[str, Any]:
    """The bridge's log (bridge.log) is the truth of what the path did to which packet."""
    acts = {e["action"]: e for e in (json.loads(ln) for ln in (sample / "bridge.log").read_text().splitlines()
                                     if ln and not ln.startswith("#"))}
    spi = child[0]["spi_out"]
    assert {a["spi"] for a in acts.values()} == {spi}, "the bridge impairs left->right ESP"
    return {"findings": [
        {"code": "ESP-REPLAY", "severity": "warning", "spi": spi, "seq": acts["dup"]["seq"],
         "duplicates": 1, "cause": "duplicated on the path (the receiver's replay window drops the copy)"},
        {"code": "ESP-ICV-FAILED", "severity": "warning", "spi": spi, "seq": acts["corrupt"]["seq"],
         "packets": 1, "of_packets_on_spi": 11, "cause": "corruption on the path: one packet, the "
         "others on the same SA authenticate"},
        {"class": "reorder", "spi": spi, "seq": acts["reorder"]["seq"],
         "arrived_after_seq": acts["reorder"]["sent_after_seq"], "within_replay_window": True,
         "note": "reordering by one packet is accepted by the receiver (RFC 4303 §3.4.3); at most info"}],
        "not_reported": ["ESP-SEQ-GAP"], "max_severity": "warning"}


# Facts derived from the logs (ports, SPIs, counts that change on every regeneration).
DERIVED = {"path-impairments": _impair, "nat-napt": _nat_napt, "nat-rebind": _nat_rebind,
           "ikev1-nat-rebind": _ikev1_nat_rebind, "mtu-small-link": _mtu,
           "esp-oneway-drop": _oneway, "esp-rejected": _rejected, "peer-restart": _restart, "redirect": _redirect}


def _lines(path: Path) -> list[tuple[str, str | None, str]]:
    out = []
    for raw in path.read_text(errors="replace").splitlines():
        m = LINE.match(raw)
        if m and not re.match(r"^\s*\d+: ", m["msg"]):
            out.append((m["time"], m["ike"], m["msg"]))
    return out


def build(sample: Path) -> dict[str, Any]:
    name = sample.name
    logs = {"left": sample / "charon-left.log", "right": sample / "charon-right.log"}
    ikes, _ = charon_keys.merge([p.read_text(errors="replace") for p in logs.values()])
    ike_sas = [{"spi_i": k.spi_i, "spi_r": k.spi_r,
                "encr": k.encr, "integ": k.integ} for k in ikes]

    child_sas: list[dict[str, Any]] = []
    proposal = None
    for _t, _ike, msg in _lines(logs["left"]):
        if (p := PROPOSAL.match(msg)) is not None:
            proposal = p["p"]
        elif (c := CHILD.match(msg)) is not None and c["dir"] != "outbound ":
            child_sas.append({"name": c["name"], "unique_id": int(c["n"]),
                              "spi_in": "0x" + c["i"], "spi_out": "0x" + c["o"],
                              "local_ts": c["l"], "remote_ts": c["r"],
                              "esp_proposal": proposal,
                              "pfs": bool(proposal and re.search(r"/(MODP|ECP|CURVE)_", proposal)),
                              "rekey": c["dir"] == "inbound "})

    events = []
    for side, path in logs.items():
        for t, ike, msg in _lines(path):
            if EVENTS.match(msg):
                events.append({"time": t, "side": side, "ike_sa": ike, "log": msg})
    events.sort(key=lambda e: (e["time"], e["side"]))

    expected = dict(EXPECTED.get(name, {}))
    if name in DERIVED:
        expected.update(DERIVED[name]({side: _lines(path) for side, path in logs.items()},
                                      ike_sas, child_sas, sample))
    return {
        "scenario": name,
        "source": "strongSwan 5.9.8 charon logs in this directory (samples/lib/truth.py)",
        "peers": PEERS.get(name, DEFAULT_PEERS),
        "expected": expected,
        "ike_sas": ike_sas,
        "child_sas": child_sas,
        "events": events,
    }


def write(sample: Path) -> Path:
    dest = sample / "truth.json"
    dest.write_text(json.dumps(build(sample), indent=1) + "\n")
    return dest


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: truth.py SAMPLE_DIR...", file=sys.stderr)
        return 2
    for a in argv:
        print(write(Path(a)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
