"""Live capture from an interface: an AF_PACKET socket with a kernel BPF filter.

Opened while privileged: scapy compiles the filter and attaches it
(``scapy.arch.linux.attach_filter``). Then the socket goes to the privileged helper
(:mod:`.privsep`), whose receive loop is a plain ``recvmsg``; kernel timestamps come from
``SO_TIMESTAMPNS`` and capture drops from ``PACKET_STATISTICS`` (packet(7)), which an engineer
needs to know before trusting a "packet loss" finding. :class:`HelperStream` is the unprivileged
analyser's end of the helper's stream.
"""

from __future__ import annotations

import os
import select
import socket
import subprocess
import time
from pathlib import Path

from ..errors import LiveCaptureError
from ..model.packets import LinkType
from . import privsep

# IKE (500, 4500 incl. RFC 8229 TCP), ESP/AH in IPv4/IPv6, and IP fragments (the non-first
# fragments of a large IKE_AUTH carry no UDP header, so a port filter alone would lose them).
_IPSEC_BPF = (
    "udp port 500 or udp port 4500 or tcp port 4500 or ip proto 50 or ip proto 51 "
    "or ip6 proto 50 or ip6 proto 51 or (ip[6:2] & 0x3fff != 0) or ip6 proto 44"
)
# ICMP errors that quote an IPsec packet: a router's "fragmentation needed" with its MTU (RFC 1191
# §4), "packet too big" (RFC 8201), port or host unreachable. They are what ESP-PATH-MTU,
# ESP-ICMP-UNREACHABLE and the one-way ESP findings cite; without them a live capture of an MTU
# problem shows only the fragments, never the router, its MTU or the packets it dropped.
# ICMP: error types 3, 4, 5, 11, 12 (RFC 792) quoting ESP/AH, or UDP/TCP from or to port 500/4500
# (the quoted IPv4 header starts at icmp[8], its protocol at icmp[17], its ports after its IHL).
# ICMPv6: error types 1-4 (RFC 4443 §3) quoting ESP/AH or ports 500/4500 right after the quoted
# IPv6 header (a quote with extension headers first is not matched, as ``ip6 proto 50`` is not).
_QUOTED_PORTS = "icmp[{o}:2] = 500 or icmp[{o}:2] = 4500 or icmp[{o} + 2:2] = 500 or icmp[{o} + 2:2] = 4500"
_ICMP_BPF = (
    "(icmp[0] = 3 or icmp[0] = 4 or icmp[0] = 5 or icmp[0] = 11 or icmp[0] = 12) and (icmp[17] = 50 "
    "or icmp[17] = 51 or ((icmp[17] = 17 or icmp[17] = 6) and ("
    + _QUOTED_PORTS.format(o="8 + (icmp[8] & 0xf) * 4") + ")))"
)
_ICMP6_BPF = (
    "icmp6 and icmp6[0] >= 1 and icmp6[0] <= 4 and (icmp6[14] = 50 or icmp6[14] = 51 or "
    "((icmp6[14] = 17 or icmp6[14] = 6) and (" + _QUOTED_PORTS.replace("icmp[", "icmp6[").format(o="48") + ")))"
)
DEFAULT_BPF = f"{_IPSEC_BPF} or ({_ICMP_BPF}) or ({_ICMP6_BPF})"

ETH_P_ALL = 0x0003
SO_RCVBUFFORCE = 33

# ARPHRD_* (if_arp.h) → how frames from that device look on an AF_PACKET SOCK_RAW socket.
_ARPHRD_LINKTYPE = {1: LinkType.ETHERNET, 772: LinkType.ETHERNET, 65534: LinkType.RAW, 776: LinkType.RAW}


def interfaces() -> list[str]:
    return sorted(name for _, name in socket.if_nameindex())


