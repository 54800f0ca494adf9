"""Wireshark display filters over ipsecscope's frames: the language (this module, stdlib only) and
the field names. ``ipsecscope.filtering`` evaluates a compiled filter over a session's rows.

The syntax and semantics are tshark's (Wireshark 4.0 ``-Y``)::

    esp.spi == 0xc254fe64 && icmp.type == 8        ip.addr == 10.2.0.0/24 and not isakmp
    frame.number >= 5 && frame.number <= 15        udp.port in {500, 4500}   tcp.flags.syn == 1
    dns.qry.name contains "example"                 isakmp.exchangetype == 36

- A field matches when *any* layer of the frame has it with a matching value: ``ip.src`` is the
  outer source, the decrypted inner packet's source, and the source quoted in an ICMP error alike.
- ``a != b`` is true when ``a`` is present and *no* occurrence equals ``b`` (Wireshark ≥ 3.6);
  ``a ~= b`` (``any_ne``) when some occurrence differs; ``a === b`` (``all_eq``) when all equal.
- A bare field (``esp``, ``icmp.type``) tests presence. Operators: ``==`` ``!=`` ``<`` ``>`` ``<=``
  ``>=`` (or ``eq ne lt gt le ge``), ``in {…}`` (values and ``a..b`` ranges), ``contains``,
  ``matches`` (a regular expression, case-insensitive as in Wireshark), ``&&``/``and``,
  ``||``/``or``, ``!``/``not``, parentheses.
- Fields tshark has no name for live under ``ipsecscope.`` (finding code, CHILD SA id, decryption
  status...): see :data:`FIELDS`.

The short forms of earlier versions stay as aliases (terms side by side are ANDed)::

    ike  nat-ka  malformed  other  ike,esp          spi=0x…  src=/dst=/host=ADDR[/LEN]
    port=/sport=/dport=N   frame=N[-M]   seq=N[-M]   child=N   finding=CODE[*]
    icv=bad|ok   status=no-key|decrypted|verified|icv-bad|malformed   info=TEXT   key=a,b (either)

Errors are :class:`FilterError` with the character position of the offending token.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from .plural import with_article

# Field types: how a literal is read and compared.
PROTO = "protocol"  # presence only (a protocol layer, or an FT_NONE flag)
UINT = "unsigned integer"
BOOL = "boolean"
TIME = "time (seconds)"
IPV4 = "IPv4 address"
IPV6 = "IPv6 address"
BYTES = "byte string"
STRING = "string"


@dataclass(frozen=True, slots=True)
class FieldDef:
    name: str
    type: str
    doc: str


def _f(name: str, type_: str, doc: str) -> tuple[str, FieldDef]:
    return name, FieldDef(name, type_, doc)


FIELDS: dict[str, FieldDef] = dict([
    _f("frame", PROTO, "every frame"),
    _f("frame.number", UINT, "frame number (1-based)"),
    _f("frame.len", UINT, "frame length on the wire"),
    _f("frame.time_relative", TIME, "seconds since the first frame"),
    _f("frame.time_epoch", TIME, "seconds since 1970"),
    _f("ip", PROTO, "an IPv4 header (outer, inner, or quoted in an ICMP error)"),
    _f("ip.src", IPV4, "IPv4 source (address or CIDR)"),
    _f("ip.dst", IPV4, "IPv4 destination"),
    _f("ip.addr", IPV4, "IPv4 source or destination"),
    _f("ip.proto", UINT, "IPv4 protocol number"),
    _f("ip.version", UINT, "IP version of an IP header (4; 6 of an IPv6 header, as tshark)"),
    _f("ipv6", PROTO, "an IPv6 header"),
    _f("ipv6.src", IPV6, "IPv6 source (address or prefix)"),
    _f("ipv6.dst", IPV6, "IPv6 destination"),
    _f("ipv6.addr", IPV6, "IPv6 source or destination"),
    _f("ipv6.nxt", UINT, "IPv6 fixed header's next header (an extension header's number when one follows)"),
    _f("ipv6.hopopts", PROTO, "an IPv6 Hop-by-Hop Options header (outer)"),
    _f("ipv6.hopopts.nxt", UINT, "next header after the Hop-by-Hop Options"),
    _f("ipv6.dstopts", PROTO, "an IPv6 Destination Options header (outer)"),
    _f("ipv6.dstopts.nxt", UINT, "next header after the Destination Options"),
    _f("ipv6.routing", PROTO, "an IPv6 Routing header (outer)"),
    _f("ipv6.routing.nxt", UINT, "next header after the Routing header"),
    _f("ipv6.fraghdr", PROTO, "an IPv6 Fragment header (outer)"),
    _f("ipv6.fraghdr.nxt", UINT, "next header after the Fragment header"),
    _f("udp", PROTO, "a UDP header"),
    _f("udp.srcport", UINT, "UDP source port"),
    _f("udp.dstport", UINT, "UDP destination port"),
    _f("udp.port", UINT, "UDP source or destination port"),
    _f("tcp", PROTO, "a TCP header"),
    _f("tcp.srcport", UINT, "TCP source port"),
    _f("tcp.dstport", UINT, "TCP destination port"),
    _f("tcp.port", UINT, "TCP source or destination port"),
    _f("tcp.flags", UINT, "TCP flags (0x002 SYN, 0x010 ACK, ...)"),
    _f("tcp.flags.syn", BOOL, "SYN flag (0/1)"),
    _f("tcp.flags.ack", BOOL, "ACK flag"),
    _f("tcp.flags.fin", BOOL, "FIN flag"),
    _f("tcp.flags.reset", BOOL, "RST flag"),
    _f("tcp.flags.push", BOOL, "PSH flag"),
    _f("icmp", PROTO, "an ICMP header"),
    _f("icmp.type", UINT, "ICMP type (8 echo request, 0 echo reply, 3 unreachable, ...)"),
    _f("icmp.code", UINT, "ICMP code"),
    _f("icmp.ident", UINT, "ICMP echo identifier"),
    _f("icmp.seq", UINT, "ICMP echo sequence number"),
    _f("icmpv6", PROTO, "an ICMPv6 header"),
    _f("icmpv6.type", UINT, "ICMPv6 type (128 echo request, 129 echo reply, ...)"),
    _f("icmpv6.code", UINT, "ICMPv6 code"),
    _f("dns", PROTO, "DNS (UDP port 53)"),
    _f("dns.id", UINT, "DNS transaction ID"),
    _f("dns.flags.response", BOOL, "DNS response flag (0 query, 1 response)"),
    _f("dns.qry.name", STRING, "DNS query name"),
    _f("dns.qry.type", UINT, "DNS query type (1 A, 28 AAAA, ...)"),
    _f("esp", PROTO, "an ESP packet"),
    _f("esp.spi", UINT, "ESP SPI"),
    _f("esp.sequence", UINT, "ESP sequence number (the 32 bits on the wire)"),
    _f("esp.protocol", UINT, "ESP next header (known once decrypted)"),
    _f("ah", PROTO, "an AH packet"),
    _f("ah.spi", UINT, "AH SPI"),
    _f("ah.sequence", UINT, "AH sequence number"),
    _f("enc", PROTO, "an OpenBSD enc(4) frame (link type 109: the cleartext side of an SA)"),
    _f("enc.spi", UINT, "enc(4) header: the SPI of the SA the frame is the cleartext side of"),
    _f("enc.flags", UINT, "enc(4) header flags (0x400 confidential, 0x800 authentic, 0x1000 compressed, 0x2000 AH)"),
    _f("udpencap", PROTO, "UDP port 4500 (RFC 3948)"),
    _f("udpencap.nat_keepalive", PROTO, "a NAT-keepalive (RFC 3948 §2.3)"),
    _f("isakmp", PROTO, "an IKE message (IKEv1 or IKEv2)"),
    _f("isakmp.ispi", BYTES, "initiator SPI (8 bytes: b1:b8:da:23:a0:04:d0:38 or b1b8da23a004d038)"),
    _f("isakmp.rspi", BYTES, "responder SPI"),
    _f("isakmp.exchangetype", UINT, "exchange type (34 IKE_SA_INIT, 35 IKE_AUTH, 36 CREATE_CHILD_SA, "
                                    "37 INFORMATIONAL; IKEv1 2 Main, 4 Aggressive, 32 Quick, 5 Informational)"),
    _f("isakmp.messageid", UINT, "message ID"),
    _f("isakmp.nextpayload", UINT, "next-payload field of the header, any payload or SA proposal/transform (decrypted ones too)"),
    _f("isakmp.notify.msgtype", UINT, "notify message type of any Notify payload (decrypted ones too)"),
    _f("isakmp.version", UINT, "version octet (0x20 IKEv2, 0x10 IKEv1)"),
    _f("isakmp.flags", UINT, "header flags"),
    _f("isakmp.length", UINT, "message length"),
    _f("isakmp.frag.number", UINT, "IKEv2 SKF Fragment Number (RFC 7383 §2.5)"),
    _f("isakmp.frag.total", UINT, "IKEv2 SKF Total Fragments (RFC 7383 §2.5)"),
    _f("isakmp.frag.packetid", UINT, "IKEv1 Fragment payload (132): Fragment ID"),
    _f("isakmp.frag.seq", UINT, "IKEv1 Fragment payload (132): fragment number"),
    _f("isakmp.frag.last", UINT, "IKEv1 Fragment payload (132): 1 on the piece flagged last"),
    _f("ipsecscope.kind", STRING, "row kind: IKE, ESP, AH, NAT-KA, MALFORMED, OTHER"),
    _f("ipsecscope.status", STRING, "decrypted, icv-bad, no-key, malformed (IKE and ESP); verified, unverified (AH with keys)"),
    _f("ipsecscope.decrypted", PROTO, "ESP decrypted: the inner packet's fields are there"),
    _f("ipsecscope.child", UINT, "CHILD SA id (as in `sas`)"),
    _f("ipsecscope.ike_sa", STRING, "IKE SA key: <SPIi hex>_<SPIr hex>"),
    _f("ipsecscope.seq", UINT, "ESP/AH sequence number with inferred ESN high bits (RFC 4303 App. A)"),
    _f("ipsecscope.finding", STRING, "code of a finding this frame is evidence of (ESP-SEQ-GAP, ...)"),
    _f("ipsecscope.info", STRING, "the Info column"),
])
# Other spellings of the same field (newer Wireshark releases renamed some).
FIELD_ALIASES = {"isakmp.exchtype": "isakmp.exchangetype", "ipsecscope.child_sa": "ipsecscope.child"}

KINDS = {"ike": "IKE", "esp": "ESP", "ah": "AH", "nat-ka": "NAT-KA", "keepalive": "NAT-KA",
         "malformed": "MALFORMED", "other": "OTHER"}
STATUSES = ("decrypted", "verified", "icv-bad", "no-key", "malformed", "replay", "gap", "unverified")
KEYWORDS = ("spi", "src", "dst", "host", "port", "sport", "dport", "frame", "seq", "child", "finding",
            "icv", "status", "info")

RELOPS = {"==": "==", "eq": "==", "any_eq": "==", "!=": "!=", "ne": "!=", "all_ne": "!=",
          "~=": "~=", "any_ne": "~=", "!==": "~=", "===": "===", "all_eq": "===",
          "<": "<", "lt": "<", ">": ">", "gt": ">", "<=": "<=", "le": "<=", ">=": ">=", "ge": ">="}


class FilterError(ValueError):
    """The filter text could not be understood. ``pos`` is the 0-based character position of the
    offending token (None when the whole text is at fault); the message says what would work."""

    def __init__(self, message: str, pos: int | None = None) -> None:
        super().__init__(message if pos is None else f"{message} (at character {pos + 1})")
        self.reason = message
        self.pos = pos

    def caret(self, text: str) -> str:
        """Two lines: the filter and a ``^`` under the offending character."""
        return text if self.pos is None else f"{text}\n{' ' * self.pos}^"


# -- the syntax tree ----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Test:
    """``field`` [op value]: op None tests presence. ``value`` is typed for the field: int, float,
    bytes, str, an ipaddress network, a compiled regex (matches), or for ``in`` a tuple of
    (low, high) pairs (equal for single values)."""

    field: str
    op: str | None = None
    value: object = None
    pos: int = 0


@dataclass(frozen=True, slots=True)
class And:
    left: Node
    right: Node


@dataclass(frozen=True, slots=True)
class Or:
    left: Node
    right: Node


@dataclass(frozen=True, slots=True)
class Not:
    expr: Node


Node = Test | And | Or | Not


@dataclass(slots=True)
class Filter:
    """A compiled filter: ``text`` as typed, ``tree`` its syntax tree (None: matches everything),
    ``findings`` the finding code -> evidence frames map ``ipsecscope.finding`` reads."""

    text: str
    tree: Node | None = None
    findings: dict[str, set[int]] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return self.tree is None

    def fields(self) -> set[str]:
        out: set[str] = set()

        def walk(n: Node | None) -> None:
            if isinstance(n, Test):
                out.add(n.field)
            elif isinstance(n, And | Or):
                walk(n.left)
                walk(n.right)
            elif isinstance(n, Not):
                walk(n.expr)

        walk(self.tree)
        return out


# -- tokens -------------------------------------------------------------------------------------

_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<str>"(?:[^"\\]|\\.)*"?)
  | (?P<op>===|!==|==|!=|~=|<=|>=|&&|\|\||<|>|!|\(|\)|\{|\}|,|\.\.(?!\.))
  | (?P<word>[A-Za-z0-9_:./\-*+]+(?:=(?!=)[^\s()]*)?)
""", re.VERBOSE)


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str  # "str" | "op" | "word" | "end"
    text: str
    pos: int


