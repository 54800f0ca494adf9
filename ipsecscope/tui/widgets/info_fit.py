"""A frame's Info in an Info cell too narrow for it: the least useful part goes, not the tail.

At 80 columns (SA tree open) the packet list's Info cell has 20-35 cells. Cut at its end,
``ARP Who has 10.2.0.7? Tell 10.1.0.5`` read ``ARP Who has 10.2.0.7…`` (who asks lost),
``ESP seq 1 ▸ ICMP 10.1.0.1 → 10.2.0.1 Echo…`` lost the inner destination and
``IKE_AUTH response #1 [ SK N(AUTHENTICATION_FAILED) ] (decrypted)`` the one payload that says
why the exchange failed. :func:`fit_info` rewrites the text in steps, each dropping or shortening
what says least (what another column says already, tshark's per-packet detail, filler words,
status notifies), and stops at the first that fits; only then is the rest cut at its end, never
inside an address (:func:`~ipsecscope.model.idtext.short_addr` cuts one at its group boundaries).
The whole text stays in the detail pane and in ``packets`` output.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache

from ...model.iana_ike import Ikev1NotifyType, NotifyType
from ...model.idtext import short_addr

_ARP_ASK = re.compile(r"^ARP Who has (\S+)\? Tell (\S+)$")
_ARP_PROBE = re.compile(r"^ARP Who has (\S+)\? \(ARP Probe\)$")
_ARP_AT = re.compile(r"^ARP (\S+) is at (\S+)$")
_ARP_ANNOUNCE = re.compile(r"^ARP Announcement for (\S+)$")
_ARP_GRATUITOUS = re.compile(r"^Gratuitous ARP for (\S+) \((Request|Reply)\)$")


def _arp_forms(info: str) -> list[str]:
    """Shorter forms of an ARP Info (tshark's words, RFC 826/5227), most readable first; tcpdump's
    ``who-has``/``tell``/``is-at`` vocabulary is what an engineer reads at a glance."""
    if m := _ARP_ASK.match(info):
        t, s = m.groups()
        # who asks is on the target's link: the groups both share are said once, as the SA tree
        # writes a peer pair ("198.18.0.1 ⇄ .2"): "ARP 192.1.2.23? tell .254"
        ts, ss = t.split("."), s.split(".")
        same = next((i for i in range(3) if ts[i] != ss[i]), 3)
        rest = "." + ".".join(ss[same:]) if same else s
        return [f"ARP {t}? tell {s}", f"ARP {t}? tell {rest}", f"? {t} tell {s}", f"? {t} tell {rest}"]
    if m := _ARP_PROBE.match(info):
        return [f"ARP probe {m[1]}", f"probe {m[1]}"]
    if m := _ARP_AT.match(info):
        ip, mac = m.groups()
        return [f"ARP {ip} at {mac}", f"ARP {ip} at {short_addr(mac, 11)}", f"ARP {ip} at {short_addr(mac, 8)}",
                f"{ip} at {short_addr(mac, 8)}"]
    if m := _ARP_ANNOUNCE.match(info):
        return [f"ARP announce {m[1]}", f"announce {m[1]}"]
    if m := _ARP_GRATUITOUS.match(info):
        kind = "req" if m[2] == "Request" else "reply"
        return [f"GARP {m[1]} ({kind})", f"GARP {m[1]}"]
    return []


# tshark's per-packet detail after the words that name the packet: ICMP "id=0x4627, seq=1/256,
# ttl=64", ICMPv6 "hlim=64", TCP/UDP "Len=120"; none tells one flow from another.
_DETAIL = re.compile(r"(?:,? [A-Za-z]\w*=[^\s,\]]+)+")
# an ICMP error's quoted header ("[UDP 198.18.0.1 → 198.18.0.2 4500 → 4500]"): the quoted
# ESP/AH after it names the SA, and these are its addresses (an IKE payload list has no "→")
_ECHO = re.compile(r"Echo \(ping\) (request|reply) id=0x[0-9a-f]+, seq=(\d+)(?:/\d+)?, (?:ttl|hlim)=\d+")
# an OpenBSD enc(4) frame's header words (decode.inner): the SA's protection flags, which the SA
# tree and the detail pane say; at 80 columns they were all the cell showed ("ENC SPI 0x… (auth…")
_ENC_FLAGS = re.compile(r"^ENC SPI (0x[0-9a-f]+) \((?:authentic|confidential|compressed|AH|unprotected|, )+\)")
_QUOTED_HEADER = re.compile(r" \[[^\[\]]*→[^\[\]]*\]")
_UNREACH = re.compile(r"Destination [Uu]nreachable \(([^()]+)\)")
_V1_FRAGMENT = re.compile(r" fragment (\d+(?:/\d+)?) of message ID \d+ \(Fragment ID \d+\)"
                          r"(?:, reassembled from frames [\d, \u00a0]+)?")
_PAYLOADS = re.compile(r"\[ ([^\[\]]*?) \]")
_NOTIFY = re.compile(r"N\(([A-Z0-9_ ]+)\)")
_ARROW = re.compile(r"(?<=[0-9a-fA-F\]]) → (?=[0-9a-fA-F\[])")
_AH_SPI = re.compile(r"\bAH 0x[0-9a-f]+ seq")
_V1_MODES = {"Main Mode": "MM", "Aggressive Mode": "AM", "Quick Mode": "QM"}
_V1_MODE = re.compile(r"^(Main Mode|Aggressive Mode|Quick Mode)(?= v1 )")
_ESP_SEQ = re.compile(r"^(ESP|AH) seq (\d+)")
_BUNDLE_SEQ = re.compile(r"^AH seq (\d+), ESP seq \1\b")
_INNER_WORDS = re.compile(r"(▸ \S+ \S+→\S+) .*$")
_INNER_PROTO = re.compile(r"▸ \S+ (?=\S+→\S+$)")


@lru_cache(maxsize=256)
def _is_error_notify(name: str) -> bool:
    """An error notify (RFC 7296 §3.10.1: types below 16384; RFC 2408 §3.14.1 likewise for
    IKEv1): the payload that says why an exchange failed. Unknown names count as errors (a
    response with an unknown error type still means the request failed)."""
    for enum in (NotifyType, Ikev1NotifyType):
        try:
            return int(enum[name]) < 16384
        except KeyError:
            continue
    return True


def _tight_payloads(text: str) -> str:
    """``[ SK IDr AUTH ]`` → ``[SK IDr AUTH]``."""
    return _PAYLOADS.sub(lambda m: f"[{m[1]}]", text)


def _status_notifies(text: str) -> str:
    """Status notifies (NAT_DETECTION_*, INITIAL_CONTACT, REKEY_SA...) said as one ``N(…)``;
    error notifies stay."""
    def payloads(m: re.Match[str]) -> str:
        out: list[str] = []
        dropped = False
        for tok in m[1].split(" "):
            n = _NOTIFY.fullmatch(tok)
            if n and not _is_error_notify(n[1]):
                dropped = True
                continue
            out.append(tok)
        if dropped:
            out.append("N(…)")
        return f"[{' '.join(out)}]"
    return re.sub(r"\[([^\[\]]*)\]", payloads, text)


def _only_errors(text: str) -> str:
    """A payload list holding an error notify reduced to its error notifies: the reason the
    exchange failed outlasts the payloads around it."""
    def payloads(m: re.Match[str]) -> str:
        errs = [t for t in m[1].split(" ") if (n := _NOTIFY.fullmatch(t)) and _is_error_notify(n[1])]
        return f"[{' '.join(errs)}]" if errs else m[0]
    return re.sub(r"\[([^\[\]]*)\]", payloads, text)


_STEPS: list[Callable[[str], str]] = [
    lambda t: t.removesuffix(" (decrypted)"),  # the status column's ✓ says so
    lambda t: _DETAIL.sub("", t),
    lambda t: t.replace("Echo (ping) ", "Echo "),
    lambda t: _QUOTED_HEADER.sub("", t),
    lambda t: _UNREACH.sub(r"\1", t).replace("Destination Unreachable", "Unreachable"),
    lambda t: _V1_FRAGMENT.sub(r" frag \1", t),
    _tight_payloads,
    _status_notifies,
    lambda t: _AH_SPI.sub("AH seq", t),  # an AH+ESP line: the tree and detail name the AH SA
    lambda t: _ARROW.sub("→", t),  # "10.1.0.1→10.2.0.1": both hosts whole, a space each side less
    lambda t: _V1_MODE.sub(lambda m: _V1_MODES[m[1]], t),  # MM/AM/QM, as engineers say them
    lambda t: re.sub(r" (request|response) #", lambda m: f" {'req' if m[1] == 'request' else 'resp'} #", t),
    _only_errors,
    lambda t: _BUNDLE_SEQ.sub(r"AH+ESP #\1", t),  # one number where AH's and ESP's agree
    lambda t: _ESP_SEQ.sub(r"\1 #\2", t),
    lambda t: _INNER_WORDS.sub(r"\1", t),  # the inner packet's hosts outlast its words
    lambda t: _INNER_PROTO.sub("▸ ", t),  # ... and its protocol's name
]


def fit_info(info: str, width: int, decrypted: bool = False) -> str:
    """``info`` in at most ``width`` cells, the least useful part left out first (see module doc).
    ``decrypted``: the row's status column shows ✓, so a trailing ``(decrypted)`` can go."""
    if len(info) <= width:
        return info
    return _fit(info, width, decrypted)


# What a cut must leave whole: addresses, error notifies, an ICV or replay verdict (the rest of a text, its tail
# included, says less). A step may drop one on purpose (an ICMP error's quoted header).
_KEY = re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b|\b[0-9a-fA-F]{1,4}(?::[0-9a-fA-F]{0,4}){2,7}\b"
                  r"|N\([A-Z0-9_ ]+\)|\((?:icv-bad|replay)\)")
