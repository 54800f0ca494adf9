"""CHILD SA KEYMAT (RFC 7296 §2.17) against real strongSwan 5.9.8 peers.

samples/<scenario>/charon-{left,right}.log are written by two charons at ``ike 4, chd 4``: they
hexdump SK_d, the KEYMAT seed ([g^ir |] Ni | Nr) and the CHILD SA keys they derived. We derive the
same keys with crypto.keymat.child_keys from SK_d and the seed and compare. A second test does what
the feature is for: take only SK_d from the log, read the nonces and SPIs from the capture
(decrypting IKE_AUTH with the IKE keys), derive the ESP keys, and decrypt the capture's ESP.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ipsecscope.crypto import esp
from ipsecscope.crypto.keymat import child_keys, derive_pending, encr_key_len, integ_key_len
from ipsecscope.errors import UnknownAlgorithmError
from ipsecscope.model.iana import EncrTransform as E
from ipsecscope.model.iana import IntegTransform as I
from ipsecscope.model.iana import PrfTransform as P
from ipsecscope.model.keys import IkeSaKeys

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
SKF = Path(__file__).resolve().parent / "data" / "ikev2-skf"  # eight suites, see test_ike_sk_skf.py
LOGS = sorted(SAMPLES.glob("*/charon-*.log")) + sorted(SKF.glob("*/charon-left.log"))

# strongSwan proposal tokens -> IANA (only what the samples use, plus the common ones)
_ENCR = {"AES_CBC": E.ENCR_AES_CBC, "AES_CTR": E.ENCR_AES_CTR, "AES_GCM_8": E.ENCR_AES_GCM_8,
         "AES_GCM_12": E.ENCR_AES_GCM_12, "AES_GCM_16": E.ENCR_AES_GCM_16, "AES_CCM_8": E.ENCR_AES_CCM_8,
         "AES_CCM_12": E.ENCR_AES_CCM_12, "AES_CCM_16": E.ENCR_AES_CCM_16, "3DES_CBC": E.ENCR_3DES,
         "CHACHA20_POLY1305": E.ENCR_CHACHA20_POLY1305}
_INTEG = {"HMAC_SHA1_96": I.AUTH_HMAC_SHA1_96, "HMAC_SHA2_256_128": I.AUTH_HMAC_SHA2_256_128,
          "HMAC_SHA2_384_192": I.AUTH_HMAC_SHA2_384_192, "HMAC_SHA2_512_256": I.AUTH_HMAC_SHA2_512_256,
          "AES_XCBC_96": I.AUTH_AES_XCBC_96, "HMAC_MD5_96": I.AUTH_HMAC_MD5_96}
_PRF = {"PRF_HMAC_MD5": P.PRF_HMAC_MD5, "PRF_HMAC_SHA1": P.PRF_HMAC_SHA1, "PRF_HMAC_SHA2_256": P.PRF_HMAC_SHA2_256,
        "PRF_HMAC_SHA2_384": P.PRF_HMAC_SHA2_384, "PRF_HMAC_SHA2_512": P.PRF_HMAC_SHA2_512,
        "PRF_AES128_XCBC": P.PRF_AES128_XCBC, "PRF_AES128_CMAC": P.PRF_AES128_CMAC}

_LINE = re.compile(r"^\S+ (\d+)\[(\w+)\] (?:<[^>]*> )?(.*)$")
_DUMP_HDR = re.compile(r"^(.+?) => (\d+) bytes @ 0x[0-9a-f]+$")
_DUMP_ROW = re.compile(r"^\s*\d+: ((?:[0-9A-F]{2} ?)+)")


def esp_proposal(text: str) -> tuple[int, int | None, int | None]:
    """'AES_CBC_256/HMAC_SHA2_256_128/MODP_2048/NO_EXT_SEQ' -> (encr, key bits, integ)."""
    encr = bits = integ = None
    for tok in text.split("/"):
        m = re.fullmatch(r"(.+)_(128|192|256)", tok)
        if m and m.group(1) in _ENCR:
            encr, bits = _ENCR[m.group(1)], int(m.group(2))
        elif tok in _ENCR:
            encr = _ENCR[tok]
        elif tok in _INTEG:
            integ = _INTEG[tok]
    assert encr is not None, text
    return encr, bits, integ


@dataclass
class Derivation:
    """One CHILD SA key derivation as logged by one charon thread."""

    prf: int
    esp: str
    seed: bytes
    dh: bytes | None
    keys: dict[str, bytes] = field(default_factory=dict)
    sk_d_candidates: list[bytes] = field(default_factory=list)


def parse_log(path: Path) -> tuple[list[Derivation], list[tuple[str, bytes]]]:
    """(CHILD derivations, [(ike proposal, SK_d)...]) from a charon ike/chd 4 log."""
    dumps: dict[str, tuple[str, int, bytearray]] = {}  # thread -> open hexdump
    events: list[tuple[str, str, bytes | str]] = []  # (thread, name, value) in log order

    def close(th: str) -> None:
        if th in dumps:
            name, n, buf = dumps.pop(th)
            assert len(buf) == n, (path, name)
            events.append((th, name, bytes(buf)))

    for line in path.read_text(errors="replace").splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        th, text = m.group(1), m.group(3)
        row = _DUMP_ROW.match(text)
        if row and th in dumps:
            dumps[th][2].extend(bytes.fromhex(row.group(1).replace(" ", "")))
            continue
        close(th)
        h = _DUMP_HDR.match(text)
        if h:
            dumps[th] = (h.group(1), int(h.group(2)), bytearray())
        elif text.startswith("selected proposal: "):
            events.append((th, "proposal", text.split(": ", 1)[1]))
    for th in list(dumps):
        close(th)

    derivs: list[Derivation] = []
    sk_ds: list[tuple[str, bytes]] = []
    ike_prop = ""
    cur: dict[str, Derivation] = {}
    last_esp: dict[str, str] = {}
    last_dh: dict[str, bytes] = {}
    for th, name, val in events:
        if name == "proposal":
            assert isinstance(val, str)
            if val.startswith("IKE:"):
                ike_prop = val
            else:
                last_esp[th] = val
        elif name == "Sk_d secret":
            assert isinstance(val, bytes)
            sk_ds.append((ike_prop, val))
        elif name == "DH secret":
            last_dh[th] = val
        elif name == "seed":
            prf = next(_PRF[t] for t in ike_prop.split("/") if t in _PRF)
            dh = last_dh.pop(th, None)
            d = Derivation(prf, last_esp[th], val, dh if dh and val.startswith(dh) else None,
                           sk_d_candidates=[s for _p, s in sk_ds])
            cur[th] = d
            derivs.append(d)
        elif name.startswith(("encryption ", "integrity ")) and name.endswith(" key") and th in cur:
            cur[th].keys[name] = val
    return derivs, sk_ds


def _derive(d: Derivation, sk_d: bytes):
    encr, bits, integ = esp_proposal(d.esp.split(":", 1)[1])
    rest = d.seed[len(d.dh):] if d.dh else d.seed
    ni, nr = rest[:len(rest) // 2], rest[len(rest) // 2:]
    return child_keys(d.prf, sk_d, ni, nr, encr, bits, integ, 0x1111, 0x2222, "198.18.0.1", "198.18.0.2",
                      g_ir=d.dh)


@pytest.mark.skipif(not LOGS, reason="no samples/*/charon-*.log (made by samples/make_samples.sh)")
@pytest.mark.parametrize("log", LOGS, ids=lambda p: f"{p.parents[1].name}/{p.parent.name}/{p.name}")
def test_keymat_matches_strongswan(log: Path) -> None:
    derivs, _ = parse_log(log)
    for d in derivs:
        want_ei = d.keys["encryption initiator key"]
        want_er = d.keys["encryption responder key"]
        matches = [sk for sk in d.sk_d_candidates if _derive(d, sk)[0].enc_key == want_ei]
        assert matches, f"no SK_d of {log} reproduces the CHILD keys derived from seed {d.seed[:8].hex()}…"
        i2r, r2i = _derive(d, matches[-1])
        assert (i2r.enc_key, r2i.enc_key) == (want_ei, want_er)
        assert i2r.auth_key == d.keys.get("integrity initiator key", b"")
        assert r2i.auth_key == d.keys.get("integrity responder key", b"")
        # SPI / direction convention: i->r traffic carries the responder's SPI
        assert (i2r.spi, i2r.src, i2r.dst) == (0x2222, "198.18.0.1", "198.18.0.2")
        assert (r2i.spi, r2i.src, r2i.dst) == (0x1111, "198.18.0.2", "198.18.0.1")
        if d.dh:
            # PFS: without g^ir the keys differ (why PFS CHILD SAs cannot be derived from a capture)
            no_pfs = child_keys(d.prf, matches[-1], d.seed[len(d.dh):], b"", *esp_proposal(d.esp[4:]), 1, 2)
            assert no_pfs[0].enc_key != want_ei


def test_logs_cover_pfs_every_prf_and_suite() -> None:
    if not LOGS:
        pytest.skip("no samples yet")
    derivs = [d for log in LOGS for d in parse_log(log)[0]]
    assert any(d.dh for d in derivs) and any(not d.dh for d in derivs)
    assert any("integrity initiator key" in d.keys for d in derivs)  # a non-AEAD suite too
    if SKF.exists():
        assert {d.prf for d in derivs} >= {P.PRF_HMAC_MD5, P.PRF_HMAC_SHA1, P.PRF_HMAC_SHA2_256,
                                           P.PRF_HMAC_SHA2_384, P.PRF_HMAC_SHA2_512, P.PRF_AES128_XCBC}
        assert {esp_proposal(d.esp[4:])[0] for d in derivs} >= {
            E.ENCR_AES_GCM_16, E.ENCR_AES_CBC, E.ENCR_CHACHA20_POLY1305, E.ENCR_AES_CCM_16, E.ENCR_3DES,
            E.ENCR_AES_CTR}


def test_key_lengths() -> None:
    # RFC 4106 §8.1 / RFC 3686 §5.1 / RFC 4309 §7.1 / RFC 7634 §4: key + salt
    assert encr_key_len(E.ENCR_AES_GCM_16, 256) == 36
    assert encr_key_len(E.ENCR_AES_CTR, 128) == 20
    assert encr_key_len(E.ENCR_AES_CCM_8, 192) == 27
    assert encr_key_len(E.ENCR_CHACHA20_POLY1305, None) == 36
    assert encr_key_len(E.ENCR_3DES, None) == 24
    assert encr_key_len(None, None) == 0  # AH
    assert integ_key_len(I.AUTH_HMAC_SHA2_512_256) == 64 and integ_key_len(I.NONE) == 0
    assert integ_key_len(I.AUTH_AES_CMAC_96) == 16
    with pytest.raises(UnknownAlgorithmError, match="Key Length"):
        encr_key_len(E.ENCR_AES_CBC, None)
    with pytest.raises(UnknownAlgorithmError):
        encr_key_len(E.ENCR_AES_CBC, 100)


# ---- the feature: ESP decrypted with keys derived from SK_d and the capture -------------------

def _scenario_parts(name: str):
    from ipsecscope.capture import open_capture
    from ipsecscope.crypto.ike_sk import IkeDecryptor
    from ipsecscope.decode.demux import Decoder
    from ipsecscope.decode.ike import parse_ike
    from ipsecscope.keys import load_keys
    from ipsecscope.model.packets import EspPacket, IkeDatagram

    d = SAMPLES / name
    keys = load_keys([d / "keys" / "ikev2_decryption_table"])
    dec, ike_dec = Decoder(), IkeDecryptor(keys)
    ike, esp_pkts = [], []
    with open_capture(d / "capture.pcapng") as r:
        for raw in r:
            pkt = dec.decode(raw)
            if isinstance(pkt, IkeDatagram):
                ike.append(ike_dec.decrypt(parse_ike(pkt)))
            elif isinstance(pkt, EspPacket):
                esp_pkts.append(pkt)
    return keys, ike, esp_pkts


@pytest.mark.parametrize("scenario", ["healthy-gcm", "cbc-sha2-pfs"])
def test_esp_decrypts_with_keys_derived_from_sk_d(scenario: str) -> None:
    from ipsecscope.model.ike import NoncePayload, SaPayload

    if not (SAMPLES / scenario / "capture.pcapng").exists():
        pytest.skip(f"samples/{scenario} not generated")
    _derivs, sk_ds = parse_log(SAMPLES / scenario / "charon-left.log")
    ike_prop, sk_d = sk_ds[0]  # the first IKE SA's SK_d: the only secret we take from the log
    prf = next(_PRF[t] for t in ike_prop.split("/") if t in _PRF)
    keys, ike, esp_pkts = _scenario_parts(scenario)
    init_req = next(m for m in ike if m.header.exchange == 34 and not m.header.is_response)
    init_resp = next(m for m in ike if m.header.exchange == 34 and m.header.is_response
                     and m.header.spi_r != bytes(8))
    ni = init_req.find(NoncePayload)[0].data
    nr = init_resp.find(NoncePayload)[0].data
    auth_req = next(m for m in ike if m.header.exchange == 35 and not m.header.is_response and m.decrypted)
    auth_resp = next(m for m in ike if m.header.exchange == 35 and m.header.is_response and m.decrypted)
    assert auth_req.icv_ok and auth_resp.icv_ok
    spi_i = int.from_bytes(auth_req.find(SaPayload)[0].proposals[0].spi, "big")
    chosen = auth_resp.find(SaPayload)[0].proposals[0]
    spi_r = int.from_bytes(chosen.spi, "big")
    encr = next(t for t in chosen.transforms if t.type == 1)
    integ = next((t.id for t in chosen.transforms if t.type == 3), None)
    i2r, r2i = child_keys(prf, sk_d, ni, nr, encr.id, encr.key_length, integ, spi_i, spi_r,
                          init_req.src, init_req.dst)
    by_spi = {i2r.spi: i2r, r2i.spi: r2i}
    ok = 0
    for p in esp_pkts:
        k = by_spi.get(p.spi)
        if k is None:
            continue
        assert (p.src, p.dst) == (k.src, k.dst)
        inner, nh, _pad = esp.decrypt(k, p.data)  # raises IntegrityError on a wrong key
        assert nh in (4, 41, 59) and (nh != 4 or inner[0] >> 4 == 4)
        ok += 1
    assert ok >= 2 and {p.spi for p in esp_pkts if p.spi in by_spi} == set(by_spi)


class _Tracker:
    def __init__(self, reqs) -> None:
        self.reqs, self.done = list(reqs), []

    def pending_keymat(self):
        return [r for r in self.reqs if r.child_id not in {c for c, _ in self.done}]

    def keymat_done(self, child_id: int, source: str) -> None:
        self.done.append((child_id, source))


def test_derive_pending_with_the_real_tracker() -> None:
    """Session path: Tracker reports the CHILD SA, derive_pending makes its ESP keys from SK_d."""
    from ipsecscope.state.tracker import Tracker

    scenario = "healthy-gcm"
    if not (SAMPLES / scenario / "capture.pcapng").exists():
        pytest.skip("samples/healthy-gcm not generated")
    _derivs, sk_ds = parse_log(SAMPLES / scenario / "charon-left.log")
    ike_keys, ike, esp_pkts = _scenario_parts(scenario)
    import dataclasses

    from ipsecscope.keys import KeyStore

    # the Wireshark table row (no SK_d) first, then what a charon log or JSON key file gives: the
    # same IKE SA with prf and SK_d; the row must not hide the SK_d
    keys = KeyStore()
    keys.add_ike(ike_keys.ike[0])
    keys.add_ike(dataclasses.replace(ike_keys.ike[0], prf=int(P.PRF_HMAC_SHA2_256), sk_d=sk_ds[0][1]))
    tr = Tracker()
    for m in ike:
        tr.on_ike(m)
    pending = list(tr.pending_keymat())
    assert any(not r.pfs_group for r in pending)
    derived = list(derive_pending(tr, keys))
    assert derived and all("KEYMAT" in k.source for k in derived)
    n = 0
    for k in derived:
        for p in esp_pkts:
            if p.spi == k.spi:
                esp.decrypt(k, p.data)  # IntegrityError if the derived key were wrong
                n += 1
    assert n >= 2
    # reported once: a second call derives nothing new
    assert list(derive_pending(tr, keys)) == []
    # PFS requests are skipped, pending ones without SK_d stay pending
    fake = _Tracker([dataclasses.replace(pending[0], child_id=99, pfs_group=19)])
    assert list(derive_pending(fake, keys)) == [] and fake.done == []


def test_derive_pending_without_sk_d_keeps_waiting() -> None:
    from ipsecscope.model.sa import KeymatRequest

    req = KeymatRequest(1, b"\1" * 8, b"\2" * 8, b"n" * 32, b"m" * 32, 0x1, 0x2, "198.18.0.1", "198.18.0.2",
                        3, E.ENCR_AES_GCM_16, 256, None, False, None)

    class Store:
        def __init__(self, k):
            self.k = k

        def ike_lookup(self, a, b):
            return self.k

    tr = _Tracker([req])
    assert list(derive_pending(tr, Store(None))) == [] and tr.done == []
    ike = IkeSaKeys(b"\1" * 8, b"\2" * 8, E.ENCR_AES_GCM_16, b"", b"", I.NONE)
    assert list(derive_pending(tr, Store(ike))) == []  # no SK_d / prf
    ike = IkeSaKeys(b"\1" * 8, b"\2" * 8, E.ENCR_AES_GCM_16, b"", b"", I.NONE, prf=P.PRF_HMAC_SHA2_256,
                    sk_d=b"d" * 32)
    out = list(derive_pending(tr, Store(ike)))
    assert [(k.spi, k.src) for k in out] == [(0x2, "198.18.0.1"), (0x1, "198.18.0.2")]
    assert tr.done and tr.done[0][0] == 1


SESSION_CASES = ["dh-retry", "healthy-gcm"] + [f"skf/{p.name}" for p in sorted(SKF.glob("*"))]


@pytest.mark.parametrize("scenario", SESSION_CASES)
def test_session_decrypts_esp_with_only_ike_keys(scenario: str) -> None:
    """Through Session: IKE SA keys (with SK_d) from the charon log, every ESP key dropped."""
    from ipsecscope.keys import KeyStore, load_keys
    from ipsecscope.session import Session

    d = SKF / scenario[4:] if scenario.startswith("skf/") else SAMPLES / scenario
    if not (d / "capture.pcapng").exists():
        pytest.skip(f"samples/{scenario} not generated")
    full = load_keys([d / "charon-left.log"])
    assert full.esp  # the log has them, we do not use them
    only_ike = KeyStore()
    for k in full.ike:
        only_ike.add_ike(k)
    s = Session(keys=only_ike)
    s.load(d / "capture.pcapng")
    assert s.stats.derived_child_keys >= 2 and s.stats.icv_failed == 0 and s.stats.ike_icv_failed == 0
    if scenario != "healthy-gcm":  # one non-PFS CHILD SA carries all the ESP
        assert s.stats.decrypted == s.stats.esp > 0
    else:  # the rekeyed CHILD SA used PFS (ECP_256): its g^ir is secret, its packets stay opaque
        assert 0 < s.stats.decrypted < s.stats.esp
