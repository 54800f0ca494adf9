"""Hostile and damaged key files: one bad row costs only itself, no key bytes in any message,
no unbounded read (issue 12 items 3-5). Real key files from the samples, damaged the way the
audit found them."""

from __future__ import annotations

import gzip
import os
import re
import subprocess

import pytest
from conftest import DATA, IPSECSCOPE, SAMPLES

import ipsecscope.keys as keys_pkg
from ipsecscope.errors import KeyFileError
from ipsecscope.keys import load_keys

ESP_SA = DATA / "keys" / "esp_sa-healthy-gcm"
CHARON = SAMPLES / "healthy-gcm" / "charon-left.log"
CAPTURE = SAMPLES / "healthy-gcm" / "capture.pcapng"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*IPSECSCOPE, *args], capture_output=True, text=True, timeout=120)


def key_hex(path) -> list[str]:
    """Every key in a file, as lowercase hex (long hex runs / hex-dump rows)."""
    text = path.read_text()
    return [m.lower() for m in re.findall(r"[0-9A-Fa-f]{32,}", text)]


def leaks(output: str, keys: list[str]) -> list[str]:
    """12-hex-digit windows of any key found in ``output`` (spaces and 0x ignored)."""
    flat = re.sub(r"[^0-9a-f]", "", output.lower())
    return [k[i : i + 12] for k in keys for i in range(0, len(k) - 12, 6) if k[i : i + 12] in flat]


def five_rows_one_stale(tmp_path):
    """The 4 real esp_sa rows plus a stale 5th whose AES-GCM key is 15 bytes (+4 salt)."""
    rows = ESP_SA.read_text().splitlines()
    bad = rows[1].replace("0x15b69dc5", "0x0badbad0")
    key = re.search(r'"0x([0-9a-f]{40,})"', bad).group(1)
    bad = bad.replace(key, key[:38])  # 19 bytes: a 15-byte cipher key + 4-byte salt
    f = tmp_path / "esp_sa"
    f.write_text("\n".join([*rows, bad]) + "\n")
    return f, len(rows) + 1


def test_one_stale_esp_sa_row_costs_only_itself(tmp_path):
    f, badline = five_rows_one_stale(tmp_path)
    store = load_keys([f])
    assert len(store.esp) == 4
    assert len(store.skipped) == 1 and store.skipped[0].line == badline
    assert store.warnings == [f"{f}:{badline}: {store.skipped[0].reason}; skipped"]
    assert not leaks(str(store.skipped[0]), key_hex(f))
    with pytest.raises(KeyFileError, match=f"{re.escape(str(f))}:{badline}: "):
        load_keys([f], strict=True)


@pytest.mark.parametrize("cmd", [["keys", "list"], ["sas", str(CAPTURE), "-k"], ["findings", str(CAPTURE), "-k"],
                                 ["decrypt", str(CAPTURE), "--jsonl", "-", "-k"], ["packets", str(CAPTURE), "-k"],
                                 ["stats", str(CAPTURE), "-k"], ["summary", str(CAPTURE), "-Y", "esp", "-k"]],
                         ids=lambda c: c[0])
def test_every_command_warns_and_uses_the_rest(tmp_path, cmd):
    """(stats and summary -Y took --strict-keys and then ignored it: exit 0 on a bad row.)"""
    f, badline = five_rows_one_stale(tmp_path)
    r = run(*cmd, str(f))
    assert r.returncode in (0, 1), r.stderr  # findings: 1 = a warning finding; never the key-file abort
    who = " ".join(cmd[:2]) if cmd[0] == "keys" else cmd[0]  # `ipsecscope keys list: warning: ...`
    assert f"ipsecscope {who}: warning: {f}:{badline}: " in r.stderr and "skipped" in r.stderr
    assert "Traceback" not in r.stderr and not leaks(r.stdout + r.stderr, key_hex(f))
    if cmd[0] == "decrypt":  # the 4 good rows decrypt every ESP packet of the capture
        assert r.stdout.count('"status":"ok"') == 18 and '"no_key"' not in r.stdout
    strict = run(*cmd, str(f), "--strict-keys")
    assert strict.returncode != 0 and strict.stderr.startswith(f"ipsecscope {who}: error: {f}:{badline}:"), strict.stderr


def test_bad_file_inside_a_key_directory_is_named(tmp_path):
    d = tmp_path / "profile"
    d.mkdir()
    (d / "esp_sa").write_text(ESP_SA.read_text())
    (d / "stale").write_text('"IPv4","198.18.0.1","198.18.0.2","0x1","AES-CBC [RFC3602]","0x00","NULL",""\n')
    r = run("sas", str(CAPTURE), "-k", str(d))
    assert r.returncode == 0, r.stderr
    assert f"warning: {d / 'stale'}:1: " in r.stderr
    assert run("sas", str(CAPTURE), "-k", str(d), "--strict-keys").returncode != 0


