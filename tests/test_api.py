"""The script API (ipsecscope.api): its documented example runs, DecryptedPacket's shape, and
iter_decrypted agreeing with the ground truth of the synthetic captures."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import re
from pathlib import Path

import pytest

import ipsecscope.api as api
from ipsecscope.api import DecryptedPacket, decrypt_capture, iter_decrypted
from ipsecscope.errors import ExportError, KeyFileError
from tests.conftest import ROOT, SAMPLES

SYN = SAMPLES / "synthetic"


def _examples() -> list[str]:
    """The example in api.py's docstring, plus any README python block that uses the API."""
    doc = api.__doc__ or ""
    block = doc.split("::\n", 1)[1].split("\n\n``keys``")[0]
    out = ["\n".join(line[4:] for line in block.splitlines())]
    readme = ROOT / "README.md"
    if readme.exists():
        for code in re.findall(r"```python\n(.*?)```", readme.read_text(), re.S):
            if "ipsecscope.api" in code:
                out.append(code)
    return out


@pytest.mark.parametrize("code", _examples())
def test_documented_example_runs(code: str, tmp_path: Path) -> None:
    code = code.replace("/tmp/", f"{tmp_path}/")  # parallel test runs must not share an output file
    buf = io.StringIO()
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        with contextlib.redirect_stdout(buf):
            exec(compile(code, "<api example>", "exec"), {})
    finally:
        os.chdir(cwd)
    out = buf.getvalue()
    assert "SPI 0xe5000001" in out and " ok " in out
    assert re.search(r"seq 4294967296 ok", out)  # the first packet after the 2^32 wrap
    assert "21 decrypted, 0 ICV failures" in out


