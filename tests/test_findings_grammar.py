"""Finding texts agree in number with their counts ("1 packet does not", "2 packets do not").

The texts come from the rules run over real captures (samples/ with their keys, and the Wireshark
corpus); the count-dependent ones are rendered again at n=1 and n=2 by setting a real flow's
counters, so every count that reaches a sentence is read both ways.
"""

from __future__ import annotations

import ast
import re
from dataclasses import replace

import pytest
from conftest import ROOT, SAMPLES

from ipsecscope.analysis.rules import evaluate
from ipsecscope.model.plural import noun, plural, verb
from ipsecscope.session import Session

# Nouns the finding texts count; "1 <noun>s" is always wrong.
NOUNS = ("packet", "message", "SA", "flow", "exchange", "request", "response", "time", "retransmission",
         "transmission", "notification", "failure", "number", "peer", "negotiation", "SPI")
ONE_PLURAL = re.compile(r"(?<![\d.,])\b1 (?!of\b)(?:[\w-]+ ){0,3}?(?:" + "|".join(NOUNS) + r")s\b")
# A count of one followed (within a short noun phrase) by a plural verb.
ONE_VERB = re.compile(r"(?<![\d.,])\b1 (?!of\b)(?:[\w-]+ ){0,4}?(?:do|were|have|are|fail)\b")
MANY_VERB = re.compile(r"\b(?:[2-9]|\d{2,}) (?:[\w-]+ ){1,3}?(?:packet|message|exchange|SA|request) "
                       r"(?:does|was|has|is|fails)\b")

# Flow counters that reach a finding's text, and the condition each needs to fire.
COUNTERS = ("lost", "duplicates", "capture_duplicates", "reordered", "icv_failed", "after_rekey", "after_delete",
            "unanswered_tail", "unsupported", "outside_ts")


def bad_grammar(text: str) -> list[str]:
    return ["(s)"] * ("(s)" in text) + ONE_PLURAL.findall(text) + ONE_VERB.findall(text) + MANY_VERB.findall(text)


# "(s)" where no count is given: --help texts that describe an argument ("capture file(s)")
NO_COUNT = {("cli/common.py", "file(s)"), ("cli/keys.py", "SPI(s)")}


def test_no_message_writes_a_plural_as_s_in_brackets():
    """Every text a command prints with a count (CLI messages, decoder reasons, finding texts)
    goes through model.plural: no string literal outside docstrings says "frame(s)" (the CLI's
    messages and decoders' reasons did, 798b42e)."""
    found = []
    for path in sorted((ROOT / "ipsecscope").rglob("*.py")):
        tree = ast.parse(path.read_text())
        docs = {id(n.body[0].value) for n in ast.walk(tree)
                if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
        rel = path.relative_to(ROOT / "ipsecscope").as_posix()
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
                found += [(rel, m) for m in re.findall(r"[\w/-]+\((?:e)?s\)", node.value) if (rel, m) not in NO_COUNT]
    assert not found


def sample_sessions():
    for d in sorted(p for p in SAMPLES.iterdir() if (p / "capture.pcapng").exists()):
        s = Session()
        keys = d / "keys"
        if keys.is_dir():
            s.add_key_files([p for p in sorted(keys.iterdir())
                             if any(ln.strip() and not ln.startswith("#") for ln in p.read_text().splitlines())])
        s.load(d / "capture.pcapng")
        yield d.name, s


def test_helpers_at_one_and_two():
    assert [plural(n, "ESP packet") for n in (1, 2)] == ["1 ESP packet", "2 ESP packets"]
    assert plural(1200, "IKE response", sep=True) == "1,200 IKE responses"
    assert [verb(n, "does") for n in (1, 2)] == ["does", "do"]
    assert [verb(n, "was") for n in (1, 0)] == ["was", "were"]
    assert [verb(n, "fails") for n in (1, 2)] == ["fails", "fail"]
    assert [noun(n, "time") for n in (1, 3)] == ["time", "times"]


def test_checker_catches_the_old_texts():
    # The ESP-ICV-FAILED sentence before the fix, and other forms the rules used to write.
    assert bad_grammar("Most packets on SPI 0x00000001 verify, 1 do not: the key is right")
    assert bad_grammar("1 ESP packets 10.0.0.1 -> 10.0.0.2 after it was deleted")
    assert bad_grammar("3 packet(s) on SPI 0x1")
    assert bad_grammar("1 exchange(s) were answered")
    assert not bad_grammar("1 of 2 ESP packets 10.0.0.1 -> 10.0.0.2 fails its ICV: corruption")
    assert not bad_grammar("2 of 3 ESP packets 10.0.0.1 -> 10.0.0.2 fail their ICV")


def test_sample_findings_read_right():
    seen = 0
    for name, s in sample_sessions():
        for f in s.findings:
            seen += 1
            for text in (f.title, f.explanation):
                assert not bad_grammar(text), (name, f.code, text)
    assert seen > 20


@pytest.mark.parametrize("n", [1, 2])
def test_flow_counters_at_one_and_two(n):
    """Every count-carrying counter of each sample's first flows set to n (the flow's addresses, SPI,
    frames and times kept) and the rules evaluated again: the texts that count them agree with n."""
    fired: set[str] = set()
    for name, s in sample_sessions():
        table = s.table
        for key, f in list(table.flows.items())[:4]:
            table.flows[key] = replace(f, **dict.fromkeys(COUNTERS, n), decrypted=max(f.decrypted, 3))
            try:
                for x in evaluate(table):
                    for text in (x.title, x.explanation):
                        assert not bad_grammar(text), (name, n, x.code, text)
                    if x.code == "ESP-ICV-FAILED" and x.sa and f"0x{f.spi:08x}" in x.sa:
                        fired.add(x.code)
                        assert f"verify, {n} {'does' if n == 1 else 'do'} not" in x.explanation
                    if x.sa and f"0x{f.spi:08x}" in x.sa:
                        fired.add(x.code)
            finally:
                table.flows[key] = f
    assert {"ESP-ICV-FAILED", "ESP-SEQ-GAP", "ESP-REPLAY", "ESP-REORDER"} <= fired, fired
