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
from netns_peers import StrongswanPair  # noqa: E402


def conf(side):
    me, peer = ("198.18.0.1", "198.18.0.2") if side == "left" else ("198.18.0.2", "198.18.0.1")
    lid, rid = ("left", "right") if side == "left" else ("right", "left")
    lts, rts = ("10.1.0.0/24", "10.2.0.0/24") if side == "left" else ("10.2.0.0/24", "10.1.0.0/24")
    return f"""
connections {{
    v1 {{
        version = 1
        local_addrs = {me}
        remote_addrs = {peer}
        encap = yes
        proposals = aes128-sha256-modp2048
        rekey_time = 0
        local {{
            auth = psk
            id = {lid}.ipsecscope.test
        }}
        remote {{
            auth = psk
            id = {rid}.ipsecscope.test
        }}
        children {{
            net {{
                local_ts = {lts}
                remote_ts = {rts}
                esp_proposals = aes128-sha1
                rekey_time = 0
                life_time = 0
                start_action = none
            }}
        }}
    }}
}}
secrets {{
    ike-v1 {{
        id-1 = left.ipsecscope.test
        id-2 = right.ipsecscope.test
        secret = "ipsecscope-sample-psk-0001"
    }}
}}
"""

with StrongswanPair(OUT / "work", conf("left"), conf("right")) as p:
    r = p.initiate("net", ike="v1")
    print(r.stdout[-500:] if hasattr(r, "stdout") else r)
    p.ping(3)
    time.sleep(0.5)
    p.terminate_ike("v1")
    time.sleep(0.5)
    p.to_pcapng(OUT / "ikev1-capture.pcapng")
print("done")
