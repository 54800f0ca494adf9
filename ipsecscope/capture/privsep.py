"""Privilege separation for live capture: a minimal privileged helper, and the analyser's end.

``ipsecscope live`` parses bytes anyone on the network can send. As Wireshark keeps its
privileges in ``dumpcap`` and tcpdump drops them with ``-Z``, only this module's helper keeps
root: it owns the packet socket (opened and filtered before it starts), tails the charon logs
(following logrotate), runs ``ip xfrm state``, and writes what it reads to one stream socket. It
never decodes a frame or a key: log and xfrm text go over as bytes and are parsed by the analyser,
which runs as an unprivileged user with no capabilities (:func:`drop_privileges`). Even the helper
keeps only the capabilities its sources need (:func:`keep_only_capabilities`): reading any log,
and the XFRM dump; the open socket needs none.

The helper is started as a fresh interpreter on this file (``python -I -S privsep.py``), so the
privileged process holds the standard library and this file only, nothing that parses packets.
It has no terminal (stdio on /dev/null, its own session) and ends when the analyser does:
the stream reaches EOF (or a write fails), and ``PR_SET_PDEATHSIG`` covers a kill -9.

Why the socket stays with the helper although an open AF_PACKET socket needs no privilege to read:
the same descriptor can also be re-bound to any interface, have its filter detached, and *send*
raw frames. A compromised analyser holding it could sniff everything and inject; holding a
stream of filtered frames it can do neither.

Wire format, helper → analyser: records ``<B type><I length><payload>``:

- ``F`` frame: ``<Q ts_ns><I orig_len>`` + frame bytes
- ``K`` key text: ``<B source>`` + bytes to append to that source's text
- ``Z`` reset: ``<B source>`` — the source's text starts again (log rotated or truncated, new xfrm
  output)
- ``T`` tick: ``<Q time_ns>`` — every key text the sources held at that time has been sent, so a
  frame captured ``key_delay`` before it can be processed (keys before the frames they decrypt)
- ``S`` stats: ``<Q received><Q drops>`` — the kernel's PACKET_STATISTICS, accumulated
- ``E`` error: UTF-8 text, one line; the helper stops after it
- ``B`` bye: after a last key poll, tick and stats; the answer to a quit request, or sent
  unasked when the helper got SIGTERM (the analyser then ends normally)

Analyser → helper: ``Q`` asks it to stop. EOF means the same.

Stdlib only, on purpose: the privileged process imports nothing from ipsecscope.
"""

from __future__ import annotations

import errno
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time

HEADER = struct.Struct("<BI")
FRAME = struct.Struct("<QI")
TICK = struct.Struct("<Q")
STATS = struct.Struct("<QQ")
SOURCE = struct.Struct("<B")

MSG_FRAME, MSG_KEYS, MSG_RESET, MSG_TICK, MSG_STATS, MSG_ERROR, MSG_BYE = b"FKZTSEB"

SOL_PACKET = 263
PACKET_STATISTICS = 6
PACKET_OUTGOING = 4
SO_TIMESTAMPNS = 35
_TIMESPEC = struct.Struct("@qq")
_KSTATS = struct.Struct("@II")

KEY_POLL = 0.1  # seconds between looks at the charon logs; far below the 0.5 s key delay
XFRM_POLL = 0.25  # `ip xfrm state` is a process each time, so a little less often
STATS_EVERY = 0.5
BATCH_BYTES = 256 * 1024  # frames gathered into one write to the stream
LOG_CHUNK = 1 << 20


def record(kind: int, payload: bytes) -> bytes:
    return HEADER.pack(kind, len(payload)) + payload


def recv_frame(sock: socket.socket, snaplen: int, skip_outgoing: bool, flags: int = 0) -> tuple[int, bytes] | None:
    """One frame from an AF_PACKET socket as (kernel timestamp in ns, bytes); None if a
    non-blocking read found nothing. Loopback shows each packet twice: the outgoing copy is
    skipped."""
    while True:
        try:
            data, anc, _flags, addr = sock.recvmsg(snaplen, 64, flags)
        except BlockingIOError:
            return None
        if skip_outgoing and addr[2] == PACKET_OUTGOING:
            continue
        ts_ns = 0
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                sec, nsec = _TIMESPEC.unpack_from(payload)
                ts_ns = sec * 1_000_000_000 + nsec
        return ts_ns or time.time_ns(), data


