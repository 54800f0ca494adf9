"""Deep dissection of one frame or one decrypted inner packet: Wireshark's protocol tree through
tshark (driven by pyshark), with scapy's dissection as the fallback when tshark is missing or fails.

This is a *view* helper for the few frames a person looks at (the TUI's packet detail, ``packets -V``),
never for the analysis path: every call starts tshark. :func:`dissect` takes the one packet on
screen; :func:`dissect_file` takes a capture file and the frames wanted, in one tshark run.

:func:`dissect` hands the bytes to tshark through a pipe (pyshark's in-memory capture: a pcap header
and one record on tshark's stdin), so decrypted cleartext never lands in a file. A decrypted tunnel-mode
packet is an IP datagram and goes as LINKTYPE_RAW (101); a frame as captured keeps its own link type.

pyshark's own packet objects flatten each layer into a dict of fields, which loses the nesting
(``ip.flags`` → ``ip.flags.df``) and the order of repeated fields; the tree here is built from the
same PDML tshark sends pyshark, keeping what ``tshark -V`` prints: every protocol, every field that is
not hidden, nested as Wireshark nests them, with the byte span each one covers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
import subprocess
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, BinaryIO

from .errors import IpsecscopeError
from .model.packets import LinkType

if TYPE_CHECKING:
    from .keys import KeyStore
    from .session import Session
    from .session_detail import FrameDetail

TIMEOUT = 20.0  # seconds for one tshark run; one packet takes ~1 s at a load of 17 on 2 cores
# What ``trees`` gives tshark: a coroutine function that writes to the started process.
Feed = Callable[[asyncio.subprocess.Process], Awaitable[None]]


class DissectError(IpsecscopeError):
    """tshark could not dissect the bytes (not installed, failed, or too slow); one line."""


class TsharkNotFound(DissectError):
    pass


@dataclass(slots=True)
class Node:
    """One line of the protocol tree: a protocol (``name`` "ip") or a field ("icmp.type"), or a text
    line (``name`` ""), as ``tshark -V`` prints it in ``label``."""

    label: str
    children: list[Node] = field(default_factory=list)
    name: str = ""
    show: str = ""  # the value as tshark shows it (PDML "show"), e.g. "8" for icmp.type
    span: tuple[int, int] | None = None  # bytes [start, end) of the dissected data it covers

    def walk(self) -> Iterable[Node]:
        yield self
        for c in self.children:
            yield from c.walk()

    def find(self, name: str) -> Node | None:
        """The first node (depth first) with this protocol or field name."""
        return next((n for n in self.walk() if n.name == name), None)


def format_tree(nodes: Sequence[Node], indent: str = "") -> str:
    """The tree as ``tshark -V`` prints it: four spaces per level."""
    lines: list[str] = []

    def add(n: Node, depth: int) -> None:
        lines.append(indent + "    " * depth + n.label)
        for c in n.children:
            add(c, depth + 1)

    for n in nodes:
        add(n, 0)
    return "\n".join(lines)


# ---- tshark via pyshark ---------------------------------------------------------------------------

def tshark_path() -> str:
    """Where tshark is (PATH first, as pyshark searches it), or :class:`TsharkNotFound`."""
    from pyshark.tshark.tshark import TSharkNotFoundException, get_process_path

    try:
        return get_process_path()
    except TSharkNotFoundException:
        raise TsharkNotFound("tshark not found on PATH: install Wireshark's tshark for the full protocol tree") \
            from None


def _pdml_layers(xml: bytes) -> list[Node]:
    from lxml import etree
    from pyshark.tshark.output_parser.tshark_xml import DEL_BAD_XML_CHARS

    parser = etree.XMLParser(huge_tree=True, recover=True, encoding="utf-8")
    text = xml.decode(errors="replace").translate(DEL_BAD_XML_CHARS)
    root = etree.fromstring(text.encode(), parser)
    layers: list[Node] = []
    for el in root:
        name = el.get("name", "")
        if name == "geninfo":  # pyshark's summary of the record; tshark -V does not print it
            continue
        if name == "fake-field-wrapper":  # fields tshark put at the top level (e.g. trailing data)
            layers.extend(_children(el))
            continue
        node = _node(el)
        if node is not None:
            layers.append(node)
    return layers


def _node(el) -> Node | None:
    if el.tag not in ("proto", "field") or el.get("hide") == "yes":
        return None  # hidden fields (ip.addr, ip.src_host...) exist for filters, not for the tree
    name = el.get("name", "")
    label = el.get("showname") or el.get("show") or name
    span = None
    try:
        pos, size = int(el.get("pos", "")), int(el.get("size", ""))
        if size > 0:
            span = (pos, pos + size)
    except ValueError:
        pass
    children = _children(el)
    if not el.get("showname") and not el.get("show") and name == "data":
        # PDML writes the data protocol as a bare field holding the hex; tshark -V says "Data (N bytes)".
        label = f"Data ({len(el.get('value', '')) // 2} bytes)"
        spans = [c.span for c in children if c.span]
        span = (min(s[0] for s in spans), max(s[1] for s in spans)) if spans else None
    return Node(label, children, name, el.get("show", ""), span)


def _children(el) -> list[Node]:
    return [n for n in (_node(c) for c in el) if n is not None]


def _capture_classes():
    from pyshark.capture.capture import Capture
    from pyshark.capture.file_capture import FileCapture
    from pyshark.capture.inmem_capture import InMemCapture
    from pyshark.tshark.output_parser.tshark_xml import TsharkXmlParser

    class _TreeParser(TsharkXmlParser):
        # pyshark splits tshark's PDML stream into packets; we keep each packet's tree.
        def _parse_single_packet(self, packet: bytes) -> tuple[int, list[Node]]:
            return _pdml_packet(packet)

    class _Trees:
        async def trees(self, feed: Feed | None = None) -> list[tuple[int, list[Node]]]:
            """Start tshark, ``feed`` it (a coroutine function taking the process), collect every
            packet's tree until tshark ends; tshark is killed on any way out (timeout, cancel)."""
            proc = await self._get_tshark_process()
            out: list[tuple[int, list[Node]]] = []
            feeder = asyncio.ensure_future(feed(proc)) if feed else None
            try:
                await self._go_through_packets_from_fd(proc.stdout, out.append)
                if feeder is not None:
                    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                        await feeder
                rc = await proc.wait()
                self._running_processes.discard(proc)  # ended: nothing for close_async to kill or judge
            finally:
                if feeder is not None:
                    feeder.cancel()
                if proc.stdin is not None and not proc.stdin.is_closing():
                    proc.stdin.close()
                try:
                    await self.close_async()  # kills tshark if it still runs (timeout, cancelled worker)
                finally:
                    self._running_processes.clear()  # else pyshark's __del__ retries on a closed loop
                    # Cancelled again while closing (the app quitting): close the pipes now, while the
                    # loop runs, not in a destructor after it has closed.
                    transport = getattr(proc, "_transport", None)
                    if transport is not None:
                        transport.close()
            if rc != 0:
                raise DissectError(f"tshark failed: {self._last_error_line or f'exit status {rc}'}")
            return out

        def _setup_tshark_output_parser(self) -> _TreeParser:
            return _TreeParser()

    class _PipeCapture(_Trees, InMemCapture):
        """pyshark's in-memory capture, reading with ``-r -`` (a file on stdin) rather than
        ``-i -`` (a live pipe through dumpcap, which an unprivileged user may not run)."""

        def get_parameters(self, packet_count: int | None = None) -> list[str]:
            return Capture.get_parameters(self, packet_count=packet_count) + ["-r", "-"]

        async def _get_tshark_process(self, packet_count: int | None = None):
            # As pyshark's, but the pcap header says a snapshot length of 256 KiB (pyshark writes
            # 32767, shorter than an IPv4 datagram may be).
            if self._current_tshark is None:
                proc = await Capture._get_tshark_process(self, packet_count=packet_count, stdin=subprocess.PIPE)
                proc.stdin.write(struct.pack("IHHIIII", 0xA1B2C3D4, 2, 4, 0, 0, _SNAPLEN, self._current_linktype))
                self._current_tshark = proc
            return self._current_tshark

    class _FileTrees(_Trees, FileCapture):
        pass

    class _FdTrees(_Trees, Capture):
        """tshark reading a whole capture (pcap or pcapng) from the read end of a pipe, ``-r -``:
        whatever writes the other end (a thread) never puts the bytes in a file."""

        def __init__(self, fd: int, **kwargs) -> None:
            super().__init__(**kwargs)
            self._fd = fd

        def get_parameters(self, packet_count: int | None = None) -> list[str]:
            return Capture.get_parameters(self, packet_count=packet_count) + ["-r", "-"]

        async def _get_tshark_process(self, packet_count: int | None = None):
            return await Capture._get_tshark_process(self, packet_count=packet_count, stdin=self._fd)

    return _PipeCapture, _FileTrees, _FdTrees


