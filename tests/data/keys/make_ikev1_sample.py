"""Regenerate charon-ikev1-{left,right}.log and ikev1-capture.pcapng (root, strongSwan 5.9).

Two real charon peers (tests/netns_peers.py) negotiate IKEv1 Main Mode (AES-128/SHA-256/MODP-2048,
PSK) and Quick Mode (ESP AES-128-CBC/HMAC-SHA1-96), ping 3 times through the tunnel, delete.
Usage: python3 tests/data/keys/make_ikev1_sample.py OUTDIR
"""
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
OUT = Path(sys.argv[1]).resolve()
from netns_peers import StrongswanPair, psk_confs  # noqa: E402

LEFT, RIGHT = psk_confs("v1", "aes128-sha256-modp2048", "aes128-sha1", "ipsecscope-sample-psk-0001", version=1,
                        child_opts={"rekey_time": "0", "life_time": "0", "start_action": "none"})

with StrongswanPair(OUT / "work", LEFT, RIGHT) as p:
    r = p.initiate("net", ike="v1")
    print(r.stdout[-500:] if hasattr(r, "stdout") else r)
    p.ping(3)
    time.sleep(0.5)
    p.terminate_ike("v1")
    time.sleep(0.5)
    p.to_pcapng(OUT / "ikev1-capture.pcapng")
print("done")
