"""The ESP packet an ICMP or ICMPv6 error quotes, kept as a second inner record of the error's frame.

An ICMP error quotes the datagram it is about (RFC 792: its IP header and at least 8 octets;
RFC 1812 §4.3.2.3: up to 576 octets in all; RFC 4443 §2.4(c): as much as fits in 1280 for
ICMPv6). A NAT answering ESP sent to a dropped mapping, or a host that will not take ESP in UDP,
quotes a small ESP packet *whole*; tshark then decrypts the quote like any ESP packet and
dissects what is inside, so a display filter sees the quoted packet's inner fields too
(``icmp.type == 8`` selects a port unreachable that quotes an encrypted echo request).

Such a quote is a copy of a packet that was already sent (and maybe captured): the session
decrypts it with its ICV verified (``status`` "decrypted") or says why not, and never counts it
for the SA — no counters, no sequence or replay analysis. A quote cut off before the end
(a router's "fragmentation needed" quotes only the start of a big packet) holds no ICV and no
trailer: its plaintext is "not-verified", shown for display, and a filter sees only what tshark
(4.0) makes of it — tshark reads a "trailer" from the last decrypted bytes of the quote, and when
the byte it takes for the next header names a protocol it has a dissector for, it dissects the
"contained data" as that protocol (:data:`WIRESHARK_IP_PROTOCOLS`, :func:`tshark_trailer`).

ICMP errors are rare: one :class:`QuotedPacket` per such frame in a dict, read by the display
filter (``filtering``) and the views through the narrow API of :class:`QuotedStore`.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..model.idtext import spi_text
from .inner import InnerSummary, parse

if TYPE_CHECKING:  # (annotations only: the IKE model loads with the first IKE message)
    from ..model.ike import IkeMessage

# IP protocol numbers Wireshark 4.0's "ip.proto" dissector table has a dissector for
# (`tshark -G decodes`; tests/test_quoted_esp.py compares them with the installed tshark). tshark
# dissects an ESP payload only when its next header is one of these, else it calls it data.
WIRESHARK_IP_PROTOCOLS = frozenset((
    0, 1, 2, 4, 6, 9, 17, 29, 33, 36, 41, 43, 44, 46, 47, 48, 50, 51, 53, 54, 58, 60, 62, 80, 83, 88, 89,
    93, 97, 103, 106, 108, 112, 113, 115, 132, 134, 135, 136, 137, 139, 140, 143, 173, 224))

# QuotedPacket.status values
DECRYPTED = "decrypted"  # ESP: the whole packet was quoted and its ICV verified
VERIFIED = "verified"  # AH: the whole packet was quoted and its ICV verified
NOT_VERIFIED = "not-verified"  # cut off before its ICV (ESP: decrypted as far as it goes), unauthenticated


@dataclass(slots=True, frozen=True)
class QuotedPacket:
    """The ESP (or AH) packet one ICMP error frame quotes: its SA (RFC 4301 §4.1: SPI +
    destination + protocol), and the decrypted (AH: verified) inner packet when there is one to
    show. AH quotes are kept apart (:meth:`QuotedStore.add_ah`): the ``esp.*`` filter fields and
    ``packets --json``'s ``quoted_esp`` read only ESP's."""

    frame: int  # the ICMP error's frame
    src: str  # the quoted packet's outer addresses (from the quoted IP header)
    dst: str
    spi: int
    seq: int  # the 32 bits on the wire (AH: with ESN high bits once verified; -1: cut off before it)
    whole: bool  # the quote holds the whole ESP packet (up to its ICV)
    # DECRYPTED, NOT_VERIFIED, or why there is no plaintext: "no-key", "icv-bad", "malformed",
    # "unsupported"
    status: str
    reason: str = ""  # one line for anything but DECRYPTED
    next_header: int | None = None  # as tshark's esp.protocol: None where tshark shows none
    inner: InnerSummary | None = None  # the decrypted packet, dissected (as tshark would)
    plain_len: int = 0  # bytes of plaintext (the inner packet; a cut-off quote's prefix)
    protocol: str = "ESP"  # "ESP" | "AH"

    @property
    def verified(self) -> bool:
        return self.status == DECRYPTED or self.status == VERIFIED

    def info(self) -> str:
        """The Info text after the ICMP error's: which ESP/AH packet, and what it carried."""
        head = f"quoted {self.protocol} {spi_text(self.spi)} seq {self.seq if self.seq >= 0 else '?'}"
        if self.inner is not None and self.verified:
            return f"{head} ▸ {self.inner.info()}"
        if self.status == NOT_VERIFIED:
            return f"{head} (cut off, not verified)"
        return f"{head} ({self.status})"


