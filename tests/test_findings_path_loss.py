"""What a capture at the sender cannot see: its own ESP lost or damaged after the capture point.

tests/data/esp-path-loss (make.py: two strongSwan peers, samples/lib/bridge.py between them,
tcpdump on the left gateway's side of the bridge; bridge.log is the ground truth):

* frames 11-22: the bridge corrupts the left's ESP after the capture point; the right drops each
  packet on its ICV check (RFC 4303 §3.4.4) and never answers, while DPD still passes. ESP-
  RETURN-STOPPED listed only the right's outbound SA/policy, nothing behind it, or a middlebox:
  never that our ESP does not reach the peer intact, which the capture cannot rule out.
* frames 33-60: the wan link's MTU is 1280, nobody sends ICMP: the 1460-byte packets are lost, the
  148-byte ones answered (a PMTU black hole). Nothing said "the unanswered packets are the big
  ones": only ESP-RETURN-STOPPED episodes, without sizes.
* frames 61-68: the right's charon is gone; the left's CREATE_CHILD_SA goes unanswered:
  IKE-DEAD-PEER said "sent an CREATE_CHILD_SA request".
"""

from __future__ import annotations

import ast
import json
import subprocess

import pytest
from conftest import DATA, IPSECSCOPE, ROOT, needs_tshark

HERE = DATA / "esp-path-loss"
CAP = HERE / "capture.pcap"
KEYS = HERE / "charon-left.log"


