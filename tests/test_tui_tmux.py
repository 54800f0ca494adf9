"""The real app in a real terminal (tmux): what a person sees after typing at it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from conftest import ROOT, SAMPLES, needs_tshark
from tmux_driver import Tmux, have_tmux

pytestmark = [pytest.mark.skipif(not have_tmux(), reason="tmux not installed"), needs_tshark]

HEALTHY = SAMPLES / "healthy-gcm"


def tree_width(screen: str) -> int:
    """The SA tree's columns, border excluded: it is as wide as its labels need (30-40% at 120)."""
    # the border is on every line of the body (below the status line and, while loading, the
    # progress bar): the column most lines have it in
    cols = Counter(line.index("▕") for line in screen.splitlines() if "▕" in line)
    return cols.most_common(1)[0][0] if cols else 0


def tshark(capture: Path, display_filter: str, field: str) -> list[str]:
    out = subprocess.run(["tshark", "-r", str(capture), "-Y", display_filter, "-T", "fields", "-e", field],
                         check=True, capture_output=True, text=True).stdout
    return out.split()


def app(capture: Path, *keys: Path) -> Tmux:
    args = " ".join(str(a) for a in (capture, *(("-k", *keys) if keys else ())))
    return Tmux(f"{sys.executable} -m ipsecscope {args}", width=120, height=40, cwd=str(ROOT))


def table_rows(screen: str) -> list[str]:
    """Packet-table lines: the part right of the tree that starts with a frame number."""
    rows = []
    tree_w = tree_width(screen)
    for line in screen.splitlines():
        right = line[tree_w + 1:].lstrip("▕ ")
        if re.match(r"^\d+ [✓✗?! …R] ", right):
            rows.append(right)
    return rows


def test_tree_shows_the_sas_and_filter_works() -> None:
    capture = HEALTHY / "capture.pcapng"
    esp_frames = tshark(capture, "esp", "frame.number")
    with app(capture, HEALTHY / "keys" / "esp_sa", HEALTHY / "keys" / "ikev2_decryption_table") as t:
        # the status bar and the tree are painted in separate refreshes: wait for both
        done = f"decrypted {len(esp_frames)}/{len(esp_frames)}"
        screen = t.wait_for(lambda s: done in s and "198.18.0.1 ⇄ 198.18.0.2" in s)
        tree = "\n".join(line[:tree_width(screen)] for line in screen.splitlines())
        assert "198.18.0.1 ⇄ 198.18.0.2" in tree
        for spi in set(tshark(capture, "esp", "esp.spi")):
            assert spi.removeprefix("0x") in tree, f"SPI {spi} not in the tree:\n{tree}"
        for ispi in set(tshark(capture, "isakmp", "isakmp.ispi")):
            assert ispi.replace(":", "")[:8] in tree

        t.send("/")
        # typed once the filter input has the focus, and applied once it shows what was typed
        t.wait_for_input("display filter:")
        t.type("esp src=198.18.0.2")
        t.wait_for("esp src=198.18.0.2")
        t.send("Enter")
        expected = tshark(capture, "esp && ip.src == 198.18.0.2", "frame.number")
        screen = t.wait_for(lambda s: f"filter: {len(expected)}/" in s and table_rows(s))
        rows = table_rows(screen)
        assert rows, screen
        assert [r.split()[0] for r in rows] == expected[: len(rows)]
        assert all(" ESP " in r and "198.18.0.2" in r.split()[4] for r in rows), rows

        # Escape brings every frame back; q quits cleanly.
        t.send("Escape")
        screen = t.wait_for(lambda s: not re.search(r"filter: \d", s) and table_rows(s))
        assert table_rows(screen)[0].split()[0] == "1"
        # The same typed ahead, in one write (a busy app reads it at once): the keys after `/` went
        # to the packet list and ran the app's keys there (e: the Export dialog, 1 2: tabs).
        t.type("/esp src=198.18.0.2\r")
        # The rows the filter selects, once the table shows them: CI once read the screen (under
        # load) with the count already "9/" and the table still mid-repaint (6 8 10 16 18 5 ...).
        # A table that stays wrong still fails here, at the wait's timeout.
        def settled(s: str) -> bool:
            shown = [r.split()[0] for r in table_rows(s)]
            return f"filter: {len(expected)}/" in s and bool(shown) and shown == expected[:len(shown)]

        screen = t.wait_for(settled)
        assert [r.split()[0] for r in table_rows(screen)] == expected[: len(table_rows(screen))]
        t.send("Escape")
        t.wait_for(lambda s: not re.search(r"filter: \d", s) and table_rows(s))
        t.send("q")
        t.wait_for("[exited 0]")


