"""The README is a contract: its Python example runs, its commands exist, the public API is pinned."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

import ipsecscope

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_python_example_runs(tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    assert blocks, "the README lost its Python example"
    monkeypatch.chdir(ROOT)
    for i, code in enumerate(blocks):
        script = tmp_path / f"readme_{i}.py"
        script.write_text(code.replace("/tmp/esn-clear.pcapng", str(tmp_path / "clear.pcapng")))
        runpy.run_path(str(script), run_name="__main__")
    out = capsys.readouterr().out
    assert "CHILD_SA #1" in out and "decrypted," in out


def test_public_api_is_pinned():
    assert ipsecscope.__all__ == [
        "CaptureError", "ChildSa", "DecryptedPacket", "EspFlow", "Finding", "IkeSa", "IntegrityError",
        "IpsecscopeError", "KeyFileError", "KeyStore", "SaState", "Session", "SessionStats", "Severity",
        "decrypt_capture", "iter_decrypted", "load_keys", "open_capture", "__version__",
    ]
    for name in ipsecscope.__all__:
        assert getattr(ipsecscope, name) is not None


def test_summary_does_not_import_the_tui_or_the_engine():
    code = ("import sys; from ipsecscope.cli import main; main(['summary', 'samples/healthy-gcm/capture.pcapng',"
            " '--json']); print('\\nLOADED', 'textual' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("LOADED False")


def test_every_command_in_the_readme_exists():
    from ipsecscope.cli import COMMANDS

    # Commands as a user types them: at a line start, after `$ `, `sudo ` or a backtick.
    used = set(re.findall(r"(?:^|`|\$ |sudo )ipsecscope ([a-z]+)", README, re.M))
    assert {"summary", "sas", "findings", "decrypt", "keys", "live"} <= used
    assert used <= set(COMMANDS), used - set(COMMANDS)


def test_setup_commands_and_ci_agree():
    first_screen = README.split("---", 1)[0]
    setup = re.findall(r"^(\./dev \w+)", first_screen, re.M)
    assert setup == ["./dev demo", "./dev test"]
    assert "./dev test" in (ROOT / ".ci" / "run").read_text()


def test_version_flag_matches_the_package_metadata():
    import tomllib

    want = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    out = subprocess.run([sys.executable, "-c", "import sys; from ipsecscope.cli import main; sys.exit(main())",
                          "--version"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.strip() == f"ipsecscope {want}" == f"ipsecscope {ipsecscope.__version__}"


# The README's placeholders, as its own sentence defines them for the demo sample, and the
# key-file names of its `keys` examples.
SAMPLE = {"CAPTURE": "samples/healthy-gcm/capture.pcapng", "KEYS": "samples/healthy-gcm/keys",
          "charon.log": "samples/healthy-gcm/charon-left.log", "esp_sa": "samples/healthy-gcm/keys/esp_sa",
          "capture.pcapng": "samples/healthy-gcm/capture.pcapng", "xfrm.txt": "tests/data/keys/ip-xfrm-state.txt"}


def _shell_examples() -> list[str]:
    """Every `ipsecscope ...` line of the README's sh blocks a user can run on a file (not the TUI
    on a live pipe or --follow, not `sudo ... live`)."""
    lines = [ln for b in re.findall(r"```sh\n(.*?)```", README, re.S) for ln in b.splitlines()]
    return [ln for ln in lines if ln.startswith("ipsecscope ") and "--follow" not in ln]


@pytest.mark.parametrize("line", _shell_examples())
def test_shell_example_runs_on_the_demo_sample(tmp_path, line):
    """Typed as the README shows it, on the demo sample: exit 0, output, no traceback. (Two of
    them selected nothing there: an SPI of another capture, and DNS.)"""
    import shlex

    words, _, pipe = line.partition(" | ")
    args = []
    for w in shlex.split(words, comments=True)[1:]:
        w = w if args[-1:] == ["--to"] else SAMPLE.get(w, w)
        if w in ("clear.pcapng", "keys.json") or w.startswith("~/"):
            w = f"{tmp_path}/{w.removeprefix('~/')}"  # a trailing / kept: `-o DIR/` makes the directory
        args.append(w)
    r = subprocess.run([sys.executable, "-m", "ipsecscope", *args], cwd=ROOT, capture_output=True, text=True,
                       timeout=120, env={**os.environ, "HOME": str(tmp_path)})
    assert r.returncode == 0, (line, r.stderr)
    assert "Traceback" not in r.stderr + r.stdout
    assert r.stdout.strip() or "wrote " in r.stderr or " decrypted, " in r.stderr, line
    if pipe.startswith("jq"):
        assert [json.loads(x)["status"] for x in r.stdout.splitlines()] == ["ok"] * 18


def test_findings_example_prints_what_the_readme_shows():
    """The first example, `findings ... --min-severity error` on proposal-mismatch: the same words
    as the README block (which shows it wrapped, as a terminal does)."""
    block = README.split("## What it tells you", 1)[1].split("```", 2)[1]
    lines = block.splitlines()[1:]
    cwd = ROOT / lines[0].removeprefix("$ cd ")
    cmd = lines[1].removeprefix("$ ipsecscope ").split()
    r = subprocess.run([sys.executable, "-m", "ipsecscope", *cmd], cwd=cwd, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 1 and r.stderr == ""
    assert r.stdout.split() == " ".join(lines[2:]).split()


def test_key_format_examples_parse(tmp_path):
    """The keys table's example rows (esp_sa, tcpdump -E), with their `0x…` placeholders filled
    with keys of the lengths their algorithms take, are read by `keys list` as the SA they show."""
    table = README.split("| format | `-k` |", 1)[1].split("\n\n", 1)[0]
    esp_sa = re.search(r'`("IPv4",.*?)`', table).group(1)
    tcpdump = re.findall(r"`((?:0x12345678@|ikev2 I ).*?)`", table)
    key16, key20 = "0x" + "11" * 16, "0x" + "22" * 20
    cases = {
        "esp_sa": (esp_sa.replace("0x…", key16, 1).replace("0x…", key20, 1), "0xc254fe64"),
        "secrets.txt": ("\n".join([tcpdump[0].replace("0x…", key16),
                                   *(tcpdump[1].replace("0xSPIi", "0x" + "ab" * 8).replace("0xSPIr", "0x" + "cd" * 8)
                                     .replace(" I ", f" {who} ").replace("sha1:0x…", "sha1:" + key20)
                                     .replace("aes128:0x…", "aes128:" + key16) for who in "IR")]),
                        "abababababababab"),
    }
    for name, (text, shown) in cases.items():
        f = tmp_path / name
        f.write_text(text + "\n")
        r = subprocess.run([sys.executable, "-m", "ipsecscope", "keys", "list", str(f)], cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and shown in r.stdout and r.stderr == "", (name, text, r.stderr)


def test_every_data_path_the_docs_name_is_in_a_fresh_clone():
    """Each repository path README.md and docs/*.md name (`tests/data/...`, `samples/...`,
    `ipsecscope/...`, `benchmarks/...`, ...) is committed (a fresh clone has it) and is not under a
    third-party folder tests/public_data.py materialises at test time (those files are never
    committed; a user of a clone does not have them there)."""
    from tests.public_data import MANIFEST

    tops = ("tests", "samples", "ipsecscope", "benchmarks", "docs", "plugins")
    tracked = subprocess.run(["git", "ls-files", *tops], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.splitlines()
    if not tracked:
        pytest.skip("not a git checkout")
    dirs = {str(Path(f).parents[i]) for f in tracked for i in range(len(Path(f).parents) - 1)}
    materialised = {rel.split("/", 1)[0] for rel in MANIFEST}
    made_here = ("benchmarks/out",)  # written by benchmarks/run_table.py, as the README says
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    named = re.compile(rf"(?<![\w./-])((?:{'|'.join(tops)})/[\w./+*{{}},-]*[\w+*}}-])/?")
    bad = []
    for doc in docs:
        for path in named.findall(doc.read_text()):
            if path.startswith(made_here):
                continue
            folder = path.removeprefix("tests/data/").split("/", 1)[0] if path.startswith("tests/data/") else ""
            if folder in materialised and path not in tracked:  # its PROVENANCE.md/MANIFEST.md stay
                bad.append(f"{doc.name}: {path} (materialised at test time, not in a clone)")
                continue
            # a shell glob (`ikev1-{mm,qm}-*.pcap`) must match some committed file
            brace = re.search(r"\{([^}]*)\}", path)
            pats = [path[:brace.start()] + alt + path[brace.end():] for alt in brace.group(1).split(",")] if brace else [path]
            if not all(fnmatch.filter(tracked, pat) or pat in dirs for pat in pats):
                bad.append(f"{doc.name}: {path}")
    assert not bad, bad


def test_samples_section_names_every_sample():
    """The Samples section names each scenario directory samples/ holds (a new sample is listed)."""
    section = README.split("\n## Samples\n", 1)[1].split("\n## ", 1)[0]
    scenarios = [d.name for d in (ROOT / "samples").iterdir()
                 if d.is_dir() and (d / "capture.pcapng").is_file()]
    assert scenarios
    assert [d for d in scenarios if not re.search(rf"(?<![\w-]){re.escape(d)}(?![\w-])", section)] == []