def _tokens(text: str) -> list[_Tok]:
    out: list[_Tok] = []
    i = 0
    while i < len(text):
        m = _TOKEN.match(text, i)
        if m is None:
            raise FilterError(f"{text[i]!r} is not part of the filter language", i)
        kind = m.lastgroup or "ws"
        if kind == "str" and (len(m.group()) < 2 or not m.group().endswith('"') or m.group().endswith('\\"')):
            raise FilterError("string not closed: a closing \" is missing", i)
        if kind == "word" and ".." in m.group() and "=" not in m.group():
            # "1..5" inside a set: split around the range operator
            w = m.group()
            lo, _, hi = w.partition("..")
            if lo:
                out.append(_Tok("word", lo, i))
            out.append(_Tok("op", "..", i + len(lo)))
            if hi:
                out.append(_Tok("word", hi, i + len(lo) + 2))
        elif kind != "ws":
            out.append(_Tok(kind, m.group(), i))
        i = m.end()
    # Outside a set, "ike,esp" and "port=500,4500" are one short-form term: join word,word.
    merged: list[_Tok] = []
    depth = 0
    for t in out:
        depth += (t.text == "{") - (t.text == "}") if t.kind == "op" else 0
        prev = merged[-1] if merged else None
        if depth == 0 and prev is not None and (
                (t.text == "," and t.kind == "op" and prev.kind == "word" and prev.pos + len(prev.text) == t.pos)
                or (t.kind == "word" and prev.text.endswith(",") and prev.pos + len(prev.text) == t.pos)):
            merged[-1] = _Tok("word", prev.text + t.text, prev.pos)
        else:
            merged.append(t)
    merged.append(_Tok("end", "", len(text)))
    return merged


