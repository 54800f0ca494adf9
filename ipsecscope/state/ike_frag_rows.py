"""IKE fragments on the rows of every view: which piece a row is, the message the pieces make,
and the pieces that never came. One place for the bookkeeping and the wording, used by
``summary`` (cli/summary.py, no keys: its rows are dicts) and by the session's packet rows
(session_packets.py: ``packets`` text and --json, the TUI's Info, ``packets -Y``), so a piece
reads the same everywhere.

Two fragmentations, shown alike (fragment k/N of a message, lost ones named):

* IKEv1's Fragment payload (132; Cisco, Microsoft, strongSwan) cuts the finished message, header
  and encryption included, into cleartext slices: they are joined as the receiving peer joins
  them (state/ikev1_frag), and the frame completing a message is listed as that message (its
  exchange, Message ID, payloads; encrypted without keys) "reassembled from N fragments".
* IKEv2's SKF (RFC 7383 §2.5) encrypts each fragment on its own: without keys nothing can be
  joined, but the Fragment Number and Total Fragments fields are cleartext, so which ones of a
  message (its IKE SA, Message ID and direction) arrived is known. With keys (crypto/ike_sk) the
  completing frame is the whole message, as for IKEv1.

At the end of the capture, the messages still missing pieces are listed ("fragment 1/2 of
message ID 0 ..., lost") and their pieces' rows say which are missing. What is held is bounded
(decode.fragsets): a set given up for a bound is said so on its rows, and the piece whose
arrival gave it up carries a malformed mark (counted like any other).

A row is a dict with ``"frame"``, ``"encrypted"``, ``"fragment"`` and ``"reassembled_from"`` (the
``summary --json`` row's keys); what is learnt after a row was noted (the number of pieces, the
set given up or lost) is written into it later, and ``settled`` (if set) is called with the rows
that may have changed, for a caller that has already shown them.
"""

from __future__ import annotations

from collections.abc import Callable

from ..decode.fragsets import PendingSets
from ..model import iana
from ..model.idtext import msg_id_text
from ..model.ike import IkeMessage, Ikev1FragmentSet, SkPayload
from ..model.plural import plural
from ..state.names import exchange_name

__all__ = ["FragmentRows", "fragment_text", "lost_text"]

MAX_SKF_PENDING = 1024  # as crypto/ike_sk's MAX_PENDING_FRAGMENT_SETS
PRUNE_EVERY = 1024  # IKEv1 pieces between two sweeps of finished sets' rows


class _Skf:
    __slots__ = ("total", "seen", "rows", "src", "dst", "exchange", "msg_id", "is_response")

    def __init__(self, msg: IkeMessage, total: int) -> None:
        h = msg.header
        self.total = total
        self.seen: set[int] = set()
        self.rows: list[dict] = []
        self.src, self.dst = msg.src, msg.dst
        self.exchange, self.msg_id, self.is_response = h.exchange, h.msg_id, h.is_response


