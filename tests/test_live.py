"""Live capture on a real interface: two real strongSwan peers in network namespaces, and
`ipsecscope live --headless` sniffing the veth while the tunnel comes up, carries traffic, is
rekeyed and torn down. Keys arrive while it runs, from the charon log being written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ipsecscope.cli import main
from ipsecscope.errors import LiveCaptureError

sys.path.insert(0, str(Path(__file__).parent))
from netns_peers import IFACE, StrongswanPair, preflight  # noqa: E402

CONF = Path(__file__).resolve().parents[1] / "samples" / "conf" / "healthy-gcm"

why = preflight()
needs_peers = pytest.mark.skipif(why is not None, reason=why or "")


def test_missing_interface_is_one_clear_line(capsys):
    if os.geteuid() != 0:
        pytest.skip("the root check comes first without root")
    rc = main(["live", "-i", "no-such-if0", "--headless", "--duration", "1"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "no interface named 'no-such-if0'" in err and "Traceback" not in err


def test_bad_bpf_is_one_clear_line(capsys):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    rc = main(["live", "-i", "lo", "--headless", "--duration", "1", "-f", "udp port banana"])
    err = capsys.readouterr().err
    assert rc == 1 and "BPF filter" in err and "Traceback" not in err


def test_without_cap_net_raw_says_so():
    """Root without CAP_NET_RAW (dropped from the bounding set) is what an unprivileged user meets."""
    if os.geteuid() != 0:
        cmd = [sys.executable, "-m", "ipsecscope"]
    else:
        cmd = ["setpriv", "--bounding-set=-net_raw", sys.executable, "-m", "ipsecscope"]
    r = subprocess.run(cmd + ["live", "-i", "lo", "--headless", "--duration", "1"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "needs root or CAP_NET_RAW" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.netns
@needs_peers
def test_live_headless_follows_a_real_tunnel(tmp_path):
    pair = StrongswanPair(tmp_path, (CONF / "left.conf").read_text(), (CONF / "right.conf").read_text(),
                          capture=False)
    with pair:
        out = tmp_path / "events.jsonl"
        saved = tmp_path / "live.pcapng"
        with open(out, "w") as fh:
            live = pair.popen(
                "left", sys.executable, "-m", "ipsecscope", "live", "-i", IFACE, "--headless",
                "--keys-from-log", str(pair.left.log), "-w", str(saved), "--stats-interval", "1",
                stdout=fh, stderr=subprocess.PIPE,
            )
            try:
                deadline = time.monotonic() + 20
                while '"started"' not in out.read_text() and time.monotonic() < deadline:
                    assert live.poll() is None, live.stderr.read().decode()
                    time.sleep(0.1)
                pair.initiate("net", ike="gcm")
                pair.ping(3)
                pair.rekey_child("net")
                time.sleep(1.0)
                pair.ping(3)
                pair.terminate_ike("gcm")
                time.sleep(1.5)  # past the key delay, so every frame is processed
            finally:
                live.send_signal(signal.SIGTERM)
                _, err = live.communicate(timeout=20)
        assert live.returncode == 0, err.decode()
    events = [json.loads(line) for line in out.read_text().splitlines()]
    kinds = [e["event"] for e in events]
    for expected in ("started", "keys", "ike_sa_established", "child_sa_created", "child_sa_rekeyed",
                     "esp_flow_started", "ike_sa_deleted", "stats"):
        assert expected in kinds, (expected, kinds)
    final = [e for e in events if e["event"] == "stats"][-1]
    # Every ESP packet of the tunnel decrypted with keys read from the log while it ran.
    assert final["esp"] >= 12 and final["decrypted"] == final["esp"], final
    assert final["no_key"] == 0 and final["icv_failed"] == 0
    assert final["kernel_drops"] == 0
    # -w kept a capture that tshark-compatible readers (and we) can open again.
    from ipsecscope.session import Session

    s = Session()
    s.add_key_files([pair.left.log])
    s.load(saved)
    assert s.stats.esp == final["esp"] and s.stats.decrypted == s.stats.esp


def test_runner_rejects_missing_interface():
    from ipsecscope.live import LiveRunner

    if os.geteuid() != 0:
        pytest.skip("needs root")
    with pytest.raises(LiveCaptureError):
        LiveRunner("no-such-if0")
