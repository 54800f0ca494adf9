"""Third-party captures stay out of the repository (tests/public_data.py materialises them)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from conftest import DATA
from public_data import MANIFEST, Frames, missing, public


def _provenance(folder: str) -> str:
    """Our text saying where a folder's files come from: PROVENANCE.md (Wireshark's: MANIFEST.md)."""
    return "".join(p.read_text() for name in ("PROVENANCE.md", "MANIFEST.md") if (p := DATA / folder / name).is_file())


@pytest.mark.parametrize("rel", sorted(MANIFEST))
def test_each_materialised_file_is_named_in_its_provenance(rel):
    """PROVENANCE.md (our text, committed) names what a test reads: the upstream path and commit,
    the file's name in the shared corpus, or the records a cut keeps of which upstream capture."""
    src = MANIFEST[rel]
    text = _provenance(rel.split("/")[0])
    if isinstance(src, Frames):
        base = MANIFEST[src.base]
        assert Path(rel).name in text and base.path in text, rel
    elif src.repo == "shared":
        assert Path(rel).name in text and f"shared/corpus/{rel.split('/')[0]}" in text, rel
    else:
        assert src.path in text and src.commit[:10] in text, rel


def _committed() -> list[Path]:
    return sorted(p for p in DATA.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def test_no_third_party_bytes_are_committed():
    """No file anywhere under tests/data has the bytes of a MANIFEST entry (under any name: joy's
    ikev2.pcap is Wireshark's ikev2-decrypt-aes192ctr.pcap)."""
    theirs = {src.sha256: rel for rel, src in MANIFEST.items()}
    again = [(str(p.relative_to(DATA)), theirs[h]) for p in _committed()
             if (h := hashlib.sha256(p.read_bytes()).hexdigest()) in theirs]
    assert not again


def test_the_guard_sees_every_committed_folder():
    """The check above reads the folders the third-party files were in (it would pass vacuously
    on a tree it does not read)."""
    folders = {p.relative_to(DATA).parts[0] for p in _committed()}
    assert {rel.split("/")[0] for rel in MANIFEST} <= folders


@pytest.mark.parametrize("rel", sorted(MANIFEST))
def test_materialised_bytes_are_the_ones_tests_were_written_for(rel):
    p = public(rel)
    if why := missing(p):
        pytest.skip(why)
    assert hashlib.sha256(p.read_bytes()).hexdigest() == MANIFEST[rel].sha256


def test_a_cut_keeps_the_records_it_names():
    """The recipe (Frames) is the file header and exactly the named records of the whole capture,
    in order, as editcap cuts them: checked on the records, not only on the digest."""
    rel = "ndpi/derived/ipsec_isakmp_esp-260-263+268.pcap"
    cut, whole = public(rel), public(MANIFEST[rel].base)
    if why := missing(cut) or missing(whole):
        pytest.skip(why)

    def records(b: bytes) -> list[bytes]:
        out, off = [], 24
        while off < len(b):
            end = off + 16 + int.from_bytes(b[off + 8:off + 12], "little")
            out.append(b[off:end])
            off = end
        return out

    w, c = whole.read_bytes(), cut.read_bytes()
    assert len(records(w)) == 834 and c[:24] == w[:24]
    assert records(c) == [records(w)[n - 1] for n in (260, 261, 262, 263, 268)]
