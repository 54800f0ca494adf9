"""Count-dependent wording for user-facing text (findings, views, messages): one place for "1 packet" / "2 packets" and "does"/"do".

Rules build their titles and explanations from counts; writing "packet(s)" or a fixed plural verb
per rule got "1 do not" wrong (ESP-ICV-FAILED). Rule texts and the TUI's counts go through these.
"""

from __future__ import annotations

# Irregular plurals used in finding texts; anything else takes "s" ("SA" -> "SAs", "ICV" -> "ICVs").
_IRREGULAR = {"time": "times", "was": "were", "is": "are", "has": "have", "does": "do"}


def noun(n: int, word: str, many: str | None = None) -> str:
    """``word`` in the number ``n`` asks for: ``noun(1, "packet")`` -> "packet", else "packets"."""
    if n == 1:
        return word
    return many if many is not None else _IRREGULAR.get(word, word + "s")


def plural(n: int, word: str, many: str | None = None, *, sep: bool = False) -> str:
    """The count and the noun: ``plural(1, "packet")`` -> "1 packet", ``plural(2, "ESP packet")`` ->
    "2 ESP packets" (only the last word inflects). ``sep`` writes thousands separators (1,000)."""
    head, _, last = word.rpartition(" ")
    text = noun(n, last, many)
    num = f"{n:,}" if sep else str(n)
    return f"{num} {head} {text}" if head else f"{num} {text}"


def verb(n: int, one: str, many: str | None = None) -> str:
    """The verb agreeing with a count: ``verb(1, "does")`` -> "does", ``verb(2, "does")`` -> "do";
    regular verbs drop their "s": ``verb(2, "fails")`` -> "fail"."""
    if n == 1:
        return one
    if many is not None:
        return many
    if one in _IRREGULAR:
        return _IRREGULAR[one]
    return one[:-1] if one.endswith("s") else one
