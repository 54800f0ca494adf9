"""Live mode: a capture source, key sources that grow while it runs, and a Session.

Front-end neutral: ``ipsecscope live --headless`` prints the runner's events as JSON lines, the
TUI polls ``runner.session`` under ``runner.lock``.

Privileges are split (see :mod:`ipsecscope.capture.privsep`): a small privileged helper owns the
packet socket, tails the charon logs and polls ``ip xfrm state``; this runner, after
:func:`~ipsecscope.capture.privsep.drop_privileges`, decodes, decrypts, correlates, writes ``-w``
and prints — as an unprivileged user with no capabilities.

Keys often arrive *after* the packets they decrypt would have been seen: charon logs the IKE keys
while it builds IKE_AUTH, and the log line reaches the file a moment later. So when key sources
are active, frames wait ``key_delay`` seconds in a queue. The helper sends every source's new text
before a *tick* carrying the time it looked; a frame is processed once a tick ``key_delay`` later
than the frame has arrived, so the keys logged by then are in the store first.

Events (``--headless`` prints one JSON object per line; every one has ``event`` and ``ts``):

- ``started``: ``interface``, ``linktype``, ``keys`` (how many keys were loaded up front)
- ``keys``: ``source`` (which key source), ``added`` (how many new keys)
- tracker events: ``ike_sa_created|established|rekeyed|deleted|failed``,
  ``child_sa_created|rekeyed|deleted|failed``, ``esp_flow_started`` (fields: see state/tracker.py)
- ``finding``: ``code``, ``severity``, ``title``, ``explanation``, ``frames``, ``sa``, ``hint``;
  ``ts`` is the time it refers to, or, for one about no packet in particular, the time it was found
- ``finding_ended``: ``code``, ``severity``, ``title``, ``sa``, ``times`` — a finding the traffic no
  longer shows (a return path that came back); ``ts`` is the capture time it was first seen gone,
  ``times`` how many spells it has held. The TUI keeps it listed, marked ended (live_findings)
- ``suppressed``: ``count``, ``events`` (per kind) — SA and finding events refused by the
  :class:`EventBudget` in the last second (a flood of random SPIs must not flood the stream)
- ``stats``: ``frames``, ``ike``, ``esp``, ``decrypted``, ``icv_failed``, ``no_key``, ``malformed``,
  ``kernel_received``, ``kernel_drops``
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .capture import privsep
from .capture.live import DEFAULT_BPF, HelperStream, LiveCapture
from .errors import ExportError, KeyFileError, LiveCaptureError
from .keys import KeyStore
from .live_findings import Ended, KeptFindings
from .model.packets import RawFrame
from .model.sa import Finding
from .session import Session

Emit = Callable[[dict], None]
FLUSH_EVERY = 0.5  # seconds: -w is a valid pcapng on disk at least this often (tcpdump -U style)
# SA and finding events share one budget (token bucket): a real gateway's tunnels make a few per
# second, while random-SPI garbage makes two per frame and would flood the JSON stream (issue 12).
# What the budget refuses is counted and reported once a second in a ``suppressed`` event.
INFERRED_MAX_AGE = 60.0  # seconds an SA known only from traffic (or a half-open IKE SA) may idle
INFERRED_MAX = 2000  # and how many of each live mode keeps at most
EVENT_RATE = 200.0  # events per second, sustained
EVENT_BURST = 1000.0


class EventBudget:
    """A token bucket: ``take()`` is True while events may still go out."""

    __slots__ = ("rate", "burst", "tokens", "at", "refused")

    def __init__(self, rate: float = EVENT_RATE, burst: float = EVENT_BURST) -> None:
        self.rate, self.burst = rate, burst
        self.tokens, self.at = burst, time.monotonic()
        self.refused: dict[str, int] = {}

    def take(self, kind: str) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        self.refused[kind] = self.refused.get(kind, 0) + 1
        return False

    def report(self) -> dict | None:
        """The ``suppressed`` event for what was refused since the last report, if anything."""
        if not self.refused:
            return None
        refused, self.refused = self.refused, {}
        return {"event": "suppressed", "ts": time.time(), "count": sum(refused.values()), "events": refused}


@dataclass(slots=True)
class KeyText:
    """Key text the helper reads for us (a charon log it tails, ``ip xfrm state`` output),
    parsed here, unprivileged. ``parser`` is a keys module's ``parse(text, path, store)``."""

    name: str
    parser: Callable[..., KeyStore]
    text: bytearray = field(default_factory=bytearray)
    dirty: bool = False

    def add_to(self, store: KeyStore) -> int:
        self.dirty = False
        # The charon parser binds keys to SPIs through context lines that may be far apart, so it
        # reads the whole text (since the last rotation); it runs only when the text grew.
        try:
            return store.merge(self.parser(self.text.decode(errors="replace"), self.name, KeyStore()))
        except (KeyFileError, ValueError, IndexError, KeyError):
            return 0  # no keys logged yet (charon just started), or a line cut mid-write


