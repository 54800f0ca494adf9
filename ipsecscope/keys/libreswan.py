"""Libreswan pluto debug logs (``plutodebug="base crypt private"``).

Read from real Libreswan 4.10 logs (tests/data/keys/libreswan/, made by two pluto peers; see its
README). Libreswan keeps keys inside NSS, so what a log holds depends on the debug flags:
``private`` alone prints no key; ``crypt`` + ``private`` makes pluto extract and dump them.
What we read (every debug line starts with ``| `` after an optional time/syslog prefix):

* IKEv2 SA keys, one line per direction, written when the IKE SA is established
  (``ikev2_log_parentSA``; meant for Wireshark's ikev2_decryption_table)::

      | ikev2 I 0xafbbea7cd6abb979 0x99fbeb6db44fb91f sha256:0x328e...49b8 aes256:0x1fd4...342b
      | ikev2 R 0xafbbea7cd6abb979 0x99fbeb6db44fb91f sha256:0x3904...e3bd aes256:0xbe5f...1c8f

  ``I`` = SK_ai/SK_ei (initiator->responder), ``R`` = SK_ar/SK_er. Names are Libreswan's
  ``*_tcpdump_name`` with the key size in bits glued to the cipher (``aes_gcm_16256`` =
  AES_GCM_16 with a 256-bit key); an AEAD has ``none:`` (no key) as integrity.
  For AEAD/CTR ciphers the line carries the cipher key *without* its salt (RFC 5282 §7.1: the
  last 4 bytes of SK_e* are the salt). The salts are in the key derivation that precedes it::

      | calculating skeyseed using prf=HMAC_SHA2_256 integ=NONE cipherkey-size=32 salt-size=4
      | initiator salt extracting all 4 bytes of key@0x559bea7d68a0
      | unwrapped:
      |   51 07 5f aa  00 00 00 00  00 00 00 00  00 00 00 00   Q._.............

  (the unwrapped buffer is padded to the NSS block size; the first N bytes are the salt).
  Derivation and ``ikev2 I|R`` line are a round trip apart, and other SAs can be keyed in
  between, so both are tied to pluto's state number: ``completing DH shared secret for #1/#3``
  starts the derivation for state #3 (also for an IKE SA rekey), ``pstats #3 ikev2.ike
  established`` comes just before its ``ikev2 I|R`` lines. Without those lines (a filtered log)
  the most recent derivation is used. SK_d is not logged, so ipsecscope cannot derive CHILD keys
  from these IKE SAs.
* CHILD SA keys, dumped by the kernel code just before each SA is installed (so only on a host
  that got as far as installing; the log has them even when the install then fails)::

      | ESP enckey:
      |   59 11 02 99  31 1b 9b 61  29 fd 7a 18  d2 50 a2 92   Y...1..a).z..P..
      |   ...
      | ESP authkey:
      | kernel: add_sa() level=0 outbound tunnel 198.18.1.2/32-ALL->198.18.1.2[99a07782]==>198.18.1.1-ALL->198.18.1.1/32 +esn replay_window=128 NONE:0 AES_GCM_16:36

  The ``add_sa()`` line names the SA exactly as it appears on the wire (outer src, SPI, outer
  dst), the algorithms (Libreswan's fqn names, as strongSwan's) and key sizes in bytes; the
  encryption key includes the salt; UDP encapsulation (RFC 3948) shows as ``[SPI]=espinudp==>``.
  IKEv1 Quick Mode SAs are logged the same way.

Not in a 4.10 log at all: IKEv1 phase-1 keys (SKEYID_e stays inside NSS), so IKEv1 Main/Aggressive
Mode payloads cannot be decrypted from it.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from ..errors import KeyFileError
from ..model.iana import EncrTransform as E
from ..model.iana import IntegTransform as I  # noqa: E741
from ..model.keys import EspSaKeys, IkeSaKeys
from ..model.plural import with_article
from . import names
from .names import shown
from .store import KeyStore

_IKE_LINE = re.compile(names.IKE_LINE_PATTERN)

# What precedes "| " on a debug line: pluto's own logfile time ("Nov 25 21:19:54.801687: "),
# syslog/journal ("Nov 25 21:19:54 host pluto[512]: "), ISO time, or nothing (--log-no-time).
_PREFIX = (r"(?:[A-Z][a-z]{2} +\d{1,2} \d\d:\d\d:\d\d(?:\.\d+)?:? (?:\S+ pluto\[\d+\]: )?"
           r"|\d{4}-\d\d-\d\dT\S+ (?:\S+ pluto\[\d+\]: )?|\S+ pluto\[\d+\]: |)")
_PLUTO = re.compile(r"^(?P<prefix>" + _PREFIX + r")\| (?P<msg>[^\n]*)", re.MULTILINE)
# A debug line with --log-no-time is "| ..." and nothing else, as every row of a markdown table
# is: there only what pluto itself writes after the bar tells its log, the source location that
# ends most of its debug lines ("(main() +1602 /programs/pluto/plutomain.c)") or a line this
# parser reads.
_PLUTO_OWN = re.compile(r"\(\S+\(\) \+\d+ \S*programs/pluto/\S+\)|^(?:calculating skeyseed using |"
                        r"completing DH shared secret for #|pstats #\d+ |add_sa\(\) level=|ikev2 [IR] 0x|\*\*(?:parse|emit) )")
_DEBUG = re.compile(r"^" + _PREFIX + r"\| (?P<msg>.*)$")
_SKEYSEED = re.compile(r"^calculating skeyseed using prf=(?P<prf>\S+) integ=\S+ cipherkey-size=\d+ salt-size=(?P<salt>\d+)")
_KEYING = re.compile(r"^completing DH shared secret for #\d+/#(?P<st>\d+)")
_ESTABLISHED = re.compile(r"^pstats #(?P<st>\d+) ikev2\.ike established")
_SALT = re.compile(r"^(?P<who>initiator|responder) salt extracting all (?P<n>\d+) bytes of key")
_ADD_SA = re.compile(
    r"add_sa\(\) level=\d+ (?P<dir>inbound|outbound) \S+ \S*?(?:->)?(?P<src>[^\s>\[]+)\[(?P<spi>[0-9a-fA-F]{1,8})\]"
    r"(?:=(?P<encap>[a-z]+))?==>(?P<dst>[^\s\-\[]+)\S* (?P<flags>(?:\S+ )*?)(?P<integ>[A-Z0-9_]+):(?P<ilen>\d+) "
    r"(?P<encr>[A-Z0-9_]+):(?P<elen>\d+)\s*$"
)
_ROW = re.compile(r"^  [0-9a-f]{2}(?: |$)")
_HEX = re.compile(r"^[0-9a-f]{2}$")

# Libreswan fqn names in add_sa() lines that strongSwan spells differently.
_LSW_FQN_ENCR = {"NULL_AUTH_AES_GMAC": E.ENCR_NULL_AUTH_AES_GMAC, "CAMELLIA_CBC": E.ENCR_CAMELLIA_CBC}
_LSW_FQN_INTEG = {"NONE": I.NONE}
# "prf=HMAC_SHA2_256" in the skeyseed line
_LSW_PRF = {k.removeprefix("PRF_"): v for k, v in names.SWAN_PRF.items()} | {"AES_XCBC": names.SWAN_PRF["PRF_AES128_XCBC"]}


def looks_like(text: str) -> bool:
    head = text[:200_000]
    low = head.lower()
    if "pluto" not in low and "libreswan" not in low:
        return False
    # pluto's line format, not the word: a document about pluto with a table in it is no log
    n = 0
    for m in _PLUTO.finditer(head):
        if m.group("prefix") or _PLUTO_OWN.search(m.group("msg")):
            n += 1
            if n >= 3:
                return True
    return False


def _hex(text: str, what: str, path: str, line: int) -> bytes:
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise KeyFileError(f"{what} is not hex", path=path, line=line) from None


@dataclass
class _Derivation:
    """The last "calculating skeyseed": PRF and the salts dumped while deriving the SK_* keys."""

    prf: int | None = None
    salt_size: int = 0
    salts: dict[str, bytes] = field(default_factory=dict)  # "initiator"/"responder" -> salt
    line: int = 0


@dataclass
class _Dump:
    """A hex dump being read: ``want`` bytes (None = until the rows end)."""

    label: str
    line: int
    want: int | None
    started: bool = False  # for salts: rows begin after "unwrapped:"
    buf: bytearray = field(default_factory=bytearray)


@dataclass
class _HalfIke:
    integ: int
    encr: int
    enc_key: bytes
    auth_key: bytes
    prf: int | None
    line: int


def parse(text: str, path: str, store: KeyStore | None = None) -> KeyStore:
    store = store if store is not None else KeyStore()
    deriv = _Derivation()
    derivs: dict[str, _Derivation] = {}  # pluto state number -> its key derivation
    keying: str | None = None  # state whose keys are being derived ("completing DH ... #P/#N")
    established: str | None = None  # state of the last "pstats #N ikev2.ike established"
    dump: _Dump | None = None
    esp_keys: dict[str, tuple[bytes, int]] = {}  # "enc"/"auth" -> (key, line of its dump)
    halves: dict[tuple[bytes, bytes], dict[str, _HalfIke]] = {}
    saw_debug = saw_private = saw_ikev1 = False
    n_ike = n_esp = 0
    warnings: list[str] = []

    def end_dump() -> None:
        nonlocal dump
        assert dump is not None
        if dump.label in ("initiator", "responder"):
            if dump.want is not None and len(dump.buf) < dump.want:
                # a damaged dump costs only the IKE SA that needs this salt (its 'ikev2' line says so)
                warnings.append(f"{path}:{dump.line}: {dump.label} salt dump has {len(dump.buf)} of {dump.want} "
                                "bytes (log cut or lines filtered out?); skipped")
            else:
                deriv.salts[dump.label] = bytes(dump.buf[: dump.want])
        else:
            esp_keys[dump.label] = (bytes(dump.buf), dump.line)
        dump = None

    for lineno, raw in enumerate(text.splitlines(), 1):
        m = _DEBUG.match(raw)
        if not m:
            continue
        saw_debug = True
        msg = m.group("msg")
        if not saw_ikev1 and "IKEv1" in msg:
            saw_ikev1 = True
        if dump is not None:
            if dump.label in ("initiator", "responder") and not dump.started:
                if msg.startswith("unwrapped:"):
                    dump.started = True
                continue  # "... salt: symkey-key@", "sizeof bytes", "wrapper: ..." lines
            if _ROW.match(msg) or (dump.label in ("enc", "auth") and not msg.strip()):
                hexpart = re.split(r" {3,}", msg.strip(), maxsplit=1)[0]
                for tok in hexpart.split():
                    if not _HEX.match(tok):
                        break
                    if dump.want is None or len(dump.buf) < dump.want:
                        dump.buf.append(int(tok, 16))
                if dump.want is not None and len(dump.buf) >= dump.want and dump.label in ("initiator", "responder"):
                    end_dump()
                continue
            end_dump()

        if msg.startswith("ikev2 ") and (im := _IKE_LINE.match(msg)):
            saw_private = True
            try:
                integ_name, encr_token = im.group("integ"), im.group("encr")
                integ = names.IKE_LINE_INTEG.get(integ_name)
                enc = names.ike_line_encr(encr_token)
                if integ is None or enc is None:
                    bad = integ_name if integ is None else encr_token
                    raise KeyFileError(f"unknown Libreswan algorithm name {shown(bad)} in 'ikev2 {im.group('dir')}' line",
                                       path=path, line=lineno)
                encr, key_len = enc
                ek = _hex(im.group("ek"), "the encryption key", path, lineno)
                ak = _hex(im.group("ak") or "", "the integrity key", path, lineno)
                if key_len is not None and len(ek) != key_len:
                    raise KeyFileError(f"{encr_token} needs {with_article(f'{key_len}-byte')} key, got {len(ek)} bytes", path=path,
                                       line=lineno)
                d = derivs.get(established, deriv) if established is not None else deriv
                salt_len = names.SALT_LEN.get(encr, 0)
                if salt_len:
                    who = "initiator" if im.group("dir") == "I" else "responder"
                    salt = d.salts.get(who)
                    if salt is None or len(salt) != salt_len:
                        raise KeyFileError(
                            f"{encr_token} needs the {salt_len}-byte {who} salt, which pluto logs while deriving the "
                            "keys ('initiator|responder salt extracting all N bytes', debug 'crypt' + 'private'); "
                            "none before this line", path=path, line=lineno)
                    ek += salt
                problem = names.check_key_length(encr, ek)
                if problem:
                    raise KeyFileError(problem, path=path, line=lineno)
                spis = (bytes.fromhex(im.group("spi_i")), bytes.fromhex(im.group("spi_r")))
                halves.setdefault(spis, {})[im.group("dir")] = _HalfIke(integ, encr, ek, ak, d.prf, lineno)
                pair = halves[spis]
                if "I" in pair and "R" in pair:
                    i, r = pair.pop("I"), pair.pop("R")
                    if (i.encr, i.integ) != (r.encr, r.integ):
                        raise KeyFileError("'ikev2 I' and 'ikev2 R' lines of this IKE SA name different algorithms",
                                           path=path, line=lineno)
                    store.add_ike(IkeSaKeys(
                        spi_i=spis[0], spi_r=spis[1], encr=i.encr, sk_ei=i.enc_key, sk_er=r.enc_key, integ=i.integ,
                        sk_ai=i.auth_key, sk_ar=r.auth_key, prf=i.prf, source=f"{path}:{min(i.line, r.line)}"))
                    n_ike += 1
            except KeyFileError as exc:  # one bad record costs only itself
                store.skip(exc)
            continue
        if msg.startswith("calculating skeyseed"):
            sm = _SKEYSEED.match(msg)
            if sm:
                deriv = _Derivation(prf=_LSW_PRF.get(sm.group("prf")), salt_size=int(sm.group("salt")), line=lineno)
                if keying is not None:
                    derivs[keying] = deriv
                    keying = None
            continue
        if msg.startswith("completing DH shared secret") and (km := _KEYING.match(msg)):
            keying = km.group("st")
            continue
        if msg.startswith("pstats #") and (em := _ESTABLISHED.match(msg)):
            established = em.group("st")
            continue
        sm = _SALT.match(msg)
        if sm:
            dump = _Dump(sm.group("who"), lineno, int(sm.group("n")))
            continue
        if msg == "ESP enckey:" or msg == "ESP authkey:":
            saw_private = True
            dump = _Dump("enc" if "enckey" in msg else "auth", lineno, None, started=True)
            continue
        if "add_sa() level=" in msg:
            am = _ADD_SA.search(msg)
            if not am:
                raise KeyFileError("cannot read this add_sa() line (expected '...->SRC[SPI]==>DST... INTEG:N "
                                   "ENCR:N')", path=path, line=lineno)
            if "enc" not in esp_keys:
                continue  # without 'private' pluto dumps no keys before add_sa
            enc, enc_line = esp_keys.pop("enc")
            auth, _ = esp_keys.pop("auth", (b"", lineno))
            try:
                encr_name, integ_name = am.group("encr"), am.group("integ")
                sw = names.parse_swan_encr(encr_name)
                encr = _LSW_FQN_ENCR.get(encr_name, sw[0] if sw else None)
                integ_t = names.SWAN_INTEG.get(integ_name)
                integ = _LSW_FQN_INTEG.get(integ_name, integ_t[0] if integ_t else None)
                if encr is None or integ is None:
                    bad = encr_name if encr is None else integ_name
                    raise KeyFileError(f"unknown Libreswan algorithm name {shown(bad)} in add_sa() line", path=path,
                                       line=lineno)
                if len(enc) != int(am.group("elen")) or len(auth) != int(am.group("ilen")):
                    raise KeyFileError(
                        f"the ESP key dumps before this line have {len(enc)}+{len(auth)} bytes, add_sa() says "
                        f"{am.group('elen')}+{am.group('ilen')} (log cut or lines filtered out?)", path=path, line=lineno)
                problem = names.check_key_length(encr, enc)
                if problem:
                    raise KeyFileError(problem, path=path, line=lineno)
                for addr in (am.group("src"), am.group("dst")):
                    try:
                        ipaddress.ip_address(addr)
                    except ValueError:
                        raise KeyFileError(f"{shown(addr)} in add_sa() is not an IP address", path=path, line=lineno) from None
                flags = am.group("flags").split()
                store.add_esp(EspSaKeys(
                    spi=int(am.group("spi"), 16), encr=encr, enc_key=enc, integ=integ, auth_key=auth,
                    src=am.group("src"), dst=am.group("dst"), esn="+esn" in flags,
                    icv_len=integ_t[1] if integ_t else None, source=f"{path}:{enc_line}"))
                n_esp += 1
            except KeyFileError as exc:  # one bad record costs only itself
                store.skip(exc)
            continue

    for spis, pair in halves.items():
        for d, half in pair.items():
            other = "R" if d == "I" else "I"
            warnings.append(f"{path}:{half.line}: IKE SA {spis[0].hex()}_{spis[1].hex()} has an 'ikev2 {d}' line "
                            f"but no 'ikev2 {other}' line (log cut short?); skipped")
    if n_ike == 0 and n_esp == 0:
        if store.skipped:
            raise store.skipped[0]
        if warnings:
            hint = warnings[0]
        elif not saw_debug:
            hint = "a Libreswan log without debug lines"
        elif not saw_private:
            hint = ("no key material in this pluto log: pluto prints keys only with plutodebug=\"base crypt "
                    "private\" in ipsec.conf (or 'ipsec whack --debug crypt --debug private'), and only for SAs "
                    "established after that; 'ip xfrm state' on the Libreswan host also shows the ESP keys")
            if saw_ikev1:
                hint += (". Libreswan never logs IKEv1 phase-1 keys; an IKEv1 SA's ESP keys are in the log of the "
                         "host that installed it")
        else:
            hint = "no complete key record in this pluto log (log cut short?)"
        raise KeyFileError(hint, path=path)
    store.warnings.extend(warnings)
    return store