def _pdml_packet(xml: bytes) -> tuple[int, list[Node]]:
    """(frame number, layers) of one PDML <packet>."""
    layers = _pdml_layers(xml)
    # the "frame" layer, not the first: a packet with a comment (decrypt --keep-other's reason on an
    # ESP/AH frame whose ICV failed, an AH payload not verified) starts with its pkt_comment layer
    frame = next((x for x in layers if x.name == "frame"), None)
    number = frame.find("frame.number") if frame is not None else None
    return (int(number.show) if number is not None and number.show.isdigit() else 0), layers


_SNAPLEN = 262144  # wiretap's largest standard record
# A packet dissected alone has no stream around it: TCP's relative sequence numbers would start at
# this packet and say 1, which is not what Wireshark shows for the capture; the raw ones are true.
ALONE_PREFS = {"tcp.relative_sequence_numbers": "FALSE"}


async def dissect_async(data: bytes, linktype: int, *, ts: float | None = None,
                        timeout: float = TIMEOUT) -> list[Node]:
    """tshark's protocol tree of one packet (its layers, ``frame`` first), in the running event loop.

    One tshark run for one packet, on purpose: a packet dissected alone has no cross-packet fields
    (request/response links, TCP analysis) that would point at frames of some other numbering, and
    TCP shows its raw sequence numbers (:data:`ALONE_PREFS`). :func:`capture_trees` has the rest.
    Cancelling the awaiting task (a TUI worker whose frame is no longer on screen) kills tshark.
    """
    if len(data) > _SNAPLEN:
        raise DissectError(f"the packet is {len(data)} bytes, more than the {_SNAPLEN} tshark reads in one record")
    pipe, _, _ = _capture_classes()
    cap = pipe(linktype=linktype, tshark_path=tshark_path(), eventloop=asyncio.get_running_loop(),
               override_prefs=ALONE_PREFS)

    async def feed(proc: asyncio.subprocess.Process) -> None:
        cap._write_packet(data, ts)
        await proc.stdin.drain()
        proc.stdin.close()  # end of the capture: tshark prints the packet and exits

    packets = await _guard(cap.trees(feed), timeout)
    if len(packets) != 1:
        raise DissectError(f"tshark returned {len(packets)} packets for one")
    return packets[0][1]


