"""Writes the captures of this folder from the project's own samples (run from the repository root:
``.venv/bin/python tests/data/rfc-violations/make.py``). Each message named in README.md is the
sample's message with one field changed; encrypted ones are encrypted again with the sample's keys
(IKEv2: AES-GCM-256 SK; IKEv1: AES-CBC-256 on the RFC 2409 Appendix B IV chain)."""

from __future__ import annotations

import hashlib
import hmac
import struct
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))  # tests/

import test_answer_not_offered as answers  # noqa: E402
import test_answer_not_offered_v1 as answers_v1  # noqa: E402
import test_ike_rfc_fields as v2  # noqa: E402
import test_ikev1_qm_mutants as v1q  # noqa: E402
import v1_reseal  # noqa: E402
from conftest import SAMPLES  # noqa: E402
from espgen import PcapWriter  # noqa: E402

from ipsecscope.capture import open_capture  # noqa: E402


def _v2(name: str, last: int, edits: dict) -> None:
    with open_capture(SAMPLES / "healthy-gcm" / "capture.pcapng") as r, PcapWriter(HERE / name) as w:
        for f in r:
            if f.index <= last:
                w.write(f.ts_ns, edits[f.index](bytes(f.data)) if f.index in edits else bytes(f.data))


def _v1(name: str, last: int, edits: dict) -> None:
    tmp = HERE / f".{name}.tmp"
    v1_reseal.write_mutant(tmp, edits)
    with open_capture(tmp) as r, PcapWriter(HERE / name) as w:
        for f in r:
            if f.index <= last:
                w.write(f.ts_ns, bytes(f.data))
    tmp.unlink()


def _charon_log(name: str, sample: str, keep: tuple[int, int], added: list[str], then: tuple[int, int] = (0, 0)) -> None:
    """``name`` (the capture's name, ``.log`` for ``.pcap``): the initiator's charon log of
    ``sample`` (charon-left.log, strongSwan 5.9.8, the log the capture's messages came from),
    lines ``keep`` (1-based, inclusive), then ``added`` (what charon logs when the answer does
    not fit its offer, the format strings cited in README.md), then the sample's lines ``then``.
    Times, thread numbers, IKE SA names and SPIs stay the sample's, as in the capture."""
    src = (SAMPLES / sample / "charon-left.log").read_text().splitlines()
    out = src[keep[0] - 1:keep[1]] + added + (src[then[0] - 1:then[1]] if then[0] else [])
    (HERE / name.replace(".pcap", ".log")).write_text("\n".join(out) + "\n")


def _logs() -> None:
    # IKE_SA_INIT answer with a 128-bit AES-GCM key (ike_init.c process_i; proposal.c proposal_select
    # logs both lists at level 1 when nothing matched; ike_sa_manager.c checkin_and_destroy)
    t = "2026-11-25T20:09:03.564 13"
    _charon_log("ikev2-init-answer-not-offered.pcap", "healthy-gcm", (1, 66), [
        f"{t}[CFG] <gcm|1> received proposals: IKE:AES_GCM_16_128/PRF_HMAC_SHA2_256/ECP_256",
        f"{t}[CFG] <gcm|1> configured proposals: IKE:AES_GCM_16_256/PRF_HMAC_SHA2_256/ECP_256",
        f"{t}[IKE] <gcm|1> peers proposal selection invalid",
        f"{t}[MGR] <gcm|1> checkin and destroy IKE_SA gcm[1]",
        f"{t}[IKE] <gcm|1> IKE_SA gcm[1] state change: CONNECTING => DESTROYING",
        f"{t}[MGR] checkin and destroy of IKE_SA successful"])
    # the IKE SA rekey's answer picks ecp384 beside the request's ecp256 KE payload: ike_init.c
    # process_i (run by the rekey under the old IKE SA, <gcm|1>) selects the proposal from the offer,
    # then finds the answer's KE payload in another group; the sample's lines up to its parse
    t = "2026-11-25T20:09:04.901 13"
    _charon_log("ikev2-rekey-answer-ke.pcap", "healthy-gcm", (1, 331), [
        f"{t}[CFG] <gcm|1> selected proposal: IKE:AES_GCM_16_256/PRF_HMAC_SHA2_256/ECP_384",
        f"{t}[IKE] <gcm|1> peer DH group selection invalid"])
    log = HERE / "ikev2-rekey-answer-ke.log"  # the offer it sent carries ecp384 too: one transform more
    lines = log.read_text().splitlines()
    assert lines[324].endswith("sending packet: from 198.18.0.1[4500] to 198.18.0.2[4500] (213 bytes)")
    lines[324] = lines[324].replace("(213 bytes)", "(221 bytes)")
    log.write_text("\n".join(lines) + "\n")
    # Main Mode 2 with RSA signatures for the offered PSK: main_mode.c process_i goes on with its own
    # (NEED_MORE) and sends Main Mode 3, the sample's lines 51-62; the capture beside it holds MM3 too
    t = "2026-11-25T23:35:50.764 14"
    _mm_goes_on()
    _charon_log("ikev1-mm-answer-auth-goes-on.pcap", "ikev1-dead-peer", (1, 50), [
        f"{t}[IKE] <dpd1|1> received RSA signature authentication, but configured pre-shared key, "
        "continue with configured"], (51, 62))
    # Quick Mode 2 with AES-GCM-16 128-bit for the offered 256: quick_mode.c process_i, whose
    # send_notify queues an INFORMATIONAL with NO_PROPOSAL_CHOSEN and flushes the Quick Mode task
    # (no QM3); task_manager_v1.c sends it at once, one-way, as the sample's DPD requests are logged
    t = "2026-11-25T23:35:50.773 14"
    hash1, iv, size = _qm_refusal()
    _charon_log("ikev1-qm-answer-key-length-refused.pcap", "ikev1-dead-peer", (1, 249), [
        f"{t}[CFG] <dpd1|1> received proposals: ESP:AES_GCM_16_128/NO_EXT_SEQ",
        f"{t}[CFG] <dpd1|1> configured proposals: ESP:AES_GCM_16_256/NO_EXT_SEQ",
        f"{t}[IKE] <dpd1|1> no matching proposal found",
        f"{t}[IKE] <dpd1|1> queueing INFORMATIONAL task",
        f"{t}[IKE] <dpd1|1> activating new tasks",
        f"{t}[IKE] <dpd1|1>   activating INFORMATIONAL task",
        *_dump(t, "Hash", hash1, "0x7f4938007200"),
        f"{t}[ENC] <dpd1|1> generating INFORMATIONAL_V1 request {REFUSAL_MID} [ HASH N(NO_PROP) ]",
        *_dump(t, f"next IV for MID {REFUSAL_MID}", iv, "0x7f4938007230"),
        f"{t}[NET] <dpd1|1> sending packet: from 198.18.0.1[4500] to 198.18.0.2[4500] ({size} bytes)",
        f"{t}[IKE] <dpd1|1> activating new tasks",
        f"{t}[IKE] <dpd1|1> nothing to initiate",
        f"{t}[MGR] <dpd1|1> checkin IKEv1 SA dpd1[1] with SPIs 3fae74a30fefb9b9_i e99e61364b0b6013_r",
        f"{t}[MGR] <dpd1|1> checkin of IKE_SA successful"])


