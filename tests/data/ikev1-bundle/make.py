"""Writes ikev1-bundle.pcap and its key file (run from the repository root:
``.venv/bin/python tests/data/ikev1-bundle/make.py``).

A healthy IKEv1 AH+ESP bundle: samples/ikev1-dead-peer's Main Mode and Quick Mode (frames 1-9),
Quick Mode 1 and 2 made an AH+ESP bundle (RFC 2408 §4.2) by test_answer_not_offered_v1._ah_bundle
(an AH proposal, AH_SHA2-256 / HMAC-SHA2-256, under the ESP proposal's number, its SPI the ESP
SPI + 1) and encrypted again on the IV chain (tests/v1_reseal.py); its DPD Informationals (16-19)
kept; every ESP packet of frames 10-25 replaced by one AH+ESP packet on the negotiated SPIs:
ESP tunnel mode (AES-GCM-16-256) inside, AH over it, as a tunnel-mode bundle is applied
(RFC 4301 §4.5), signed and encrypted by scapy's SecurityAssociation (scapy/layers/ipsec.py).

Keys: KEYMAT of each protocol and SPI, RFC 2409 §5.5:
``KEYMAT = prf(SKEYID_d, protocol | SPI | Ni_b | Nr_b)``, extended ``K1 | K2 | ...`` with
``Kn = prf(SKEYID_d, Kn-1 | protocol | SPI | Ni_b | Nr_b)``; SKEYID_d from the sample's
charon-left.log (IKE level 4), Ni_b/Nr_b the Quick Mode nonces. The derivation is checked against
the ESP keys charon logged for the same SPIs (keys/esp_sa) before the AH keys are written.
Deterministic: fixed times and payloads."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from scapy.layers.inet import ICMP, IP  # noqa: E402
from scapy.layers.ipsec import AH, ESP, SecurityAssociation, zero_mutable_fields  # noqa: E402
from scapy.packet import Raw  # noqa: E402
from test_answer_not_offered_v1 import _ah_bundle, _qm_sa, _then, _v1_attr  # noqa: E402
from v1_reseal import SAMPLE, plaintexts, walk, write_mutant  # noqa: E402

from ipsecscope.capture import open_capture  # noqa: E402

sys.path.insert(0, str(ROOT / "samples" / "synthetic"))
from espgen import PcapWriter  # noqa: E402

A, B = "198.18.0.1", "198.18.0.2"
ESP_I, ESP_R = 0x5B62D3F3, 0xCD82FE91  # the sample's ESP SPIs: initiator's inbound, responder's
AH_I, AH_R = ESP_I + 1, ESP_R + 1  # _ah_bundle: the AH SPI is the ESP SPI + 1
NONCE = 10  # ISAKMP payload type (RFC 2408 §3.1)
PROTO_AH, PROTO_ESP = 2, 3  # RFC 2407 §4.4.1


def skeyid_d() -> bytes:
    lines = (SAMPLE / "charon-left.log").read_text().splitlines()
    at = next(i for i, s in enumerate(lines) if "SKEYID_d => 32 bytes" in s)
    hexes = "".join(re.search(r"\d+: ((?:[0-9A-F]{2} ){1,16})", s).group(1) for s in lines[at + 1:at + 3])
    return bytes.fromhex(hexes.replace(" ", ""))


def nonce(frame: int) -> bytes:
    plain, _iv = plaintexts()[frame]
    first = 8  # Quick Mode's first payload is HASH(1) / HASH(2) (RFC 2409 §5.5)
    return next(b for t, _n, b in walk(first, plain)[0] if t == NONCE)


def keymat(protocol: int, spi: int, ni: bytes, nr: bytes, size: int) -> bytes:
    """RFC 2409 §5.5 KEYMAT (no PFS: the sample's Quick Mode has no KE payload), prf HMAC-SHA2-256."""
    seed = bytes([protocol]) + spi.to_bytes(4, "big") + ni + nr
    out, k, d = b"", b"", skeyid_d()
    while len(out) < size:
        k = hmac.new(d, k + seed, hashlib.sha256).digest()
        out += k
    return out[:size]


def logged_esp_keys() -> dict[int, bytes]:
    out = {}
    for line in (SAMPLE / "keys" / "esp_sa").read_text().splitlines():
        if line.startswith('"IPv4"'):
            f = [x.strip('"') for x in line.split(",")]
            out[int(f[3], 16)] = bytes.fromhex(f[5][2:])
    return out


def main() -> None:
    ni, nr = nonce(7), nonce(8)
    logged = logged_esp_keys()
    esp = {spi: keymat(PROTO_ESP, spi, ni, nr, 36) for spi in (ESP_I, ESP_R)}
    assert esp == logged, "RFC 2409 §5.5 KEYMAT does not reproduce charon's ESP keys"
    ah = {spi: keymat(PROTO_AH, spi, ni, nr, 32) for spi in (AH_I, AH_R)}

    tmp = HERE / ".ikev1-bundle.tmp"
    # Encapsulation mode Tunnel (1) for both protocols: the sample's peers forced UDP encapsulation
    # (RFC 3947 §5: UDP-Encapsulated-Tunnel), which AH cannot take (RFC 3948 covers ESP only).
    bundle = _qm_sa(_then(_v1_attr(4, 1), _ah_bundle()))
    write_mutant(tmp, {7: bundle, 8: bundle})
    sas = {  # sender -> (ESP SA, AH SPI and key, its inner addresses)
        A: (SecurityAssociation(ESP, spi=ESP_R, crypt_algo="AES-GCM", crypt_key=esp[ESP_R],
                                tunnel_header=IP(src=A, dst=B)), AH_R, ah[AH_R], ("10.1.0.1", "10.2.0.1")),
        B: (SecurityAssociation(ESP, spi=ESP_I, crypt_algo="AES-GCM", crypt_key=esp[ESP_I],
                                tunnel_header=IP(src=B, dst=A)), AH_I, ah[AH_I], ("10.2.0.1", "10.1.0.1")),
    }
    seq = {A: 0, B: 0}
    with open_capture(tmp) as r, PcapWriter(HERE / "ikev1-bundle.pcap") as w:
        for f in r:
            if f.index > 25:
                break
            data = bytes(f.data)
            if f.index <= 9 or 16 <= f.index <= 19:
                w.write(f.ts_ns, data)
                continue
            src = ".".join(str(b) for b in data[26:30])
            esp_sa, ah_spi, ah_key, (isrc, idst) = sas[src]
            seq[src] += 1
            n = seq[src]
            inner = IP(src=isrc, dst=idst, id=0x100 + n) / ICMP(type=8 if src == A else 0, id=0x42, seq=n) / \
                Raw(b"bundle %d " % n * 6)
            sealed = bytes(esp_sa.encrypt(inner, seq_num=n, iv=n.to_bytes(8, "big"))[ESP])
            # AH over the ESP packet (scapy's AH SA does not take an ESP payload): the ICV as its
            # AH SA computes it, HMAC-SHA2-256 truncated to 128 bits over the packet with the
            # mutable fields zeroed (RFC 4302 §3.3.3, RFC 4868 §2.3)
            dst = B if src == A else A
            unsigned = bytes(IP(src=src, dst=dst, id=0x200 + n, proto=51) /
                             AH(nh=50, payloadlen=5, spi=ah_spi, seq=n, icv=bytes(16)) / Raw(sealed))
            icv = hmac.new(ah_key, bytes(zero_mutable_fields(IP(unsigned), sending=True)), hashlib.sha256).digest()[:16]
            w.write(f.ts_ns, data[:14] + unsigned[:32] + icv + unsigned[48:])
    tmp.unlink()

    def entry(spi: int, src: str, dst: str, proto: str, key: bytes) -> dict:
        e = {"spi": f"0x{spi:08x}", "src": src, "dst": dst}
        if proto == "ah":
            return e | {"protocol": "ah", "encr": "ENCR_NULL", "integ": "AUTH_HMAC_SHA2_256_128", "auth_key": key.hex()}
        return e | {"encr": "ENCR_AES_GCM_16", "enc_key": key.hex(), "integ": "NONE"}

    doc = {"schema": "ipsecscope.keys/1",
           "generator": "tests/data/ikev1-bundle/make.py (RFC 2409 §5.5 KEYMAT per protocol and SPI)",
           "esp": [entry(ESP_R, A, B, "esp", esp[ESP_R]), entry(AH_R, A, B, "ah", ah[AH_R]),
                   entry(ESP_I, B, A, "esp", esp[ESP_I]), entry(AH_I, B, A, "ah", ah[AH_I])]}
    (HERE / "ikev1-bundle.keys.json").write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
