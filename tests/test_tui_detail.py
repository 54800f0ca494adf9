"""Pilot tests of the detail panes on real data: key counters in SA detail, payload bytes in the hex view.

Data: the strongSwan sample healthy-gcm, once with a copy of its IKE key table in which one hex digit
of every SK_ei is changed (so the initiator's encrypted messages fail their ICV), once as is; tshark
is the oracle for the KE payload bytes.
"""

from __future__ import annotations

import re
from pathlib import Path

from conftest import DATA, SAMPLES, needs_tshark, public
from test_findings_keys import flip_first_key_byte, tshark
from test_tui import CAPTURE, HEALTHY, SIZE, loaded, sync, tree_cursor_to, tshark_fields
from textual.widgets import Tree

from ipsecscope.tui.app import create_app
from ipsecscope.tui.widgets.packet_detail import HexView, payload_spans
from ipsecscope.tui.widgets.sa_detail import SaDetail

ARKIME_V1 = public("arkime/IKEv1.pcap")  # third-party: materialised at test time (tests/public_data.py)


async def open_detail(pilot, kind: str) -> Tree:
    """Once the capture has loaded, the SA tree's cursor on its first ``kind`` node ("ike",
    "child", "pair") and that node's detail opened: the tree, whose ``current_ref`` names it."""
    await loaded(pilot)
    tree = await tree_cursor_to(pilot, kind)
    await pilot.press("enter")
    await pilot.pause()
    return tree


@needs_tshark
@sync
async def test_sa_detail_shows_icv_failures_of_a_wrong_sk_ei(tmp_path: Path) -> None:
    bad = tmp_path / "ikev2_decryption_table"
    flip_first_key_byte(HEALTHY / "keys" / "ikev2_decryption_table", bad, 2)
    assert bad.read_text() != (HEALTHY / "keys" / "ikev2_decryption_table").read_text()
    app = create_app(CAPTURE, [HEALTHY / "keys" / "esp_sa", bad])
    async with app.run_test(size=SIZE) as pilot:
        tree = await open_detail(pilot, "ike")
        sa = app.session.table.ike_sas[tree.current_ref.key]
        assert sa.icv_failed > 0, "a wrong SK_ei must fail the initiator's ICVs"
        text = app.query_one(SaDetail).as_text()
        assert f"{sa.icv_failed} encrypted messages failed the integrity check (wrong keys?)" in text
        assert "Decrypted   partly" in text
        for addr in sa.decrypted_from:  # the responder's messages still decrypt with the right SK_er
            assert f"messages from {addr} decrypted" in text
        # Oracle: tshark with the same damaged table names the frames whose ICV fails.
        ispi = ":".join(f"{b:02x}" for b in sa.ike_spi_i)
        failed = [int(frame) for frame, spi, expert in tshark(
            CAPTURE, ["frame.number", "isakmp.ispi", "_ws.expert.message"], "isakmp", profile=tmp_path)
            if "Integrity Checksum Data is incorrect" in expert and spi in (ispi, sa.ike_spi_i.hex())]
        assert len(failed) == sa.icv_failed
        assert "frames " + ", ".join(map(str, failed[:len(sa.key_failed_frames)])) in text
    # The same SA with the right keys: no counter line.
    app = create_app(CAPTURE, [HEALTHY / "keys" / "esp_sa", HEALTHY / "keys" / "ikev2_decryption_table"])
    async with app.run_test(size=SIZE) as pilot:
        tree = await open_detail(pilot, "ike")
        text = app.query_one(SaDetail).as_text()
        assert "integrity check" not in text and "Key check" not in text



