"""Deep dissection (ipsecscope.dissect): tshark's protocol tree through pyshark, scapy as the fallback.

Data: decrypted inner packets of the strongSwan samples (keys from their charon logs) and plain frames
of the same captures. Oracle: ``tshark -V`` on the same bytes (a one-packet pcap, LINKTYPE_RAW for an
inner packet) or on the capture itself (``-Y frame.number == N``) for a frame as captured.
"""

from __future__ import annotations

import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import IPSECSCOPE, SAMPLES, needs_tshark, workers_done
from test_tui import SIZE, loaded, sync, tree_labels
from textual.widgets import Tree

from ipsecscope import dissect
from ipsecscope.outfile import write_private
from ipsecscope.session import Session
from ipsecscope.tui.app import create_app
from ipsecscope.tui.widgets.packet_detail import HexView
from ipsecscope.tui.widgets.packet_table import PacketTable

# (sample, key files): keys from the charon logs, as a user would give them.
SAMPLE_KEYS = [
    ("healthy-gcm", ["charon-left.log"]),
    ("cbc-sha2-pfs", ["charon-left.log"]),
    ("nat-napt", ["charon-right.log"]),
    ("mtu-small-link", ["charon-left.log"]),
]


def _session(sample: str, keys: list[str]) -> Session:
    d = SAMPLES / sample
    return Session.from_files([str(d / "capture.pcapng")], [str(d / k) for k in keys])


def _decrypted(session: Session, limit: int = 4) -> list:
    """Details of up to ``limit`` decrypted ESP frames, spread over the SPIs (both directions)."""
    out, per_spi = [], {}
    for row in session.rows:
        if row.kind == "ESP" and row.status == "decrypted" and per_spi.get(row.spi, 0) < 2:
            detail = session.detail(row.frame)
            if detail is not None and detail.inner:
                per_spi[row.spi] = per_spi.get(row.spi, 0) + 1
                out.append(detail)
        if len(out) >= limit:
            break
    return out


def _pcap(path: Path, data: bytes, linktype: int) -> Path:
    # Cleartext: 0600 from the first byte (outfile), removed with tmp_path.
    write_private(path, struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, linktype)
                  + struct.pack("<IIII", 0, 0, len(data), len(data)) + data)
    assert path.stat().st_mode & 0o777 == 0o600
    return path


def _tshark_v(*args: str, env_keys: Path | None = None) -> list[str]:
    """``tshark -V`` lines of the protocols after the frame: generated fields lose tshark's
    [brackets] (PDML does not mark them), data hex dumps and blank lines go."""
    env = {**os.environ, "WIRESHARK_CONFIG_DIR": str(env_keys)} if env_keys else None
    out = subprocess.run(["tshark", "-n", "-V", *args], check=True, capture_output=True, text=True, env=env).stdout
    lines, in_frame = [], False
    for line in out.splitlines():
        if line.startswith("Frame "):
            in_frame = True
            continue
        if in_frame and line.startswith(" "):
            continue
        in_frame = False
        if not line.strip() or re.match(r"^[0-9a-f]{4}  ", line):
            continue
        lines.append(_unbracket(line))
    return lines


def _unbracket(line: str) -> str:
    body = line.lstrip(" ")
    if body.startswith("[") and body.endswith("]"):
        body = body[1:-1]
    return line[:len(line) - len(line.lstrip(" "))] + body


def _ours(layers: list[dissect.Node]) -> list[str]:
    return [_unbracket(x) for x in dissect.format_tree([n for n in layers if n.name != "frame"]).splitlines()]