_IKE = re.compile(r" #\d+ (?:\[|fragment)| v1 #")


def _keys(text: str) -> list[str]:
    return [k for k in _KEY.findall(text)
            if not k.startswith("N(") or _is_error_notify(k[2:-1])]


def _cut_keeps_keys(text: str, width: int) -> str | None:
    """``text`` cut at its end when that loses none of its :data:`_KEY` parts (None otherwise):
    the tail is then the least useful part, and the text is kept as written."""
    cut = cut_at_word(text, width)
    return cut if all(k in cut for k in _keys(text)) else None


@lru_cache(maxsize=8192)  # a list shows the same few texts per width on every row
def _fit(info: str, width: int, decrypted: bool) -> str:
    for form in _arp_forms(info):  # ARP's few words are all meaning: its own shorter forms
        if len(form) <= width:
            return form
        info = form
    # An IKE message's rewrites lose nothing (the ✓, tighter brackets, status notifies as one
    # N(…)): they go first, before a cut drops payloads. Other texts keep their words while a cut
    # at their end keeps every address ('ESP seq 1 ▸ ICMP 10.1.0.1 → 10.2.0.1 Echo…').
    # tshark's echo detail is mostly noise but for its sequence number, which is what tells one
    # ping of a run from the next (the id is the run's, "/20736" the same number byte-swapped)
    info = _ECHO.sub(r"Echo \1 seq=\2", info)
    info = _ENC_FLAGS.sub(r"ENC \1", info)
    if len(info) <= width:
        return info
    keys_first = not _IKE.search(info)
    if keys_first and (cut := _cut_keeps_keys(info, width)) is not None:
        return cut
    text = info
    for k, step in enumerate(_STEPS):
        if k == 0 and not decrypted:
            continue
        new = step(text)
        if new == text:
            continue
        text = new
        if len(text) <= width:
            return text
        if keys_first and (cut := _cut_keeps_keys(text, width)) is not None:
            return cut
    return cut_at_word(text, width)