class LiveFile:
    """``-w``: the pcapng written in place, whole blocks at a time, at least every FLUSH_EVERY s.

    In place rather than to a temporary file renamed at the end (``outfile.atomic_output``, what
    every other output of ipsecscope does): Wireshark/tshark must be able to open it while the
    capture runs, and a crash or kill -9 must leave what was captured so far. So it is a new file
    (``outfile.create_private``: O_EXCL, 0600, never through a symlink; an existing file is
    refused, not clobbered), owned by the unprivileged user, and it only ever holds complete
    blocks: a reader sees a valid pcapng that ends at the last flush.
    """

    def __init__(self, path: str | Path) -> None:
        from .outfile import create_private

        self.path = str(path)
        if self.path == "-":  # every other output takes '-' as standard output: never a file named '-'
            raise ExportError("live -w writes a file that Wireshark can open while it grows, not standard "
                              "output: give a file name")
        try:
            self.fh = create_private(self.path, "wb", buffering=0)
        except FileExistsError:
            raise ExportError(f"{self.path} exists: live -w writes the capture in place as it runs and never "
                              "overwrites a file; remove it or choose another name") from None
        except OSError as exc:
            who = _user_name()
            raise ExportError(f"cannot write {self.path} as user {who}: {exc.strerror}; give a file in a "
                              f"directory {who} can write (live drops root, see --user)") from None
        self._buf = bytearray()
        self._flushed = time.monotonic()

    def write(self, block: bytes) -> None:
        self._buf += block

    def flush(self) -> None:
        buf, self._buf = self._buf, bytearray()
        view = memoryview(buf)
        while view:
            view = view[self.fh.write(view):]
        self._flushed = time.monotonic()

    def tick(self) -> None:
        if self._buf and time.monotonic() - self._flushed >= FLUSH_EVERY:
            self.flush()

    def close(self) -> None:
        if not self.fh.closed:
            self.flush()
            self.fh.close()


def _check_readable(user: str) -> None:
    """After the drop the analyser still imports modules lazily (codecs, Textual widgets, rules):
    a Python installed where ``user`` cannot read (e.g. under /root) must fail here, in one line,
    rather than with an ImportError in the middle of a capture."""
    import ipsecscope

    for d in (os.path.dirname(os.__file__), os.path.dirname(ipsecscope.__file__)):
        if not os.access(d, os.R_OK | os.X_OK):
            raise LiveCaptureError(
                f"user {user} cannot read {d}, where Python and ipsecscope are installed; the analyser "
                f"runs as that user: install where {user} can read, pick another --user, or --no-drop")


def _check_key_readable(path: str | Path) -> None:
    try:
        readable = os.access(path, os.R_OK | (os.X_OK if os.path.isdir(path) else 0))
        os.stat(path)
    except PermissionError:
        readable = False
    except OSError:
        return  # missing and the like: load_keys says it in its own words
    if not readable:
        raise KeyFileError(f"not readable by user {_user_name()}, who runs the analyser: make it readable "
                           "to that user, or pick --user", path=str(path))


