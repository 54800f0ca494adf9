"""A Windows AuthIP message (tests/data/libreswan: libreswan's replay-authip-01 capture, "a windows
2008 AuthIP IKE packet" from the wild). Microsoft's AuthIP (MS-AIPS) speaks ISAKMP with exchange
type 243 and private-use payload types 133 and 135 (RFC 2408 §3.1: 128-255). tshark dissects it
as ISAKMP, exchange "Unknown (243)", payloads "Private Use (133)". ipsecscope's row listed the
payloads as "[ Ikev1Payload 133 SA Ikev1Payload 135 ... ]": an enum's class name, and one
payload read as two. Each payload is one token now."""

from __future__ import annotations

import json
import subprocess

from conftest import field_cli as cli
from conftest import needs_tshark, public

CAP = public("libreswan/weirdike-eastwest.pcap-ike.pcap")  # third-party: materialised at test time


@needs_tshark
def test_authip_payloads_are_one_token_each_in_tsharks_order() -> None:
    out = subprocess.run(["tshark", "-n", "-r", str(CAP), "-T", "fields", "-E", "occurrence=a", "-E", "aggregator=,",
                          "-e", "isakmp.exchangetype", "-e", "isakmp.nextpayload"],
                         capture_output=True, text=True, timeout=60, check=True).stdout.split("\t")
    assert out[0] == "243"
    (row,) = [json.loads(line) for line in cli("packets", str(CAP), "--json").splitlines()]
    listed = row["info"].split("[ ", 1)[1].rsplit(" ]", 1)[0].split()
    assert row["info"].startswith("exchange 243 v1 #0 [ PRIVATE(133)")
    # tshark's Next Payload fields in order: the header's, then each payload's, the SA's proposal
    # and transform chain (3, 0) nested after the SA's own; 0 = none after the last
    chain = [int(t) for t in out[1].strip().split(",")]
    del chain[3:6]  # inside the SA payload: proposal (next 0), transform (3), last transform (0)
    names = {133: "PRIVATE(133)", 1: "SA", 135: "PRIVATE(135)", 10: "NONCE", 13: "VID", 20: "NAT_D"}
    assert listed == [names[t] for t in chain if t]