def dissect(data: bytes, linktype: int, *, ts: float | None = None, timeout: float = TIMEOUT) -> list[Node]:
    """:func:`dissect_async` for code without an event loop (the CLI, tests)."""
    return asyncio.run(dissect_async(data, linktype, ts=ts, timeout=timeout))


def dissect_file(path: str | os.PathLike[str], frames: Iterable[int] | None = None, *,
                 timeout: float | None = None) -> dict[int, list[Node]]:
    """Trees of ``frames`` (all when None) of a capture file, by frame number: one tshark run over
    the whole file, so cross-packet fields are Wireshark's own (``tshark -r FILE -Y ... -V``)."""
    wanted, flt = _frame_filter(frames)
    if wanted == []:
        return {}

    async def run() -> dict[int, list[Node]]:
        _, file_trees, _ = _capture_classes()
        cap = file_trees(str(path), display_filter=flt, tshark_path=tshark_path(),
                         eventloop=asyncio.get_running_loop())
        return dict(await _guard(cap.trees(), timeout))

    return asyncio.run(run())


async def _guard(coro, timeout: float | None):
    try:
        return await asyncio.wait_for(coro, timeout)
    except TimeoutError:
        raise DissectError(f"tshark took longer than {timeout:g} s") from None
    except IpsecscopeError:  # DissectError, or the writer's own (a capture that cannot be decrypted)
        raise
    except Exception as exc:  # noqa: BLE001 - pyshark/tshark failures of many kinds: one line each
        raise DissectError(f"tshark failed: {_one_line(exc)}") from None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _frame_filter(frames: Iterable[int] | None) -> tuple[list[int] | None, str | None]:
    wanted = sorted(set(frames)) if frames is not None else None
    flt = None if wanted is None else "frame.number in {" + ", ".join(map(str, wanted)) + "}"  # commas: 4.0
    return wanted, flt