def _user_name() -> str:
    import pwd

    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def finding_events(seen: dict[tuple, tuple], findings: list[Finding],
                   take: Callable[[str], bool] | None = None, now: float | None = None) -> list[dict]:
    """Events for findings not announced before (``finding``) and for announced ones whose title,
    severity or evidence changed since (``finding_updated``).

    A finding is the same one while its code, SA and first evidence frame stay; its counts may
    still grow as packets arrive (a return path that stays silent, a loss that goes on), and a
    live reader must see the new numbers, not only the first. ``take(kind)`` is the event budget
    (an event it refuses is counted there, not sent, and not tried again). ``seen`` is updated in
    place and keeps only the findings the table still shows: those about SAs that expire() forgot
    leave with them, so it stays as small as the (capped) table.

    ``ts`` is the finding's own time (its SA's, flow's or first evidence's). A finding about no
    packet in particular has none (a plugin's, a rule that failed, a key file matching nothing):
    it gets ``now``, the time of the evaluation that found it (default: the clock), which is
    true of it, rather than null, which a reader's time arithmetic chokes on.
    """
    if now is None:
        now = time.time()
    out = []
    current: dict[tuple, tuple] = {}
    for f in findings:
        key = (f.code, f.sa, f.frames[:1])
        state = (f.title, f.severity, f.frames, f.count)  # an aggregated finding's SA count grows too
        before = seen.get(key)
        current[key] = state
        if before == state:
            continue
        kind = "finding" if before is None else "finding_updated"
        if take is not None and not take(kind):
            continue
        out.append({
            "event": kind, "ts": f.ts if f.ts is not None else now, "code": f.code,
            "severity": f.severity.name.lower(), "title": f.title, "explanation": f.explanation,
            "frames": list(f.frames), "sa": f.sa, "hint": f.hint, "count": f.count,
        })
    seen.clear()
    seen.update(current)
    return out


def finding_ended_events(kept: KeptFindings, told: dict[tuple, Ended],
                         take: Callable[[str], bool] | None = None, now: float | None = None) -> list[dict]:
    """``finding_ended`` events for the findings ``kept`` saw end since ``told`` (what was already
    said; updated in place). Whoever called ``kept.view()`` (the TUI's refresh or the runner),
    each end is said once. ``ts`` is the capture time it was first seen gone (else ``now``)."""
    out = []
    for e in kept.ended_since(told):
        f = e.finding
        if take is not None and not take("finding_ended"):
            continue
        out.append({"event": "finding_ended", "ts": e.at if e.at is not None else (now or time.time()),
                    "code": f.code, "severity": f.severity.name.lower(), "title": f.title, "sa": f.sa,
                    "times": e.times})
    told.clear()
    told.update(kept.snapshot())
    return out