def kernel_stats(sock: socket.socket) -> tuple[int, int]:
    """(packets, drops) since the last call: reading PACKET_STATISTICS resets them (packet(7))."""
    return _KSTATS.unpack(sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, _KSTATS.size))


# ---------------------------------------------------------------------------------- the helper


class LogTail:
    """Bytes appended to a log, across logrotate: a renamed file is read to its end before the
    new one is opened (charon may write its last lines there), a truncated one (copytruncate)
    starts again from 0. Either way the analyser is told to reset its copy of the text."""

    def __init__(self, path: str, index: int) -> None:
        self.path = path
        self.index = index
        self.fh = None
        self.inode: tuple[int, int] | None = None

    def poll(self, out: bytearray) -> None:
        if self.fh is None and not self._open(out):
            return
        self._read(out)
        try:
            st = os.stat(self.path)
        except OSError:
            return  # rotated away, the new file not created yet: keep the old one
        if (st.st_dev, st.st_ino) != self.inode:
            self.fh.close()
            self.fh = None
            if self._open(out):
                self._read(out)
        elif st.st_size < self.fh.tell():
            self.fh.seek(0)
            out += record(MSG_RESET, SOURCE.pack(self.index))
            self._read(out)

    def _open(self, out: bytearray) -> bool:
        try:
            self.fh = open(self.path, "rb")  # noqa: SIM115 - kept open between polls
        except OSError:
            return False
        st = os.fstat(self.fh.fileno())
        self.inode = (st.st_dev, st.st_ino)
        out += record(MSG_RESET, SOURCE.pack(self.index))
        return True

    def _read(self, out: bytearray) -> None:
        assert self.fh is not None
        while True:
            chunk = self.fh.read(LOG_CHUNK)
            if not chunk:
                return
            out += record(MSG_KEYS, SOURCE.pack(self.index) + chunk)


class XfrmState:
    """The output of ``ip xfrm state``, sent again whenever it changes."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.last = b""

    def poll(self, out: bytearray) -> None:
        try:
            text = subprocess.run(["ip", "xfrm", "state"], capture_output=True, timeout=5,
                                  stdin=subprocess.DEVNULL).stdout
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise HelperError(f"cannot run ip xfrm state: {exc}") from None
        if text != self.last:
            self.last = text
            out += record(MSG_RESET, SOURCE.pack(self.index))
            out += record(MSG_KEYS, SOURCE.pack(self.index) + text)


class HelperError(Exception):
    pass


def _set_parent_death_signal(parent: int) -> None:
    """SIGKILL us when the analyser dies, even by kill -9 while we block (prctl(2))."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # EOF on the stream still ends us
    if os.getppid() != parent:  # it died before prctl took effect
        os._exit(0)


CAP_DAC_READ_SEARCH = 2  # read a log whatever its owner and mode
CAP_NET_ADMIN = 12  # the netlink XFRM dump behind `ip xfrm state`