@needs_tshark
@pytest.mark.parametrize("sample,keys", SAMPLE_KEYS, ids=[s for s, _ in SAMPLE_KEYS])
def test_inner_packet_tree_is_tshark_v(sample: str, keys: list[str], tmp_path: Path) -> None:
    session = _session(sample, keys)
    details = _decrypted(session)
    assert details, f"{sample}: nothing decrypted with {keys}"
    targets = [dissect.target(d) for d in details]
    assert all(t is not None and t[1] == 101 and t[2] == "inner" for t in targets)
    for i, (detail, (data, linktype, _)) in enumerate(zip(details, targets, strict=True)):
        layers = dissect.dissect(data, linktype)  # the one packet alone, as the TUI asks for it
        ref = _tshark_v("-r", str(_pcap(tmp_path / f"{i}.pcap", data, linktype)))
        assert _ours(layers) == ref, f"{sample} frame {detail.row.frame}"
        # A few fields by name, against tshark's own field output on the same file.
        names = ["ip.src", "ip.dst", "ip.proto", "icmp.type", "tcp.srcport", "tcp.dstport", "udp.dstport"]
        want = subprocess.run(["tshark", "-n", "-r", str(tmp_path / f"{i}.pcap"), "-T", "fields",
                               *[a for n in names for a in ("-e", n)]],
                              check=True, capture_output=True, text=True).stdout.rstrip("\n").split("\t")
        top = dissect.Node("", layers)
        for name, value in zip(names, want, strict=True):
            node = top.find(name)
            assert (node.show if node else "") == value, f"{sample} frame {detail.row.frame} {name}"
        assert [n.name for n in layers if n.name != "frame"][:2] == ["raw", "ip"]


@needs_tshark
def test_frame_tree_is_tshark_v_of_the_same_bytes(tmp_path: Path) -> None:
    # Frames as captured (IKE, and ESP without keys), dissected alone: tshark -V of the same record.
    session = _session("healthy-gcm", [])
    frames = [r.frame for r in session.rows if r.kind == "IKE"][:2] + [
        next(r.frame for r in session.rows if r.kind == "ESP")]
    for frame in frames:
        detail = session.detail(frame)
        data, linktype, what = dissect.target(detail)
        assert what == "frame" and linktype == 1
        layers = dissect.dissect(data, linktype, ts=detail.row.ts)
        assert _ours(layers) == _tshark_v("-r", str(_pcap(tmp_path / f"{frame}.pcap", data, linktype)))
        assert layers[0].name == "frame" and layers[1].name == "eth"


def _split_v(text: str, quotes: dict[int, list[str]] | None = None) -> dict[int, list[str]]:
    """``packets -V`` output: frame -> its tree lines (dedented by the 4 spaces -V adds). The lines
    ipsecscope prints above the tree of an ICMP error quoting ESP or AH (heading "Quoted ESP/AH",
    then lines indented 6) go to ``quotes`` instead."""
    trees: dict[int, list[str]] = {}
    current: list[str] = []
    quoted = False
    for line in text.splitlines():
        if re.match(r"^ *\d+ +-?\d+\.\d{6} ", line):  # "     5   0.095057  198.18.0.1:4500 → ..."
            frame = int(line.split()[0])
            current = trees.setdefault(frame, [])
            quoted = False
        elif line.startswith(("    Quoted ESP ", "    Quoted AH ")) and not current:
            quoted = True
            (quotes if quotes is not None else {}).setdefault(frame, []).append(line.strip())
        elif quoted and line.startswith("      "):
            (quotes if quotes is not None else {}).setdefault(frame, []).append(line.strip())
        elif line.strip():
            quoted = False
            current.append(_unbracket(line[4:]))
    return trees


