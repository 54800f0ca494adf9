"""IKEv2 (RFC 7296) into the SA table, one group of handlers per exchange.

``on_ikev2(book, msg)`` is the entry point ``tracker.Tracker`` dispatches to. It finds the IKE SA
and the exchange a message belongs to (RFC 7296 §2.1/§2.2: message IDs, retransmissions), then
hands the message to the handler of its exchange:

- IKE_SA_INIT (§1.2): proposals, KE group, nonces, INVALID_KE / COOKIE refusals and retries;
- NAT detection (§2.23);
- IKE_AUTH (§1.2, §2.15) and the first CHILD SA;
- CHILD SA creation and rekey (CREATE_CHILD_SA, §1.3), IKE SA rekey (§1.3.2, §2.18);
- INFORMATIONAL (§1.4): deletes, error notifies, liveness checks.

It writes only through :class:`~ipsecscope.state.book.Book`'s public methods.
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Iterable

from ..crypto.prf import nat_detection_hash
from ..model import iana
from ..model.iana import NotifyType, PayloadType
from ..model.idtext import spi_text
from ..model.ike import (
    AuthPayload,
    CertPayload,
    DeletePayload,
    IdPayload,
    IkeMessage,
    KePayload,
    NoncePayload,
    NotifyPayload,
    SaPayload,
    SkPayload,
    TsPayload,
)
from ..model.proposals import proposal_algorithms, proposal_string
from ..model.sa import ChildSa, IkeExchange, IkeSa, SaState
from . import mobike
from . import names as N
from .book import ZERO_SPI, Book, ChildScratch, chosen_in, note_nat_detection
from .child_sa import sa_unreadable
from .copies import ike_capture_copy
from .selection import answer_unfit

RETRY_WINDOW = 30.0  # s: a new IKE_SA_INIT this soon after INVALID_KE/COOKIE is the retry
REKEY_WINDOW = 10.0  # s: a new IKE SA this soon after an encrypted CREATE_CHILD_SA may be its rekey

_NT = NotifyType
_CHILD_ERRORS = {_NT.NO_PROPOSAL_CHOSEN, _NT.TS_UNACCEPTABLE, _NT.SINGLE_PAIR_REQUIRED, _NT.INTERNAL_ADDRESS_FAILURE,
                 _NT.FAILED_CP_REQUIRED, _NT.INVALID_SELECTORS, _NT.NO_ADDITIONAL_SAS, _NT.INVALID_KE_PAYLOAD,
                 _NT.TEMPORARY_FAILURE, _NT.CHILD_SA_NOT_FOUND}

_AUTH = {1: "RSA signature", 2: "PSK", 3: "DSS signature", 9: "ECDSA-256", 10: "ECDSA-384", 11: "ECDSA-521",
         12: "generic secure password", 13: "NULL", 14: "digital signature"}


def auth_name(method: int) -> str:
    return _AUTH.get(method, f"auth method {method}")


def spi_int(b: bytes | int | None) -> int:
    """A CHILD SA SPI as an int (the last 4 octets of an SPI field, RFC 7296 §3.3.1)."""
    if b is None:
        return 0
    if isinstance(b, int):
        return b
    return int.from_bytes(b[-4:], "big") if b else 0


def redirect_gateway(msg: IkeMessage, kind: int = NotifyType.REDIRECT) -> str | None:
    """The gateway a REDIRECT (or REDIRECTED_FROM) notify names (RFC 5685 §8), or None."""
    for n in msg.find(NotifyPayload):
        if n.notify_type == kind:
            gw = (n.decoded or {}).get("gateway")
            return str(gw) if gw else "(gateway not readable)"
    return None


# -- dispatch, IKE SA lookup and exchange pairing

def on_ikev2(book: Book, msg: IkeMessage) -> None:
    h = msg.header
    sa = ike_sa_for_v2(book, msg)
    sa.frames.append(msg.frame)
    is_response = h.is_response
    if sa.failure == "no response" and is_response:  # finish() gave up too early (live mode)
        book.transition(sa, SaState.INITIATING)
        sa.failure, sa.failed_ts = None, None
    # Which side asked: a request's I flag says whether it came from the original initiator;
    # a response carries the responder's I flag, so the requester is the other side.
    from_init = h.is_initiator if not is_response else not h.is_initiator
    if 4500 in (msg.sport, msg.dport) and h.exchange != iana.ExchangeType.IKE_SA_INIT:
        sa.nat_t = True
        if sa.natt_frame is None or msg.frame < sa.natt_frame:  # the float (§2.23), for the NAT rule
            sa.natt_frame = msg.frame
        if msg.transport == "tcp" and sa.tcp_frame is None:  # RFC 8229: the move was to TCP, not UDP
            sa.tcp_frame = msg.frame
        # NAT-T endpoints: the I flag names the sender whatever address it comes from now (§3.1).
        name = f"IKE {iana.name(iana.ExchangeType, h.exchange)}"
        book.peer_source(sa, sa.key, "initiator" if h.is_initiator else "responder", msg.src, msg.sport, msg.ts,
                        msg.frame, name)
        if not is_response and book.nat.watching:  # a response goes back to its request's source
            book.nat.destination(msg.dst, msg.dport, msg.ts, msg.frame, name)
    if msg.src == sa.initiator and not is_response and msg.sport:
        sa.initiator_port = msg.sport
        sa.responder_port = msg.dport
    x, retrans = exchange(book, sa, msg, from_init, is_response)
    if is_response and msg.malformed:
        x.malformed_responses.append(msg.frame)
    if retrans:
        return
    if msg.icv_ok is False:  # keys were found for this SA, but they do not authenticate it
        sa.icv_failed += 1
    book.note_key(sa, msg)
    skf = next((p for p in msg.payloads if isinstance(p, SkPayload) and p.type == iana.PayloadType.SKF), None)
    if skf is not None and skf.total_fragments > 1:
        # RFC 7383: act on the message once, when it is complete. With keys the decryptor
        # fills `inner` on the frame that completes it; without, take the last fragment.
        complete = bool(msg.inner) if msg.decrypted else skf.fragment_number == skf.total_fragments
        if not complete:
            return
    if msg.decrypted and msg.icv_ok is not False:
        sa.decrypted = True
    visible = not msg.encrypted or (msg.decrypted and msg.icv_ok is not False)
    if msg.malformed and not msg.payloads:
        return
    book.note_vendor_ids(sa, msg)
    ex = h.exchange
    if ex == iana.ExchangeType.IKE_SA_INIT:
        ike_sa_init(book, sa, msg, x, is_response)
    elif ex == iana.ExchangeType.IKE_AUTH:
        ike_auth(book, sa, msg, x, is_response, visible)
    elif ex == iana.ExchangeType.CREATE_CHILD_SA:
        create_child_sa(book, sa, msg, x, is_response, visible)
    elif ex == iana.ExchangeType.INFORMATIONAL:
        informational(book, sa, msg, x, is_response, visible)
    if is_response and visible:
        note_error(x, msg)


def ike_sa_for_v2(book: Book, msg: IkeMessage) -> IkeSa:
    h = msg.header
    sa = book.table.ike_sas.get(f"{h.spi_i.hex()}_{h.spi_r.hex()}")
    is_init_req = h.exchange == iana.ExchangeType.IKE_SA_INIT and not h.is_response
    if sa is not None:
        return sa
    half = book.half_open(2, h.spi_i)
    if half is not None:
        if h.spi_r != ZERO_SPI:  # the IKE_SA_INIT response binds SPIr
            book.bind_responder_spi(half, h.spi_r)
        return half
    if is_init_req and h.spi_r == ZERO_SPI:
        # The initiator did not get the answer in time and sent the same request again.
        prev = book.answered_init_copy(2, h.spi_i, msg.src, msg.raw)
        if prev is not None:
            return prev
    if h.exchange == iana.ExchangeType.IKE_SA_INIT and h.spi_r == ZERO_SPI:
        # The start of an SA already filed from its later exchanges (records out of time order).
        late = book.started_before(2, h.spi_i, msg.src, msg.dst, msg.ts)
        if late is not None:
            late.created_ts = min(late.created_ts or msg.ts, msg.ts)
            if is_init_req and late.retry_of is None:
                link_retry(book, late, msg.ts)  # as for a new SA: the retry after INVALID_KE / COOKIE
            return late
    # New: the original initiator sets the I flag (RFC 7296 §3.1).
    from_init = h.is_initiator
    initiator, responder = (msg.src, msg.dst) if from_init else (msg.dst, msg.src)
    iport, rport = (msg.sport, msg.dport) if from_init else (msg.dport, msg.sport)
    sa = book.create_ike_sa(2, h.spi_i, h.spi_r, initiator, responder, iport, rport, msg.ts)
    if h.exchange != iana.ExchangeType.IKE_SA_INIT:
        # Capture started after IKE_SA_INIT: the SA exists, we just did not see it begin.
        book.transition(sa, SaState.ESTABLISHED)
        sa.state_inferred = True
        infer_ike_rekey(book, sa, msg.ts)
    else:
        # An IKE_SA_INIT response first (its request not captured: a capture started mid-exchange,
        # or a COOKIE answer, RFC 7296 §2.6) leaves the SA INITIATING: nothing shows it completed.
        link_retry(book, sa, msg.ts)
    book.emit("ike_sa_created", msg.ts, ike_sa=sa.key, initiator=initiator, responder=responder,
               version=2)
    return sa


def infer_ike_rekey(book: Book, sa: IkeSa, ts: float) -> None:
    """Without keys an IKE SA rekey (RFC 7296 §1.3.2) is an encrypted CREATE_CHILD_SA on the
    old SA followed by traffic under new SPIs between the same peers: link the two."""
    seen: set[int] = set()
    for old in reversed(book.child_exchanges_answered_between(sa.initiator, sa.responder, ts - REKEY_WINDOW)):
        if id(old) in seen:
            continue
        seen.add(id(old))
        if old is sa or old.rekeyed_into or old.decrypted:
            continue
        last = next((x for x in reversed(old.exchanges) if x.exchange == iana.ExchangeType.CREATE_CHILD_SA
                     and x.response_ts is not None), None)
        if last is None or not 0 <= ts - last.response_ts <= REKEY_WINDOW:
            continue
        sa.rekeyed_from = old.key
        old.rekeyed_into = sa.key
        if old.state == SaState.ESTABLISHED:
            book.transition(old, SaState.REKEYED)
        last.rekey_ike = True
        last.summary = f"CREATE_CHILD_SA (encrypted; IKE SA rekey inferred -> {sa.key})"
        book.emit("ike_sa_rekeyed", ts, ike_sa=old.key, into=sa.key, inferred=True)
        return


def link_retry(book: Book, sa: IkeSa, ts: float) -> None:
    """An IKE_SA_INIT with fresh SPIs right after one refused with INVALID_KE/COOKIE is its retry."""
    for other in reversed(book.refused_between(sa.version, sa.initiator, sa.responder, ts - RETRY_WINDOW)):
        if other is sa or other.retried_by:
            continue
        if other.failure not in ("INVALID_KE_PAYLOAD", "COOKIE") and not other.cookie_requested:
            continue
        if other.failed_ts is not None and 0 <= ts - other.failed_ts <= RETRY_WINDOW:
            sa.retry_of = other.key
            other.retried_by = sa.key
            return


def exchange(book: Book, sa: IkeSa, msg: IkeMessage, from_init: bool, is_response: bool) -> tuple[IkeExchange, bool]:
    """Find or create the exchange a message belongs to. Returns (exchange, is_retransmission).

    RFC 7296 §2.2: each side numbers its own requests, so (message ID, which side asked) pairs a
    request with its response. A byte-identical copy in the same direction is a retransmission
    (§2.1); SKF fragments (RFC 7383) of one message share the ID but differ in fragment number.
    """
    h = msg.header
    xkey = (id(sa), h.msg_id, from_init)
    x = book.exchanges.get(xkey)
    frag = 0
    for p in msg.payloads:
        if isinstance(p, SkPayload) and p.type == iana.PayloadType.SKF:
            frag = p.fragment_number or 1
    priv = book.ike_scratch(sa)
    rkey = (h.msg_id, from_init, is_response, frag)
    prev_raw = priv.last_raw.get(rkey)
    if x is not None and prev_raw is not None:
        if prev_raw == msg.raw or _cut_copy(prev_raw, msg.raw):
            if ike_capture_copy(priv.last_seen, rkey, x, msg):
                # The same datagram seen twice by the capture (state/copies): no retransmission.
                return x, True
            if is_response:
                x.response_retransmits += 1
                x.response_frames.append(msg.frame)
            else:
                x.retransmits += 1
                if x.request_frames and msg.frame < x.request_frames[0] and x.request_ts is not None:
                    # filed late (the IKE message of an IP datagram given up is known only then,
                    # decode.demux._lost_ike): it is the first copy, the one filed first resent it
                    first, first_ts = x.request_frames[0], x.request_ts
                    x.request_frames.insert(0, msg.frame)
                    x.request_ts = msg.ts
                    bisect.insort(x.copy_frames, first)
                    if x.first_copy_frame is None or first < x.first_copy_frame:
                        x.first_copy_frame, x.first_copy_ts = first, first_ts
                    return x, True
                x.request_frames.append(msg.frame)
                x.copy_frames.append(msg.frame)
                if x.first_copy_frame is None:
                    x.first_copy_frame, x.first_copy_ts = msg.frame, msg.ts
            return x, True
        if not is_response and x.response_frames and frag <= 1:
            x = None  # same message ID, new content after an answer: a new attempt (INVALID_KE, COOKIE)
    elif (x is not None and not is_response and x.response_frames and not x.request_frames
          and h.exchange == iana.ExchangeType.IKE_SA_INIT and x.response_ts is not None and msg.ts >= x.response_ts):
        # The capture holds the answer (a COOKIE request, INVALID_KE) but not its request: the
        # request after it is the retry, a new attempt with message ID 0 again (RFC 7296 §2.6). A
        # request timed before the answer is its own request filed late (records out of order).
        x = None
    if x is None:
        requester = msg.src if not is_response else msg.dst
        x = IkeExchange(exchange=h.exchange, msg_id=h.msg_id, requester=requester)
        x.encrypted = msg.encrypted
        book.exchanges[xkey] = x
        sa.exchanges.append(x)
        if not is_response:
            x.requester_port = msg.sport
            x.responder_port = msg.dport
    priv.last_raw[rkey] = msg.raw
    priv.last_seen[rkey] = msg.ts
    # Sizes add up over SKF fragments: the message is what the peer sent, not one datagram.
    if is_response:
        if x.response_ts is None:
            x.response_ts = msg.ts
            if x.exchange == iana.ExchangeType.CREATE_CHILD_SA:
                book.note_child_exchange_answered(sa, msg.ts)
        if frag or len(x.response_frames) == 0:
            x.response_size += len(msg.raw)
        x.response_frames.append(msg.frame)
    else:
        if x.request_ts is None:
            x.request_ts = msg.ts
        if frag or len(x.request_frames) == 0:
            x.request_size += len(msg.raw)
        x.request_frames.append(msg.frame)
        if frag:
            x.fragments = max(x.fragments, frag)
    if msg.ip_fragmented:
        x.ip_fragmented = True
    if msg.decrypted and msg.icv_ok is not False:
        x.decrypted = True
    book.note_notifies(x, msg)
    return x, False


def _cut_copy(a: bytes, b: bytes) -> bool:
    """Whether one of two copies of a message is the other cut short where the capture holds only
    its first IP fragment (decode.demux._lost_ike: its header's Length, RFC 7296 §3.1, says more
    than it has): the same message sent again, a retransmission, whichever came first."""
    short, full = (a, b) if len(a) < len(b) else (b, a)
    return len(short) >= 28 and int.from_bytes(short[24:28], "big") > len(short) and full.startswith(short)


def note_error(x: IkeExchange, msg: IkeMessage) -> NotifyPayload | None:
    for n in msg.find(NotifyPayload):
        if iana.notify_is_error(n.notify_type):
            if x.error is None:
                x.error = n.notify_type
                x.error_name = N.notify_name(n.notify_type, msg.version)
            if n.notify_type == NotifyType.INVALID_KE_PAYLOAD:
                # RFC 7296 §3.10.1: the notification data is the accepted group (2 octets).
                group = n.decoded.get("group") if n.decoded else None
                if group is None and len(n.data) >= 2:
                    group = struct.unpack_from("!H", n.data)[0]
                if isinstance(group, int):
                    x.ke_requested = group
            return n
    return None


# -- IKE_SA_INIT (RFC 7296 §1.2)


def ike_sa_init(book: Book, sa: IkeSa, msg: IkeMessage, x: IkeExchange, is_response: bool) -> None:
    priv = book.ike_scratch(sa)
    sas = msg.find(SaPayload)
    kes = msg.find(KePayload)
    nonces = msg.find(NoncePayload)
    notifies = msg.find(NotifyPayload)
    if not is_response:
        if sa.state == SaState.FAILED:  # the retry after INVALID_KE / COOKIE on the same SPIi
            book.transition(sa, SaState.INITIATING)
        if msg.header.spi_r == ZERO_SPI:
            priv.init_raw = msg.raw
        came_from = redirect_gateway(msg, NotifyType.REDIRECTED_FROM)
        if came_from is not None:
            book.redirected_here(sa, came_from, msg.ts, msg.frame)
        if sas:
            for p in sas[0].proposals:
                s = proposal_string(p, 2)
                if s not in sa.offered:
                    sa.offered.append(s)
        priv.offer = tuple(sas[0].proposals) if sas else ()  # what the answer must fit (§3.3)
        priv.ke_group = kes[0].group if kes else None
        if kes:
            sa.ke_groups.append(kes[0].group)
        if nonces:
            priv.ni = nonces[0].data
        priv.nat_src = nat_hashes(notifies, NotifyType.NAT_DETECTION_SOURCE_IP)
        priv.nat_dst = nat_hashes(notifies, NotifyType.NAT_DETECTION_DESTINATION_IP)
        priv.nat_checked = False
        if any(n.notify_type == NotifyType.IKEV2_FRAGMENTATION_SUPPORTED for n in notifies):
            sa.ike_fragmentation = (True, sa.ike_fragmentation[1])
        nat_check(book, sa, msg, request=True)
        x.summary = "IKE_SA_INIT" + (f" KE {N.dh_name(kes[0].group)}" if kes else "")
        return
    gw = redirect_gateway(msg)
    if gw is not None:  # RFC 5685 §4: go to another gateway, instead of an answer
        book.redirect_ike(sa, gw, "IKE_SA_INIT", msg.ts, msg.frame)
        x.summary = f"IKE_SA_INIT answered with REDIRECT to {gw}"
        return
    err = note_error(x, msg)
    if err is not None:
        name = N.notify_name(err.notify_type)
        if err.notify_type == NotifyType.INVALID_KE_PAYLOAD:
            group = err.decoded.get("group") if err.decoded else None
            if group is None and len(err.data) >= 2:
                group = struct.unpack_from("!H", err.data)[0]
            if isinstance(group, int):
                sa.invalid_ke_requested.append(group)
            x.summary = f"IKE_SA_INIT refused: INVALID_KE_PAYLOAD, responder wants {N.dh_name(group)}"
        else:
            x.summary = f"IKE_SA_INIT refused: {name}"
        book.fail_ike(sa, name, msg.ts, msg.frame, by=msg.src)
        return
    if any(n.notify_type == NotifyType.COOKIE for n in notifies) and not sas:
        sa.cookie_requested = True  # RFC 7296 §2.6: retry with the cookie, not a failure
        sa.failed_ts = msg.ts
        book.note_refused(sa)
        x.summary = "IKE_SA_INIT: responder asks for a COOKIE (DoS protection)"
        return
    if sas and sas[0].proposals:
        prop = sas[0].proposals[0]
        sa.proposal = proposal_string(prop, 2)
        sa.proposal_frames = chosen_in(x, msg.frame)
        sa.answer_unfit = answer_unfit(priv.offer, prop, priv.ke_group)
        dh = proposal_algorithms(prop)["dh"]
        if dh is not None:
            sa.dh_group = dh
    if kes and sa.dh_group is None:
        sa.dh_group = kes[0].group
    if nonces:
        priv.nr = nonces[0].data
    if any(n.notify_type == NotifyType.IKEV2_FRAGMENTATION_SUPPORTED for n in notifies):
        sa.ike_fragmentation = (sa.ike_fragmentation[0], True)
    if any(p.type == PayloadType.CERTREQ for p in msg.find(CertPayload)):
        sa.cert_requested = True
    nat_check(book, sa, msg, request=False)
    x.summary = f"IKE_SA_INIT {sa.proposal or ''}".rstrip()


# -- NAT detection (RFC 7296 §2.23)


def nat_hashes(notifies: Iterable[NotifyPayload], nt: int) -> list[bytes]:
    """The NAT detection hashes of type ``nt``: SHA-1, 20 octets (RFC 7296 §2.23). Data of another
    length is no hash (the decoder marks its message malformed) and says nothing about a NAT."""
    return [n.data for n in notifies if n.notify_type == nt and len(n.data) == 20]


def nat_check(book: Book, sa: IkeSa, msg: IkeMessage, request: bool) -> None:
    """RFC 7296 §2.23: NAT_DETECTION_SOURCE_IP = SHA1(SPIi | SPIr | IP | port) of the sender as
    it sent the packet; the DESTINATION one covers where it sent it. A hash that does not match
    the addresses in the capture means a NAT changed them between sender and receiver.

    Wherever the capture was taken, one of the two sides sees translated addresses: at the
    responder, the request's source hash fails; at the initiator, the response's destination
    hash fails. Either way it is the initiator that is behind the NAT.
    """
    h = msg.header
    src_h = nat_hashes(msg.find(NotifyPayload), NotifyType.NAT_DETECTION_SOURCE_IP)
    dst_h = nat_hashes(msg.find(NotifyPayload), NotifyType.NAT_DETECTION_DESTINATION_IP)
    if not src_h and not dst_h:
        return
    src_ok = nat_detection_hash("sha1", h.spi_i, h.spi_r, msg.src, msg.sport) in src_h if src_h else True
    dst_ok = nat_detection_hash("sha1", h.spi_i, h.spi_r, msg.dst, msg.dport) in dst_h if dst_h else True
    note_nat_detection(sa, msg.src, request, src_ok, dst_ok, bool(dst_h))


# -- IKE_AUTH (RFC 7296 §1.2, §2.15)


def ike_auth(book: Book, sa: IkeSa, msg: IkeMessage, x: IkeExchange, is_response: bool, visible: bool) -> None:
    if not visible:
        if is_response and not x.summary:
            x.summary = "IKE_AUTH (encrypted)"
        if is_response and sa.state == SaState.INITIATING:
            # Without keys we cannot read the outcome. An error-only response (N(AUTHENTICATION_
            # FAILED) in an SK payload) is far smaller than a real IKE_AUTH answer (IDr, AUTH, SA,
            # TSi, TSr): under ~100 bytes of IKE it carries no AUTH payload.
            if len(msg.raw) <= 96:
                book.fail_ike(sa, "IKE_AUTH refused (encrypted; probably AUTHENTICATION_FAILED)",
                               msg.ts, msg.frame, by=msg.src)
                sa.state_inferred = True
            else:
                book.establish_ike(sa, msg.ts, inferred=True)
        return
    ids = msg.find(IdPayload)
    auths = msg.find(AuthPayload)
    mobike.note_supported(sa, msg, msg.header.is_initiator)
    if not is_response:
        for i in ids:
            if i.type == iana.PayloadType.IDi:
                sa.id_i = i.value
            elif i.type == iana.PayloadType.IDr and sa.id_r is None:
                sa.id_r = i.value
        if auths:
            sa.auth_method = auth_name(auths[0].method)
        child = child_request(book, sa, msg, x, "IKE_AUTH", priv_nonces=True)
        x.summary = "IKE_AUTH" + (f" CHILD_SA #{child.id}" if child else "")
        return
    err = note_error(x, msg)
    for i in ids:
        if i.type == iana.PayloadType.IDr:
            sa.id_r = i.value
    if err is not None and err.notify_type == NotifyType.AUTHENTICATION_FAILED:
        book.fail_ike(sa, "AUTHENTICATION_FAILED", msg.ts, msg.frame, by=msg.src)
        x.summary = "IKE_AUTH refused: AUTHENTICATION_FAILED"
        child_response(book, sa, msg, x, err)
        return
    if err is not None and not auths and err.notify_type not in _CHILD_ERRORS:
        name = N.notify_name(err.notify_type)
        book.fail_ike(sa, name, msg.ts, msg.frame, by=msg.src)
        x.summary = f"IKE_AUTH refused: {name}"
        return
    if auths:
        book.establish_ike(sa, msg.ts, inferred=False)
    child = child_response(book, sa, msg, x, err)
    if child is None and err is None and not x.request_frames:
        child = child_from_answer(book, sa, msg, x, "IKE_AUTH")
    x.summary = "IKE_AUTH" + (f" CHILD_SA #{child.id} {child.state.value}" if child else "")
    if err is not None:
        x.summary += f" ({N.notify_name(err.notify_type)})"
    gw = redirect_gateway(msg)
    if gw is not None:  # RFC 5685 §5: redirected after authentication
        book.redirect_ike(sa, gw, "IKE_AUTH", msg.ts, msg.frame)
        x.summary += f", REDIRECT to {gw}"

# -- CHILD SA creation and rekey (IKE_AUTH and CREATE_CHILD_SA, RFC 7296 §1.3)


def child_request(book: Book, sa: IkeSa, msg: IkeMessage, x: IkeExchange, created_by: str,
                   priv_nonces: bool = False, rekey_of: ChildSa | None = None) -> ChildSa | None:
    sas = msg.find(SaPayload)
    props = [p for p in sas[0].proposals if p.protocol in (iana.ProtocolId.AH, iana.ProtocolId.ESP)] if sas else []
    if not props:
        return None
    tsi = msg.find(TsPayload)
    ts_i = next((t.selectors for t in tsi if t.type == iana.PayloadType.TSi), ())
    ts_r = next((t.selectors for t in tsi if t.type == iana.PayloadType.TSr), ())
    transport = any(n.notify_type == NotifyType.USE_TRANSPORT_MODE for n in msg.find(NotifyPayload))
    kes = msg.find(KePayload)
    requester, responder = msg.src, msg.dst
    child = book.new_child(
        sa, protocol="AH" if props[0].protocol == iana.ProtocolId.AH else "ESP", mode="transport" if transport else "tunnel",
        spi_i=spi_int(props[0].spi), initiator=requester, responder=responder,
        offered=list(dict.fromkeys(proposal_string(p, 2) for p in props)),
        ts_i_offered=tuple(ts_i), ts_r_offered=tuple(ts_r), created_ts=msg.ts, created_frame=msg.frame,
        created_by=created_by,
    )
    child.frames.append(msg.frame)
    if kes:
        child.pfs_group = kes[0].group
    for p in props:
        g = proposal_algorithms(p)["dh"]
        if g and g not in child.offered_pfs_groups:
            child.offered_pfs_groups.append(g)
    priv = book.ike_scratch(sa)
    nonces = msg.find(NoncePayload)
    cp = ChildScratch(sa.ike_spi_i, sa.ike_spi_r, protocol=props[0].protocol)
    cp.ni = priv.ni if priv_nonces else (nonces[0].data if nonces else None)
    cp.offer = tuple(props)
    cp.ke_group = kes[0].group if kes else None
    book.child_scratch[child.id] = cp
    if rekey_of is not None:
        book.mark_rekey_of(child, rekey_of)
        x.rekey_child = rekey_of.id
    x.new_child = child.id
    book.register_spi(child, child.spi_i)
    return child


def child_from_answer(book: Book, sa: IkeSa, msg: IkeMessage, x: IkeExchange, created_by: str) -> ChildSa | None:
    """The CHILD SA an answer establishes when the capture lacks its request (RFC 7296 §1.2: the
    IKE_AUTH response's SA, TSi and TSr complete the first CHILD SA). The answer holds the
    responder's SPI, the chosen proposal and the selectors; the initiator's SPI was in the request
    only: the traffic from the responder names it (traffic.fill_half). Without this, both ESP
    flows of that CHILD SA were INFERRED and, when paired differently, one-way (ESP-ONE-WAY)."""
    sas = msg.find(SaPayload)
    props = [p for p in sas[0].proposals if p.protocol in (iana.ProtocolId.AH, iana.ProtocolId.ESP)] if sas else []
    if not props or not props[0].spi:
        return None
    child = book.new_child(sa, protocol="AH" if props[0].protocol == iana.ProtocolId.AH else "ESP",
                           initiator=msg.dst, responder=msg.src, created_ts=msg.ts, created_frame=msg.frame,
                           created_by=created_by)
    x.new_child = child.id
    child = child_response(book, sa, msg, x, None)
    if child is not None and child.state == SaState.ESTABLISHED:
        book.half_negotiated.append(child)
    return child


def child_response(book: Book, sa: IkeSa, msg: IkeMessage, x: IkeExchange,
                    err: NotifyPayload | None) -> ChildSa | None:
    child = book.table.child_sas.get(x.new_child) if x.new_child else None
    if child is None:
        return None
    child.frames.append(msg.frame)
    sas = msg.find(SaPayload)
    props = [p for p in sas[0].proposals if p.protocol in (iana.ProtocolId.AH, iana.ProtocolId.ESP)] if sas else []
    if err is None and not props and sa_unreadable(msg):
        return child  # an answer whose SA contradicts RFC 7296 (marked malformed): no choice known
    if err is not None or not props:
        book.transition(child, SaState.FAILED)
        child.failure = N.notify_name(err.notify_type) if err is not None else "no SA in response"
        child.failure_frame = msg.frame
        book.emit("child_sa_failed", msg.ts, child_sa=child.id, ike_sa=sa.key, reason=child.failure)
        return child
    prop = props[0]
    child.spi_r = spi_int(prop.spi)
    child.proposal = proposal_string(prop, 2)
    child.proposal_frames = chosen_in(x, msg.frame)
    algs = proposal_algorithms(prop)
    child.esn = algs["esn"] == 1 if algs["esn"] is not None else None
    if algs["dh"]:
        child.pfs_group = algs["dh"]
    tsi = msg.find(TsPayload)
    child.ts_i = next((t.selectors for t in tsi if t.type == iana.PayloadType.TSi), child.ts_i_offered)
    child.ts_r = next((t.selectors for t in tsi if t.type == iana.PayloadType.TSr), child.ts_r_offered)
    if any(n.notify_type == NotifyType.USE_TRANSPORT_MODE for n in msg.find(NotifyPayload)):
        child.mode = "transport"
    elif child.mode == "transport":
        child.mode = "tunnel"  # the responder did not agree to transport mode (RFC 7296 §1.3.1)
    book.transition(child, SaState.ESTABLISHED)
    cp = book.child_scratch.get(child.id)
    if cp is not None:
        child.answer_unfit = answer_unfit(cp.offer, prop, cp.ke_group)
        cp.algs = algs
        if cp.nr is None:
            nonces = msg.find(NoncePayload)
            if child.created_by == "IKE_AUTH":
                cp.nr = book.ike_scratch(sa).nr
            elif nonces:
                cp.nr = nonces[0].data
    book.register_spi(child, child.spi_r)
    book.emit("child_sa_created", msg.ts, child_sa=child.id, ike_sa=sa.key, spi_i=child.spi_i,
               spi_r=child.spi_r, proposal=child.proposal, created_by=child.created_by)
    old = book.table.child_sas.get(child.rekeyed_from) if child.rekeyed_from else None
    if old is not None:
        book.rekey_child_done(old, child, msg.ts, sa.key)
    return child


def create_child_sa(book: Book, sa: IkeSa, msg: IkeMessage, x: IkeExchange, is_response: bool,
                     visible: bool) -> None:
    if not visible:
        x.summary = x.summary or "CREATE_CHILD_SA (encrypted)"
        return
    priv = book.ike_scratch(sa)
    sas = msg.find(SaPayload)
    ike_props = [p for p in sas[0].proposals if p.protocol == iana.ProtocolId.IKE] if sas else []
    xkey = id(x)
    if not is_response:
        if ike_props:  # rekey of the IKE SA itself (RFC 7296 §1.3.2)
            x.rekey_ike = True
            kes = msg.find(KePayload)
            # the answer's KE group must be this one's, as in IKE_SA_INIT (§1.3.2, §1.2)
            priv.rekey_offer[xkey] = (tuple(ike_props), kes[0].group if kes else None)
            x.summary = "CREATE_CHILD_SA rekey IKE SA"
            for other in sa.exchanges:  # crossing IKE rekeys (RFC 7296 §2.8.2)
                if other is not x and other.rekey_ike and other.requester != x.requester and (
                        other.response_ts is None or other.response_ts >= msg.ts):
                    book.observe("ike_rekey_collision", msg.ts,
                                  tuple(other.request_frames[:1] + x.request_frames[:1]),
                                  sa.initiator, sa.responder, ike_sa=sa.key)
            return
        rekey = next((n for n in msg.find(NotifyPayload) if n.notify_type == NotifyType.REKEY_SA), None)
        old = None
        if rekey is not None:
            old = book.child_by_spi(spi_int(rekey.spi), sender=msg.src)
        child = child_request(book, sa, msg, x, "CREATE_CHILD_SA", rekey_of=old)
        if child is None:
            return
        if old is not None:
            x.summary = f"CREATE_CHILD_SA rekey CHILD_SA #{old.id} -> #{child.id}"
            # RFC 7296 §2.8.1: both peers may start rekeying the same CHILD SA at once.
            for other in sa.exchanges:
                if other is x or other.rekey_child != old.id or other.requester == x.requester:
                    continue
                if other.response_ts is None or other.response_ts >= msg.ts:
                    old.rekey_collision = True
        else:
            x.summary = f"CREATE_CHILD_SA new CHILD_SA #{child.id}"
        return
    err = note_error(x, msg)
    if x.rekey_ike:
        offer, ke_group = priv.rekey_offer.get(xkey, ((), None))
        requester = x.requester
        responder = sa.responder if requester == sa.initiator else sa.initiator
        if msg.src != responder:
            responder = msg.src
        if err is not None or not ike_props:
            x.summary += f" refused: {N.notify_name(err.notify_type) if err else 'no SA'}"
            if offer and offer[0].spi:
                _refused_ike_rekey(book, sa, msg, x, offer, requester, responder, err)
            return
        if not offer:
            return
        new_spi_i = offer[0].spi
        new = book.create_ike_sa(2, new_spi_i, ike_props[0].spi, requester, responder,
                                 x.requester_port, x.responder_port, msg.ts)
        x.new_ike = new.key
        new.proposal = proposal_string(ike_props[0], 2)
        new.proposal_frames = chosen_in(x, msg.frame)
        new.offered = list(dict.fromkeys(proposal_string(p, 2) for p in offer))
        new.answer_unfit = answer_unfit(offer, ike_props[0], ke_group)
        new.dh_group = proposal_algorithms(ike_props[0])["dh"]
        new.rekeyed_from = sa.key
        new.decrypted = sa.decrypted
        new.nat_t, new.tcp_frame = sa.nat_t, sa.tcp_frame
        new.nat_mismatch, new.nat_dst_seen = list(sa.nat_mismatch), list(sa.nat_dst_seen)
        new.nat_initiator, new.nat_responder, new.nat_detected = (
            sa.nat_initiator, sa.nat_responder, sa.nat_detected)
        new.id_i, new.id_r, new.auth_method = sa.id_i, sa.id_r, sa.auth_method
        book.transition(new, SaState.ESTABLISHED)
        new.established_ts = msg.ts
        sa.rekeyed_into = new.key
        if sa.state == SaState.ESTABLISHED:
            book.transition(sa, SaState.REKEYED)
        book.emit("ike_sa_created", msg.ts, ike_sa=new.key, initiator=new.initiator, responder=new.responder,
                  version=2, rekeyed_from=sa.key)
        # RFC 7296 §2.18: the CHILD SAs move to the new IKE SA.
        for cid in list(sa.children):
            c = book.table.child_sas.get(cid)
            if c is not None and c.state not in (SaState.DELETED, SaState.FAILED):
                book.move_child(c, sa, new, msg.ts)
        x.summary = f"CREATE_CHILD_SA rekey IKE SA -> {new.key}"
        book.emit("ike_sa_rekeyed", msg.ts, ike_sa=sa.key, into=new.key)
        book.emit("ike_sa_established", msg.ts, ike_sa=new.key, initiator=new.initiator,
                   responder=new.responder, proposal=new.proposal, inferred=False)
        return
    child = child_response(book, sa, msg, x, err)
    if child is not None and err is not None:
        x.summary += f" refused: {N.notify_name(err.notify_type)}"


def _refused_ike_rekey(book: Book, sa: IkeSa, msg: IkeMessage, x: IkeExchange, offer: tuple, requester: str,
                       responder: str, err: NotifyPayload | None) -> None:
    """The IKE SA a refused rekey was creating (RFC 7296 §1.3.2: its SPIi is the offer's SPI; the
    responder gave none), failed with the refusal, as a refused CHILD SA rekey leaves its new CHILD
    SA: the refusal's findings (IKE-NO-PROPOSAL) name it with the rekey's own offer, not the old
    SA's IKE_SA_INIT one. The old SA stays as it was (its CHILD SAs are not moved)."""
    new = book.create_ike_sa(2, offer[0].spi, ZERO_SPI, requester, responder, x.requester_port,
                             x.responder_port, x.request_ts if x.request_ts is not None else msg.ts)
    new.offered = list(dict.fromkeys(proposal_string(p, 2) for p in offer))
    new.rekeyed_from = sa.key
    new.decrypted = sa.decrypted
    new.id_i, new.id_r, new.auth_method = sa.id_i, sa.id_r, sa.auth_method
    new.frames.extend(f for f in (*x.request_frames, msg.frame) if f not in new.frames)
    x.summary += f" ({new.key})"
    x.new_ike = new.key
    # as Book.fail_ike, but never a candidate for an IKE_SA_INIT retry (note_refused): an
    # INVALID_KE_PAYLOAD rekey is retried in another CREATE_CHILD_SA on the old SA (RFC 7296 §1.3.2)
    book.transition(new, SaState.FAILED)
    new.failure = N.notify_name(err.notify_type) if err is not None else "no SA in response"
    new.failure_frame, new.failed_ts, new.failure_from = msg.frame, msg.ts, msg.src
    book.emit("ike_sa_failed", msg.ts, ike_sa=new.key, reason=new.failure, frame=msg.frame)


# -- INFORMATIONAL (RFC 7296 §1.4)


def informational(book: Book, sa: IkeSa, msg: IkeMessage, x: IkeExchange, is_response: bool,
                   visible: bool) -> None:
    if not visible:
        x.summary = x.summary or "INFORMATIONAL (encrypted)"
        return
    parts = []
    for d in msg.find(DeletePayload):
        if d.protocol == iana.ProtocolId.IKE:
            x.deletes.append("IKE")
            parts.append("delete IKE SA")
            book.delete_ike(sa, msg.src, msg.ts, msg.frame)
        else:
            for spi_b in d.spis:
                spi = spi_int(spi_b)
                proto = "AH" if d.protocol == iana.ProtocolId.AH else "ESP"
                x.deletes.append(f"{proto} {spi_text(spi)}")
                parts.append(f"delete {proto} {spi_text(spi)}")
                child = book.child_by_spi(spi, sender=msg.src, ike=sa)
                if child is not None:
                    book.delete_child(child, msg.src, msg.ts, msg.frame)
                else:
                    book.observe("delete_unknown_spi", msg.ts, (msg.frame,), msg.src, msg.dst,
                                  spi=spi, ike_sa=sa.key)
    for n in msg.find(NotifyPayload):
        t = n.notify_type
        if t == NotifyType.INVALID_SPI:
            spi = spi_int(n.data[:4]) if len(n.data) >= 4 else spi_int(n.spi)
            book.observe("invalid_spi_notify", msg.ts, (msg.frame,), msg.src, msg.dst, spi=spi,
                          ike_sa=sa.key)
            parts.append(f"INVALID_SPI {spi_text(spi)}")
        elif t == NotifyType.AUTHENTICATION_FAILED:
            # The initiator rejects the responder's AUTH (RFC 7296 §2.21.2) in an INFORMATIONAL.
            book.fail_ike(sa, "AUTHENTICATION_FAILED", msg.ts, msg.frame, by=msg.src)
            parts.append("AUTHENTICATION_FAILED")
        elif iana.notify_is_error(t):
            parts.append(N.notify_name(t))
        elif t == NotifyType.REDIRECT and not is_response and msg.src == sa.responder:
            # RFC 5685 §6: the gateway sends the client of an established SA elsewhere.
            gw = redirect_gateway(msg) or "?"
            book.redirect_ike(sa, gw, "INFORMATIONAL", msg.ts, msg.frame)
            parts.append(f"REDIRECT to {gw}")
    parts += mobike.informational(sa, msg, is_response)  # RFC 4555 §3.5, §3.6
    if not parts and not is_response and not msg.inner:
        moved = next((rb for rb in reversed(sa.nat_rebindings) if rb.frame == msg.frame), None)
        # An empty request from the sender's new address tests the path before a MOBIKE update
        # (RFC 4555 §3.5: strongSwan's "checking path"); elsewhere it is RFC 7296 §2.4 liveness.
        parts.append(f"path check from the new address {moved.new_addr} (empty)" if moved and
                     sa.mobike_supported == (True, True) else "liveness check (empty)")
    if parts and not x.summary:
        x.summary = "INFORMATIONAL " + ", ".join(parts)
