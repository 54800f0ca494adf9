"""strongSwan charon debug logs (``ike 4`` for IKE SA keys, ``chd 4`` for CHILD SA keys).

What charon 5.9 logs, and how we tie it together (every line carries a thread number
``NN[GRP]``, and charon handles one IKE message per thread from start to end, so per-thread
state is sound even when threads interleave):

* IKE SA keys (keymat_v2.c, IKE level 4)::

      13[IKE] <gcm|1> Sk_ei secret => 36 bytes @ 0x5621...
      13[IKE] <gcm|1>    0: 7A 7A 5E E9 14 52 EA 49 A6 02 AC CA 3E 74 28 4E  zz^..R.I....>t(N

  for Sk_d, Sk_ai, Sk_ar, Sk_ei, Sk_er, Sk_pi, Sk_pr; algorithms from the preceding
  ``selected proposal: IKE:AES_GCM_16_256/PRF_HMAC_SHA2_256/ECP_256`` on the same thread.
  The SPIs: the next ``checkin IKEv2 SA name[uid] with SPIs <spi_i>_i <spi_r>_r`` on the same
  thread (MGR level 2; for an IKE rekey the *new* SA is checked in first), else the SPIs
  last seen for that IKE_SA unique id, else the IKE header in an ``octets = message...`` or
  ``natd_chunk`` dump (IKE level 3+).
* CHILD SA keys (keymat_v2.c ``derive_child_keys``, CHD level 4): ``encryption initiator key =>``,
  ``encryption responder key =>``, ``integrity initiator key =>``, ``integrity responder key =>``.
  child_sa.c then logs ``adding inbound ESP SA`` / ``adding outbound ESP SA`` (or
  ``registering outbound``) each followed by ``  SPI 0x..., src A dst B``.
  "Initiator" is the initiator of the exchange that created the CHILD SA: the initiator's keys
  protect initiator->responder traffic. child_create.c installs, on the exchange initiator,
  inbound with the responder keys and outbound with the initiator keys, and the reverse on the
  responder. We know our role from the last ``parsed <EXCHANGE> request|response`` on the thread
  (keys derived after parsing a *response* = we initiated). IKEv1 Quick Mode logs the same lines.
* IKEv1 phase-1 key (keymat_v1.c, IKE level 4): ``encryption key Ka => 16 bytes``, bound to the
  initiator cookie by the next ``checkin IKEv1 SA ... with SPIs <cookie_i>_i <cookie_r>_r``.

Besides keys, the log holds *peer configuration evidence* the wire never carries, kept as
:class:`~ipsecscope.model.keys.PeerLogNote` in ``KeyStore.peer_notes`` (see :class:`_Notes`):
``received proposals:`` / ``configured proposals:`` (CFG 1, logged when no proposal matched),
traffic selector lines (``traffic selectors A === B unacceptable``, CFG 2 ``looking for a child
config for``, ``proposing|selecting traffic selectors for us|other:`` plus their indented rows,
``no matching CHILD_SA config found``), authentication failures (``tried N shared key for 'a' -
'b', but MAC mismatched``, ``no shared key found for``), DH groups (``DH group ECP_256
unacceptable, requesting MODP_2048``), an initiator refusing an answer that does not fit its offer
(``peers proposal selection invalid``, ``no proposal found``, ``no matching proposal found``, ...;
see ``_N_ANSWER``, kept with the exchange and message ID of the response the thread parsed), error
notifies the logging peer received, and at CFG 2 the
vici ``load-conn`` dump of each connection (`` conn NAME:`` ... ``local_ts = 10.2.0.0/24``). Each note is
bound to its IKE SA (SPIs from MGR lines) and to the logging host's address (``received packet:
from R[port] to L[port]``, ``IKE_SA n[uid] established between L[id]...R[id]``).
"""

from __future__ import annotations

import ipaddress
import itertools
import re
from dataclasses import dataclass, field

from ..errors import KeyFileError
from ..model import iana
from ..model.iana import EncrTransform, IntegTransform
from ..model.ike import Proposal, Transform
from ..model.keys import EspSaKeys, IkeSaKeys, Ikev1Keys, PeerLogNote
from ..model.plural import plural
from ..model.proposals import proposal_string
from . import names
from .names import shown
from .store import KeyStore

