"""IKEv1 (RFC 2409) into the same model as IKEv2.

- Phase 1 (Main Mode, 6 messages; Aggressive Mode, 3) → an :class:`IkeSa` with ``version=1``
  keyed by the cookies (the responder cookie is zero in the first message).
- Quick Mode (3 messages, encrypted, one Message ID) → a :class:`ChildSa`: the initiator's SA
  payload carries the SPI it will receive on (``spi_i``), the responder's the one it receives on
  (``spi_r``); IDci/IDcr are the selectors (RFC 2409 §5.5).
- Informational: Delete (protocol ISAKMP = the IKE SA, ESP/AH = the sender's inbound SPIs),
  Notify errors (phase-1 failure), DPD R-U-THERE (RFC 3706).

IKEv1 has no response flag: the first message under a Message ID is the request, messages from
the other side are answers, byte-identical copies are retransmissions, or the capture's own copy
within milliseconds (state/copies, as IKEv2's).
"""

from __future__ import annotations

from ..crypto.prf import nat_detection_hash
from ..model.iana import Ikev1Exchange, Ikev1NotifyType, Ikev1Payload, Ikev1ProtocolId, notify_is_error
from ..model.idtext import spi_text
from ..model.ike import (
    DeletePayload,
    HashPayload,
    IdPayload,
    IkeMessage,
    KePayload,
    NotifyPayload,
    Proposal,
    SaPayload,
)
from ..model.proposals import proposal_string
from ..model.sa import BundleSpis, ChildSa, IkeExchange, IkeSa, SaState
from . import names as N
from .book import Book, ChildScratch, chosen_in, note_nat_detection
from .child_sa import sa_unreadable, v1_id_selector
from .copies import ike_capture_copy
from .ikev1_frag import MAX_SETS_PER_SA, fragment_of
from .ikev1_stall import note as note_phase1
from .ikev1_stall import resume
from .selection import aggressive_ke_group, aggressive_ke_unfit, answer_unfit_bundle, answer_unfit_v1

# notify_is_error() is the IKEv2 split (RFC 7296 §3.10.1), but IKEv1 uses the same one: 1-8191 are
# errors, 16384 and up status (RFC 2408 §3.14.1).

ZERO = b"\x00" * 8
_MODES = {Ikev1Exchange.IDENTITY_PROTECTION: "Main", Ikev1Exchange.AGGRESSIVE: "Aggressive",
          Ikev1Exchange.BASE: "Base"}


def _ike_sa(book: Book, msg: IkeMessage) -> IkeSa:
    h = msg.header
    sa = book.lookup_ike(1, h.spi_i, h.spi_r)
    if sa is not None:
        if sa.ike_spi_r == ZERO and h.spi_r != ZERO:
            book.bind_responder_spi(sa, h.spi_r)
        return sa
    if h.spi_r == ZERO:
        # The initiator did not get the answer in time and sent its first message again.
        prev = book.answered_init_copy(1, h.spi_i, msg.src, msg.raw)
        if prev is not None:
            return prev
        if h.exchange == Ikev1Exchange.INFORMATIONAL:
            # A cleartext notify under the initiator cookie alone, sent after the responder's
            # cookie was known (an initiator refusing MM2, then going on when MM2 came again:
            # Cisco joy's ikev1.pcap): the cookies name one ISAKMP SA (RFC 2408 §3.1), the zero
            # half is the sender's omission, not a second negotiation.
            prev = book.bound_by_spi_i(1, h.spi_i, msg.src, msg.dst)
            if prev is not None:
                return prev
    # The first message of phase 1 has a zero responder cookie and comes from the initiator. A
    # capture starting later sees a later message first: its sender is the initiator unless the
    # message says otherwise (_responder_sent).
    if h.spi_r != ZERO and _responder_sent(msg):
        sa = book.create_ike_sa(1, h.spi_i, h.spi_r, msg.dst, msg.src, msg.dport, msg.sport, msg.ts)
    else:
        sa = book.create_ike_sa(1, h.spi_i, h.spi_r, msg.src, msg.dst, msg.sport, msg.dport, msg.ts)
    if h.spi_r == ZERO:
        book.ike_scratch(sa).init_raw = msg.raw
    elif h.exchange not in _MODES:
        # A later exchange under an IKE SA whose phase 1 the capture missed.
        sa.state_inferred = True
        book.transition(sa, SaState.ESTABLISHED)
    book.emit("ike_sa_created", msg.ts, ike_sa=sa.key, initiator=sa.initiator, responder=sa.responder, version=1)
    return sa