@needs_tshark
@sync
async def test_sa_detail_names_the_unsupported_esp_algorithm() -> None:
    # tests/data/bad/unimplemented-alg.esp_sa: CAST5 for 0x15b69dc5, Blowfish for 0x427e7d84.
    app = create_app(CAPTURE, [DATA / "bad" / "unimplemented-alg.esp_sa"])
    async with app.run_test(size=SIZE) as pilot:
        tree = await open_detail(pilot, "child")
        child = app.session.table.child_sas[tree.current_ref.key]
        text = app.query_one(SaDetail).as_text()
        for spi, alg in ((0x15b69dc5, "ENCR_CAST"), (0x427e7d84, "ENCR_BLOWFISH")):
            assert spi in (child.spi_i, child.spi_r)
            n = len(tshark_fields(CAPTURE, f"esp.spi == {spi:#x}", "frame.number"))
            line = next(ln for ln in text.splitlines() if ln.startswith(f"0x{spi:08x}: "))
            assert f"{n} packets not decrypted" in line and alg in line, line


@needs_tshark
@sync
async def test_choosing_the_ke_payload_marks_its_bytes_in_the_hex_view() -> None:
    ke_data = bytes.fromhex(tshark_fields(CAPTURE, "frame.number == 1", "isakmp.key_exchange.data")[0][0])
    assert ke_data
    app = create_app(CAPTURE)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        assert app._detail_frame == 1
        tree = app.query_one("#detail-tree", Tree)
        hexv = app.query_one(HexView)
        tree.focus()
        await pilot.pause()
        while tree.cursor_node is None or not str(tree.cursor_node.label).startswith("KE "):
            before = tree.cursor_line
            await pilot.press("down")
            assert tree.cursor_line != before, "no KE payload in frame 1's tree"
        await pilot.pause()
        marked = hexv.highlighted_bytes()
        # The KE payload: 4-byte generic header, DH group (2) + reserved (2), then the KE data.
        assert ke_data in marked and len(marked) == 8 + len(ke_data)
        assert hexv.data[hexv.highlight[0]:hexv.highlight[1]] == marked
        # A field row inside the payload keeps its payload marked; the frame line marks nothing.
        await pilot.press("space", "down")  # open the payload, step onto its first field
        await pilot.pause()
        assert tree.cursor_node.parent is not None and str(tree.cursor_node.parent.label).startswith("KE ")
        assert hexv.highlighted_bytes() == marked
        await pilot.press("home")
        await pilot.pause()
        assert hexv.highlight is None


def test_payload_spans_stop_at_a_broken_chain() -> None:
    # Header says the first payload is SA (33); one 8-byte SA payload then a Nonce (40) cut short.
    raw = bytearray(28)
    raw[16] = 33
    raw += bytes([40, 0, 0, 8, 1, 2, 3, 4]) + bytes([0, 0, 0, 200, 9])
    assert payload_spans(bytes(raw), [33, 40]) == [(28, 36), None]
    assert payload_spans(bytes(raw), [34, 40]) == [None, None]  # the types disagree: mark nothing
    assert payload_spans(b"short", [33]) == [None]


V1_REBIND = SAMPLES / "ikev1-nat-rebind"


@sync
async def test_sa_detail_keys_row_says_what_is_there() -> None:
    # IKEv1: the phase-1 key is found by initiator cookie (it decrypted the SA: the row said
    # 'no IKE keys for this SA' beside 'Decrypted yes'); K shows the very key of the table.
    app = create_app(V1_REBIND / "capture.pcapng", sorted((V1_REBIND / "keys").iterdir()))
    async with app.run_test(size=SIZE) as pilot:
        tree = await open_detail(pilot, "ike")
        sa = app.session.table.ike_sas[tree.current_ref.key]
        text = app.query_one(SaDetail).as_text()
        assert sa.decrypted and "Decrypted   yes" in text
        assert "no IKE keys" not in text and "encryption key <256-bit key hidden>" in text
        await pilot.press("K")
        row = next(ln for ln in (V1_REBIND / "keys" / "ikev1_decryption_table").read_text().splitlines()
                   if ln.startswith(sa.ike_spi_i.hex()))
        assert f"encryption key {row.split(',')[1]}" in app.query_one(SaDetail).as_text()
    # AES-GCM: no integrity keys, and the row says so instead of a bare 'SK_ai'.
    app = create_app(CAPTURE, [HEALTHY / "keys" / "esp_sa", HEALTHY / "keys" / "ikev2_decryption_table"])
    async with app.run_test(size=SIZE) as pilot:
        await open_detail(pilot, "ike")
        text = app.query_one(SaDetail).as_text()
        assert "SK_ai none (AEAD)" in text and "SK_ar none (AEAD)" in text
    # No key for any SPI of the CHILD SA: no 'press K to show' for keys that are not there.
    app = create_app(ARKIME_V1, [])
    async with app.run_test(size=SIZE) as pilot:
        await open_detail(pilot, "child")
        text = app.query_one(SaDetail).as_text()
        assert "no key" in text and "press K" not in text