# "13[IKE] <conn|1> msg" (filelog, syslog); without the thread number ("[IKE] msg") in
# swanctl --log / --initiate output, which we treat as one thread.
_LINE = re.compile(
    r"(?:^|[\s:])(?P<thread>\d{2,})?\[(?P<grp>[A-Z]{3})\] (?:<(?:(?P<conn>[^|>]*)\|)?(?P<uid>\d+)> )?(?P<msg>.*)$"
)
_DUMP_HEAD = re.compile(r"^(?P<label>.+?) => (?P<n>\d+) bytes @ (?:0x)?[0-9a-fA-F]+$")
_DUMP_ROW = re.compile(r"^\s*\d+: ((?:[0-9A-Fa-f]{2} ){1,16})")
_PROPOSAL = re.compile(r"^selected proposal: (?P<proto>IKE|ESP|AH):(?P<algs>\S+)")
_PARSED = re.compile(r"^parsed (?P<xchg>[A-Z_]+) (?P<kind>request|response) (?P<msgid>\d+)")
_CHECKIN = re.compile(
    r"checkin IKEv(?P<v>[12]) SA .*\[(?P<uid>\d+)\] with SPIs (?P<i>[0-9a-f]{16})_i (?P<r>[0-9a-f]{16})_r"
)
_CHECKOUT = re.compile(r"checkout IKEv[12] SA (?:by message )?with SPIs (?P<i>[0-9a-f]{16})_i (?P<r>[0-9a-f]{16})_r")
_CHECKED_OUT = re.compile(r"IKE_SA .*\[(?P<uid>\d+)\] successfully checked out")
_ADDING = re.compile(r"^(?:adding|registering) (?P<dir>inbound|outbound) (?P<proto>ESP|AH) SA")
_CHILD_INSTALLING = re.compile(r"^CHILD_SA (?P<name>\S+\{\d+\}) state change: \S+ => INSTALLING")
_CHILD_ESTABLISHED = re.compile(r"^CHILD_SA (?P<name>\S+\{\d+\}) established")
_SPI_LINE = re.compile(r"^\s+SPI 0x(?P<spi>[0-9a-fA-F]{1,8}), src (?P<src>\S+) dst (?P<dst>\S+)")

IKE_LABELS = {"Sk_d secret": "sk_d", "Sk_ai secret": "sk_ai", "Sk_ar secret": "sk_ar", "Sk_ei secret": "sk_ei",
              "Sk_er secret": "sk_er", "Sk_pi secret": "sk_pi", "Sk_pr secret": "sk_pr"}
CHILD_LABELS = {"encryption initiator key": "enc_i", "encryption responder key": "enc_r",
                "integrity initiator key": "int_i", "integrity responder key": "int_r"}


# The value a key takes when its hex dump was cut short: the SA it belongs to is skipped.
_DAMAGED = b"\x00damaged"
_DAMAGED_BUF = bytearray()


# charon's line format, for detection: a thread number and a log group (after a time stamp or a
# syslog prefix: filelog, charon.syslog), or a group at the start of the line (swanctl --log).
_CHARON_LINE = re.compile(r"^(?:(?:[^\n\[]*[\s:])?\d{2,}|)\[(?:DMN|MGR|IKE|CHD|JOB|CFG|KNL|NET|ASN|ENC|TNC|"
                          r"IMC|IMV|PTS|TLS|APP|ESP|LIB)\] ", re.MULTILINE)


def looks_like(text: str) -> bool:
    head = text[:200_000]
    # the log's line format, not words: a document that mentions "[IKE]" or "Sk_ei secret =>" is no log
    if len(list(itertools.islice(_CHARON_LINE.finditer(head), 3))) < 3:
        return False
    return any(s in text for s in ("Sk_ei secret =>", "encryption initiator key =>", "[IKE]", "[CHD]"))


@dataclass
class _Proposal:
    encr: int | None = None
    key_len: int | None = None
    integ: int = IntegTransform.NONE
    icv_len: int | None = None
    prf: int | None = None
    esn: bool | None = None


def parse_proposal(algs: str) -> _Proposal:
    p = _Proposal()
    for tok in algs.split("/"):
        enc = names.parse_swan_encr(tok)
        if enc is not None and p.encr is None:
            p.encr, p.key_len = enc
        elif tok in names.SWAN_INTEG:
            p.integ, p.icv_len = names.SWAN_INTEG[tok]
        elif tok in names.SWAN_PRF:
            p.prf = names.SWAN_PRF[tok]
        elif tok == "EXT_SEQ":
            p.esn = True
        elif tok == "NO_EXT_SEQ":
            p.esn = False
    return p


@dataclass
class _Thread:
    role_initiator: bool | None = None  # from the last "parsed X request|response"
    ike_prop: _Proposal | None = None
    child_prop: _Proposal | None = None
    dump: tuple[str, int, bytearray, int] | None = None  # label, length, bytes, line
    ike_keys: dict[str, bytes] = field(default_factory=dict)
    ike_line: int = 0
    ike_uid: str | None = None
    ike_pending: list[_PendingIke] = field(default_factory=list)
    v1_pending: list[tuple[bytes, int, str | None]] = field(default_factory=list)  # Ka, line, uid
    child_keys: dict[str, bytes] = field(default_factory=dict)
    child_line: int = 0
    child_role: bool | None = None
    # The CHILD SA whose keys this thread is deriving ("CHILD_SA net{3} state change: CREATED =>
    # INSTALLING" opens it, "... established" closes it): keys, proposal and SPIs bind to it, so
    # a thread that created another CHILD SA before (charon reuses its worker threads) can never
    # lend that one's keys or proposal to this one.
    child_name: str | None = None
    child_prop_line: int = 0  # line of this thread's last "selected proposal: ESP|AH"
    parsed_line: int = 0  # line of this thread's last "parsed X request|response"
    adding: tuple[str, str, int] | None = None  # (direction, proto, line)
    last_checkout: tuple[bytes, bytes] | None = None
    last_xchg: str = ""
    last_parsed: tuple[str, str, int] | None = None  # (exchange, "request"|"response", message ID)


