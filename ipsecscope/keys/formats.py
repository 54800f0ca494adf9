"""Every key format ipsecscope knows, in ONE table: :data:`FORMATS`.

Each :class:`KeyFormat` row says how to recognise the format by content (``detect``), how to read
it (``parse``), how to write it (``dump``) and which pcapng Decryption Secrets Block type it travels
in (``dsb_tag``). Everything else is driven from this table, so adding a format is one row here
plus its parser module:

* detection (:func:`detect_format`): the first row whose ``detect`` claims the data, in table order;
* reading key files and DSBs (:func:`parse`, :func:`add_secrets_block`): a DSB of a row's
  ``dsb_tag`` is parsed by that row; ipsecscope's own "IPSK" type carries text in *any* readable
  format and is detected by content like a file, so whatever detection recognises is read;
* ``keys convert --to`` (:func:`output_formats`, :func:`dump`), its ``--help``, the ``-k`` help
  (:func:`input_summary`), and the README key-format table (:func:`readme_table`, checked by
  ``tests/test_keys_formats_table.py``; ``python -m ipsecscope.keys.formats`` prints it).

The parser modules are imported when their row is first used: the charon reader alone costs
~10 ms of start-up that ``ipsecscope decrypt -k keys.json`` never needs. No parser imports this
module, so that is laziness, not a hidden import cycle.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import KeyFileError
from . import dsb, names
from .store import KeyStore

# (data, text, source, store) -> store. ``text`` is ``data`` decoded once (UTF-8, BOM dropped).
ParseFn = Callable[[bytes, str, str, KeyStore], KeyStore]
DetectFn = Callable[[bytes, str], bool]
DumpFn = Callable[[KeyStore, bool], "str | bytes"]


@dataclass(frozen=True, slots=True)
class KeyFormat:
    """One key format: how it is detected, read, written and carried in a pcapng DSB."""

    name: str  # detect_format() answer and `keys convert --to` value
    title: str  # what it is (README, --help)
    example: str  # what it looks like / where it comes from (README)
    detect: DetectFn | None  # None: written only
    parse: ParseFn | None  # None: written only
    dump: DumpFn | None  # None: read only
    dsb_tag: int | None  # pcapng DSB secrets type it travels in
    out_file: str | None = None  # file name `keys convert -o DIR/` writes (a Wireshark profile's)
    count: Callable[[KeyStore], int] = len  # entries `dump` writes (for "wrote N entries")


def _module(name: str) -> Any:
    return importlib.import_module(f"{__package__}.{name}")


def _text_detect(module: str) -> DetectFn:
    return lambda data, text: bool(_module(module).looks_like(text))


def _text_parse(module: str) -> ParseFn:
    return lambda data, text, source, store: _module(module).parse(text, source, store)


def _wireshark_detect(table: str) -> DetectFn:
    return lambda data, text: _module("wireshark").table_of(text) == table


def _header(what: str, show_keys: bool) -> list[str]:
    lines = [f"# {what} written by ipsecscope"]
    if not show_keys:
        lines.append("# keys redacted: pass --show-keys (or -o FILE) to write them")
    return lines


def _dump_lines(what: str, rows: str, line: str) -> DumpFn:
    """A Wireshark table: a header comment and one line per key (``wireshark.<line>(key, show)``)."""

    def dump(store: KeyStore, show_keys: bool) -> str:
        fmt = getattr(_module("wireshark"), line)
        lines = _header(what, show_keys) + [fmt(k, show_keys) for k in getattr(store, rows)]
        return "\n".join(lines) + "\n"

    return dump


def _dump_json(store: KeyStore, show_keys: bool) -> str:
    return str(_module("jsonkeys").dumps(store, show_keys))


def dsb_blocks(store: KeyStore) -> list[tuple[int, bytes]]:
    """The Decryption Secrets Blocks that carry ``store``: ESP SAs in Wireshark's own ESP SA type
    (0x45535053, 10-column esp_sa CSV: draft-ietf-opsawg-pcapng; read by a Wireshark whose
    secrets-types.h has SECRETS_TYPE_ESP, ignored by 4.0), and
    what no Wireshark type can carry (IKE SA keys, ESP SAs with no Wireshark algorithm name such as
    AES-CCM or AES-XCBC) in ipsecscope's own type as native JSON. Always the real keys."""
    ws = _module("wireshark")
    rows, rest = [], KeyStore()
    for k in store.esp:
        line = ws.esp_sa_line(k, True, wireshark_40=False, sn_fields=True)
        cols = ws.split_uat_line(line) if not line.startswith("#") else []
        if not cols or cols[4] not in names.DSB_ESP_ENCR or cols[6] not in names.DSB_ESP_AUTH:
            rest.add_esp(k)
        else:
            rows.append(line)
    for k in store.ike:
        rest.add_ike(k)
    for k1 in store.ikev1:
        rest.add_ikev1(k1)
    out = []
    if rows:
        out.append((dsb.SECRETS_TYPE_ESP, ("\n".join(rows) + "\n").encode()))
    if len(rest) or not rows:
        out.append((dsb.SECRETS_TYPE_IPSEC, _dump_json(rest, True).encode()))
    return out