@sync
async def test_sa_detail_exchanges_never_cut_an_address_or_a_name() -> None:
    # Arkime's IKEv1 capture (IPv6 peers): at 80 columns rich squeezed the Exchanges table and cut
    # its no-wrap columns ('2003:51:6012…', 'Aggressive Mo…', '+27.…'); now a record per exchange.
    from test_tui import screen_lines

    from ipsecscope.state.names import exchange_name

    for size in ((80, 40), (160, 48)):
        app = create_app(ARKIME_V1, [])
        async with app.run_test(size=size) as pilot:
            await loaded(pilot)
            tree = await tree_cursor_to(pilot, "ike")
            while not app.session.table.ike_sas[tree.current_ref.key].established_ts:
                await pilot.press("down")
            await pilot.press("enter")
            await pilot.pause()
            sa = app.session.table.ike_sas[tree.current_ref.key]
            shown = "\n".join(screen_lines(app))
            start = shown.index("Exchanges")
            part = shown[start:shown.index("CHILD SAs:", start)]
            assert "…" not in part, part
            for x in sa.exchanges:
                line = next(ln for ln in part.splitlines() if f" {x.msg_id} " in ln or f"#{x.msg_id} " in ln)
                assert x.requester in line and exchange_name(x.exchange, 1) in line, (size, line)


@sync
async def test_peers_count_the_inferred_child_sas_the_tree_lists_under_them() -> None:
    """Key-less CHILD SAs inferred from ESP sit under their peer pair in the tree; the pair's
    detail said 'CHILD SAs 0' beside them."""
    syn = SAMPLES / "synthetic"
    app = create_app(syn / "ipv6-transport-natt.pcap", [syn / "ipv6-transport-natt.esp_sa"])
    async with app.run_test(size=SIZE) as pilot:
        tree = await open_detail(pilot, "pair")
        a, b = tree.current_ref.key
        table = app.session.table
        node = tree.cursor_node
        listed = [n for n in node.children if n.data is not None and n.data.kind == "child"]
        assert listed and not table.ike_sas  # inferred CHILD SAs only, listed under the pair
        text = app.query_one(SaDetail).as_text(width=100)
        assert re.search(rf"CHILD SAs\s+{len(listed)}\b", text), text


@sync
async def test_ikev1_informationals_are_not_shown_unanswered() -> None:
    """An IKEv1 Informational (a delete, a DPD ACK) has no answer under its Message ID: SA detail
    wrote a red 'none' as its response, where sas and the timeline say nothing is missing."""
    d = SAMPLES / "ikev1-nat-rebind"
    app = create_app(d / "capture.pcapng", [d / "charon-left.log"])
    async with app.run_test(size=(80, 40)) as pilot:
        await open_detail(pilot, "ike")
        text = app.query_one(SaDetail).as_text(width=58)
        records = re.findall(r"frames (\S+) → (\S+)  (.*\S)", text)
        deletes = [r for r in records if r[2].startswith("delete")]
        assert deletes and all(r[1] == "—" for r in deletes), text
        assert "none" not in [r[1] for r in records], text


@sync
async def test_a_pair_with_no_esp_says_so_under_traffic() -> None:
    """ts-mismatch: the CHILD SA was refused, no ESP at all. The SA detail's Traffic table was its
    header row over nothing; it says there were no ESP or AH packets."""
    d = SAMPLES / "ts-mismatch"
    app = create_app(d / "capture.pcapng")
    async with app.run_test(size=(80, 24)) as pilot:
        await open_detail(pilot, "pair")
        text = app.query_one(SaDetail).as_text()
        assert "Traffic (per direction)\nno ESP or AH packets" in text, text
        assert "From → To" not in text


