"""The dialogs the app's keys open and what they do: add key files (then decrypt and correlate
again, or live: from now on) and export (the same functions as the CLI's decrypt / sas --json /
findings --json / keys convert, in a worker thread, every file written private)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from textual import work
from textual.app import App

from ..errors import ExportError, IpsecscopeError
from ..model.plural import plural
from .screens.export import ExportRequest, ExportScreen, unavailable
from .screens.modals import KeyFileScreen
from .session_feed import findings_of

if TYPE_CHECKING:
    from ..session import Session



class Dialogs(App[int]):
    """The app's dialogs (a part of IpsecscopeApp)."""

    def action_add_keys(self) -> None:
        start = self.path.parent if self.path is not None else Path.cwd()
        self.push_screen(KeyFileScreen(start), self._keys_chosen)

    def _keys_chosen(self, paths: list[str] | None) -> None:
        if not paths:
            return
        try:
            # Parse now, on the UI thread, so a bad file is reported before anything reloads.
            from ..session import Session

            probe = Session()
            added = probe.add_key_files(paths)
        except IpsecscopeError as exc:
            self.notify(str(exc), title="Key file not loaded", severity="error", timeout=10)
            return
        self.key_files.extend(Path(p) for p in paths)
        if self.runner is not None:
            # Live traffic cannot be read again: the keys apply to the packets still to come.
            with self.data_lock:
                self.runner.session.add_key_files(paths)
            self.notify(f"{plural(added, 'key')} added; packets from now on are decrypted")
            return
        self.notify(f"{plural(added, 'key')} added; decrypting and correlating again …")
        if self.path is not None:
            self.load_capture()

    def action_export(self) -> None:
        if self.loading is not None:
            self.notify("Still loading: export when the capture is read (the progress bar at the top).",
                        severity="warning")
            return
        if self.runner is not None:
            self.notify("Export works on a complete capture file: save live traffic with `ipsecscope live -w "
                        "FILE` (or the pipe with tcpdump -w FILE), then open that file.", severity="warning", timeout=8)
            return
        if self.session is None or self.path is None:
            self.notify("Nothing loaded to export yet.", severity="warning")
            return
        with self.data_lock:
            why = unavailable(self.session, self.paths)
        self.push_screen(ExportScreen(self.path, why), self._export_chosen)

    def _export_chosen(self, req: ExportRequest | None) -> None:
        if req is not None:
            self.notify(f"Writing {req.path.name} …")
            self.export_worker(req)

    @work(thread=True, exclusive=True, group="export", name="export")
    def export_worker(self, req: ExportRequest) -> None:
        """Calls the same functions as `ipsecscope decrypt / sas --json / findings --json / keys convert`."""
        session = self.session
        assert session is not None and self.path is not None
        try:
            message = export(req, self.paths, session)
        except IpsecscopeError as exc:
            self.call_from_thread(self.notify, str(exc), title="Export failed", severity="error", timeout=10)
            return
        except OSError as exc:
            self.call_from_thread(self.notify, f"cannot write {req.path}: {exc.strerror or exc}",
                                  title="Export failed", severity="error", timeout=10)
            return
        self.call_from_thread(self.notify, message, title="Exported", timeout=8)


def export(req: ExportRequest, captures: Sequence[Path], session: Session) -> str:
    """Write one export; returns the line to show the user. Runs in a worker thread."""
    import json

    from ..export.documents import findings_document, sas_document
    from ..outfile import write_private

    capture = captures[0]
    # Every file goes through write_private: 0600 from its creation, written to a temporary file
    # and renamed into place, never over a capture or key file this session read.
    inputs = [*captures, *session.key_files]
    why = unavailable(session, captures).get(req.kind)
    if why is not None:  # it would write nothing (an empty pcapng, a bare key table header)
        raise ExportError(f"nothing to export: {why}")
    if req.kind in ("pcapng", "jsonl"):
        from ..api import decrypt_capture

        # jobs=1: no worker processes forked from inside a UI thread.
        stats = decrypt_capture(capture, session.keys, out=req.path, fmt=req.kind, jobs=1)
        return (f"{req.path}: {stats.decrypted:,} of {stats.esp:,} ESP packets decrypted"
                + (f", {stats.icv_failed:,} ICV failures" if stats.icv_failed else "")
                + (f", {stats.no_key:,} without keys" if stats.no_key else ""))
    if req.kind == "sas":
        doc = sas_document(session.table, captures)
        write_private(req.path, json.dumps(doc, indent=2) + "\n", inputs=inputs)
        return f"{req.path}: {len(session.table.ike_sas)} IKE SAs, {len(session.table.child_sas)} CHILD SAs"
    if req.kind == "findings":
        findings = findings_of(session)
        write_private(req.path, json.dumps(findings_document(findings, captures), indent=2) + "\n", inputs=inputs)
        return f"{req.path}: {len(findings)} findings"
    from ..keys.formats import dump

    fmt = "json" if req.kind == "keys_json" else req.kind
    # A file the user asked for gets the keys (as `keys convert -o FILE` does); the screen never shows them.
    write_private(req.path, dump(session.keys, fmt, True), inputs=inputs)
    return f"{req.path}: {len(session.keys)} keys written"


