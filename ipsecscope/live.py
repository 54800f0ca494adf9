"""Live mode: a capture source, key sources that grow while it runs, and a Session.

Front-end neutral: ``ipsecscope live --headless`` prints the runner's events as JSON lines, the
TUI polls ``runner.session`` under ``runner.lock``.

Keys often arrive *after* the packets they decrypt would have been seen: charon logs the IKE keys
while it builds IKE_AUTH, and the log line reaches the file a moment later. So when key sources
are active, frames wait ``key_delay`` seconds in a queue and every key source is polled before
a batch is processed; by then the keys for those frames are almost always in.

Events (``--headless`` prints one JSON object per line; every one has ``event`` and ``ts``):

- ``started``: ``interface``, ``linktype``, ``keys`` (how many keys were loaded up front)
- ``keys``: ``source`` (which key source), ``added`` (how many new keys)
- tracker events: ``ike_sa_created|established|rekeyed|deleted|failed``,
  ``child_sa_created|rekeyed|deleted|failed``, ``esp_flow_started`` (fields: see state/tracker.py)
- ``finding``: ``code``, ``severity``, ``title``, ``explanation``, ``frames``, ``sa``, ``hint``
- ``stats``: ``frames``, ``ike``, ``esp``, ``decrypted``, ``icv_failed``, ``no_key``, ``malformed``,
  ``kernel_received``, ``kernel_drops``
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .capture.live import DEFAULT_BPF, LiveCapture
from .errors import IpsecscopeError, KeyFileError
from .keys import KeyStore
from .model.packets import RawFrame
from .session import Session


class KeySource:
    """Something that may hold new keys each time it is polled."""

    name: str = ""

    def poll(self, store: KeyStore) -> int:  # pragma: no cover - interface
        raise NotImplementedError


@dataclass
class CharonLogTail(KeySource):
    """A strongSwan charon log at ``ike 4``/``chd 4`` that charon keeps appending to."""

    path: Path
    _size: int = -1
    _mtime: float = -1.0
    name: str = field(default="", init=False)

    def __post_init__(self) -> None:
        self.name = f"charon log {self.path}"

    def poll(self, store: KeyStore) -> int:
        from .keys import charon

        try:
            st = self.path.stat()
        except FileNotFoundError:
            return 0
        if (st.st_size, st.st_mtime) == (self._size, self._mtime):
            return 0
        self._size, self._mtime = st.st_size, st.st_mtime
        # The parser binds keys to SPIs through context lines that may be far apart, so it reads
        # the whole log; it runs only when the file changed.
        text = self.path.read_text(errors="replace")
        try:
            return store.merge(charon.parse(text, str(self.path), KeyStore()))
        except KeyFileError:
            return 0  # no keys logged yet (charon just started): not an error while it runs


@dataclass
class XfrmPoll(KeySource):
    """``ip xfrm state`` of this network namespace (the kernel's SAs, with keys)."""

    command: tuple[str, ...] = ("ip", "xfrm", "state")
    name: str = field(default="ip xfrm state", init=False)
    _last: str = ""

    def poll(self, store: KeyStore) -> int:
        from .keys import xfrm

        try:
            out = subprocess.run(self.command, capture_output=True, text=True, timeout=5).stdout
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise IpsecscopeError(f"cannot run {' '.join(self.command)}: {exc}") from None
        if out == self._last or not out.strip():
            return 0
        self._last = out
        try:
            return store.merge(xfrm.parse(out, "ip xfrm state", KeyStore()))
        except KeyFileError:
            return 0


Emit = Callable[[dict], None]


class LiveRunner:
    """Capture → (key-delay queue) → Session, in a background thread.

    ``events`` receives dicts: every tracker event, ``{"event": "keys", ...}`` when a key source
    added keys, ``{"event": "finding", ...}`` for each new finding and ``{"event": "stats", ...}``
    every ``stats_interval`` seconds.
    """

    def __init__(
        self,
        iface: str,
        *,
        session: Session | None = None,
        key_sources: list[KeySource] | None = None,
        bpf: str | None = DEFAULT_BPF,
        key_delay: float | None = None,
        write: str | Path | None = None,
        max_rows: int = 200_000,
        emit: Emit | None = None,
        stats_interval: float = 5.0,
    ) -> None:
        self.capture = LiveCapture(iface, bpf=bpf)
        self.session = session if session is not None else Session(max_rows=max_rows)
        self.key_sources = key_sources or []
        self.key_delay = key_delay if key_delay is not None else (0.5 if self.key_sources else 0.0)
        self.emit = emit or (lambda ev: None)
        self.stats_interval = stats_interval
        self.lock = threading.RLock()
        self._queue: deque[RawFrame] = deque()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._seen_findings: set[tuple] = set()
        self._findings_checked = 0.0
        self.error: BaseException | None = None
        self._writer = None
        self._wiface = 0
        if write is not None:
            from .export.pcapng import PcapngWriter

            self._writer = PcapngWriter(str(write), comment=f"ipsecscope live capture on {iface}")
            self._wiface = self._writer.add_interface(self.capture.linktype, name=iface)

    # -- running ----------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="ipsecscope-live", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.capture.close()
        if self._writer is not None:
            self._writer.close()

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
            self._drain(force=True)
            self._report_stats()

    def _loop(self, seconds: float | None, count: int | None) -> None:
        end = time.monotonic() + seconds if seconds else None
        next_stats = time.monotonic() + self.stats_interval
        self._poll_keys()
        taken = 0
        while not self._stop.is_set():
            now = time.monotonic()
            if end is not None and now >= end:
                break
            frame = self.capture.next_frame(timeout=0.1)
            if frame is not None:
                taken += 1
                if self._writer is not None:
                    self._writer.write_packet(self._wiface, frame.ts_ns, frame.data, frame.orig_len)
                self._queue.append(frame)
            self._drain()
            if now >= next_stats:
                self._report_stats()
                next_stats = now + self.stats_interval
            if count is not None and taken >= count:
                break

    def _poll_keys(self) -> None:
        for src in self.key_sources:
            added = src.poll(self.session.keys)
            if added:
                self.emit({"event": "keys", "ts": time.time(), "source": src.name, "added": added})

    def _drain(self, force: bool = False) -> None:
        q = self._queue
        if not q:
            return
        if self.key_sources:
            self._poll_keys()
        horizon = time.time() - self.key_delay
        with self.lock:
            while q and (force or q[0].ts <= horizon):
                self.session.feed(q.popleft())
            self._flush_events(force)

    def _flush_events(self, force: bool = False) -> None:
        tracker = self.session.tracker
        events, tracker.events = tracker.events, []
        for ev in events:
            self.emit(ev)
        now = time.monotonic()
        if not force and now - self._findings_checked < 1.0:
            return  # evaluating every rule per 100 ms batch would cost more than the capture
        self._findings_checked = now
        self.session.finish(now=time.time())  # e.g. an IKE request unanswered for 10 s
        for f in self.session.findings:
            key = (f.code, f.sa, f.frames[:1])
            if key in self._seen_findings:
                continue
            self._seen_findings.add(key)
            self.emit({
                "event": "finding", "ts": f.ts, "code": f.code, "severity": f.severity.name.lower(),
                "title": f.title, "explanation": f.explanation, "frames": list(f.frames), "sa": f.sa,
                "hint": f.hint,
            })

    def _report_stats(self) -> None:
        try:
            received, drops = self.capture.update_stats()
        except OSError:
            received, drops = self.capture.received, self.capture.drops
        st = self.session.stats
        self.emit({
            "event": "stats", "ts": time.time(), "frames": st.frames, "ike": st.ike, "esp": st.esp,
            "decrypted": st.decrypted, "icv_failed": st.icv_failed, "no_key": st.no_key,
            "malformed": st.malformed_total, "kernel_received": received, "kernel_drops": drops,
        })