def _responder_sent(msg: IkeMessage) -> bool:
    """Whether the first message seen of an IKE SA, a phase-1 message with both cookies, was sent
    by the responder. IKEv1 headers carry no role (RFC 2408 §3.1), but phase 1's messages do: an
    SA payload with the responder cookie set is the responder's choice, MM2 or AM2 (RFC 2409 §5:
    the initiator sends its SA payload only in the first message, whose responder cookie is
    zero). Else ports: a sender on 500/4500 to another port answers an initiator whose port a
    NAT changed (RFC 3947 §3, a responder answers where the request came from); the initiator
    sends to the responder's 500 or 4500."""
    if msg.header.exchange not in _MODES:
        return False
    if not msg.header.encrypted_v1 and msg.find(SaPayload):
        return True
    ike_ports = (500, 4500)
    return msg.sport in ike_ports and msg.dport not in ike_ports


def _exchange(book: Book, sa: IkeSa, msg: IkeMessage) -> tuple[IkeExchange, bool, bool]:
    """(exchange, is_response, is_retransmission)."""
    h = msg.header
    # Phase 1 shares Message ID 0 across its 4-6 messages: one exchange, requester = initiator.
    msg_id = h.msg_id
    if (h.exchange == Ikev1Exchange.INFORMATIONAL and not h.encrypted_v1 and sa.state == SaState.INITIATING
            and msg.src == sa.responder):
        # A responder refusing phase 1 (e.g. NO-PROPOSAL-CHOSEN to MM1) answers with a cleartext
        # Informational under its own Message ID: it is the answer to the phase-1 exchange.
        msg_id = 0
    # A cleartext Informational the initiator sends under Message ID 0 during phase 1 is a one-way
    # notify of its own (RFC 2408 §4.8), not one of phase 1's requests: filed apart (-1).
    own = (h.exchange == Ikev1Exchange.INFORMATIONAL and msg_id == 0 and not h.encrypted_v1
           and msg.src == sa.initiator)
    xkey = (id(sa), -1 if own else msg_id, True)
    x = book.exchanges.get(xkey)
    priv = book.ike_scratch(sa)
    if x is None:
        # Phase 1's requester is the initiator, also when its first message was not captured.
        first = msg_id == 0 and h.exchange in _MODES
        x = IkeExchange(exchange=h.exchange, msg_id=h.msg_id, requester=sa.initiator if first else msg.src)
        x.encrypted = h.encrypted_v1
        x.requester_port, x.responder_port = ((sa.initiator_port, sa.responder_port) if first
                                              else (msg.sport, msg.dport))
        book.exchanges[xkey] = x
        sa.exchanges.append(x)
    is_response = msg.src != x.requester
    rkey = (msg_id, True, is_response, hash(msg.raw))
    if rkey in priv.last_raw:
        if ike_capture_copy(priv.last_seen, rkey, x, msg):
            # The capture saw this datagram twice (state/copies): a QM3 or MM5 captured twice is
            # one message sent once, not a retransmission after a lost answer.
            return x, is_response, True
        if is_response:
            x.response_retransmits += 1
            x.response_frames.append(msg.frame)
        else:
            x.retransmits += 1
            x.request_frames.append(msg.frame)
            x.copy_frames.append(msg.frame)
        return x, is_response, True
    priv.last_raw[rkey] = msg.raw
    priv.last_seen[rkey] = msg.ts
    if is_response:
        x.response_ts = x.response_ts or msg.ts
        x.response_frames.append(msg.frame)
    else:
        if x.request_ts is None:
            x.request_ts = msg.ts
            x.request_size = len(msg.raw)
        x.request_frames.append(msg.frame)
    if msg.ip_fragmented:
        x.ip_fragmented = True
    if msg.decrypted:
        x.decrypted = True
    book.note_notifies(x, msg)
    return x, is_response, False