_WORD_OPS = {"and": "&&", "or": "||", "not": "!", "in": "in", "contains": "contains", "matches": "matches",
             "eq": "eq", "ne": "ne", "lt": "lt", "gt": "gt", "le": "le", "ge": "ge", "any_eq": "any_eq",
             "all_ne": "all_ne", "any_ne": "any_ne", "all_eq": "all_eq"}


def _canon(tok: _Tok) -> str:
    """The operator a token stands for ("&&" for "and", "==" for "eq"...), or ""."""
    if tok.kind == "op":
        return tok.text
    if tok.kind == "word":
        return _WORD_OPS.get(tok.text.lower(), "")
    return ""


# -- parser -------------------------------------------------------------------------------------

class _Parser:
    def __init__(self, text: str, findings: dict[str, set[int]]) -> None:
        self.text = text
        self.toks = _tokens(text)
        self.i = 0
        self.findings = findings

    @property
    def tok(self) -> _Tok:
        return self.toks[self.i]

    def next(self) -> _Tok:
        t = self.toks[self.i]
        self.i += 1
        return t

    def parse(self) -> Node | None:
        if self.tok.kind == "end":
            return None
        node = self.or_expr()
        if self.tok.kind != "end":
            raise FilterError(f"{self.tok.text!r} was unexpected here", self.tok.pos)
        return node

    def or_expr(self) -> Node:
        node = self.and_expr()
        while _canon(self.tok) == "||":
            self.next()
            node = Or(node, self.and_expr())
        return node

    def and_expr(self) -> Node:
        node = self.unary()
        while True:
            c = _canon(self.tok)
            if c == "&&":
                self.next()
                node = And(node, self.unary())
            elif self.tok.kind == "word" and not c or c in ("!", "("):
                node = And(node, self.unary())  # terms side by side: the short form's AND
            else:
                return node

    def unary(self) -> Node:
        c = _canon(self.tok)
        if c == "!":
            t = self.next()
            if self.tok.kind == "end":
                raise FilterError("'!' must be followed by a term, e.g. !esp", t.pos)
            return Not(self.unary())
        if c == "(":
            t = self.next()
            node = self.or_expr()
            if self.tok.text != ")":
                raise FilterError("'(' is not closed: a ')' is missing", t.pos)
            self.next()
            return node
        return self.test()

    def test(self) -> Node:
        t = self.next()
        if t.kind == "end":
            raise FilterError("the filter ends where a field was expected", t.pos)
        if t.kind != "word":
            raise FilterError(f"{t.text!r} was unexpected here; a field name (e.g. esp.spi) comes first", t.pos)
        if "=" in t.text or "," in t.text or t.text.lower() in KINDS and t.text.lower() not in ("esp", "ah"):
            return _alias(t, self.findings)
        name = FIELD_ALIASES.get(t.text, t.text)
        fd = FIELDS.get(name)
        if fd is None:
            raise FilterError(f"{t.text!r} is neither a field nor a protocol ipsecscope knows; "
                              "see `ipsecscope packets --fields`", t.pos)
        c = _canon(self.tok)
        if c in RELOPS:
            op_tok = self.next()
            op = RELOPS[c]
            if fd.type == PROTO:
                raise FilterError(f"{name} is a protocol: test it alone (e.g. {name} && ...)", op_tok.pos)
            v = self.value()
            if op in ("<", ">", "<=", ">=") and fd.type in (BYTES, STRING, BOOL):
                raise FilterError(f"{op} does not apply to {name} ({with_article(fd.type)})", op_tok.pos)
            return Test(name, op, _literal(fd, v, op), t.pos)
        if c == "in":
            self.next()
            return Test(name, "in", self.set_(fd), t.pos)
        if c == "contains":
            op_tok = self.next()
            if fd.type not in (STRING, BYTES):
                raise FilterError(f"contains applies to strings and byte strings, not {name}", op_tok.pos)
            v = self.value()
            return Test(name, "contains", _literal(fd, v, "contains"), t.pos)
        if c == "matches":
            op_tok = self.next()
            if fd.type != STRING:
                raise FilterError(f"matches applies to strings, not {name}", op_tok.pos)
            v = self.value()
            try:
                rx = re.compile(v.text[1:-1] if v.kind == "str" else v.text, re.IGNORECASE)
            except re.error as exc:
                raise FilterError(f"not a regular expression: {exc}", v.pos) from None
            return Test(name, "matches", rx, t.pos)
        return Test(name, None, None, t.pos)

    def value(self) -> _Tok:
        v = self.next()
        if v.kind not in ("word", "str"):
            raise FilterError("a value was expected here", v.pos)
        name = FIELD_ALIASES.get(v.text, v.text)
        if v.kind == "word" and name in FIELDS and FIELDS[name].type != PROTO and "." in name:
            raise FilterError("comparing two fields is not supported; compare with a value", v.pos)
        return v

    def set_(self, fd: FieldDef) -> tuple:
        open_ = self.next()
        if open_.text != "{":
            raise FilterError("'in' takes a set: in {1, 2, 10..20}", open_.pos)
        items: list[tuple[object, object]] = []
        while True:
            if self.tok.text == "}":
                self.next()
                break
            if self.tok.kind == "end":
                raise FilterError("'{' is not closed: a '}' is missing", open_.pos)
            lo = _literal(fd, self.value(), "==")
            hi = lo
            if self.tok.text == "..":
                self.next()
                hi = _literal(fd, self.value(), "==")
            items.append((lo, hi))
            if self.tok.text == ",":
                self.next()
        if not items:
            raise FilterError("an empty set matches nothing", open_.pos)
        return tuple(items)


