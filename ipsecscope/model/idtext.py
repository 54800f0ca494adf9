"""How an identifier reads in every text view (CLI text, TUI, finding texts), written once.

One convention per field, so a value seen in one view can be found in another (and in a log):

- an IKE Message ID in decimal, as charon logs it for both versions (``IKE_AUTH request 1``,
  IKEv1 ``QUICK_MODE request 3516539726``), never hex in one view and decimal in the next;
- an IKE SA as both SPIs, 16 hex digits each as Wireshark shows them, joined by ``_``: one word
  (never wrapped apart), the same string as the IKE SA's key in the JSON documents;
- an ESP/AH SA direction as ``src → dst ESP 0xSPI``: the ``→`` keeps an IPv6 address apart from
  the SPI (``esp:2001:db8::1>2001:db8::2:0x60000001`` read as one long address);
- a direction inside a sentence (a finding's title, explanation and hint, an exchange's summary,
  a NAT mapping) as ``A → B`` too: those strings are built once with ``A -> B``, the form the JSON
  documents have always carried (``ipsecscope.findings/1`` keeps its values), and every text view
  reads them through :func:`arrow_text`;
- an address too long for its cell (an IPv6 address, a MAC, ``[v6]:port``) cut in the middle by
  :func:`short_addr`, keeping its first group and as much of its end as fits (``2001:db8…::a:1``,
  ``02…00:00:0c:05``): the end tells hosts of one network apart, and a cut end made two hosts
  read the same (``02:00:00:00:0c…``); the detail views show the whole address;
- a frame reference as ``frame 3`` whose space never breaks (:data:`NBSP`; the wrappers in
  ``ipsecscope.wrap`` break at plain spaces only, and piped output turns it back into a space).

The JSON documents keep their own versioned forms (``export/documents.py``); a finding's ``sa``
(``IkeSa.key``, ``child:<id>``, ``esp:<src>><dst>:0x<spi>``) is one of them and reads in text
through :func:`sa_ref_text`. Stdlib only, like the rest of ``model/``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

from .plural import noun
from .sa import endpoint_text

NBSP = "\u00a0"  # a space no wrapper here breaks at

_PATH = re.compile(r"(?<![\w.])(?:[A-Za-z]:)?[\\/](?:[^\s:\\/]+[\\/])*([^\s:\\/]+)")


def short_source(source: str | None) -> str:
    """Where keys came from, as views name it: key origins name files by absolute path; the file
    name (and line) is what a reader needs."""
    if not source:
        return "?"
    return _PATH.sub(lambda m: m.group(1), source)


def msg_id_text(msg_id: int) -> str:
    """An IKE Message ID as charon logs it: decimal (RFC 7296 §3.1 counts IKEv2's from 0;
    IKEv1's are random 32-bit values, RFC 2408 §3.1, and charon still prints them in decimal)."""
    return str(msg_id)


def ike_sa_text(spi_i: bytes, spi_r: bytes) -> str:
    """An IKE SA: ``b1b8da23c1e5f0a2_5c9e0d7a3f2b1e44`` (initiator's SPI, responder's)."""
    return f"{bytes(spi_i).hex()}_{bytes(spi_r).hex()}"


def spi_text(spi: int) -> str:
    """An ESP/AH SPI: ``0x427e7d84`` (8 hex digits, as every output writes it)."""
    return f"0x{spi:08x}"


def flow_text(src: str, dst: str, spi: int, protocol: str = "ESP") -> str:
    """One direction of an ESP/AH SA: ``2001:db8::1 → 2001:db8::2 ESP 0x60000001``."""
    return f"{endpoint_text(src, None)} → {endpoint_text(dst, None)} {protocol} {spi_text(spi)}"


def sa_ref_text(ref: str) -> str:
    """A finding's SA reference as a person reads it: ``IKE SA b1b8…_5c9e…``, ``CHILD SA #1``,
    ``198.18.0.1 → 198.18.0.2 ESP 0x15b69dc5``. An unknown form is shown as it is."""
    kind, sep, rest = ref.partition(":")
    if not sep:
        return f"IKE SA {ref}" if "_" in ref else ref
    if kind == "child" and rest.isdigit():
        return f"CHILD SA #{rest}"
    if kind in ("esp", "ah"):
        # "<src>><dst>:0x<spi>": addresses never hold '>', and the SPI is after the last ':'
        pair, sep2, spi = rest.rpartition(":")
        src, sep3, dst = pair.partition(">")
        if sep2 and sep3 and spi.startswith("0x"):
            try:
                return flow_text(src, dst, int(spi, 16), kind.upper())
            except ValueError:
                pass
    return ref


def arrow_text(text: str) -> str:
    """``198.18.0.1 -> 198.18.0.2`` as every text view writes a direction: ``198.18.0.1 → 198.18.0.2``.
    Only the spaced ASCII arrow is rewritten (``<->`` and ``->`` inside a word are left alone)."""
    return text.replace(" -> ", " → ")


def frame_ref(frame: int) -> str:
    """``frame 3``, never broken across two lines."""
    return f"frame{NBSP}{frame}"


def frames_ref(frames: Iterable[int]) -> str:
    """``frames 3, 4`` (``frame 3`` for one): the word stays with the first number."""
    shown = list(frames)
    return f"{noun(len(shown), 'frame')}{NBSP}{', '.join(map(str, shown))}"


_SEPS = ":.-"  # what separates an address's groups (IPv6/MAC ':', IPv4/name '.', MAC '-')


@lru_cache(maxsize=4096)  # a list shows the same few addresses on every row
def short_addr(addr: str, width: int) -> str:
    """``addr`` in at most ``width`` cells: whole when it fits, else cut in the middle with "…",
    keeping its first group and, where whole groups allow, more of its end than of its start
    (``2003:51…::2``, ``02…00:00:0c:05``, ``198…40.10``): the end is the host's part (IPv6
    interface ID, the NIC-specific half of a MAC), the start the network's. An IPv6 ``::`` stays
    with the end it abbreviates (``…::2``, never ``…:2``). A name without separators keeps both
    ends. Every view that cuts an address cuts it here, so a host reads the same everywhere."""
    if len(addr) <= width:
        return addr
    if width < 4:
        return addr[:width]
    avail = width - 1  # the "…"
    first = next((i for i, c in enumerate(addr) if c in _SEPS), len(addr))
    # the end from a group boundary ('::' kept with it), as long as leaves the first group whole
    tail = ""
    for i in range(len(addr) - 1, 0, -1):
        if addr[i - 1] in _SEPS and addr[i] not in _SEPS:
            cand = addr[i - 2:] if i >= 2 and addr[i - 2:i] == "::" else addr[i:]
            if len(cand) > avail - first:
                break
            tail = cand
    head = ""
    if tail:  # the start up to a group boundary, in the room the end leaves
        room = avail - len(tail)
        for i in range(first, room + 1):
            if addr[i] in _SEPS and addr[i - 1] not in _SEPS:
                head = addr[:i]
    if not tail or not head:
        return _cut_to_groups(addr, width, first)
    return f"{head}…{tail}"


def _cut_to_groups(addr: str, width: int, first: int) -> str:
    """``addr`` in a cell too narrow for more than its first and last groups (a 4-8 cell column):
    whole groups only, never part of one -- "20…1" for ``2001:db8:50::1`` read as another
    network, "0…05" as another MAC. First group and last group; else the last alone (the host's
    part, "…abcd"); a name without separators keeps both ends. Only a last group wider than the
    whole cell is cut (nothing else could show)."""
    avail = width - 1  # the "…"
    cut = max(addr.rfind(c) for c in _SEPS)
    if cut < 0:  # no groups: both ends
        keep = avail // 2
        return f"{addr[:avail - keep]}…{addr[len(addr) - keep:]}"
    last = addr[cut + 1:]
    ends = [addr[cut - 1:], last] if cut >= 1 and addr[cut - 1:cut + 1] == "::" else [last]
    head = addr[:first]
    for end in ends:
        if len(head) + len(end) <= avail:
            return f"{head}…{end}"
    for end in ends:
        if len(end) <= avail:
            return f"…{end}"
    return f"…{last[len(last) - avail:]}"