def on_ikev1(book: Book, msg: IkeMessage) -> None:
    sa = _ike_sa(book, msg)
    sa.frames.append(msg.frame)
    h = msg.header
    x, is_response, retrans = _exchange(book, sa, msg)
    if 4500 in (msg.sport, msg.dport):
        if not sa.nat_t:
            sa.nat_t, sa.natt_frame = True, msg.frame
        _nat_t_endpoints(book, sa, msg, is_response)
    if h.exchange in _MODES:
        if sa.stall is not None:  # live mode: phase 1 goes on after an end of input concluded it stopped
            resume(book, sa)
        note_phase1(book, sa, msg, is_response)
    fs = msg.v1_fragments
    if fs is not None and not any(f is fs for f in sa.v1_fragment_sets):
        if len(sa.v1_fragment_sets) < MAX_SETS_PER_SA:
            sa.v1_fragment_sets.append(fs)
        elif msg.frame == fs.first_frame:  # counted once, on the set's first piece
            sa.v1_fragment_sets_over += 1
    if retrans or (not msg.reassembled_from and fragment_of(msg) is not None):
        # A piece alone holds no payload to read: the message it belongs to is read on the frame
        # that completes it (state/ikev1_frag)
        return
    book.note_key(sa, msg)
    if msg.decrypted:
        sa.decrypted = True
    book.note_vendor_ids(sa, msg)
    ex = h.exchange
    if ex in _MODES:
        _phase1(book, sa, msg, x, is_response)
    elif ex == Ikev1Exchange.QUICK_MODE:
        _quick(book, sa, msg, x, is_response)
    elif ex == Ikev1Exchange.INFORMATIONAL:
        _informational(book, sa, msg, x)
    elif ex == Ikev1Exchange.TRANSACTION:
        x.summary = x.summary or "Transaction (Mode Config / XAUTH)"


def _sender_role(sa: IkeSa, msg: IkeMessage) -> str | None:
    """Which peer of ``sa`` sent ``msg``. IKEv1 headers have no I flag (RFC 2408 §3.1): by address,
    and when a NAT gave the sender a new address, by the peer it was sent to (only one of the two
    moves in a rebinding)."""
    if msg.src == sa.initiator or msg.dst == sa.responder != msg.src:
        return "initiator"
    if msg.src == sa.responder or msg.dst == sa.initiator:
        return "responder"
    return None


def _nat_t_endpoints(book: Book, sa: IkeSa, msg: IkeMessage, is_response: bool) -> None:
    """IKEv1 NAT-T (RFC 3947): once on UDP 4500, the port each peer sends IKE from is its NAT-T
    endpoint (with ESP in UDP from the same port, RFC 3948), and a change of it with the cookies
    kept is a NAT rebinding (state/nat.py), as IKEv2's (RFC 7296 §2.23). A request sent to the
    moved peer's new endpoint is the other peer following it; an answer goes back wherever its
    request came from, so it does not count."""
    ex = msg.header.exchange
    name = "IKE " + (f"{_MODES[ex]} Mode" if ex in _MODES else _V1_NAMES.get(ex, f"exchange {ex}"))
    role = _sender_role(sa, msg)
    if role is not None:
        book.peer_source(sa, sa.key, role, msg.src, msg.sport, msg.ts, msg.frame, name)
    if not is_response and book.nat.watching:
        book.nat.destination(msg.dst, msg.dport, msg.ts, msg.frame, name)


_V1_NAMES = {Ikev1Exchange.QUICK_MODE: "Quick Mode", Ikev1Exchange.INFORMATIONAL: "Informational",
             Ikev1Exchange.TRANSACTION: "Transaction"}


