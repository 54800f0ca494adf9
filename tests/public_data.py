"""Third-party captures, materialised at test time instead of committed.

Captures other projects published (their test suites, fetched as read-only git snapshots) are not
ours to commit: each folder's tests/data/<folder>/PROVENANCE.md names the repository, commit, path
and licence, and MANIFEST below says where the bytes are read from when the tests run:

* the steering repository's shared corpus (``../shared/corpus`` beside the checkout, or
  ``$IPSECSCOPE_SHARED``/corpus), or
* the fetch mirror's git directory (``$IPSECSCOPE_MIRROR``, default /work/.mirror):
  ``git --git-dir=MIRROR/OWNER+NAME/repo show COMMIT:PATH``.

The bytes are checked against the sha256 the tests were written for and cached under
.pytest_cache/public-data/<folder>/<name> (gitignored). A machine with neither source gets the
same paths, not existing: tests using them skip with the reason (tests/conftest.py's autouse
fixture), they never fail for want of data.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".pytest_cache" / "public-data"
MIRROR = Path(os.environ.get("IPSECSCOPE_MIRROR", "/work/.mirror"))


class Source(NamedTuple):
    repo: str  # OWNER+NAME under the mirror
    commit: str
    path: str  # path inside that commit
    sha256: str


def _shared_dirs() -> list[Path]:
    env = os.environ.get("IPSECSCOPE_SHARED")
    # .ci/run links shared/ beside its clone; worktrees live one level deeper (/work/wt/NAME)
    return [Path(env)] if env else [ROOT.parent / "shared", ROOT.parent.parent / "shared"]


JOY = ("cisco+joy", "21770513e27ad10cde7c1ab7c1e6f024c8668119")
OPENSWAN = ("xelerance+Openswan", "86dff2b44667566f5cfbdca9de987aab8ef60b36")
SCAPY = ("secdev+scapy", "ac38b273405b038104df096fe941878937da87cd")
ZEEK = ("zeek+zeek", "a13de64fbbdb01f90961c04719b308fbbb6d199e")
ARKIME = ("arkime+arkime", "2d2f3678796bcedc6655a276f476b7ddd457f3f2")
ZSI = ("corelight+zeek-spicy-ipsec", "4a7f0041aa121d5bc1813cf47b8b2a17ed713273")
LIBRESWAN = ("libreswan+libreswan", "0c4e3eccfbb2cdfa1e21c154ee847a141a611a4f")

# tests/data-relative name -> where it comes from (keep in step with the folders' PROVENANCE.md)
MANIFEST: dict[str, Source] = {
    "joy/ikev1.pcap": Source(*JOY, "test/pcaps/ikev1.pcap",
                             "9afec10d01cd20e5ccbb02a9461ddf50441e4c2430626c3901b2e8ba7ff3a460"),
    "joy/ikev2.pcap": Source(*JOY, "test/pcaps/ikev2.pcap",
                             "5251e0ed4a73d0aa1b18f043b8c91189a506e5d0ccba10200da35056be411589"),
    "openswan-unit/lp08-parentR1notify.pcap": Source(
        *OPENSWAN, "tests/unit/libpluto/lp08-parentR1/parentR1notify.pcap",
        "8584b186fe83792036f864715ab21e0cc9b94d4295637b81a7c083c652d63ea3"),
    "openswan-unit/lp104-v1rwnatN1.pcap": Source(
        *OPENSWAN, "tests/unit/libpluto/lp104-v1rwnatM2/v1rwnatN1.pcap",
        "b9f52633560a8f85e182c8bc99dab4914e6feb5da6af809bcf3346028b8793db"),
    "openswan-unit/lp108-v1rwnatN3.pcap": Source(
        *OPENSWAN, "tests/unit/libpluto/lp108-v1rwnatQI1/v1rwnatN3.pcap",
        "0edf0bc236ccc3fd53ae7f380839d11fb7c98e1cca1b1a124fdd18fc34d39e1a"),
    "libreswan/weirdike-eastwest.pcap-ike.pcap": Source(
        *LIBRESWAN, "testing/pluto/replay-authip-01/weirdike-eastwest.pcap-ike.pcap",
        "ddffc4c24c4ff2e32bfb41bc8d056d958bed7e755e282577a529187eb8fa45c1"),
    "scapy/ikev2_nat_t.pcapng": Source(*SCAPY, "test/pcaps/ikev2_nat_t.pcapng",
                                       "58c748c33388614a767d90345b38b827098d4d3f9609f7075e3ff58a4f49b6ad"),
    "scapy/ikev2_notify_redirect.pcap": Source(
        *SCAPY, "test/pcaps/ikev2_notify_redirect.pcap",
        "2a18e98df25f9f46306fe019eeec793b6a83f5d77f450b48ea0f05fabb378236"),
    "zeek/ip6_esp.pcap": Source(*ZEEK, "testing/btest/Traces/ip6_esp.pcap",
                                "86a744efb23d141e1b404a2f7c667053d7dfff8db572fef87b379dd84055066b"),
    "zeek/ipv6_zero_len_ah.pcap": Source(*ZEEK, "testing/btest/Traces/ipv6_zero_len_ah.pcap",
                                         "64ab887517f3b8dcc294c3bc86c8bc36fb5925e1339c3054e4e13127534c7bb6"),
    "zeek/baseline/core.ipv6_esp/output": Source(
        *ZEEK, "testing/btest/Baseline/core.ipv6_esp/output",
        "1c12cb0e8290a3269351fae854759ac95613bd7b4b733c7a8456fe4bec45a02f"),
    "arkime/IKEv1.pcap": Source(*ARKIME, "tests/pcap/IKEv1.pcap",
                         "289db7cabf920d9c563b6061d76e0b746cf4009ec395efc83cc804ed63c0dba7"),
    "arkime/IKEv1.test": Source(*ARKIME, "tests/pcap/IKEv1.test",
                         "6e1b78717dac4236f2401823b628bc24b8330ce7482b184bdd652f23c7e2e787"),
    "arkime/IKEv2.pcap": Source(*ARKIME, "tests/pcap/IKEv2.pcap",
                         "b2c006dade28a708ecc8d08e30b9a0247ad1e803a6b7be1b4ce6cdf715d9ea09"),
    "arkime/IKEv2.test": Source(*ARKIME, "tests/pcap/IKEv2.test",
                         "d5df137ebd607cc9c7cefc74f4d1ef8aa235102ff789fab2175f6be3c0550108"),
    "arkime/ike-cert_synthetic.pcap": Source(*ARKIME, "tests/pcap/ike-cert_synthetic.pcap",
                         "e2320e85bfe4f229aa2729525d4605bcf8f19150b0953e00ef29607004317579"),
    "arkime/ike-cert_synthetic.test": Source(*ARKIME, "tests/pcap/ike-cert_synthetic.test",
                         "baa6fc8fa57ff36aabcef90871d2272ae99dd5e45dedb8845e5ece941a3c3ad4"),
    "zeek-spicy-ipsec/IPsec_ESP-AH_tunnel_mode.cap": Source(
        *ZSI, "tests/traces/IPsec_ESP-AH_tunnel_mode.cap",
        "483125a2d52558f4542274072025e2ec9bc0625788c223b9cf175e953430ae8e"),
    "zeek-spicy-ipsec/ipsec-ikev1-isakmp-aggressive-mode.pcap": Source(
        *ZSI, "tests/traces/ipsec-ikev1-isakmp-aggressive-mode.pcap",
        "6014cf732dc2f548c62bf7dcfc09b4e75fcd3cc6ec19996f3e4b708b2556bc7f"),
    "zeek-spicy-ipsec/ipsec-ikev1-payload-bad-length.pcap": Source(
        *ZSI, "tests/traces/ipsec-ikev1-payload-bad-length.pcap",
        "6e166c3b942ef9f3e38d8692f5a11bd925fb6c521dd4f2507e0ee57632ac7198"),
    "zeek-spicy-ipsec/ipsec-ikev1-zero-length.pcap": Source(
        *ZSI, "tests/traces/ipsec-ikev1-zero-length.pcap",
        "81595ab924852dc36c18c4fe431acb75d0e07b6a9d412195d73334d9af4e156d"),
    "zeek-spicy-ipsec/ipsec.cap": Source(
        *ZSI, "tests/traces/ipsec.cap",
        "eb1fe80c930e3b246c6619d88863625a50a49a45c6554296af2b1b663e65819f"),
    "zeek-spicy-ipsec/ipsec_client.pcap": Source(
        *ZSI, "tests/traces/ipsec_client.pcap",
        "7cc91d691998efbf7f40a48370d3c3b42140c17ce9af958ea048775e2eb6ab1a"),
    "zeek-spicy-ipsec/baseline/basic/ipsec.log": Source(
        *ZSI, "tests/baseline/analyzer.basic/ipsec.log",
        "6c36c3ab466c3ba62ad6dbbb05d654f3193c9c18778c39a069dfb77042ca745a"),
    "zeek-spicy-ipsec/baseline/ikev1-a/ipsec.log": Source(
        *ZSI, "tests/baseline/analyzer.ikev1-a/ipsec.log",
        "0ff29f300b185becadc7c316e6227056e6ecda042699574b49cce7af1fd12bfa"),
    "zeek-spicy-ipsec/baseline/ikev1-b/ipsec.log": Source(
        *ZSI, "tests/baseline/analyzer.ikev1-b/ipsec.log",
        "74773fa900c0781479d6babf225ee212cdf07444adc1978ffe19d8b0cfa8dc03"),
    "zeek-spicy-ipsec/baseline/ikev1-c/ipsec.log": Source(
        *ZSI, "tests/baseline/analyzer.ikev1-c/ipsec.log",
        "be00e0a203b09552d99b8c06cdd32ae91deceba5685fea599939662b041d01df"),
    "zeek-spicy-ipsec/baseline/ipsec_esp/ipsec.log": Source(
        *ZSI, "tests/baseline/analyzer.ipsec_esp/ipsec.log",
        "dfe7700f6cb003b61b7057d5af56a8439bfbd0afc1a76d3bb109dd49772bebef"),
    "zeek-spicy-ipsec/baseline/ipsec_ah/stdout": Source(
        *ZSI, "tests/baseline/analyzer.ipsec_ah/.stdout",
        "9666f85258a3bb239f16214c3fb582d62f40df6036377e5f7be6c9b7dc822469"),
}

_missing: dict[Path, str] = {}


def _read(src: Source) -> bytes | None:
    if src.repo == "shared":
        for d in _shared_dirs():
            p = d / "corpus" / src.path
            if p.is_file():
                return p.read_bytes()
        return None
    git_dir = MIRROR / src.repo / "repo"
    if not git_dir.is_dir():
        return None
    r = subprocess.run(["git", f"--git-dir={git_dir}", "show", f"{src.commit}:{src.path}"],
                       capture_output=True, timeout=60)
    return r.stdout if r.returncode == 0 else None


def public(rel: str) -> Path:
    """The path of third-party file ``rel`` (as named in MANIFEST), materialised if a source is
    here. It does not exist when none is: ``missing(path)`` then says why."""
    src = MANIFEST[rel]
    out = CACHE / rel
    if out.is_file() and (hashlib.sha256(out.read_bytes()).hexdigest() == src.sha256):
        return out
    data = _read(src)
    where = "the shared corpus" if src.repo == "shared" else f"{MIRROR / src.repo} at {src.commit[:10]}"
    if data is None:
        _missing[out] = f"third-party {rel} not on this machine (needs {src.path} from {where})"
        return out
    if hashlib.sha256(data).hexdigest() != src.sha256:
        _missing[out] = f"third-party {rel}: {src.path} from {where} is not the file the tests expect"
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, out)  # several xdist workers may materialise the same file
    _missing.pop(out, None)
    return out


def public_files(folder: str) -> list[Path]:
    """Every third-party file MANIFEST lists under ``folder``, materialised where possible."""
    return [public(rel) for rel in sorted(MANIFEST) if rel.startswith(folder + "/")]


def public_dir(folder: str) -> Path:
    """The folder holding every third-party file MANIFEST lists under ``folder``, materialised
    where possible (``missing(dir)`` says why not when one of them is not here)."""
    files = public_files(folder)
    gone = [why for p in files if (why := missing(p))]
    out = CACHE / folder
    if gone:
        _missing[out] = gone[0]
    return out


def is_public(p: object) -> bool:
    return isinstance(p, Path) and CACHE in p.parents


def missing(p: Path) -> str | None:
    """Why third-party file ``p`` is not here, or None when it is."""
    if p in _missing or not p.exists():
        return _missing.get(p, f"third-party {p.relative_to(CACHE)} not materialised")
    return None


def need(*paths: Path) -> None:
    """Inside a test: skip it when one of ``paths`` is a third-party file not on this machine
    (for tests the conftest fixture cannot see through, e.g. a path looked up in a table)."""
    import pytest

    for p in paths:
        if is_public(p) and (why := missing(p)):
            pytest.skip(why)


def data_id(p: Path) -> str:
    """A test id for a capture under tests/data or materialised here: its folder/name either way."""
    return str(p.relative_to(CACHE if CACHE in p.parents else ROOT / "tests" / "data"))