def test_decrypted_packet_shape() -> None:
    assert dataclasses.fields(DecryptedPacket)[0].name == "frame"
    assert DecryptedPacket.__dataclass_params__.frozen
    assert hasattr(DecryptedPacket, "__slots__")
    p = next(iter_decrypted(SYN / "ipv6-transport-natt.pcap", SYN / "ipv6-transport-natt.keys.json"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.status = "x"  # type: ignore[misc]


@pytest.mark.parametrize("name", ["esn-wrap", "aead", "cbc-ctr-hmac", "ipv6-transport-natt"])
def test_iter_decrypted_matches_ground_truth(name: str) -> None:
    truth = json.loads((SYN / f"{name}.truth.json").read_text())["frames"]
    seen = 0
    for p in iter_decrypted(SYN / f"{name}.pcap", [SYN / f"{name}.keys.json"]):
        t = truth[str(p.frame)]
        assert p.status == t["status"], (p.frame, p.reason)
        assert p.seq == t["seq"] and p.esn_hi == t["esn_hi"]
        assert p.udp_encap == t["udp_encap"]
        if p.status == "ok":
            assert p.inner.hex() == t["inner"] and p.next_header == t["next_header"]
            assert p.keys is not None and p.keys.source.endswith(f"{name}.keys.json:{p.keys.source.split(':')[-1]}")
            ip = p.ip_packet()
            assert ip is not None and ip[0] >> 4 in (4, 6) and ip.endswith(p.inner)
        else:
            assert p.inner is None and p.reason
        seen += 1
    assert seen == sum(1 for t in truth.values() if "status" in t)


def test_keystore_paths_and_errors(tmp_path: Path) -> None:
    with pytest.raises(ExportError):
        decrypt_capture(SYN / "aead.pcap", SYN / "aead.keys.json")  # nowhere to write
    with pytest.raises(ExportError):
        decrypt_capture(SYN / "aead.pcap", SYN / "aead.keys.json", out=tmp_path / "x", fmt="csv")
    bad = tmp_path / "keys.json"
    bad.write_text('{"schema": "ipsecscope.keys/1", "esp": [{"spi": "0x1"}]}')
    with pytest.raises(KeyFileError):
        list(iter_decrypted(SYN / "aead.pcap", bad))
    # no keys at all: every ESP packet is no_key, nothing raised
    assert {p.status for p in iter_decrypted(SYN / "aead.pcap")} == {"no_key"}


def test_reprs_never_show_keys() -> None:
    """Printing a result in a script must not print key material (keys only with --show-keys)."""
    from ipsecscope.crypto.esp import EspDecryptor  # noqa: F401  (EspResult comes from a real run)

    keys = json.loads((SYN / "aead.keys.json").read_text())["esp"]
    secrets = [k["enc_key"] for k in keys]
    for p in iter_decrypted(SYN / "aead.pcap", SYN / "aead.keys.json"):
        text = repr(p)
        assert p.keys is not None and not any(s in text or bytes.fromhex(s).__repr__()[2:-1] in text for s in secrets)


def test_the_flat_api_is_annotated():
    """House rule: type hints on public functions. Every function of ``ipsecscope.__all__`` and
    every public method of its classes names the type of each parameter and of its result
    (``decrypt_capture``'s keys, out and result were unannotated)."""
    import inspect

    import ipsecscope

    bare = []
    for name in ipsecscope.__all__:
        obj = getattr(ipsecscope, name)
        fns = [(name, obj)] if inspect.isfunction(obj) else [
            (f"{name}.{m}", f) for m, f in vars(obj).items()
            if inspect.isfunction(f) and not m.startswith("_")] if inspect.isclass(obj) else []
        for qual, fn in fns:
            sig = inspect.signature(fn)
            missing = [p for p in sig.parameters.values() if p.name not in ("self", "cls")
                       and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.annotation is p.empty]
            if missing or sig.return_annotation is sig.empty:
                bare.append(f"{qual}({', '.join(p.name for p in missing)})"
                            + (" -> ?" if sig.return_annotation is sig.empty else ""))
    assert not bare, bare


AH_CASES = [("ah/ah-v4.pcap", "ah/ah-v4.keys.json"), ("ah/ah-v6.pcap", "ah/ah-v6.keys.json"),
            ("ah/ah-frag.pcap", "ah/ah-frag.keys.json"), ("ah/ah-esp.pcap", "ah/ah-esp.keys.json"),
            ("ah/ah-v4.pcap", None), ("ipv6-ext/ipv6-ext-esp.pcap", "ipv6-ext/ipv6-ext-esp.keys.json")]


@pytest.mark.parametrize(("cap", "keys"), AH_CASES, ids=lambda x: str(x))
def test_iter_decrypted_lists_ah_as_decrypt_writes_it(cap: str, keys: str | None, tmp_path: Path) -> None:
    """AH packets are yielded too (protocol "AH"), each with the ICV result decrypt's JSON record
    gives (tests/test_decrypt_ah.py holds that against scapy), its payload whenever the ICV did
    not fail, and ip_packet() byte for byte the packet decrypt writes (IPv6 extension headers in
    front of ESP/AH included); the ESP an AH packet protects follows it unless AH failed."""
    from ipsecscope.capture import open_capture
    from tests.conftest import DATA

    k = [DATA / keys] if keys else None
    out, jl = tmp_path / "out.pcapng", tmp_path / "out.jsonl"
    decrypt_capture(DATA / cap, k, out=out, jsonl=jl)
    recs = [json.loads(line) for line in jl.read_text().splitlines()]
    got = list(iter_decrypted(DATA / cap, k))
    assert [(p.frame, p.protocol, f"0x{p.spi:08x}", p.seq, p.status) for p in got] == \
        [(r["frame"], r["protocol"], r["spi"], r["seq"], r["status"]) for r in recs]
    for p in got:
        assert p.verified == (p.status == "ok")
        if p.protocol == "AH":
            assert (p.inner is None) == (p.status == "icv_failed")
            assert p.keys is None if p.status == "no_key" else p.keys is not None
    with open_capture(out) as r:
        written = [bytes(f.data) for f in r]
    # decrypt writes a payload unless it is ESP for the ESP path (AH next header 50) or a dummy (59)
    mine = [p.ip_packet() for p in got if p.inner is not None and p.next_header not in (50, 59)]
    assert mine == written and written
    if cap == "ah/ah-esp.pcap":  # frame 3: the AH ICV failed, its ESP is not processed
        assert [(p.frame, p.protocol) for p in got if p.frame == 3] == [(3, "AH")]
