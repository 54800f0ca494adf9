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
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from . import session_fast
from .capture import open_capture, renumbered
from .crypto.esp import EspDecryptor, EspResult
from .decode.demux import Decoder
from .decode.inner import InnerStore
from .decode.quoted import QuotedStore
from .keys import KeyStore, add_secrets_block, load_keys
from .keys.match import FileMatch, match_keys
from .model.packets import EspPacket, FrameRow, Malformed, Packet, RawFrame
from .model.plural import plural
from .model.sa import EspFlow, Finding, SaTable, Severity
from .rowstore import FrameOffsets, NoRows, RowStore, follow_moves
from .session_detail import FrameDetail, FrameViews, QuotedEsp, describe_inner, iana_proto
from .session_packets import PacketHandling
from .state.tracker import Tracker

if TYPE_CHECKING:
    # The IKE stack (decoder, decryptors, the IKE model, session_quoted) is imported at the first
    # IKE message or ICMP quote: a capture of ESP alone never needs it (start-up, issue 15).
    from .crypto.ah import AhVerifier
    from .crypto.ike_sk import IkeDecryptor
    from .crypto.ikev1 import Ikev1Decryptor
    from .model.ike import IkeMessage
    from .state.ikev1_frag import Ikev1Reassembler


# Live mode has no file to re-read a frame from: the raw bytes of the most recent frames are kept
# (up to this many bytes, and never more frames than rows) for the detail pane's decode and hex view.
LIVE_BYTES_KEPT = 32 << 20
# Live mode gives up on an IP datagram whose first fragment came this many seconds ago with the rest
# still missing. The fragments of one datagram leave the fragmenting hop back to back (RFC 791
# §2.3), so in a capture they arrive within milliseconds; a file's reassembler waits 60 s (RFC 8200
# §4.5), but it notices only when a later fragment comes, and a live screen that waited as long
# would show the loss as a plain sequence gap (ESP-SEQ-GAP) meanwhile (live5's walk).
LIVE_FRAGMENT_WAIT = 5.0

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