@dataclass
class _PendingIke:
    keys: dict[str, bytes]
    prop: _Proposal | None
    line: int
    uid: str | None
    # derived in a CREATE_CHILD_SA (IKE rekey): the keys belong to a *new* IKE SA, so the SPIs
    # known for the uid they were logged under (the old SA) must not be used for them
    rekey: bool = False


# --- peer configuration evidence -------------------------------------------------------------

# charon's DH group names (diffie_hellman_group_names) that differ from iana.DhGroup's
_SWAN_DH_EXTRA = {"MODP_1024_160": 22, "MODP_2048_224": 23, "MODP_2048_256": 24, "ECP_224_BP": 27,
                  "ECP_256_BP": 28, "ECP_384_BP": 29, "ECP_512_BP": 30, "CURVE_25519": 31,
                  "CURVE_448": 32, "MODP_NONE": 0, "MODP_CUSTOM": None}
_PROTO_ID = {"IKE": iana.ProtocolId.IKE, "AH": iana.ProtocolId.AH, "ESP": iana.ProtocolId.ESP}


def swan_dh(name: str) -> int | None:
    """``ECP_256`` -> 19 (iana.DhGroup), None if unknown."""
    if name in _SWAN_DH_EXTRA:
        return _SWAN_DH_EXTRA[name]
    try:
        return int(iana.DhGroup[name])
    except KeyError:
        return None


def swan_proposal_keyword(text: str) -> str:
    """A charon proposal as logged (``ESP:AES_GCM_16_256/NO_EXT_SEQ``) in the swanctl.conf keyword
    form the wire-side findings use (``aes256gcm16``); ``IKE:AES_CBC_128/HMAC_SHA1_96/PRF_HMAC_SHA1/
    MODP_2048`` -> ``aes128-sha1-modp2048``. Unknown tokens are kept in lower case."""
    proto, _, algs = text.partition(":")
    if not algs:
        proto, algs = "", proto
    T = iana.TransformType
    transforms: list[Transform] = []
    unknown: list[str] = []
    for tok in algs.split("/"):
        enc = names.parse_swan_encr(tok)
        if enc is not None:
            transforms.append(Transform(T.ENCR, int(enc[0]), enc[1] * 8 if enc[1] else None))
        elif tok in names.SWAN_INTEG:
            transforms.append(Transform(T.INTEG, int(names.SWAN_INTEG[tok][0])))
        elif tok in names.SWAN_PRF:
            transforms.append(Transform(T.PRF, int(names.SWAN_PRF[tok])))
        elif tok in ("EXT_SEQ", "NO_EXT_SEQ"):
            transforms.append(Transform(T.ESN, 1 if tok == "EXT_SEQ" else 0))
        elif (g := swan_dh(tok)) is not None:
            transforms.append(Transform(T.KE, g))
        elif tok:
            unknown.append(tok.lower())
    out = proposal_string(Proposal(1, int(_PROTO_ID.get(proto, iana.ProtocolId.ESP)), b"", tuple(transforms)))
    return "-".join(x for x in [out, *unknown] if x)


