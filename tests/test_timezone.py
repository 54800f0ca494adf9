"""Times are labelled with their zone everywhere; --tz local shows the machine's zone (issue 14 item 11).

charon logs are written in local time, so on a gateway not set to UTC the capture's times must be
shown in that zone to line up with them. The oracles: Python's zoneinfo for the expected wall
clock, and tshark -t ad (which prints local time under TZ) for the packet list.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from conftest import IPSECSCOPE, ROOT, SAMPLES, needs_tshark, workers_done

from ipsecscope import timefmt

DEAD = SAMPLES / "dead-peer" / "capture.pcapng"
CBC = SAMPLES / "cbc-sha2-pfs"
CBC_KEYS = [str(CBC / "keys" / "esp_sa"), str(CBC / "keys" / "ikev2_decryption_table")]
NY = "America/New_York"  # the samples are from November: EST, UTC-05:00


def run(*args: str, tz: str | None = None, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("TZ", timefmt.ENV)}
    if tz is not None:
        env["TZ"] = tz
    env.update(env_extra or {})
    return subprocess.run([*IPSECSCOPE, *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)


def wall(ts: float, zone: str, digits: int = 0) -> str:
    d = datetime.fromtimestamp(ts, UTC).astimezone(ZoneInfo(zone))
    return d.strftime("%H:%M:%S") + (f".{d.microsecond:06d}"[: digits + 1] if digits else "")


def dead_peer_finding() -> dict:
    doc = json.loads(run("findings", "--json", str(DEAD)).stdout)
    return next(f for f in doc["findings"] if f["code"] == "IKE-DEAD-PEER")


def test_findings_default_utc_and_local_with_its_offset() -> None:
    f = dead_peer_finding()
    utc = run("findings", str(DEAD), tz=NY)  # the machine's zone does not matter by default
    assert f"IKE-DEAD-PEER  {wall(f['time'], 'UTC')} UTC " in utc.stdout, utc.stdout
    local = run("findings", "--tz", "local", str(DEAD), tz=NY)
    assert f"IKE-DEAD-PEER  {wall(f['time'], NY)} UTC-05:00 " in local.stdout, local.stdout
    # times inside the finding texts follow the zone too (the analysis quotes them)
    quoted = re.findall(r"\b\d\d:\d\d:\d\d( UTC(?:[+-]\d\d:\d\d)?)?", local.stdout)
    assert quoted and all(z == " UTC-05:00" for z in quoted), quoted
    berlin = run("findings", "--tz", "Europe/Berlin", str(DEAD), tz=NY)
    assert f"{wall(f['time'], 'Europe/Berlin')} UTC+01:00" in berlin.stdout, berlin.stdout


def test_env_variable_sets_the_default_zone() -> None:
    f = dead_peer_finding()
    out = run("findings", str(DEAD), tz=NY, env_extra={timefmt.ENV: "local"}).stdout
    assert f"{wall(f['time'], NY)} UTC-05:00" in out, out
    out = run("findings", "--tz", "UTC", str(DEAD), tz=NY, env_extra={timefmt.ENV: "local"}).stdout
    assert f"{wall(f['time'], 'UTC')} UTC " in out, out  # --tz wins over the environment


def test_sas_and_summary_in_local_time() -> None:
    doc = json.loads(run("sas", "--json", str(CBC / "capture.pcapng"), "-k", *CBC_KEYS).stdout)
    ike = doc["ike_sas"][0]
    out = run("sas", "--tz", "local", str(CBC / "capture.pcapng"), "-k", *CBC_KEYS, tz=NY).stdout
    assert f"created {wall(ike['created'], NY, 3)} UTC-05:00" in out, out
    assert f"deleted {wall(ike['deleted'], NY, 3)} UTC-05:00" in out, out
    assert " UTC," not in out and " UTC " not in out  # nothing left in UTC
    out = run("sas", str(CBC / "capture.pcapng"), "-k", *CBC_KEYS, tz=NY).stdout
    assert f"created {wall(ike['created'], 'UTC', 3)} UTC" in out, out

    summ = json.loads(run("summary", "--json", str(DEAD)).stdout)
    first = summ["first_time"]
    out = run("summary", "--tz", "local", str(DEAD), tz=NY).stdout
    date = datetime.fromtimestamp(first, UTC).astimezone(ZoneInfo(NY)).strftime("%Y-%m-%d")
    assert f"{date} {wall(first, NY)} UTC-05:00 + " in out.splitlines()[0], out
    assert "time (UTC-05:00)" in out and f"{wall(summ['ike'][0]['time'], NY, 6)}" in out, out
    out = run("summary", str(DEAD), tz=NY).stdout
    assert f"{wall(first, 'UTC')} UTC + " in out.splitlines()[0] and "time (UTC)" in out, out


@needs_tshark
def test_packets_absolute_times_agree_with_tshark_in_local_time() -> None:
    env = {**os.environ, "TZ": NY}
    shark = subprocess.run(["tshark", "-n", "-r", str(DEAD), "-t", "ad", "-T", "fields", "-e", "frame.number",
                            "-e", "_ws.col.Time"], capture_output=True, text=True, env=env, check=True).stdout
    want = [line.split("\t") for line in shark.splitlines() if line]
    out = run("packets", "-t", "ad", "--tz", "local", str(DEAD), tz=NY).stdout.splitlines()
    assert len(out) == len(want)
    for line, (frame, stamp) in zip(out, want, strict=True):
        fields = line.split()
        assert fields[0] == frame
        assert f"{fields[1]} {fields[2]}" == stamp, (line, stamp)  # tshark: 2026-11-25 15:09:22.153514
        assert fields[3] == "UTC-05:00", line
    rel = run("packets", str(DEAD), tz=NY).stdout.splitlines()
    assert rel[0].split()[1] == "0.000000"  # the default stays tshark's relative seconds


def test_stats_says_what_its_relative_times_count_from() -> None:
    summ = json.loads(run("summary", "--json", str(DEAD)).stdout)
    out = run("stats", "--tz", "local", str(DEAD), tz=NY).stdout
    assert out.splitlines()[0].startswith("times: seconds after the first frame, ")
    assert f"{wall(summ['first_time'], NY, 3)} UTC-05:00" in out.splitlines()[0], out


def test_json_is_the_same_whatever_the_zone() -> None:
    """Machines get epoch seconds and UTC texts: --tz only changes what people read."""
    for args in (["findings", "--json", str(DEAD)], ["sas", "--json", str(DEAD)], ["summary", "--json", str(DEAD)]):
        utc = run(*args).stdout
        local = run(*args, "--tz", "local", tz=NY).stdout
        assert utc == local, args
    assert "UTC-05:00" not in run("findings", "--json", "--tz", "local", str(DEAD), tz=NY).stdout


def test_a_bad_zone_is_one_line_naming_what_is_accepted() -> None:
    r = run("findings", "--tz", "Mars/Olympus", str(DEAD))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "unknown time zone 'Mars/Olympus': give UTC, local or an IANA name" in r.stderr.splitlines()[0]
    r = run("sas", str(DEAD), env_extra={timefmt.ENV: "nowhere"})
    assert r.returncode == 2 and "unknown time zone 'nowhere'" in r.stderr, r.stderr


def test_every_subcommand_takes_tz() -> None:
    from ipsecscope.cli import build_parser

    parser = build_parser()
    for argv in (["summary", "x"], ["sas", "x"], ["findings", "x"], ["packets", "x"], ["stats", "x"],
                 ["keys", "list", "x"], ["tui", "x"], ["live", "-i", "lo"], ["decrypt", "x", "-o", "y"]):
        assert parser.parse_args([*argv, "--tz", "local"]).tz == "local", argv


def test_no_time_is_formatted_outside_timefmt() -> None:
    """One formatter: a strftime/fromtimestamp elsewhere would show a time without its zone."""
    pattern = re.compile(r"\b(strftime|fromtimestamp|utcfromtimestamp|gmtime|localtime|isoformat|ctime)\b")
    offenders = [f"{p.relative_to(ROOT)}:{i}" for p in sorted((ROOT / "ipsecscope").rglob("*.py"))
                 if p.name != "timefmt.py"
                 for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert not offenders, offenders


@pytest.fixture
def new_york():
    """This process in New York time, and the display zone set to local, for the pilot tests."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = NY
    time.tzset()
    timefmt.set_zone("local")
    try:
        yield
    finally:
        timefmt.set_zone("UTC")
        if old is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = old
        time.tzset()


