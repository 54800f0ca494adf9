"""An IKE_AUTH whose later IP fragments never reach the capture point (tests/data/zeek-spicy-ipsec:
Zeek's ipsec_client.pcap, a strongSwan client whose 3,468-octet IKE_AUTH goes out in three IP
fragments, three times, never answered). Kept here: IKE_SA_INIT and the first fragment of each
try, as a capture at the receiver sees it when a firewall drops non-first fragments (they carry
no ports; RFC 7383 §1). The first fragment holds the UDP and IKE headers (RFC 791 §2.3), so the
message is known: tshark with ip.defragment off dissects it as that IKE_AUTH request.

ipsecscope showed three MALFORMED "IP fragments never completed" rows, a CAPTURE-MALFORMED
blaming the snap length, and an IKE SA whose story ended at IKE_SA_INIT: the IKE_AUTH, and
IKE-IP-FRAGMENTED, the finding made for this failure, were missing. The rows stay as tshark
shows them (unreassembled fragments); the tracker now gets the IKE message they start, and
IKE-IP-FRAGMENTED says the capture holds only the first fragment of each try."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import field_cli as cli
from conftest import need, needs_tshark, public
from ike_reseal import keep_frames

SRC = public("zeek-spicy-ipsec/ipsec_client.pcap")
KEEP = (1, 2, 3, 6, 9)  # IKE_SA_INIT, then the offset-0 fragment of each IKE_AUTH try


@pytest.fixture(scope="module")
def cap(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SRC with only the frames KEEP (a classic little-endian pcap: 24-octet file header, records
    of a 16-octet header and the frame)."""
    need(SRC)
    return keep_frames(SRC, KEEP, tmp_path_factory.mktemp("lostfrag") / "first-fragments.pcap")


def _tshark(cap: Path, *opts: str) -> list[list[str]]:
    out = subprocess.run(["tshark", "-n", "-r", str(cap), *opts, "-T", "fields", "-e", "frame.protocols",
                          "-e", "ip.flags.mf", "-e", "ip.frag_offset", "-e", "isakmp.ispi", "-e", "isakmp.exchangetype",
                          "-e", "isakmp.messageid"], capture_output=True, text=True, timeout=60, check=True).stdout
    return [line.split("\t") for line in out.splitlines()]


@needs_tshark
def test_tshark_sees_first_fragments_of_the_ike_auth_request(cap: Path) -> None:
    whole, raw = _tshark(cap), _tshark(cap, "-o", "ip.defragment:FALSE")
    for row in whole[2:]:  # reassembly on (the default): a fragment, nothing above IP
        assert row[0].endswith(":ip:data") and row[1:3] == ["1", "0"]
    for row in raw[2:]:  # reassembly off: the IKE header in it
        assert "isakmp" in row[0] and row[3] == raw[0][3] and row[4:6] == ["35", "0x00000001"]


@needs_tshark
def test_rows_and_counts_stay_as_tshark_shows_the_frames(cap: Path) -> None:
    assert json.loads(cli("summary", "--json", str(cap)))["counts"]["ike"] == 2 == sum(
        "isakmp" in r[0] for r in _tshark(cap))
    rows = [json.loads(line) for line in cli("packets", "--json", str(cap)).splitlines()]
    assert [r["kind"] for r in rows] == ["IKE", "IKE", "MALFORMED", "MALFORMED", "MALFORMED"]
    assert all("the first holds the start of IKE_AUTH request #1" in r["info"] for r in rows[2:])


def test_the_ike_auth_tries_belong_to_the_ike_sa(cap: Path) -> None:
    (sa,) = json.loads(cli("sas", "--json", str(cap)))["ike_sas"]
    auth = sa["exchanges"][1]
    assert (auth["exchange"], auth["msg_id"], auth["request_frames"], auth["response_frames"]) == (
        "IKE_AUTH", 1, [3, 4, 5], [])
    assert auth["ip_fragmented"] and auth["retransmits"] == 2


def test_ike_ip_fragmented_says_what_went_wrong(cap: Path) -> None:
    found = {f["code"]: f for f in json.loads(cli("findings", "--json", str(cap)))["findings"]}
    f = found["IKE-IP-FRAGMENTED"]
    assert f["severity"] == "error" and f["frames"][0] == 3
    assert "IKE_AUTH" in f["explanation"]
    assert "(frames 3, 4, 5) the capture holds only the first IP fragment" in f["explanation"]
