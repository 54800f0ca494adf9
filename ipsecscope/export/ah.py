"""AH in ``decrypt``: what an AH packet (RFC 4302) gives the decrypted pcapng and the JSON lines.

AH encrypts nothing: its payload is readable with or without a key, as Wireshark/tshark dissect
it. So the payload is written like a decrypted ESP payload (the tunnelled IP packet in tunnel mode,
the upper-layer payload behind an IP header rebuilt from the outer addresses in transport mode,
``perframe.wire_packet``) whenever the ICV did not fail:

* verified (``crypto.ah``, RFC 4302 §3.3.3): written as it is, like decrypted ESP;
* not verified — no key for the SA, an algorithm AH cannot use, a frame that does not hold what
  the ICV covers (snap length): written too, with an EPB comment saying why it was not verified,
  and the JSON record's ``status`` says so (``no_key``, ``unsupported``, ``unverifiable``);
* ICV failed: handled as an ESP ICV failure — nothing written to the decrypted output (a receiver
  drops the packet, RFC 4302 §3.4.4), the frame kept unchanged with a comment under
  ``--keep-other``, counted ``icv_failed``, exit status 4.

AH protecting ESP (next header 50, RFC 4301 §4.5 bundles) hands the ESP packet on to the ESP path
when the AH ICV did not fail (it is then a frame of the ESP SA too); AH tunnelling ESP (an inner
IP packet of protocol 50) opens the inner ESP layers there are keys for, as nested ESP.

This runs on ``_Worker._frame``'s general path and ``general.run_general`` only: AH is rare, and
the ESP hot loops never see it (an AH frame is not an ESP record to them). A run split over
processes infers ESN per chunk (``crypto.esn`` searches the high bits 0..16), then takes ESP's
reconcile step (export/parallel.py): a chunk whose AH SA failed before it verified there, while an
earlier chunk had verified it, is run again from the ESN state the earlier chunks ended with
(``AhVerifier.states``/``seed``; RFC 4302 §2.5.1, Appendix B: the high bits come from the window).
"""

from __future__ import annotations

import _socket as socket  # socket.py's C module (see hotloop)
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..crypto.ah import ICV_FAILED, OK, AhResult, AhStats, AhVerifier
from . import jsonl as _jsonl

if TYPE_CHECKING:
    from ..crypto.esp import EspDecryptor
    from ..model.packets import AhPacket

@dataclass(slots=True)
class AhOutcome:
    """What one AH packet gives the outputs. ``packet``: the IP packet for the decrypted output
    (None: nothing, e.g. ICV failed or next header 59); ``comment``: the EPB comment on it (why it
    was not verified) or, when the ICV failed, on the frame ``--keep-other`` copies; ``esp``: the
    ESP packet AH protects (next header 50), for the ESP path; ``record``: the JSON line."""

    status: str
    packet: bytes | None = None
    comment: str = ""
    esp: bytes | None = None
    record: str | None = None


@dataclass
class AhTotals:
    """A worker's AH counts (pickled back from a forked chunk): per SA (src, dst, spi) as
    :class:`~ipsecscope.crypto.ah.AhStats`, and the payloads written."""

    packets: int = 0
    written: int = 0
    per_sa: dict[tuple[str, str, int], AhStats] = field(default_factory=dict)

    def merge(self, other: AhTotals) -> None:
        self.packets += other.packets
        self.written += other.written
        for k, s in other.per_sa.items():
            t = self.per_sa.setdefault(k, AhStats(keys_source=s.keys_source))
            for name in ("verified", "icv_failed", "no_key", "unsupported", "unverifiable", "nat_proven"):
                setattr(t, name, getattr(t, name) + getattr(s, name))
            t.esn = s.esn if s.esn is not None else t.esn
            t.seq_hi = max(t.seq_hi, s.seq_hi)
            t.last_reason = s.last_reason or t.last_reason

    def count(self, status: str) -> int:
        name = "verified" if status == OK else status
        return sum(getattr(s, name) for s in self.per_sa.values())


class AhOut:
    """The AH packets of one decrypt run (or chunk): ICVs checked with the AH keys of ``keys``.
    ``wire_packet`` and ``decrypt_nested`` are the per-frame path's (``export.perframe``, which
    imports this module: passed in, not imported back)."""

    def __init__(self, keys, wire_packet: Callable, decrypt_nested: Callable,
                 ext_headers: Callable[[bytes, int], tuple] | None = None) -> None:
        self.wire_packet, self.decrypt_nested = wire_packet, decrypt_nested
        self.ext_headers = ext_headers  # perframe.v6_ext_headers: IPv6 headers kept in front of AH's payload
        self.verifier = AhVerifier(keys)
        self.totals = AhTotals(per_sa=self.verifier.stats)
        from ..decode.link import ip_offset

        self._ip_offset = ip_offset

    def handle(self, pkt: AhPacket, frame: bytes, linktype: int, ts_ns: int, dec: EspDecryptor | None,
               nested: set, jsonl: bool, with_hex: bool) -> AhOutcome:
        """One AH packet ``pkt`` decoded from ``frame`` (the frame that completed it, for fragments)."""
        t = self.totals
        t.packets += 1
        _ver, off = self._ip_offset(linktype, frame)
        try:
            res = self.verifier.verify(pkt, frame, off)
        except Exception as exc:  # noqa: BLE001 - odd input must never stop a run (as Session._AhCheck)
            res = AhResult("unverifiable", reason=f"internal error ({type(exc).__name__}); ICV not checked")
        af = socket.AF_INET6 if pkt.ip_version == 6 else socket.AF_INET
        src, dst = socket.inet_pton(af, pkt.src), socket.inet_pton(af, pkt.dst)
        data = pkt.data
        payload = data[(data[1] + 2) * 4:]
        nh = pkt.next_header
        out = AhOutcome(res.status)
        if res.status == ICV_FAILED:
            out.comment = f"ipsecscope: AH icv_failed: {res.reason}" + (f" ({res.nat})" if res.nat else "")
            if jsonl:
                out.record = _jsonl.ah_record(pkt, ts_ns, res, src, dst, None, None, with_hex)
            return out
        if res.status != OK:
            out.comment = f"ipsecscope: AH ICV not verified ({res.status}): {res.reason}"
        inner, isrc, idst, layers = payload, src, dst, None
        if nh == 50:  # AH protecting ESP: the ESP path decrypts it (its own SA, its own record)
            out.esp = payload
        elif nh != 59:
            if nh in (4, 41) and dec is not None and dec.keys is not None:  # ESP tunnelled under AH
                inner, nh, isrc, idst, layers = self.decrypt_nested(dec, nested, inner, nh, src, dst)
            if nh != 59:
                ext = ()
                if pkt.ip_version == 6 and layers is None and self.ext_headers is not None:
                    # the extension headers in front of AH stay in a transport-mode packet (RFC 4302
                    # §3.1.1); the header AH follows: a tunnelled or reassembled packet's, else the frame's
                    ext = self.ext_headers(pkt.ip_header, 0) if pkt.ip_header else self.ext_headers(frame, off)
                out.packet = self.wire_packet(isrc, idst, nh, inner, ext)
                t.written += 1
        if jsonl:
            out.record = _jsonl.ah_record(pkt, ts_ns, res, src, dst, nh, inner, with_hex, nested=layers,
                                          inner_src=isrc, inner_dst=idst)
        return out


__all__ = ["AhOut", "AhOutcome", "AhTotals"]
