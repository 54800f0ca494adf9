"""The README is a contract: its Python example runs, its commands exist, the public API is pinned."""

from __future__ import annotations

import re
import runpy
import subprocess
import sys
from pathlib import Path

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