@needs_tshark
@pytest.mark.parametrize("sample,keys", SAMPLE_KEYS, ids=[s for s, _ in SAMPLE_KEYS])
def test_packets_v_is_tsharks_own_decryption(sample: str, keys: list[str]) -> None:
    # Oracle: tshark decrypting the capture itself with the sample's keys (esp_sa UAT): its layers
    # after "Encapsulating Security Payload" are the inner packet's, with the capture's frame numbers
    # in cross-packet fields ("Request frame: 5").
    d = SAMPLES / sample
    run = subprocess.run([*IPSECSCOPE, "packets", str(d / "capture.pcapng"), "-k", *[str(d / k) for k in keys],
                          "-Y", "esp && icmp", "-V"], capture_output=True, text=True)
    assert run.returncode == 0 and not run.stderr, run.stderr
    quotes: dict[int, list[str]] = {}
    _same_as_tsharks_decryption(_split_v(run.stdout, quotes), d / "capture.pcapng", d / "keys", sample)
    for frame, lines in quotes.items():  # a quoted ESP's size and next-hop MTU: tshark's fields
        ref = [x.strip() for x in _tshark_v("-r", str(d / "capture.pcapng"), "-Y", f"frame.number == {frame}")]
        for line in lines:
            m = re.fullmatch(r"too big: (\d+) bytes > next-hop MTU (\d+)", line)
            if m:
                assert f"MTU of next hop: {m[2]}" in ref and f"Total Length: {m[1]}" in ref, (sample, frame, lines)
    if sample == "mtu-small-link":
        assert any(ln.startswith("too big: ") for q in quotes.values() for ln in q), quotes


def _same_as_tsharks_decryption(ours: dict[int, list[str]], capture: Path, keys_dir: Path, label: str) -> None:
    assert ours
    for frame, lines in ours.items():
        ref = _tshark_v("-r", str(capture), "-o", "esp.enable_encryption_decode:TRUE",
                        "-Y", f"frame.number == {frame}", env_keys=keys_dir)
        esp = ref.index("Encapsulating Security Payload")
        if lines[0] != "Raw packet data":
            # Not decrypted by us: the frame itself (mtu-small-link's ICMP error quoting ESP), the
            # same up to the quoted ESP, which tshark decrypts as far as it goes and we do not.
            assert lines[:esp] == ref[:esp], f"{label} frame {frame}"
            continue
        inner = esp + 1 + next(i for i, x in enumerate(ref[esp + 1:]) if not x.startswith(" "))
        assert lines[1:] == ref[inner:], f"{label} frame {frame}"


@needs_tshark
def test_spans_are_the_bytes_of_each_field() -> None:
    detail = _decrypted(_session("healthy-gcm", ["charon-left.log"]), 1)[0]
    top = dissect.Node("", dissect.dissect(detail.inner, 101))
    src = top.find("ip.src")
    assert detail.inner[src.span[0]:src.span[1]] == bytes(int(x) for x in src.show.split("."))
    icmp = top.find("icmp")
    assert icmp.span == (20, len(detail.inner))


def _path_without_tshark(tmp_path: Path) -> str:
    # Only the interpreter's directory: no tshark on PATH (pyshark searches PATH alone on Linux).
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "python").symlink_to(sys.executable)
    return str(bindir)


