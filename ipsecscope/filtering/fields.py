"""The occurrences of each display-filter field over a window, layer by layer, as tshark shows them.

A field has one occurrence per layer that carries it: the row's own (outer) header, the headers
of nested ESP layers, the tunnels' headers around the IPsec, the decrypted inner packet, the
packet an ICMP error quotes (``ip.src``: up to all of these). Columns the rows or the inner records
hold become vector occurrences (:class:`~.window._Occ`); what only a few frames have (IKE fields,
DNS names, the side tables, quoted ESP packets) becomes a sparse one tested in Python.

Where the fields differ from tshark 4.0's on purpose (tests/test_display_filter_fields.py lists
them per capture): an ESP packet whose ICV fails has no inner fields (tshark checks no ICV by
default and dissects the plaintext); algorithms tshark lacks (ChaCha20-Poly1305, AES-XCBC) are
decrypted; RFC 8229 records carry esp/isakmp fields (tshark's TCP encapsulation dissector is off by
default); ``esp.protocol`` is the trailer's Next Header of every decrypted packet (tshark adds the
trailer fields after dissecting the inner packet, so an exception there, a malformed inner DNS
message say, leaves them out); and an ESP packet an ICMP error quotes cut off is not read past
its would-be trailer (tshark dissects the bytes in front of it as the extension header that
trailer's Next Header names).

Malformed input (tests/data/malformed-ip, bad/malformed.pcap): a MALFORMED row whose ESP or AH
header was cut short carries ``esp``/``ah`` and the SPI when its 4 octets were there, as tshark;
an IP length past the frame's end gives the rows of what is there plus the mark (decode.ip.
runs_past_frame). On purpose different: AH with Payload Len 0 (8 octets, under the 12 RFC 4302 §2.2
and §2.5 require) has no ``ah.sequence`` and no fields of the packet behind it (tshark reads the
sequence number from octets that length puts in the payload, and dissects the payload from octet
8); an IP header too broken for its addresses (an IPv4 header length under 20, RFC 791 §3.1;
a header cut short) has ``ip``/``ipv6`` and ``ip.version`` only, as tshark, but for the fields of
a header cut short that tshark reads from the octets there (``ip.proto`` of 12 octets, ``ipv6.src``
of 24); in a broken IKE message the payload chain ends
at the header (tshark reads Next Payload fields from inside a payload cut short) and a header
Length past the datagram is still shown (tshark's dissection ends in an exception there).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

import numpy as np

from ..decode import inner as inner_mod
from .values import ECHO_TYPES, quoted_values
from .window import NONE64, _Occ, _Window

# tshark's IPv6 extension-header protocols -> header number (RFC 8200 §4)
V6_EXT_FIELDS = {"hopopts": 0, "routing": 43, "fraghdr": 44, "dstopts": 60}


class _FieldCols(_Window):
    """A window's columns and its fields' occurrences (computed when first asked for, kept)."""


    def occ(self, name: str) -> list[_Occ]:
        hit = self._cache.get(name)
        if hit is None:
            hit = self._cache[name] = self._occ(name) + self._quoted(name)
        return hit

    def _quoted(self, name: str) -> list[_Occ]:
        """The field's occurrences in the ESP packets ICMP errors of this window quote (rare
        frames: per frame in Python, :func:`quoted_values`)."""
        store = self.src.quoted
        if store is None or not self.n:
            return []
        lo, hi = int(self.frames[0]), int(self.frames[-1])
        by_frame: dict[int, list] = {}
        for f, q in (*store.between(lo, hi).items(), *store.ah_between(lo, hi).items()):
            vals = quoted_values(q, name)
            if vals:
                by_frame.setdefault(f, []).extend(vals)
        return self._sparse_frames(by_frame) if by_frame else []

    def _occ(self, name: str) -> list[_Occ]:  # noqa: C901 - one branch per field family
        a = self.arr
        fam, _, sub = name.partition(".")
        if fam in ("ip", "ipv6", "udp", "tcp", "icmp", "icmpv6", "dns", "udpencap") or name == "ipsecscope.decrypted":
            if self._layer_masks is None:
                self._layer_masks = self._layers()
        L = self._layer_masks or {}
        ia = self.icol if self.iarr is not None else (lambda _n: np.zeros(self.n, dtype=np.int64))
        iaddrs = self.inner.addrs if self.inner is not None else [""]
        Oc = _Occ
        if name == "frame":
            return [Oc(self.true, self.true)]
        if name == "frame.number":
            return [Oc(a["frame"], self.true)]
        if name == "frame.len":
            return [Oc(a["length"], self.true)]
        if name == "frame.time_epoch":
            return [Oc(a["ts"], self.true)]
        if name == "frame.time_relative":
            t0 = self.src.first_ts
            if t0 is None:
                t0 = float(a["ts"][0]) if self.n else 0.0
            return [Oc(a["ts"] - t0, self.true)]
        if fam in ("ip", "ipv6"):
            v = "v4" if fam == "ip" else "v6"
            out_p = self.out_v4 if fam == "ip" else self.out_v6
            in_p, q_p = L[v], L["q_" + v]
            # the IP headers of nested ESP layers (tunnel mode), between the outer and the innermost
            ver = 4 if fam == "ip" else 6
            nested = self._nested(lambda x: x if x.ver == ver else None)
            # the tunnels' IP headers around a frame's IPsec (GRE, IP in IP: decode.tunnel)
            tun = {f: [h for h in hops if h[0] == ver] for f, hops in self._tunnel_hops().items()}
            tun = {f: hs for f, hs in tun.items() if hs}
            if not sub:
                # (a MALFORMED row's IP header too broken for addresses: the layer is still there)
                out_p = out_p | (self.bad_ip == ver)
                return [Oc(self.true, out_p | in_p | q_p), *self._sparse_frames(_values(nested, lambda x: True)),
                        *self._sparse_frames({f: [True] for f in tun})]
            if sub in ("src", "dst", "addr"):
                occ = []
                for s in (("src", "dst") if sub == "addr" else (sub,)):
                    col = 1 if s == "src" else 2
                    occ += [Oc(a[s], out_p, self.addrs), Oc(ia(s), in_p, iaddrs), Oc(ia("q" + s), q_p, iaddrs),
                            *self._sparse_frames(_values(nested, lambda x, s=s: ipaddress.ip_address(getattr(x, s)))),
                            *self._sparse_frames({f: [ipaddress.ip_address(h[col]) for h in hs]
                                                  for f, hs in tun.items()})]
                return occ
            if sub in ("proto", "nxt") and tun:
                # the outermost tunnel header's ipv6.nxt is its fixed header's field (v6_ext)
                outer = self._v6_chains() if fam == "ipv6" else {}
                hops = self._tunnel_hops()
                return [*self._occ_proto(fam, out_p, in_p, q_p, nested, ia),
                        *self._sparse_frames({f: [outer[f][0][0] if h is hops[f][0] and f in outer else h[3]
                                                  for h in hs] for f, hs in tun.items()})]
            if sub in ("proto", "nxt"):
                return self._occ_proto(fam, out_p, in_p, q_p, nested, ia)
            if fam == "ipv6" and sub.partition(".")[0] in V6_EXT_FIELDS:
                # tshark's ipv6.hopopts / .dstopts / .routing / .fraghdr [.nxt]: the outer header's
                # extension headers, and the recorded packet's (decrypted inner IPv6, transport
                # mode's Destination Options after ESP; a plain frame's twice, the same values)
                num = V6_EXT_FIELDS[sub.partition(".")[0]]
                nxt = sub.endswith(".nxt")
                return [*self._sparse_frames(_ext_values(self._v6_chains(), num, nxt)),
                        *self._sparse_frames(_ext_values(self._v6_chains(tunnelled=True), num, nxt)),
                        *self._sparse_frames(_ext_values(self._inner_v6_chains(), num, nxt)),
                        *self._sparse_frames(_ext_values(self._inner_v6_chains(quoted=True), num, nxt))]
            if sub == "version":
                # tshark's IPv6 dissector adds ip.version to its header too (hidden): 6 there
                out = []
                for fver, fout, fin, fq in ((4, self.out_v4, L["v4"], L["q_v4"]), (6, self.out_v6, L["v6"], L["q_v6"])):
                    out.append(Oc(np.full(self.n, fver), fout | fin | fq))
                out += self._sparse_frames(_values(self._nested(lambda x: x if x.ver else None), lambda x: x.ver))
                out += self._sparse_frames({f: [h[0] for h in hs] for f, hs in self._tunnel_hops().items()})
                out.append(Oc(self.bad_ipver, self.bad_ip != 0))  # a broken header's own version nibble
                return out
        if fam in ("udp", "tcp"):
            in_p, q_p = L[fam], L["q_" + fam]
            out_p = self.out_udp if fam == "udp" else self.out_tcp
            # a VXLAN/Geneve tunnel's own UDP header around the frame's IPsec
            tun = {f: [h for h in hops if h[3] == 17] for f, hops in self._tunnel_hops().items()} if fam == "udp" else {}
            tun = {f: hs for f, hs in tun.items() if hs}
            if not sub:
                return [Oc(self.true, out_p | in_p | q_p), *self._sparse_frames({f: [True] for f in tun})]
            if sub in ("srcport", "dstport", "port"):
                occ = []
                for s in (("sport", "dport") if sub == "port" else ("sport" if sub == "srcport" else "dport",)):
                    col = 4 if s == "sport" else 5
                    occ += [Oc(a[s], out_p), Oc(ia(s), in_p), Oc(ia("q" + s), q_p),
                            *self._sparse_frames({f: [h[col] for h in hs] for f, hs in tun.items()})]
                return occ
            if fam == "tcp":
                # the decrypted/plain packet's TCP header, and an RFC 8229 row's carrying segment
                flags = ia("tcpflags")
                seg, seg_p = self._tcp_flags()
                seg_p &= out_p
                if sub == "flags":
                    return [Oc(flags, in_p), Oc(seg, seg_p)]
                bit = {"flags.syn": 0x02, "flags.ack": 0x10, "flags.fin": 0x01, "flags.reset": 0x04,
                       "flags.push": 0x08}.get(sub)
                if bit is not None:
                    return [Oc((flags & bit) != 0, in_p), Oc((seg & bit) != 0, seg_p)]
        if fam in ("icmp", "icmpv6"):
            in_p, q_p = L[fam], L["q_" + fam]
            if not sub:
                return [Oc(self.true, in_p | q_p)]
            if sub == "type":
                return [Oc(ia("itype"), in_p), Oc(ia("qitype"), q_p)]
            if sub == "code":
                return [Oc(ia("icode"), in_p), Oc(ia("qicode"), q_p)]
            if sub in ("ident", "seq"):
                echo = in_p & np.isin(ia("itype"), list(ECHO_TYPES))
                return [Oc(ia("sport" if sub == "ident" else "dport"), echo)]
        if fam == "dns":
            p = L["dns"]
            if not sub:
                return [Oc(self.true, p)]
            if sub == "id":
                return [Oc(ia("dns_id"), p)]
            if sub == "flags.response":
                return [Oc((ia("flags") & inner_mod.DNS_RESPONSE) != 0, p)]
            if sub == "qry.type":
                return [Oc(ia("dns_qtype"), p & (ia("dns_qtype") != 0))]
            if sub == "qry.name":
                names = self.inner.dns_names if self.inner is not None else {}
                return self._sparse_frames({f: [n] for f, n in names.items()})
        if fam == "esp":
            p = self.is_esp
            q = {f: v for f, v in (self.inner.quoted.items() if self.inner is not None else ()) if v[0] == "esp"}
            nested = self._nested(lambda x: x)  # ESP layers inside the outer one
            # a MALFORMED row's cut-off ESP header: the layer, and the SPI when it was there
            bad = self.bad_esp
            # the AH row of an AH+ESP bundle's frame: the frame's ESP is there too (its own row)
            pair, partner = self.bundle_ah, self.bundle_partner
            if not sub:
                return [Oc(self.true, p | bad | pair), *self._sparse_frames({f: [True] for f in q})]
            if sub == "spi":
                return [Oc(a["spi"], p | (bad & (a["spi"] >= 0))), Oc(partner(a["spi"]), pair),
                        *self._sparse_frames({f: [v[1]] for f, v in q.items()}),
                        *self._sparse_frames(_values(nested, lambda x: x.spi))]
            if sub == "sequence":
                return [Oc(a["seq"] & 0xFFFFFFFF, p), Oc(partner(a["seq"]) & 0xFFFFFFFF, pair),
                        *self._sparse_frames({f: [v[2]] for f, v in q.items() if v[2] is not None}),
                        *self._sparse_frames(_values(nested, lambda x: x.seq & 0xFFFFFFFF))]
            if sub == "protocol":
                # live rows keep no next header once Info shows the inner packet: read it from there
                self._join()
                nh = a["nh"].astype(np.int64)
                if self.iarr is not None:
                    ver, proto = self.icol("ver"), self.icol("proto").astype(np.int64)
                    derived = np.where(ver == 4, 4, np.where(ver == 6, 41, proto))
                    nh = np.where((nh < 0) & self.has_inner & p, derived, nh)
                esp_nh = np.where(p, nh, -1)
                return [Oc(nh, p & (nh >= 0)), Oc(partner(esp_nh), pair & (partner(esp_nh) >= 0)),
                        *self._sparse_frames(_values(nested, lambda x: x.next_header))]
        if fam == "ah":
            p = self.is_ah
            bad = self.bad_ah  # a MALFORMED row's broken AH header (as ESP's above)
            pair, partner = self.bundle_esp, self.bundle_partner  # the ESP row of an AH+ESP bundle
            if not sub:
                return [Oc(self.true, p | bad | pair)]
            if sub == "spi":
                return [Oc(a["spi"], p | (bad & (a["spi"] >= 0))), Oc(partner(a["spi"]), pair)]
            if sub == "sequence":
                return [Oc(a["seq"] & 0xFFFFFFFF, p), Oc(partner(a["seq"]) & 0xFFFFFFFF, pair)]
        if fam == "enc":
            # OpenBSD enc(4) frames (LINKTYPE_ENC): the header's SPI and flags, as tshark's enc.spi /
            # enc.flags (packet-enc.c); few captures have them, a dict look-up per frame of the window
            enc = self._enc_headers()
            if not sub:
                return self._sparse_frames({f: [True] for f in enc})
            if sub in ("spi", "flags"):
                i = 0 if sub == "spi" else 1
                return self._sparse_frames({f: [h[i]] for f, h in enc.items()})
            return []
        if fam == "udpencap":
            if sub == "nat_keepalive":
                return [Oc(self.true, self.is_ka)]
            out = self.out_udp & ((a["sport"] == 4500) | (a["dport"] == 4500))
            inn = L["udp"] & ((ia("sport") == 4500) | (ia("dport") == 4500))
            quoted = L["q_udp"] & ((ia("qsport") == 4500) | (ia("qdport") == 4500))
            return [Oc(self.true, out | inn | quoted)]
        if fam == "isakmp":
            if not sub:
                # an IKE row whose header's Length is below 28 octets: tshark's ISAKMP dissector
                # declines it (data), as ipsecscope marks it malformed
                lo, hi = (int(self.frames[0]), int(self.frames[-1])) if self.n else (0, -1)
                short = [f for f, m in (self.src.ike or {}).items() if lo <= f <= hi and m.header.length < 28]
                rows = self.is_ike & ~np.isin(self.frames, short) if short else self.is_ike
                return [Oc(self.true, rows), *self._sparse_frames({f: [True] for f in self._ike_values("ispi")})]
            return self._sparse_frames(self._ike_values(sub))
        if fam == "ipsecscope":
            if sub == "kind":
                return [Oc(a["kind"], self.true, self.kinds)]
            if sub == "status":
                return [Oc(a["status"], a["status"] != 0, self.statuses)]
            if sub == "decrypted":
                return [Oc(self.true, self.is_esp & self.has_inner)]
            if sub == "child":
                return [Oc(a["child"], a["child"] >= 0),
                        *self._sparse_frames(_values(self._nested(lambda x: x), lambda x: x.child_sa))]
            if sub == "seq":
                return [Oc(a["seq"], a["seq"] != NONE64)]
            if sub == "ike_sa":
                return self._sparse_rows({i: [k] for i, k in self._ike_sa_map().items()})
            if sub == "finding":
                by_frame: dict[int, list[str]] = {}
                for code, frames in self.flt.findings.items():
                    for f in frames:
                        by_frame.setdefault(f, []).append(code)
                return self._sparse_frames(by_frame)
            if sub == "info":
                rows = self.src.rows
                return self._sparse_rows({i: [r.info] for i, r in enumerate(rows[self.lo:self.hi])})
        raise AssertionError(f"field {name} has no columns")  # model.filter.FIELDS and this must agree

    def _occ_proto(self, fam: str, out_p, in_p, q_p, nested, ia) -> list[_Occ]:
        """ip.proto / ipv6.nxt of the row's own IP header, the decrypted and quoted ones, and the
        nested ESP layers' (the tunnels' are added by the caller)."""
        out_proto, own, quoted = self.out_proto, ia("proto"), ia("qproto")
        if fam == "ipv6":
            out_proto = self._v6_fixed_nxt(out_proto, self.out_v6, self._row_v6_chains())
            # an OTHER row's record is the frame's own IP header (a fragment held for reassembly);
            # a decrypted inner IPv6 packet's fixed header names its first extension header too,
            # and so does a quoted one's
            own = self._v6_fixed_nxt(own.astype(np.int64), in_p & self.is_other)
            own = self._v6_fixed_nxt(own, in_p, self._inner_v6_chains())
            quoted = self._v6_fixed_nxt(quoted.astype(np.int64), q_p, self._inner_v6_chains(quoted=True))
        return [_Occ(out_proto, out_p & (out_proto >= 0)), _Occ(own, in_p), _Occ(quoted, q_p),
                *self._sparse_frames(_values(nested, lambda x: 50))]


def _ext_values(chains: dict, num: int, nxt: bool) -> dict[int, list]:
    """Per frame, the Next Header fields (``nxt``) of its extension headers numbered ``num``, or
    True for each (presence)."""
    return {f: [h[1] if nxt else True for h in chain if h[0] == num]
            for f, chain in chains.items() if any(h[0] == num for h in chain)}


def _values(by_frame: dict[int, list], get: Callable) -> dict[int, list]:
    """``get`` of each item per frame, items for which it is None left out (a field a layer lacks)."""
    out: dict[int, list] = {}
    for f, items in by_frame.items():
        vals = [v for v in map(get, items) if v is not None]
        if vals:
            out[f] = vals
    return out
