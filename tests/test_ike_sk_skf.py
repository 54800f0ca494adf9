"""IKEv2 fragmentation (RFC 7383) and eight IKE/ESP suites from real strongSwan peers: SKF decrypted
fragment by fragment and reassembled.

tests/data/ikev2-skf/<name>/ holds a capture made by two charons (tests/netns_peers.py) with
``fragmentation = force`` and ``charon.fragment_size = 180``, so the IKE_AUTH request and response
are split into several Encrypted Fragment payloads, plus the initiator's charon log (ike/chd 4)
that ipsecscope.keys reads the IKE SA keys from. Regenerate with
``python3 tests/test_ike_sk_skf.py`` (root; makes network namespaces in 198.18.0.0/15).
charon's own log says into how many fragments it split each message and which payloads the
reassembled message carried; the test compares ours with that.
"""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data" / "ikev2-skf"
# name -> (IKE proposal, ESP proposal)
SCENARIOS = {
    "gcm": ("aes256gcm16-prfsha256-ecp256", "aes256gcm16"),
    "cbc-sha256": ("aes128-sha256-prfsha256-modp2048", "aes128-sha256"),
    # Suites the Wireshark corpus does not have, from a real peer: ChaCha20-Poly1305 (RFC 7634),
    # AES-CCM with the AES-XCBC PRF (RFC 4434), 3DES/HMAC-MD5, AES-CBC-192 with AES-XCBC-96,
    # SHA2-384/512, AES-CTR (RFC 5930) with HMAC-SHA1-96.
    "chacha20": ("chacha20poly1305-prfsha512-x25519", "chacha20poly1305"),
    "ccm-prfxcbc": ("aes128ccm12-prfaesxcbc-ecp256", "aes192ccm16"),
    "3des-md5": ("3des-md5-prfmd5-modp2048", "3des-md5"),
    "cbc-xcbc": ("aes192-aesxcbc-prfaesxcbc-ecp256", "aes128-aesxcbc"),
    "cbc-sha384": ("aes256-sha384-prfsha384-ecp384", "aes256-sha512"),
    "ctr-sha1": ("aes128ctr-sha1-prfsha1-ecp256", "aes128ctr-sha1"),
}

def regenerate() -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    import netns_peers as np

    # Small fragments force RFC 7383 fragmentation of IKE_AUTH (a PSK IKE_AUTH is ~270 bytes).
    np.STRONGSWAN_CONF = np.STRONGSWAN_CONF.replace(
        "    load_modular = no\n", "    load_modular = no\n    fragment_size = 180\n")
    np.PLUGINS = np.PLUGINS.replace(" hmac ", " hmac md5 xcbc ")  # HMAC-MD5, AES-XCBC MAC and PRF
    for name, (ike, esp) in SCENARIOS.items():
        left, right = np.psk_confs("skf", ike, esp, "ipsecscope-skf-test-psk",
                                   conn_opts={"fragmentation": "force", "mobike": "no"},
                                   child_opts={"rekey_time": "0", "life_time": "0", "start_action": "none"})
        with tempfile.TemporaryDirectory() as tmp:
            with np.StrongswanPair(tmp, left, right) as pair:
                pair.initiate("net")
                pair.ping(2)
                pair.terminate_ike("skf")
            out = DATA / name
            out.mkdir(parents=True, exist_ok=True)
            shutil.copy(pair.capture_path, out / "capture.pcapng")
            shutil.copy(pair.left.log, out / "charon-left.log")
        print(f"wrote {out}")


def _messages(name: str):
    from conftest import ike_messages

    return ike_messages(DATA / name / "capture.pcapng")


_ABBR = {"IDi": 35, "IDr": 36, "AUTH": 39, "SA": 33, "TSi": 44, "TSr": 45, "No": 40, "KE": 34, "D": 42, "CPRQ": 47,
         "CPRP": 47}


def charon_view(name: str) -> tuple[dict[tuple[str, int], int], dict[tuple[str, int], list[int]]]:
    """From the initiator's log: fragments per IKE_AUTH message, and payload types of each message."""
    log = (DATA / name / "charon-left.log").read_text()
    frags: dict[tuple[str, int], int] = {}
    types: dict[tuple[str, int], list[int]] = {}
    for m in re.finditer(r"(generating|parsed) IKE_AUTH (request|response) (\d+) \[ (.*?) \]", log):
        key = (m.group(2), int(m.group(3)))
        body = m.group(4)
        ef = re.fullmatch(r"EF\((\d+)/(\d+)\)", body)
        if ef:
            frags[key] = int(ef.group(2))
            continue
        types[key] = [_ABBR[t] if t in _ABBR else 41 for t in body.split()]
    return frags, types


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_real_skf_reassembles(name: str) -> None:
    from ipsecscope.crypto.ike_sk import IkeDecryptor
    from ipsecscope.keys import load_keys

    if not (DATA / name / "capture.pcapng").exists():
        pytest.skip(f"{DATA / name} not generated (python3 tests/test_ike_sk_skf.py)")
    keys = load_keys([DATA / name / "charon-left.log"])
    d = IkeDecryptor(keys)
    frags, types = charon_view(name)
    msgs = [d.decrypt(m) for m in _messages(name)]
    auth = [m for m in msgs if m.header.exchange == 35]
    for role, resp in (("request", False), ("response", True)):
        mine = [m for m in auth if m.header.is_response == resp]
        n = frags[(role, 1)]
        assert len(mine) == n >= 2
        assert all(m.payloads[0].type == 53 and m.decrypted and m.icv_ok for m in mine)
        assert [m.payloads[0].fragment_number for m in mine] == list(range(1, n + 1))
        whole = [m for m in mine if m.inner]
        assert len(whole) == 1 and whole[0] is mine[-1]
        assert f"reassembled from {n} SKF fragments" in (whole[0].crypto_note or "")
        assert [p.type for p in whole[0].inner] == types[(role, 1)]
        assert all("fragment" in (m.crypto_note or "") for m in mine[:-1])
    assert d.stats.reassembled == 2 and d.stats.icv_failed == 0


if __name__ == "__main__":
    regenerate()
