"""CHILD SA keys from an IKE SA's SK_d (RFC 7296 §2.17) — ESP decryption with no ESP keys given.

    KEYMAT = prf+(SK_d, Ni | Nr)                      (IKE_AUTH, CREATE_CHILD_SA without PFS)
    KEYMAT = prf+(SK_d, g^ir (new) | Ni | Nr)         (CREATE_CHILD_SA with a KE payload, PFS)

taken in this order: encryption key then integrity key of the SA carrying data from the initiator
to the responder, then the same two for the other direction. "Initiator" is the initiator of the
exchange that created the CHILD SA (for CREATE_CHILD_SA: whoever sent the request, with that
exchange's nonces), not necessarily the original IKE SA initiator.

Key lengths: the encryption key is the cipher key plus the salt/nonce for AES-CTR/GCM/CCM/GMAC
and ChaCha20-Poly1305 (RFC 3686 §5.1, RFC 4106 §8.1, RFC 4309 §7.1, RFC 4543 §3.2, RFC 7634 §4
derive "key length + salt length" octets), which is also how :class:`EspSaKeys` stores it.

Each direction's SA is identified by the SPI its *receiver* chose: initiator→responder traffic
carries the responder's SPI, responder→initiator traffic the initiator's.

g^ir of a PFS exchange is a Diffie-Hellman secret that never appears on the wire, so PFS CHILD
SAs can only be derived when it is supplied (strongSwan logs it at ``chd 4`` as "DH secret").
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol

from ipsecscope.crypto import suites
from ipsecscope.crypto.prf import INTEG as MAC_INTEG
from ipsecscope.crypto.prf import prf_plus
from ipsecscope.errors import UnknownAlgorithmError
from ipsecscope.model.iana import EncrTransform, IntegTransform, PrfTransform, ProtocolId, name
from ipsecscope.model.keys import EspSaKeys, IkeSaKeys


def encr_key_len(encr: int | None, key_bits: int | None) -> int:
    """Octets of KEYMAT one direction's encryption key takes (cipher key + salt)."""
    if encr is None:  # AH: no encryption key
        return 0
    s = suites.encr_suite(encr)
    if key_bits is None:
        if len(s.key_sizes) != 1:
            raise UnknownAlgorithmError(f"{name(EncrTransform, encr)} needs its Key Length attribute "
                                        "(128/192/256) to size KEYMAT")
        klen = s.key_sizes[0]
    else:
        klen = key_bits // 8
        if klen not in s.key_sizes:
            raise UnknownAlgorithmError(f"{name(EncrTransform, encr)} has no {key_bits}-bit key size")
    return klen + s.salt_len


def integ_key_len(integ: int | None) -> int:
    """Octets of KEYMAT one direction's integrity key takes (0 for AEAD / none)."""
    if not integ:
        return 0
    s = suites.INTEG.get(integ)
    if s is not None:
        return s.key_len
    try:
        return MAC_INTEG[integ][2]
    except KeyError:
        raise UnknownAlgorithmError(f"integrity {name(IntegTransform, integ)} is not implemented") from None


def child_keys(prf_id: int, sk_d: bytes, ni: bytes, nr: bytes, encr_id: int | None, key_bits: int | None,
               integ_id: int | None, spi_i: int, spi_r: int, initiator: str = "*", responder: str = "*",
               g_ir: bytes | None = None, *, esn: bool | None = None, protocol: int = ProtocolId.ESP,
               source: str = "") -> tuple[EspSaKeys, EspSaKeys]:
    """Derive both directions of a CHILD SA (RFC 7296 §2.17).

    ``spi_i`` / ``spi_r``: the SPIs the exchange initiator / responder chose (each is the
    *inbound* SPI of its chooser). ``initiator`` / ``responder``: their addresses, used as the
    src/dst of the returned keys. Returns ``(initiator→responder, responder→initiator)``.
    """
    ek = encr_key_len(encr_id, key_bits)
    ak = integ_key_len(integ_id)
    keymat = prf_plus(prf_id, sk_d, (g_ir or b"") + ni + nr, 2 * (ek + ak))
    src = source or f"derived: KEYMAT = prf+(SK_d, {'g^ir | ' if g_ir else ''}Ni | Nr) (RFC 7296 §2.17)"
    encr = encr_id if encr_id is not None else int(EncrTransform.ENCR_NULL)
    integ = integ_id or int(IntegTransform.NONE)
    i2r = EspSaKeys(spi=spi_r, encr=encr, enc_key=keymat[:ek], integ=integ, auth_key=keymat[ek:ek + ak],
                    src=initiator, dst=responder, esn=esn, protocol=protocol, source=src)
    o = ek + ak
    r2i = EspSaKeys(spi=spi_i, encr=encr, enc_key=keymat[o:o + ek], integ=integ,
                    auth_key=keymat[o + ek:o + ek + ak], src=responder, dst=initiator, esn=esn,
                    protocol=protocol, source=src)
    return i2r, r2i


class _Tracker(Protocol):
    def pending_keymat(self) -> Iterable: ...


class _Keys(Protocol):
    def ike_lookup(self, spi_i: bytes, spi_r: bytes) -> IkeSaKeys | None: ...


def derive_pending(tracker: _Tracker, keystore: _Keys) -> Iterator[EspSaKeys]:
    """ESP keys for the CHILD SAs ``tracker.pending_keymat()`` lists (``model.sa.KeymatRequest``).

    Needs the IKE SA's ``prf`` and ``sk_d`` (charon logs, JSON keys). Requests whose IKE SA keys
    are not (yet) known stay pending; PFS requests are skipped (g^ir is secret). For each request
    derived, ``tracker.keymat_done(child_id, source)`` is called when the tracker has it.
    """
    done = getattr(tracker, "keymat_done", None)
    for req in list(tracker.pending_keymat()):
        if req.pfs_group:
            continue
        ike = keystore.ike_lookup(req.ike_spi_i, req.ike_spi_r)
        if ike is not None and (not ike.sk_d or ike.prf is None):
            # A key table row (no SK_d) may shadow a charon-log entry for the same SPIs.
            ike = next((k for k in getattr(keystore, "ike", ()) if k.spi_i == req.ike_spi_i
                        and k.spi_r == req.ike_spi_r and k.sk_d and k.prf is not None), None)
        if ike is None or not ike.sk_d or ike.prf is None:
            continue
        source = (f"derived: KEYMAT from IKE SA {req.ike_spi_i.hex()}_{req.ike_spi_r.hex()} SK_d "
                  f"({name(PrfTransform, ike.prf)}, RFC 7296 §2.17)")
        try:
            pair = child_keys(ike.prf, ike.sk_d, req.ni, req.nr, req.encr, req.encr_key_bits,
                              req.integ, req.spi_i, req.spi_r, req.initiator, req.responder,
                              esn=req.esn, protocol=req.protocol, source=source)
        except (UnknownAlgorithmError, ValueError):
            continue
        yield from pair
        if done is not None:
            done(req.child_id, source)
