"""Which loaded keys match what a capture shows: the facts behind "these keys are for another
tunnel" (issue 14) and "this key was matched across NAT" (issue 17).

Pure: the caller says which ESP SAs ``(src, dst, spi)`` and IKE SAs ``(spi_i, spi_r)`` the
capture holds; the answer is per key file. Derived keys (KEYMAT from SK_d) are not a file and
are left out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from .store import KeyStore, _norm_addr, esp_is_exact

_LINE_SUFFIX = re.compile(r":\d+(?: \(.*\))?$")


def file_of(source: str) -> str | None:
    """``"dir/esp_sa:3"`` -> ``"dir/esp_sa"``; None for derived keys."""
    if not source or source.startswith("derived"):
        return None
    return _LINE_SUFFIX.sub("", source)


@dataclass(slots=True)
class FileMatch:
    """How the keys of one key file meet one capture."""

    path: str
    ike: int = 0  # IKE SAs (v2 and v1) the file holds
    esp: int = 0  # ESP/AH SAs the file holds
    ike_matched: int = 0
    esp_matched: int = 0  # of its ESP SAs, how many some packet used
    across_nat: dict[str, int] = field(default_factory=dict)  # "logged -> wire" -> ESP SAs matched so
    # The capture holds an SA some key could be for: an ESP/AH flow, or an IKE SA whose responder
    # chose its SPI (an IKE_SA_INIT refused with NO_PROPOSAL_CHOSEN, INVALID_KE or a COOKIE leaves
    # it zero, and no peer ever derives keys for it). Without one, no key file can match, and
    # "another tunnel, host or rotated log?" would blame keys that may well be right (live, a
    # charon log holds every earlier SA's keys while the tunnel it is read for is failing).
    capture_has_sas: bool = True

    @property
    def matches_nothing(self) -> bool:
        return ((self.ike or self.esp) > 0 and not self.ike_matched and not self.esp_matched
                and self.capture_has_sas)

    def sentence(self) -> str:
        """The user-facing line when nothing matches (empty otherwise)."""
        if not self.matches_nothing:
            return ""
        return (f"keys from {self.path} ({self.ike} IKE SA{'s' * (self.ike != 1)}, {self.esp} ESP "
                f"SA{'s' * (self.esp != 1)}) match no SPI in this capture: another tunnel, host or rotated log?")


def _sa_of(k) -> tuple[str, str, int]:
    return _norm_addr(k.src), _norm_addr(k.dst), k.spi


def match_keys(store: KeyStore, esp_seen: Iterable[tuple[str, str, int]],
               ike_seen: Iterable[tuple[bytes, bytes]]) -> list[FileMatch]:
    """One :class:`FileMatch` per key file, in the order the files' keys were loaded."""
    out: dict[str, FileMatch] = {}
    esp_seen, ike_seen = list(esp_seen), list(ike_seen)
    has_sas = bool(esp_seen) or any(any(spi_r) for _, spi_r in ike_seen)

    def entry(source: str) -> FileMatch | None:
        path = file_of(source)
        if path is None:
            return None
        if path not in out:
            out[path] = FileMatch(path, capture_has_sas=has_sas)
        return out[path]

    # Look up in the files' keys alone: keys derived while the capture was read (KEYMAT) would
    # answer first for their SPIs and hide which file had them.
    files = KeyStore()
    for k in store.esp:
        if (m := entry(k.source)) is not None:
            m.esp += 1
            files.add_esp(k)
    for k in store.ike:
        if (m := entry(k.source)) is not None:
            m.ike += 1
            files.add_ike(k)
    for k in store.ikev1:
        if (m := entry(k.source)) is not None:
            m.ike += 1
            files.add_ikev1(k)
    # The lookup answers with the first file's key for an SA (Wireshark order); a second file with
    # a key for the same SA (the charon log beside the esp_sa rows exported from it, or a stale
    # row) holds keys for this capture too: every file naming the SA is credited, else the second
    # is told its keys are "for another tunnel" when they are this run's.
    esp_same: dict[tuple[str, str, int], list] = {}
    for k in files.esp:
        if esp_is_exact(k):
            esp_same.setdefault(_sa_of(k), []).append(k)
    ike_same: dict[tuple[bytes, bytes], list] = {}
    for k in files.ike:
        ike_same.setdefault((bytes(k.spi_i), bytes(k.spi_r)), []).append(k)
    store = files
    used_esp: set[tuple[str, int]] = set()
    for src, dst, spi in esp_seen:
        k = store.esp_lookup(src, dst, spi)
        if k is None:
            continue
        # (a key matched across NAT carries the wire's addresses: its own file only)
        for c in esp_same.get(_sa_of(k), [k]) if esp_is_exact(k) and not k.nat else [k]:
            if (c.source, c.spi) in used_esp or (m := entry(c.source)) is None:
                continue
            used_esp.add((c.source, c.spi))
            m.esp_matched += 1
            if k.nat:
                m.across_nat[k.nat] = m.across_nat.get(k.nat, 0) + 1
    used_ike: set[str] = set()
    for spi_i, spi_r in ike_seen:
        k = store.ike_lookup(spi_i, spi_r)
        cands = ike_same.get((bytes(k.spi_i), bytes(k.spi_r)), [k]) if k is not None else store.ikev1_candidates(spi_i)
        for c in cands:
            if c.source not in used_ike and (m := entry(c.source)) is not None:
                used_ike.add(c.source)
                m.ike_matched += 1
    return list(out.values())