def test_missing_tshark_is_a_one_line_error_and_scapy_dissects(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", _path_without_tshark(tmp_path))
    assert not dissect.available()
    detail = _decrypted(_session("healthy-gcm", ["charon-left.log"]), 1)[0]
    with pytest.raises(dissect.TsharkNotFound) as exc:
        dissect.dissect(detail.inner, 101)
    assert "\n" not in str(exc.value) and "tshark" in str(exc.value)
    layers = dissect.scapy_layers(detail.inner, 101)
    assert [n.name for n in layers][:2] == ["IP", "ICMP"]
    assert "type: echo-request" in [c.label for c in layers[1].children]


def _failing_tshark(tmp_path: Path) -> Path:
    """A bin directory whose tshark is the real one with a preference it does not know: it fails on
    its own, with its own message."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    real = subprocess.run(["sh", "-c", "command -v tshark"], capture_output=True, text=True).stdout.strip()
    fake = bindir / "tshark"
    fake.write_text(f"#!/bin/sh\nexec {real} -o no.such.preference:1 \"$@\"\n")
    fake.chmod(0o755)
    return bindir


@needs_tshark
def test_failing_and_slow_tshark_are_one_line_errors(tmp_path: Path, monkeypatch) -> None:
    bindir = _failing_tshark(tmp_path)
    fake = bindir / "tshark"
    monkeypatch.setenv("PATH", str(bindir))
    detail = _decrypted(_session("healthy-gcm", ["charon-left.log"]), 1)[0]
    with pytest.raises(dissect.DissectError) as exc:
        dissect.dissect(detail.inner, 101)
    assert "\n" not in str(exc.value) and "tshark" in str(exc.value)
    # A tshark that never answers: the timeout ends it (and the process is killed, not left behind).
    fake.write_text("#!/bin/sh\nexec /bin/sleep 60\n")
    with pytest.raises(dissect.DissectError, match="longer than 0.5 s"):
        dissect.dissect(detail.inner, 101, timeout=0.5)


def _nodes(node):
    for c in node.children:
        yield c
        yield from _nodes(c)


def _healthy_app():
    sample = SAMPLES / "healthy-gcm"
    return create_app(sample / "capture.pcapng", [sample / "charon-left.log"])


async def _settle(pilot) -> None:
    await pilot.pause()
    await workers_done(pilot.app)
    await pilot.pause()


async def _to_decrypted_esp(pilot) -> PacketTable:
    """Load, focus the packet list and move down to the first decrypted ESP frame."""
    await loaded(pilot)
    table = pilot.app.query_one(PacketTable)
    table.focus()
    while table.current_row.kind != "ESP" or table.current_row.status != "decrypted":
        await pilot.press("down")
    return table


@needs_tshark
@sync
async def test_tui_detail_shows_tsharks_tree_of_the_inner_packet() -> None:
    app = _healthy_app()
    async with app.run_test(size=SIZE) as pilot:
        table = await _to_decrypted_esp(pilot)
        await _settle(pilot)
        labels = tree_labels(app.query_one("#detail-tree", Tree))
        assert "Internet Control Message Protocol" in labels
        assert "Type: 8 (Echo (ping) request)" in labels or "Type: 0 (Echo (ping) reply)" in labels
        assert any(x.startswith("Internet Protocol Version 4, Src: 10.") for x in labels)
        assert not any("dissecting with tshark" in x for x in labels)
        # x: the hex view shows the decrypted bytes; choosing a line of tshark's tree marks its bytes.
        await pilot.press("x")
        await _settle(pilot)
        tree = app.query_one("#detail-tree", Tree)
        node = next(n for n in _nodes(tree.root) if str(n.label).startswith("Type: "))
        tree.move_cursor(node)
        await pilot.pause()
        hexv = app.query_one(HexView)
        assert hexv.data == app.session.detail(table.current_row.frame).inner
        assert hexv.highlight == (20, 21) and hexv.highlighted_bytes() in (b"\x08", b"\x00")
        # Back to an IKE frame: tshark's tree of the frame itself, under ipsecscope's own decode.
        await pilot.press("home")
        await _settle(pilot)
        labels = tree_labels(app.query_one("#detail-tree", Tree))
        assert "Wireshark dissection" in labels
        assert "Internet Security Association and Key Management Protocol" in labels


@sync
async def test_tui_detail_falls_back_to_scapy_without_tshark(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", _path_without_tshark(tmp_path))
    app = _healthy_app()
    async with app.run_test(size=SIZE) as pilot:
        await _to_decrypted_esp(pilot)
        await pilot.pause()
        labels = tree_labels(app.query_one("#detail-tree", Tree))
        assert any(x.startswith("tshark not found") for x in labels)
        assert "ICMP" in labels and ("type: echo-request" in labels or "type: echo-reply" in labels)


def test_packets_v_without_tshark_prints_scapys_tree(tmp_path: Path) -> None:
    sample = SAMPLES / "healthy-gcm"
    run = subprocess.run([*IPSECSCOPE, "packets", str(sample / "capture.pcapng"), "-k", str(sample / "charon-left.log"),
                          "-Y", "icmp.type == 8", "-V", "-c", "1"], capture_output=True, text=True,
                         env={**os.environ, "PATH": _path_without_tshark(tmp_path)})
    assert run.returncode == 0, run.stderr
    assert run.stderr.count("\n") == 1 and "tshark not found" in run.stderr and "scapy" in run.stderr
    assert "\n    ICMP\n        type: echo-request\n" in run.stdout


@needs_tshark
def test_packets_v_prints_tsharks_tree_per_frame(tmp_path: Path) -> None:
    sample = SAMPLES / "healthy-gcm"
    out = subprocess.run([*IPSECSCOPE, "packets", str(sample / "capture.pcapng"), "-k", str(sample / "charon-left.log"),
                          "-Y", "icmp.type == 8", "-V"], check=True, capture_output=True, text=True,
                         env={**os.environ, "TMPDIR": str(tmp_path)}).stdout
    assert list(tmp_path.iterdir()) == []  # the decrypted copy tshark read is gone
    frames = subprocess.run(["tshark", "-r", str(sample / "capture.pcapng"), "-o", "esp.enable_encryption_decode:TRUE",
                             "-Y", "icmp.type == 8", "-T", "fields", "-e", "frame.number"],
                            env={**os.environ, "WIRESHARK_CONFIG_DIR": str(sample / "keys")},
                            check=True, capture_output=True, text=True).stdout.split()
    assert frames
    assert out.count("\n    Internet Control Message Protocol\n") == len(frames)
    assert out.count("        Type: 8 (Echo (ping) request)\n") == len(frames)


@needs_tshark
@sync
async def test_tui_hidden_detail_waits_for_its_tab() -> None:
    # dead-peer opens on Findings (it has an error): no tshark for the hidden packet detail until
    # the Packets tab shows it.
    app = create_app(SAMPLES / "dead-peer" / "capture.pcapng")
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        assert app.query_one("TabbedContent").active == "findings"
        labels = tree_labels(app.query_one("#detail-tree", Tree))
        assert "dissecting with tshark…" in labels
        await pilot.press("2")
        await _settle(pilot)
        labels = tree_labels(app.query_one("#detail-tree", Tree))
        assert "Internet Security Association and Key Management Protocol" in labels
        assert "dissecting with tshark…" not in labels


SYN = SAMPLES / "synthetic"


@needs_tshark
def test_transport_mode_payload_is_tsharks_own_decryption(tmp_path: Path) -> None:
    # Transport mode (RFC 4303 §3.1.1): the payload is no IP datagram; it is dissected behind the IP
    # header decrypt rebuilds from the outer addresses. Oracle: tshark decrypting the capture with
    # the same esp_sa table, whose layers after ESP are the payload's (TCP/UDP/ICMPv6 here).
    cap, esp_sa = SYN / "ipv6-transport-natt.pcap", SYN / "ipv6-transport-natt.esp_sa"
    prof = tmp_path / "profile"
    prof.mkdir()
    (prof / "esp_sa").write_text(esp_sa.read_text())
    session = Session.from_files([str(cap)], [str(esp_sa)])
    details = [session.detail(r.frame) for r in session.rows if r.kind == "ESP" and r.status == "decrypted"]
    transport = [(d, dissect.target(d)) for d in details if dissect.target(d)[2] == "transport"]
    assert len(transport) >= 3
    run = subprocess.run([*IPSECSCOPE, "packets", str(cap), "-k", str(esp_sa), "-V", "-Y",
                          "frame.number in {" + ", ".join(str(d.row.frame) for d, _ in transport) + "}"],
                         capture_output=True, text=True)
    assert run.returncode == 0 and not run.stderr, run.stderr
    cli = _split_v(run.stdout)
    names = ["tcp.srcport", "tcp.dstport", "tcp.seq_raw", "tcp.flags", "udp.srcport", "udp.dstport", "udp.length",
             "icmpv6.type", "icmpv6.echo.sequence_number"]
    for detail, (data, linktype, _) in transport:
        frame = detail.row.frame
        ref = _tshark_v("-r", str(cap), "-o", "esp.enable_encryption_decode:TRUE", "-Y", f"frame.number == {frame}",
                        env_keys=prof)
        esp = ref.index("Encapsulating Security Payload")
        payload = ref[esp + 1 + next(i for i, x in enumerate(ref[esp + 1:]) if not x.startswith(" ")):]
        # packets -V (one tshark run over the decrypted capture): line for line what tshark shows.
        lines = cli[frame]
        assert lines[0] == "Raw packet data" and lines[1].startswith("Internet Protocol Version")
        after_ip = 2 + next(i for i, x in enumerate(lines[2:]) if not x.startswith(" "))
        assert lines[after_ip:] == payload, f"frame {frame}"
        # The TUI's way (the packet alone, relative TCP numbers off): the same protocols, and the same
        # values for every field that does not depend on other packets.
        layers = dissect.dissect(data, linktype)
        assert [n.label.split(",")[0] for n in layers if n.name not in ("frame", "raw")][1:] == \
            [x.split(",")[0] for x in payload if not x.startswith(" ")], f"frame {frame}"
        want = subprocess.run(["tshark", "-n", "-r", str(cap), "-o", "esp.enable_encryption_decode:TRUE",
                               "-Y", f"frame.number == {frame}", "-T", "fields", "-E", "occurrence=l",
                               *[a for n in names for a in ("-e", n)]],
                              env={**os.environ, "WIRESHARK_CONFIG_DIR": str(prof)},
                              check=True, capture_output=True, text=True).stdout.rstrip("\n").split("\t")
        top = dissect.Node("", layers)
        for name, value in zip(names, want, strict=True):
            # Relative numbers off: the packet's tcp.seq is the capture's tcp.seq_raw.
            node = top.find("tcp.seq" if name == "tcp.seq_raw" else name)
            assert (node.show if node else "") == value, f"frame {frame} {name}"


def _tshark_children() -> list[str]:
    """Processes (zombies too) whose parent is this test process and whose name is tshark."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name, rest = text[text.index("(") + 1:text.rindex(")")], text[text.rindex(")") + 2:].split()
        if name == "tshark" and int(rest[1]) == os.getpid():
            found.append(f"{stat.parent.name} {rest[0]}")
    return found