def test_findings_tab_lists_the_finding_and_enter_shows_the_evidence() -> None:
    capture = SAMPLES / "dead-peer" / "capture.pcapng"
    with app(capture) as t:
        t.wait_for("frames")
        t.send("3")
        screen = t.wait_for("IKE-DEAD-PEER")
        assert "stopped" in screen  # the title says what happened
        t.send("Enter")
        screen = t.wait_for(lambda s: re.search(r"filter: \d", s))
        rows = table_rows(screen)
        # The evidence: the INFORMATIONAL requests nobody answered.
        assert rows and all("INFORMATIONAL request" in r for r in rows), screen
        requests = tshark(capture, "isakmp.exchangetype == 37 && isakmp.flag_r == 0", "frame.number")
        shown = [r.split()[0] for r in rows]
        assert set(shown) <= set(requests) and len(shown) >= 2
        t.send("q")
        t.wait_for("[exited 0]")


def test_help_and_command_palette() -> None:
    with app(HEALTHY / "capture.pcapng") as t:
        t.wait_for("frames")
        t.send("?")
        # Wireshark syntax (waited for: the title can be painted a refresh before the examples under load)
        t.wait_for(lambda s: "ipsecscope — help" in s and "esp.spi == 0xc254fe64" in s and "ipsecscope.finding" in s)
        t.send("Escape")
        t.wait_for(lambda s: "ipsecscope — help" not in s)
        t.send("C-p")
        t.wait_for("Search for commands")  # drawn once its input has the focus (Screen.AUTO_FOCUS)
        t.type("export")
        t.wait_for("Decrypted pcapng")
        t.send("Escape")
        t.wait_for(lambda s: "Decrypted pcapng" not in s)
        t.send("q")
        t.wait_for("[exited 0]")


def _root_with_netns() -> str | None:
    import os
    import shutil

    if os.geteuid() != 0:
        return "needs root for a network namespace and a raw socket"
    if shutil.which("ip") is None:
        return "needs iproute2"
    return None