def keep_only_capabilities(wanted: set[int]) -> None:
    """The helper's own diet, once the socket is open: of all root can do, keep only ``wanted``
    (nothing when neither logs nor xfrm are asked for), in the bounding set too, so the `ip`
    it runs gets no more; then PR_SET_NO_NEW_PRIVS. It stays uid 0, so root-owned logs still
    read. Best effort where the kernel refuses (started with ambient capabilities, not as root)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for cap in range(64):
        if cap not in wanted and libc.prctl(24, cap, 0, 0, 0) != 0 and ctypes.get_errno() == 22:
            break  # PR_CAPBSET_DROP; EINVAL: past the last capability this kernel has
    mask = sum(1 << c for c in wanted) & _cap_permitted()
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    # two __user_cap_data_struct {effective, permitted, inheritable}: low and high 32 bits
    data = (ctypes.c_uint32 * 6)(mask & 0xFFFFFFFF, mask & 0xFFFFFFFF, 0, mask >> 32, mask >> 32, 0)
    libc.capset(header, data)
    libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS


def _cap_permitted() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("CapPrm:"):
                return int(line.split()[1], 16)
    return 0


def serve(pkt: socket.socket, chan: socket.socket, logs: list[str], xfrm: bool, *,
          snaplen: int = 262144, skip_outgoing: bool = False) -> None:
    """The helper's loop: frames, key text, ticks and stats onto ``chan`` until told to stop."""
    sources: list = [LogTail(p, i) for i, p in enumerate(logs)]
    xfrm_src = XfrmState(len(sources)) if xfrm else None
    pkt.setblocking(False)
    chan.setblocking(True)
    name = pkt.getsockname()[0]  # the interface, for the message if it goes away
    received = drops = 0
    next_keys = next_xfrm = next_stats = 0.0
    ready = [pkt, chan]
    while not _terminated:
        out = bytearray()
        now = time.monotonic()
        if now >= next_keys:
            tick = time.time_ns()  # taken before reading: what the logs held by then gets sent
            for src in sources:
                src.poll(out)
            if xfrm_src is not None and now >= next_xfrm:
                xfrm_src.poll(out)
                next_xfrm = now + XFRM_POLL
            out += record(MSG_TICK, TICK.pack(tick))
            next_keys = now + KEY_POLL
        if now >= next_stats:
            try:
                p, d = kernel_stats(pkt)
            except OSError as exc:
                raise HelperError(_socket_gone(name, exc)) from None
            received, drops = received + p, drops + d
            out += record(MSG_STATS, STATS.pack(received, drops))
            next_stats = now + STATS_EVERY
        while len(out) < BATCH_BYTES:
            try:
                got = recv_frame(pkt, snaplen, skip_outgoing, socket.MSG_DONTWAIT)
            except OSError as exc:
                raise HelperError(_socket_gone(name, exc)) from None
            if got is None:
                break
            ts_ns, data = got
            out += HEADER.pack(MSG_FRAME, FRAME.size + len(data)) + FRAME.pack(ts_ns, len(data)) + data
        if out:
            # Blocks while the analyser is busy: frames then wait in the kernel's socket buffer,
            # and what does not fit there is counted as a kernel drop, never lost silently here.
            chan.sendall(out)
        wait = max(0.0, min(next_keys, next_stats) - time.monotonic())
        r, _, _ = select.select(ready, [], [], wait)
        if chan in r:
            if not chan.recv(64):
                return  # EOF: the analyser is gone
            break  # asked to quit
    # Asked to quit, or SIGTERM (systemd stopping the whole unit): last keys, tick and stats,
    # then bye — the analyser ends as cleanly as when it asked.
    out = bytearray()
    tick = time.time_ns()
    for src in sources:
        src.poll(out)
    if xfrm_src is not None:
        xfrm_src.poll(out)
    out += record(MSG_TICK, TICK.pack(tick))
    p, d = kernel_stats(pkt)
    out += record(MSG_STATS, STATS.pack(received + p, drops + d))
    out += record(MSG_BYE, b"")
    chan.sendall(out)


def _socket_gone(name: str, exc: OSError) -> str:
    """Why the packet socket failed, as tcpdump says it. The kernel reports an interface that is
    set down or deleted under a bound packet socket as ENETDOWN then ENODEV (packet(7)); this used
    to fall into main()'s "analyser gone" branch, so the analyser only heard "helper ended
    unexpectedly (exit status 0)" and nobody learnt that the interface was the cause."""
    if exc.errno in (errno.ENETDOWN, errno.ENODEV, errno.ENXIO):
        return f"capture interface {name!r} went down or disappeared ({exc.strerror}); capture stopped"
    return f"reading from capture interface {name!r} failed: {exc.strerror or exc}; capture stopped"


_terminated = False


