"""The packet filter language (ipsecscope.model.filter) against tshark display filters on real captures."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest
from conftest import CORPUS, DATA, SAMPLES, need, needs_tshark

from ipsecscope.filtering import select, source_of
from ipsecscope.model.filter import FilterError, compile_filter, findings_index
from ipsecscope.model.packets import FrameRow
from ipsecscope.session import Session

HEALTHY = SAMPLES / "healthy-gcm"
HEALTHY_KEYS = [HEALTHY / "keys" / "esp_sa", HEALTHY / "keys" / "ikev2_decryption_table"]
ESP_BUG = CORPUS / "esp-bug-12671.pcapng.gz"


def tshark_frames(capture: Path, display_filter: str) -> list[int]:
    out = subprocess.run(
        ["tshark", "-r", str(capture), "-Y", display_filter, "-T", "fields", "-e", "frame.number"],
        check=True, capture_output=True, text=True,
    ).stdout
    return [int(x) for x in out.split()]


@pytest.fixture(scope="module")
def healthy() -> Session:
    s = Session()
    s.add_key_files(HEALTHY_KEYS)
    s.load(HEALTHY / "capture.pcapng")
    return s


@pytest.fixture(scope="module")
def esp_bug() -> Session:
    need(ESP_BUG)  # module-scoped: set up before the autouse fixture could skip
    s = Session()
    s.load(ESP_BUG)
    return s


def frames(session: Session, text: str) -> list[int]:
    flt = compile_filter(text, findings_index(session.findings))
    return [session.rows[i].frame for i in select(flt, source_of(session))]


@needs_tshark
@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        ("esp", "esp"),
        ("ike", "isakmp"),
        ("!esp", "!esp"),
        ("spi=0x15b69dc5", "esp.spi == 0x15b69dc5"),
        ("spi=15b69dc5", "esp.spi == 0x15b69dc5"),
        ("spi=0x15b69dc5,0x427e7d84", "esp.spi == 0x15b69dc5 || esp.spi == 0x427e7d84"),
        ("esp src=198.18.0.2", "esp && ip.src == 198.18.0.2"),
        ("dst=198.18.0.0/31 ike", "isakmp && ip.dst == 198.18.0.0/31"),
        ("host=198.18.0.1 frame=10-20", "ip.addr == 198.18.0.1 && frame.number >= 10 && frame.number <= 20"),
        ("ike port=500", "isakmp && udp.port == 500"),
        ("ike dport=4500", "isakmp && udp.dstport == 4500"),
        ("spi=b1b8da23a004d038", "isakmp.ispi == b1:b8:da:23:a0:04:d0:38 || isakmp.rspi == b1:b8:da:23:a0:04:d0:38"),
        ("info=CREATE_CHILD_SA", "isakmp.exchangetype == 36"),
    ],
)
def test_filter_matches_tshark_on_strongswan_sample(healthy: Session, ours: str, theirs: str) -> None:
    expected = tshark_frames(HEALTHY / "capture.pcapng", theirs)
    assert expected, f"the oracle filter {theirs!r} matches nothing: the test would prove nothing"
    assert frames(healthy, ours) == expected


@needs_tshark
def test_filter_on_wireshark_corpus(esp_bug: Session) -> None:
    assert frames(esp_bug, "spi=0xc254fe64") == tshark_frames(ESP_BUG, "esp.spi == 0xc254fe64")
    assert frames(esp_bug, "esp src=192.168.0.1") == tshark_frames(ESP_BUG, "esp && ip.src == 192.168.0.1")
    # No keys loaded: every ESP frame is undecryptable, none decrypted.
    assert frames(esp_bug, "status=no-key") == tshark_frames(ESP_BUG, "esp")
    assert frames(esp_bug, "icv=ok") == []


def test_decryption_status_terms(healthy: Session) -> None:
    esp = frames(healthy, "esp")
    assert esp and frames(healthy, "esp icv=ok") == esp  # the healthy sample decrypts completely
    assert frames(healthy, "icv=bad") == []
    assert frames(healthy, "esp !icv=ok") == []
    assert frames(healthy, "seq=2 esp") == [r.frame for r in healthy.rows if r.kind == "ESP" and r.seq == 2]


def test_finding_term_uses_evidence_frames() -> None:
    rows = [FrameRow(i, float(i), "ESP", "198.18.0.1", "198.18.0.2", 0, 0, 100, spi=1) for i in range(1, 11)]

    class F:  # the shape findings_index reads: code and frames (model.sa.Finding)
        def __init__(self, code: str, fr: tuple[int, ...]) -> None:
            self.code, self.frames = code, fr

    idx = findings_index([F("ESP-SEQ-GAP", (3, 4)), F("ESP-ICV-FAIL", (7,)), F("ESP-SEQ-GAP", (9,))])
    got = [rows[i].frame for i in select(compile_filter("finding=esp-seq-gap", idx), rows)]
    assert got == [3, 4, 9]
    got = [rows[i].frame for i in select(compile_filter("finding=ESP-*", idx), rows)]
    assert got == [3, 4, 7, 9]
    assert select(compile_filter("finding=NOPE", idx), rows) == []
    # the same as a display filter field
    got = [rows[i].frame for i in select(compile_filter('ipsecscope.finding == "ESP-ICV-FAIL"', idx), rows)]
    assert got == [7]


@pytest.mark.parametrize(
    ("text", "says", "pos"),
    [
        ("bogus", "'bogus' is neither a field nor a protocol", 0),
        ("esp && bogus.field == 1", "'bogus.field' is neither a field", 7),
        ("spi=zz", "is not a number", 4),
        ("src=300.1.1.1", "not an IP address", 4),
        ("ip.src == 300.1.1.1", "not a valid IPv4 address", 10),
        ("ip.src == 2001:db8::1", "is an IPv6 address", 10),
        ("icv=maybe", "icv=bad or icv=ok", 4),
        ("status=weird", "use one of", 7),
        ("color=red", "unknown filter key 'color'", 0),
        ("spi=", "needs a value", 0),
        ("!", "must be followed", 0),
        ("frame=1-x", "is not a number", 6),
        ("esp.spi ==", "a value was expected", 10),
        ("(esp || ah", "')' is missing", 0),
        ("esp )", "')' was unexpected", 4),
        ("esp == 1", "is a protocol", 4),
        ("ip.src == ip.dst", "comparing two fields", 10),
        ("isakmp.ispi > 1", "does not apply", 12),
        ("udp.port in {500", "'}' is missing", 12),
        ('dns.qry.name == "x', "closing \" is missing", 16),
        ("esp.spi == 0x1 # x", "'#' is not part of the filter language", 15),
    ],
)
def test_bad_filters_say_what_is_wrong_and_where(text: str, says: str, pos: int) -> None:
    with pytest.raises(FilterError) as exc:
        compile_filter(text)
    assert says in str(exc.value)
    assert exc.value.pos == pos, exc.value
    assert exc.value.caret(text).splitlines()[1] == " " * pos + "^"


def test_empty_filter_matches_everything(healthy: Session) -> None:
    flt = compile_filter("   ")
    assert flt.empty
    assert select(flt, source_of(healthy)) == list(range(len(healthy.rows)))


SA_PACKETS_CASES = {
    "healthy-gcm": (SAMPLES / "healthy-gcm" / "capture.pcapng", [SAMPLES / "healthy-gcm" / "keys"]),
    "enc-rekey": (DATA / "linktypes" / "enc-rekey.pcap", []),
    "ah-v6": (DATA / "ah" / "ah-v6.pcap", [DATA / "ah" / "ah-v6.keys.json"]),
    "mobike": (DATA / "mobike" / "capture.pcap", [DATA / "mobike" / "charon-right.log"]),
}


@needs_tshark
@pytest.mark.parametrize("case", list(SA_PACKETS_CASES))
def test_sa_packets_writes_a_tshark_filter_for_every_tree_node(case: str) -> None:
    """`s` on a tree node wrote the short forms ("spi=0x…", "host=198.18.0.1 host=198.18.0.2"):
    the filter bar read them, tshark -Y does not, so the engineer could not take the filter on to
    Wireshark. For every node (pair, IKE SA, CHILD SA, flow, enc(4) SA) the text `s` writes is a
    filter tshark takes, and it selects the frames tshark selects."""
    from test_tui import frames_in_view, loaded, screen_lines

    from ipsecscope.tui.app import create_app
    from ipsecscope.tui.navigation import sa_packets_filter
    from ipsecscope.tui.widgets.packet_table import PacketTable
    from ipsecscope.tui.widgets.sa_tree import SaTree

    cap, keys = SA_PACKETS_CASES[case]

    async def go() -> list[tuple[str, str, list[int]]]:
        out = []
        app = create_app(cap, keys)
        async with app.run_test(size=(160, 48)) as pilot:
            await loaded(pilot)
            tree = app.query_one(SaTree)
            nodes = []

            def walk(node) -> None:
                for child in node.children:
                    nodes.append(child)
                    walk(child)

            walk(tree.root)
            for node in nodes:
                text = sa_packets_filter(app.session.table, node.data)
                tree.move_cursor(node)
                tree.focus()
                await pilot.pause()
                await pilot.press("s")
                await loaded(pilot)
                assert app.query_one("#filter").value == text  # what `s` wrote is this filter
                assert "invalid filter" not in "\n".join(screen_lines(app))
                out.append((node.data.kind, text, frames_in_view(app.query_one(PacketTable))))
        return out

    shown = asyncio.run(go())
    kinds = {k for k, _t, _f in shown}
    assert "pair" in kinds and kinds & {"child", "enc"}, kinds
    for kind, text, frames in shown:
        assert "=" not in text.replace("==", ""), text  # no short form left
        want = subprocess.run(["tshark", "-r", str(cap), "-Y", text, "-T", "fields", "-e", "frame.number"],
                              capture_output=True, text=True, check=True).stdout.split()
        assert frames == [int(f) for f in want], (kind, text)