def _phase1(book: Book, sa: IkeSa, msg: IkeMessage, x: IkeExchange, is_response: bool) -> None:
    sa.mode = _MODES.get(msg.header.exchange)
    priv = book.ike_scratch(sa)
    sas = msg.find(SaPayload)
    kes = msg.find(KePayload)
    if sas and sas[0].proposals:
        props = sas[0].proposals
        if not is_response:
            priv.offer = tuple(props)  # what the answer must fit (RFC 2409 §5)
            # Aggressive Mode's KE payload comes with the offer (RFC 2409 §5): the answer's group
            priv.ke_group = aggressive_ke_group(props, len(kes[0].data)) if kes and sa.mode == "Aggressive" else None
            for p in props:
                s = proposal_string(p, 1)
                for alt in s.split(", "):
                    if alt not in sa.offered:
                        sa.offered.append(alt)
        else:
            sa.proposal = proposal_string(props[0], 1)
            sa.proposal_frames = chosen_in(x, msg.frame)
            sa.answer_unfit = answer_unfit_v1(priv.offer, props[0])
            if sa.answer_unfit is None and sa.mode == "Aggressive":
                sa.answer_unfit = aggressive_ke_unfit(props[0], priv.ke_group, len(kes[0].data) if kes else None)
            for t in props[0].transforms[:1]:
                for k, v in t.attrs:
                    if (k & 0x7FFF) == 4 and isinstance(v, int):  # group description
                        sa.dh_group = v
                    if (k & 0x7FFF) == 3 and isinstance(v, int):
                        sa.auth_method = _V1_AUTH.get(v, f"auth method {v}")
    for i in msg.find(IdPayload):
        if i.type == 5:  # ID
            if is_response:
                sa.id_r = i.value
            else:
                sa.id_i = i.value
    _nat_d(sa, msg, is_response)
    for n in msg.find(NotifyPayload):
        if notify_is_error(n.notify_type):
            book.fail_ike(sa, N.notify_name(n.notify_type, 1), msg.ts, msg.frame, by=msg.src)
            x.error = x.error or n.notify_type
            x.error_name = x.error_name or N.notify_name(n.notify_type, 1)
            return
    if is_response:
        priv.responder_msgs += 1
    else:
        priv.initiator_msgs += 1
    # Main Mode ends with the responder's third message (MM6), Aggressive Mode with the
    # initiator's message after the responder's (AM3) — RFC 2409 §5; a capture that starts at
    # MM2 or AM2 still sees both.
    done = (sa.mode == "Main" and priv.responder_msgs >= 3) or (
        sa.mode == "Aggressive" and priv.responder_msgs >= 1 and not is_response)
    if done:
        book.establish_ike(sa, msg.ts, inferred=not msg.decrypted and msg.header.encrypted_v1)
    x.summary = f"{sa.mode} Mode" + (f" {sa.proposal}" if sa.proposal else "")


def _nat_d(sa: IkeSa, msg: IkeMessage, is_response: bool) -> None:
    """RFC 3947 §3.2: NAT-D = HASH(CKY-I | CKY-R | IP | Port) with the negotiated hash; the first
    NAT-D is the receiver's address, the following ones the sender's."""
    # (15: NAT-T drafts 04-08's number, decoded as a hash only in Main/Aggressive Mode, decode.ikev1)
    hashes = [p.data for p in msg.find(HashPayload) if p.type in (Ikev1Payload.NAT_D, Ikev1Payload.NAT_D_DRAFT, 15)]
    if len(hashes) < 2:
        return
    algo = {16: "md5", 20: "sha1", 32: "sha256", 48: "sha384", 64: "sha512"}.get(len(hashes[0]))
    if algo is None:
        return
    h = msg.header
    dst_ok = nat_detection_hash(algo, h.spi_i, h.spi_r, msg.dst, msg.dport) == hashes[0]
    src_ok = nat_detection_hash(algo, h.spi_i, h.spi_r, msg.src, msg.sport) in hashes[1:]
    note_nat_detection(sa, msg.src, not is_response, src_ok, dst_ok)


