"""What a display filter reads: a session's rows and the tables it keeps beside them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..decode.inner import InnerStore
from ..decode.quoted import QuotedStore
from ..model.ike import IkeMessage
from ..model.packets import FrameRow

if TYPE_CHECKING:
    from ..session import Session


@dataclass(slots=True)
class Source:
    """What a filter reads: the rows, and what the session knows beyond them."""

    rows: Sequence[FrameRow]
    inner: InnerStore | None = None
    ike: Mapping[int, IkeMessage] | None = None  # frame -> decoded (and decrypted) IKE message
    first_ts: float | None = None
    quoted: QuotedStore | None = None  # ICMP error frame -> the ESP packet it quotes (decode.quoted)
    # frame -> the outer IPv6 header's extension headers, (number, Next Header) each, where
    # IPsec sat behind some (decode.demux.Decoder.v6_ext)
    v6_ext: Mapping[int, tuple[tuple[int, int], ...]] | None = None
    # (src, dst, sport, dport) of the RFC 8229 TCP connections (decode.demux.Decoder.tcp_tuples)
    tcp_tuples: Mapping[tuple[str, str, int, int], None] | None = None
    # frame -> the IP headers of the tunnels around its IPsec (decode.demux.Decoder.tunnels)
    tunnels: Mapping[int, tuple[tuple[int, str, str, int, int, int], ...]] | None = None
    # (frames, TCP flags) of the segments that carried RFC 8229 rows (Decoder.tcp_flag_frames/tcp_flags)
    tcp_flags: tuple[Sequence[int], Sequence[int]] | None = None
    # frame -> the tunnelled IPv6 header's extension headers (Decoder.tunnel_v6_ext; v6_ext is then
    # the tunnel's outer header's)
    tunnel_v6_ext: Mapping[int, tuple[tuple[int, int], ...]] | None = None


def source_of(session: Session) -> Source:
    """The :class:`Source` of a :class:`~ipsecscope.session.Session`."""
    dec = getattr(session, "decoder", None)
    flags = getattr(dec, "tcp_flags", None)
    return Source(session.rows, getattr(session, "inner", None), session.ike_messages,
                  session.table.first_ts, getattr(session, "quoted", None),
                  getattr(dec, "v6_ext", None), getattr(dec, "tcp_tuples", None), getattr(dec, "tunnels", None),
                  (dec.tcp_flag_frames, flags) if flags else None, getattr(dec, "tunnel_v6_ext", None))