class FragmentRows:
    """Annotates ``summary`` rows of IKE fragments (``note``), in capture order; ``finish`` at the
    end of the capture marks the pieces of messages that never completed and lists them."""

    def __init__(self) -> None:
        self._v1 = None  # state.ikev1_frag.Ikev1Reassembler, at the first IKEv1 message
        # the rows of each IKEv1 set still open, by id(set): a finished or given-up set's rows get
        # their totals and are let go (every PRUNE_EVERY pieces), so a flood holds no more here
        # than the reassembler holds sets
        self._v1_sets: dict[int, tuple[Ikev1FragmentSet, list[dict]]] = {}
        self._v1_notes = 0
        self._skf: PendingSets[_Skf] = PendingSets(MAX_SKF_PENDING)
        # told the rows whose fragment may read differently now (session_packets rewrites them)
        self.settled: Callable[[list[dict]], None] | None = None

    def reassemble(self, msg: IkeMessage) -> IkeMessage:
        """An IKEv1 piece annotated, or the message it completes; anything else as it is."""
        if msg.header.major != 1:
            return msg
        if self._v1 is None:
            from ..state.ikev1_frag import Ikev1Reassembler

            self._v1 = Ikev1Reassembler()
        return self._v1.add(msg)

    def note(self, row: dict, msg: IkeMessage, joined: bool = False) -> None:
        """Fill ``row["fragment"]`` / ``row["reassembled_from"]`` for the piece ``msg`` carries.
        ``joined``: the caller decrypted and joined an SKF message whose last piece this is (with
        keys), so the row is the whole message."""
        fs = msg.v1_fragments
        if fs is not None:
            self._note_v1(row, msg, fs)
            return
        skf = next((p for p in msg.payloads if isinstance(p, SkPayload) and p.total_fragments), None)
        if skf is not None:
            self._note_skf(row, msg, skf, joined)

    def _note_v1(self, row: dict, msg: IkeMessage, fs: Ikev1FragmentSet) -> None:
        num = next((n for n, f in fs.frames.items() if f == msg.frame), None)
        repeat = num is None  # a number held already, or a piece of a finished message
        if num is None:
            num = getattr(msg.payloads[0], "number", 0) if msg.payloads else 0
        # flagged last (bit 0 of the Fragment payload's flags): the set's last number is the flagged
        # piece's (a completing frame's payloads are the whole message's, no longer the piece's)
        last = bool(fs.last) and num == fs.last
        row["fragment"] = {"number": num, "total": fs.last or None, "last": last, "fragment_id": fs.frag_id,
                           "msg_id": fs.msg_id, "repeat": repeat, "lost": [], "given_up": fs.dropped}
        if msg.reassembled_from:
            row["reassembled_from"] = list(msg.reassembled_from)
        ent = self._v1_sets.get(id(fs))
        if ent is None:
            ent = self._v1_sets[id(fs)] = (fs, [])
        ent[1].append(row)
        self._v1_notes += 1
        if self._v1_notes % PRUNE_EVERY == 0:
            for k, (done, rows) in list(self._v1_sets.items()):
                if done.completed_frame is not None or done.dropped:
                    _settle(done, rows)
                    del self._v1_sets[k]
                    if self.settled is not None:
                        self.settled(rows)

    def _note_skf(self, row: dict, msg: IkeMessage, skf: SkPayload, joined: bool = False) -> None:
        h = msg.header
        num, total = skf.fragment_number, skf.total_fragments
        row["fragment"] = {"number": num, "total": total, "last": num == total, "fragment_id": None,
                           "msg_id": h.msg_id, "repeat": False, "lost": [], "given_up": None}
        if not 1 <= num <= total:
            return  # the decoder's own check marks it; nothing to count it towards
        if msg.icv_ok is False:
            # RFC 7383 §2.6.2: each fragment is authenticated on its own and one that fails is
            # discarded, so it neither restarts nor completes a message (crypto/ike_sk joins the
            # verified pieces only; counting these here would say "incomplete" of a joined message)
            return
        key = (h.spi_i, h.spi_r, h.msg_id, h.is_response)
        ent = self._skf.get(key)
        if ent is None or ent.total != total:
            # A retransmission may be fragmented differently (RFC 7383 §2.6.2): counted afresh.
            if ent is not None:
                # the pieces counted towards the other total are given up, and say so
                for r in ent.rows:
                    r["fragment"]["given_up"] = f"a later piece of message ID {h.msg_id} said {total} fragments, not {ent.total}"
                if self.settled is not None:
                    self.settled(ent.rows)
            ent = _Skf(msg, total)
            for _, old in self._skf.open(key, ent):
                for r in old.rows:
                    r["fragment"]["given_up"] = f"more than {MAX_SKF_PENDING} incomplete messages at once"
                if self.settled is not None:
                    self.settled(old.rows)
        row["fragment"]["repeat"] = num in ent.seen
        ent.seen.add(num)
        ent.rows.append(row)
        if len(ent.seen) == total:
            self._skf.pop(key)
            if joined:
                # each number's first piece, in number order (RFC 7383 §2.6: the receiver joins them)
                first: dict[int, int] = {}
                for r in ent.rows:
                    first.setdefault(r["fragment"]["number"], r["frame"])
                row["reassembled_from"] = [first[n] for n in sorted(first)]

    def finish(self, report_lost: bool = True) -> list[dict]:
        """Mark the rows of messages still missing pieces; those messages, in order of their first
        piece (the ``"ike_fragments_lost"`` list). ``report_lost=False`` (a display filter chose
        the frames): totals are filled in, but a piece left out by the filter is not lost."""
        out: list[tuple[int, dict]] = []
        settled = self.settled
        for fs, rows in self._v1_sets.values():
            _settle(fs, rows)
            if settled is not None and (fs.completed_frame is not None or fs.dropped or not report_lost):
                settled(rows)
            if fs.completed_frame is not None or fs.dropped or not report_lost:
                continue
            # numbers below the highest held that never came (all of them up to the last-flagged
            # one once it is known), and whether the last-flagged piece itself is missing
            lost = [n for n in range(1, (fs.last or max(fs.frames, default=0)) + 1) if n not in fs.frames]
            for row in rows:
                row["fragment"]["lost"] = lost
                row["fragment"]["last_lost"] = not fs.last
            if settled is not None:
                settled(rows)
            frames = sorted([*fs.frames.values(), *fs.duplicates])
            out.append((fs.first_frame, {
                "version": 1, "src": fs.src, "dst": fs.dst, "exchange": iana.name(iana.Ikev1Exchange, fs.exchange),
                "exchange_type": fs.exchange, "is_response": False, "msg_id": fs.msg_id, "fragment_id": fs.frag_id,
                "total": fs.last or None, "lost": lost, "last_lost": not fs.last, "have": sorted(fs.frames),
                "frames": frames}))
        for ent in self._skf.values() if report_lost else ():
            lost = [n for n in range(1, ent.total + 1) if n not in ent.seen]
            for r in ent.rows:
                r["fragment"]["lost"] = lost
            if settled is not None:
                settled(ent.rows)
            out.append((ent.rows[0]["frame"], {
                "version": 2, "src": ent.src, "dst": ent.dst,
                "exchange": iana.name(iana.ExchangeType, ent.exchange), "exchange_type": ent.exchange,
                "is_response": ent.is_response, "msg_id": ent.msg_id, "fragment_id": None, "total": ent.total,
                "lost": lost, "last_lost": False, "have": sorted(ent.seen), "frames": [r["frame"] for r in ent.rows]}))
        return [d for _, d in sorted(out, key=lambda t: t[0])]