@needs_tshark
@sync
async def test_tui_moving_on_cancels_the_dissection_and_kills_tshark() -> None:
    app = _healthy_app()
    async with app.run_test(size=SIZE) as pilot:
        table = await _to_decrypted_esp(pilot)
        for _ in range(12):  # on through the ESP frames without waiting for any tree
            await pilot.press("down")
        await _settle(pilot)
        assert _tshark_children() == []  # every run ended: finished, or killed when the cursor moved
        labels = tree_labels(app.query_one("#detail-tree", Tree))
        frame = table.current_row.frame
        assert f"Frame {frame}: {table.current_row.length} bytes, {table.current_row.kind}" in labels
        assert not any("dissecting with tshark" in x for x in labels)
        # The tree on screen is the current frame's: the same as dissecting that frame now.
        detail = app.session.detail(frame)
        data, linktype, _ = dissect.target(detail)
        want = [n.label for n in await dissect.dissect_async(data, linktype, ts=detail.row.ts) if n.name != "frame"]
        assert all(label in labels for label in want)


def _trees_in_order(text: str) -> list[tuple[int, list[str]]]:
    """``packets -V`` output as (frame, tree lines) in the order printed (several captures repeat numbers)."""
    out: list[tuple[int, list[str]]] = []
    for line in text.splitlines():
        if re.match(r"^ *\d+ +-?\d+\.\d{6} ", line):
            out.append((int(line.split()[0]), []))
        elif line.strip():
            out[-1][1].append(line)
    return out