def _dump_dsb(store: KeyStore, show_keys: bool) -> bytes:
    # A DSB without keys is useless, and bytes are never "printed": always the real keys.
    return dsb.pcapng_with_secrets(dsb_blocks(store))


def _parse_pcapng(data: bytes, text: str, source: str, store: KeyStore) -> KeyStore:
    """Every DSB of a pcapng file, each read by the row of its secrets type."""
    found = 0
    for off, stype, secret in dsb.iter_secrets(data, source):
        found += 1
        add_secrets_block(store, stype, secret, source=f"{source}@DSB+{off}")
    if not found:
        raise KeyFileError("pcapng file has no Decryption Secrets Block", path=source)
    if len(store) == 0 and store.ignored_secrets:
        kinds = sorted({dsb.type_name(t) for t, _ in store.ignored_secrets})
        raise KeyFileError("its Decryption Secrets Blocks hold no IPsec keys (only " + ", ".join(kinds) + ")",
                           path=source)
    return store


_WS = ("Wireshark `{}` (also strongSwan save-keys output)")

FORMATS: tuple[KeyFormat, ...] = (
    KeyFormat("json", "ipsecscope JSON", "schema `ipsecscope.keys/1`, see `docs/keys-json.md`",
              _text_detect("jsonkeys"), _text_parse("jsonkeys"), _dump_json, dsb.SECRETS_TYPE_IPSEC,
              out_file="keys.json"),
    KeyFormat("dsb", "pcapng with Decryption Secrets Blocks",
              "`ipsecscope decrypt --dsb`, `keys convert --to dsb`; any capture carrying IPsec keys",
              lambda data, text: dsb.looks_like(data), _parse_pcapng, _dump_dsb, None, out_file="keys.pcapng"),
    KeyFormat("esp_sa", _WS.format("esp_sa"),
              '`"IPv4","198.18.0.1","198.18.0.2","0xc254fe64","AES-CBC [RFC3602]","0x…",'
              '"HMAC-SHA-1-96 [RFC2404]","0x…"`; wildcards `*`, `198.18.*.*`, `198.18.0.0/15`, '
              "SPI `0x000040**` (the most specific row wins)",
              _wireshark_detect("esp_sa"), _text_parse("wireshark"),
              _dump_lines("Wireshark esp_sa", "esp", "esp_sa_line"), dsb.SECRETS_TYPE_ESP,
              out_file="esp_sa", count=lambda s: len(s.esp)),
    KeyFormat("ikev2_table", _WS.format("ikev2_decryption_table"),
              "`SPIi,SPIr,SK_ei,SK_er,\"AES-CBC-256 [RFC3602]\",SK_ai,SK_ar,\"HMAC_SHA2_256_128 [RFC4868]\"`",
              _wireshark_detect("ikev2_table"), _text_parse("wireshark"),
              _dump_lines("Wireshark ikev2_decryption_table", "ike", "ikev2_line"), None,
              out_file="ikev2_decryption_table", count=lambda s: len(s.ike)),
    KeyFormat("ikev1_table", _WS.format("ikev1_decryption_table"), "`initiator cookie,encryption key`",
              _wireshark_detect("ikev1_table"), _text_parse("wireshark"),
              _dump_lines("Wireshark ikev1_decryption_table", "ikev1", "ikev1_line"), None,
              out_file="ikev1_decryption_table", count=lambda s: len(s.ikev1)),
    KeyFormat("xfrm", "`ip xfrm state` / `ip -s xfrm state` output",
              "`ip xfrm state > xfrm.txt` on the gateway (aead, enc/auth-trunc, esn, espinudp)",
              _text_detect("xfrm"), _text_parse("xfrm"), None, None),
    KeyFormat("charon", "strongSwan charon log at `ike 4, chd 4` (`mgr 2` for IKE SPIs)",
              "IKE SA keys (SK_e/SK_a/SK_d) and CHILD SA keys bound to their SPIs",
              _text_detect("charon"), _text_parse("charon"), None, None),
    KeyFormat("libreswan", 'Libreswan pluto log with `plutodebug="base crypt private"`',
              "IKEv2 SA keys (SK_e/SK_a, GCM salts included; no SK_d) and the CHILD SA keys pluto installs; "
              "no IKEv1 phase-1 keys (Libreswan never logs them)",
              _text_detect("libreswan"), _text_parse("libreswan"), None, None),
    KeyFormat("tcpdump", "tcpdump `-E` secrets", "`0x12345678@198.18.0.2 aes128-cbc:0x…` (ESP); "
              "`ikev2 I 0xSPIi 0xSPIr sha1:0x… aes128:0x…` and its `ikev2 R` line (IKEv2 SA keys)",
              _text_detect("tcpdump"), _text_parse("tcpdump"), None, None),
)
BY_NAME = {f.name: f for f in FORMATS}