def _settle(fs: Ikev1FragmentSet, rows: list[dict]) -> None:
    """What became known of a set after its rows were noted: the number of pieces (once the
    last-flagged one came), and why it was given up (a bound reached later)."""
    for row in rows:
        f = row["fragment"]
        if fs.last:
            f["total"] = fs.last
        if fs.dropped:
            f["given_up"] = fs.dropped


def fragment_text(r: dict) -> str:
    """What a row's fragment is, for the text table ("" for a row that is no fragment)."""
    f = r.get("fragment")
    if not f:
        return ""
    total = f["total"]
    of = f"{f['number']}/{total}" if total else str(f["number"])
    text = f"fragment {of} of message ID {msg_id_text(f['msg_id'])}"
    if f["fragment_id"] is not None:
        text += f" (Fragment ID {f['fragment_id']})"
    if f["repeat"]:
        text += " again"
    whole = r.get("reassembled_from")
    if whole:
        # the row is the whole message now (exchange, Message ID, payloads, length)
        fid = "" if f["fragment_id"] is None else f"; Fragment ID {f['fragment_id']}"  # SKF has none
        text = (f"reassembled from {plural(len(whole), 'fragment')} (frames {', '.join(map(str, whole))}{fid})"
                f"{', encrypted' if r['encrypted'] else ''}")
    if f["given_up"]:
        text += f", not reassembled: {f['given_up']}"
    elif f["lost"] or f.get("last_lost"):
        gone = [f"{n}/{total}" if total else str(n) for n in f["lost"]]
        what = f"fragment{'s' if len(gone) > 1 else ''} {', '.join(gone)}" if gone else ""
        if f.get("last_lost"):
            what = f"{what} and the last one" if what else "the last fragment"
        text += f"; {what} lost"
    return text


def lost_text(d: dict) -> str:
    """One line for a message that never got all its pieces: the missing ones, 'lost'."""
    total = d["total"]
    gone = [f"{n}/{total}" if total else str(n) for n in d["lost"]]
    what = f"fragment{'s' if len(gone) > 1 else ''} {', '.join(gone)}" if gone else ""
    if d["last_lost"]:  # the last-flagged piece never came: how many there were is not known
        what = f"{what} and the last fragment" if what else "the last fragment (the one flagged last)"
    exn = exchange_name(d["exchange_type"], d["version"])
    if d["version"] == 2:
        exn += " response" if d["is_response"] else " request"
    of = f"{exn} message ID {msg_id_text(d['msg_id'])} {d['src']} → {d['dst']}"
    if d["fragment_id"] is not None:
        of += f" (Fragment ID {d['fragment_id']})"
    have = ", ".join(f"{n}/{total}" if total else str(n) for n in d["have"])
    return (f"{what} of {of}, lost (fragment{'s' if len(d['have']) > 1 else ''} {have} arrived: frame"
            f"{'s' if len(d['frames']) > 1 else ''} {', '.join(map(str, d['frames']))})")