def test_charon_log_with_one_damaged_dump_keeps_its_other_sas(tmp_path):
    lines = CHARON.read_text().splitlines(keepends=True)
    whole = load_keys([CHARON])
    assert (len(whole.ike), len(whole.esp)) == (2, 4)
    # the first Sk_ei dump's last row loses its last byte: 35 of 36 bytes
    head = next(i for i, ln in enumerate(lines) if "Sk_ei secret => 36 bytes" in ln)
    row = head + 3
    assert "32: 59 DA 88 DA" in lines[row]
    lines[row] = lines[row].replace("32: 59 DA 88 DA", "32: 59 DA 88   ")
    f = tmp_path / "charon.log"
    f.write_text("".join(lines))
    store = load_keys([f])
    assert (len(store.ike), len(store.esp)) == (1, 4)
    assert store.ike[0].spi_i == whole.ike[1].spi_i  # the other IKE SA survived
    assert len(store.skipped) == 1 and store.skipped[0].line == head + 1
    assert "35 of 36 bytes" in store.warnings[0] and not leaks("\n".join(store.warnings), key_hex(CHARON))
    with pytest.raises(KeyFileError, match="35 of 36 bytes"):
        load_keys([f], strict=True)


@pytest.mark.parametrize("dev", ["/dev/zero", "/dev/urandom"])
def test_devices_are_refused_in_one_line(dev):
    if not os.path.exists(dev):
        pytest.skip(f"no {dev}")
    for cmd in (["keys", "list", dev], ["sas", str(CAPTURE), "-k", dev]):
        r = run(*cmd)
        assert r.returncode != 0 and "is a device, not a key file" in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_pipe_is_read_up_to_the_limit(tmp_path, monkeypatch):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    pid = os.fork()
    if pid == 0:  # the writer: a pipe that never ends
        try:
            with open(fifo, "wb") as w:
                while True:
                    w.write(b"\0" * 65536)
        finally:
            os._exit(0)
    monkeypatch.setattr(keys_pkg, "MAX_KEY_FILE", 1 << 20)
    try:
        with pytest.raises(KeyFileError, match="more than 1 MiB"):
            load_keys([fifo])
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)


def test_gzip_bomb_stops_at_the_limit(tmp_path, monkeypatch):
    f = tmp_path / "bomb.gz"
    f.write_bytes(gzip.compress(b"\0" * (4 << 20)))
    monkeypatch.setattr(keys_pkg, "MAX_KEY_FILE", 1 << 20)
    with pytest.raises(KeyFileError, match="decompresses to more than 1 MiB"):
        load_keys([f])


# The audit's four leaks, each as the damaged line that produced it.
LEAKY = {
    "wireshark key with a bad hex digit": '"IPv4","198.18.0.1","198.18.0.2","0x15b69dc5","AES-CBC [RFC3602]",'
                                          '"0xf216e096c12a22fdaa59036373a876cZ","NULL",""\n',
    "ikev2 table SK_ei not hex": "7a7a5ee91452ea49,a602acca3e74284e,7a7a5ee91452ea49a602zz,00,"
                                 '"AES-CBC-128 [RFC3602]",00,00,"NONE [RFC4306]"\n',
    "xfrm auth name missing": "src 198.18.0.1 dst 198.18.0.2\n\tproto esp spi 0x15b69dc5 reqid 1 mode tunnel\n"
                              "\tauth-trunc 0x9f3a61c2d4e5f60718293a4b5c6d7e8f9b0a 96\n"
                              "\tenc cbc(aes) 0x01020304050607080910111213141516\n",
    "xfrm key not hex": "src 198.18.0.1 dst 198.18.0.2\n\tproto esp spi 0x15b69dc5 reqid 1 mode tunnel\n"
                        "\tenc cbc(aes) 0x0102030405060708091011121314151\n",
    "tcpdump secret wrong length": "0x15b69dc5@198.18.0.2 aes128-cbc:0x0102030405060708090a0b0c0d0e0f\n",
    "esp_sa key in the address column": '"IPv4","0x0102030405060708090a0b0c0d0e0f10","198.18.0.2","0x15b69dc5",'
                                        '"AES-CBC [RFC3602]","0x0102030405060708090a0b0c0d0e0f10","NULL",""\n',
}


