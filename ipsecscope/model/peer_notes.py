"""Peer configuration evidence from IKE daemons' logs, re-exported by :mod:`ipsecscope.model.keys`."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True, frozen=True)
class PeerLogNote:
    """One piece of *peer configuration evidence* from an IKE daemon's own log (strongSwan charon).

    The wire never says what a responder would have accepted; its log often does
    (``configured proposals: ESP:AES_GCM_16_256/NO_EXT_SEQ``, ``traffic selectors ... unacceptable``,
    ``tried 1 shared key ... but MAC mismatched``, ``DH group ECP_256 unacceptable, requesting
    MODP_2048``). Rules bind a note to an IKE SA by ``ike_sa`` and to a peer by ``local`` (the
    address of the host that wrote the log) so a finding can say what that peer is configured with.

    ``kind``: "configured_proposals" | "received_proposals" | "ts_config" | "auth" | "dh" |
    "peer_notify" (an error notify the logging peer received) | "conn_config" (a connection as
    loaded, from charon's CFG 2 dump: addresses, proposals, each child's local_ts/remote_ts; bound
    by ``conn`` rather than by an IKE SA) | "daemon_start" (charon started again in the same log: a
    restart; the first start of a log is not recorded) | "unknown_sa" (a message for an IKE SA, ``ike_sa``, or ESP for an SA the daemon does
    not have) | "answer_check" (the logging peer, as initiator, refused an answer that does not fit
    its offer, or went on with its own IKEv1 authentication method: ``data`` has ``check``
    "proposal"/"ke"/"auth", ``about`` "ike"/"child", the ``exchange`` and ``msg_id`` of the response
    it parsed). ``data`` holds the parsed values (see
    :mod:`ipsecscope.keys.charon`); it holds no secrets.
    """

    kind: str
    text: str  # the log message after the "NN[GRP] <conn|uid>" prefix
    ike_sa: str | None = None  # "<spi_i>_<spi_r>" hex like IkeSa.key when logged, else the charon unique id
    ts: str = ""  # the log line's own timestamp text, as written ("" if none)
    source: str = ""  # "file:line"
    data: dict = field(default_factory=dict, compare=False, hash=False)
    local: str | None = None  # address of the peer that wrote the log, when the log says
    remote: str | None = None  # the other peer's address, when the log says
    conn: str | None = None  # the connection name in "<conn|uid>", when given