_N_PROPOSALS = re.compile(r"^(?P<which>received|configured) proposals: (?P<list>.+)$")
_N_TS_UNACC = re.compile(r"^traffic selectors (?P<a>.+?) === (?P<b>.+?) unacceptable$")
_N_TS_LOOK = re.compile(r"^looking for a child config for (?P<a>.+?) === (?P<b>.+?)$")
_N_TS_HEAD = re.compile(r"^(?P<ev>proposing|selecting) traffic selectors for (?P<side>us|other):$")
_N_TS_ROW = re.compile(r"^\s+(?:config: (?P<cfg>\S+), received: (?P<rcv>\S+) => (?P<res>.+)|(?P<ts>[0-9a-fA-F.:]+/\d+\S*))$")
_N_NO_CHILD = re.compile(r"^no matching CHILD_SA config found")
_N_PSK_MAC = re.compile(r"^tried (?P<n>\d+) shared keys? for '(?P<me>[^']*)' - '(?P<other>[^']*)', but MAC mismatched")
_N_NO_PSK = re.compile(r"^no shared key found for '(?P<me>[^']*)' - '(?P<other>[^']*)'")
_N_NO_TRUST = re.compile(r"^no trusted (?P<type>\S+) public key found for '(?P<other>[^']*)'")
_N_NO_PEER = re.compile(r"^no matching peer config found")
_N_DH_RESP = re.compile(r"^DH group (?P<got>\S+) unacceptable, requesting (?P<want>\S+)")
_N_DH_INIT = re.compile(r"^peer didn't accept DH group (?P<got>\S+), it requested (?P<want>\S+)")
_N_NOTIFY = re.compile(r"^received (?P<n>[A-Z][A-Z0-9_]+) (?:notify error|error notify|notify, no CHILD_SA built)")
_N_RECV = re.compile(r"^received packet: from (?P<r>\S+?)\[\d+\] to (?P<l>\S+?)\[\d+\]")
_N_SEND = re.compile(r"^sending packet: from (?P<l>\S+?)\[\d+\] to (?P<r>\S+?)\[\d+\]")
_N_BETWEEN = re.compile(r"(?:established between|looking for peer configs matching) (?P<l>[^\s\[]+)\[.*?\]\.\.\.(?P<r>[^\s\[]+)\[")
_N_CHECKOUT_MSG = re.compile(r"^checkout IKEv[12] SA by message with SPIs (?P<i>[0-9a-f]{16})_i (?P<r>[0-9a-f]{16})_r")
_N_CREATED = re.compile(r"^created IKE_SA .*\[(?P<uid>\d+)\]$")
# An initiator's check of the responder's answer against its own offer (all DBG1 IKE, logged under
# the IKE SA's "<conn|uid>" right after "parsed <EXCHANGE> response"): check, which SA it is about.
# The wording of strongSwan 5.9 and 6.0 sources (the 5.9 line first where they differ).
_N_ANSWER = (
    # ikev2/tasks/ike_init.c process_i: "peers proposal selection invalid" (5.9), "peer's ..." (6.0)
    (re.compile(r"^peer(?:'s|s)? proposal selection invalid$"), "proposal", "ike"),
    # ike_init.c process_i: "peer DH group selection invalid" (5.9), "peer's key exchange method ..." (6.0)
    (re.compile(r"^peer(?:'s)? (?:DH group|key exchange method) selection invalid$"), "ke", "ike"),
    # ikev1/tasks/main_mode.c, aggressive_mode.c process_i (process_r says it after a request)
    (re.compile(r"^no proposal found$"), "proposal", "ike"),
    # ikev1/tasks/quick_mode.c process_i ("..., sending NO_PROPOSAL_CHOSEN" is process_r's)
    (re.compile(r"^no matching proposal found$"), "proposal", "child"),
    # ikev2/tasks/child_create.c select_and_install, both roles (ike_init.c process_r's too)
    (re.compile(r"^no acceptable proposal found$"), "proposal", "child"),
    # ikev1/phase1.c add_nonce_ke (Main/Aggressive Mode), quick_mode.c (PFS)
    (re.compile(r"^unable to apply received KE value$"), "ke", "ike"),
    # main_mode.c / aggressive_mode.c process_i: "received %N authentication, but configured %N, continue with configured"
    (re.compile(r"^received (?P<got>.+?) authentication, but configured (?P<want>.+?), continue with configured$"),
     "auth", "ike"),
)
# vici "load-conn" dump (CFG 2): " conn NAME:", "  child NAME:" / "  local:" / "  remote:", then
# "key = value" rows indented one level deeper than their section.
_N_CONN = re.compile(r"^ conn (?P<name>\S+):$")
_N_SECTION = re.compile(r"^  (?:child (?P<child>\S+)|(?P<sec>[a-z_0-9-]+)):$")
_N_KV = re.compile(r"^(?P<ind> {2,})(?P<k>[a-z_0-9]+) = (?P<v>.*)$")


