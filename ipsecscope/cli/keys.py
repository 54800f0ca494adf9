"""``ipsecscope keys list|convert KEYS...``: inspect and convert key files.

The formats (and the ``--help`` text listing them) come from :data:`ipsecscope.keys.formats.FORMATS`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ..errors import ExportError
from ..keys import formats, load_keys
from ..keys import names as N
from ..keys.store import KeyStore
from ..model.iana import ProtocolId
from ..model.idtext import arrow_text, ike_sa_text, spi_text
from ..model.keys import redact
from ..model.plural import plural
from ..outfile import write_private
from .common import add_strict_keys_argument, error, note, warn, warn_keys

DESCRIPTION = f"""\
  keys list KEYS... [--show-keys] [--json]
      one row per SA: SPI(s), addresses, algorithms, the file:line it came from;
      keys are shown only with --show-keys.
  keys convert KEYS... --to FORMAT [-o OUT]
      write the keys in another format. To a file (-o) keys are written (mode 600);
      to the terminal they are redacted unless --show-keys. -o DIR/ writes the file
      name a Wireshark profile uses. dsb is a pcapng holding only Decryption Secrets
      Blocks; it needs -o. Append it to a pcapng capture as a second section
      (cat cap.pcapng keys.pcapng > both.pcapng) to ship the keys with the capture.

Key formats (any mix, detected by content):
{formats.help_text()}
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("keys", help="list or convert key files (esp_sa, ip xfrm, charon logs, ...)",
                              description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="keys_command", metavar="ACTION")
    lp = sub.add_parser("list", help="show the SAs and keys in key files (keys hidden unless --show-keys)")
    lp.add_argument("files", nargs="+", metavar="KEYS", help="key files, any supported format")
    lp.add_argument("--show-keys", action="store_true", help="print key material (it is secret!)")
    lp.add_argument("--json", action="store_true", help="machine-readable output (ipsecscope.keys/1)")
    lp.add_argument("--capture", metavar="FILE",
                    help="also say which of the keys this capture uses: exactly, matched across NAT (from which "
                         "address to which), or not at all")
    add_strict_keys_argument(lp)
    cp = sub.add_parser("convert", help="convert key files to another format")
    cp.add_argument("files", nargs="+", metavar="KEYS", help="key files, any supported format")
    cp.add_argument("--to", required=True, choices=[f.name for f in formats.output_formats()],
                    help="output format")
    cp.add_argument("-o", "--output", metavar="OUT",
                    help="output file (keys written); a directory gets the Wireshark profile file name; "
                         "'-' standard output (keys redacted unless --show-keys)")
    cp.add_argument("--show-keys", action="store_true", help="print keys when writing to the terminal")
    cp.add_argument("--capture", metavar="FILE",
                    help="write ESP keys logged behind NAT for the addresses this capture shows (Wireshark "
                         "matches esp_sa rows by address)")
    add_strict_keys_argument(cp)
    p.set_defaults(keys_parser=p)


def run(args: argparse.Namespace) -> int:
    if not getattr(args, "keys_command", None):
        # A usage error like any other (cli.common.message): one message on stderr, exit 2. It
        # printed the whole help to stdout, with nothing on stderr, so a script saw success-shaped
        # output and no error line.
        args.keys_parser.error("no ACTION given: list or convert (ipsecscope keys -h)")
    who = f"keys {args.keys_command}"  # as argparse names it: `ipsecscope keys list: error: ...`
    store = load_keys(args.files, strict=args.strict_keys)
    warn_keys(who, store)
    session = _capture_session(who, store, args.capture) if args.capture else None
    rc = _list(who, store, args, session) if args.keys_command == "list" else _convert(who, store, args, session)
    # a capture cut off or damaged part-way answers for less than the file: exit 1, as summary does
    return 1 if rc == 0 and session is not None and session.damage else rc


def _capture_session(who: str, store: KeyStore, capture: str):
    """A session over ``capture`` with a copy of ``store`` (its store grows with derived keys;
    ``store`` answers for the files alone). Damage part-way is said on stderr, as every command
    does (an error: the command then exits 1), and the capture is read up to it."""
    from ..session import Session

    probe = KeyStore()
    probe.merge(store)
    s = Session(probe)
    if s.load_damaged(capture):
        error(who, s.damage)
    return s


