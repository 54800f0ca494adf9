"""Extract IKEv2 and ESP keys from strongSwan charon logs into Wireshark key tables.

charon prints the keys it derives at log level 4 (``ike 4`` for SK_*, ``chd 4`` for CHILD_SA
keys) as hexdumps. With ``mgr 2`` it also prints "checkin IKEv2 SA name[n] with SPIs X_i Y_r",
the only line that carries the IKE SPIs. Lines from one worker thread are in order, so every
association below is made within one thread ("14[IKE]" -> thread 14):

* IKE keys: ``Sk_d`` .. ``Sk_pr`` hexdumps, then the next "checkin IKEv2 SA ... with SPIs" in the
  same thread names the SA they belong to (also for an IKE rekey, where the new SA is checked in
  right after its keys are derived). Algorithm: the last "selected proposal: IKE:..." seen.
* CHILD keys: "encryption initiator key" .. "integrity responder key", then "CHILD_SA x{n}
  established with SPIs <in>_i <out>_o" in the same thread. "initiator"/"responder" refer to
  the exchange that created the CHILD_SA (RFC 7296 §2.17): if this thread last parsed a
  *response*, this peer initiated it, so its outbound SPI carries the initiator keys; if it
  parsed a *request*, its inbound SPI does. The "  SPI 0x..., src A dst B" lines give addresses.

Use: ``python3 charon_keys.py OUTDIR LOG [LOG...]`` writes OUTDIR/esp_sa and
OUTDIR/ikev2_decryption_table (Wireshark 4.0 UAT format; the directory can be used directly as
WIRESHARK_CONFIG_DIR). Keys seen in several logs (both peers) must agree, else it fails.
This is a stand-in until ``ipsecscope keys convert`` reads charon logs itself.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

LINE = re.compile(r"^\S+ (?P<thread>\d+)\[(?P<grp>[A-Z]+)\] (?:<[^>]*> )?(?P<msg>.*)$")
HEXDUMP = re.compile(r"^\s*\d+: ((?:[0-9A-F]{2} ?)+)")
DUMP_HEAD = re.compile(r"^(?P<label>.+?) => (?P<n>\d+) bytes @ 0x[0-9a-f]+$")
CHECKIN = re.compile(r"^checkin IKEv2 SA \S+ with SPIs (?P<i>[0-9a-f]{16})_i (?P<r>[0-9a-f]{16})_r")
CHECKOUT = re.compile(
    r"^checkout IKEv2 SA (?:by message )?with SPIs (?P<i>[0-9a-f]{16})_i (?P<r>[0-9a-f]{16})_r")
DESTROY = re.compile(r"^checkin and destroy IKE_SA ")
ESTABLISHED = re.compile(
    r"^(?:inbound )?CHILD_SA \S+ established with SPIs (?P<i>[0-9a-f]{8})_i (?P<o>[0-9a-f]{8})_o")
SPI_ADDR = re.compile(r"^\s*SPI 0x(?P<spi>[0-9a-f]{8}), src (?P<src>\S+) dst (?P<dst>\S+)")
PARSED = re.compile(r"^parsed \S+ (?P<kind>request|response) ")
PROPOSAL = re.compile(r"^selected proposal: (?P<proto>IKE|ESP):(?P<algs>\S+)")

IKE_LABELS = {"Sk_d secret": "d", "Sk_ai secret": "ai", "Sk_ar secret": "ar",
              "Sk_ei secret": "ei", "Sk_er secret": "er", "Sk_pi secret": "pi",
              "Sk_pr secret": "pr"}
CHILD_LABELS = {"encryption initiator key": "ei", "encryption responder key": "er",
                "integrity initiator key": "ai", "integrity responder key": "ar"}

# strongSwan proposal tokens -> Wireshark 4.0 UAT names (packet-isakmp.c / packet-ipsec.c).
IKE_ENCR = {
    "AES_CBC_128": "AES-CBC-128 [RFC3602]", "AES_CBC_192": "AES-CBC-192 [RFC3602]",
    "AES_CBC_256": "AES-CBC-256 [RFC3602]", "3DES_CBC": "3DES [RFC2451]",
    "AES_CTR_128": "AES-CTR-128 [RFC5930]", "AES_CTR_192": "AES-CTR-192 [RFC5930]",
    "AES_CTR_256": "AES-CTR-256 [RFC5930]",
    **{f"AES_GCM_{icv}_{k}": f"AES-GCM-{k} with {icv} octet ICV [RFC5282]"
       for icv in (8, 12, 16) for k in (128, 192, 256)},
    **{f"AES_CCM_{icv}_{k}": f"AES-CCM-{k} with {icv} octet ICV [RFC5282]"
       for icv in (8, 12, 16) for k in (128, 192, 256)},
}
IKE_INTEG = {
    "HMAC_SHA1_96": "HMAC_SHA1_96 [RFC2404]", "HMAC_MD5_96": "HMAC_MD5_96 [RFC2403]",
    "HMAC_SHA2_256_128": "HMAC_SHA2_256_128 [RFC4868]",
    "HMAC_SHA2_384_192": "HMAC_SHA2_384_192 [RFC4868]",
    "HMAC_SHA2_512_256": "HMAC_SHA2_512_256 [RFC4868]",
}
ESP_ENCR = {
    "AES_CBC": "AES-CBC [RFC3602]", "3DES_CBC": "TripleDES-CBC [RFC2451]",
    "AES_CTR": "AES-CTR [RFC3686]",
    "AES_GCM_8": "AES-GCM with 8 octet ICV [RFC4106]",
    "AES_GCM_12": "AES-GCM with 12 octet ICV [RFC4106]",
    "AES_GCM_16": "AES-GCM with 16 octet ICV [RFC4106]",
    "NULL_AES_GMAC": "NULL encryption with AES-GMAC authentication [RFC4543]",
}
ESP_INTEG = {
    "HMAC_SHA1_96": "HMAC-SHA-1-96 [RFC2404]", "HMAC_MD5_96": "HMAC-MD5-96 [RFC2403]",
    "HMAC_SHA2_256_128": "HMAC-SHA-256-128 [RFC4868]",
    "HMAC_SHA2_384_192": "HMAC-SHA-384-192 [RFC4868]",
    "HMAC_SHA2_512_256": "HMAC-SHA-512-256 [RFC4868]",
}


class KeyLogError(ValueError):
    pass


@dataclass
class IkeKeys:
    spi_i: str
    spi_r: str
    encr: str  # strongSwan name, e.g. AES_GCM_16_256
    integ: str | None
    keys: dict[str, bytes]

    def row(self) -> str:
        ws_encr = IKE_ENCR.get(self.encr)
        if ws_encr is None:
            raise KeyLogError(f"no Wireshark name for IKE encryption {self.encr}")
        aead = self.encr.startswith(("AES_GCM", "AES_CCM"))
        ws_integ = "NONE [RFC4306]" if aead else IKE_INTEG.get(self.integ or "")
        if ws_integ is None:
            raise KeyLogError(f"no Wireshark name for IKE integrity {self.integ}")
        k = self.keys
        ai = "" if aead else k["ai"].hex()
        ar = "" if aead else k["ar"].hex()
        return (f'{self.spi_i},{self.spi_r},{k["ei"].hex()},{k["er"].hex()},"{ws_encr}",'
                f'{ai},{ar},"{ws_integ}"')


@dataclass
class EspKeys:
    spi: str  # 8 hex digits
    src: str
    dst: str
    encr: str  # strongSwan name without key size, e.g. AES_GCM_16 / AES_CBC
    integ: str | None
    ekey: bytes
    akey: bytes

    def row(self) -> str:
        ws_encr = ESP_ENCR.get(self.encr)
        if ws_encr is None:
            raise KeyLogError(f"no Wireshark name for ESP encryption {self.encr}")
        if self.encr.startswith(("AES_GCM", "NULL_AES_GMAC")):
            ws_integ, akey = "NULL", ""
        else:
            ws_integ = ESP_INTEG.get(self.integ or "")
            if ws_integ is None:
                raise KeyLogError(f"no Wireshark name for ESP integrity {self.integ}")
            akey = "0x" + self.akey.hex()
        fam = "IPv6" if ":" in self.src else "IPv4"
        return (f'"{fam}","{self.src}","{self.dst}","0x{self.spi}","{ws_encr}",'
                f'"0x{self.ekey.hex()}","{ws_integ}","{akey}"')


@dataclass
class _Thread:
    ike: dict[str, bytes] = field(default_factory=dict)
    child: dict[str, bytes] = field(default_factory=dict)
    last_parsed: str | None = None
    last_checkout: tuple[str, str] | None = None
    ike_proposal: str | None = None
    esp_proposal: str | None = None
    spi_addr: dict[str, tuple[str, str]] = field(default_factory=dict)


def _split_proposal(algs: str, esp: bool) -> tuple[str, str | None]:
    """'AES_GCM_16_256/PRF_HMAC_SHA2_256/ECP_256' -> (encr, integ)."""
    parts = algs.split("/")
    encr = parts[0]
    integ = next((p for p in parts[1:] if p.startswith(("HMAC_", "AES_XCBC", "AES_CMAC"))), None)
    if esp:
        # Wireshark's ESP names carry no key size: drop the trailing _<bits>.
        m = re.match(r"^(.*)_(\d{3})$", encr)
        if m:
            encr = m.group(1)
    return encr, integ


def parse_log(text: str) -> tuple[list[IkeKeys], list[EspKeys]]:
    threads: dict[str, _Thread] = {}
    ikes: list[IkeKeys] = []
    esps: list[EspKeys] = []
    dump: tuple[str, str, str, int, bytearray] | None = None  # thread, kind, slot, len, data
    global_ike_prop: str | None = None
    global_esp_prop: str | None = None

    def finish_dump() -> None:
        nonlocal dump
        if dump is None:
            return
        tid, kind, slot, n, data = dump
        if len(data) != n:
            raise KeyLogError(f"hexdump of {slot} has {len(data)} bytes, header said {n}")
        t = threads[tid]
        (t.ike if kind == "ike" else t.child)[slot] = bytes(data)
        dump = None

    for raw in text.splitlines():
        m = LINE.match(raw)
        if not m:
            continue
        tid, msg = m["thread"], m["msg"]
        t = threads.setdefault(tid, _Thread())
        if dump is not None and dump[0] == tid:
            h = HEXDUMP.match(msg)
            if h:
                dump[4].extend(bytes.fromhex(h.group(1).replace(" ", "")))
                continue
            finish_dump()
        head = DUMP_HEAD.match(msg)
        if head:
            label = head["label"]
            if label in IKE_LABELS:
                dump = (tid, "ike", IKE_LABELS[label], int(head["n"]), bytearray())
            elif label in CHILD_LABELS:
                dump = (tid, "child", CHILD_LABELS[label], int(head["n"]), bytearray())
            continue
        if (pm := PARSED.match(msg)) is not None:
            t.last_parsed = pm["kind"]
        elif (pr := PROPOSAL.match(msg)) is not None:
            if pr["proto"] == "IKE":
                t.ike_proposal = global_ike_prop = pr["algs"]
            else:
                t.esp_proposal = global_esp_prop = pr["algs"]
        elif (sa := SPI_ADDR.match(msg)) is not None:
            t.spi_addr[sa["spi"]] = (sa["src"], sa["dst"])
        elif (co := CHECKOUT.match(msg)) is not None:
            t.last_checkout = (co["i"], co["r"])
        elif DESTROY.match(msg) and t.ike and t.last_checkout and t.last_checkout[1] != "0" * 16:
            # An SA that dies in the thread that derived its keys (e.g. the responder rejecting
            # the AUTH payload) is never checked in with its SPIs; it was checked out with them.
            encr, integ = _split_proposal(global_ike_prop or "", esp=False)
            ikes.append(IkeKeys(*t.last_checkout, encr, integ, t.ike))
            t.ike = {}
        elif (ci := CHECKIN.match(msg)) is not None and t.ike:
            # The responder selects the proposal while handling IKE_SA_INIT, often in another
            # thread than the one deriving keys at IKE_AUTH; scenarios run one negotiation at
            # a time, so the latest IKE proposal in the log is the one in force.
            prop = global_ike_prop
            if prop is None:
                raise KeyLogError("IKE keys without a 'selected proposal: IKE:' line before them")
            if ci["r"] == "0" * 16:
                continue  # responder SPI not known yet; keys are not derived at this point
            encr, integ = _split_proposal(prop, esp=False)
            ikes.append(IkeKeys(ci["i"], ci["r"], encr, integ, t.ike))
            t.ike = {}
        elif (es := ESTABLISHED.match(msg)) is not None and t.child:
            # (an IKEv1 responder selects the Quick Mode proposal in another thread than the one
            # that establishes the CHILD_SA: as for IKE, the latest in the log is the one in force)
            esp_prop = t.esp_proposal or global_esp_prop
            if esp_prop is None:
                raise KeyLogError("CHILD keys without a 'selected proposal: ESP:' line")
            encr, integ = _split_proposal(esp_prop, esp=True)
            spi_in, spi_out = es["i"], es["o"]
            # RFC 7296 §2.17: "initiator" keys protect initiator->responder traffic.
            we_initiated = t.last_parsed == "response"
            for spi, role in ((spi_out, "i" if we_initiated else "r"),
                              (spi_in, "r" if we_initiated else "i")):
                if spi not in t.spi_addr:
                    raise KeyLogError(f"no 'SPI 0x{spi}, src .. dst ..' line for CHILD_SA SPI")
                src, dst = t.spi_addr[spi]
                esps.append(EspKeys(spi, src, dst, encr, integ, t.child[f"e{role}"],
                                    t.child.get(f"a{role}", b"")))
            t.child = {}
    finish_dump()
    return ikes, esps


def merge(logs: list[str]) -> tuple[list[IkeKeys], list[EspKeys]]:
    """Keys from several logs (both peers), de-duplicated; disagreeing keys are an error."""
    ikes: dict[tuple[str, str], IkeKeys] = {}
    esps: dict[tuple[str, str, str], EspKeys] = {}
    for text in logs:
        i_list, e_list = parse_log(text)
        for k in i_list:
            old = ikes.setdefault((k.spi_i, k.spi_r), k)
            if old.row() != k.row():
                raise KeyLogError(f"IKE SA {k.spi_i}/{k.spi_r}: the logs disagree on its keys")
        for e in e_list:
            olde = esps.setdefault((e.spi, e.src, e.dst), e)
            if olde.row() != e.row():
                raise KeyLogError(f"ESP SA 0x{e.spi}: the logs disagree on its keys")
    return list(ikes.values()), list(esps.values())


def write_tables(outdir: Path, logs: list[Path]) -> tuple[int, int]:
    ikes, esps = merge([p.read_text(errors="replace") for p in logs])
    outdir.mkdir(parents=True, exist_ok=True)
    hdr = ("# Extracted from charon logs ({}) by samples/lib/charon_keys.py\n"
           .format(", ".join(p.name for p in logs)))
    (outdir / "ikev2_decryption_table").write_text(hdr + "".join(k.row() + "\n" for k in ikes))
    # Wireshark's UAT reader skips '#' lines in every table; the header also keeps a
    # scenario without CHILD_SAs from producing an empty (unloadable) file.
    none = "" if esps else "# (no CHILD_SA was established in this scenario: no ESP keys)\n"
    (outdir / "esp_sa").write_text(hdr + none + "".join(e.row() + "\n" for e in esps))
    return len(ikes), len(esps)


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: charon_keys.py OUTDIR LOG [LOG...]", file=sys.stderr)
        return 2
    try:
        n_ike, n_esp = write_tables(Path(argv[0]), [Path(a) for a in argv[1:]])
    except (KeyLogError, OSError) as e:
        print(f"charon_keys: {e}", file=sys.stderr)
        return 1
    print(f"{n_ike} IKE SA(s), {n_esp} ESP SA(s) -> {argv[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