def _packets_v(*args: str, stdin: Path | None = None) -> str:
    with open(stdin, "rb") if stdin else open(os.devnull, "rb") as f:
        run = subprocess.run([*IPSECSCOPE, "packets", *args, "-V"], stdin=f, capture_output=True, text=True)
    assert run.returncode == 0 and not run.stderr, run.stderr
    return run.stdout


@needs_tshark
def test_packets_v_over_stdin_is_the_same_tshark_tree(tmp_path: Path) -> None:
    # stdin is read once: the trees come from the frames the session kept, written into a pipe tshark
    # reads (pcapng, one interface per link type); the file's trees (tshark's own decryption, above)
    # are the oracle, cross-packet fields ("Request frame: 5") included. Nothing is written to TMPDIR.
    d = SAMPLES / "healthy-gcm"
    cap, keys = d / "capture.pcapng", str(d / "charon-left.log")
    env_tmp = {**os.environ, "TMPDIR": str(tmp_path)}
    piped = subprocess.run([*IPSECSCOPE, "packets", "-", "-k", keys, "-V"], stdin=cap.open("rb"),
                           capture_output=True, text=True, env=env_tmp)
    assert piped.returncode == 0 and not piped.stderr, piped.stderr
    assert list(tmp_path.iterdir()) == []
    trees = _trees_in_order(piped.stdout)
    assert [f for f, _ in trees] == list(range(1, 35))
    assert piped.stdout == _packets_v(str(cap), "-k", keys)
    assert any("Request frame: 5" in line for _, lines in trees for line in lines)
    # and against tshark -V of the capture for a frame as captured (IKE_SA_INIT)
    assert [_unbracket(x[4:]) for x in trees[0][1]] == _tshark_v("-r", str(cap), "-Y", "frame.number == 1")


