"""Write a KeyStore in another format: ``keys convert --to esp_sa|ikev2_table|ikev1_table|json|dsb``.

Wireshark tables are written for Wireshark 4.0 (the oldest UAT syntax every later version
reads). SAs Wireshark cannot express (AES-CCM, GMAC, ChaCha20 before 4.2, ESP with AES-XCBC...)
become ``#`` comment lines naming the SA, so Wireshark loads the rest of the file.
Keys are redacted unless ``show_keys``.
"""

from __future__ import annotations

from . import dsb, jsonkeys, wireshark
from .store import KeyStore

FORMATS = ("esp_sa", "ikev2_table", "ikev1_table", "json", "dsb")
# what Wireshark calls each table file in a profile directory
WIRESHARK_FILE = {"esp_sa": "esp_sa", "ikev2_table": "ikev2_decryption_table",
                  "ikev1_table": "ikev1_decryption_table"}


def _header(what: str, show_keys: bool) -> list[str]:
    lines = [f"# {what} written by ipsecscope"]
    if not show_keys:
        lines.append("# keys redacted: pass --show-keys (or -o FILE) to write them")
    return lines


def dump(store: KeyStore, fmt: str, show_keys: bool) -> str | bytes:
    """Render ``store`` as ``fmt`` (one of FORMATS). ``dsb`` returns pcapng bytes."""
    if fmt == "esp_sa":
        lines = _header("Wireshark esp_sa", show_keys)
        lines += [wireshark.esp_sa_line(k, show_keys) for k in store.esp]
        return "\n".join(lines) + "\n"
    if fmt in ("ikev2_table", "ikev2_decryption_table"):
        lines = _header("Wireshark ikev2_decryption_table", show_keys)
        lines += [wireshark.ikev2_line(k, show_keys) for k in store.ike]
        return "\n".join(lines) + "\n"
    if fmt in ("ikev1_table", "ikev1_decryption_table"):
        lines = _header("Wireshark ikev1_decryption_table", show_keys)
        lines += [wireshark.ikev1_line(k, show_keys) for k in store.ikev1]
        return "\n".join(lines) + "\n"
    if fmt == "json":
        return jsonkeys.dumps(store, show_keys)
    if fmt == "dsb":
        # A DSB without keys is useless, and bytes are never "printed": always the real keys.
        return dsb.pcapng_with_secrets(jsonkeys.dumps(store, True))
    raise ValueError(f"unknown output format {fmt!r}; choose one of {', '.join(FORMATS)}")
