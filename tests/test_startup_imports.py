"""Start-up (issue 15): a command imports only what it uses. Each command runs in a fresh
interpreter exactly as ``python -m ipsecscope ...`` does, and the test reads ``sys.modules`` at
exit: the heavy packages (the TUI's Textual, the dissectors pyshark/scapy, rich's renderers,
numpy, cryptography) must not be loaded by a command that never calls them. No timing: a module
that is imported is a cost on every run, whatever the machine's load."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import SAMPLES

# Runs the CLI in-process, stdout to /dev/null, then prints the top-level packages and the
# ipsecscope modules that were imported (one JSON line on stderr, after everything else).
PROBE = (
    "import atexit, json, os, sys\n"
    "def _report():\n"
    "    sys.stderr.write('\\nMODULES ' + json.dumps(sorted(sys.modules)) + '\\n')\n"
    "atexit.register(_report)\n"
    "sys.stdout = open(os.devnull, 'w')\n"
    "import runpy\n"
    "sys.argv = ['ipsecscope', *sys.argv[1:]]\n"
    "runpy.run_module('ipsecscope', run_name='__main__', alter_sys=True)\n"
)

CAPTURE = SAMPLES / "healthy-gcm" / "capture.pcapng"
KEYS = SAMPLES / "healthy-gcm" / "keys"
NEVER = {"textual", "pyshark", "scapy", "lxml"}  # only the TUI, packets -V and the detail pane


def imported(*argv: object) -> tuple[set[str], set[str]]:
    """(top-level packages, ipsecscope modules) a command imported."""
    mods = mods_of(argv)
    return {m.split(".")[0] for m in mods}, {m for m in mods if m.startswith("ipsecscope")}


_SEEN: dict[tuple, list[str]] = {}


def mods_of(argv: tuple) -> list[str]:
    """Every module a command imported (one run per command line)."""
    if argv in _SEEN:
        return _SEEN[argv]
    r = subprocess.run([sys.executable, "-c", PROBE, *map(str, argv)], capture_output=True, text=True,
                       timeout=300)
    line = r.stderr.rsplit("MODULES ", 1)
    assert len(line) == 2, r.stderr[-2000:]
    assert "Traceback" not in line[0], line[0][-2000:]
    mods = _SEEN[argv] = json.loads(line[1])
    return mods


def test_version_imports_no_front_end() -> None:
    tops, ours = imported("--version")
    assert not tops & (NEVER | {"rich", "numpy", "cryptography"}), tops
    assert not any(m.startswith("ipsecscope.cli.") for m in ours), sorted(ours)


@pytest.mark.parametrize("argv", [("summary", "--json", CAPTURE), ("summary", CAPTURE)], ids=["json", "text"])
def test_summary_loads_no_analysis_nor_tui(argv: tuple) -> None:
    tops, ours = imported(*argv)
    assert not tops & (NEVER | {"numpy", "cryptography"}), tops
    if "--json" in argv:
        assert "rich" not in tops
    # summary is its own fast loop: it never builds a Session nor runs the rules
    assert not {"ipsecscope.session", "ipsecscope.state.tracker", "ipsecscope.analysis.rules"} & ours


@pytest.mark.parametrize("argv", [
    ("sas", "--json", CAPTURE),
    ("findings", "--json", CAPTURE),
    ("sas", "--json", CAPTURE, "-k", KEYS),
    ("sas", CAPTURE),
    ("findings", CAPTURE),
], ids=["sas-json", "findings-json", "sas-json-keys", "sas-text", "findings-text"])
def test_analysis_commands_load_no_tui_nor_dissector(argv: tuple) -> None:
    tops, ours = imported(*argv)
    assert not tops & NEVER, tops
    assert not any(m.startswith("ipsecscope.tui") for m in ours), sorted(ours)
    if "--json" in argv:
        assert "rich" not in tops  # rich renders text only
    # plugin discovery reads the dist-info directories itself (plugins._scan)
    assert "importlib.metadata" not in mods_of(argv)
    assert "numpy.ma" not in mods_of(argv)  # np.unique of a bare array imports it
    assert "zoneinfo" not in mods_of(argv)  # UTC needs no zone database (timefmt.parse_zone)
    if argv[0] == "sas":  # the rule families load when findings are evaluated, not for describe()/nat_verdict;
        # liveness does: its dead-peer and peer-restarted rules say which IKE SAs are gone (IkeSa.peer_gone)
        assert not {f"ipsecscope.analysis.rules.{m}" for m in ("negotiation", "esp", "policy")} & ours


def test_the_probe_sees_what_a_command_loads() -> None:
    # the TUI's --help builds its parser only; `packets -V` pulls the dissector in when it runs
    tops, ours = imported("sas", CAPTURE)
    assert "rich" in tops and "ipsecscope.session" in ours


IKE_STACK = {"ipsecscope.model.ike", "ipsecscope.decode.ike", "ipsecscope.crypto.ike_sk", "ipsecscope.crypto.ikev1",
             "ipsecscope.session_quoted", "ipsecscope.state.ikev1", "ipsecscope.state.ikev2"}


def test_esp_only_capture_loads_no_ike_stack() -> None:
    # A capture of ESP alone never needs the IKE decoder, decryptors, handlers nor model: they load
    # with the first IKE message (or ICMP quote), as a capture with IKE shows.
    synth = SAMPLES / "synthetic"
    _, ours = imported("sas", "--json", synth / "aead.pcap", "-k", synth / "aead.keys.json")
    assert not IKE_STACK & ours, sorted(IKE_STACK & ours)
    _, with_ike = imported("sas", "--json", CAPTURE, "-k", KEYS)
    assert IKE_STACK - {"ipsecscope.session_quoted"} <= with_ike  # (no ICMP error quotes IPsec there)


# As PROBE, reporting at exit whether numpy was loaded and how many threads the process has.
THREADS_PROBE = PROBE.replace(
    "sys.stderr.write('\\nMODULES ' + json.dumps(sorted(sys.modules)) + '\\n')",
    "sys.stderr.write('\\nTHREADS ' + json.dumps(['numpy' in sys.modules, len(os.listdir('/proc/self/task'))]) + '\\n')")


def _threads(blas: str | None) -> tuple[bool, int]:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS")}
    if blas is not None:
        env["OPENBLAS_NUM_THREADS"] = blas
    r = subprocess.run([sys.executable, "-c", THREADS_PROBE, "sas", "--json", str(CAPTURE), "-k", str(KEYS)],
                       capture_output=True, text=True, env=env, timeout=300)
    line = r.stderr.rsplit("THREADS ", 1)
    assert len(line) == 2, r.stderr[-2000:]
    numpy_loaded, threads = json.loads(line[1])
    return numpy_loaded, threads


@pytest.mark.skipif(not os.path.isdir("/proc/self/task") or (os.cpu_count() or 1) < 2,
                    reason="OpenBLAS starts worker threads only on a machine with more than one core")
def test_cli_starts_no_blas_threads() -> None:
    # numpy's OpenBLAS starts a worker per extra core, each busy-waiting ~0.1 s of CPU (issue 15):
    # the CLI, which does no linear algebra, asks for one thread; a user's own setting wins.
    assert _threads(None) == (True, 1)
    assert _threads("") == (True, 1)  # set but empty (`OPENBLAS_NUM_THREADS= cmd`): as unset
    assert _threads("2") == (True, 2)


@pytest.mark.parametrize("sample", ["synthetic-aead", "healthy-gcm"])
def test_decrypt_loads_no_ike_registries_nor_analysis(sample: str, tmp_path) -> None:
    # decrypt reads keys and ESP only: the IKE registries' ~40 enums (model.iana_ike, ~6 ms to
    # build), the packet list's modules (cli.packets, model.sa) and the analysis path are never
    # imported, not even for a capture that holds IKE messages (issue 15: start-up at 200k frames)
    if sample == "synthetic-aead":
        cap, keys = SAMPLES / "synthetic" / "aead.pcap", SAMPLES / "synthetic" / "aead.keys.json"
    else:
        cap, keys = CAPTURE, KEYS
    tops, ours = imported("decrypt", cap, "-k", keys, "-o", tmp_path / "out.pcapng", "-q")
    assert not tops & (NEVER | {"rich", "numpy"}), tops  # (numpy: only for captures >= 32 MiB)
    assert "socket" not in tops  # (inet_ntop/pton from _socket: socket.py's enums cost ~3.7 ms)
    assert "threading" not in tops  # (only --follow and the readers' follow mode wait on events)
    assert "ipsecscope.model.iana" in ours  # the transform IDs key files name
    unwanted = {"ipsecscope.model.iana_ike", "ipsecscope.cli.packets", "ipsecscope.model.sa", "ipsecscope.session",
                "ipsecscope.state", "ipsecscope.analysis", "ipsecscope.filtering"} | IKE_STACK
    # model.packets' dataclasses (~6 ms) are the per-frame objects of the general readers, which the
    # engine's own loops never build; the pcapng reader is there for a pcapng capture only (a JSON
    # key file never asks for its SHB check)
    unwanted |= {"ipsecscope.model.packets", "ipsecscope.decode.demux"}
    # the engine and key loader are called by the CLI itself: the API module's wrappers (and its
    # DecryptedPacket class) are not start-up (issue 15)
    unwanted.add("ipsecscope.api")
    if sample == "synthetic-aead":
        unwanted |= {"ipsecscope.capture.pcapng", "ipsecscope.capture.pcap"}
        # a JSON key file with ESP keys: no other format's reader, no IKE SA keys nor log notes
        # (model.keys gives those classes at first use), ~3 ms of frozen dataclasses and regexes
        unwanted |= {f"ipsecscope.keys.{m}" for m in ("wireshark", "xfrm", "charon", "libreswan", "tcpdump")}
        unwanted |= {"ipsecscope.model.ike_keys", "ipsecscope.model.peer_notes"}
    assert not unwanted & ours, sorted(unwanted & ours)
    # pathlib (with urllib.parse, fnmatch: ~1.5 ms) names no file better than os.path; datetime loads
    # with the first time formatted (timefmt), and decrypt formats none
    assert not {"pathlib", "urllib", "fnmatch", "datetime"} & tops, sorted({"pathlib", "urllib", "fnmatch", "datetime"} & tops)


def test_an_editable_install_starts_no_import_hook() -> None:
    # `./dev` installs this checkout editable. setuptools' import-hook form (a finder module that a
    # .pth file imports and installs in every process, with pathlib, urllib.parse and importlib.util)
    # cost every command ~10 ms of CPU before it ran a line of ours (`python -c pass` 20 -> 9 ms,
    # issue 15); pyproject.toml's explicit flat layout makes it a plain path in a .pth file (a
    # regular install has neither). The plugin under plugins/ likewise.
    r = subprocess.run([sys.executable, "-c", "import json, sys; print(json.dumps(sorted(sys.modules)))"],
                       capture_output=True, text=True, timeout=120)
    hooks = [m for m in json.loads(r.stdout) if m.startswith("__editable__")]
    assert not hooks, hooks


# As PROBE, reporting at exit whether the garbage collector runs and how many objects are frozen.
GC_PROBE = PROBE.replace(
    "sys.stderr.write('\\nMODULES ' + json.dumps(sorted(sys.modules)) + '\\n')",
    "import gc; sys.stderr.write('\\nGC ' + json.dumps([gc.isenabled(), gc.get_freeze_count()]) + '\\n')")


def test_start_up_objects_are_frozen_for_the_process_own_command(tmp_path) -> None:
    # issue 15: collections during start-up walk every object imported so far and find nothing;
    # the command's own process freezes them once imported (and collects again after)
    r = subprocess.run([sys.executable, "-c", GC_PROBE, "decrypt", SAMPLES / "synthetic" / "aead.pcap", "-k",
                        SAMPLES / "synthetic" / "aead.keys.json", "-o", tmp_path / "out.pcapng", "-q"],
                       capture_output=True, text=True, timeout=300)
    enabled, frozen = json.loads(r.stderr.rsplit("GC ", 1)[1])
    assert enabled and frozen > 10_000, (enabled, frozen)


def test_a_callers_main_leaves_its_garbage_collector_alone(tmp_path) -> None:
    import gc

    from ipsecscope.cli import main

    before = gc.get_freeze_count()
    assert main(["decrypt", str(SAMPLES / "synthetic" / "aead.pcap"), "-k", str(SAMPLES / "synthetic" / "aead.keys.json"),
                 "-o", str(tmp_path / "out.pcapng"), "-q"]) == 0
    assert gc.isenabled() and gc.get_freeze_count() == before


def test_decrypt_imports_the_bulk_step_during_start_up(tmp_path) -> None:
    # a capture big enough for the bulk step (export.hotloop.BULK_MIN_BYTES) has numpy imported by
    # decrypt's preload(), before start-up's objects are frozen: numpy's are frozen with them
    cap, keys = SAMPLES / "synthetic" / "aead.pcap", SAMPLES / "synthetic" / "aead.keys.json"

    def frozen(bulk_min: int) -> tuple[bool, int]:
        probe = f"import ipsecscope.export.hotloop as h; h.BULK_MIN_BYTES = {bulk_min}\n" + GC_PROBE.replace(
            "json.dumps([gc.isenabled(), gc.get_freeze_count()])", "json.dumps(['numpy' in sys.modules, gc.get_freeze_count()])")
        r = subprocess.run([sys.executable, "-c", probe, "decrypt", cap, "-k", keys, "-o", tmp_path / "out.pcapng", "-q"],
                           capture_output=True, text=True, timeout=300)
        return tuple(json.loads(r.stderr.rsplit("GC ", 1)[1]))

    small, big = frozen(1 << 62), frozen(0)
    assert small[0] is False and big[0] is True
    assert big[1] > small[1] + 10_000, (small, big)


# As PROBE, with an object whose finaliser says so when the interpreter's teardown frees it.
TEARDOWN_PROBE = (
    "import sys, types\n"
    "class _Said:\n"
    "    def __del__(self):\n"
    "        sys.stderr.write('\\nTEARDOWN\\n')\n"
    "_m = types.ModuleType('_teardown_probe'); _m.obj = _Said(); sys.modules['_teardown_probe'] = _m\n"
    "del _m\n" + PROBE)


def test_decrypt_ends_without_the_interpreters_teardown(tmp_path) -> None:
    # issue 15: freeing every module's objects one by one after the run is ~5 ms of a 200k-frame
    # decrypt's CPU (~2.5 ms of a 6-frame one); decrypt ends at once (cli._exit_at_once) after its atexit handlers, its
    # output complete and its status kept. Another command still tears down as Python does.
    cap, keys = SAMPLES / "synthetic" / "aead.pcap", SAMPLES / "synthetic" / "aead.keys.json"

    def run(*argv: object) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", TEARDOWN_PROBE, *map(str, argv)], capture_output=True,
                              text=True, timeout=300)

    out = tmp_path / "out.pcapng"
    r = run("decrypt", cap, "-k", keys, "-o", out)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "MODULES " in r.stderr  # the atexit handlers ran
    assert "inner packets written" in r.stderr and "TEARDOWN" not in r.stderr
    direct = tmp_path / "direct.pcapng"
    from ipsecscope.cli import main

    assert main(["decrypt", str(cap), "-k", str(keys), "-o", str(direct), "-q"]) == 0  # (in-process: no exit)
    assert out.read_bytes() == direct.read_bytes()
    wrong = run("decrypt", cap, "-k", SAMPLES / "healthy-gcm" / "keys", "-o", tmp_path / "none.pcapng", "-q")
    assert wrong.returncode == 3 and "nothing decrypted" in wrong.stderr and "TEARDOWN" not in wrong.stderr
    other = run("summary", cap)
    assert other.returncode == 0 and "TEARDOWN" in other.stderr
