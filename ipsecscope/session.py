"""Session: wires capture → decode → crypto → state → analysis. The CLI, TUI and live mode are
front ends over one of these; scripts use it through :mod:`ipsecscope.api`.

A session is fed frames in capture order (``load(path)`` for files, ``feed(raw)`` for live
sources). It keeps one compact :class:`~ipsecscope.model.packets.FrameRow` per frame (or a ring of
the last ``max_rows`` in live mode), the decoded IKE messages (few, and the TUI shows them), and
the correlation model. ESP payloads are not kept: ``detail(frame)`` re-reads one frame from the
file when a view asks for it.
"""

from __future__ import annotations

import bisect
import socket
import struct
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from . import session_fast
from .capture import open_capture, renumbered
from .crypto.esp import MAX_NESTED, EspDecryptor, EspResult, esp_inside
from .decode.demux import Decoder
from .decode.inner import EspLayer, InnerStore
from .decode.link import link_ethertype
from .decode.quoted import QuotedStore
from .keys import KeyStore, add_secrets_block, load_keys
from .keys.match import FileMatch, match_keys
from .model import iana
from .model.idtext import msg_id_text
from .model.packets import (
    AhPacket,
    EspPacket,
    FrameRow,
    IcmpError,
    IkeDatagram,
    Malformed,
    NatKeepalive,
    Packet,
    RawFrame,
    link_text,
)
from .model.plural import plural
from .model.sa import Finding, SaTable, Severity
from .rowstore import STATUS_CODES, FrameOffsets, NoRows, RowStore, follow_moves
from .session_detail import FrameDetail, FrameViews, QuotedEsp, describe_inner, iana_proto
from .session_esp import count_outcome
from .state.names import exchange_name
from .state.tracker import Tracker

if TYPE_CHECKING:
    # The IKE stack (decoder, decryptors, the IKE model, session_quoted) is imported at the first
    # IKE message or ICMP quote: a capture of ESP alone never needs it (start-up, issue 15).
    from .crypto.ah import AhResult, AhVerifier
    from .crypto.ike_sk import IkeDecryptor
    from .crypto.ikev1 import Ikev1Decryptor
    from .model.ike import IkeMessage
    from .state.ikev1_frag import Ikev1Reassembler

_ESP_HDR = struct.Struct("!II")
# EspResult.status -> the row status a Packets table shows
_ROW_STATUS = {"ok": "decrypted", "no_key": "no-key", "icv_failed": "icv-bad"}
# AhResult.status -> the row status (AH authenticates, it does not encrypt: "verified")
_AH_ROW_STATUS = {"ok": "verified", "no_key": "no-key", "icv_failed": "icv-bad", "unverifiable": "unverified"}

# Live mode has no file to re-read a frame from: the raw bytes of the most recent frames are kept
# (up to this many bytes, and never more frames than rows) for the detail pane's decode and hex view.
LIVE_BYTES_KEPT = 32 << 20

Progress = Callable[[int, int], None]
"""``progress(bytes_read, total)``, called by :meth:`Session.load` between frames, never inside
one: at each window of the fast loop (``session_fast``, 4 MiB), every 4096 frames on the general
path. There the session is consistent — stats, tracker (SA table) and rows agree on every frame so
far, and :attr:`Session.findings` covers them — so the callback may let another thread look at the
session before it returns (the TUI's incremental loading does: ``tui/loading.py``)."""


@dataclass(slots=True)
class SessionStats:
    frames: int = 0
    ike: int = 0
    esp: int = 0
    ah: int = 0
    keepalives: int = 0
    other: int = 0  # frames that are not IPsec at all
    malformed: dict[str, int] = field(default_factory=dict)  # by layer
    decrypted: int = 0
    icv_failed: int = 0
    no_key: int = 0
    ike_decrypted: int = 0
    ike_icv_failed: int = 0
    derived_child_keys: int = 0
    ah_verified: int = 0  # AH packets whose ICV verified (only with AH keys)
    ah_icv_failed: int = 0
    nested_esp: int = 0  # ESP layers found inside decrypted ESP (each its own SA; not frames)
    truncated: str | None = None  # the capture ended inside a record

    @property
    def malformed_total(self) -> int:
        return sum(self.malformed.values())


class _AhCheck:
    """An AH packet's frame to :meth:`AhVerifier.verify`: where its IP header starts."""

    __slots__ = ("verify", "ip_offset")

    def __init__(self, verifier: AhVerifier) -> None:
        from .decode.link import ip_offset

        self.verify, self.ip_offset = verifier.verify, ip_offset

    def check(self, pkt: AhPacket, raw: RawFrame) -> AhResult:
        _ver, off = self.ip_offset(raw.linktype, raw.data)
        try:
            return self.verify(pkt, raw.data, off)
        except Exception as exc:  # noqa: BLE001 - odd input must never stop a capture being read
            from .crypto.ah import AhResult

            return AhResult("unverifiable", reason=f"internal error ({type(exc).__name__}); ICV not checked")


def _intern(cache: dict[str, str], s: str) -> str:
    # Millions of rows share a handful of addresses; one str object each keeps memory flat.
    return cache.setdefault(s, s)