def test_tui_labels_times_in_the_chosen_zone(new_york) -> None:
    from ipsecscope.tui.app import create_app
    from ipsecscope.tui.widgets.sa_detail import SaDetail

    async def go() -> tuple[str, str]:
        app = create_app(CBC / "capture.pcapng", [Path(k) for k in CBC_KEYS])
        async with app.run_test(size=(120, 40)) as pilot:
            await workers_done(pilot.app)
            await pilot.pause()
            await pilot.press("1")
            await pilot.pause()
            legend = str(app.query_one("#timeline-legend").render())
            tree = app.query_one("#sa-tree")
            tree.focus()
            while tree.current_ref is None or tree.current_ref.kind != "ike":
                await pilot.press("down")
            await pilot.press("enter")
            await pilot.pause()
            return legend, app.query_one(SaDetail).as_text()

    legend, detail = asyncio.run(go())
    doc = json.loads(run("sas", "--json", str(CBC / "capture.pcapng"), "-k", *CBC_KEYS).stdout)
    first = doc["first_time"]
    assert f"0s = 2026-11-25 {wall(first, NY, 3)} UTC-05:00" in legend, legend
    ike = doc["ike_sas"][0]
    assert f"{wall(ike['created'], NY, 3)} UTC-05:00" in detail, detail