def _convert(who: str, store: KeyStore, args: argparse.Namespace, session=None) -> int:
    fmt = formats.BY_NAME[args.to]
    if session is not None:
        store = _as_on_the_wire(who, store, session)
    n = fmt.count(store)
    if n == 0:  # "wrote 0 entries" and exit 0 would look like success
        have = [plural(x, w) for x, w in ((len(store.ike), "IKEv2 SA"), (len(store.ikev1), "IKEv1 SA"),
                                          (len(store.esp), "ESP/AH SA")) if x]
        fits = [f.name for f in formats.output_formats() if f.count(store)]
        raise ExportError(f"the keys given hold nothing {fmt.name} can carry (they hold "
                          f"{', '.join(have) or 'no keys'}); nothing written"
                          + (f": try --to {' or '.join(fits)}" if fits else ""))
    out = None if args.output == "-" else args.output  # `-o -` is standard output, as for decrypt: never a file "-"
    if out is None:
        if args.to == "dsb":
            raise ExportError("--to dsb writes a binary pcapng: give -o FILE")
        text = formats.dump(store, args.to, args.show_keys)
        sys.stdout.write(text if isinstance(text, str) else text.decode())
        return 0
    path = Path(out)
    if out.endswith(("/", os.sep)) or path.is_dir():
        # a profile directory (README: -o ~/.config/wireshark/): made if missing, private
        try:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise ExportError(f"{path}: cannot create the directory: {exc.strerror or exc}") from None
        path = path / (fmt.out_file or "keys")
    # keys are secrets: 0600 from the first byte, atomically, never over a key file given as input
    # and never through a symlink at the target (ipsecscope.outfile)
    write_private(path, fmt.dump(store, True) if fmt.dump else b"", inputs=args.files, what="keys output")
    print(f"wrote {n} entries to {path}", file=sys.stderr)
    return 0


def _as_on_the_wire(who: str, store: KeyStore, s) -> KeyStore:
    """The keys with the addresses session ``s``'s capture shows: an ESP key matched across NAT is
    written for the translated address, so Wireshark (which matches esp_sa rows by address) can use it."""
    out = KeyStore()
    moved = {}
    for f in s.table.flows.values():
        k = store.esp_lookup(f.src, f.dst, f.spi)
        if k is not None and k.nat:
            moved[(k.source, k.spi)] = k
    for k in store.esp:
        out.add_esp(moved.get((k.source, k.spi), k))
    for k2 in store.ike:
        out.add_ike(k2)
    for k1 in store.ikev1:
        out.add_ikev1(k1)
    for line in sorted({f"{k.source}: SPI {spi_text(k.spi)} written for the address on the wire (across NAT {k.nat})"
                        for k in moved.values()}):  # (sorted: a set alone printed them in any order)
        note(who, line)  # what was done for the user, nothing wrong: neither error nor warning
    return out


def _capture_use(who: str, store: KeyStore, s) -> dict[tuple[str, int], str]:
    """(source, spi) of each ESP key -> "yes" | "across NAT a → b", for the ESP SAs session ``s``'s
    capture holds; warns (stderr) for key files that match nothing in it."""
    from ..keys.match import match_keys

    used: dict[tuple[str, int], str] = {}
    for f in s.table.flows.values():
        k = store.esp_lookup(f.src, f.dst, f.spi)
        if k is not None:
            used[(k.source, k.spi)] = f"across NAT {arrow_text(k.nat)}" if k.nat else "yes"
    ike = [(sa.ike_spi_i, sa.ike_spi_r) for sa in s.table.ike_sas.values()]
    for m in match_keys(store, [(f.src, f.dst, f.spi) for f in s.table.flows.values()], ike):
        if m.matches_nothing:
            warn(who, m.sentence())
    return used


