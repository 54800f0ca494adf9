"""decode.ike / decode.ikev1 on the Wireshark corpus, checked against tshark 4.0.17.

Two oracles, both produced by tshark rather than by us:
- ``<capture>.expected.json`` (passes.no_keys.ike): message counts, versions, exchange types, the
  cleartext payload types (SA proposals and transforms counted like tshark does), notify types,
  flags and SPIs of every message;
- ``tshark -T fields`` run here on the same file, field by field (transform IDs, key lengths,
  groups, nonces, vendor IDs, NAT-D hashes, IKEv1 attributes...), without keys for the cleartext
  payloads and with Wireshark's own key tables for the payloads inside SK / IKEv1 encryption
  (decrypted by crypto.ike_sk, then decoded by our parse_payload_chain).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import CORPUS, ROOT, corpus_captures, ike_messages, need, needs_tshark

from ipsecscope.model import iana
from ipsecscope.model.ike import (
    AnyPayload,
    AuthPayload,
    CertPayload,
    CpPayload,
    DeletePayload,
    HashPayload,
    IdPayload,
    IkeMessage,
    KePayload,
    NoncePayload,
    NotifyPayload,
    Payload,
    SaPayload,
    TsPayload,
    VendorPayload,
)
from ipsecscope.model.proposals import proposal_string

CAPTURES = [p.name for p in corpus_captures()]
IKE_CAPTURES = [n for n in CAPTURES if n.startswith("ike")]


_CACHE: dict[str, list[IkeMessage]] = {}


def messages(name: str) -> list[IkeMessage]:
    if name not in _CACHE:
        _CACHE[name] = ike_messages(CORPUS / name)
    return _CACHE[name]


def oracle(name: str) -> dict:
    return json.loads((CORPUS / f"{name}.expected.json").read_text())["passes"]["no_keys"]["ike"]


def _num(label: str) -> int:
    """'Identity Protection (Main Mode) (2)' -> 2."""
    return int(label.rsplit("(", 1)[1].rstrip(")"))


def outer_types(m: IkeMessage) -> list[int]:
    """Cleartext payload types as tshark lists them: an SA is followed by its Proposal (2) and
    Transform (3) substructures. An encrypted IKEv1 body has no cleartext payloads."""
    if m.header.encrypted_v1:
        return []
    return list(_types(m.payloads))


def _types(payloads: tuple[AnyPayload, ...]) -> Iterator[int]:
    for p in payloads:
        yield p.type
        if isinstance(p, SaPayload):
            for prop in p.proposals:
                yield 2
                for _t in prop.transforms:
                    yield 3


# ---- expected.json oracle ------------------------------------------------------------------


@pytest.mark.parametrize("name", CAPTURES)
def test_counts_versions_exchanges_match_oracle(name: str) -> None:
    o = oracle(name)
    msgs = messages(name)
    assert len(msgs) == o["messages"]
    assert Counter(f"{m.header.major}.{m.header.minor}" for m in msgs) == Counter(o["by_version"])
    assert Counter(m.header.exchange for m in msgs) == Counter(
        {_num(k): v for k, v in o["by_exchange_type"].items()})
    assert all(m.malformed is None for m in msgs), [(m.frame, m.malformed) for m in msgs if m.malformed]


@pytest.mark.parametrize("name", CAPTURES)
def test_payload_types_and_notifies_match_oracle(name: str) -> None:
    o = oracle(name)
    msgs = messages(name)
    got = Counter(t for m in msgs for t in outer_types(m))
    assert got == Counter({_num(k): v for k, v in o["outer_payload_types"].items()})
    notifies = Counter(p.notify_type for m in msgs if not m.header.encrypted_v1
                       for p in m.payloads if isinstance(p, NotifyPayload))
    assert notifies == Counter({_num(k): v for k, v in o["notify_types"].items()})
    spis = sorted(pr.spi.hex() for m in msgs for p in m.payloads if isinstance(p, SaPayload)
                  for pr in p.proposals if pr.protocol in (2, 3))
    assert spis == sorted(o["child_sa_spis_proposed"])
    assert sum(1 for m in msgs if m.header.encrypted_v1) == o["ikev1_encrypted_messages"]
    assert sum(1 for m in msgs if m.version == 2 and m.encrypted) == o["sk_payloads"]


@pytest.mark.parametrize("name", IKE_CAPTURES)
def test_each_message_matches_oracle(name: str) -> None:
    by_frame = {m.frame: m for m in messages(name)}
    for om in oracle(name)["message_list"]:
        m = by_frame[om["frame"]]
        h = m.header
        assert h.exchange == om["exchange_type"]
        assert iana.name(iana.ExchangeType if h.major == 2 else iana.Ikev1Exchange, h.exchange)
        assert h.spi_i.hex() == om["ispi"] and h.spi_r.hex() == om["rspi"]
        assert f"0x{h.msg_id:08x}" == om["message_id"]
        assert (m.src, m.dst) == (om["src"], om["dst"])
        if h.major == 2:
            assert (h.is_initiator, h.is_response) == (om["initiator"], om["response"])
            names = [n["name"] for n in om["notify"]]
            assert [iana.name(iana.NotifyType, p.notify_type) for p in m.payloads
                    if isinstance(p, NotifyPayload)] == names
        else:
            assert h.encrypted_v1 == om["encrypted_flag"]
        assert [t for t in outer_types(m)] == [_num(x) for x in om["outer_payloads"]]
        assert (m.malformed is not None) == om["malformed"]


# ---- tshark, field by field ----------------------------------------------------------------


def _int(v: int | bytes) -> int:
    return v if isinstance(v, int) else int.from_bytes(v, "big")


def _attrs(ps: list[AnyPayload], phase1: bool, atype: int | None) -> list[str]:
    out = []
    for p in ps:
        if isinstance(p, SaPayload) and p.doi is not None:
            for pr in p.proposals:
                if (pr.protocol == 1) != phase1:
                    continue
                for t in pr.transforms:
                    out += [str(at if atype is None else _int(v)) for at, v in t.attrs
                            if atype is None or at == atype]
    return out


def _v2_transforms(ps: list[AnyPayload], ttype: int | None) -> list[str]:
    return [str(t.type if ttype is None else t.id) for p in ps if isinstance(p, SaPayload) and p.doi is None
            for pr in p.proposals for t in pr.transforms if ttype is None or t.type == ttype]


def _spis(ps: list[AnyPayload]) -> list[str]:
    out = []
    for p in ps:
        if isinstance(p, SaPayload):
            out += [pr.spi.hex() for pr in p.proposals if pr.spi]
        elif isinstance(p, NotifyPayload) and p.spi:
            out.append(p.spi.hex())
    return out


def _ts(ps: list[AnyPayload], attr: str, ts_type: int | None = None) -> list[str]:
    return [str(getattr(s, attr)) for p in ps if isinstance(p, TsPayload) for s in p.selectors
            if ts_type is None or s.ts_type == ts_type]


# tshark field -> what we say about the same thing, from a message's payloads in wire order.
FIELDS: dict[str, Callable[[list[AnyPayload]], list[str]]] = {
    "isakmp.typepayload": lambda ps: [str(t) for t in _types(tuple(ps))],
    "isakmp.spi": _spis,
    "isakmp.notify.msgtype": lambda ps: [str(p.notify_type) for p in ps if isinstance(p, NotifyPayload)],
    "isakmp.tf.type": lambda ps: _v2_transforms(ps, None),
    "isakmp.tf.id.encr": lambda ps: _v2_transforms(ps, 1),
    "isakmp.tf.id.prf": lambda ps: _v2_transforms(ps, 2),
    "isakmp.tf.id.integ": lambda ps: _v2_transforms(ps, 3),
    "isakmp.tf.id.dh": lambda ps: _v2_transforms(ps, 4),
    "isakmp.ike2.attr.key_length": lambda ps: [
        str(t.key_length) for p in ps if isinstance(p, SaPayload) and p.doi is None
        for pr in p.proposals for t in pr.transforms if t.key_length is not None],
    "isakmp.prop.protoid": lambda ps: [str(pr.protocol) for p in ps if isinstance(p, SaPayload) for pr in p.proposals],
    "isakmp.key_exchange.dh_group": lambda ps: [
        str(p.group) for p in ps if isinstance(p, KePayload) and p.type == iana.PayloadType.KE],
    "isakmp.nonce": lambda ps: [p.data.hex() for p in ps if isinstance(p, NoncePayload)],
    "isakmp.id.type": lambda ps: [str(p.id_type) for p in ps if isinstance(p, IdPayload)
                                  and p.type not in (iana.Ikev1Payload.NAT_OA, iana.Ikev1Payload.NAT_OA_DRAFT)],
    "isakmp.auth.method": lambda ps: [str(p.method) for p in ps if isinstance(p, AuthPayload)],
    "isakmp.auth.data": lambda ps: [p.data.hex() for p in ps if isinstance(p, AuthPayload)],
    "isakmp.vid_bytes": lambda ps: [p.data.hex() for p in ps if isinstance(p, VendorPayload)],
    "isakmp.hash": lambda ps: [p.data.hex() for p in ps if isinstance(p, HashPayload) and p.type == 8],
    "isakmp.ike.nat_hash": lambda ps: [p.data.hex() for p in ps if isinstance(p, HashPayload) and p.type in (20, 130)],
    "isakmp.cert.encoding": lambda ps: [str(p.encoding) for p in ps if isinstance(p, CertPayload) and p.type in (6, 37)],
    "isakmp.certreq.type": lambda ps: [str(p.encoding) for p in ps if isinstance(p, CertPayload) and p.type in (7, 38)],
    "isakmp.delete.protoid": lambda ps: [str(p.protocol) for p in ps if isinstance(p, DeletePayload)],
    "isakmp.delete.spi": lambda ps: [s.hex() for p in ps if isinstance(p, DeletePayload) for s in p.spis],
    "isakmp.ts.type": lambda ps: _ts(ps, "ts_type"),
    "isakmp.ts.protoid": lambda ps: _ts(ps, "ip_proto"),
    "isakmp.ts.start_port": lambda ps: _ts(ps, "start_port"),
    "isakmp.ts.end_port": lambda ps: _ts(ps, "end_port"),
    "isakmp.ts.start_ipv4": lambda ps: _ts(ps, "start_addr", 7),
    "isakmp.ts.end_ipv4": lambda ps: _ts(ps, "end_addr", 7),
    "isakmp.ts.start_ipv6": lambda ps: _ts(ps, "start_addr", 8),
    "isakmp.ts.end_ipv6": lambda ps: _ts(ps, "end_addr", 8),
    "isakmp.notify.data.accepted_dh_group": lambda ps: [
        str(p.decoded["group"]) for p in ps if isinstance(p, NotifyPayload) and "group" in p.decoded],
    "isakmp.frag.number": lambda ps: [str(p.fragment_number) for p in ps if p.type == 53],
    "isakmp.frag.total": lambda ps: [str(p.total_fragments) for p in ps if p.type == 53],
    "isakmp.cfg.type": lambda ps: [str(p.cfg_type) for p in ps if isinstance(p, CpPayload)],
    "isakmp.cfg.attr.type": lambda ps: [str(t) for p in ps if isinstance(p, CpPayload) for t, _v in p.attributes],
    "isakmp.notify.data.signature_hash_algorithms": lambda ps: [
        str(iana.HashAlgorithm[a].value) for p in ps if isinstance(p, NotifyPayload)
        for a in p.decoded.get("hash_algorithms", [])],
    "isakmp.ike.attr.type": lambda ps: _attrs(ps, True, None),
    "isakmp.ike.attr.encryption_algorithm": lambda ps: _attrs(ps, True, 1),
    "isakmp.ike.attr.hash_algorithm": lambda ps: _attrs(ps, True, 2),
    "isakmp.ike.attr.authentication_method": lambda ps: _attrs(ps, True, 3),
    "isakmp.ike.attr.group_description": lambda ps: _attrs(ps, True, 4),
    "isakmp.ike.attr.life_duration": lambda ps: _attrs(ps, True, 12),
    "isakmp.ike.attr.key_length": lambda ps: _attrs(ps, True, 14),
    "isakmp.ipsec.attr.type": lambda ps: _attrs(ps, False, None),
    "isakmp.ipsec.attr.life_duration": lambda ps: _attrs(ps, False, 2),
    "isakmp.ipsec.attr.encap_mode": lambda ps: _attrs(ps, False, 4),
    "isakmp.ipsec.attr.auth_algorithm": lambda ps: _attrs(ps, False, 5),
    "isakmp.ipsec.attr.key_length": lambda ps: _attrs(ps, False, 6),
}


def tshark_fields(path: Path, profile: Path | None) -> dict[int, dict[str, list[str]]]:
    names = list(FIELDS)
    cmd = ["tshark", "-r", str(path), "-Y", "isakmp && !icmp && !icmpv6", "-T", "fields", "-E", "separator=\t",
           "-E", "aggregator=;", "-e", "frame.number", *[a for n in names for a in ("-e", n)]]
    env = dict(os.environ, WIRESHARK_CONFIG_DIR=str(profile) if profile else "/nonexistent-ipsecscope")
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout
    rows: dict[int, dict[str, list[str]]] = {}
    for line in out.splitlines():
        cols = line.split("\t")
        rows[int(cols[0])] = {n: ([v for v in c.split(";")] if c else []) for n, c in zip(names, cols[1:], strict=True)}
    return rows


def _hexnorm(field: str, vals: list[str]) -> list[str]:
    if field == "isakmp.spi" or field.endswith(("delete.spi", "vid_bytes", "nonce", "hash", "auth.data")):
        return [v.replace(":", "").lower() for v in vals]
    return vals


@needs_tshark
@pytest.mark.parametrize("name", IKE_CAPTURES)
def test_cleartext_fields_match_tshark(name: str) -> None:
    rows = tshark_fields(CORPUS / name, None)
    msgs = messages(name)
    assert sorted(rows) == [m.frame for m in msgs]
    for m in msgs:
        ps = [] if m.header.encrypted_v1 else list(m.payloads)
        for field, fn in FIELDS.items():
            assert fn(ps) == _hexnorm(field, rows[m.frame][field]), (m.frame, field)


@pytest.fixture(scope="module")
def ws_profile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    need(CORPUS)  # module-scoped: set up before the autouse fixture could skip
    d = tmp_path_factory.mktemp("wsprofile")
    for n in ("ikev2_decryption_table", "ikev1_decryption_table"):
        shutil.copy(CORPUS / f"{n}.tmpl", d / n)
    return d


@needs_tshark
@pytest.mark.parametrize("name", IKE_CAPTURES)
def test_decrypted_fields_match_tshark(name: str, ws_profile: Path) -> None:
    """Payloads inside SK / IKEv1 encryption, decoded by parse_payload_chain after crypto."""
    from ipsecscope.crypto.ike_sk import IkeDecryptor
    from ipsecscope.keys import load_keys

    keys = load_keys([CORPUS / "ikev2_decryption_table.tmpl", CORPUS / "ikev1_decryption_table.tmpl"])
    dec = IkeDecryptor(keys)
    garbled = set(json.loads((CORPUS / f"{name}.expected.json").read_text())["passes"]["with_keys"]["ike"]
                  .get("ikev1_decrypt_garbled_frames", []))
    rows = tshark_fields(CORPUS / name, ws_profile)
    n_inner = 0
    for m in messages(name):
        d = dec.decrypt(m)
        if m.frame in garbled:
            continue  # tshark 4.0.17 decrypts a retransmission with the wrong IV (see MANIFEST)
        if m.encrypted:
            assert d.decrypted, (m.frame, getattr(d, "crypto_note", None))
        outer = [] if m.header.encrypted_v1 else list(d.payloads)
        ps = outer + list(d.inner)
        n_inner += len(d.inner)
        assert d.malformed is None, (m.frame, d.malformed)
        for field, fn in FIELDS.items():
            assert fn(ps) == _hexnorm(field, rows[m.frame][field]), (m.frame, field)
    assert n_inner > 0


# ---- details tshark shows in words ---------------------------------------------------------


def test_vendor_ids_named_like_tshark() -> None:
    names = [p.name for n in IKE_CAPTURES for m in messages(n) for p in m.payloads if isinstance(p, VendorPayload)]
    c = Counter(names)
    # tshark -V on the same files: "RFC 3947 Negotiation of NAT-Traversal in the IKE" x4,
    # "RFC 3706 DPD (Dead Peer Detection)" x4, "draft-ietf-ipsec-nat-t-ike-02\n", XAUTH, Cisco Unity.
    assert c["RFC 3947 NAT-T"] >= 3 and c["RFC 3706 DPD"] >= 3 and c["XAUTH"] >= 2
    assert c["draft-ietf-ipsec-nat-t-ike-02\\n"] >= 1 and c["Cisco Unity 1.0"] >= 1
    assert c["draft-stenberg-ipsec-nat-traversal-01"] == 1


def test_identities_rendered() -> None:
    ids = {(p.id_type, p.value) for m in messages("ikev1-bug-12620.pcapng.gz") for p in m.payloads
           if isinstance(p, IdPayload)}
    assert ids == {(3, "mpa@tablet.localdomain"), (2, "moon.localdomain")}


def test_notify_decoded_data() -> None:
    m = messages("ikev2-decrypt-aes256cbc.pcapng")[0]
    ns = {p.notify_type: p for p in m.payloads if isinstance(p, NotifyPayload)}
    assert ns[iana.NotifyType.NAT_DETECTION_SOURCE_IP].decoded["hash"] == "ddb16820c3cf03bfa7ffc5714b389b38ce03b79f"
    assert ns[iana.NotifyType.SIGNATURE_HASH_ALGORITHMS].decoded["hash_algorithms"] == [
        "SHA1", "SHA2_256", "SHA2_384", "SHA2_512"]


def test_proposal_strings_on_corpus() -> None:
    def first(name: str) -> str:
        m = messages(name)[0]
        sa = next(p for p in m.payloads if isinstance(p, SaPayload))
        return proposal_string(sa.proposals[0], m.version)

    assert first("ikev2-decrypt-aes256gcm16.pcap") == "aes256gcm16-prfsha256-ecp256"
    assert first("ikev2-decrypt-aes256cbc.pcapng") == "aes256-sha256-ecp256"  # PRF implied by integ
    assert first("ikev2-decrypt-3des-sha1_160.pcap") == "3des-sha1_160-prfsha256-modp2048"
    assert first("ikev1-certs.pcap") == "3des-md5-modp1024"
    assert first("ikev1-bug-12610.pcapng.gz").startswith("aes256-sha256-modp1024, aes256-sha1-modp1024, ")


def test_one_proposal_renderer_for_logs_and_wire() -> None:
    """A charon log's proposals (keys/charon: "configured proposals: ...") and the wire's (the
    tracker: offered/chosen) are named by one renderer, so a finding that sets them side by side
    ("offered X; configured with Y") never names one algorithm two ways. There were two, which
    differed on 5 kinds of proposal in the corpus (AES without a key length: "aes" / "aes128";
    the PRF beside an AEAD cipher and an integrity algorithm; an empty proposal: "" / "none")."""
    from ipsecscope.keys import charon
    from ipsecscope.state import ikev1, ikev2

    assert charon.proposal_string is ikev2.proposal_string is ikev1.proposal_string is proposal_string
    assert not (ROOT / "ipsecscope" / "state" / "proposals.py").exists()


def test_sk_payload_offset_and_first_payload() -> None:
    """SK body and offset are what the integrity check needs (RFC 7296 §3.14)."""
    for name in IKE_CAPTURES:
        for m in messages(name):
            for p in m.payloads:
                if p.type == iana.PayloadType.SK:
                    assert m.raw[p.offset + 4: p.offset + 4 + len(p.body)] == p.body
                    assert p.offset + 4 + len(p.body) == m.header.length
                    assert p.first_payload in (iana.PayloadType.IDi, iana.PayloadType.IDr, iana.PayloadType.N,
                                               iana.PayloadType.D, 0)


def test_encrypted_ikev1_kept_opaque() -> None:
    for m in messages("ikev1-certs.pcap"):
        if m.header.encrypted_v1:
            (p,) = m.payloads
            assert isinstance(p, Payload) and p.type == m.header.next_payload
            assert p.body == m.raw[28:m.header.length]


# ---- captures made by real strongSwan peers (samples/, tests/data/*) ---------------------------


def _project_captures() -> list[Path]:
    pats = ["samples/*/capture.pcap*", "samples/synthetic/*.pcap*", "tests/data/*/*/capture.pcap*",
            "tests/data/keys/*-capture.pcap*"]
    return sorted({p for pat in pats for p in ROOT.glob(pat)})


def _key_sources(cap: Path) -> list[Path]:
    """Key files next to a capture: keys/ikev*_decryption_table (with rows) and charon logs."""
    d = cap.parent
    out = [f for f in sorted((d / "keys").glob("ikev*_decryption_table")) if any(
        ln.strip() and not ln.startswith("#") for ln in f.read_text().splitlines())] if (d / "keys").is_dir() else []
    stem = cap.name.split("-capture")[0] if "-capture" in cap.name else None
    out += sorted(d.glob(f"charon-{stem}-*.log" if stem else "charon-*.log"))
    return out


PROJECT_CAPTURES = [str(p.relative_to(ROOT)) for p in _project_captures()]


@needs_tshark
@pytest.mark.parametrize("rel", PROJECT_CAPTURES)
def test_project_captures_match_tshark_with_keys(rel: str, tmp_path: Path) -> None:
    """Every IKE payload (outer, and decrypted where tshark can decrypt too) of a real capture.

    Keys come from the files next to the capture (Wireshark tables or charon logs) through our
    own loader, and are written back as Wireshark tables for tshark with keys.formats.dump.
    """
    from ipsecscope.crypto.ike_sk import IkeDecryptor
    from ipsecscope.errors import KeyFileError
    from ipsecscope.keys import formats, load_keys
    from ipsecscope.keys.store import KeyStore

    cap = ROOT / rel
    srcs = _key_sources(cap)
    store = KeyStore()
    for src in srcs:
        try:
            store.merge(load_keys([src]))
        except KeyFileError:  # e.g. a charon log of an exchange that never derived keys
            pass
    dec = IkeDecryptor(store)
    msgs = ike_messages(cap)
    runs = []  # (rows, frames tshark flags malformed) per profile
    for profile in _ikev1_profiles(store, tmp_path):
        fmt = formats.BY_NAME["ikev2_table"]
        (profile / str(fmt.out_file)).write_text(str(formats.dump(store, fmt.name, True)))
        rows = tshark_fields(cap, profile)
        assert sorted(rows) == [m.frame for m in msgs]
        runs.append((rows, tshark_malformed(cap, profile) if any(m.header.encrypted_v1 for m in msgs) else set()))
    n_inner = 0
    for m in msgs:
        x = dec.decrypt(m)
        assert x.malformed is None, (m.frame, x.malformed)
        outer = [] if m.header.encrypted_v1 else list(x.payloads)
        full = outer + list(x.inner)
        tp = FIELDS["isakmp.typepayload"](full)
        row, bad = next(((r[m.frame], b) for r, b in runs if r[m.frame]["isakmp.typepayload"] == tp
                         and m.frame not in b), (runs[0][0][m.frame], runs[0][1]))
        if m.header.encrypted_v1 and m.frame in bad:
            # tshark garbled this IKEv1 decryption under every key it was given: it keeps one key per
            # cookie and one IV chain for both peers, and retransmissions move its chain. We must
            # have decrypted it; test_ikev1_crypto checks such messages with tshark one by one.
            assert x.decrypted, (rel, m.frame, x.crypto_note)
            continue
        # tshark 4.0 cannot decrypt some suites we can (see keys.formats); compare what it saw.
        ps = full if FIELDS["isakmp.typepayload"](full) == row["isakmp.typepayload"] else outer
        n_inner += len(ps) - len(outer)
        for field, fn in FIELDS.items():
            assert fn(ps) == _hexnorm(field, row[field]), (rel, m.frame, field)
    if "ikev2-skf/gcm" in rel or "healthy-gcm" in rel:  # suites tshark 4.0 decrypts: inner compared
        assert n_inner > 0


def _ikev1_profiles(store, tmp_path: Path) -> list[Path]:
    """Wireshark profiles with an ikev1_decryption_table each: one per key of the cookie with most keys.

    Wireshark keeps one IKEv1 key per initiator cookie (the table's last row wins), but the store
    keeps every distinct one (two peers with mismatched pre-shared keys derive different keys).
    """
    from ipsecscope.keys import wireshark

    by_cookie: dict[bytes, list] = {}
    for k in store.ikev1:
        by_cookie.setdefault(bytes(k.cookie_i), []).append(k)
    out = []
    for j in range(max((len(v) for v in by_cookie.values()), default=1)):
        d = tmp_path / f"profile{j}"
        d.mkdir()
        (d / "ikev1_decryption_table").write_text("".join(
            wireshark.ikev1_line(v[min(j, len(v) - 1)], True) + "\n" for v in by_cookie.values()))
        out.append(d)
    return out


def tshark_malformed(path: Path, profile: Path) -> set[int]:
    """Frames tshark marks Malformed (a garbled IKEv1 decryption shows up this way)."""
    cmd = ["tshark", "-r", str(path), "-Y", "isakmp && _ws.malformed", "-T", "fields", "-e", "frame.number"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True,
                         env=dict(os.environ, WIRESHARK_CONFIG_DIR=str(profile))).stdout
    return {int(x) for x in out.split()}


# ---- expected.json with_keys: what is inside the encryption -----------------------------------


def _decrypted(name: str) -> list[IkeMessage]:
    from ipsecscope.crypto.ike_sk import IkeDecryptor
    from ipsecscope.keys import load_keys

    dec = IkeDecryptor(load_keys([CORPUS / "ikev2_decryption_table.tmpl", CORPUS / "ikev1_decryption_table.tmpl"]))
    return [dec.decrypt(m) for m in messages(name)]


@pytest.mark.parametrize("name", IKE_CAPTURES)
def test_inner_payloads_match_with_keys_oracle(name: str) -> None:
    o = json.loads((CORPUS / f"{name}.expected.json").read_text())["passes"]["with_keys"]["ike"]
    garbled = set(o["ikev1_decrypt_garbled_frames"])
    msgs = [m for m in _decrypted(name) if m.frame not in garbled]
    expected = Counter({_num(k): v for k, v in o["encrypted_payload_types"].items()})
    for om in o["message_list"]:  # the totals include what tshark read from a garbled decryption
        if om["frame"] in garbled:
            expected.subtract(_num(x) for x in om["ikev1_encrypted"]["inner_payloads"])
    assert Counter(t for m in msgs for t in _types(m.inner)) == +expected
    notify_names = Counter(
        f"{iana.name(iana.NotifyType if m.version == 2 else iana.Ikev1NotifyType, p.notify_type)} ({p.notify_type})"
        for m in msgs for p in (m.inner if m.header.encrypted_v1 else m.all_payloads()) if isinstance(p, NotifyPayload))
    assert notify_names == Counter({k.replace("-", "_"): v for k, v in o["notify_types"].items()})
    proposed = [(m.frame, pr.spi.hex()) for m in msgs for p in m.inner if isinstance(p, SaPayload)
                for pr in p.proposals if pr.protocol in (2, 3)]
    assert proposed == [(s["frame"], s["spi"]) for s in o["child_sa_spis_proposed"] if s["frame"] not in garbled]
    by_frame = {m.frame: m for m in msgs}
    for om in o["message_list"]:
        if om["frame"] in garbled:
            continue
        m = by_frame[om["frame"]]
        sels = [(p.type, s) for p in m.inner if isinstance(p, TsPayload) for s in p.selectors]
        assert [{"side": iana.PayloadType(t).name, "type": iana.TsType(s.ts_type).name, "protoid": str(s.ip_proto),
                 "start_port": str(s.start_port), "end_port": str(s.end_port), "start_ipv4": s.start_addr,
                 "end_ipv4": s.end_addr} for t, s in sels] == om.get("traffic_selectors", [])
        dels = [{"protocol": iana.name(iana.ProtocolId, p.protocol), "spis": [x.hex() for x in p.spis]}
                for p in m.inner if isinstance(p, DeletePayload)]
        assert dels == om.get("delete", [])


def test_config_mode_attributes_in_words() -> None:
    """ikev1-bug-12610 Config Mode after decryption; tshark with keys shows the same values
    (isakmp.cfg.attr.xauth.user_name "mpa", internal_ip4_address 10.1.1.1, XAUTH_STATUS 1/0)."""
    from ipsecscope.decode.ike import cp_attribute_text

    by = {m.frame: m for m in _decrypted("ikev1-bug-12610.pcapng.gz")}

    def attrs(frame: int) -> list[tuple[int, str]]:
        (cp,) = [p for p in by[frame].inner if isinstance(p, CpPayload)]
        return [(t, cp_attribute_text(t, v, 1)) for t, v in cp.attributes]

    assert attrs(9) == [(16521, "mpa"), (16522, "<4 bytes hidden>")]  # the password stays hidden
    assert attrs(10) == [(16527, "1")] and attrs(11) == [(16527, "0")]
    assert attrs(13)[0] == (1, "10.1.1.1")
    assert [t for t, _v in attrs(12)] == [1, 2, 3, 4, 28672, 28674, 28675, 28676, 28678, 7]
    assert {v for _t, v in attrs(12)} == {""}  # a request carries empty values


def test_ikev1_attribute_names() -> None:
    """Phase-1 vs IPsec DOI attribute names on real transforms (tshark -V shows the same words:
    Life-Type Seconds, Life-Duration 28800, Encryption-Algorithm AES-CBC, XAUTHInitPreShared...)."""
    from ipsecscope.decode.ikev1 import attribute_name, attribute_value_name

    def words(proto: int, t) -> list[tuple[str, str]]:
        return [(attribute_name(proto, a), attribute_value_name(proto, a, v)) for a, v in t.attrs]

    sa = next(p for p in messages("ikev1-bug-12620.pcapng.gz")[0].payloads if isinstance(p, SaPayload))
    assert (sa.doi, sa.situation) == (1, 1)
    assert words(1, sa.proposals[0].transforms[0]) == [
        ("LIFE_TYPE", "SECONDS"), ("LIFE_DURATION", "28800"), ("ENCRYPTION_ALGORITHM", "AES_CBC"),
        ("KEY_LENGTH", "256"), ("AUTHENTICATION_METHOD", "XAUTH_INIT_PRESHARED"), ("HASH_ALGORITHM", "SHA2_256"),
        ("GROUP_DESCRIPTION", "MODP_1024")]
    qm = next(m for m in _decrypted("ikev1-bug-12610.pcapng.gz") if m.frame == 15)
    (sa2,) = [p for p in qm.inner if isinstance(p, SaPayload)]
    (prop,) = sa2.proposals
    assert (prop.protocol, prop.spi.hex(), prop.transforms[0].id) == (3, "c254fe64", iana.Ikev1IpsecTransformId.ESP_AES)
    assert dict(words(3, prop.transforms[0])) == {
        "SA_LIFE_TYPE": "SECONDS", "SA_LIFE_DURATION": "28800", "ENCAPSULATION_MODE": "TUNNEL",
        "AUTHENTICATION_ALGORITHM": "HMAC_SHA", "KEY_LENGTH": "128"}  # tshark: 28800, 128, 1, 2
    assert proposal_string(prop, 1) == "aes128-sha1"