def pipe_trees(write: Callable[[BinaryIO], object], frames: Iterable[int] | None, *,
               timeout: float | None = None) -> dict[int, list[Node]]:
    """Trees of ``frames`` (all when None) of the capture ``write(pipe)`` writes, by tshark's frame
    number (its position in that capture): one tshark run reading the pipe (``-r -``) while
    ``write`` runs in a thread, so cleartext goes from memory to tshark and never to a file.
    An error ``write`` raises (other than tshark going away) is raised here."""
    wanted, flt = _frame_filter(frames)
    if wanted == []:
        return {}

    async def run() -> dict[int, list[Node]]:
        *_, fd_trees = _capture_classes()
        r, w = os.pipe()
        unowned = {r, w}  # fds nobody closes yet (closing one twice could close a reused number)
        try:
            cap = fd_trees(r, display_filter=flt, tshark_path=tshark_path(), eventloop=asyncio.get_running_loop())

            def writer() -> None:
                out = open(w, "wb", buffering=1 << 16)  # noqa: SIM115 - closed below, whatever happens
                try:
                    write(out)
                    out.flush()
                except BrokenPipeError:  # tshark ended first (failed, or killed on a timeout)
                    pass
                finally:
                    with contextlib.suppress(BrokenPipeError):
                        out.close()  # closes the fd even when the last flush fails

            async def feed(proc: asyncio.subprocess.Process) -> None:
                os.close(r)  # tshark has its own copy: the pipe ends with it
                unowned.clear()  # w: the writer's file object closes it
                await asyncio.to_thread(writer)

            return dict(await _guard(cap.trees(feed), timeout))
        finally:
            for fd in unowned:
                os.close(fd)

    return asyncio.run(run())


def capture_trees(capture: str | os.PathLike[str], keys: KeyStore | Sequence[str], frames: Iterable[int]) -> dict[int, list[Node]]:
    """tshark's trees of ``frames`` of ``capture`` with ESP frames decrypted (their inner packets),
    in one tshark run over the capture decrypted with ``keys`` (a KeyStore or key files).

    The decrypted copy (``decrypt --keep-other``: one record per frame, so frame numbers are the
    capture's) is written into a pipe tshark reads: the cleartext never lands in a file.
    """
    return pipe_trees(lambda out: _decrypted_section(out, capture, keys), frames)


def session_trees(session: Session, frames: Iterable[int], gone: list[int] | None = None) -> dict[int, list[Node]]:
    """tshark's trees of ``frames`` of a loaded session over one or several captures, by session
    frame number, ESP frames decrypted: one tshark run reading from a pipe each capture's frames in
    turn, a pcapng section each, numbered on from one capture to the next as the session (and
    ``mergecap -a``) number them, so cross-packet fields ("Request frame: 39") say those numbers.

    A capture file is decrypted again by the decrypt engine (``decrypt --keep-other``); one that
    cannot be read again (stdin, a pipe) gives the frames the session still holds (:func:`target`
    of each), and a frame it no longer holds is an empty record whose number goes to ``gone``.
    Nothing is written to a file.
    """
    wanted = sorted(set(frames))
    if not wanted:
        return {}
    last = wanted[-1]

    def write(out: BinaryIO) -> None:
        total = 0
        for path in session.paths:
            if total >= last:
                break
            if os.path.isfile(path):
                n = _decrypted_section(out, path, session.keys)
            else:
                n = _records_section(out, _held(session, path, total, gone))
            if session.frame_origin(total + n) != (path, n):
                raise DissectError(f"{path}: {n} records written where the session counts another number of "
                                   "frames, so tshark's frame numbers would not be the session's")
            total += n

    return pipe_trees(write, wanted)


def _decrypted_section(out: BinaryIO, capture, keys) -> int:
    from .api import load_keystore
    from .export import engine

    # AH frames as captured (Options.ah off): tshark dissects AH and its payload itself, and shows the AH header
    # (and one record a frame: an RFC 8229 record given up late stays in its segment's frame, Options.late)
    stats = engine.run(capture, load_keystore(keys), out=out, opts=engine.Options(keep_other=True, ah=False, late=False),
                       jobs=1)
    if stats.written + stats.kept + stats.unkept != stats.frames:
        raise DissectError(f"the decrypted copy has {stats.written + stats.kept + stats.unkept} records for "
                           f"{stats.frames} frames, so its frame numbers are not the capture's")
    return stats.frames


def _held(session, path, base: int, gone: list[int] | None):
    """``(bytes, link type, time)`` of the frames of ``path`` (numbered from ``base`` + 1) as the
    session holds them: the decrypted inner packet of an ESP frame, else the frame as captured."""
    frame = base + 1
    while session.frame_origin(frame) == (path, frame - base):
        detail = session.detail(frame)
        hit = target(detail) if detail is not None and detail.raw else None
        ts = detail.row.ts if detail is not None else 0.0
        if hit is None:
            if gone is not None:
                gone.append(frame)
            yield b"", int(LinkType.RAW), ts
        else:
            yield hit[0], hit[1], ts
        frame += 1


