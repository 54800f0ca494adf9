"""A user-space Ethernet bridge between two interfaces that impairs chosen ESP packets and logs it.

The kernel here has no netem, so duplication, corruption and reordering on the path are done by
this process in the middle namespace (tests/netns_peers.py RoutedPair, mode "bridge"). It copies
every frame between ``lan`` and ``wan`` unchanged, except ESP-in-UDP packets (UDP port 4500 with
a non-zero first payload word, RFC 3948 §2.2) going lan -> wan whose position among those
packets is named on the command line:

    --dup N        send the N-th one twice
    --corrupt N    flip one ciphertext byte of the N-th one (its ICV then fails at the receiver)
    --reorder N    hold the N-th one and send it after the next one
    --drop-ike-frag N  drop the N-th IKEv1 Fragment message (ISAKMP next payload 132, UDP 500
                   or 4500 behind the non-ESP marker) going lan -> wan: a path losing one of a
                   big message's pieces (tests/data/ikev1-frag)

``--control FILE`` impairs by policy instead, changed while it runs (a field walkthrough: the
engineer watches the analyser while the path misbehaves). The file holds one JSON object, re-read
whenever its mtime changes; every key is optional and applies to ESP-in-UDP packets in the named
directions ("lan>wan", "wan>lan")::

    {"drop": ["wan>lan"], "corrupt": ["lan>wan"], "dup": [], "delay_ms": 0}

``drop``/``corrupt``/``dup`` act on every such packet; ``delay_ms`` holds every frame (any kind,
both ways) that long. ``"drop_frag": ["lan>wan"], "drop_frag_every": N`` drops the non-first
fragments (offset > 0) of every N-th fragmented IPv4 datagram in the named directions (N = 1:
all of them), as a path that loses or filters later fragments does (RFC 4459 §2: one lost
fragment loses the whole packet); the first fragment passes, so the receiver holds a datagram
that never completes. Each dropped fragment is logged (``drop_fragment``: IP ID, offset, length,
and the ESP SPI/sequence number its first fragment carried when it was ESP in UDP). A frame bigger than the out interface's MTU (``ip link set wan mtu 1280``)
cannot be sent: it is dropped as a switch with a smaller MTU would, silently (no ICMP: a bridge
has no address; a PMTU black hole) and logged as ``too_big``. Each policy change is logged too.

Each action is one JSON line in ``--log`` (the ground truth of samples/path-impairments): the
action, the ESP packet's position, SPI and sequence number, the byte flipped, and a SHA-256 of
every frame sent for it. UDP checksums are recomputed for every UDP/IPv4 frame: the peers' veths
hand over frames with a partial (offloaded) checksum, which the far side would otherwise drop.

Usage: bridge.py --log FILE [--dup N] [--corrupt N] [--reorder N] [--control FILE] [--lan lan] [--wan wan]
Stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import json
import os
import select
import signal
import socket
import struct
import sys
import time

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def fix_udp_checksum(frame: bytearray) -> None:
    """Recompute the UDP checksum of an Ethernet/IPv4/UDP frame in place (RFC 768)."""
    if len(frame) < 42 or frame[12:14] != b"\x08\x00" or frame[23] != 17:
        return
    ihl = (frame[14] & 0x0F) * 4
    if (struct.unpack_from("!H", frame, 20)[0] & 0x3FFF) != 0:  # a fragment: leave it alone
        return
    udp = 14 + ihl
    ulen = struct.unpack_from("!H", frame, udp + 4)[0]
    if udp + ulen > len(frame) or ulen < 8:
        return
    struct.pack_into("!H", frame, udp + 6, 0)
    pseudo = bytes(frame[26:34]) + struct.pack("!BBH", 0, 17, ulen)
    c = _csum(pseudo + bytes(frame[udp:udp + ulen])) or 0xFFFF
    struct.pack_into("!H", frame, udp + 6, c)


def esp_in_udp(frame: bytes) -> tuple[int, int, int] | None:
    """(offset of the ESP header, SPI, sequence number) for an ESP-in-UDP/IPv4 frame."""
    if len(frame) < 14 + 20 + 8 + 8 or frame[12:14] != b"\x08\x00" or frame[23] != 17:
        return None
    ihl = (frame[14] & 0x0F) * 4
    udp = 14 + ihl
    sport, dport = struct.unpack_from("!HH", frame, udp)
    if 4500 not in (sport, dport):
        return None
    spi, seq = struct.unpack_from("!II", frame, udp + 8)
    if spi == 0:  # non-ESP marker: IKE
        return None
    return udp + 8, spi, seq


def ikev1_fragment(frame: bytes) -> bool:
    """True for an IKEv1 message whose first payload is a Fragment (type 132, Cisco/strongSwan)."""
    if len(frame) < 14 + 20 + 8 + 28 or frame[12:14] != b"\x08\x00" or frame[23] != 17:
        return False
    udp = 14 + (frame[14] & 0x0F) * 4
    sport, dport = struct.unpack_from("!HH", frame, udp)
    ike = udp + 8
    if 4500 in (sport, dport):
        if frame[ike:ike + 4] != b"\0\0\0\0":
            return False
        ike += 4
    elif 500 not in (sport, dport):
        return False
    return len(frame) >= ike + 28 and frame[ike + 16] == 132 and frame[ike + 17] >> 4 == 1


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--log", required=True)
    ap.add_argument("--lan", default="lan")
    ap.add_argument("--wan", default="wan")
    ap.add_argument("--dup", type=int, action="append", default=[])
    ap.add_argument("--corrupt", type=int, action="append", default=[])
    ap.add_argument("--reorder", type=int, action="append", default=[])
    ap.add_argument("--control", help="JSON policy file re-read when it changes (see above)")
    ap.add_argument("--drop-ike-frag", type=int, action="append", default=[])
    args = ap.parse_args(argv)

    socks = {}
    for name in (args.lan, args.wan):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        s.bind((name, 0))
        socks[name] = s
    other = {args.lan: socks[args.wan], args.wan: socks[args.lan]}
    log = open(args.log, "w", buffering=1)  # noqa: SIM115 - open for the process's life
    log.write("# " + json.dumps({"bridge": f"{args.lan}<->{args.wan}", "dup": args.dup,
                                 "corrupt": args.corrupt, "reorder": args.reorder,
                                 "drop_ike_frag": args.drop_ike_frag}) + "\n")

    running = True

    def stop(_sig: int, _frame: object) -> None:
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    n = 0                      # ESP packets seen lan -> wan
    nfrag = 0                  # IKEv1 Fragment messages seen lan -> wan
    held: tuple[dict, bytearray] | None = None
    by_fd = {s.fileno(): name for name, s in socks.items()}
    policy: dict = {}
    policy_mtime = 0.0
    delayed: list[tuple[float, socket.socket, bytearray]] = []   # (due, out socket, frame)
    esp_n = {f"{args.lan}>{args.wan}": 0, f"{args.wan}>{args.lan}": 0}
    frag_n = {f"{args.lan}>{args.wan}": 0, f"{args.wan}>{args.lan}": 0}  # fragmented datagrams seen
    # (direction, src, dst, IP ID) -> (its number among fragmented datagrams, what its first fragment held)
    frag_seen: dict[tuple, tuple[int, dict]] = {}

    def record(entry: dict, *frames: bytes) -> None:
        entry["time"] = round(time.time(), 6)
        entry["sha256"] = [hashlib.sha256(f).hexdigest()[:16] for f in frames]
        log.write(json.dumps(entry) + "\n")

    def send(out: socket.socket, frame: bytearray, direction: str) -> None:
        delay = policy.get("delay_ms", 0) / 1000.0
        if delay > 0:
            delayed.append((time.monotonic() + delay, out, frame))
            return
        transmit(out, frame, direction)

    def transmit(out: socket.socket, frame: bytearray, direction: str) -> None:
        try:
            out.send(frame)
        except OSError as e:
            if e.errno != errno.EMSGSIZE:
                raise
            # Bigger than the out link's MTU: lost on the wire, nobody told (L2 has no ICMP).
            esp = esp_in_udp(frame)
            record({"action": "too_big", "dir": direction, "length": len(frame) - 14,
                    **({"spi": f"0x{esp[1]:08x}", "seq": esp[2]} if esp else {})}, bytes(frame))

    def drop_fragment(frame: bytearray, direction: str) -> bool:
        """Note an IPv4 fragment; True (logged) when it is a non-first one to drop (drop_frag)."""
        if len(frame) < 34 or frame[12:14] != b"\x08\x00":
            return False
        ff = struct.unpack_from("!H", frame, 20)[0]
        offset, more = (ff & 0x1FFF) * 8, bool(ff & 0x2000)
        if not offset and not more:
            return False
        key = (direction, bytes(frame[26:30]), bytes(frame[30:34]), struct.unpack_from("!H", frame, 18)[0])
        if key not in frag_seen:
            frag_n[direction] += 1
            first: dict = {}
            esp = esp_in_udp(frame) if not offset else None
            if esp is not None:
                first = {"spi": f"0x{esp[1]:08x}", "seq": esp[2]}
            frag_seen[key] = (frag_n[direction], first)
            if len(frag_seen) > 4096:
                del frag_seen[next(iter(frag_seen))]
        number, first = frag_seen[key]
        if not offset or number % max(1, int(policy.get("drop_frag_every", 1))):
            return False
        ihl = (frame[14] & 0x0F) * 4
        record({"action": "drop_fragment", "dir": direction, "datagram_index": number,
                "src": socket.inet_ntoa(key[1]), "dst": socket.inet_ntoa(key[2]), "ip_id": key[3],
                "offset": offset, "length": struct.unpack_from("!H", frame, 16)[0] - ihl, "more": more,
                **first}, bytes(frame))
        return True

    def reload_policy() -> None:
        nonlocal policy, policy_mtime
        try:
            mtime = os.stat(args.control).st_mtime
        except FileNotFoundError:
            mtime = 0.0
        if mtime == policy_mtime:
            return
        policy_mtime = mtime
        try:
            with open(args.control) as f:
                policy = json.load(f) if mtime else {}
        except (OSError, ValueError) as e:
            log.write("# policy unreadable: " + str(e) + "\n")
            return
        log.write(json.dumps({"policy": policy, "time": round(time.time(), 6)}) + "\n")

    while running:
        if args.control:
            reload_policy()
        now = time.monotonic()
        while delayed and delayed[0][0] <= now:
            _due, out_s, fr = delayed.pop(0)
            transmit(out_s, fr, "delayed")
        wait = 0.2 if not delayed else max(0.0, min(0.2, delayed[0][0] - now))
        try:
            ready, _, _ = select.select(list(by_fd), [], [], wait)
        except InterruptedError:
            continue
        for fd in ready:
            name = by_fd[fd]
            data, addr = socks[name].recvfrom(65535)
            if addr[2] == PACKET_OUTGOING:  # our own transmissions on this interface
                continue
            frame = bytearray(data)
            out = other[name]
            direction = f"{name}>{args.wan if name == args.lan else args.lan}"
            if name == args.lan and ikev1_fragment(frame):
                nfrag += 1
                if nfrag in args.drop_ike_frag:
                    record({"ike_fragment_index": nfrag, "action": "drop", "dir": f"{args.lan}>{args.wan}"},
                           bytes(frame))
                    continue
            if policy.get("drop_frag") and direction in policy["drop_frag"] and drop_fragment(frame, direction):
                continue
            esp_any = esp_in_udp(frame)
            if esp_any is not None and policy:
                esp_n[direction] += 1
                off, spi, seq = esp_any
                entry = {"esp_index": esp_n[direction], "spi": f"0x{spi:08x}", "seq": seq,
                         "dir": direction}
                if direction in policy.get("drop", ()):
                    record({**entry, "action": "drop"})
                    continue
                if direction in policy.get("corrupt", ()):
                    pos = off + 8 + (len(frame) - off - 8) // 2
                    frame[pos] ^= 0xFF
                    entry.update(action="corrupt", byte_offset_in_esp=pos - off)
                fix_udp_checksum(frame)
                send(out, frame, direction)
                if direction in policy.get("dup", ()):
                    send(out, frame, direction)
                    entry["action"] = "dup"
                if "action" in entry:
                    record(entry, bytes(frame))
                continue
            esp = esp_any if name == args.lan else None
            if esp is None:
                fix_udp_checksum(frame)
                send(out, frame, direction)
                continue
            n += 1
            off, spi, seq = esp
            entry = {"esp_index": n, "spi": f"0x{spi:08x}", "seq": seq, "dir": f"{args.lan}>{args.wan}"}
            if n in args.corrupt:
                # A byte in the middle of the ciphertext (past SPI, sequence number and IV).
                pos = off + 8 + (len(frame) - off - 8) // 2
                frame[pos] ^= 0xFF
                entry.update(action="corrupt", byte_offset_in_esp=pos - off)
            fix_udp_checksum(frame)
            if n in args.reorder:
                entry["action"] = "reorder"
                held = (entry, frame)
                continue
            send(out, frame, direction)
            if n in args.dup:
                send(out, frame, direction)
                entry["action"] = "dup"
                record(entry, bytes(frame), bytes(frame))
            elif "action" in entry:
                record(entry, bytes(frame))
            if held is not None:
                h_entry, h_frame = held
                send(out, h_frame, direction)
                h_entry["sent_after_seq"] = seq
                record(h_entry, bytes(h_frame))
                held = None
    if held is not None:  # never followed: send it now rather than lose it
        other[args.lan].send(held[1])
        record(held[0], bytes(held[1]))
    log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
