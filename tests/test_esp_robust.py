"""Bad input never raises: random ESP bytes for every suite through EspDecryptor, and random frames
through the decrypt engine, only ever produce counted statuses."""

from __future__ import annotations

import random
import struct
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from ipsecscope.crypto.esp import EspDecryptor
from ipsecscope.crypto.suites import ENCR, INTEG
from ipsecscope.export import engine
from ipsecscope.keys import KeyStore
from ipsecscope.model.iana import IntegTransform as I
from ipsecscope.model.keys import EspSaKeys
from ipsecscope.model.packets import EspPacket

STATUSES = {"ok", "icv_failed", "no_key", "malformed", "unsupported"}


def _store() -> KeyStore:
    rng = random.Random(1)
    store = KeyStore()
    spi = 0x100
    for e in ENCR.values():
        for i in (INTEG.values() if not e.aead else [INTEG[I.NONE]]):
            key = rng.randbytes(e.key_sizes[-1] + e.salt_len)
            store.add_esp(EspSaKeys(spi, e.id, key, i.id, rng.randbytes(i.key_len)))
            spi += 1
    # keys of the wrong length: "unsupported" with a reason, not an exception
    store.add_esp(EspSaKeys(spi, ENCR[12].id, b"short", I.AUTH_HMAC_SHA1_96, bytes(20)))
    return store


STORE = _store()
MAX_SPI = 0x100 + len(STORE.esp)


@settings(max_examples=300, deadline=None)
@given(spi=st.integers(0xFF, MAX_SPI), body=st.binary(max_size=120), seq=st.integers(0, 2**32 - 1))
def test_random_esp_never_raises(spi: int, body: bytes, seq: int) -> None:
    d = EspDecryptor(STORE)
    data = struct.pack("!II", spi, seq) + body
    r = d.decrypt(EspPacket(1, 0.0, "198.18.0.1", "198.18.0.2", spi, seq, data))
    assert r.status in STATUSES and (r.status == "ok" or r.reason)
    if spi == MAX_SPI - 1:
        assert r.status == "unsupported" and "key" in r.reason
    if spi == 0xFF:
        assert r.status == "no_key"


def test_random_frames_through_the_engine(tmp_path: Path) -> None:
    rng = random.Random(7)
    cap = tmp_path / "junk.pcap"
    with open(cap, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for i in range(400):
            n = rng.randrange(0, 200)
            frame = bytearray(rng.randbytes(n))
            if n > 40 and i % 2:  # make many of them look like Ethernet/IPv4/ESP or UDP 4500
                frame[12:15] = b"\x08\x00\x45"
                frame[23] = rng.choice((50, 17, 6, 51))
                frame[20:22] = rng.choice((b"\x00\x00", b"\x20\x00", b"\x40\x00"))
                if frame[23] == 17 and n > 46:
                    frame[36:38] = b"\x11\x94"
            f.write(struct.pack("<IIII", i, 0, n, n) + bytes(frame))
    stats = engine.run(cap, STORE, out=str(tmp_path / "o.pcapng"), jsonl_out=str(tmp_path / "o.jsonl"),
                       opts=engine.Options(keep_other=True))
    # every frame counted once: ESP, AH (a junk frame whose IPv4 total length runs past the frame is
    # read from the bytes there, as tshark reads it) or other
    assert stats.frames == 400 and stats.esp + stats.ah + stats.other == 400


def _gcm_sa():
    import sys

    from tests.conftest import SAMPLES

    sys.path.insert(0, str(SAMPLES / "synthetic"))
    from espgen import Sa

    return Sa(0xF0F0F0F0, "198.18.9.1", "198.18.9.2", "aes-gcm16", random.Random(5).randbytes(36))


@settings(max_examples=200, deadline=None)
@given(payload=st.binary(max_size=80), nh=st.sampled_from([4, 41, 59, 6, 17, 50, 200]))
def test_valid_icv_random_plaintext_is_ok_only_when_it_holds_its_packet(payload: bytes, nh: int) -> None:
    """Issue 16 #2 as a fuzz test: any plaintext under a valid ICV (the empty one with next header
    4 included) is "ok" only if the payload holds the packet its next header names."""
    sa = _gcm_sa()
    from espgen import esp_encrypt

    from ipsecscope.crypto.esp import check_payload
    from ipsecscope.errors import DecryptError

    store = KeyStore()
    store.add_esp(EspSaKeys(sa.spi, ENCR[20].id, sa.enc_key, I.NONE, b"", src=sa.src, dst=sa.dst))
    esp = esp_encrypt(sa, 1, payload, nh, bytes(8))
    r = EspDecryptor(store).decrypt(EspPacket(1, 0.0, sa.src, sa.dst, sa.spi, 1, esp))
    pad = (-(len(payload) + 2)) % 4
    plain = payload + bytes(range(1, pad + 1)) + bytes((pad, nh))
    try:
        check_payload(plain)
        accepted = True
    except DecryptError:
        accepted = False
    assert r.status == ("ok" if accepted else "malformed"), (r.status, r.reason)
    if r.status == "ok" and nh in (4, 41):
        assert len(r.inner) >= (20 if nh == 4 else 40)
    if not payload and nh == 4:
        assert r.status == "malformed" and "cannot hold" in r.reason