class LiveRunner:
    """Capture → (key-delay queue) → Session, in a background thread or the calling one.

    Opens the capture on ``iface`` (needs root or CAP_NET_RAW), hands it to the privileged helper
    together with the key sources (``key_logs``: charon logs; ``keys_from_xfrm``), then, when
    ``user`` is given, drops to that user for good (:func:`privsep.drop_privileges`) before it
    reads ``key_files``, creates ``write`` and parses anything.

    ``events`` receives dicts: every tracker event, ``{"event": "keys", ...}`` when a key source
    added keys, ``{"event": "finding", ...}`` for each new finding, ``{"event": "finding_updated", ...}`` when
    one's evidence grew (e.g. ESP-RETURN-STOPPED counting more unanswered packets), and ``{"event": "stats", ...}``
    every ``stats_interval`` seconds.
    """

    def __init__(
        self,
        iface: str,
        *,
        session: Session | None = None,
        key_files: list[str] | None = None,
        key_logs: list[str | Path] | None = None,
        keys_from_xfrm: bool = False,
        bpf: str | None = DEFAULT_BPF,
        key_delay: float | None = None,
        write: str | Path | None = None,
        max_rows: int = 200_000,
        emit: Emit | None = None,
        stats_interval: float = 5.0,
        user: str | None = None,
    ) -> None:
        from .keys import charon, xfrm

        if write is not None:
            from .outfile import refuse_inputs

            # Still privileged here: a root-only charon log can be compared with the output.
            refuse_inputs(write, [*(key_files or []), *(key_logs or [])], what="-w file")
        capture = LiveCapture(iface, bpf=bpf)
        self.iface = iface
        self.linktype = capture.linktype
        self.stream: HelperStream = capture.start_helper([str(p) for p in key_logs or []], keys_from_xfrm)
        try:
            if user is not None:
                try:
                    privsep.drop_privileges(user)
                except KeyError:
                    raise LiveCaptureError(f"no user named {user!r} to run the analyser as: give --user "
                                           "NAME (or --no-drop to keep root)") from None
                except OSError as exc:
                    raise LiveCaptureError(f"cannot drop privileges to {user!r}: {exc}") from None
                _check_readable(user)
            self.key_texts = [KeyText(f"charon log {p}", charon.parse) for p in key_logs or []]
            if keys_from_xfrm:
                self.key_texts.append(KeyText("ip xfrm state", xfrm.parse))
            self.session = session if session is not None else Session(max_rows=max_rows)
            self.session.esp_decryptor.max_keyless = INFERRED_MAX  # garbage SPIs: see expire() below
            if key_files:
                for k in key_files:  # read as the analyser's user: say so, rather than "try sudo"
                    _check_key_readable(k)
                self.session.add_key_files(key_files)
            self._file: LiveFile | None = None
            self._writer = None
            if write is not None:
                from .export.pcapng import PcapngWriter

                self._file = LiveFile(write)
                self._writer = PcapngWriter(self._file, comment=f"ipsecscope live capture on {iface}")
                self._wiface = self._writer.add_interface(self.linktype, name=iface)
                self._file.flush()  # a valid (empty) pcapng from the start
        except BaseException:
            self.stream.close()
            raise
        self.key_delay = key_delay if key_delay is not None else (0.5 if self.key_texts else 0.0)
        self.emit = emit or (lambda ev: None)
        self.stats_interval = stats_interval
        self.lock = threading.RLock()
        self._queue: deque[RawFrame] = deque()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._seen_findings: dict[tuple, tuple] = {}
        # Findings that ended stay listed (live_findings): the TUI shows kept.view(), and the
        # stream says finding_ended once per end (the ones already told are in _ended_told).
        self.kept = KeptFindings()
        self._ended_told: dict[tuple, Ended] = {}
        self.budget = EventBudget()
        self._findings_checked = 0.0
        # Bumped when an evaluation (once a second, frames or not) changed what the findings or the
        # IKE SAs' states say: the TUI's redraw marker, with the frame count.
        self.revision = 0
        self._evaluated = 0
        self._index = 0
        self._taken = 0
        self.error: BaseException | None = None

    # -- running ----------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="ipsecscope-live", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop capturing (both parts); safe to call more than once, from any thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def run_for(self, seconds: float | None = None, count: int | None = None) -> None:
        """Run in the calling thread until ``seconds`` passed, ``count`` frames or stop()."""
        self._run(seconds, count)

    def _run(self, seconds: float | None = None, count: int | None = None) -> None:
        try:
            self._loop(seconds, count)
        except KeyboardInterrupt:
            pass
        except BaseException as exc:  # surfaced to the front end, which prints one line
            self.error = exc
        finally:
            try:
                self._take(self.stream.stop(), None)  # the helper's last key text and counters
                self._drain(force=True)
                self._report_stats()
            finally:
                if self._file is not None:
                    self._file.close()

    def _loop(self, seconds: float | None, count: int | None) -> None:
        end = time.monotonic() + seconds if seconds else None
        next_stats = time.monotonic() + self.stats_interval
        while not self._stop.is_set():
            now = time.monotonic()
            if end is not None and now >= end:
                break
            self._take(self.stream.read(0.1), count)
            if self.stream.done:
                break  # the helper got SIGTERM and said bye: a normal end
            if self._file is not None:
                self._file.tick()
            self._drain()
            if now >= next_stats:
                self._report_stats()
                next_stats = now + self.stats_interval
            if count is not None and self._taken >= count:
                break

    def _take(self, msgs: list, count: int | None) -> None:
        q, writer, texts = self._queue, self._writer, self.key_texts
        for msg in msgs:
            kind = msg[0]
            if kind == privsep.MSG_FRAME:
                if count is not None and self._taken >= count:
                    continue  # read by the helper after the count was reached: not ours
                self._taken += 1
                self._index += 1
                _, ts_ns, orig_len, data = msg
                frame = RawFrame(self._index, ts_ns / 1e9, ts_ns, self.linktype, data, orig_len, 0)
                if writer is not None:
                    writer.write_packet(self._wiface, ts_ns, data, orig_len)
                q.append(frame)
            elif kind == privsep.MSG_KEYS:
                t = texts[msg[1]]
                t.text += msg[2]
                t.dirty = True
            elif kind == privsep.MSG_RESET:
                texts[msg[1]].text.clear()

    def _poll_keys(self) -> None:
        for src in self.key_texts:
            if src.dirty:
                added = src.add_to(self.session.keys)
                if added:
                    self.emit({"event": "keys", "ts": time.time(), "source": src.name, "added": added})

    def _drain(self, force: bool = False) -> None:
        q = self._queue
        self._poll_keys()
        if not q:
            # Nothing captured: the clock still moves, and some conclusions need only that (an IKE
            # request unanswered for 10 s, an IP datagram whose later fragments never came). A
            # tunnel that went quiet is when they matter (_flush_events looks once a second).
            with self.lock:
                self._flush_events(force)
            return
        # The latest tick says which key text the helper had sent when it looked at the sources;
        # frames older than it by key_delay have had their keys' chance (module docstring).
        horizon = self.stream.tick_ns / 1e9 - self.key_delay if self.key_texts else float("inf")
        with self.lock:
            while q and (force or q[0].ts <= horizon):
                self.session.feed(q.popleft())
            self._flush_events(force)

    def _flush_events(self, force: bool = False) -> None:
        tracker = self.session.tracker
        events, tracker.events = tracker.events, []
        take = self.budget.take
        for ev in events:
            if take(ev["event"]):
                self.emit(ev)
        now = time.monotonic()
        if not force and now - self._findings_checked < 1.0:
            return  # evaluating every rule per 100 ms batch would cost more than the capture
        self._findings_checked = now
        wall = time.time()
        # Forget garbage: INFERRED CHILD SAs (ESP seen, no IKE) and half-open IKE SAs idle for a
        # minute, and the oldest past 2000 of each, so random SPIs cannot grow the table (and the
        # cost of everything that walks it, finish() included) without limit (issue 12).
        self.session.tracker.expire(wall, max_age=INFERRED_MAX_AGE, max_inferred=INFERRED_MAX)
        self.session.finish(now=wall)  # e.g. an IKE request unanswered for 10 s
        findings = self.session.findings
        self.kept.view(findings, self.session.table.last_ts)
        for ev in finding_events(self._seen_findings, findings, take, now=wall):
            self.emit(ev)
        for ev in finding_ended_events(self.kept, self._ended_told, take, now=wall):
            self.emit(ev)
        # What a front end must show again although no frame came (the TUI redraws when frames or
        # this change): the findings as the events told them, and the IKE SAs' states as the views
        # word them (IkeSa.state_word: "dead" from the findings, an IKEv1 phase 1 "incomplete" by now).
        sig = hash((tuple(self._seen_findings.items()), tuple((cs, e.times) for cs, e in self._ended_told.items()),
                    tuple((sa.state, sa.state_word) for sa in self.session.table.ike_sas.values())))
        if sig != self._evaluated:
            self._evaluated = sig
            self.revision += 1
        refused = self.budget.report()
        if refused is not None:
            self.emit(refused)

    def _report_stats(self) -> None:
        st = self.session.stats
        self.emit({
            "event": "stats", "ts": time.time(), "frames": st.frames, "ike": st.ike, "esp": st.esp,
            "decrypted": st.decrypted, "icv_failed": st.icv_failed, "no_key": st.no_key,
            "malformed": st.malformed_total, "kernel_received": self.stream.received,
            "kernel_drops": self.stream.drops,
        })


__all__ = ["KeyText", "LiveFile", "LiveRunner"]