def _unquote(s: str) -> str:
    return re.sub(r"\\(.)", r"\1", s[1:-1])


def _literal(fd: FieldDef, tok: _Tok, op: str) -> object:
    raw = _unquote(tok.text) if tok.kind == "str" else tok.text
    t = fd.type
    try:
        if t in (UINT, BOOL):
            if t == BOOL and raw.lower() in ("true", "false"):
                return int(raw.lower() == "true")
            v = int(raw, 0) if not (len(raw) > 1 and raw[0] == "0" and raw[1].isdigit()) else int(raw, 8)
            if v < 0:
                raise ValueError
            return v
        if t == TIME:
            return float(raw)
        if t in (IPV4, IPV6):
            net = ipaddress.ip_network(raw, strict=False)
            if (net.version == 4) != (t == IPV4):
                raise FilterError(f"{raw!r} is an IPv{net.version} address; {fd.name} is {with_article(t)}", tok.pos)
            return net
        if t == BYTES:
            h = raw.lower()
            if h.startswith("0x"):
                h = h[2:]
            h = re.sub(r"[:.\-]", "", h)
            return bytes.fromhex(h)
        return raw
    except FilterError:
        raise
    except ValueError:
        hint = {UINT: "decimal or 0x-hex", BOOL: "0, 1, true or false", TIME: "seconds, e.g. 1.5",
                IPV4: "e.g. 10.1.0.1 or 10.1.0.0/16", IPV6: "e.g. 2001:db8::1 or 2001:db8::/32",
                BYTES: "e.g. b1:b8:da:23 or b1b8da23"}.get(t, "")
        raise FilterError(f"{raw!r} is not a valid {t} for {fd.name} ({hint})", tok.pos) from None