def _quick(book: Book, sa: IkeSa, msg: IkeMessage, x: IkeExchange, is_response: bool) -> None:
    if msg.header.encrypted_v1 and not msg.decrypted:
        x.summary = x.summary or "Quick Mode (encrypted)"
        return
    sas = msg.find(SaPayload)
    props = [p for p in sas[0].proposals
             if p.protocol in (Ikev1ProtocolId.PROTO_IPSEC_AH, Ikev1ProtocolId.PROTO_IPSEC_ESP)] if sas else []
    ids = [i for i in msg.find(IdPayload) if i.type == 5]
    if not is_response:
        if x.new_child is None and props:
            ts = [v1_id_selector(i) for i in ids[:2]]
            child = book.new_child(
                sa, protocol="AH" if props[0].protocol == Ikev1ProtocolId.PROTO_IPSEC_AH else "ESP",
                spi_i=int.from_bytes(props[0].spi[-4:], "big"), initiator=msg.src, responder=msg.dst,
                offered=_offered(props),
                created_ts=msg.ts, created_frame=msg.frame, created_by="Quick Mode",
            )
            if len(ts) == 2 and ts[0] and ts[1]:
                child.ts_i_offered = child.ts_i = (ts[0],)
                child.ts_r_offered = child.ts_r = (ts[1],)
            child.frames.append(msg.frame)
            x.new_child = child.id
            # What the answer must fit (RFC 2408 §4.2), kept where IKEv2 keeps a CHILD SA's offer.
            # Quick Mode's PFS group is an SA attribute (RFC 2409 §5.5), not the KE payload's: no ke_group.
            book.child_scratch[child.id] = ChildScratch(sa.ike_spi_i, sa.ike_spi_r, protocol=props[0].protocol,
                                                        offer=tuple(props))
            first = [p for p in props if p.num == props[0].num]
            if len(first) > 1:  # an AH+ESP bundle: each protocol's SA has its own SPI (RFC 2409 §5.5)
                child.bundle = [BundleSpis(_proto_name(p), spi_i=int.from_bytes(p.spi[-4:], "big")) for p in first]
            for _proto, spi_i, _spi_r in child.spi_pairs():
                book.register_spi(child, spi_i)
            x.summary = f"Quick Mode CHILD_SA #{child.id}"
        else:
            # Third message (the initiator's HASH(3)): the SA is in place on both sides.
            child = book.table.child_sas.get(x.new_child) if x.new_child else None
            if child is not None:
                child.frames.append(msg.frame)
        return
    child = book.table.child_sas.get(x.new_child) if x.new_child else None
    if child is None:
        return
    child.frames.append(msg.frame)
    err = next((n for n in msg.find(NotifyPayload) if notify_is_error(n.notify_type)), None)
    if err is None and not props and sa_unreadable(msg):
        return  # an answer whose SA contradicts RFC 2407/2408 (marked malformed): no choice known
    if err is not None or not props:
        book.transition(child, SaState.FAILED)
        child.failure = N.notify_name(err.notify_type, 1) if err else "no SA in response"
        child.failure_frame = msg.frame
        return
    prop = props[0]
    child.spi_r = int.from_bytes(prop.spi[-4:], "big")
    bundle = [p for p in props if p.num == prop.num]
    cp = book.child_scratch.get(child.id)
    _answer_bundle(book, child, bundle, cp.offer if cp is not None else ())
    child.proposal = proposal_string(prop, 1) if len(bundle) == 1 else _offered(bundle)[0]
    child.proposal_frames = chosen_in(x, msg.frame)
    child.answer_unfit = answer_unfit_bundle(cp.offer if cp is not None else (), props)
    for t in prop.transforms[:1]:
        for k, v in t.attrs:
            k &= 0x7FFF
            if k == 4 and isinstance(v, int):  # encapsulation mode (RFC 2407 §4.5, RFC 3947 §5)
                child.mode = "transport" if v in (2, 4, 61444) else "tunnel"
            elif k == 3 and isinstance(v, int):
                child.pfs_group = v
    if len(ids) >= 2:
        a, b = v1_id_selector(ids[0]), v1_id_selector(ids[1])
        if a and b:
            child.ts_i, child.ts_r = (a,), (b,)
    book.transition(child, SaState.ESTABLISHED)
    for _proto, _spi_i, spi_r in child.spi_pairs():
        book.register_spi(child, spi_r)
    book.emit("child_sa_created", msg.ts, child_sa=child.id, ike_sa=sa.key, spi_i=child.spi_i,
             spi_r=child.spi_r, proposal=child.proposal, created_by="Quick Mode")
    _link_qm_rekey(book, sa, child, msg.ts)


def _proto_name(p: Proposal) -> str:
    return "AH" if p.protocol == Ikev1ProtocolId.PROTO_IPSEC_AH else "ESP"