def test_tui_from_the_command_line_with_tz_local() -> None:
    """The real app in tmux, started as a user would: `ipsecscope FILE --tz local` on a New York machine."""
    from tmux_driver import Tmux, have_tmux

    if not have_tmux():
        pytest.skip("tmux not installed")
    first = json.loads(run("summary", "--json", str(DEAD)).stdout)["first_time"]
    cmd = f"{sys.executable} -m ipsecscope {DEAD} --tz local"
    with Tmux(cmd, width=120, height=30, cwd=str(ROOT), env={"TZ": NY}) as t:
        t.wait_for("frames")
        t.send("1")
        screen = t.wait_for("0s = ")
        assert f"0s = 2026-11-25 {wall(first, NY, 3)} UTC-05:00" in screen, screen
        t.send("q")
        t.wait_for("[exited 0]")


def test_summary_across_a_dst_change_labels_each_time() -> None:
    """One offset cannot head a column that crosses a DST change: then every cell carries its own."""
    import io

    from ipsecscope.cli.summary import render_text

    doc = json.loads(run("summary", "--json", str(DEAD)).stdout)
    # US DST ended 2026-11-01 06:00:00 UTC (02:00 EDT -> 01:00 EST): move the capture across it.
    shift = datetime(2026, 11, 1, 5, 59, 58, tzinfo=UTC).timestamp() - doc["first_time"]

    def moved(node):
        if isinstance(node, dict):
            return {k: (v + shift if k in ("time", "first_time", "last_time") and isinstance(v, float) else moved(v))
                    for k, v in node.items()}
        return [moved(v) for v in node] if isinstance(node, list) else node

    timefmt.set_zone(NY)
    try:
        out = io.StringIO()
        render_text(moved(doc), file=out)
        text = out.getvalue()
        plain = io.StringIO()
        render_text(doc, file=plain)
    finally:
        timefmt.set_zone("UTC")
    assert "time (UTC-0" not in text and "┃ time " in text, text
    offsets = set()
    for r in doc["ike"]:
        ts = r["time"] + shift
        off = datetime.fromtimestamp(ts, UTC).astimezone(ZoneInfo(NY)).strftime("%z")
        offsets.add(off)
        assert f"{wall(ts, NY, 6)} UTC{off[:3]}:{off[3:]}" in text, (ts, text)
    assert offsets == {"-0400", "-0500"}  # the frames really are on both sides of the change
    assert "time (UTC-05:00)" in plain.getvalue()  # an ordinary capture: the zone once, in the header