def _payload_label(enum: type, value: int) -> str:
    """One token per payload in the row's list: the registry name, else PRIVATE(n) for the
    private-use range (RFC 2408 §3.1, RFC 7296 §3.2: 128-255; Microsoft's AuthIP sends 133, 135)
    or UNASSIGNED(n): the registry's "<ENUMNAME> <value>" would read as two payloads."""
    try:
        return enum(value).name
    except ValueError:
        return f"PRIVATE({value})" if value >= 128 else f"UNASSIGNED({value})"


def _ike_info(msg: IkeMessage) -> str:
    h = msg.header
    exch = exchange_name(h.exchange, h.major)  # IKE_SA_INIT; 'Main Mode', as the SA views say it
    role = ("response" if h.is_response else "request") if h.major == 2 else "v1"
    names = []
    # A decrypted IKEv1 message keeps its encrypted body as one opaque payload: show the inside.
    shown = msg.inner if (h.encrypted_v1 and msg.decrypted) else msg.payloads + msg.inner
    from .model.ike import NotifyPayload, phase1_payload_label

    for p in shown:
        if isinstance(p, NotifyPayload):
            enum = iana.NotifyType if h.major == 2 else getattr(iana, "Ikev1NotifyType", iana.NotifyType)
            names.append(f"N({iana.name(enum, p.notify_type)})")
        elif h.major == 1 and (draft := phase1_payload_label(p)) is not None:
            names.append(draft)
        else:
            enum = iana.PayloadType if h.major == 2 else getattr(iana, "Ikev1Payload", iana.PayloadType)
            names.append(_payload_label(enum, p.type))
    flag = ""
    if msg.decrypted or msg.icv_ok is False:
        flag = " (decrypted)" if msg.icv_ok is not False else " (ICV BAD)"
    head = f"{exch} {role} #{msg_id_text(h.msg_id)}"
    if msg.v1_fragments is not None:
        piece = _v1_piece(msg)
        if msg.reassembled_from:
            # tshark: "Reassembled + Message fragment 2 - last"; the whole message is shown here
            frames = ", ".join(map(str, msg.reassembled_from))
            return f"{head} {piece}, reassembled from frames {frames}: [ {' '.join(names)} ]{flag}"
        return f"{head} [ {' '.join(names)} ] {piece}"
    return f"{head} [ {' '.join(names)} ]{flag}"


def _v1_piece(msg: IkeMessage) -> str:
    """'fragment 2/2 of message ID 0 (Fragment ID 1)' for an IKEv1 piece (payload 132)."""
    fs = msg.v1_fragments
    assert fs is not None
    num = next((n for n, f in fs.frames.items() if f == msg.frame), None)
    if num is None:  # not added: a repeat of a number held, or a piece of a finished message
        p = msg.payloads[0] if msg.payloads else None
        num = getattr(p, "number", 0)
        tail = " again" if fs.dropped is None else f" not reassembled: {fs.dropped}"
    else:
        tail = ""
    of = f"/{fs.last}" if fs.last else ""
    return f"fragment {num}{of} of message ID {msg_id_text(fs.msg_id)} (Fragment ID {fs.frag_id}){tail}"


