"""Live capture from an interface: an AF_PACKET socket with a kernel BPF filter.

Scapy compiles the filter and attaches it (``scapy.arch.linux.attach_filter``); the receive loop
itself is a plain ``recvmsg`` so the hot path stays free of per-packet scapy objects. Kernel
timestamps come from ``SO_TIMESTAMPNS`` and capture drops from ``PACKET_STATISTICS``
(packet(7)), which an engineer needs to know before trusting a "packet loss" finding.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import time
from pathlib import Path

from ..errors import LiveCaptureError
from ..model.packets import LinkType, RawFrame

# IKE (500, 4500 incl. RFC 8229 TCP), ESP/AH in IPv4/IPv6, and IP fragments (the non-first
# fragments of a large IKE_AUTH carry no UDP header, so a port filter alone would lose them).
DEFAULT_BPF = (
    "udp port 500 or udp port 4500 or tcp port 4500 or ip proto 50 or ip proto 51 "
    "or ip6 proto 50 or ip6 proto 51 or (ip[6:2] & 0x3fff != 0) or ip6 proto 44"
)

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_STATISTICS = 6
PACKET_OUTGOING = 4
SO_TIMESTAMPNS = 35
_TIMESPEC = struct.Struct("@qq")
_STATS = struct.Struct("@II")

# ARPHRD_* (if_arp.h) → how frames from that device look on an AF_PACKET SOCK_RAW socket.
_ARPHRD_LINKTYPE = {1: LinkType.ETHERNET, 772: LinkType.ETHERNET, 65534: LinkType.RAW, 776: LinkType.RAW}


def interfaces() -> list[str]:
    return sorted(name for _, name in socket.if_nameindex())


class LiveCapture:
    """Iterate RawFrames from ``iface``; ``next_frame(timeout)`` returns None on timeout.

    ``received``/``drops`` are the kernel's counters since open (drops = the socket buffer was
    full: we were too slow, and what we report is incomplete).
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
            self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        except BaseException:
            self.sock.close()
            raise
        self.index = 0
        self.received = 0
        self.drops = 0
        self._skip_outgoing = arphrd == 772  # loopback shows every packet twice

    def _attach(self, bpf: str) -> None:
        try:
            from scapy.arch.linux import attach_filter

            attach_filter(self.sock, bpf, self.iface)
        except Exception as exc:  # scapy raises Scapy_Exception/OSError for a bad expression
            raise LiveCaptureError(f"BPF filter {bpf!r} was rejected: {exc}") from None

    def update_stats(self) -> tuple[int, int]:
        # Reading PACKET_STATISTICS resets the kernel's counters, so accumulate.
        raw = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, _STATS.size)
        packets, drops = _STATS.unpack(raw)
        self.received += packets
        self.drops += drops
        return self.received, self.drops

    def next_frame(self, timeout: float | None = None) -> RawFrame | None:
        while True:
            if timeout is not None:
                ready, _, _ = select.select([self.sock], [], [], timeout)
                if not ready:
                    return None
            data, anc, _flags, addr = self.sock.recvmsg(self.snaplen, 64)
            if self._skip_outgoing and addr[2] == PACKET_OUTGOING:
                continue
            ts_ns = 0
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    sec, nsec = _TIMESPEC.unpack_from(payload)
                    ts_ns = sec * 1_000_000_000 + nsec
            if not ts_ns:
                ts_ns = time.time_ns()
            self.index += 1
            return RawFrame(self.index, ts_ns / 1e9, ts_ns, self.linktype, data, len(data), 0)

    def __iter__(self):
        while True:
            frame = self.next_frame()
            if frame is not None:
                yield frame

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> LiveCapture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def require_root() -> None:
    if os.geteuid() != 0:
        raise LiveCaptureError("live capture needs root or CAP_NET_RAW: run it with sudo")
