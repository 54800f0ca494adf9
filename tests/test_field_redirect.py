"""A REDIRECT to a gateway named by FQDN, followed (tests/data/scapy: Scapy's
ikev2_notify_redirect.pcap). 10.5.2.52 answers the IKE_SA_INIT with N(REDIRECT) naming
moneybin.duckburg.disney.com; the initiator's next IKE_SA_INIT goes to 10.5.2.53 with
N(REDIRECTED_FROM) = 10.5.2.52 (RFC 5685 §6: the address of the gateway that redirected it).
No address can match an FQDN, so the new SA was never linked to the redirect: IKE-REDIRECTED
said (WARNING) "No IKE SA from 10.5.2.60 to moneybin... follows in the capture" while frame 3
is that SA. The link is made by REDIRECTED_FROM now."""

from __future__ import annotations

import json
import subprocess

from conftest import field_cli as cli
from conftest import needs_tshark, public

CAP = public("scapy/ikev2_notify_redirect.pcap")  # third-party: materialised at test time


def _tshark() -> list[list[str]]:
    out = subprocess.run(["tshark", "-n", "-r", str(CAP), "-T", "fields", "-e", "frame.number", "-e", "ip.dst",
                          "-e", "isakmp.notify.data.redirect.new_resp_gw_ident.fqdn",
                          "-e", "isakmp.notify.data.redirect.org_resp_gw_ident.ipv4", "-e", "isakmp.ispi"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    return [line.split("\t") for line in out.splitlines()]


@needs_tshark
def test_capture_is_a_redirect_to_an_fqdn_that_the_initiator_followed() -> None:
    rows = _tshark()
    assert rows[1][2] == "moneybin.duckburg.disney.com"  # the REDIRECT names no address
    assert rows[2][3] == rows[0][1] == "10.5.2.52"  # REDIRECTED_FROM = the gateway first asked
    assert rows[2][1] == "10.5.2.53" and rows[2][4] != rows[0][4]  # a new IKE SA elsewhere


@needs_tshark
def test_followed_redirect_links_the_two_ike_sas() -> None:
    spi_old, spi_new = _tshark()[0][4], _tshark()[2][4]
    sas = {s["key"].split("_")[0]: s for s in json.loads(cli("sas", "--json", str(CAP)))["ike_sas"]}
    assert sas[spi_old]["redirected_into"] == sas[spi_new]["key"]
    assert sas[spi_new]["redirected_from"] == sas[spi_old]["key"]


def test_redirect_finding_says_the_initiator_followed() -> None:
    (f,) = [f for f in json.loads(cli("findings", "--json", str(CAP)))["findings"] if f["code"] == "IKE-REDIRECTED"]
    assert f["severity"] == "info"
    assert "followed" in f["explanation"] and "No IKE SA" not in f["explanation"]
    assert f["frames"] == [2, 3]


def test_redirect_to_an_fqdn_names_the_address_the_initiator_reached() -> None:
    """The REDIRECT names moneybin.duckburg.disney.com, the capture shows where the initiator went
    (10.5.2.53, frame 3): the finding says both, and 'started' for an SA that never came up."""
    (f,) = [f for f in json.loads(cli("findings", "--json", str(CAP)))["findings"] if f["code"] == "IKE-REDIRECTED"]
    assert "with moneybin.duckburg.disney.com (reached at 10.5.2.53) at" in f["explanation"]
    assert "it started IKE SA" in f["explanation"]  # the new SA failed: it was never 'set up'