@needs_tshark
def test_packets_v_over_several_captures_is_tsharks_own_decryption_of_them_joined(tmp_path: Path) -> None:
    # The session numbers several captures on from one to the next (mergecap -a); -V gives tshark
    # each capture's decrypted frames in turn through one pipe, so the frame numbers and the
    # cross-packet fields ("Request frame: 39") are those of tshark reading the captures joined,
    # with both samples' keys. The second capture's frames, one of them read from stdin.
    names = ["healthy-gcm", "cbc-sha2-pfs"]
    caps = [SAMPLES / n / "capture.pcapng" for n in names]
    keys = [str(SAMPLES / n / "charon-left.log") for n in names]
    joined = tmp_path / "joined.pcapng"  # encrypted, as captured: no cleartext in the test's files
    joined.write_bytes(b"".join(c.read_bytes() for c in caps))
    conf = tmp_path / "conf"
    conf.mkdir()
    for table in ("esp_sa", "ikev2_decryption_table"):
        (conf / table).write_text("".join((SAMPLES / n / "keys" / table).read_text() for n in names))
    first = len(_split_v(_packets_v(str(caps[0]), "-k", *keys)))  # frames of the first capture
    assert first == 34
    flt = f"esp && icmp && frame.number > {first}"
    for args, stdin in (([str(caps[0]), str(caps[1])], None), ([str(caps[0]), "-"], caps[1])):
        ours = _split_v(_packets_v(*args, "-k", *keys, "-Y", flt, stdin=stdin))
        assert min(ours) > first and len(ours) >= 10, sorted(ours)
        assert any(f"Request frame: {first + 7}" in line for lines in ours.values() for line in lines)
        _same_as_tsharks_decryption(ours, joined, conf, " ".join(args))


@needs_tshark
def test_packets_v_over_stdin_with_a_failing_tshark_is_one_line(tmp_path: Path) -> None:
    bindir = _failing_tshark(tmp_path)
    d = SAMPLES / "healthy-gcm"
    run = subprocess.run([*IPSECSCOPE, "packets", "-", "-k", str(d / "charon-left.log"), "-V", "-Y", "icmp.type == 8",
                          "-c", "1"], stdin=(d / "capture.pcapng").open("rb"), capture_output=True, text=True,
                         env={**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}"})
    assert run.returncode == 0, run.stderr
    assert run.stderr.count("\n") == 1 and "tshark failed" in run.stderr and "scapy" in run.stderr, run.stderr
    assert "\n    ICMP\n        type: echo-request\n" in run.stdout