# -- the short forms ----------------------------------------------------------------------------

def _alias(tok: _Tok, findings: dict[str, set[int]]) -> Node:
    """One short-form term (``spi=0x…``, ``ike``, ``frame=1-9``, ``a,b`` lists) as a tree."""
    word, pos = tok.text, tok.pos
    if "=" not in word:
        nodes = []
        for w in word.split(","):
            if w.lower() not in KINDS:
                raise FilterError(f"unknown filter term {w!r}; use a field (ip.src, esp.spi, ...), "
                                  "ike, esp, ah, nat-ka, malformed, other, or key=value", pos)
            nodes.append(_kind(w.lower(), pos))
        return _any(nodes)
    key, _, values = word.partition("=")
    key = key.lower()
    if key not in KEYWORDS:
        raise FilterError(f"unknown filter key {key!r}; use one of {', '.join(KEYWORDS)}", pos)
    vpos = pos + len(key) + 1
    if not values or not values.strip(","):
        raise FilterError(f"{key}= needs a value", pos)
    return _any([_alias_term(key, v, vpos, findings) for v in values.split(",") if v])


def _kind(w: str, pos: int) -> Node:
    if w == "ike":
        return Test("isakmp", pos=pos)
    if w in ("esp", "ah"):
        return Test(w, pos=pos)
    return Test("ipsecscope.kind", "==", KINDS[w], pos)