def _answer_bundle(book: Book, child: ChildSa, answer: list[Proposal], offer: tuple[Proposal, ...]) -> None:
    """The CHILD SA's protocols as the answer took them: each answered protocol with the
    responder's SPI from the answer and the initiator's from its offer of that protocol (RFC 2409
    §5.5: each protocol of a bundle has its own SPI each way). One protocol: no bundle."""
    if len(answer) < 2:
        if child.bundle and answer:  # an offered bundle answered by one protocol: that protocol's SA
            for b in child.bundle:
                book.unindex_spi(child, b.spi_i)
            own = next((b for b in child.bundle if b.protocol == _proto_name(answer[0])), None)
            child.bundle = []
            child.protocol = _proto_name(answer[0])
            if own is not None:
                child.spi_i = own.spi_i
            book.register_spi(child, child.spi_i)
        return
    mine = {b.protocol: b.spi_i for b in child.bundle}
    out = []
    for p in answer:
        name = _proto_name(p)
        spi_i = mine.get(name)
        if spi_i is None:
            spi_i = next((int.from_bytes(o.spi[-4:], "big") for o in offer if _proto_name(o) == name and o.spi), None)
        out.append(BundleSpis(name, spi_i=spi_i, spi_r=int.from_bytes(p.spi[-4:], "big")))
    for b in child.bundle:  # the offer's SPIs come off the index: the answer's bundle replaces them
        book.unindex_spi(child, b.spi_i)
    child.bundle = out
    child.protocol, child.spi_i, child.spi_r = out[0].protocol, out[0].spi_i, out[0].spi_r
    for b in out:
        book.register_spi(child, b.spi_i)


def _offered(props: list[Proposal]) -> list[str]:
    """Quick Mode proposals as strongSwan keywords: a proposal's transforms are alternatives; an
    AH+ESP bundle (proposals under one number, RFC 2408 §4.2) is one entry, "AH sha256 + ESP aes128"."""
    nums: dict[int, list[Proposal]] = {}
    for p in props:
        nums.setdefault(p.num, []).append(p)
    out: list[str] = []
    for b in nums.values():
        if len(b) == 1:
            out += proposal_string(b[0], 1).split(", ")
        else:
            out.append(" + ".join(f"{'AH' if p.protocol == Ikev1ProtocolId.PROTO_IPSEC_AH else 'ESP'} "
                                  f"{proposal_string(p, 1)}" for p in b))
    return list(dict.fromkeys(out))


def _link_qm_rekey(book: Book, sa: IkeSa, new, ts: float) -> None:
    """IKEv1 has no REKEY_SA: a rekey is a new Quick Mode for the same selectors while the old
    SA still lives (RFC 2409 §5.5; strongSwan, Libreswan and others do this). Link the two."""
    if not (new.ts_i and new.ts_r):
        return
    for cid in reversed(sa.children):
        old = book.table.child_sas.get(cid)
        if old is None or old.id == new.id or old.state != SaState.ESTABLISHED or old.rekeyed_into:
            continue
        same = (old.initiator == new.initiator and (old.ts_i, old.ts_r) == (new.ts_i, new.ts_r)) or (
            old.initiator == new.responder and (old.ts_i, old.ts_r) == (new.ts_r, new.ts_i))
        if not same:
            continue
        book.rekey_child_done(old, new, ts, sa.key)
        return


def _dpd_ack(sa: IkeSa, msg: IkeMessage, seq: int | None) -> None:
    """File an R-U-THERE-ACK as the response of the peer's R-U-THERE it acknowledges: same
    sequence number (RFC 3706 §5), else the latest one still unanswered. Each is its own one-way
    Informational with its own message ID, so nothing else pairs them."""
    asks = [y for y in sa.exchanges if y.dpd_seq is not None and y.requester != msg.src]
    match = next((y for y in reversed(asks) if seq is not None and y.dpd_seq == seq), None)
    if match is None:
        match = next((y for y in reversed(asks) if not y.response_frames), None)
    if match is not None:
        match.response_frames.append(msg.frame)
        if match.response_ts is None:
            match.response_ts = msg.ts