@pytest.mark.netns
@pytest.mark.skipif(_root_with_netns() is not None, reason=_root_with_netns() or "")
def test_live_mode_shows_traffic_as_it_arrives() -> None:
    """`ipsecscope live -i IF` (no --headless) in a namespace of our own; the healthy sample is
    replayed onto the other end of a veth pair, and the tree and status fill in as it arrives."""
    import os

    ns = f"ipsc-tui-{os.getpid()}"
    capture = HEALTHY / "capture.pcapng"
    esp = len(tshark(capture, "esp", "frame.number"))

    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True)

    ip("netns", "add", ns)
    try:
        ip("-n", ns, "link", "add", "tuia", "type", "veth", "peer", "name", "tuib")
        ip("-n", ns, "link", "set", "tuia", "up")
        ip("-n", ns, "link", "set", "tuib", "up")
        keys = f"{HEALTHY / 'keys' / 'esp_sa'} {HEALTHY / 'keys' / 'ikev2_decryption_table'}"
        # live drops to user nobody once the capture is open: let it read this interpreter
        from netns_peers import readable_python

        prefix = readable_python()
        live = f"exec {sys.executable} -m ipsecscope live -i tuia -k {keys}"
        cmd = f"ip netns exec {ns} sh -c '{prefix + ' && ' if prefix else ''}{live}'"
        with Tmux(cmd, width=120, height=40, cwd=str(ROOT)) as t:
            t.wait_for("waiting for IKE/ESP traffic")
            # Frames go out of tuib and are seen arriving on tuia; nothing leaves the namespace.
            subprocess.run(
                ["ip", "netns", "exec", ns, sys.executable, "-c",
                 "import sys; from scapy.all import rdpcap, sendp; "
                 "sendp(rdpcap(sys.argv[1]), iface='tuib', verbose=False)", str(capture)],
                check=True, capture_output=True, timeout=60,
            )
            screen = t.wait_for(lambda s: f"decrypted {esp}/{esp}" in s and "198.18.0.1 ⇄ 198.18.0.2" in s)
            # exactly the replayed frames: nothing the veth sent before the filter was attached
            assert f"live tuia  {len(tshark(capture, 'frame', 'frame.number'))} frames" in screen, screen
            tree = "\n".join(line[:tree_width(screen)] for line in screen.splitlines())
            assert "198.18.0.1 ⇄ 198.18.0.2" in tree
            for spi in set(tshark(capture, "esp", "esp.spi")):
                assert spi.removeprefix("0x") in tree
            # the packet detail of a live frame: decoded, decrypted, and its bytes in the hex view
            # (kept in memory: there is no file to re-read them from)
            t.send("2")
            # walk up from the newest frame to an ESP one (the veth may add frames of its own, e.g.
            # IPv6 MLD reports, so live frame numbers need not match the file's)
            screen = t.wait_for("Frame ")
            for _ in range(12):
                if "Inner packet" in screen:
                    break
                t.send("Up")
                screen = t.wait_for(lambda s, prev=screen: s != prev)
            screen = t.wait_for(lambda s: "Inner packet" in s and re.search(r"ESP SPI 0x[0-9a-f]+ seq \d+", s))
            assert "Decryption: ok" in screen and "raw bytes not available" not in screen
            spi, seq = re.search(r"ESP SPI 0x([0-9a-f]+) seq (\d+)", screen).groups()
            from ipsecscope.capture import open_capture

            with open_capture(capture) as r:  # the same packet in the file: its bytes are in the hex view
                frame = next(f for f in r if f.data[42:50] == bytes.fromhex(spi) + int(seq).to_bytes(4, "big"))
            assert "0000 " + " ".join(f"{b:02x}" for b in frame.data[:8]) in screen, screen
            t.send("q")
            t.wait_for("[exited 0]")
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def test_ctrl_c_quits_and_leaves_the_terminal_as_it_was(tmp_path: Path) -> None:
    """Ctrl-C ends the app, as it ends tcpdump or tshark (Textual's default only shows a toast
    saying which key quits), and the terminal's modes are back as they were (stty -g)."""
    before, after = tmp_path / "before", tmp_path / "after"
    cmd = (f"sh -c 'stty -g > {before}; {sys.executable} -m ipsecscope {HEALTHY / 'capture.pcapng'}; "
           f"rc=$?; stty -g > {after}; exit $rc'")
    with Tmux(cmd, width=80, height=24, cwd=str(ROOT)) as t:
        t.wait_for("frames")
        t.send("/")  # from the filter input too
        t.send("C-c")
        t.wait_for("[exited 0]")
    assert before.read_text() == after.read_text()


def test_keys_typed_before_the_app_started_act_as_typed(tmp_path: Path) -> None:
    # Typed while the shell and Python start (a tool one knows, a slow link): the terminal is
    # still cooked, so Enter is queued as a newline and the Esc with the key after it. The app
    # starts only once the keys sit in the terminal's queue (echoed by the cooked terminal).
    capture = HEALTHY / "capture.pcapng"
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    cmd = f"cat {gate} >/dev/null; {sys.executable} -m ipsecscope {capture}"
    with Tmux(cmd, width=80, height=24, cwd=str(ROOT)) as t:
        # Esc clears the filter and leaves it (j: the packet list's), / and Enter apply the next one
        t.type("/zzz\x1bj/esp src=198.18.0.2\r")
        t.wait_for("src=198.18.0.2")
        gate.write_text("")
        expected = tshark(capture, "esp && ip.src == 198.18.0.2", "frame.number")
        # The rows the filter selects, once the table shows them: CI once read the screen (under
        # load) with the count already "9/" and the table still mid-repaint (6 8 10 16 18 5 ...).
        # A table that stays wrong still fails here, at the wait's timeout.
        def settled(s: str) -> bool:
            shown = [r.split()[0] for r in table_rows(s)]
            return f"filter: {len(expected)}/" in s and bool(shown) and shown == expected[:len(shown)]

        screen = t.wait_for(settled)
        assert [r.split()[0] for r in table_rows(screen)] == expected[: len(table_rows(screen))]
        assert "zzz" not in screen