async def _ah_detail_labels(app, pilot, frame: int) -> str:
    from test_tui import tree_labels

    from ipsecscope.tui.widgets.packet_table import PacketTable

    await loaded(pilot)
    await pilot.press("2")  # the Packets tab (it may have opened on Findings)
    await pilot.pause()
    table = app.query_one(PacketTable)
    table.cursor = table.position_of(frame)
    await pilot.pause()
    assert table.current_row.frame == frame
    return " | ".join(tree_labels(app.query_one("#detail-tree", Tree)))


@sync
async def test_packet_detail_gives_an_ah_packet_its_icv_line() -> None:
    """The packet table says verified / icv-bad for an AH row; its detail says so too, with the
    algorithm and the key file, the reason and the ESN high bits (tests/data/ah: scapy-signed,
    frame 6 corrupted on the path, frames 12-14 ESN high bits 1)."""
    ah = DATA / "ah"
    app = create_app(ah / "ah-v4.pcap", [ah / "ah-v4.keys.json"])
    async with app.run_test(size=SIZE) as pilot:
        text = await _ah_detail_labels(app, pilot, 1)
        assert "AH SPI 0xa4000001 seq 1" in text and "next header 1 (ICMP)" in text
        assert "ICV verified (AUTH_HMAC_SHA1_96, keys from ah-v4.keys.json:5)" in text
        text = await _ah_detail_labels(app, pilot, 6)
        assert "AH SPI 0xa4000002 seq 3" in text and "ICV failed (AUTH_HMAC_SHA1_96" in text
        text = await _ah_detail_labels(app, pilot, 12)
        assert f"AH SPI 0xa4000004 seq {(1 << 32) | 0xFFFFFFF0}" in text and "ESN high bits 1" in text
    app = create_app(ah / "ah-v4.pcap", [])
    async with app.run_test(size=SIZE) as pilot:
        text = await _ah_detail_labels(app, pilot, 1)
        assert "ICV not verified: no AH keys loaded" in text
    # AH over ESP: the AH and the ESP it protects, decrypted
    app = create_app(ah / "ah-esp.pcap", [ah / "ah-esp.keys.json"])
    async with app.run_test(size=SIZE) as pilot:
        text = await _ah_detail_labels(app, pilot, 1)
        assert "AH SPI 0xa4000005 seq 1" in text and "next header 50 (ESP)" in text and "ICV verified" in text
        assert "ESP SPI 0xe4000005 seq 1" in text and "Decryption: ok" in text


def test_an_ah_child_sa_reads_as_ah() -> None:
    """ah-v4.pcap with its keys, CHILD SA #1 (AH transport): the detail said "IKE SA — (inferred
    from ESP)", headed the verified ICVs "Decr" and listed the keys under "ESP keys" with an
    ENCR_NULL line. AH is its own protocol (RFC 4302): inferred from AH traffic, "Verif", "AH keys"."""
    import asyncio

    from conftest import DATA
    from test_tui import loaded, tree_cursor_to

    from ipsecscope.tui.app import create_app
    from ipsecscope.tui.widgets.sa_detail import SaDetail

    async def go() -> str:
        app = create_app(DATA / "ah" / "ah-v4.pcap", [DATA / "ah" / "ah-v4.keys.json"])
        async with app.run_test(size=(160, 48)) as pilot:
            await loaded(pilot)
            await tree_cursor_to(pilot, "child")
            await pilot.press("enter")
            await pilot.pause()
            detail = app.query_one(SaDetail)
            return detail.as_text(width=detail.size.width)

    text = asyncio.run(go())
    assert "CHILD SA #1 (AH transport)" in text
    assert "(inferred from AH traffic)" in text and "inferred from ESP" not in text
    header = next(line for line in text.splitlines() if line.lstrip().startswith("SPI "))
    assert "Verif" in header.split() and "Decr" not in header.split(), header
    assert "AH keys" in text and "ESP keys" not in text and "ENCR_NULL" not in text, text
    assert "AUTH_HMAC_SHA1_96 <160-bit key hidden>" in text