def _is_addr(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


class _Notes:
    """Collects :class:`PeerLogNote` records while :func:`parse` walks the log (one per line it
    recognises), and binds them to SPIs and addresses once the whole log has been read."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.raw: list[dict] = []  # kind, text, uid, conn, ts, line, data
        self.addr: dict[str, tuple[str, str]] = {}  # uid -> (local, remote)
        self.created_spis: dict[str, tuple[bytes, bytes]] = {}  # uid -> SPIs (responder SPI maybe 0)
        self.ts_block: dict[str, dict] = {}  # thread -> open "proposing traffic selectors" record
        self.conn_block: dict[str, tuple[dict, list[str | None]]] = {}  # thread -> (record, [section])
        self.starts = 0  # "Starting IKE charon daemon" lines so far
        self.by_message: dict[str, str] = {}  # thread -> SPIs of its last "checkout ... by message"

    def _add(self, kind: str, msg: str, uid: str | None, conn: str | None, ts: str, line: int,
             data: dict) -> dict:
        rec = {"kind": kind, "text": msg.strip(), "uid": uid, "conn": conn or None, "ts": ts, "line": line,
               "data": data}
        self.raw.append(rec)
        return rec

    def _conn_row(self, tid: str, msg: str) -> bool:
        """One row of a vici load-conn dump on thread ``tid``; False when the dump has ended."""
        rec, sec = self.conn_block[tid]
        d = rec["data"]
        m = _N_SECTION.match(msg)
        if m:
            sec[0] = f"child {m.group('child')}" if m.group("child") else m.group("sec")
            if m.group("child"):
                d["children"].setdefault(m.group("child"), {})
            return True
        m = _N_KV.match(msg)
        if not m:
            return False
        key, val = m.group("k"), m.group("v").strip()
        if len(m.group("ind")) == 2:  # connection level
            sec[0] = None
            if key in ("local_addrs", "remote_addrs"):
                d[key] = [x.strip() for x in val.split(",") if x.strip()]
            elif key == "proposals":
                d["proposals"] = [x.strip() for x in val.split(", ") if x.strip()]
                d["swan"] = [swan_proposal_keyword(x) for x in d["proposals"]]
            return True
        if sec[0] and sec[0].startswith("child "):
            child = d["children"].setdefault(sec[0][6:], {})
            if key in ("local_ts", "remote_ts"):
                child[key] = [x.strip() for x in val.split(",") if x.strip()]
            elif key == "proposals":
                child["proposals"] = [x.strip() for x in val.split(", ") if x.strip()]
                child["swan"] = [swan_proposal_keyword(x) for x in child["proposals"]]
        elif sec[0] in ("local", "remote") and key == "id":
            d.setdefault("ids", {})[sec[0]] = val
        return True

    def feed(self, tid: str, uid: str | None, conn: str | None, msg: str, ts: str, line: int,
             last_checkout: tuple[bytes, bytes] | None, parsed: tuple[str, str, int] | None = None) -> None:
        if tid in self.conn_block:
            if uid is None and self._conn_row(tid, msg):
                return
            del self.conn_block[tid]
        if uid is None and msg.startswith("Starting IKE charon daemon"):
            # A second start in one log is a restart: the daemon forgot every SA it had. The
            # first one is every log's first line and no evidence of anything.
            self.starts += 1
            if self.starts > 1:
                self._add("daemon_start", msg, None, None, ts, line, {"restart": self.starts - 1})
            return
        if uid is None and (c := _N_CHECKOUT_MSG.match(msg)) is not None:
            self.by_message[tid] = f"{c.group('i')}_{c.group('r')}"
            return
        if uid is None and msg == "IKE_SA checkout not successful":
            # A received message for an established IKE SA (responder SPI set) that this daemon
            # does not know: after a restart, the peer's DPD and INFORMATIONALs for the old SA
            # end here. (Internal jobs for an SA just deleted fail the same way, but their
            # checkout is not "by message".)
            spis = self.by_message.pop(tid, None)
            if spis and not spis.endswith("_" + "0" * 16):
                self._add("unknown_sa", msg, None, None, ts, line, {"ike_sa": spis})
            return
        self.by_message.pop(tid, None)
        if "does not belong to an installed SA" in msg:  # libipsec: ESP for an SPI it does not have
            self._add("unknown_sa", msg, uid, conn, ts, line, {"esp": True})
            return
        if uid is None and (c := _N_CONN.match(msg)) is not None:
            # what the connection was loaded with: proposals, addresses, each child's selectors
            rec = self._add("conn_config", msg, None, c.group("name"), ts, line,
                            {"conn": c.group("name"), "children": {}})
            self.conn_block[tid] = (rec, [None])
            return
        blk = self.ts_block.get(tid)
        if blk is not None:
            row = _N_TS_ROW.match(msg)
            if row:
                d = blk["data"]
                if row.group("ts"):
                    d["ts"].append(row.group("ts"))
                else:
                    d["ts"].append(row.group("cfg"))
                    d.setdefault("received", []).append(row.group("rcv"))
                    d.setdefault("result", []).append(row.group("res"))
                blk["text"] += "; " + msg.strip()
                return
            del self.ts_block[tid]
        if uid is not None:
            a = _N_RECV.match(msg) or _N_SEND.match(msg) or _N_BETWEEN.search(msg)
            if a:
                self.addr[uid] = (a.group("l"), a.group("r"))
                return
        c = _N_CREATED.match(msg)
        if c and last_checkout is not None:
            self.created_spis.setdefault(c.group("uid"), last_checkout)
            return
        if (p := _N_PROPOSALS.match(msg)) is not None:
            props = [x.strip() for x in p.group("list").split(", ") if x.strip()]
            proto = props[0].partition(":")[0] if props and ":" in props[0] else ""
            self._add(f"{p.group('which')}_proposals", msg, uid, conn, ts, line,
                      {"proto": proto, "proposals": props, "swan": [swan_proposal_keyword(x) for x in props]})
        elif (p := _N_TS_UNACC.match(msg)) is not None:
            # child_create.c logs the selectors as "<logging peer's side> === <other side>"
            self._add("ts_config", msg, uid, conn, ts, line,
                      {"event": "unacceptable", "local": p.group("a").split(" "), "remote": p.group("b").split(" ")})
        elif (p := _N_TS_LOOK.match(msg)) is not None:
            self._add("ts_config", msg, uid, conn, ts, line,
                      {"event": "looking", "local": p.group("a").split(" "), "remote": p.group("b").split(" ")})
        elif (p := _N_TS_HEAD.match(msg)) is not None:
            # the configured local_ts ("us") / remote_ts ("other"), one indented row each follows
            self.ts_block[tid] = self._add("ts_config", msg, uid, conn, ts, line,
                                           {"event": p.group("ev"), "side": p.group("side"), "ts": []})
        elif _N_NO_CHILD.match(msg):
            self._add("ts_config", msg, uid, conn, ts, line, {"event": "no_config"})
        elif (p := _N_PSK_MAC.match(msg)) is not None:
            self._add("auth", msg, uid, conn, ts, line, {"reason": "psk_mismatch", "local_id": p.group("me"),
                                                         "remote_id": p.group("other"), "tried": int(p.group("n"))})
        elif (p := _N_NO_PSK.match(msg)) is not None:
            self._add("auth", msg, uid, conn, ts, line, {"reason": "no_psk", "local_id": p.group("me"),
                                                         "remote_id": p.group("other")})
        elif (p := _N_NO_TRUST.match(msg)) is not None:
            self._add("auth", msg, uid, conn, ts, line, {"reason": "untrusted_key", "key_type": p.group("type"),
                                                         "remote_id": p.group("other")})
        elif _N_NO_PEER.match(msg):
            self._add("auth", msg, uid, conn, ts, line, {"reason": "no_peer_config"})
        elif (p := _N_DH_RESP.match(msg)) is not None:
            self._add("dh", msg, uid, conn, ts, line, {
                "received": p.group("got"), "configured": p.group("want"),
                "received_id": swan_dh(p.group("got")), "configured_id": swan_dh(p.group("want"))})
        elif (p := _N_DH_INIT.match(msg)) is not None:
            self._add("dh", msg, uid, conn, ts, line, {
                "sent": p.group("got"), "requested": p.group("want"),
                "sent_id": swan_dh(p.group("got")), "requested_id": swan_dh(p.group("want"))})
        elif (p := _N_NOTIFY.match(msg)) is not None:
            self._add("peer_notify", msg, uid, conn, ts, line, {"notify": p.group("n")})
        elif uid is not None:
            self._answer_check(msg, uid, conn, ts, line, parsed)

    def _answer_check(self, msg: str, uid: str, conn: str | None, ts: str, line: int,
                      parsed: tuple[str, str, int] | None) -> None:
        """An initiator's refusal of an answer that does not fit its offer (kind "answer_check"):
        only after a *response* this thread parsed (the same words after a request are the
        responder refusing an offer), or with no parsed line at all (a filtered log)."""
        for pat, check, about in _N_ANSWER:
            p = pat.match(msg)
            if p is None:
                continue
            if parsed is not None and parsed[1] != "response":
                return
            xchg = parsed[0] if parsed else None
            if check == "proposal" and xchg == "IKE_SA_INIT":
                about = "ike"
            elif check == "ke" and xchg == "QUICK_MODE":
                about = "child"
            data = {"check": check, "about": about, "exchange": xchg, "msg_id": parsed[2] if parsed else None}
            if check == "auth":
                data.update(received=p.group("got"), configured=p.group("want"))
            self._add("answer_check", msg, uid, conn, ts, line, data)
            return

    def finish(self, uid_spis: dict[str, tuple[bytes, bytes]]) -> list[PeerLogNote]:
        out = []
        for r in self.raw:
            uid = r["uid"]
            spis = (uid_spis.get(uid) or self.created_spis.get(uid)) if uid is not None else None
            local, remote = self.addr.get(uid, (None, None)) if uid is not None else (None, None)
            if r["kind"] == "conn_config":
                # a connection loaded for exactly one local / remote address names both peers
                la, ra = r["data"].get("local_addrs", []), r["data"].get("remote_addrs", [])
                local = la[0] if len(la) == 1 and _is_addr(la[0]) else None
                remote = ra[0] if len(ra) == 1 and _is_addr(ra[0]) else None
            out.append(PeerLogNote(
                kind=r["kind"], text=r["text"],
                ike_sa=f"{spis[0].hex()}_{spis[1].hex()}" if spis else (r["data"].get("ike_sa") or uid),
                ts=r["ts"], source=f"{self.path}:{r['line']}", data=r["data"], local=local, remote=remote,
                conn=r["conn"]))
        return out


def parse(text: str, path: str, store: KeyStore | None = None) -> KeyStore:
    store = store if store is not None else KeyStore()
    threads: dict[str, _Thread] = {}
    uid_spis: dict[str, tuple[bytes, bytes]] = {}
    # The IKE proposal is selected while handling IKE_SA_INIT, but the responder derives the keys
    # later, on another thread (IKE_AUTH): remember it per IKE_SA unique id too.
    uid_ike_prop: dict[str, _Proposal] = {}
    uid_child_prop: dict[str, _Proposal] = {}
    dump_spis: dict[str, tuple[bytes, bytes]] = {}
    unresolved: list[_PendingIke] = []
    n_ike = n_child = 0
    saw_dumps = False
    warnings: list[str] = []
    notes = _Notes(path)

    def finish_ike(pend: _PendingIke, spis: tuple[bytes, bytes] | None) -> None:
        nonlocal n_ike
        if spis is None:
            unresolved.append(pend)
            return
        k = pend.keys
        prop = pend.prop or _Proposal()
        encr = prop.encr
        if encr is None:
            warnings.append(f"{path}:{pend.line}: IKE keys without a 'selected proposal: IKE:...' line; skipped")
            return
        if any(v is _DAMAGED for v in k.values()):
            return  # a damaged hex dump: already warned where it was cut
        problem = names.check_key_length(encr, k.get("sk_ei", b""))
        if problem:
            store.skip(KeyFileError(f"Sk_ei does not fit the selected proposal: {problem}", path=path,
                                    line=pend.line))
            return
        store.add_ike(IkeSaKeys(
            spi_i=spis[0], spi_r=spis[1], encr=encr, sk_ei=k.get("sk_ei", b""), sk_er=k.get("sk_er", b""),
            integ=prop.integ, sk_ai=k.get("sk_ai", b""), sk_ar=k.get("sk_ar", b""), prf=prop.prf,
            sk_d=k.get("sk_d") or None, icv_len=prop.icv_len, source=f"{path}:{pend.line}",
        ))
        n_ike += 1

    def finish_dump(t: _Thread, tid: str, uid: str | None) -> None:
        label, _n, buf, line = t.dump  # type: ignore[misc]
        t.dump = None
        data = _DAMAGED if buf is _DAMAGED_BUF else bytes(buf)
        if label in IKE_LABELS:
            if label == "Sk_d secret" or not t.ike_keys:
                t.ike_keys = {}
                t.ike_line = line
                t.ike_uid = uid
                if uid is not None and uid in uid_ike_prop:
                    t.ike_prop = uid_ike_prop[uid]
            t.ike_keys[IKE_LABELS[label]] = data
            if label == "Sk_pr secret":
                t.ike_pending.append(_PendingIke(t.ike_keys, t.ike_prop, t.ike_line, t.ike_uid,
                                                 rekey=t.last_xchg == "CREATE_CHILD_SA"))
                t.ike_keys = {}
        elif label == "encryption key Ka":
            # IKEv1 phase-1 encryption key (keymat_v1.c), what Wireshark's ikev1_decryption_table wants
            t.v1_pending.append((data, line, uid))
        elif label in CHILD_LABELS:
            if t.child_name is None and (label == "encryption initiator key" or not t.child_keys):
                # no INSTALLING line to open the key set (older logs): the first key opens it
                t.child_keys = {}
                t.child_line = line
                t.child_role = t.role_initiator
                if uid is not None and uid in uid_child_prop:
                    t.child_prop = uid_child_prop[uid]
            t.child_keys[CHILD_LABELS[label]] = data
        elif label.startswith("octets = message") or label == "natd_chunk":
            # IKE header / NAT-D hash input start with SPIi | SPIr (RFC 7296 §3.1, §2.23): the
            # SPIs of the IKE SA this uid names, for logs without MGR lines.
            if len(data) >= 16 and any(data[8:16]) and uid is not None:
                dump_spis.setdefault(uid, (data[:8], data[8:16]))

    def child_sa(t: _Thread, direction: str, proto: str, spi: int, src: str, dst: str, line: int) -> None:
        nonlocal n_child
        keys = t.child_keys
        if not keys or "enc_i" not in keys and "int_i" not in keys:
            return  # keys not logged (chd < 4): nothing to bind
        role = t.child_role
        if role is None:
            warnings.append(f"{path}:{line}: cannot tell whether this side initiated the exchange; "
                            "CHILD SA keys skipped")
            return
        # exchange initiator: outbound = initiator keys; responder: inbound = initiator keys
        use_i = (direction == "outbound") == role
        enc = keys.get("enc_i" if use_i else "enc_r", b"")
        integ_key = keys.get("int_i" if use_i else "int_r", b"")
        prop = t.child_prop or _Proposal()
        if prop.encr is None and proto == "ESP":
            warnings.append(f"{path}:{line}: CHILD SA without a 'selected proposal: ESP:...' line; skipped")
            return
        if any(v is _DAMAGED for v in keys.values()):
            return  # a damaged hex dump: already warned where it was cut
        for addr in (src, dst):
            try:
                ipaddress.ip_address(addr)
            except ValueError:
                store.skip(KeyFileError(f"{shown(addr)} is not an IP address", path=path, line=line))
                return
        encr = prop.encr if prop.encr is not None else EncrTransform.ENCR_NULL
        problem = names.check_key_length(encr, enc)
        if problem:
            store.skip(KeyFileError(f"CHILD SA key does not fit the selected proposal: {problem}", path=path,
                                    line=t.child_line))
            return
        store.add_esp(EspSaKeys(
            spi=spi, encr=encr, enc_key=enc, integ=prop.integ, auth_key=integ_key, src=src, dst=dst,
            icv_len=prop.icv_len, esn=prop.esn, protocol=iana.ProtocolId.ESP if proto == "ESP" else iana.ProtocolId.AH,
            source=f"{path}:{line}",
        ))
        n_child += 1

    for lineno, raw in enumerate(text.splitlines(), 1):
        m = _LINE.search(raw)
        if not m:
            continue
        tid, msg, uid = m.group("thread") or "-", m.group("msg"), m.group("uid")
        t = threads.get(tid)
        if t is None:
            t = threads[tid] = _Thread()
        if t.dump is not None:
            row = _DUMP_ROW.match(msg)
            if row:
                label, n, buf, _line = t.dump
                buf.extend(bytes.fromhex(row.group(1).replace(" ", "")))
                if len(buf) >= n:
                    del buf[n:]
                    finish_dump(t, tid, uid)
                continue
            label, n, buf, line0 = t.dump
            if label in IKE_LABELS or label in CHILD_LABELS:
                # A cut dump costs only the SA whose key it is: mark that key set damaged, so the
                # SA is left out while the log's other SAs are read.
                store.skip(KeyFileError(f"hex dump of {label!r} has {len(buf)} of {n} bytes (log lines "
                                        "filtered out or interleaved?)", path=path, line=line0),
                           "the SA it belongs to is skipped")
                t.dump = (label, n, _DAMAGED_BUF, line0)
                finish_dump(t, tid, uid)
            t.dump = None
        h = _DUMP_HEAD.match(msg)
        if h:
            saw_dumps = True
            n = int(h.group("n"))
            label = h.group("label")
            if n == 0:
                t.dump = (label, 0, bytearray(), lineno)
                finish_dump(t, tid, uid)
            else:
                t.dump = (label, n, bytearray(), lineno)
            continue
        notes.feed(tid, uid, m.group("conn"), msg, raw[:m.start()].strip(), lineno, t.last_checkout, t.last_parsed)
        if m.group("grp") == "MGR":
            c = _CHECKIN.search(msg)
            if c:
                spis = (bytes.fromhex(c.group("i")), bytes.fromhex(c.group("r")))
                uid_spis[c.group("uid")] = spis
                for ka, kline, _kuid in t.v1_pending:
                    store.add_ikev1(Ikev1Keys(cookie_i=spis[0], enc_key=ka, source=f"{path}:{kline}"))
                    n_ike += 1
                t.v1_pending = []
                if c.group("v") == "1":
                    continue
                if t.ike_pending:
                    # the first checkin after the keys is their SA (for an IKE rekey the new SA
                    # is checked in before the old one)
                    first, rest = t.ike_pending[0], t.ike_pending[1:]
                    finish_ike(first, spis)
                    unresolved.extend(rest)
                    t.ike_pending = []
                continue
            c = _CHECKOUT.search(msg)
            if c:
                t.last_checkout = (bytes.fromhex(c.group("i")), bytes.fromhex(c.group("r")))
                continue
            c = _CHECKED_OUT.search(msg)
            if c and t.last_checkout and any(t.last_checkout[1]):
                uid_spis.setdefault(c.group("uid"), t.last_checkout)
            continue
        p = _PARSED.match(msg)
        if p:
            t.role_initiator = p.group("kind") == "response"
            t.parsed_line = lineno
            t.last_xchg = p.group("xchg")
            t.last_parsed = (p.group("xchg"), p.group("kind"), int(p.group("msgid")))
            continue
        c = _CHILD_INSTALLING.match(msg)
        if c:
            # a new CHILD SA on this thread: its keys follow, under the proposal just selected in
            # this exchange (on this thread; else the IKE SA's latest, for the IKE_AUTH responder)
            t.child_name = c.group("name")
            t.child_keys = {}
            t.child_line = lineno
            t.child_role = t.role_initiator
            if (t.child_prop is None or t.child_prop_line < t.parsed_line) and uid in uid_child_prop:
                t.child_prop = uid_child_prop[uid]  # not selected in this exchange on this thread
            continue
        c = _CHILD_ESTABLISHED.match(msg)
        if c and c.group("name") == t.child_name:
            t.child_name = None
            t.child_keys = {}  # spent: the next CHILD SA on this thread starts from nothing
            continue
        p = _PROPOSAL.match(msg)
        if p:
            prop = parse_proposal(p.group("algs"))
            if p.group("proto") == "IKE":
                t.ike_prop = prop
                if uid is not None:
                    uid_ike_prop[uid] = prop
            else:
                t.child_prop = prop
                t.child_prop_line = lineno
                if uid is not None:
                    uid_child_prop[uid] = prop
            continue
        a = _ADDING.match(msg)
        if a:
            t.adding = (a.group("dir"), a.group("proto"), lineno)
            continue
        s = _SPI_LINE.match(msg)
        if s and t.adding is not None:
            direction, proto, _ = t.adding
            t.adding = None
            child_sa(t, direction, proto, int(s.group("spi"), 16), s.group("src"), s.group("dst"), lineno)
            continue

    # IKE key sets never followed by a checkin on their thread: use what we know about their uid.
    for t in threads.values():
        for ka, kline, kuid in t.v1_pending:
            if kuid in uid_spis:
                store.add_ikev1(Ikev1Keys(cookie_i=uid_spis[kuid][0], enc_key=ka, source=f"{path}:{kline}"))
                n_ike += 1
        for pend in t.ike_pending:
            unresolved.append(pend)
    still = []
    for pend in unresolved:
        spis = None if pend.rekey else uid_spis.get(pend.uid or "") or dump_spis.get(pend.uid or "")
        if spis is not None:
            finish_ike(pend, spis)
        else:
            still.append(pend)
    for pend in still:
        why = ("keys of a rekeyed IKE SA: its new SPIs are only logged at 'mgr 2'" if pend.rekey else
               "IKE SA keys whose SPIs are never logged (enable 'mgr 2', or 'ike 3' for NAT-D dumps)")
        warnings.append(f"{path}:{pend.line}: {why}; skipped")
    peer_notes = notes.finish(uid_spis)
    for note in peer_notes:
        store.add_peer_note(note)
    if n_ike == 0 and n_child == 0 and peer_notes:
        # A log without keys can still say what this peer is configured with (e.g. the responder
        # of a proposal mismatch, where no SA ever got keys): keep it for the findings.
        warnings.append(f"{path}: no keys in this log, only {plural(len(peer_notes), 'line')} of peer configuration "
                        "evidence (proposals, selectors, authentication) for the findings")
    elif n_ike == 0 and n_child == 0:
        if store.skipped:
            raise store.skipped[0]
        if warnings:
            hint = warnings[0]
        elif saw_dumps:
            hint = ("no keys in this log although it has hex dumps (ike 3+): no IKE SA got as far as "
                    "deriving keys (did IKE_SA_INIT fail?)")
        else:
            hint = ("no key material found: charon logs keys only with 'ike 4' (IKE SA) and 'chd 4' (CHILD SA) "
                    "in charon.filelog / charon.syslog, e.g. 'default = 1, ike = 4, chd = 4, mgr = 2'")
        raise KeyFileError(hint, path=path)
    store.warnings.extend(warnings)
    return store
