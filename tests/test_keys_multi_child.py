"""One IKE SA with many CHILD SAs of different proposals, created one after another by
CREATE_CHILD_SA (issue 11 item 11): each CHILD key binds to its own CHILD SA (by thread and by
its ``CHILD_SA name{id}``), never to the proposal of another.

tests/data/keys/multi-child is a real run of two strongSwan peers (make_multi_child_sample.py):
AES-GCM-16 (IKE_AUTH), then AES-GCM-8, AES-GCM-12, AES-CCM-12, NULL+HMAC-SHA2-256,
AES-CBC+HMAC-MD5 and AES-CBC+AES-XCBC, each with its own subnets and 3 pings.
"""

from __future__ import annotations

import ipaddress
import os
import re
import subprocess

import pytest
from conftest import DATA, IPSECSCOPE, needs_tshark

from ipsecscope.api import iter_decrypted
from ipsecscope.keys import load_keys
from ipsecscope.model.iana import EncrTransform as E
from ipsecscope.model.iana import IntegTransform as I  # noqa: E741

SAMPLE = DATA / "keys" / "multi-child"
CAPTURE = SAMPLE / "capture.pcapng"
# inner subnet number -> (encr, integ), as negotiated (the CHILD SAs' order of creation)
PROPOSALS = {0: (E.ENCR_AES_GCM_16, I.NONE), 1: (E.ENCR_AES_GCM_8, I.NONE), 2: (E.ENCR_AES_GCM_12, I.NONE),
             3: (E.ENCR_AES_CCM_12, I.NONE), 4: (E.ENCR_NULL, I.AUTH_HMAC_SHA2_256_128),
             5: (E.ENCR_AES_CBC, I.AUTH_HMAC_MD5_96), 6: (E.ENCR_AES_CBC, I.AUTH_AES_XCBC_96)}


def one_thread(log_text: str) -> str:
    """The same log as if one worker thread had handled every job: charon reuses its threads, so
    a thread that derived one CHILD SA's keys derives the next one's too (the NULL CHILD SA logs
    no encryption key, and used to inherit the previous CHILD SA's 20-byte one)."""
    return re.sub(r"^(\S+ )\d{2}\[", r"\g<1>07[", log_text, flags=re.MULTILINE)


def logs(tmp_path):
    out = []
    for side in ("left", "right"):
        f = SAMPLE / f"charon-{side}.log"
        g = tmp_path / f"one-thread-{side}.log"
        g.write_text(one_thread(f.read_text()))
        out += [f, g]
    return out


@pytest.mark.parametrize("which", range(4), ids=["left", "left-one-thread", "right", "right-one-thread"])
def test_every_child_key_binds_to_its_own_child_sa(tmp_path, which):
    log = logs(tmp_path)[which]
    store = load_keys([log])
    assert not store.warnings, store.warnings
    assert len(store.ike) == 1 and len(store.esp) == 2 * len(PROPOSALS)
    by_spi = {k.spi: k for k in store.esp}
    seen = set()
    for p in iter_decrypted(CAPTURE, store):
        assert p.status == "ok", (p.frame, hex(p.spi), p.status, p.reason)
        inner_src = ipaddress.ip_address(p.inner[12:16])
        n = int(str(inner_src).split(".")[2])  # 10.x.N.1: the CHILD SA's own subnet
        k = by_spi[p.spi]
        assert (k.encr, k.integ) == PROPOSALS[n], (p.frame, n, k.encr, k.integ)
        seen.add(n)
    assert seen == set(PROPOSALS)


def test_decrypt_cli_decrypts_every_esp_packet(tmp_path):
    for log in logs(tmp_path):
        r = subprocess.run([*IPSECSCOPE, "decrypt", str(CAPTURE), "-k", str(log), "--jsonl", os.devnull],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert "42 ESP: 42 decrypted, 0 icv_failed, 0 no_key" in r.stderr, r.stderr


@needs_tshark
def test_tshark_agrees_where_it_can(tmp_path):
    """tshark 4.0 decrypts the GCM, NULL+SHA2-256 and CBC+MD5 CHILD SAs with the esp_sa that
    `keys convert` writes from one log (CCM and AES-XCBC have no Wireshark 4.0 esp_sa name and are
    written as comments); where it decrypts, the ICV is good and the inner addresses are ours."""
    prof = tmp_path / "profile"
    prof.mkdir()
    r = subprocess.run([*IPSECSCOPE, "keys", "convert", str(logs(tmp_path)[1]), "--to", "esp_sa", "-o", str(prof)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    cmd = ["tshark", "-n", "-r", str(CAPTURE), "-o", "esp.enable_encryption_decode:TRUE",
           "-o", "esp.enable_authentication_check:TRUE", "-Y", "esp", "-T", "fields", "-E", "occurrence=l",
           "-e", "frame.number", "-e", "esp.spi", "-e", "esp.icv_good", "-e", "ip.src", "-e", "ip.dst"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True,
                         env={**os.environ, "WIRESHARK_CONFIG_DIR": str(prof)}).stdout
    ours = {p.frame: p for p in iter_decrypted(CAPTURE, load_keys([logs(tmp_path)[1]]))}
    agreed = set()
    for line in out.splitlines():
        frame, spi, icv, src, dst = line.split("\t")
        p = ours[int(frame)]
        n = int(str(ipaddress.ip_address(p.inner[12:16])).split(".")[2])
        if PROPOSALS[n][0] == E.ENCR_AES_CCM_12 or PROPOSALS[n][1] == I.AUTH_AES_XCBC_96:
            assert src.startswith("198.18."), line  # tshark cannot decrypt it: outer header only
            continue
        assert icv == "1" and (src, dst) == (str(ipaddress.ip_address(p.inner[12:16])),
                                             str(ipaddress.ip_address(p.inner[16:20]))), line
        agreed.add(n)
    assert agreed == {0, 1, 2, 4, 5}