# strongSwan picks an INFORMATIONAL's message ID at random; this one is fixed so make.py is repeatable
REFUSAL_MID = 0x4E3B2F19


def _dump(t: str, what: str, data: bytes, at: str) -> list[str]:
    """charon's chunk dump (%B at level 4): a header line, then 16 octets a line in hex and ASCII.
    The address is a heap pointer of no meaning (the one of the sample's DPD request's dump)."""
    out = [f"{t}[IKE] <dpd1|1> {what} => {len(data)} bytes @ {at}"]
    for off in range(0, len(data), 16):
        row = data[off:off + 16]
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in row)
        out.append(f"{t}[IKE] <dpd1|1> {off:>4}: {' '.join(f'{b:02X}' for b in row):<47}  {text}")
    return out


def _skeyid_a() -> bytes:
    """SKEYID_a of the sample's IKE SA, from charon's dump of it in charon-left.log."""
    lines = (SAMPLES / "ikev1-dead-peer" / "charon-left.log").read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if "> SKEYID_a => 32 bytes" in line)
    return bytes.fromhex("".join(line.split(": ", 1)[1][:47] for line in lines[at + 1:at + 3]))


def _qm_refusal() -> tuple[bytes, bytes, int]:
    """``ikev1-qm-answer-key-length-refused.pcap``: ikev1-qm-answer-key-length.pcap's frames 1-8 (QM1,
    the unfit QM2), then what strongSwan's initiator sends instead of QM3 (quick_mode.c send_notify):
    an INFORMATIONAL (RFC 2409 §5.7) with HASH(1) = prf(SKEYID_a, M-ID | N) and N(NO_PROPOSAL_CHOSEN)
    for protocol ESP with the initiator's SPI from QM1, encrypted with the phase-1 key on a new IV
    (RFC 2409 Appendix B: hash of phase 1's last CBC block and the M-ID, SHA2-256 here), padded with
    zeros as charon pads. Sent over the NAT-T port like QM3 was, at QM3's time. Returns HASH(1), the
    IV and the ISAKMP message's size for the log."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    plains = v1_reseal.plaintexts()
    frames = {n: (ts, data) for n, ts, data in v1_reseal.frames()}
    spi_i = v1_reseal.walk(8, plains[7][0])[0][1][2][16:20]  # QM1's SA: proposal #1's SPI (RFC 2408 §3.5)
    assert spi_i == bytes.fromhex("5b62d3f3"), spi_i.hex()
    notify = struct.pack("!IBBH", 1, 3, 4, 14) + spi_i  # DOI IPsec, ESP, SPI size 4, NO-PROPOSAL-CHOSEN
    mid = struct.pack("!I", REFUSAL_MID)
    ts6, mm6 = frames[6]
    # the recipe (IV, HASH(1)) reproduces the sample's own INFORMATIONAL, the initiator's DPD request
    dpd, dpd_mid = frames[17][1], frames[17][1][-108 + 20:-108 + 24]
    assert plains[17][1] == hashlib.sha256(mm6[-16:] + dpd_mid).digest()[:16]
    body = plains[17][0][36:36 + struct.unpack_from("!H", plains[17][0], 38)[0]]
    assert plains[17][0][4:36] == hmac.new(_skeyid_a(), dpd_mid + body, hashlib.sha256).digest(), dpd.hex()
    hash1 = hmac.new(_skeyid_a(), mid + struct.pack("!BBH", 0, 0, 4 + len(notify)) + notify, hashlib.sha256).digest()
    plain = v1_reseal.join([(8, 11, hash1), (11, 0, notify)])
    plain += bytes(-len(plain) % 16)
    ts9, qm3 = frames[9]
    at = v1_reseal._ike_offset(qm3)
    iv = hashlib.sha256(mm6[-16:] + mid).digest()[:16]  # phase 1 ends with MM6's last block
    key = v1_reseal._key()[qm3[at:at + 8]]
    enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    ct = enc.update(plain) + enc.finalize()
    hdr = bytearray(qm3[at:at + 28])
    hdr[16], hdr[18] = 8, 5  # first payload HASH, exchange INFORMATIONAL; flags stay "encrypted"
    hdr[20:24] = mid
    struct.pack_into("!I", hdr, 24, 28 + len(ct))
    with open_capture(HERE / "ikev1-qm-answer-key-length.pcap") as r, \
            PcapWriter(HERE / "ikev1-qm-answer-key-length-refused.pcap") as w:
        for f in r:
            if f.index <= 8:
                w.write(f.ts_ns, bytes(f.data))
        w.write(ts9, v1_reseal._frame_with(qm3, at, bytes(hdr) + ct))
    return hash1, iv, 28 + len(ct)


def _mm_goes_on() -> None:
    """``ikev1-mm-answer-auth-goes-on.pcap``: ikev1-mm-answer-auth.pcap's frames 1-2, then the sample's
    Main Mode 3 (KE, nonce, NAT-D in clear: nothing in it depends on the authentication method),
    which main_mode.c process_i sends after logging "continue with configured" (NEED_MORE)."""
    with open_capture(HERE / "ikev1-mm-answer-auth.pcap") as r, \
            PcapWriter(HERE / "ikev1-mm-answer-auth-goes-on.pcap") as w:
        for f in r:
            w.write(f.ts_ns, bytes(f.data))
        ts3, mm3 = next((ts, data) for n, ts, data in v1_reseal.frames() if n == 3)
        w.write(ts3, mm3)


def main() -> None:
    m = v2.MUTATIONS
    _v2("ikev2-init-offer.pcap", 2, {1: m["proposals-1-3"][1], 2: m["transform-last-substruc-3"][1]})
    _v2("ikev2-init-notify-sizes.pcap", 2, {1: m["sig-hash-odd"][1], 2: m["cookie-65"][1]})
    _v2("ikev2-auth-ts-reversed.pcap", 4, {4: m["ts-ports-reversed"][1]})
    _v2("ikev2-auth-offer-numbered-2.pcap", 4, {3: m["sk-offer-numbered-2"][1]})
    _v2("ikev2-notify-data.pcap", 4, {1: m["fragmentation-supported-with-data"][1], 3: m["set-window-size-2"][1]})
    _v2("ikev2-init-proposal-dh-only.pcap", 2, {1: m["dh-only-proposal"][1],
                                                 2: lambda f: v2._clear(f, v2.SA, v2._drop_type(2, num=2))})
    _v2("ikev2-auth-esp-no-esn.pcap", 4, {3: m["sk-esp-offer-no-esn"][1], 4: lambda f: v2._sealed(
        f, v2.SA, v2._drop_type(5))})
    _v2("ikev2-auth-ah-no-integ.pcap", 4, {3: m["sk-ah-offer-no-integ"][1], 4: lambda f: v2._sealed(
        f, v2.SA, v2._ah_proposals(True))})
    _v2("ikev2-init-aead-with-integ.pcap", 2, {1: m["offer-aead-with-integ"][1],
                                                2: lambda f: v2._clear(f, v2.SA, v2._add((3, 12)))})
    for name, (last, edits) in answers.ANSWERS.items():
        _v2(name, last, edits)
    for name in answers_v1.ANSWERS:
        answers_v1.write(name, HERE / name)
    q = v1q.MUTANTS
    _v1("ikev1-quick-mode.pcap", 9, {7: q["nonce-4-bytes"][1], 8: q["esp-spi-absent"][1]})
    _logs()


if __name__ == "__main__":
    main()