class Session(PacketHandling, FrameViews):
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
            last = i == len(files) - 1
            s.load_damaged(f, progress, follow if last else None, more=not last)
        return s

    def load_damaged(self, path: str | Path, progress: Progress | None = None,
                     follow: threading.Event | None = None, *, more: bool = False) -> str | None:
        """:meth:`load`, but damage after sound frames is analysed up to and kept in (and returned
        as) :attr:`damage`; not a capture at all, or no sound frame: raises."""
        from .errors import CaptureError, CaptureFormatError

        before = self.stats.frames
        try:
            self.load(path, progress, follow, more=more)
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
        self._awaiting: list[EspFlow] = []  # flows whose frag_awaited _await_fragments set
        from .plugins import event_listeners

        self.tracker.listeners.extend(event_listeners())  # plugins' on_event hooks
        self.stats = SessionStats()
        # A file's rows go to a packed RowStore (~60 bytes a row instead of ~380 as FrameRow objects);
        # live mode keeps a ring of the last max_rows FrameRow objects.
        self.rows: RowStore | deque[FrameRow] | NoRows = (
            deque(maxlen=self.max_rows) if self.max_rows else RowStore(self.row_limit) if self.keep_rows else NoRows())
        # The decrypted inner packets (and plain IP frames), summarised for the Info column and
        # the display filter's inner fields (decode.inner).
        self._late_frames: set[int] = set()  # frames an earlier-frame report took from OTHER (session_packets._late)
        # Frames held while an RFC 8229 gap waits, so the tracker sees them in capture order with the
        # records behind the gap (session_packets.PacketHandling._dispatch)
        self._held: list = []
        self._held_bytes = 0
        self._hold_past = 0  # frames up to this one held once past the bounds: not held for again
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
        self.ike_frag_rows = None  # state.ike_frag_rows.FragmentRows: fragment rows' words (session_packets)
        # frame -> what IKE fragment it is (FragmentRows' note, kept up to date by it): packets --json
        self.ike_fragments: dict[int, dict] = {}
        self._frame_offsets = FrameOffsets()  # frame -> (path index, offset, linktype), for detail()
        self._frame_bases: list[int] = []  # per loaded file: the frames before it (load())
        self._no_key_result: EspResult | None = None
        # AH ICVs are checked only once the keys hold an AH SA (crypto.ah): a capture without AH
        # keys pays one integer compare per AH packet (_ah_verifier), nothing per other packet.
        self.ah_verifier: AhVerifier | None = None
        self._ah_check = None  # session_packets._AhCheck (its type declared in PacketHandling)
        self._ah_keys_version = -1
        self._addr: dict[str, str] = {}
        self._findings: list[Finding] | None = None
        self._findings_at = 0  # stats.frames when _findings was evaluated (a look while loading)
        self._secrets_seen = 0
        self._live_raw: OrderedDict[int, RawFrame] = OrderedDict()  # frame -> raw (live mode only)
        self._live_raw_bytes = 0

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
             follow: threading.Event | None = None, *, more: bool = False) -> SessionStats:
        """Read a whole capture file (``"-"``: standard input). Raises
        :class:`~ipsecscope.errors.CaptureError` for a file that is not a capture; a truncated last
        record is counted, not raised. With ``follow``, the end of the file waits for more frames
        (``tail -f``) until the event is set. ``more``: another file of the same capture follows
        (files read in order are one capture, as ``mergecap -a`` joins them; a ring buffer's
        files), so an IP datagram or IKE message whose pieces straddle the boundary is still
        joined: nothing waiting is given up until the last file ends."""
        path = Path(path)
        self.begin_file(path)
        path_index = len(self.paths) - 1
        # The fast loop maps a whole, finished file: not standard input, not a file still growing.
        fmt = None if follow is not None or str(path) == "-" else session_fast.eligible(self, str(path))
        if fmt is not None:
            self._truncated = session_fast.load(self, str(path), path_index, fmt, progress)
        else:
            self._load_general(path, path_index, progress, follow)
        self.end_of_input(self._truncated, more=more)
        self.finish()
        return self.stats

    def take_secrets(self, secrets: list[tuple[int, bytes]]) -> None:
        """Keys from the pcapng Decryption Secrets Blocks a reader has met since the last call."""
        if len(secrets) == self._secrets_seen:
            return
        for stype, data in secrets[self._secrets_seen:]:
            add_secrets_block(self.keys, stype, data)
        self._secrets_seen = len(secrets)

    def end_of_input(self, truncated: str | None, *, more: bool = False) -> None:
        """A capture has ended (``truncated``: why it was cut off): datagrams whose fragments
        never all arrived become malformed, and a cut-off file is a finding. ``more``: only this
        file has ended, the next continues the capture (:meth:`load`): what waits, waits on."""
        if not more:
            for m in self.decoder.flush():  # IP datagrams whose fragments never all arrived, RFC 8229 gaps
                self._late_report(m)
            self.release_held()  # frames held behind an RFC 8229 gap: in capture order, with its records
            self.end_of_fragments()  # IKE fragment sets never completed: their rows say so
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
            held = self._held  # frames held behind an RFC 8229 gap: the rest waits too (_dispatch)
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
                if len(pkts) == 1 and type(pkts[0]) is EspPacket and pkts[0].frame == raw.index and not held:
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
        if len(pkts) == 1 and type(pkts[0]) is EspPacket and pkts[0].frame == raw.index and not self._held:
            self._esp(raw, pkts[0])
        else:
            self._dispatch(raw, pkts)

    def finish(self, now: float | None = None) -> None:
        """Conclusions that need the end of the input (or, live, the current time ``now``): an IKE
        request unanswered for long enough makes its SA FAILED, and an IP datagram whose later
        fragments have not come for LIVE_FRAGMENT_WAIT seconds is lost (ESP-FRAGMENT-LOST)."""
        if now is not None:
            for m in self.decoder.expire(now, LIVE_FRAGMENT_WAIT):
                self._late_report(m)
            self.release_held()  # an RFC 8229 gap given up: the frames held behind it go on
            self.tracker.table.watched_until = now
        self.tracker.finish(now=now)
        self._findings = None

    def _await_fragments(self) -> None:
        """Before the input ended (live, --follow, a look while loading): mark the ESP packets
        still in reassembly on their flows (EspFlow.frag_awaited), so their sequence numbers read
        as in flight, not as a gap (ESP-SEQ-GAP) that turns into ESP-FRAGMENT-LOST a few seconds
        later (live5's walk: the gap then stayed listed, "ended"). Once the input ended nothing is
        in reassembly: the marks are cleared."""
        flows = self.tracker.table.flows
        for flow in self._awaiting:
            flow.frag_awaited = []
        self._awaiting = []
        for src, dst, spi, seq in self.decoder.pending_esp():
            flow = flows.get((src, dst, spi, "ESP"))
            if flow is not None:
                if not flow.frag_awaited:
                    self._awaiting.append(flow)
                flow.frag_awaited.append(seq)

    def reload(self, progress: Progress | None = None) -> SessionStats:
        """Decode everything again (after keys were added): every stage re-runs from the files."""
        paths = list(self.paths)
        self.paths = []
        self._reset()
        for i, p in enumerate(paths):
            self.load(p, progress, more=i < len(paths) - 1)
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
        if len(pkts) == 1 and type(pkts[0]) is EspPacket and pkts[0].frame == raw.index and not self._held:
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

            # Whenever the rules look, not only at the live clock's evaluation (finish(now)): the
            # live TUI looks at the frames as they come, and a look between a first fragment and
            # the clock's next tick read its packet as a gap (ESP-SEQ-GAP), which then stayed
            # listed as "ended" (live_findings) -- what live5 removed from the headless stream.
            self._await_fragments()
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