def _any(nodes: list[Node]) -> Node:
    node = nodes[0]
    for n in nodes[1:]:
        node = Or(node, n)
    return node


def _num(value: str, key: str, pos: int) -> int:
    try:
        return int(value, 0)
    except ValueError:
        raise FilterError(f"{key}={value!r} is not a number (use decimal or 0x-hex)", pos) from None


def _range(key: str, value: str, pos: int, field_: str) -> Node:
    if "-" in value.strip("-"):
        lo_s, _, hi_s = value.partition("-")
        lo, hi = _num(lo_s, key, pos), _num(hi_s, key, pos)
        return Test(field_, "in", ((lo, hi),), pos)
    return Test(field_, "==", _num(value, key, pos), pos)


def _alias_term(key: str, value: str, pos: int, findings: dict[str, set[int]]) -> Node:
    if key == "spi":
        digits = value[2:] if value.lower().startswith("0x") else value
        if len(digits) == 16:  # an 8-octet IKE SPI, either side
            try:
                b = bytes.fromhex(digits)
            except ValueError:
                raise FilterError(f"spi={value!r} is not a number (use decimal or 0x-hex)", pos) from None
            return Or(Test("isakmp.ispi", "==", b, pos), Test("isakmp.rspi", "==", b, pos))
        # SPIs are usually written in hex: accept "c254fe64" as well as 0xc254fe64 and decimal.
        hexed = value if value.isdigit() or value.lower().startswith("0x") else "0x" + value
        try:
            n = int(hexed, 0)
        except ValueError:
            raise FilterError(f"spi={value!r} is not a number (use decimal or 0x-hex)", pos) from None
        return Or(Test("esp.spi", "==", n, pos), Test("ah.spi", "==", n, pos))
    if key in ("src", "dst", "host"):
        try:
            net = ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise FilterError(f"{key}={value!r} is not an IP address or CIDR prefix", pos) from None
        fam = "ip" if net.version == 4 else "ipv6"
        return Test(f"{fam}.{'addr' if key == 'host' else key}", "==", net, pos)
    if key in ("port", "sport", "dport"):
        n = _num(value, key, pos)
        suffix = {"port": "port", "sport": "srcport", "dport": "dstport"}[key]
        return Or(Test(f"udp.{suffix}", "==", n, pos), Test(f"tcp.{suffix}", "==", n, pos))
    if key == "frame":
        return _range(key, value, pos, "frame.number")
    if key == "seq":
        return _range(key, value, pos, "ipsecscope.seq")
    if key == "child":
        return Test("ipsecscope.child", "==", _num(value, key, pos), pos)
    if key == "finding":
        want = value.upper()
        rx = re.escape(want[:-1]) if want.endswith("*") else re.escape(want) + "$"
        return Test("ipsecscope.finding", "matches", re.compile("^" + rx, re.IGNORECASE), pos)
    if key == "icv":
        v = value.lower()
        if v in ("bad", "fail", "failed"):
            return Test("ipsecscope.status", "==", "icv-bad", pos)
        if v in ("ok", "good"):  # ESP decrypted, or an AH ICV verified (crypto.ah)
            return Or(Test("ipsecscope.status", "==", "decrypted", pos), Test("ipsecscope.status", "==", "verified", pos))
        raise FilterError(f"icv={value!r}: use icv=bad or icv=ok", pos)
    if key == "status":
        v = value.lower()
        if v not in STATUSES:
            raise FilterError(f"status={value!r}: use one of {', '.join(STATUSES)}", pos)
        return Test("ipsecscope.status", "==", v, pos)
    # info=TEXT: a case-insensitive substring of the Info column
    return Test("ipsecscope.info", "matches", re.compile(re.escape(value), re.IGNORECASE), pos)


def compile_filter(text: str, findings: dict[str, Iterable[int]] | None = None) -> Filter:
    """Parse ``text``; ``findings`` maps a finding code to its evidence frames (for
    ``ipsecscope.finding`` and ``finding=``). Raises :class:`FilterError` with the position."""
    idx = {code: set(frames) for code, frames in (findings or {}).items()}
    return Filter(text=text, tree=_Parser(text, idx).parse(), findings=idx)


def findings_index(findings: Iterable[object]) -> dict[str, set[int]]:
    """Build the finding code -> frames map from :class:`~ipsecscope.model.sa.Finding` objects."""
    out: dict[str, set[int]] = {}
    for f in findings:
        out.setdefault(f.code, set()).update(getattr(f, "all_frames", f.frames))  # type: ignore[attr-defined]
    return out