class Session(FrameViews):
    """One capture (or live source) with its keys, decoded, decrypted and correlated."""

    def __init__(self, keys: KeyStore | None = None, *, max_rows: int | None = None,
                 keep_rows: bool = True, row_limit: int | None = None) -> None:
        """``max_rows``: live mode, keep a ring of the last rows. ``keep_rows=False``: keep no
        packet rows at all (nor where each frame sits in the file) — for answers about SAs and
        findings (``sas``, ``findings``), whose memory then grows with SAs and flows, not frames."""
        self.keys = keys if keys is not None else KeyStore()
        self.key_files: list[Path] = []
        self.max_rows = max_rows
        self.keep_rows = keep_rows
        # A file's rows: at most row_limit (the TUI's --max-rows; the rest counted in rows.dropped).
        self.row_limit = row_limit
        self.warnings: list[str] = []  # one line each about the input (a gzip bomb's ratio)
        self.paths: list[Path] = []
        self.damage: str | None = None  # set by from_files: why the answer covers less than the files
        self._reset()

    @classmethod
    def from_files(cls, files: Iterable[str | Path], keys: Iterable[str | Path] = (), *,
                   progress: Progress | None = None, strict_keys: bool = False,
                   keep_rows: bool = True, follow: threading.Event | None = None) -> Session:
        """A session over ``files`` (read in order, into one model) with ``keys`` loaded first.
        With ``follow``, the last file is read as ``tail -f`` would until the event is set. Damage
        part-way: see :meth:`load_damaged`; an unreadable key file raises. ``keep_rows=False``: no
        packet rows (see :class:`Session`).
        """
        s = cls(keep_rows=keep_rows)
        if keys := list(keys):
            s.add_key_files(keys, strict=strict_keys)  # skipped rows: s.key_warnings
        for i, f in enumerate(files := list(files)):
            s.load_damaged(f, progress, follow if i == len(files) - 1 else None)
        return s

    def load_damaged(self, path: str | Path, progress: Progress | None = None,
                     follow: threading.Event | None = None) -> str | None:
        """:meth:`load`, but damage after sound frames is analysed up to and kept in (and returned
        as) :attr:`damage`; not a capture at all, or no sound frame: raises."""
        from .errors import CaptureError, CaptureFormatError

        before = self.stats.frames
        try:
            self.load(path, progress, follow)
        except CaptureError as exc:
            if isinstance(exc, CaptureFormatError) or self.stats.frames == before:
                raise
            self.damage = f"{exc} (analysed the {plural(self.stats.frames - before, 'frame')} before the damage)"
        if self.stats.truncated and self.damage is None:
            # A capture cut off in its last record (tcpdump killed, disk full) is still input
            # damage: the answer is about less than the file claims, so the exit status says so.
            self.damage = f"{path}: {self.stats.truncated} (analysed the {plural(self.stats.frames - before, 'frame')} before it)"
        return self.damage

    # -- set-up ---------------------------------------------------------------------------------

    def _reset(self) -> None:
        # ICMP errors quoting IPsec are evidence (tracker); rows and filters read the tunnels' headers
        self.decoder = Decoder(icmp_errors=True, tunnel_hops=True, lost_ike=True)
        self._ike_dec: tuple[IkeDecryptor, Ikev1Decryptor, IkeDecryptor] | None = None  # _ike_decryptors()
        self.esp_decryptor = EspDecryptor(self.keys)
        self.tracker = Tracker()
        from .plugins import event_listeners

        self.tracker.listeners.extend(event_listeners())  # plugins' on_event hooks
        self.stats = SessionStats()
        # A file's rows go to a packed RowStore (~60 bytes a row instead of ~380 as FrameRow objects);
        # live mode keeps a ring of the last max_rows FrameRow objects.
        self.rows: RowStore | deque[FrameRow] | NoRows = (
            deque(maxlen=self.max_rows) if self.max_rows else RowStore(self.row_limit) if self.keep_rows else NoRows())
        # The decrypted inner packets (and plain IP frames), summarised for the Info column and
        # the display filter's inner fields (decode.inner).
        self.inner = InnerStore(enc=self.decoder.enc)  # enc(4) frames' SPIs named in their Info (decode.link)
        if type(self.rows) is RowStore:
            self.rows.inner = self.inner
        self.tracker.listeners.append(follow_moves(self.rows))  # a flow moving takes its rows along
        # The ESP packets ICMP errors quote: a second inner record of those (rare) frames, never
        # counted for an SA (decode.quoted, session_quoted).
        self.quoted = QuotedStore()
        self.ike_messages: dict[int, IkeMessage] = {}
        # IKEv1 Fragment payloads (132) joined before decryption; made with the first IKE message
        # (an ESP-only capture loads no IKE module)
        self.v1_fragments: Ikev1Reassembler | None = None
        self._frame_offsets = FrameOffsets()  # frame -> (path index, offset, linktype), for detail()
        self._frame_bases: list[int] = []  # per loaded file: the frames before it (load())
        self._no_key_result: EspResult | None = None
        # AH ICVs are checked only once the keys hold an AH SA (crypto.ah): a capture without AH
        # keys pays one integer compare per AH packet (_ah_verifier), nothing per other packet.
        self.ah_verifier: AhVerifier | None = None
        self._ah_check: _AhCheck | None = None
        self._ah_keys_version = -1
        self._addr: dict[str, str] = {}
        self._findings: list[Finding] | None = None
        self._findings_at = 0  # stats.frames when _findings was evaluated (a look while loading)
        self._secrets_seen = 0
        self._live_raw: OrderedDict[int, RawFrame] = OrderedDict()  # frame -> raw (live mode only)
        self._live_raw_bytes = 0

    def _ike_decryptors(self) -> tuple[IkeDecryptor, Ikev1Decryptor, IkeDecryptor]:
        """(IKEv2, IKEv1, quoted IKE: its counters are not the capture's) at the first IKE message."""
        if self._ike_dec is None:
            from .crypto.ike_sk import IkeDecryptor
            from .crypto.ikev1 import Ikev1Decryptor

            self._ike_dec = (IkeDecryptor(self.keys), Ikev1Decryptor(self.keys), IkeDecryptor(self.keys))
        return self._ike_dec

    def add_key_files(self, paths: Iterable[str | Path], strict: bool = False) -> int:
        """Load key files into this session's store; returns how many keys they added.

        Unusable rows are skipped and listed in :attr:`key_warnings` (``strict``: raise instead).
        """
        paths = [Path(p) for p in paths]
        before = len(self.keys)
        self.keys.merge(load_keys(paths, strict=strict))
        self.key_files.extend(paths)
        return len(self.keys) - before

    def key_matches(self) -> list[FileMatch]:
        """Per key file: how many of its IKE / ESP SAs this capture used, and which ESP keys were
        matched across NAT (``FileMatch.matches_nothing``: keys for another tunnel or host)."""
        esp = [(f.src, f.dst, f.spi) for f in self.table.flows.values()]
        ike = [(sa.ike_spi_i, sa.ike_spi_r) for sa in self.table.ike_sas.values()]
        return match_keys(self.keys, esp, ike)

    @property
    def key_warnings(self) -> list[str]:
        """What key loading skipped or noticed, ``file:line: reason`` each (for a TUI notice)."""
        return list(dict.fromkeys(self.keys.warnings))

    # -- feeding --------------------------------------------------------------------------------

    def load(self, path: str | Path, progress: Progress | None = None,
             follow: threading.Event | None = None) -> SessionStats:
        """Read a whole capture file (``"-"``: standard input). Raises
        :class:`~ipsecscope.errors.CaptureError` for a file that is not a capture; a truncated last
        record is counted, not raised. With ``follow``, the end of the file waits for more frames
        (``tail -f``) until the event is set."""
        path = Path(path)
        self.begin_file(path)
        path_index = len(self.paths) - 1
        # The fast loop maps a whole, finished file: not standard input, not a file still growing.
        fmt = None if follow is not None or str(path) == "-" else session_fast.eligible(self, str(path))
        if fmt is not None:
            self._truncated = session_fast.load(self, str(path), path_index, fmt, progress)
        else:
            self._load_general(path, path_index, progress, follow)
        self.end_of_input(self._truncated)
        self.finish()
        return self.stats

    def take_secrets(self, secrets: list[tuple[int, bytes]]) -> None:
        """Keys from the pcapng Decryption Secrets Blocks a reader has met since the last call."""
        if len(secrets) == self._secrets_seen:
            return
        for stype, data in secrets[self._secrets_seen:]:
            add_secrets_block(self.keys, stype, data)
        self._secrets_seen = len(secrets)

    def end_of_input(self, truncated: str | None) -> None:
        """A capture has ended (``truncated``: why it was cut off): datagrams whose fragments
        never all arrived become malformed, and a cut-off file is a finding."""
        for m in self.decoder.flush():  # IP datagrams whose fragments never all arrived
            self._late(m)
        if truncated:
            self.stats.truncated = truncated
            self.stats.malformed["capture"] = self.stats.malformed.get("capture", 0) + 1
            # Through the tracker too, so `findings` (CAPTURE-MALFORMED) says the file was cut off.
            self.tracker.on_malformed(Malformed(self.stats.frames + 1, self.tracker.table.last_ts or 0.0,
                                                f"capture cut off: {truncated}", "capture"))

    def begin_file(self, path: str | Path) -> int:
        """A capture starts (load(), or a reader that feeds frames itself); returns how many frames
        came before it. Several captures read into one session are numbered as one, as
        `mergecap -a` joins them: a later file's frames continue after the earlier ones', so a
        frame number (rows, filters, findings, detail) names one frame; :meth:`frame_origin` maps
        it back to the file and the number tshark gives it there."""
        self.paths.append(Path(path))
        self._frame_bases.append(self.stats.frames)
        return self.stats.frames

    def frame_origin(self, frame: int) -> tuple[Path, int] | None:
        """Which loaded file a session frame number came from, and its number in that file (what
        tshark calls it when it reads that file alone); None for a number outside every file."""
        i = bisect.bisect_left(self._frame_bases, frame) - 1
        if i < 0 or frame > self.stats.frames:
            return None
        return self.paths[i], frame - self._frame_bases[i]

    def _load_general(self, path: Path, path_index: int, progress: Progress | None,
                      follow: threading.Event | None = None) -> None:
        with open_capture(path, follow) as reader:
            frames = renumbered(reader, self._frame_bases[path_index]) if self._frame_bases[path_index] else reader
            # A pipe or gzip stream cannot be re-read by offset: keep the recent frames' bytes instead.
            keep_raw = None if reader.rereadable or not self.keep_rows else self._keep_live
            every = 4096
            secrets = reader.secrets  # the reader appends to this list as it meets pcapng DSBs
            offsets = self._frame_offsets
            off_arr, off_append, loc_append = offsets.offset, offsets.offset.append, offsets.loc.append
            # feed(raw), inlined for the common one-ESP-packet frame (a Python call less per frame).
            st, tbl = self.stats, self.tracker.table
            decode_all, esp, dispatch = self.decoder.decode_all, self._esp, self._dispatch
            keep = self.keep_rows
            n = 0
            for raw in frames:
                n += 1
                if len(secrets) != self._secrets_seen:
                    self.take_secrets(secrets)
                if keep_raw is not None:
                    keep_raw(raw)
                elif raw.offset >= 0 and keep:
                    if raw.index == len(off_arr):  # the common case, inlined from FrameOffsets.set
                        off_append(raw.offset)
                        loc_append(path_index << 32 | (raw.linktype & 0xFFFFFFFF))
                    else:
                        offsets.set(raw.index, path_index, raw.offset, raw.linktype)
                st.frames += 1
                if tbl.first_ts is None:
                    tbl.first_ts = raw.ts
                if tbl.last_ts is None or raw.ts > tbl.last_ts:  # the capture's end: its latest time
                    tbl.last_ts = raw.ts  # (records need not be in time order: merged captures)
                pkts = decode_all(raw)
                if len(pkts) == 1 and type(pkts[0]) is EspPacket and pkts[0].frame == raw.index:
                    esp(raw, pkts[0])
                else:
                    dispatch(raw, pkts)
                if progress is not None and n % every == 0:
                    progress(reader.bytes_read, reader.total_bytes)
            self._truncated = reader.truncated
            if reader.warning:
                self.warnings.append(reader.warning)
            if progress is not None:
                progress(reader.total_bytes, reader.total_bytes)

    def _general_frame(self, raw: RawFrame) -> None:
        """One frame the fast loop (session_fast) leaves to the general path; it has already
        counted the frame, its time and its offset."""
        pkts = self.decoder.decode_all(raw)
        if len(pkts) == 1 and type(pkts[0]) is EspPacket and pkts[0].frame == raw.index:
            self._esp(raw, pkts[0])
        else:
            self._dispatch(raw, pkts)

    def finish(self, now: float | None = None) -> None:
        """Conclusions that need the end of the input (or, live, the current time ``now``): an IKE
        request unanswered for long enough makes its SA FAILED."""
        self.tracker.finish(now=now)
        self._findings = None

    def reload(self, progress: Progress | None = None) -> SessionStats:
        """Decode everything again (after keys were added): every stage re-runs from the files."""
        paths = list(self.paths)
        self.paths = []
        self._reset()
        for p in paths:
            self.load(p, progress)
        return self.stats

    def feed(self, raw: RawFrame) -> list[Packet]:
        """Process one frame: decode, decrypt, correlate. Returns the decoded packets (usually
        one; none for non-IPsec frames; several for a TCP segment carrying many RFC 8229 records)."""
        st = self.stats
        st.frames += 1
        if self.max_rows:  # live: keep the recent frames' bytes (no file to re-read them from)
            self._keep_live(raw)
        tbl = self.tracker.table
        if tbl.first_ts is None:
            tbl.first_ts = raw.ts
        if tbl.last_ts is None or raw.ts > tbl.last_ts:  # the latest time, as in load()
            tbl.last_ts = raw.ts
        pkts = self.decoder.decode_all(raw)
        if len(pkts) == 1 and type(pkts[0]) is EspPacket and pkts[0].frame == raw.index:
            self._esp(raw, pkts[0])  # the bulk of a big capture
            return pkts
        return self._dispatch(raw, pkts)

    def _keep_live(self, raw: RawFrame) -> None:
        ring = self._live_raw
        ring[raw.index] = raw
        self._live_raw_bytes += len(raw.data)
        while ring and (self._live_raw_bytes > LIVE_BYTES_KEPT or len(ring) > (self.max_rows or len(ring))):
            _, old = ring.popitem(last=False)
            self._live_raw_bytes -= len(old.data)

    def _dispatch(self, raw: RawFrame, pkts: list[Packet]) -> list[Packet]:
        """The rest of :meth:`feed` once ``raw`` is decoded (counted, time-stamped)."""
        self._findings = None
        st = self.stats
        err = None
        if pkts and type(pkts[-1]) is IcmpError:
            # Evidence for the SA it quotes; the frame itself stays an OTHER row as any plain IP
            # frame (its Info and filter fields come from the inner store).
            err = pkts[-1]
            self.tracker.on_icmp_error(err)
            pkts = pkts[:-1]
        if not pkts:
            st.other += 1
            quoted = None
            link = ""  # a frame that is not IP at all: what it is ("ARP", "ethertype 0x88b5")
            if self.keep_rows:
                qraw = raw  # the frame an ICMP error's quote is read from
                ti = self.decoder.tunnel_inner
                if ti is not None and ti[0] == raw.index and not ti[2]:
                    # an Ethernet frame that is no IP inside a bridging/mirror tunnel (ARP...):
                    # a link row as outside one (its MACs read again on display), the tunnels'
                    # headers are decoder.tunnels (filters: ip.src == <tunnel endpoint>)
                    et = link_ethertype(1, ti[3][ti[4]:])
                    link = link_text(et) if et is not None else ""
                elif ti is not None and ti[0] == raw.index:
                    # inside a tunnel (GRE, IP in IP, VXLAN...): the innermost packet, whose hosts
                    # tshark's Source/Destination show; the tunnels' headers are decoder.tunnels
                    self.inner.add(raw.index, memoryview(ti[3])[ti[4]:], 4 if ti[2] == 4 else 41)
                    if err is not None:  # an ICMP error inside the tunnel: its quote is read from there
                        qraw = RawFrame(raw.index, raw.ts, raw.ts_ns, 101, ti[3][ti[4]:], raw.orig_len, raw.iface,
                                        raw.offset)
                else:
                    link = self.inner.add_ip_frame(raw.index, raw.data, raw.linktype)  # its IP layer, for filters
                if err is not None and err.protocol == "ESP":  # the quoted ESP: a second inner record
                    from . import session_quoted

                    got = session_quoted.open_quote(self.esp_decryptor, qraw, err)
                    if got is not None:
                        quoted = got[0]
                        self.quoted.add(quoted)
                elif err is not None and err.protocol == "AH":  # the quoted AH, its ICV over the quoted header
                    from . import session_quoted

                    quoted = session_quoted.open_quote_ah(self.ah_verifier if self._ah_verifier() else None, qraw, err)
                    if quoted is not None:
                        self.quoted.add_ah(quoted)
                elif err is not None and err.protocol == "IKE":  # a whole quoted IKE message, for filters
                    from . import session_quoted

                    msg = session_quoted.open_quoted_ike(self._ike_decryptors()[2], qraw, err,
                                                         self.inner.quoted.get(raw.index))
                    if msg is not None:
                        self.quoted.add_ike(raw.index, msg)
            # A RowStore formats an OTHER row's Info from the inner store when read; a live ring
            # holds FrameRow objects, so theirs is formatted now (and a quoted packet's, always).
            info = link or ("" if type(self.rows) is RowStore and quoted is None else self.inner.info(raw.index) or "")
            if quoted is not None:
                info = f"{info} ▸ {quoted.info()}" if info else quoted.info()
            self._add_row(FrameRow(raw.index, raw.ts, "OTHER", "", "", 0, 0, raw.orig_len, info=info))
            return pkts
        if pkts[0].frame != raw.index:  # reports about earlier frames (abandoned IP datagrams)
            for m in [p for p in pkts if p.frame != raw.index]:
                self._late(m)
            pkts = [p for p in pkts if p.frame == raw.index]
        if not pkts:
            st.other += 1
            self._add_row(FrameRow(raw.index, raw.ts, "OTHER", "", "", 0, 0, raw.orig_len))
        for pkt in pkts:
            self._process(raw, pkt)
        return pkts

    def _esp(self, raw: RawFrame, pkt: EspPacket) -> None:
        self._findings = None
        st = self.stats
        st.esp += 1
        dec = self.esp_decryptor
        sa = dec.state(pkt.src, pkt.dst, pkt.spi)
        if sa.keys is None and self._no_key_result is not None:
            # No key for this SA: what decrypt() would say, without building a new result each time.
            sa.stats.no_key += 1
            res = self._no_key_result
        else:
            # decrypt(pkt) without its second SA lookup: open_raw is the decryptor's hot path.
            code, val, hi = dec.open_raw(sa, pkt.seq, pkt.data)
            res = dec._result(sa, code, val, hi)
        row_status = count_outcome(st, res.status)
        if row_status == "no-key" and res.keys is None and res.seq_hi == 0 and res.inner is None:
            self._no_key_result = res
        flow = self.tracker.on_esp(pkt, res)
        if flow is None:  # the tracker reported an internal error instead
            flow = self.tracker.table.flows.get((pkt.src, pkt.dst, pkt.spi, "ESP"))
        inner = res.inner
        if inner is not None:
            nh = res.next_header
            # the same test as session_fast's: ESP in it (nested) or not
            if nh == 50 or (nh == 4 and len(inner) > 9 and inner[9] == 50) or (
                    nh == 41 and len(inner) > 6 and inner[6] == 50):
                self._nested(raw.index, raw.ts, inner, nh, pkt.src, pkt.dst)
            elif self.keep_rows:  # rows' inner packets (none without rows)
                self.inner.add(raw.index, inner, nh)
        seq = (res.seq_hi << 32) | pkt.seq if res.seq_hi else pkt.seq
        rows = self.rows
        if type(rows) is RowStore:
            ix = rows._addr_ix
            src = ix.get(pkt.src)
            if src is None:
                src = rows.addr(pkt.src)
            dst = ix.get(pkt.dst)
            if dst is None:
                dst = rows.addr(pkt.dst)
            rows.add_esp(raw.index, raw.ts, src, dst, pkt.sport, pkt.dport, raw.orig_len,
                         pkt.spi, seq, STATUS_CODES.get(row_status) or rows.status_code(row_status),
                         flow.child_sa if flow is not None else None, res.next_header)
        else:
            intern = self._addr
            info = f"ESP seq {seq}"
            inner_info = self.inner.info(raw.index) if res.inner is not None else None
            if inner_info:
                info += f" ▸ {inner_info}"
            elif res.next_header is not None:
                info += f" next {iana_proto(res.next_header)}"
            if self.max_rows and len(self.inner) > 2 * self.max_rows and rows:  # live: forget what left the ring
                self.inner.prune(rows[0].frame)
                self.quoted.prune(rows[0].frame)
            rows.append(FrameRow(
                raw.index, raw.ts, "ESP", _intern(intern, pkt.src), _intern(intern, pkt.dst), pkt.sport,
                pkt.dport, raw.orig_len, pkt.spi, seq, info, row_status,
                None, flow.child_sa if flow is not None else None,
            ))

    def _nested(self, frame: int, ts: float, inner: bytes, nh: int, src: str, dst: str) -> None:
        """ESP inside a decrypted ESP payload (a tunnel through a tunnel, or transport-mode ESP of
        ESP): each inner layer is its own SA (SPI + destination + protocol, RFC 4301 §4.1), so it is
        decrypted with its own keys and given to the tracker like any ESP packet of that SA (its
        CHILD SA, counts and sequence analysis), then the innermost packet and the layers above it
        are recorded for the Info column and the display filter. A layer without keys, or one that
        fails, ends the descent; more than MAX_NESTED layers is malformed. The outer ESP stays the
        frame's packet: the session's per-frame counters do not count inner layers."""
        dec, tracker = self.esp_decryptor, self.tracker
        layers: list[EspLayer] = []
        for _depth in range(MAX_NESTED):
            found = esp_inside(inner, nh)
            if found is None:
                break
            esp, isrc, idst = found
            ver = 0
            if isrc:  # tunnel mode: the inner IP header's addresses; transport: the carrier's
                ver = 4 if len(isrc) == 4 else 6
                af = socket.AF_INET if ver == 4 else socket.AF_INET6
                src, dst = socket.inet_ntop(af, isrc), socket.inet_ntop(af, idst)
            if len(esp) < 8:
                self._nested_malformed(frame, ts, f"ESP inside ESP with a truncated header ({len(esp)} of 8 bytes)")
                break
            spi, seq = _ESP_HDR.unpack_from(esp)
            pkt = EspPacket(frame, ts, src, dst, spi, seq, bytes(esp), ip_version=6 if ":" in src else 4)
            res = dec.decrypt(pkt)
            flow = tracker.on_esp(pkt, res)
            self.stats.nested_esp += 1
            layers.append(EspLayer(ver, src, dst, spi, (res.seq_hi << 32) | seq,
                                   _ROW_STATUS.get(res.status) or res.status.replace("_", "-"),
                                   res.next_header, flow.child_sa if flow is not None else None))
            if res.inner is None:
                break
            inner, nh = res.inner, res.next_header  # type: ignore[assignment]
        else:
            if esp_inside(inner, nh) is not None:
                self._nested_malformed(frame, ts, f"ESP nested more than {MAX_NESTED} layers deep: the "
                                                  "innermost layers were not decrypted")
        if self.keep_rows:
            self.inner.add(frame, inner, nh, tuple(layers))

    def _nested_malformed(self, frame: int, ts: float, reason: str) -> None:
        st = self.stats
        st.malformed["esp"] = st.malformed.get("esp", 0) + 1
        self.tracker.on_malformed(Malformed(frame, ts, reason, "esp"))

    def _process(self, raw: RawFrame, pkt: Packet) -> None:
        st = self.stats
        tbl = self.tracker.table
        intern = self._addr
        if type(pkt) is EspPacket:
            self._esp(raw, pkt)
        elif type(pkt) is IkeDatagram:
            st.ike += 1
            from .decode.ike import parse_ike

            frags = self.v1_fragments
            if frags is None:
                from .state.ikev1_frag import Ikev1Reassembler

                frags = self.v1_fragments = Ikev1Reassembler()
            msg = self._decrypt_ike(frags.add(parse_ike(pkt)))
            self.ike_messages[raw.index] = msg
            if self.max_rows and len(self.ike_messages) > self.max_rows:
                del self.ike_messages[next(iter(self.ike_messages))]  # live mode: a ring, like rows
            self.tracker.on_ike(msg)
            self._derive_child_keys()
            status = "malformed" if msg.malformed else ("icv-bad" if msg.icv_ok is False else (
                "decrypted" if msg.decrypted else ""))
            if msg.malformed:
                st.malformed["ike"] = st.malformed.get("ike", 0) + 1
                self.tracker.on_malformed(Malformed(raw.index, raw.ts, f"IKE: {msg.malformed}", "ike"),
                                          whole=raw.orig_len <= len(raw.data))
            key = f"{msg.header.spi_i.hex()}_{msg.header.spi_r.hex()}"
            ike_key = key if key in tbl.ike_sas else self._ike_key_for(msg)
            info = _ike_info(msg) + (f" — malformed: {msg.malformed}" if msg.malformed else "")
            self._add_row(FrameRow(
                raw.index, raw.ts, "IKE", _intern(intern, pkt.src), _intern(intern, pkt.dst), pkt.sport,
                pkt.dport, raw.orig_len, None, msg.header.msg_id, info, status, ike_key, None,
            ))
        elif type(pkt) is AhPacket:
            st.ah += 1
            ver = self._ah_verifier()
            res = ver.check(pkt, raw) if ver is not None else None
            flow = self.tracker.on_ah(pkt, res)
            seq = (res.seq_hi << 32) | pkt.seq if res is not None and res.seq_hi else pkt.seq  # with ESN high bits
            info = f"AH seq {seq} next {iana_proto(pkt.next_header)}"
            status = ""
            if res is not None:
                status = _AH_ROW_STATUS.get(res.status, res.status)
                if res.status == "ok":
                    st.ah_verified += 1
                elif res.status == "icv_failed":
                    st.ah_icv_failed += 1
                if res.nat:
                    info += f" — ICV verifies with {res.nat.split(' -> ')[0]}: NAT"
                elif res.status == "unverifiable":
                    info += f" — ICV not checked: {res.reason}"
            self._add_row(FrameRow(
                raw.index, raw.ts, "AH", _intern(intern, pkt.src), _intern(intern, pkt.dst), 0, 0,
                raw.orig_len, pkt.spi, seq, info, status, None, flow.child_sa if flow is not None else None,
            ))
            if self.keep_rows and pkt.next_header != 50 and len(pkt.data) >= 2:
                # AH does not encrypt: its payload (RFC 4302 §2.2: behind (Payload Len + 2) * 4
                # octets) is what tshark dissects next, so filters see its fields (an ESP of an
                # AH+ESP bundle is its own row, recorded when decrypted)
                self.inner.add(raw.index, pkt.data[(pkt.data[1] + 2) * 4:], pkt.next_header)
        elif type(pkt) is NatKeepalive:
            st.keepalives += 1
            self.tracker.on_keepalive(pkt)
            self._add_row(FrameRow(
                raw.index, raw.ts, "NAT-KA", _intern(intern, pkt.src), _intern(intern, pkt.dst), pkt.sport,
                pkt.dport, raw.orig_len, info="NAT-keepalive (RFC 3948 §2.3)",
            ))
        elif type(pkt) is Malformed:
            st.malformed[pkt.layer] = st.malformed.get(pkt.layer, 0) + 1
            self.tracker.on_malformed(pkt, whole=raw.orig_len <= len(raw.data))
            self._add_row(FrameRow(
                raw.index, raw.ts, "MALFORMED", _intern(intern, pkt.src), _intern(intern, pkt.dst), pkt.sport,
                pkt.dport, raw.orig_len, pkt.spi, info=f"{pkt.layer}: {pkt.reason}", status="malformed",
                ip_proto=pkt.ip_proto,
            ))

    def _ah_verifier(self) -> _AhCheck | None:
        """The AH ICV checker once the keys hold an AH SA (checked again when the keys change:
        live key files, CHILD SA keys derived from IKE), else None."""
        v = self.keys.version
        if v != self._ah_keys_version:
            self._ah_keys_version = v
            if self.ah_verifier is None and any(k.protocol == iana.ProtocolId.AH for k in self.keys.esp):
                from .crypto.ah import AhVerifier

                self.ah_verifier = AhVerifier(self.keys)
                self._ah_check = _AhCheck(self.ah_verifier)
        return self._ah_check

    def _add_row(self, row: FrameRow) -> None:
        self.rows.append(row)

    def _late(self, p: Packet) -> None:
        """A report about an earlier frame: an abandoned IP datagram's mark, or the IKE message
        its first fragment starts."""
        if type(p) is IkeDatagram:
            self._late_ike(p)
        else:
            self._late_malformed(p)  # type: ignore[arg-type]

    def _late_ike(self, pkt: IkeDatagram) -> None:
        """The IKE message whose later IP fragments never came, read from its first one
        (decode.demux ``_lost_ike``): the tracker learns that it was sent (its IKE SA's exchange,
        IKE-IP-FRAGMENTED, retransmissions), and the frame's row, the MALFORMED mark of the lost
        datagram (tshark shows an unreassembled fragment, no ISAKMP), names the message."""
        from .decode.ike import parse_ike

        msg = parse_ike(pkt)
        self.tracker.on_ike(msg)
        rows = self.rows
        i = bisect.bisect_left(rows, pkt.frame, key=lambda r: r.frame)
        if i < len(rows) and rows[i].frame == pkt.frame and rows[i].kind == "MALFORMED":
            old = rows[i]
            rows[i] = FrameRow(old.frame, old.ts, old.kind, old.src, old.dst, old.sport, old.dport, old.length,
                               info=f"{old.info}; the first holds the start of {_ike_info(msg).removesuffix(' [  ]')} "
                               f"({len(pkt.data)} of its {msg.header.length} octets)", status=old.status,
                               ip_proto=old.ip_proto)

    def _late_malformed(self, m: Malformed) -> None:
        """A Malformed about an earlier frame (the first fragment of an IP datagram that never
        completed): counted like any other, and that frame's OTHER row becomes a MALFORMED one.

        That frame decoded to nothing when it came (its datagram was pending) and was counted as
        OTHER then, whether or not a row for it is still kept (``keep_rows=False``, a live ring)."""
        st = self.stats
        st.malformed[m.layer] = st.malformed.get(m.layer, 0) + 1
        st.other -= 1
        self.tracker.on_malformed(m)
        rows = self.rows
        i = bisect.bisect_left(rows, m.frame, key=lambda r: r.frame)
        if i < len(rows) and rows[i].frame == m.frame and rows[i].kind == "OTHER":
            old = rows[i]
            rows[i] = FrameRow(old.frame, old.ts, "MALFORMED", m.src or old.src, m.dst or old.dst, old.sport,
                               old.dport, old.length,
                               info=f"{m.layer}: {m.reason}", status="malformed", ip_proto=m.ip_proto)

    def _ike_key_for(self, msg: IkeMessage) -> str | None:
        # IKE_SA_INIT requests carry SPIr = 0; after the response the SA is keyed by both SPIs.
        spi_i = msg.header.spi_i.hex()
        for key in self.tracker.table.ike_sas:
            if key.startswith(spi_i):
                return key
        return None

    def _decrypt_ike(self, msg: IkeMessage) -> IkeMessage:
        if msg.malformed and not msg.payloads:
            return msg
        if msg.header.major == 2:
            if msg.encrypted:
                msg = self._ike_decryptors()[0].decrypt(msg)
        else:
            msg = self._ike_decryptors()[1].decrypt(msg)
        if msg.icv_ok is False:  # the decryptor reports a failed ICV with decrypted=False
            self.stats.ike_icv_failed += 1
        elif msg.decrypted:
            self.stats.ike_decrypted += 1
        return msg

    def _derive_child_keys(self) -> None:
        """RFC 7296 §2.17: with SK_d known, a non-PFS CHILD SA's ESP keys follow from the nonces."""
        from .crypto.keymat import derive_pending

        for keys in derive_pending(self.tracker, self.keys):
            self.keys.add_esp(keys)
            self.stats.derived_child_keys += 1

    # -- results --------------------------------------------------------------------------------

    @property
    def table(self) -> SaTable:
        return self.tracker.table

    @property
    def findings(self) -> list[Finding]:
        # The fast loop does not reset the cache frame by frame: a look between its windows (see
        # Progress) finds the frame count moved on instead.
        if self._findings is None or self._findings_at != self.stats.frames:
            from .analysis.rules import evaluate

            self._findings_at = self.stats.frames
            self._findings = sorted(
                evaluate(self.tracker.table, self), key=lambda f: (-int(f.severity), f.ts or 0.0, f.code)
            )
        return self._findings

    def worst_severity(self) -> Severity | None:
        return max((f.severity for f in self.findings), default=None)


# FrameDetail, QuotedEsp and describe_inner live in session_detail (one frame re-read and decoded
# again for a view); they stay importable from here.
__all__ = ["FrameDetail", "LIVE_BYTES_KEPT", "Progress", "QuotedEsp", "Session", "SessionStats",
           "describe_inner", "iana_proto"]
