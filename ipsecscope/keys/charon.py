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
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from ..errors import KeyFileError
from ..model.iana import EncrTransform, IntegTransform
from ..model.keys import EspSaKeys, IkeSaKeys, Ikev1Keys
from . import names
from .store import KeyStore

# "13[IKE] <conn|1> msg" (filelog, syslog); without the thread number ("[IKE] msg") in
# swanctl --log / --initiate output, which we treat as one thread.
_LINE = re.compile(
    r"(?:^|[\s:])(?P<thread>\d{2,})?\[(?P<grp>[A-Z]{3})\] (?:<(?:(?P<conn>[^|>]*)\|)?(?P<uid>\d+)> )?(?P<msg>.*)$"
)
_DUMP_HEAD = re.compile(r"^(?P<label>.+?) => (?P<n>\d+) bytes @ (?:0x)?[0-9a-fA-F]+$")
_DUMP_ROW = re.compile(r"^\s*\d+: ((?:[0-9A-Fa-f]{2} ){1,16})")
_PROPOSAL = re.compile(r"^selected proposal: (?P<proto>IKE|ESP|AH):(?P<algs>\S+)")
_PARSED = re.compile(r"^parsed (?P<xchg>[A-Z_]+) (?P<kind>request|response) \d+")
_CHECKIN = re.compile(
    r"checkin IKEv(?P<v>[12]) SA .*\[(?P<uid>\d+)\] with SPIs (?P<i>[0-9a-f]{16})_i (?P<r>[0-9a-f]{16})_r"
)
_CHECKOUT = re.compile(r"checkout IKEv[12] SA (?:by message )?with SPIs (?P<i>[0-9a-f]{16})_i (?P<r>[0-9a-f]{16})_r")
_CHECKED_OUT = re.compile(r"IKE_SA .*\[(?P<uid>\d+)\] successfully checked out")
_ADDING = re.compile(r"^(?:adding|registering) (?P<dir>inbound|outbound) (?P<proto>ESP|AH) SA")
_SPI_LINE = re.compile(r"^\s+SPI 0x(?P<spi>[0-9a-fA-F]{1,8}), src (?P<src>\S+) dst (?P<dst>\S+)")

IKE_LABELS = {"Sk_d secret": "sk_d", "Sk_ai secret": "sk_ai", "Sk_ar secret": "sk_ar", "Sk_ei secret": "sk_ei",
              "Sk_er secret": "sk_er", "Sk_pi secret": "sk_pi", "Sk_pr secret": "sk_pr"}
CHILD_LABELS = {"encryption initiator key": "enc_i", "encryption responder key": "enc_r",
                "integrity initiator key": "int_i", "integrity responder key": "int_r"}


def looks_like(text: str) -> bool:
    head = text[:200_000]
    if not _LINE.search(head.split("\n", 1)[0]) and "[IKE]" not in head and "[CHD]" not in head:
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
    adding: tuple[str, str, int] | None = None  # (direction, proto, line)
    last_checkout: tuple[bytes, bytes] | None = None
    last_xchg: str = ""


@dataclass
class _PendingIke:
    keys: dict[str, bytes]
    prop: _Proposal | None
    line: int
    uid: str | None
    # derived in a CREATE_CHILD_SA (IKE rekey): the keys belong to a *new* IKE SA, so the SPIs
    # known for the uid they were logged under (the old SA) must not be used for them
    rekey: bool = False


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
        problem = names.check_key_length(encr, k.get("sk_ei", b""))
        if problem:
            raise KeyFileError(f"Sk_ei does not fit the selected proposal: {problem}", path=path, line=pend.line)
        store.add_ike(IkeSaKeys(
            spi_i=spis[0], spi_r=spis[1], encr=encr, sk_ei=k.get("sk_ei", b""), sk_er=k.get("sk_er", b""),
            integ=prop.integ, sk_ai=k.get("sk_ai", b""), sk_ar=k.get("sk_ar", b""), prf=prop.prf,
            sk_d=k.get("sk_d") or None, icv_len=prop.icv_len, source=f"{path}:{pend.line}",
        ))
        n_ike += 1

    def finish_dump(t: _Thread, tid: str, uid: str | None) -> None:
        label, _n, buf, line = t.dump  # type: ignore[misc]
        t.dump = None
        data = bytes(buf)
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
            if label == "encryption initiator key" or not t.child_keys:
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
        for addr in (src, dst):
            try:
                ipaddress.ip_address(addr)
            except ValueError:
                raise KeyFileError(f"{addr!r} is not an IP address", path=path, line=line) from None
        encr = prop.encr if prop.encr is not None else EncrTransform.ENCR_NULL
        problem = names.check_key_length(encr, enc)
        if problem:
            raise KeyFileError(f"CHILD SA key does not fit the selected proposal: {problem}", path=path,
                               line=t.child_line)
        store.add_esp(EspSaKeys(
            spi=spi, encr=encr, enc_key=enc, integ=prop.integ, auth_key=integ_key, src=src, dst=dst,
            icv_len=prop.icv_len, esn=prop.esn, protocol=3 if proto == "ESP" else 2,
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
            t.dump = None
            if label in IKE_LABELS or label in CHILD_LABELS:
                raise KeyFileError(f"hex dump of {label!r} has {len(buf)} of {n} bytes (log lines filtered "
                                   "out or interleaved?)", path=path, line=line0)
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
            t.last_xchg = p.group("xchg")
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
    if n_ike == 0 and n_child == 0:
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