@pytest.mark.parametrize("name", sorted(LEAKY))
def test_no_key_bytes_in_key_file_errors(tmp_path, name):
    f = tmp_path / "k"
    f.write_text(LEAKY[name])
    keys = [k for k in re.findall(r"(?:0x)?([0-9a-fA-F]{16,})", LEAKY[name]) if len(k) > 16]
    with pytest.raises(KeyFileError) as ei:
        load_keys([f])
    msg = str(ei.value)
    assert msg.startswith(f"{f}:") and not leaks(msg, [k.lower() for k in keys]), msg
    r = run("keys", "list", str(f))
    assert r.returncode == 1 and not leaks(r.stdout + r.stderr, [k.lower() for k in keys]), r.stderr


def test_keys_convert_refuses_an_empty_output_and_makes_the_profile_directory(tmp_path):
    """Issue 14 item 12: an IKEv2-only log to ikev1_table is an error naming what the keys hold;
    `-o NEWDIR/` makes the directory the README shows, the file inside is 0600, a symlink at the
    target is replaced, never followed (ipsecscope.outfile)."""
    ikev2_only = DATA / "keys" / "save-keys-healthy-gcm" / "ikev2_decryption_table"
    r = run("keys", "convert", str(ikev2_only), "--to", "ikev1_table", "-o", str(tmp_path / "t"))
    assert r.returncode == 1 and "hold nothing ikev1_table can carry" in r.stderr and "--to" in r.stderr
    assert not (tmp_path / "t").exists()
    prof = tmp_path / "new" / "profile"
    r = run("keys", "convert", str(CHARON), "--to", "esp_sa", "-o", f"{prof}/")
    assert r.returncode == 0, r.stderr
    f = prof / "esp_sa"
    assert f.is_file() and f.stat().st_mode & 0o777 == 0o600 and prof.stat().st_mode & 0o077 == 0
    victim = tmp_path / "victim"
    victim.write_text("not keys\n")
    link = tmp_path / "ikev2_decryption_table"
    link.symlink_to(victim)
    r = run("keys", "convert", str(CHARON), "--to", "ikev2_table", "-o", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert victim.read_text() == "not keys\n" and not link.is_symlink()
    assert link.stat().st_mode & 0o777 == 0o600 and load_keys([link]).ike


@pytest.mark.parametrize("cmd", [["keys", "list"], ["sas", str(CAPTURE), "-k"],
                                 ["decrypt", str(CAPTURE), "--jsonl", "-", "-k"]], ids=lambda c: c[0])
def test_a_stale_duplicate_spi_that_wins_is_said(tmp_path, cmd):
    """Two rows for one SA (a stale key before the right one, as after an edited or concatenated
    esp_sa): the first wins, as in Wireshark, so that SA fails every ICV. It was silent; now one
    warning names both lines and no key bytes."""
    rows = ESP_SA.read_text().splitlines()
    first = next(i for i, r in enumerate(rows) if "0x15b69dc5" in r)
    key = re.search(r'"0x([0-9a-f]{40,})"', rows[first]).group(1)
    stale = rows[first].replace(key, "00000000" + key[8:])
    f = tmp_path / "esp_sa"
    f.write_text("\n".join([*rows[:first], stale, *rows[first:]]) + "\n")
    r = run(*cmd, str(f))
    who = " ".join(cmd[:2]) if cmd[0] == "keys" else cmd[0]
    want = (f"ipsecscope {who}: warning: {f}:{first + 2}: SPI 0x15b69dc5 198.18.0.1 -> 198.18.0.2 has different keys "
            f"in {f}:{first + 1}; those are used (the first given wins, as in Wireshark)")
    assert r.stderr.count(want) == 1, r.stderr
    assert "Traceback" not in r.stderr and not leaks(r.stderr, key_hex(f))
    if cmd[0] == "decrypt":
        assert r.stdout.count('"status":"ok"') == 15 and r.returncode == 4
    same = tmp_path / "twice"  # the same row twice is no conflict
    same.write_text("\n".join([*rows, *rows[1:]]) + "\n")
    assert "different keys" not in run(*cmd, str(same)).stderr


def test_keys_convert_to_dash_is_standard_output(tmp_path):
    """`keys convert ... -o -` wrote every key, unredacted, to a file named "-" in the current
    directory; `-o -` is standard output (as for decrypt), with the same redaction as no -o."""
    r = subprocess.run([*IPSECSCOPE, "keys", "convert", str(ESP_SA), "--to", "esp_sa", "-o", "-"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and list(tmp_path.iterdir()) == []
    assert "0x15b69dc5" in r.stdout and not leaks(r.stdout + r.stderr, key_hex(ESP_SA))