class LiveCapture:
    """An AF_PACKET socket on ``iface`` with the BPF filter attached, opened while privileged.

    Nothing here reads a frame: :meth:`start_helper` gives the socket to the privileged helper,
    which forwards frames and the kernel's counters (``drops``: the socket buffer was full, we were
    too slow, and what we report is incomplete) to a :class:`HelperStream`.
    """

    def __init__(self, iface: str, bpf: str | None = DEFAULT_BPF, snaplen: int = 262144) -> None:
        if not hasattr(socket, "AF_PACKET"):
            raise LiveCaptureError("live capture needs Linux (AF_PACKET sockets)")
        try:
            self.ifindex = socket.if_nametoindex(iface)
        except OSError:
            raise LiveCaptureError(
                f"no interface named {iface!r}; interfaces here: {', '.join(interfaces())}"
            ) from None
        self.iface = iface
        arphrd = int((Path("/sys/class/net") / iface / "type").read_text().strip() or 1)
        self.linktype = int(_ARPHRD_LINKTYPE.get(arphrd, LinkType.ETHERNET))
        self.snaplen = snaplen
        try:
            # Protocol 0: the socket receives nothing until bind() names one, so no frame from any
            # interface is queued before the filter is attached (packet(7)); libpcap drains such
            # frames instead, here there are none to drain.
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        except PermissionError:
            raise LiveCaptureError(
                "live capture needs root or CAP_NET_RAW: run it with sudo, or capture with "
                "tcpdump -w FILE and open the file"
            ) from None
        try:
            if bpf:
                self._attach(bpf)
            self.sock.bind((iface, ETH_P_ALL))
            self.sock.setsockopt(socket.SOL_SOCKET, privsep.SO_TIMESTAMPNS, 1)
            # 8 MiB of kernel buffer, like dumpcap's default ring, so a burst waits there while the
            # analyser catches up. SO_RCVBUF is silently capped at net.core.rmem_max (~208 KiB by
            # default: a few hundred frames); root may exceed it with SO_RCVBUFFORCE.
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20)
            except PermissionError:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        except BaseException:
            self.sock.close()
            raise
        self.skip_outgoing = arphrd == 772  # loopback shows every packet twice

    def _attach(self, bpf: str) -> None:
        try:
            from scapy.arch.linux import attach_filter

            attach_filter(self.sock, bpf, self.iface)
        except Exception as exc:  # scapy raises Scapy_Exception/OSError for a bad expression
            raise LiveCaptureError(f"BPF filter {bpf!r} was rejected: {exc}") from None

    def start_helper(self, logs: list[str], xfrm: bool) -> HelperStream:
        """Hand the socket to the privileged helper (:mod:`.privsep`) and return the stream of
        frames and key text it sends; this process keeps no copy of the socket."""
        try:
            chan, proc = privsep.spawn(self.sock, logs, xfrm, snaplen=self.snaplen,
                                       skip_outgoing=self.skip_outgoing)
        except OSError as exc:
            raise LiveCaptureError(f"cannot start the capture helper: {exc.strerror or exc}") from None
        finally:
            self.close()
        return HelperStream(chan, proc)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> LiveCapture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


Message = tuple  # (MSG_FRAME, ts_ns, orig_len, data) | (MSG_KEYS, source, data) | (MSG_RESET, source)


class HelperStream:
    """The analyser's end of the helper's stream: frames and key text in the order the helper
    read them, plus its latest tick (``tick_ns``) and kernel counters (``received``, ``drops``).

    ``read`` raises LiveCaptureError when the helper ends unasked (killed, or an error it sent).
    """

    READ = 1 << 20

    def __init__(self, sock: socket.socket, proc: subprocess.Popen) -> None:
        self.sock = sock
        self.proc = proc
        self.pid = proc.pid
        self._buf = bytearray()
        self.tick_ns = 0
        self.received = 0
        self.drops = 0
        self.done = False  # the helper said bye, or its end closed

    def read(self, timeout: float) -> list[Message]:
        if self.done:
            return []
        ready, _, _ = select.select([self.sock], [], [], timeout)
        if not ready:
            return []
        try:
            chunk = self.sock.recv(self.READ)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.done = True
            raise LiveCaptureError(self._ended())
        buf = self._buf
        buf += chunk
        out: list[Message] = []
        hdr, frame = privsep.HEADER, privsep.FRAME
        off, n = 0, len(buf)
        while n - off >= hdr.size:
            kind, length = hdr.unpack_from(buf, off)
            start = off + hdr.size
            if n - start < length:
                break
            off = start + length
            if kind == privsep.MSG_FRAME:
                ts_ns, orig_len = frame.unpack_from(buf, start)
                out.append((kind, ts_ns, orig_len, bytes(buf[start + frame.size:off])))
            elif kind == privsep.MSG_TICK:
                self.tick_ns = privsep.TICK.unpack_from(buf, start)[0]
            elif kind == privsep.MSG_STATS:
                self.received, self.drops = privsep.STATS.unpack_from(buf, start)
            elif kind == privsep.MSG_KEYS:
                out.append((kind, buf[start], bytes(buf[start + 1:off])))
            elif kind == privsep.MSG_RESET:
                out.append((kind, buf[start]))
            elif kind == privsep.MSG_ERROR:
                self.done = True
                raise LiveCaptureError(bytes(buf[start:off]).decode(errors="replace"))
            elif kind == privsep.MSG_BYE:
                self.done = True
                break
        del buf[:off]
        return out

    def _ended(self) -> str:
        try:
            code = self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            code = None
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit status {code}"
        return f"the privileged capture helper (pid {self.pid}) ended unexpectedly ({how}); capture stopped"

    def stop(self, timeout: float = 5.0) -> list[Message]:
        """Ask the helper to stop; returns what it sent until then (its last key text, with
        the final tick and counters applied). The helper is reaped either way."""
        out: list[Message] = []
        if not self.done:
            try:
                self.sock.sendall(b"Q")
                deadline = time.monotonic() + timeout
                while not self.done and time.monotonic() < deadline:
                    out += self.read(0.1)
            except (OSError, LiveCaptureError):
                pass
        self.close()
        return out

    def close(self) -> None:
        self.done = True
        self.sock.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def require_root() -> None:
    if os.geteuid() != 0:
        raise LiveCaptureError("live capture needs root or CAP_NET_RAW: run it with sudo")