def _informational(book: Book, sa: IkeSa, msg: IkeMessage, x: IkeExchange) -> None:
    readable = not msg.header.encrypted_v1 or (msg.decrypted and not msg.malformed and bool(msg.inner))
    priv = book.ike_scratch(sa)
    if (not readable and sa.state == SaState.INITIATING and sa.mode == "Main" and msg.src == sa.responder
            and priv.initiator_msgs >= 3):
        # The responder answers MM5 (the initiator's encrypted ID + HASH) with an encrypted
        # Informational instead of MM6: it could not verify MM5. Main Mode keys derive from the
        # PSK (RFC 2409 §5.4, SKEYID = prf(pre-shared-key, Ni_b | Nr_b)), so with different PSKs
        # neither side can even read the other's error notify.
        book.fail_ike(sa, "Main Mode AUTH refused (encrypted Informational after MM5; probably a PSK mismatch)",
                     msg.ts, msg.frame, by=msg.src)
        sa.state_inferred = True
    elif (not readable and sa.state == SaState.INITIATING and sa.mode == "Aggressive" and msg.src == sa.initiator
            and priv.responder_msgs >= 1 and priv.initiator_msgs == 1):
        # Aggressive Mode's mirror image: the initiator answers AM2 with an encrypted Informational
        # instead of AM3: it could not verify AM2's HASH_R (RFC 2409 §5.4; strongSwan: "calculated
        # HASH does not match HASH payload", then N(AUTHENTICATION_FAILED)), and the responder, waiting
        # for AM3, retransmits AM2 until it gives up.
        psk = "; probably a PSK mismatch" if sa.auth_method == "PSK" else ""
        book.fail_ike(sa, f"Aggressive Mode AUTH refused (encrypted Informational after AM2{psk})",
                      msg.ts, msg.frame, by=msg.src)
        sa.state_inferred = True
    if not readable:
        x.summary = x.summary or "Informational (encrypted)"
        return
    parts = []
    for d in msg.find(DeletePayload):
        if d.protocol == Ikev1ProtocolId.PROTO_ISAKMP:
            parts.append("delete ISAKMP SA")
            book.delete_ike(sa, msg.src, msg.ts, msg.frame)
        else:
            for spi_b in d.spis:
                spi = int.from_bytes(spi_b[-4:], "big")
                parts.append(f"delete {'AH' if d.protocol == Ikev1ProtocolId.PROTO_IPSEC_AH else 'ESP'} {spi_text(spi)}")
                child = book.child_by_spi(spi, sender=msg.src, ike=sa)
                if child is not None:
                    book.delete_child(child, msg.src, msg.ts, msg.frame)
    for n in msg.find(NotifyPayload):
        t = n.notify_type
        if t == Ikev1NotifyType.R_U_THERE:
            parts.append("DPD R-U-THERE")
            x.dpd_seq = (n.decoded or {}).get("seq", -1)
        elif t == Ikev1NotifyType.R_U_THERE_ACK:
            parts.append("DPD R-U-THERE-ACK")
            _dpd_ack(sa, msg, (n.decoded or {}).get("seq"))
        elif t == Ikev1NotifyType.INVALID_SPI:
            spi = n.decoded.get("spi") if n.decoded else None
            book.observe("invalid_spi_notify", msg.ts, (msg.frame,), msg.src, msg.dst, spi=spi, ike_sa=sa.key)
            parts.append("INVALID-SPI")
        elif notify_is_error(t):
            name = N.notify_name(t, 1)
            parts.append(name)
            x.error = x.error or t
            x.error_name = x.error_name or name
            if sa.state == SaState.INITIATING:
                book.fail_ike(sa, name, msg.ts, msg.frame, by=msg.src)
    if x.exchange in _MODES and x.error is not None:
        x.summary = f"{_MODES[x.exchange]} Mode refused: {x.error_name}"
    else:
        x.summary = "Informational " + ", ".join(parts) if parts else "Informational"


_V1_AUTH = {1: "PSK", 2: "DSS signature", 3: "RSA signature", 4: "RSA encryption", 5: "revised RSA encryption",
            64221: "hybrid RSA", 65001: "XAUTH PSK", 65005: "XAUTH RSA"}