def _list(who: str, store: KeyStore, args: argparse.Namespace, session=None) -> int:
    use = _capture_use(who, store, session) if session is not None else None
    if args.json:
        from ..keys.jsonkeys import to_doc

        print(json.dumps(to_doc(store, args.show_keys), indent=2))
        return 0
    from rich.table import Table
    from rich.text import Text

    from .text import table_or_records, text_console

    # Piped: one row per line at any width. In a terminal narrower than a table, each SA is a
    # record wrapped at spaces (an SPI, address or file:line is never split across lines).
    console = text_console()
    show = args.show_keys
    if store.esp:
        t = Table(title=f"ESP/AH SAs ({len(store.esp)})", title_justify="left")
        for col in ("SPI", "Proto", "Source", "Destination", "Encryption", "Integrity", "ESN", "From",
                    *(("In capture",) if use is not None else ())):
            t.add_column(col, no_wrap=True)
        records = []
        for k in store.esp:
            row = [k.spi_pattern or spi_text(k.spi), "AH" if k.protocol == ProtocolId.AH else "ESP", k.src, k.dst,
                   N.encr_label(k.encr, k.enc_key), N.integ_label(k.integ, k.icv_len, k.check_integrity)
                   if not N.is_aead(k.encr) else "(AEAD)",
                   {None: "infer", True: "yes", False: "no"}[k.esn], k.source]
            if use is not None:
                row.append(use.get((k.source, k.spi), "no"))
            t.add_row(*row)
            records.append(Text(f"{row[0]} {row[1]} {row[2]} → {row[3]}  {row[4]} {row[5]}  ESN {row[6]}  "
                                f"from {row[7]}" + (f"  in capture: {row[8]}" if use is not None else "")))
        table_or_records(console, t, records)
        if show:  # plain lines, never wrapped, so keys can be copied
            for k in store.esp:
                print(f"{k.spi_pattern or spi_text(k.spi)} {k.src} -> {k.dst}  enc={redact(k.enc_key, True) or '-'}"
                      f"  auth={redact(k.auth_key, True) or '-'}")
    if store.ike:
        t = Table(title=f"IKEv2 SAs ({len(store.ike)})", title_justify="left")
        for col in ("SPIi", "SPIr", "Encryption", "Integrity", "PRF", "From"):
            t.add_column(col, no_wrap=True)
        records = []
        for k in store.ike:
            prf = "-" if k.prf is None else N.P(k.prf).name if k.prf in N.P._value2member_map_ else str(k.prf)
            row = [k.spi_i.hex(), k.spi_r.hex(), N.encr_label(k.encr, k.sk_ei),
                   "(AEAD)" if N.is_aead(k.encr) else N.integ_label(k.integ, k.icv_len, k.check_integrity),
                   prf, k.source]
            t.add_row(*row)
            records.append(Text(f"SPIi {row[0]} SPIr {row[1]}  {row[2]} {row[3]} {row[4]}  from {row[5]}"))
        table_or_records(console, t, records)
        if show:
            for k in store.ike:
                keys = "  ".join(f"{n}={redact(x, True) or '-'}" for n, x in
                                 (("SK_ei", k.sk_ei), ("SK_er", k.sk_er), ("SK_ai", k.sk_ai), ("SK_ar", k.sk_ar),
                                  ("SK_d", k.sk_d)))
                print(f"{ike_sa_text(k.spi_i, k.spi_r)}  {keys}")
    if store.ikev1:
        t = Table(title=f"IKEv1 SAs ({len(store.ikev1)})", title_justify="left")
        for col in ("Initiator cookie", "Key", "From"):
            t.add_column(col, no_wrap=True)
        records = []
        for k in store.ikev1:
            t.add_row(k.cookie_i.hex(), redact(k.enc_key, False), k.source)
            records.append(Text(f"initiator cookie {k.cookie_i.hex()}  key {redact(k.enc_key, False)}  from {k.source}"))
        table_or_records(console, t, records)
        if show:
            for k in store.ikev1:
                print(f"{k.cookie_i.hex()}  key={redact(k.enc_key, True)}")
    if not show and len(store):
        console.print("[dim]keys hidden; pass --show-keys to print them[/dim]")
    return 0