def _on_sigterm(_sig: int, _frame: object) -> None:
    global _terminated
    _terminated = True  # a flag, not an exception: a record half-written to the stream would garble it


def main(argv: list[str]) -> int:
    """``privsep.py PACKET_FD CHANNEL_FD PARENT_PID SNAPLEN SKIP_OUTGOING XFRM [LOG...]``"""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the analyser's to handle
    signal.signal(signal.SIGTERM, _on_sigterm)
    pkt_fd, chan_fd, parent, snaplen, skip, xfrm = (int(a) for a in argv[:6])
    _set_parent_death_signal(parent)
    logs = argv[6:]
    wanted = set()
    if logs:
        wanted.add(CAP_DAC_READ_SEARCH)
    if xfrm:
        wanted.add(CAP_NET_ADMIN)
    keep_only_capabilities(wanted)
    pkt = socket.socket(fileno=pkt_fd)
    chan = socket.socket(fileno=chan_fd)
    try:
        serve(pkt, chan, logs, bool(xfrm), snaplen=snaplen, skip_outgoing=bool(skip))
    except HelperError as exc:
        try:
            chan.sendall(record(MSG_ERROR, str(exc).encode()))
        except OSError:
            pass
        return 1
    except OSError:
        return 0  # the analyser closed its end: it has ended, so do we
    return 0


# ---------------------------------------------------------------------------- the analyser's end


HELPER_START_WAIT = 10.0  # s: the helper's interpreter start, on a loaded machine


def spawn(pkt: socket.socket, logs: list[str], xfrm: bool, *, snaplen: int,
          skip_outgoing: bool) -> tuple[socket.socket, subprocess.Popen]:
    """Start the helper on an open, filtered packet socket; the caller closes its own copy of
    ``pkt`` and reads the returned stream socket. Call it while still privileged."""
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", os.path.abspath(__file__), str(pkt.fileno()),
             str(theirs.fileno()), str(os.getpid()), str(snaplen), str(int(skip_outgoing)),
             str(int(xfrm)), *logs],
            pass_fds=(pkt.fileno(), theirs.fileno()), stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            env={"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")},
        )
    except BaseException:
        mine.close()
        raise
    finally:
        theirs.close()
    # Until the helper's interpreter has run main() it has no SIGTERM handler, and a SIGTERM then
    # (systemd stopping the unit just after start) would kill it instead of ending the run
    # cleanly. Its first records (a tick and the counters) come right after the handler is in
    # place: wait for them to be readable (select does not consume them) before going on.
    select.select([mine], [], [], HELPER_START_WAIT)
    return mine, proc


def drop_privileges(user: str) -> None:
    """Become ``user`` (from root) and hold no capability at all, for good.

    From root: supplementary groups, gid and uid (real, effective, saved) of ``user`` — setuid
    to a non-zero uid clears every capability (capabilities(7)). Started with capabilities but
    not as root (e.g. ``setpriv --ambient-caps +net_raw``): the uid stays, the capability sets are
    emptied. Then PR_SET_NO_NEW_PRIVS, so no later exec can regain any. Raises PermissionError
    when a capability is left (checked in /proc/self/status), OSError/KeyError on failure.
    """
    import ctypes
    import pwd

    if os.geteuid() == 0:
        pw = pwd.getpwnam(user)
        os.initgroups(pw.pw_name, pw.pw_gid)
        os.setresgid(pw.pw_gid, pw.pw_gid, pw.pw_gid)
        os.setresuid(pw.pw_uid, pw.pw_uid, pw.pw_uid)
    libc = ctypes.CDLL(None, use_errno=True)
    # capset(2) with _LINUX_CAPABILITY_VERSION_3: header {version, pid}, two zeroed data structs
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)
    data = (ctypes.c_uint32 * 6)()
    if libc.capset(header, data) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")
    libc.prctl(47, 4, 0, 0, 0)  # PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL
    libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS
    if effective_caps(os.getpid()) != 0 or os.geteuid() == 0:
        raise PermissionError("capabilities are still held after dropping privileges")


def effective_caps(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
