"""What a decrypt run counts and leaves beside its packets, whichever path ran it (one process,
chunks over processes (export/parallel.py), the general reader (export/general.py)): the totals
(:class:`RunStats`, :func:`collect`), the keys it used as a pcapng DSB (:func:`write_dsb`) and its JSON
lines stream (:func:`open_jsonl`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TextIO

from ..crypto.esp import EspDecryptor, SaStats
from ..keys.formats import dsb_blocks
from ..keys.formats import dump as dump_keys
from .hotloop import ChunkResult
from .pcapng import SECRETS_TYPE_IPSEC, PcapngWriter

if TYPE_CHECKING:
    from ..model.keys import EspSaKeys
    from .ah import AhTotals


@dataclass
class RunStats:
    """A decrypt run's totals, per-SA counts and the keys it used."""

    frames: int = 0
    esp: int = 0
    decrypted: int = 0
    icv_failed: int = 0
    no_key: int = 0
    malformed: int = 0
    unsupported: int = 0
    other: int = 0
    dummy: int = 0  # next header 59 (RFC 4303 §2.6 dummy packets), not written
    written: int = 0
    kept: int = 0  # --keep-other: frames written unchanged (not ESP, or ESP that did not decrypt)
    unkept: int = 0  # --keep-other: frames that could not be written, on an interface no IDB declares
    jobs: int = 1
    reconciled_chunks: int = 0
    guesses_redone: int = 0  # chunks whose guessed first record was wrong (processed again)
    truncated: str | None = None
    warning: str | None = None  # about the input, one line: a gzip bomb's ratio
    nested_decrypted: int = 0  # inner ESP layers (ESP in ESP) decrypted too, and those that failed
    nested_failed: int = 0
    # AH packets (export/ah.py): ICVs verified, failed, without a key for their SA, not checked
    # (unsupported algorithm, a frame short of what the ICV covers); payloads written (all but failures)
    ah: int = 0
    ah_verified: int = 0
    ah_icv_failed: int = 0
    ah_no_key: int = 0
    ah_unverified: int = 0
    ah_written: int = 0
    # Malformed marks of the frames the general decoder read, by layer, as `sas` and `summary` count
    # them ("malformed: N (ip N)"): an RFC 8229 TCP gap never filled ("tcp"), an IP datagram whose
    # fragments never all came ("ip", given up at the end of the capture), a broken header behind
    # them. Frames the fast path takes as plainly not ESP are "other" and not looked into.
    marks: dict[str, int] = field(default_factory=dict)
    per_sa: list[tuple[tuple[str, str, int], SaStats]] = field(default_factory=list)
    ah_per_sa: list = field(default_factory=list)  # [((src, dst, spi), crypto.ah.AhStats)], sorted as per_sa
    used_keys: list = field(default_factory=list)


def open_jsonl(jsonl_out: str | TextIO | None) -> tuple[TextIO | None, bool]:
    """(the JSON lines stream, whether this run opened it and closes it)."""
    if jsonl_out is None:
        return None, False
    if hasattr(jsonl_out, "write"):
        return jsonl_out, False
    return open(jsonl_out, "w", buffering=1 << 20), True


def collect(results: list[ChunkResult], dec: EspDecryptor, stats: RunStats, nested: set | None = None,
            ah: AhTotals | None = None, marks: dict[str, int] | None = None) -> None:
    """Fold the chunks' results, the decryptor's per-SA counts, the AH totals and the decoder's
    malformed marks (``marks``, the general path's; chunks carry their own) into ``stats``."""
    for layer, n in [*(marks or {}).items(), *(kv for r in results for kv in r.marks.items())]:
        stats.marks[layer] = stats.marks.get(layer, 0) + n
    nested = set(nested or ())
    if ah is not None or any(r.ah is not None for r in results):
        from .ah import AhTotals

        totals = AhTotals()
        for t in [ah, *(r.ah for r in results)]:
            if t is not None:
                totals.merge(t)
        stats.ah, stats.ah_written = totals.packets, totals.written
        stats.ah_verified, stats.ah_icv_failed = totals.count("ok"), totals.count("icv_failed")
        stats.ah_no_key = totals.count("no_key")
        stats.ah_unverified = totals.count("unsupported") + totals.count("unverifiable")
        stats.ah_per_sa = sorted(totals.per_sa.items(), key=lambda kv: (kv[0][2], kv[0][0], kv[0][1]))
    for r in results:
        stats.truncated = stats.truncated or r.truncated
        stats.frames += r.frames
        stats.esp += r.esp
        stats.other += r.other
        stats.dummy += r.dummy
        stats.kept += r.kept
        stats.unkept += r.unkept
        nested |= r.nested_sas
    used = []
    for k, s in dec.summary():
        if s.decrypted:
            st = dec.state(*k)
            if st.keys is not None and st.keys not in used:
                used.append(st.keys)
        if k in nested:  # inner layers of ESP-in-ESP: not frames of the capture, counted apart
            stats.nested_decrypted += s.decrypted
            stats.nested_failed += s.icv_failed + s.malformed + s.unsupported
            continue
        stats.decrypted += s.decrypted
        stats.icv_failed += s.icv_failed
        stats.no_key += s.no_key
        stats.malformed += s.malformed
        stats.unsupported += s.unsupported
    stats.per_sa = dec.summary()
    stats.used_keys = used
    stats.written = stats.decrypted - stats.dummy + stats.ah_written


def write_dsb(writer: PcapngWriter, used: list[EspSaKeys]) -> None:
    """The keys of the SAs decrypted into the output, as pcapng DSBs."""
    from ..keys import KeyStore

    store = KeyStore()
    for k in used:
        store.add_esp(k)
    # Wireshark's own ESP SA secrets type where it has names for the algorithms (Wireshark 4.6+
    # decrypts with it, no esp_sa file needed), ipsecscope's JSON block for the rest.
    for stype, data in dsb_blocks(store):
        writer.write_secrets(data, secrets_type=stype, comment=(
            "ipsecscope: keys of the SAs decrypted into this file (Wireshark ESP SA secrets, 10-column esp_sa "
            "CSV)" if stype != SECRETS_TYPE_IPSEC else
            "ipsecscope: keys of the SAs decrypted into this file that no Wireshark secrets type carries "
            "(private type 0x4950534b, native JSON). As Wireshark esp_sa rows:\n" + str(dump_keys(store, "esp_sa", True))))