def decode_text(data: bytes) -> str:
    return data.decode("utf-8-sig", "replace")


def detect_format(data: bytes, text: str | None = None) -> str | None:
    """Name of the key format of ``data`` (a :data:`FORMATS` row), or None."""
    text = decode_text(data) if text is None else text
    for f in FORMATS:
        if f.detect is not None and f.detect(data, text):
            return f.name
    return None


def input_formats() -> list[KeyFormat]:
    return [f for f in FORMATS if f.parse is not None]


def output_formats() -> list[KeyFormat]:
    return [f for f in FORMATS if f.dump is not None]


def parse(fmt: str, data: bytes, source: str, store: KeyStore, text: str | None = None) -> KeyStore:
    """Read ``data`` as format ``fmt`` into ``store``. Parser bugs become one-line KeyFileErrors."""
    f = BY_NAME[fmt]
    if f.parse is None:
        raise KeyFileError(f"{fmt} is an output format only", path=source)
    try:
        return f.parse(data, decode_text(data) if text is None else text, source, store)
    except (ValueError, IndexError, KeyError, UnicodeError) as exc:
        # A parser bug or an input we did not foresee: still one line, never a traceback.
        raise KeyFileError(f"cannot read this {fmt} key file: {type(exc).__name__}", path=source) from None


def add_secrets_block(store: KeyStore, secrets_type: int, data: bytes, source: str = "pcapng DSB") -> int:
    """Add the keys in one pcapng Decryption Secrets Block. Returns how many keys were added.

    A type no row travels in (TLS, SSH, WireGuard...) is remembered in ``store.ignored_secrets``.
    ipsecscope's own type carries text in any readable format, detected by content. A block that
    cannot be read costs only itself, like a bad row of a key file: it is skipped with a warning
    (``store.skip``), so a capture carrying one is still analysed; a key file whose blocks are all
    unusable is still an error (:func:`~ipsecscope.keys.load_key_file` raises the first skip).
    """
    try:
        if secrets_type == dsb.SECRETS_TYPE_IPSEC:
            text = decode_text(data)
            fmt = detect_format(data, text)
            if fmt is None:
                raise KeyFileError("Decryption Secrets Block of type IPSK holds no key format ipsecscope reads",
                                   path=source)
        else:
            rows = [f for f in FORMATS if f.dsb_tag == secrets_type and f.parse is not None]
            if not rows:
                store.ignored_secrets.append((secrets_type, len(data)))
                return 0
            fmt, text = rows[0].name, decode_text(data)
        return store.merge(parse(fmt, data, source, KeyStore(), text))
    except KeyFileError as exc:
        store.skip(exc)
        return 0


def dump(store: KeyStore, fmt: str, show_keys: bool) -> str | bytes:
    """Render ``store`` as ``fmt`` (an output row). ``dsb`` returns pcapng bytes."""
    f = BY_NAME.get(fmt)
    if f is None or f.dump is None:
        raise ValueError(f"unknown output format {fmt!r}; choose one of "
                         + ", ".join(x.name for x in output_formats()))
    return f.dump(store, show_keys)


def input_summary() -> str:
    """One sentence listing what ``-k`` reads (for the ``-k`` and ``keys`` help)."""
    return ", ".join(_plain(f.title) for f in input_formats())


def _plain(md: str) -> str:
    return md.replace("`", "")


def help_text() -> str:
    """The ``keys`` sub-command's description: plain text, one line per format."""
    width = max(len(f.name) for f in FORMATS)
    rows = [f"  {f.name:<{width}}  {'read' if f.parse else '    '} {'write' if f.dump else '     '}  "
            f"{_plain(f.title)}" for f in FORMATS]
    return "\n".join(rows)


def readme_table() -> str:
    """The README's key-format table (a test keeps the README equal to it)."""
    lines = ["| format | `-k` | `keys convert --to` | example / where it comes from |", "|---|---|---|---|"]
    for f in FORMATS:
        lines.append(f"| {f.title} | {'yes' if f.parse else '—'} | {f'`{f.name}`' if f.dump else '—'} | "
                     f"{f.example} |")
    return "\n".join(lines)


if __name__ == "__main__":  # python -m ipsecscope.keys.formats: the README table
    print(readme_table())
