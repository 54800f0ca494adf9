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


# Capitals read as a word, not letter by letter ("a NAT", "a NO_PROPOSAL_CHOSEN"); any other run
# of up to 4 capitals is an initialism, read by its letters ("an SA", "an SPI", "an HMAC").
_SPOKEN_CAPS = frozenset({"NAT", "NO", "NON", "NULL", "CERT", "SHA", "MODP", "VID", "LAN", "WAN", "DES", "NAPT"})
_LETTER_VOWEL = frozenset("AEFHILMNORSX")  # letters whose names start with a vowel sound: "eff", "aitch"
_U_CONSONANT = ("uni", "use", "usu", "uti", "one")  # "a unique", "a USE_TRANSPORT_MODE", "a one-way"


def article(word: str) -> str:
    """"a" or "an" for the word that follows, by its sound: exchange, notify and payload names
    ("an IKE_AUTH", "a CREATE_CHILD_SA", "an INFORMATIONAL", "an R-U-THERE", "a NO_PROPOSAL_CHOSEN"),
    initialisms ("an SA", "an ESP", "a UDP") and numbers ("an 8-byte", "an 11", "an 18", "a 1460").
    A rule that names what it writes through a variable cannot write the article by hand: "sent an
    {exn} request" said "an CREATE_CHILD_SA"."""
    w = word.strip().lstrip("(\"'")
    if not w:
        return "a"
    head = ""
    for ch in w:
        if ch in "-_ /(.,:":
            break
        head += ch
    if head[:1].isdigit():
        digits = "".join(c for c in head if c.isdigit())
        # eight, eighty, eight hundred, eighteen, eleven (thousand): the spoken number starts with a vowel
        return "an" if digits[0] == "8" or (len(digits) % 3 == 2 and digits[:2] in ("11", "18")) else "a"
    caps = ""
    for ch in head:
        if not ch.isupper():
            break
        caps += ch
    # an initialism: all capitals ("SA", "ESP"), or capitals with the i/r of a payload's side ("IDi", "Nr")
    if caps and caps not in _SPOKEN_CAPS and len(caps) <= 4 and (head == caps or head[len(caps):] in ("i", "r")
                                                                 or len(caps) >= 2):
        return "an" if caps[0] in _LETTER_VOWEL else "a"
    low = head.lower()
    if low.startswith(_U_CONSONANT):
        return "a"
    if low.startswith(("hour", "honest", "honou")):
        return "an"
    return "an" if low[:1] in "aeiou" else "a"


def with_article(word: str) -> str:
    """``word`` with its article: ``with_article("IKE_AUTH")`` -> "an IKE_AUTH", ``with_article("CREATE_CHILD_SA")`` -> "a CREATE_CHILD_SA"."""
    return f"{article(word)} {word}"