def findings(capture) -> dict[str, list[dict]]:
    r = subprocess.run([*IPSECSCOPE, "findings", str(capture), "-k", str(KEYS), "--json"],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    out: dict[str, list[dict]] = {}
    for f in json.loads(r.stdout)["findings"]:
        out.setdefault(f["code"], []).append(f)
    return out


def cut(tmp_path, last: int):
    path = tmp_path / f"first-{last}.pcap"
    subprocess.run(["editcap", "-r", str(CAP), str(path), f"1-{last}"], check=True, capture_output=True)
    return path


def bridge(action: str) -> set[int]:
    """Sequence numbers of the left's ESP the bridge corrupted / could not pass (its log)."""
    rows = [json.loads(ln) for ln in (HERE / "bridge.log").read_text().splitlines() if ln.startswith("{")]
    return {r["seq"] for r in rows if r.get("action") == action and r.get("dir") == "lan>wan"}


def tshark_esp(capture) -> dict[int, tuple[int, int]]:
    """frame -> (ESP sequence number, IP length) of the left's ESP, as tshark reads it."""
    out = subprocess.run(["tshark", "-n", "-r", str(capture), "-Y", "esp && ip.src == 198.18.0.1", "-T", "fields",
                          "-e", "frame.number", "-e", "esp.sequence", "-e", "ip.len"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    return {int(a): (int(b), int(c)) for a, b, c in (ln.split("\t") for ln in out.splitlines())}


def test_dead_peer_names_the_exchange_with_its_article() -> None:
    (f,) = findings(CAP)["IKE-DEAD-PEER"]
    assert "198.18.0.1 sent a CREATE_CHILD_SA request (message ID" in f["explanation"]


def _literal_articles(tree: ast.AST) -> list[int]:
    """Lines of f-strings writing "a"/"an" by hand before a value they format ("an {exn}")."""
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            parts = node.values
            for i, p in enumerate(parts[:-1]):
                if isinstance(p, ast.Constant) and isinstance(p.value, str) and isinstance(parts[i + 1], ast.FormattedValue):
                    words = p.value.rsplit(None, 1)
                    if p.value.endswith(" ") and words and words[-1].lower() in ("a", "an"):
                        bad.append(node.lineno)
    return bad


def test_no_text_writes_a_fixed_article_before_a_formatted_value() -> None:
    """The class: whatever a finding or message names through a variable (an exchange, notify or
    payload name, a number) takes its article from model.plural.with_article ("a CREATE_CHILD_SA",
    "an IKE_AUTH", "an 8-byte key"), never a fixed "a"/"an" in the f-string."""
    found = {}
    for path in sorted((ROOT / "ipsecscope").rglob("*.py")):
        lines = _literal_articles(ast.parse(path.read_text(), str(path)))
        if lines:
            found[str(path.relative_to(ROOT))] = lines
    assert found == {}


@pytest.mark.parametrize(("word", "want"), [
    ("CREATE_CHILD_SA", "a"), ("IKE_AUTH", "an"), ("INFORMATIONAL", "an"), ("IKE_SA_INIT", "an"),
    ("R-U-THERE", "an"), ("NO_PROPOSAL_CHOSEN", "a"), ("NAT_DETECTION_SOURCE_IP", "a"), ("Quick Mode", "a"),
    ("Aggressive Mode", "an"), ("SA", "an"), ("SK", "an"), ("UDP", "a"), ("IDi", "an"), ("Nr", "an"), ("TSi", "a"),
    ("8-byte", "an"), ("11-byte", "an"), ("18-character", "an"), ("16-byte", "a"), ("1460", "a"), ("80", "an"),
])
def test_article_by_sound(word: str, want: str) -> None:
    from ipsecscope.model.plural import with_article
    assert with_article(word) == f"{want} {word}"


@needs_tshark
def test_corrupted_outbound_esp_is_among_the_causes(tmp_path) -> None:
    """Cut at the end of the corrupt phase (frame 26, before healing): the run without an answer
    is exactly the packets the bridge corrupted, and the finding names that cause."""
    cap = cut(tmp_path, 26)
    (f,) = findings(cap)["ESP-RETURN-STOPPED"]
    esp = tshark_esp(cap)
    run = {s for fr, (s, _n) in esp.items() if fr >= 11}
    assert run == bridge("corrupt") == {4, 5, 6, 7, 8, 9}
    assert f["title"].startswith("ESP from 198.18.0.2 stopped: 198.18.0.1 sent 6 more packets with no reply")
    assert "198.18.0.1's ESP does not reach 198.18.0.2 intact (lost or altered on the way)" in f["explanation"]
    assert "RFC 4303 §3.4.4" in f["explanation"]
    assert "198.18.0.1's ESP arrives at 198.18.0.2 and passes its ICV check" in f["hint"]
    assert "ESP-PATH-MTU" not in findings(cap)  # same-size packets lost: no black hole


@needs_tshark
def test_pmtu_black_hole_says_the_unanswered_packets_are_the_big_ones() -> None:
    fs = findings(CAP)
    (f,) = fs["ESP-PATH-MTU"]
    esp = tshark_esp(CAP)
    assert f["title"] == ("ESP 198.18.0.1 -> 198.18.0.2 on SPI 0xe43c400e: the unanswered packets are the big ones "
                          "(1460 bytes; up to 148 answered), no ICMP: a PMTU black hole")
    # evidence: the big packets among the flow's last 16, each one the bridge could not pass
    first, *big = f["frames"]
    assert first == min(esp)  # the flow's first packet leads (live mode's identity of a finding)
    assert big and all(esp[fr][1] == 1460 and esp[fr][0] in bridge("too_big") for fr in big)
    assert big == sorted(fr for fr, (s, n) in esp.items() if n == 1460 and s > max(s for s, _ in esp.values()) - 16)
    assert "path MTU is somewhere from 148 to 1459 bytes" in f["explanation"]
    assert f["facts"]["outer_size"] == 1460 and f["facts"]["answered_max"] == 148


@needs_tshark
def test_return_stopped_during_the_black_hole_says_so(tmp_path) -> None:
    """Cut inside the black hole (frame 36: two pings of 1400 bytes unanswered), as live mode sees
    it then: ESP-RETURN-STOPPED, the finding on screen, says the unanswered packets are the big ones."""
    cap = cut(tmp_path, 36)
    fs = findings(cap)
    (f,) = fs["ESP-RETURN-STOPPED"]
    assert "The unanswered packets are the big ones" in f["explanation"]
    assert "none of the 2 packets of 1460 bytes got an answer, while 6 packets of up to 148 bytes did" in f["explanation"]
    assert f["hint"].startswith("See ESP-PATH-MTU")
    assert [x["frames"] for x in fs["ESP-PATH-MTU"]] == [[5, 33, 35]]


def test_fragments_that_never_came_are_not_blamed_on_the_snap_length() -> None:
    """tests/data/tunnels/frag-inside.pcap frame 17: a datagram whose last fragment never came,
    every frame captured whole. CAPTURE-MALFORMED's hint said "A truncated capture (snaplen)";
    the fragments were lost (or the capture ended first), which no -s 0 fixes (field11's note)."""
    r = subprocess.run([*IPSECSCOPE, "findings", str(DATA / "tunnels" / "frag-inside.pcap"), "--json"],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    (f,) = [f for f in json.loads(r.stdout)["findings"] if f["code"] == "CAPTURE-MALFORMED"]
    assert "IP fragments never completed" in f["explanation"] and f["frames"] == [17]
    assert "snaplen" not in f["hint"] and "-s 0" not in f["hint"]
    assert f["hint"].startswith("1 IP datagram never completed: its other fragments were not in the capture")