_ADDRESSY = re.compile(r"^\[?[0-9A-Fa-f]*[.:][0-9A-Fa-f.:]*\]?(?::\d+)?$")


def _short_word(word: str, room: int) -> str | None:
    """``word`` in ``room`` cells: whole, an address cut at its group boundaries (a pair
    ``a→b`` keeps ``a`` whole), else None (a number or address cut anywhere else reads as
    another one: "10.2.…", "0x9264…")."""
    if len(word) <= room:
        return word
    if "→" in word:
        left, _, right = word.partition("→")
        rest = _short_word(right, room - len(left) - 1) if len(left) + 1 < room else None
        return f"{left}→{rest}" if rest else None
    if room >= 4 and _ADDRESSY.match(word) and any(c.isdigit() for c in word):
        return short_addr(word, room)
    return None


def cut_at_word(text: str, width: int) -> str:
    """``text`` cut to ``width`` cells with "…" at its end; the word the cut falls in is cut only
    when it is a plain word that keeps 3 characters, an address is cut at its group boundaries
    (``short_addr``), and a number is left out whole, never shown as a stump."""
    if len(text) <= width:
        return text
    if width <= 1:
        return text[:width]
    start = text.rfind(" ", 0, width - 1) + 1  # the word the cut falls in
    end = text.find(" ", start)
    word = text[start:] if end < 0 else text[start:end]
    core = word.rstrip(",:;")
    if end < 0 or end >= len(text):  # the last word: nothing after it to say "…" for
        short = _short_word(core, width - start)
        if short is not None:
            return text[:start] + short
    elif (short := _short_word(core, width - start - 2)) is not None and len(short) < len(core):
        return f"{text[:start]}{short} …"
    if start and not any(c.isdigit() for c in word) and width - 1 - start >= 3:
        return text[:width - 1] + "…"
    return text[:start] + "…" if start else text[:width - 1] + "…"
