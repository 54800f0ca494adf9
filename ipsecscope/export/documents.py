"""The JSON documents every front end writes: ``sas --json``, ``findings --json`` and the TUI's
exports build them here, so the shapes are declared once and the front ends never import each other.

JSON schema ``"ipsecscope.sas/1"`` (``--json``; fields are only ever added within /1)::

    {
      "schema": "ipsecscope.sas/1",
      "files": [str], "first_time": float|null, "last_time": float|null,
      "ike_sas": [{
        "key": "spii_spir" (16+16 hex), "version": 1|2, "spi_i": hex, "spi_r": hex,
        "initiator": str, "responder": str, "initiator_port": int, "responder_port": int,
        "state": "initiating"|"established"|"rekeyed"|"redirected"|"deleted"|"failed"|"inferred",
        "state_inferred": bool,            # guessed from encrypted traffic we could not read
        "peer_gone": null | {"peer": str, "how": "dead"|"restarted", "since": float|null, "finding": str},
                                           # a finding says the peer is gone while "state" is still up
        "state_word": str,                 # the state as the evidence says it, as every view writes it:
                                           #   "state", or "dead" (peer_gone), or "incomplete" (stall)
        "state_text": str,                 # ... with why: "failed: NO_PROPOSAL_CHOSEN from 198.18.0.2 (frame 2)"
        "stall": null | STALL,             # IKEv1: where a phase 1 that never completed stopped
        "failure": str|null, "failure_from": str|null,  # the address that sent the refusal ("no response": null)
        "failure_frame": int|null, "proposal": str|null, "offered": [str], "dh_group": str|null,
        "ke_groups": [str], "invalid_ke_requested": [str], "id_i": str|null, "id_r": str|null,
        "auth_method": str|null, "mode": str|null (IKEv1 Main/Aggressive),
        "nat": {"initiator": bool|null, "responder": bool|null,  # raw NAT_DETECTION_* hash verdicts
                "behind_nat": [str],           # roles a NAT is shown to translate ("initiator"/"responder")
                "encapsulation_forced": [str], # roles whose source hash fails with no NAT seen (encap = yes)
                "nat_t": bool,
                "rebindings": [REBINDING]},  # a peer's NAT-T address:port changed mid-SA (NAT rebinding)
        "ike_fragmentation": [bool, bool], "vendor_ids": [str], "decrypted": bool,
        "icv_failed": int,                 # encrypted messages the given IKE keys failed to authenticate
        "undecryptable": int,              # encrypted messages a loaded key gave no payload chain for (IKEv1: wrong key)
        "created": float|null, "established": float|null, "deleted": float|null, "deleted_by": str|null,
        "rekeyed_from": key|null, "rekeyed_into": key|null, "retry_of": key|null, "retried_by": key|null,
        "redirect_to": str|null,           # RFC 5685: the gateway this SA's responder sent the initiator to
        "redirect_exchange": "IKE_SA_INIT"|"IKE_AUTH"|"INFORMATIONAL"|"encrypted"|null,  # where the REDIRECT was
                                           #   ("encrypted": learnt from the new SA's REDIRECTED_FROM)
        "redirect_frame": int|null, "redirect_time": float|null,
        "redirected_into": key|null,       # the IKE SA the initiator then made with that gateway
        "redirected_from": key|null,       # the IKE SA whose responder redirected the initiator here
        "mobike": {"supported": [bool, bool],   # MOBIKE_SUPPORTED from (initiator, responder), RFC 4555 §3.3
                   "updates": [MOBIKE_UPDATE],  # UPDATE_SA_ADDRESSES requests in order (§3.5)
                   "additional": [{"peer": str, "frame": int, "addresses": [str]}]},  # address lists (§3.6): [] = NO_ADDITIONAL_ADDRESSES
        "children": [int],
        "exchanges": [{"exchange": str, "msg_id": int, "requester": str, "request_frames": [int],
                       "response_frames": [int], "request_time": float|null, "response_time": float|null,
                       "retransmits": int, "fragments": int, "ip_fragmented": bool, "encrypted": bool,
                       "decrypted": bool, "error": str|null, "notifies": [str], "summary": str}]
      }],
      "child_sas": [{
        "id": int, "ike_sa": key|null, "state": str, "protocol": "ESP"|"AH", "mode": str,
        "spi_i": "0x%08x"|null, "spi_r": "0x%08x"|null,   # inbound SPI of the initiator / responder
        "initiator": str, "responder": str, "created_by": str, "created": float|null,
        "proposal": str|null, "offered": [str], "pfs_group": str|null, "esn": bool|null,
        "ts_i": [str], "ts_r": [str], "ts_i_offered": [str], "ts_r_offered": [str],
        "rekeyed_from": int|null, "rekeyed_into": int|null, "rekeyed": float|null,
        "rekey_collision": bool, "deleted": float|null, "deleted_by": str|null, "failure": str|null,
        "lifetime": float|null, "keys_source": str|null,
        "inferred_reason": str,            # INFERRED: "paired: <evidence>" | "unpaired: <why not>"
        "nat_rebindings": [REBINDING],     # only for a CHILD SA without an IKE SA (else on the IKE SA)
        "flows": [flow keys "src>dst:0xspi" (AH: "src>dst:0xspi/AH")],
        "bundle": [{"protocol": "AH"|"ESP", "spi_i": "0x%08x"|null, "spi_r": "0x%08x"|null,
                    "packets": int, "bytes": int}]  # an IKEv1 AH+ESP bundle (RFC 2408 §4.2): each
                                   #   protocol's SPIs and traffic; [] for one protocol (then
                                   #   protocol/spi_i/spi_r say it; for a bundle they are its first)
      }],
      "flows": [{
        "key": "src>dst:0xspi" (AH: +"/AH"), "src": str, "dst": str, "spi": "0x%08x", "protocol": str,
        "child_sa": int|null,
        "packets": int,               # frames captured, as tshark counts them: the capture's copies
                                      #   included (packets sent = packets - capture_duplicates; the
                                      #   findings' one-way, return and rate figures count those)
        "bytes": int, "first_time": float|null,
        "last_time": float|null, "first_frame": int, "last_frame": int, "seq_min": int|null,
        "seq_max": int|null, "lost": int,  # the SA counter's gaps (one counter for counter_shared_with too)
        "counter_shared_with": [flow key],  # flows numbered by the same sender counter (one SA toward
                                            #   several destinations, RFC 4303 §3.3.3; RFC 4552 §7)
        "duplicates": int,            # replays: a sequence number again, later or with other bytes
        "capture_duplicates": int,    # one of the flow's last 16 packets again within 20 ms, same sequence
                                      #   number, length and ICV: the capture's copy (or a path device's:
                                      #   ESP-REPLAY when few), counted in "packets", never sent
        "reordered": int, "icv_failed": int,
        "no_key": int, "decrypted": int, "malformed": int, "unsupported": int, "after_delete": int, "after_rekey": int,
                                      # an AH flow's "decrypted" counts ICVs verified (crypto.ah, AH keys given)
        "after_rekey_last_time": float|null, "outside_ts": int, "udp_encap": bool, "sport": int, "dport": int,
        "keys_nat": str|null,         # the keys were matched across NAT: "logged -> wire" address
        "sport_last": int, "dport_last": int,  # ports of its latest packet (differ after a NAT rebinding)
        "ip_fragmented": int,         # packets that arrived as outer IP fragments (path MTU trouble)
        "fragments_lost": int,        # packets whose first IP fragment came and the rest never did (lost whole)
        "fragments_lost_packets": [{"seq": int, "frame": int, "missing": str, "time": float}],  # the first 16
      }],
      "enc_sas": [{                   # only on an OpenBSD enc(4) capture (LINKTYPE_ENC): one per enc header
        "spi": "0x%08x", "protocol": "ESP"|"AH", "src": str, "dst": str,  # SPI, flags' protocol, outermost IP
        "flags": "0x%08x", "protection": str,  # the header's M_* bits; "authentic, confidential"
        "packets": int, "bytes": int, "first_time": float|null, "last_time": float|null,
        "first_frame": int, "last_frame": int,
        "sequence": "not available",  # no ESP/AH header left: loss, replay, reordering cannot be told
        "inner": [{"src": str, "dst": str, "protocol": int, "packets": int}]}],  # the traffic it carried
      "capture": {"frames": int, "malformed": {layer: int}, "truncated": str|null}   # what could not be read
    }

    REBINDING (RFC 7296 §2.23; RFC 3948) = {
      "peer": "initiator"|"responder",   # whose endpoint moved
      "old": "addr:port", "new": "addr:port",   # as the capture shows them ("[v6]:port")
      "time": float, "frame": int, "seen_in": str,   # first packet from the new endpoint: "ESP 0x..." | "IKE <exchange>"
      "followed_time": float|null, "followed_frame": int|null, "followed_in": str,  # the other peer's first
                                         #   ESP or IKE request to the new endpoint (null: never, in the capture)
      "to_old": int, "to_old_frames": [int],   # what it still sent to the old endpoint meanwhile
      "mobike_frame": int|null           # not a NAT: the peer's own MOBIKE UPDATE_SA_ADDRESSES (RFC 4555 §3.5)
    }

    MOBIKE_UPDATE (RFC 4555 §3.5) = {
      "peer": "initiator"|"responder", "from": "addr:port", "to": "addr:port",   # the new address pair
      "old": "addr:port"|null,           # where the sender was before (null: no move seen)
      "time": float, "frame": int, "message_id": int,
      "nat_source_matches": bool|null, "nat_destination_matches": bool|null,  # NAT_DETECTION_* over the new pair
      "cookie2": bool, "answered_time": float|null, "answered_frame": int|null,
      "error": str,                      # an error notify in the answer (UNACCEPTABLE_ADDRESSES, ...), "" if none
      "cookie2_echo": "same"|"different"|"missing"|"",  # the answer's COOKIE2 against the update's (§3.7)
      "check_frame": int|null, "check_echo": str   # the other peer's own COOKIE2 check of the new address
    }

    STALL (IKEv1 phase 1, RFC 2409 §5: Main Mode's 6 or Aggressive Mode's 3 messages under one Message ID) = {
      "message": str,                    # the last one sent: "MM5", "AM2" ("Main Mode message": phase 1's start not captured)
      "sender": str, "waiting_for": str, # who sent it; whose message did not follow
      "next_message": str|null,          # what should have followed ("MM3" after MM2); null: an answer to it
      "frames": [int], "sent": int,      # its copies or pieces (first 8); times sent (1 + retransmissions)
      "first_time": float, "time": float,   # its first and last copy
      "silent_for": float,               # seconds from its first copy to the end of the capture
      "verdict": "waiting"|"incomplete"|"no response",  # capture ended within a retransmit interval (state
                                         #   "initiating"); not followed though due ("incomplete"); 3
                                         #   retransmissions or 10 s unanswered (state "failed", failure "no response")
      "unreassembled": bool, "lost_fragments": [int], "fragments": int   # sent as IKEv1 fragments never
                                         #   reassembled: the numbers never captured, of how many (0: unknown)
    }

JSON schema ``"ipsecscope.findings/1"`` (``--json``; fields are only ever added within /1)::

    {
      "schema": "ipsecscope.findings/1",
      "files": [str],
      "counts": {"error": int, "warning": int, "info": int},
      "findings": [{
        "code": str,                 # stable, e.g. "IKE-NO-PROPOSAL", "ESP-SEQ-GAP"
        "severity": "error" | "warning" | "info",
        "title": str, "explanation": str, "hint": str,
        "frames": [int],             # evidence, Wireshark frame numbers
        "sa": str | null,            # IKE SA key "spii_spir", "child:<id>" or "esp:<src>><dst>:0x<spi>" ("ah:" for AH)
        "time": float | null,
        "evidence_log": [{           # lines of the peers' own logs (-k charon.log) the finding uses;
          "kind": str,               #   "configured_proposals" | "received_proposals" | "ts_config" |
                                     #   "auth" | "dh" | "peer_notify" | "conn_config"
          "text": str,               #   the log message, e.g. "configured proposals: ESP:AES_GCM_16_256/NO_EXT_SEQ"
          "source": str,             #   "file:line"
          "time": str,               #   the log line's timestamp as written ("" if none)
          "ike_sa": str | null,      #   "spii_spir" when the log names the SPIs, else charon's IKE_SA unique id
          "conn": str | null,        #   the connection name charon logged ("<conn|uid>")
          "local": str | null,       #   address of the peer that wrote the log
          "remote": str | null,      #   the other peer
          "data": {}                 #   parsed values, e.g. {"proto": "ESP", "swan": ["aes256gcm16"], ...}
        }]                           #   (empty without such logs)
        "facts": {str: value}        # the finding's numbers by name (SPI, sizes, counts), as its text
                                     #   gives them; which names depends on the code, e.g. ESP-PATH-MTU:
                                     #   {"spi", "outer_size", "path_mtu", "icmp_from", "dropped", ...}
                                     #   (a black hole without ICMP: path_mtu null, "answered_max")
        "count": int,                # how many SAs the finding is about: 1, or N when N SAs had the
                                     #   same condition (same code, title, hint and explanation but for
                                     #   the SA's own addresses) and became one finding (N >= 5;
                                     #   from N >= 2: IKE-NAT-DETECTED and refusals repeated per
                                     #   retry between one peer pair, ESP-ONE-WAY SAs silent towards
                                     #   one sender or from one receiver)
        "members": [{                # every one of those N SAs (empty when count is 1); the finding's
          "sa": str,                 #   "sa", "frames" and "facts" are the first SA's (frames: the
          "peers": [str],            #   first five SAs'), its "time" the earliest
          "frames": [int], "time": float | null
        }]
      }],
      "rules": [{"name": str, "codes": [str], "severity": [str], "ref": str,   # with --list-rules only:
                 "family": str, "doc": str}],  # severity: the levels the rule may give; family "plugin"
      "families": [{"family": str, "title": str, "numbers": str}]             # for plugin rules
    }
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from ..analysis.rules.nat_mtu import nat_verdict
from ..model.idtext import spi_text
from ..model.sa import (
    ChildSa,
    EncSa,
    EspFlow,
    Finding,
    IkeSa,
    NatRebinding,
    SaTable,
    Severity,
    counter_lost,
    endpoint_text,
    one_counter,
)
from ..state import names as N

SAS_SCHEMA = "ipsecscope.sas/1"
FINDINGS_SCHEMA = "ipsecscope.findings/1"
SEVERITIES = {"error": Severity.ERROR, "warning": Severity.WARNING, "info": Severity.INFO}


def spi_hex(v: int | None) -> str | None:
    """An SPI as every output writes it (model.idtext.spi_text), or None."""
    return None if v is None else spi_text(v)


def flow_key(f: EspFlow) -> str:
    """``"src>dst:0xspi"`` for ESP, ``"src>dst:0xspi/AH"`` for AH: an AH SA may share SPI and
    destination with an ESP SA (RFC 4301 §4.1) and is still another flow."""
    return f"{f.src}>{f.dst}:0x{f.spi:08x}" + ("" if f.protocol == "ESP" else f"/{f.protocol}")


def ike_to_dict(sa: IkeSa, table: SaTable) -> dict:
    natted, forced = nat_verdict(table, sa) if sa.nat_detected else ([], [])
    return {
        "key": sa.key, "version": sa.version, "spi_i": sa.ike_spi_i.hex(), "spi_r": sa.ike_spi_r.hex(),
        "initiator": sa.initiator, "responder": sa.responder, "initiator_port": sa.initiator_port,
        "responder_port": sa.responder_port, "state": sa.state.value, "state_inferred": sa.state_inferred,
        "peer_gone": None if sa.peer_gone is None else {
            "peer": sa.peer_gone.peer, "how": sa.peer_gone.how, "since": sa.peer_gone.since, "finding": sa.peer_gone.code},
        "state_word": sa.state_word, "state_text": sa.state_text().replace("\u00a0", " "),
        "stall": None if sa.stall is None else sa.stall.to_dict(),
        "failure": sa.failure, "failure_from": sa.failure_from, "failure_frame": sa.failure_frame, "proposal": sa.proposal, "offered": list(sa.offered),
        "dh_group": N.dh_name(sa.dh_group) if sa.dh_group is not None else None,
        "ke_groups": [N.dh_name(g) for g in sa.ke_groups],
        "invalid_ke_requested": [N.dh_name(g) for g in sa.invalid_ke_requested],
        "id_i": sa.id_i, "id_r": sa.id_r, "auth_method": sa.auth_method, "mode": sa.mode,
        "nat": {"initiator": sa.nat_initiator, "responder": sa.nat_responder,
                "behind_nat": [x.role for x in natted], "encapsulation_forced": [x.role for x in forced],
                "nat_t": sa.nat_t,
                "rebindings": [rebinding_to_dict(r) for r in sa.nat_rebindings]},
        "ike_fragmentation": list(sa.ike_fragmentation), "vendor_ids": list(sa.vendor_ids),
        "decrypted": sa.decrypted, "icv_failed": sa.icv_failed,
        "undecryptable": sa.undecryptable, "created": sa.created_ts, "established": sa.established_ts,
        "deleted": sa.deleted_ts, "deleted_by": sa.deleted_by, "rekeyed_from": sa.rekeyed_from,
        "rekeyed_into": sa.rekeyed_into, "retry_of": sa.retry_of, "retried_by": sa.retried_by,
        "redirect_to": sa.redirect_to, "redirect_exchange": sa.redirect_exchange,
        "redirect_frame": sa.redirect_frame, "redirect_time": sa.redirect_ts,
        "redirected_into": sa.redirected_into, "redirected_from": sa.redirected_from,
        "mobike": mobike_to_dict(sa),
        "children": list(sa.children),
        "exchanges": [{
            "exchange": N.exchange_name(x.exchange, sa.version), "msg_id": x.msg_id, "requester": x.requester,
            "request_frames": list(x.request_frames), "response_frames": list(x.response_frames),
            "request_time": x.request_ts, "response_time": x.response_ts, "retransmits": x.retransmits,
            "fragments": x.fragments, "ip_fragmented": x.ip_fragmented, "encrypted": x.encrypted,
            "decrypted": x.decrypted, "error": x.error_name,
            "notifies": [N.notify_name(n, sa.version) for n in x.notifies], "summary": x.summary,
        } for x in sa.exchanges],
    }


def child_to_dict(c: ChildSa, table: SaTable) -> dict:
    return {
        "id": c.id, "ike_sa": c.ike_sa, "state": c.state.value, "protocol": c.protocol, "mode": c.mode,
        "spi_i": spi_hex(c.spi_i), "spi_r": spi_hex(c.spi_r), "initiator": c.initiator, "responder": c.responder,
        "created_by": c.created_by, "created": c.created_ts, "proposal": c.proposal, "offered": list(c.offered),
        "pfs_group": N.dh_name(c.pfs_group) if c.pfs_group else None, "esn": c.esn,
        "ts_i": [str(t) for t in c.ts_i], "ts_r": [str(t) for t in c.ts_r],
        "ts_i_offered": [str(t) for t in c.ts_i_offered], "ts_r_offered": [str(t) for t in c.ts_r_offered],
        "rekeyed_from": c.rekeyed_from, "rekeyed_into": c.rekeyed_into, "rekeyed": c.rekeyed_ts,
        "rekey_collision": c.rekey_collision, "deleted": c.deleted_ts, "deleted_by": c.deleted_by,
        "failure": c.failure, "lifetime": c.lifetime_s, "keys_source": c.keys_source,
        "inferred_reason": c.inferred_reason, "nat_rebindings": [rebinding_to_dict(r) for r in c.nat_rebindings],
        "flows": [flow_key(f) for f in c.flows(table)],
        "bundle": [{"protocol": b.protocol, "spi_i": spi_hex(b.spi_i), "spi_r": spi_hex(b.spi_r),
                    "packets": sum(f.packets for f in c.flows(table) if f.protocol == b.protocol),
                    "bytes": sum(f.bytes for f in c.flows(table) if f.protocol == b.protocol)} for b in c.bundle],
    }


def flow_to_dict(f: EspFlow, shared: dict[int, list[EspFlow]] | None = None) -> dict:
    """``shared``: :func:`one_counter` of the flow's table (None: a counter of its own). A flow
    whose SA's one counter also numbers its packets to other destinations reports the counter's
    loss, as findings do, and names those flows (RFC 4303 §3.3.3: one counter per SA at the sender)."""
    group = shared.get(id(f), ()) if shared else ()
    return {
        "key": flow_key(f), "src": f.src, "dst": f.dst, "spi": spi_hex(f.spi), "protocol": f.protocol,
        "child_sa": f.child_sa, "packets": f.packets, "bytes": f.bytes, "first_time": f.first_ts,
        "last_time": f.last_ts, "first_frame": f.first_frame, "last_frame": f.last_frame,
        "seq_min": f.seq_min, "seq_max": f.seq_max, "lost": counter_lost(group) if group else f.lost,
        "counter_shared_with": [flow_key(g) for g in group if g is not f], "duplicates": f.duplicates,
        "capture_duplicates": f.capture_duplicates, "reordered": f.reordered, "icv_failed": f.icv_failed, "no_key": f.no_key, "decrypted": f.decrypted,
        "malformed": f.malformed, "unsupported": f.unsupported, "after_delete": f.after_delete, "after_rekey": f.after_rekey,
        "after_rekey_last_time": f.after_rekey_last_ts, "outside_ts": f.outside_ts,
        "udp_encap": f.udp_encap, "sport": f.sport, "dport": f.dport, "keys_nat": f.keys_nat or None,
        "sport_last": f.sport_last, "dport_last": f.dport_last, "ip_fragmented": f.ip_fragmented,
        "fragments_lost": f.frag_lost,
        "fragments_lost_packets": [{"seq": q, "frame": fr, "missing": m, "time": t} for q, fr, m, t in f.frag_lost_packets],
    }


def rebinding_to_dict(r: NatRebinding) -> dict:
    return {
        "peer": r.peer, "old": endpoint_text(r.old_addr, r.old_port), "new": endpoint_text(r.new_addr, r.new_port),
        "time": r.ts, "frame": r.frame, "seen_in": r.seen_in, "followed_time": r.followed_ts,
        "followed_frame": r.followed_frame, "followed_in": r.followed_in, "to_old": r.to_old,
        "to_old_frames": list(r.to_old_frames), "mobike_frame": r.mobike_frame,
    }


def mobike_to_dict(sa: IkeSa) -> dict:
    return {
        "supported": list(sa.mobike_supported),
        "updates": [{"peer": u.peer, "from": endpoint_text(u.src_addr, u.src_port),
                     "to": endpoint_text(u.dst_addr, u.dst_port),
                     "old": endpoint_text(u.old_addr, u.old_port) if u.old_addr else None,
                     "time": u.ts, "frame": u.frame, "message_id": u.message_id,
                     "nat_source_matches": u.nat_src_ok, "nat_destination_matches": u.nat_dst_ok,
                     "cookie2": u.cookie2, "answered_time": u.answered_ts, "answered_frame": u.answered_frame,
                     "error": u.error, "cookie2_echo": u.cookie2_echo, "check_frame": u.check_frame,
                     "check_echo": u.check_echo} for u in sa.mobike_updates],
        "additional": [{"peer": p, "frame": f, "addresses": list(a)} for p, f, a in sa.mobike_additional],
    }


def table_to_dict(table: SaTable) -> dict:
    shared = one_counter(table)
    return {
        "first_time": table.first_ts, "last_time": table.last_ts,
        "ike_sas": [ike_to_dict(sa, table) for sa in table.ike_sas.values()],
        "child_sas": [child_to_dict(c, table) for c in table.child_sas.values()],
        "flows": [flow_to_dict(f, shared) for f in table.flows.values()],
        **({"enc_sas": [enc_sa_to_dict(e) for e in table.enc_sas.values()]} if table.enc_sas else {}),
    }


def enc_sa_to_dict(e: EncSa) -> dict:
    """An SA seen on an OpenBSD enc(4) capture (model.sa.EncSa)."""
    from ..decode.link import enc_flags_text

    return {"spi": spi_text(e.spi), "protocol": e.protocol, "src": e.src, "dst": e.dst, "flags": f"0x{e.flags:08x}",
            "protection": enc_flags_text(e.flags), "packets": e.packets, "bytes": e.bytes,
            "first_time": e.first_ts, "last_time": e.last_ts, "first_frame": e.first_frame,
            "last_frame": e.last_frame, "sequence": "not available",
            "inner": [{"src": s, "dst": d, "protocol": p, "packets": n} for (s, d, p), n in e.inner.items()]}


def finding_to_dict(f: Finding) -> dict:
    return {
        "code": f.code, "severity": f.severity.name.lower(), "title": f.title, "explanation": f.explanation,
        "hint": f.hint, "frames": list(f.frames), "sa": f.sa, "time": f.ts,
        "evidence_log": [{"kind": n.kind, "text": n.text, "source": n.source, "time": n.ts, "ike_sa": n.ike_sa,
                          "conn": n.conn, "local": n.local, "remote": n.remote, "data": n.data}
                         for n in getattr(f, "evidence", ())],
        "facts": dict(getattr(f, "facts", None) or {}),
        "count": f.count,
        "members": [{"sa": m.sa, "peers": list(m.peers), "frames": list(m.frames), "time": m.ts}
                    for m in f.members],
    }


def capture_info(session: Any) -> dict[str, Any]:
    """What of a session's input could not be read: the ``capture`` member of ``sas/1``."""
    st = session.stats
    return {"frames": st.frames, "malformed": dict(st.malformed), "truncated": st.truncated}


def severity_counts(findings: Iterable[Finding]) -> dict[str, int]:
    """``{"error": n, "warning": n, "info": n}`` over every finding (a level filter never hides a count)."""
    findings = list(findings)
    return {name: sum(1 for f in findings if f.severity == sev) for name, sev in SEVERITIES.items()}


def sas_document(table: SaTable, files: Sequence[object], capture: dict[str, Any] | None = None) -> dict:
    """The whole ``ipsecscope.sas/1`` document; ``capture`` is what could not be read (frames, malformed, truncated)."""
    doc = {"schema": SAS_SCHEMA, "files": [str(f) for f in files], **table_to_dict(table)}
    if capture is not None:
        doc["capture"] = capture
    return doc


def findings_document(findings: Sequence[Finding], files: Sequence[object],
                      shown: Sequence[Finding] | None = None) -> dict:
    """The whole ``ipsecscope.findings/1`` document: counts over ``findings``, entries for ``shown``
    (all of them unless a severity floor hides some)."""
    return {"schema": FINDINGS_SCHEMA, "files": [str(f) for f in files], "counts": severity_counts(findings),
            "findings": [finding_to_dict(f) for f in (findings if shown is None else shown)]}