def _records_section(out: BinaryIO, records: Iterable[tuple[bytes, int, float]]) -> int:
    """A pcapng section of ``records`` (an interface per link type); returns how many."""
    from .export.pcapng import PcapngWriter

    w = PcapngWriter(out)
    ifaces: dict[int, int] = {}
    for data, linktype, ts in records:
        if linktype not in ifaces:
            ifaces[linktype] = w.add_interface(linktype)
        # A float epoch time holds about 0.2 us: whole microseconds (tcpdump's resolution) give
        # tshark the capture's own times back, so "Response time" reads as in the capture.
        w.write_packet(ifaces[linktype], round(ts * 1e6) * 1000, data)
    w.close()
    return w.packets


# ---- what to dissect for a frame, and the scapy fallback ------------------------------------------

def target(detail: FrameDetail) -> tuple[bytes, int, str] | None:
    """What the deep dissection of a frame's detail looks at: ``(bytes, link type, what)``.

    ``what`` "inner": a decrypted tunnel-mode ESP packet, its inner IP datagram (RFC 4303 §2.6 next
    header 4 or 41) as LINKTYPE_RAW. "transport": a decrypted transport-mode payload behind an IP
    header rebuilt from the outer addresses, as ``decrypt`` writes it. "frame": any other frame as
    captured, with its capture's link type. None when the bytes could not be re-read.
    """
    res = getattr(detail, "esp_result", None)
    if detail.esp is not None and detail.inner:
        nh = res.next_header if res is not None else None
        if nh in (4, 41) or (nh is None and detail.inner[0] >> 4 in (4, 6)):
            return detail.inner, int(LinkType.RAW), "inner"
        if nh is not None:
            import socket

            from .export.perframe import ip_header

            esp = detail.esp
            family = socket.AF_INET6 if ":" in esp.src else socket.AF_INET
            head = ip_header(socket.inet_pton(family, esp.src), socket.inet_pton(family, esp.dst), nh,
                             len(detail.inner))
            return head + detail.inner, int(LinkType.RAW), "transport"
    if detail.raw and getattr(detail, "linktype", -1) >= 0:
        return detail.raw, detail.linktype, "frame"
    return None


def scapy_layers(data: bytes, linktype: int) -> list[Node]:
    """scapy's dissection of one packet as the same kind of tree (no byte spans): the fallback."""
    from scapy.fields import ConditionalField

    try:
        pkt = _scapy_packet(data, linktype)
        nodes: list[Node] = []
        layer = pkt
        while layer is not None and getattr(layer, "fields_desc", None) is not None:
            fields = []
            for f in layer.fields_desc:
                try:
                    if isinstance(f, ConditionalField) and not f._evalcond(layer):
                        continue  # e.g. ICMP's timestamp fields on an echo request
                    shown = str(f.i2repr(layer, layer.getfieldval(f.name)))
                except Exception:  # noqa: BLE001 - a field scapy cannot render is skipped, not fatal
                    continue
                if len(shown) > 80:
                    shown = shown[:79] + "…"
                fields.append(Node(f"{f.name}: {shown}", name=f"{layer.name}.{f.name}"))
            nodes.append(Node(layer.name, fields, layer.name))
            layer = layer.payload if layer.payload else None
        return nodes
    except Exception as exc:  # noqa: BLE001 - scapy's dissectors raise many things on odd bytes
        return [Node(f"{len(data)} bytes (scapy could not dissect them: {_one_line(exc)})")]


def _scapy_packet(data: bytes, linktype: int):
    from scapy.layers.inet import IP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import CookedLinux, CookedLinuxV2, Ether, Loopback
    from scapy.packet import Raw

    if linktype in (LinkType.RAW, LinkType.IPV4, LinkType.IPV6):
        return IPv6(data) if data[:1] and data[0] >> 4 == 6 else IP(data)
    cls = {LinkType.ETHERNET: Ether, LinkType.LINUX_SLL: CookedLinux, LinkType.LINUX_SLL2: CookedLinuxV2,
           LinkType.NULL: Loopback, LinkType.LOOP: Loopback}.get(linktype, Raw)
    return cls(data)


def available() -> bool:
    """Whether tshark can be found (PATH first)."""
    try:
        return os.access(tshark_path(), os.X_OK)
    except TsharkNotFound:
        return False
