"""Third-party captures stay out of the repository (tests/public_data.py materialises them)."""

from __future__ import annotations

import hashlib

import pytest
from conftest import DATA
from public_data import MANIFEST, missing, public


@pytest.mark.parametrize("rel", sorted(MANIFEST))
def test_each_materialised_file_is_named_in_its_provenance(rel):
    """PROVENANCE.md (our text, committed) names the upstream path and commit of what a test reads."""
    src = MANIFEST[rel]
    text = (DATA / rel.split("/")[0] / "PROVENANCE.md").read_text()
    assert src.path in text and src.commit[:10] in text, rel


def test_no_third_party_bytes_are_committed():
    """A file with the bytes of a MANIFEST entry was committed again in a migrated folder."""
    theirs = {src.sha256: rel for rel, src in MANIFEST.items()}
    folders = {rel.split("/")[0] for rel in MANIFEST}
    again = [(str(p.relative_to(DATA)), theirs[h]) for f in sorted(folders) for p in (DATA / f).rglob("*")
             if p.is_file() and (h := hashlib.sha256(p.read_bytes()).hexdigest()) in theirs]
    assert not again


@pytest.mark.parametrize("rel", sorted(MANIFEST))
def test_materialised_bytes_are_the_ones_tests_were_written_for(rel):
    p = public(rel)
    if why := missing(p):
        pytest.skip(why)
    assert hashlib.sha256(p.read_bytes()).hexdigest() == MANIFEST[rel].sha256