def summarise(frame: int, data: bytes, next_header: int | None) -> InnerSummary:
    """``data`` (a decrypted payload; ``next_header`` as for ``InnerStore.add``) dissected into an
    :class:`InnerSummary`, addresses as text. One packet: plain Python is fine."""
    table: list[str] = [""]
    index: dict[str, int] = {"": 0}

    def addr(s: str) -> int:
        i = index.get(s)
        if i is None:
            i = index[s] = len(table)
            table.append(s)
        return i

    rec, extra = parse(data, next_header, addr)
    r = list(rec)
    for k in (4, 5, 18, 19):  # src, dst, qsrc, qdst (no frame field in ``rec``)
        r[k] = table[r[k]]
    return InnerSummary(frame, *r, dns_name=extra if isinstance(extra, str) else None)


def tshark_trailer(plain: bytes) -> tuple[bytes, int] | None:
    """What tshark takes for the payload and next header of a decrypted ESP body it was given cut
    off (it cannot tell): the last two bytes read as pad length and next header (RFC 4303 §2.4),
    the bytes before the padding as the "contained data" — when there are any and the next
    header names a protocol it dissects; else None (tshark shows the plaintext as data)."""
    if len(plain) < 2:
        return None
    pad, nh = plain[-2], plain[-1]
    n = len(plain) - pad - 2
    if n <= 0 or nh not in WIRESHARK_IP_PROTOCOLS:
        return None
    return plain[:n], nh


def quoted_ike_dissected(ike: bytes) -> bool:
    """Whether tshark (4.0) dissects more than the header of the IKE message an ICMP error quotes
    (``ike`` from its header to the end of the quote): it asks for the bytes from the Length field
    to Length - 28 octets past it (``tvb_ensure_bytes_exist``), so a quote at most 4 octets short
    of the message shows its Length and payloads, and an earlier cut the header alone."""
    if len(ike) < 28:
        return False
    length = int.from_bytes(ike[24:28], "big")
    return length >= 28 and len(ike) >= length - 4


class QuotedStore:
    """Per ICMP error frame, the ESP packet it quotes (frames added in increasing order)."""

    def __init__(self) -> None:
        self._by_frame: dict[int, QuotedPacket] = {}
        self._frames: list[int] = []
        # frame -> the IKE message an error quotes whole, decoded (and decrypted) as tshark shows
        # it; a cut-off quote's header is in ``InnerStore.quoted`` (tshark shows nothing more)
        self._ike: dict[int, IkeMessage] = {}
        # frame -> the AH packet an error quotes (session_quoted.open_quote_ah), apart from ESP's
        self._ah: dict[int, QuotedPacket] = {}

    def __len__(self) -> int:
        return len(self._frames)

    def add(self, q: QuotedPacket) -> None:
        if q.frame in self._by_frame:
            return
        self._by_frame[q.frame] = q
        if self._frames and self._frames[-1] > q.frame:
            bisect.insort(self._frames, q.frame)
        else:
            self._frames.append(q.frame)

    def get(self, frame: int) -> QuotedPacket | None:
        return self._by_frame.get(frame)

    def add_ah(self, q: QuotedPacket) -> None:
        self._ah.setdefault(q.frame, q)

    def ah(self, frame: int) -> QuotedPacket | None:
        """The AH packet the error in ``frame`` quotes, or None."""
        return self._ah.get(frame)

    def ah_between(self, first: int, last: int) -> dict[int, QuotedPacket]:
        """The AH packets errors of frames ``first``..``last`` quote (few: a display filter's window)."""
        return {f: q for f, q in self._ah.items() if first <= f <= last}

    def add_ike(self, frame: int, msg: IkeMessage) -> None:
        self._ike[frame] = msg

    def ike(self, frame: int) -> IkeMessage | None:
        """The IKE message the error in ``frame`` quotes whole, or None."""
        return self._ike.get(frame)

    def between(self, first: int, last: int) -> dict[int, QuotedPacket]:
        """The records of frames ``first``..``last`` (a display filter's window)."""
        fr = self._frames
        i, j = bisect.bisect_left(fr, first), bisect.bisect_right(fr, last)
        by = self._by_frame
        return {f: by[f] for f in fr[i:j]}

    def prune(self, first_frame: int) -> None:
        """Forget frames before ``first_frame`` (live mode's ring of rows moved on)."""
        i = bisect.bisect_left(self._frames, first_frame)
        for f in self._frames[:i]:
            del self._by_frame[f]
        del self._frames[:i]
        for f in [f for f in self._ike if f < first_frame]:
            del self._ike[f]
        for f in [f for f in self._ah if f < first_frame]:
            del self._ah[f]
