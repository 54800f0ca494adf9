"""Regenerate capture.pcapng, charon-left.log, charon-right.log here (root, strongSwan 5.9).

One IKE SA, then one CHILD SA per proposal below, created one after another by CREATE_CHILD_SA
in that IKE SA (issue 11 item 11): AES-GCM-8/12/16, AES-CCM-12, NULL+HMAC-SHA2-256,
AES-CBC+HMAC-MD5, AES-CBC+AES-XCBC. Each CHILD SA has its own inner subnets (10.1.N.0/24 <->
10.2.N.0/24) and carries 3 pings, so every ESP packet belongs to exactly one of them.
Usage: python3 tests/data/keys/multi-child/make_multi_child_sample.py [OUTDIR]
"""
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from netns_peers import LEFT_OUTER, PLUGINS, RIGHT_OUTER, StrongswanPair  # noqa: E402

OUT = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent).resolve()
CHILDREN = [  # (name, esp_proposals) in creation order; index = inner subnet number
    ("gcm16", "aes256gcm16"),  # the IKE_AUTH CHILD SA
    ("gcm8", "aes128gcm8"),
    ("gcm12", "aes192gcm12"),
    ("ccm12", "aes128ccm12"),
    ("null_sha256", "null-sha256"),
    ("cbc_md5", "aes128-md5"),
    ("cbc_xcbc", "aes256-aesxcbc"),
]


def conf(me: str, peer: str, me_id: str, peer_id: str, lnet: int, rnet: int) -> str:
    children = "".join(f"""            {name} {{
                local_ts = 10.{lnet}.{n}.0/24
                remote_ts = 10.{rnet}.{n}.0/24
                esp_proposals = {prop}
                rekey_time = 0
                start_action = none
            }}
""" for n, (name, prop) in enumerate(CHILDREN))
    return f"""connections {{
    multi {{
        version = 2
        local_addrs = {me}
        remote_addrs = {peer}
        encap = yes
        proposals = aes256-sha256-modp2048
        rekey_time = 0
        local {{
            auth = psk
            id = {me_id}.ipsecscope.test
        }}
        remote {{
            auth = psk
            id = {peer_id}.ipsecscope.test
        }}
        children {{
{children}        }}
    }}
}}
secrets {{
    ike-multi {{
        id-1 = left.ipsecscope.test
        id-2 = right.ipsecscope.test
        secret = "ipsecscope-sample-psk-multi"
    }}
}}
"""


LEFT = conf(LEFT_OUTER, RIGHT_OUTER, "left", "right", 1, 2)
RIGHT = conf(RIGHT_OUTER, LEFT_OUTER, "right", "left", 2, 1)

with StrongswanPair(OUT / "work", LEFT, RIGHT, plugins=PLUGINS + " md5 xcbc") as p:
    for n, (name, _prop) in enumerate(CHILDREN):
        if n:
            p.add_inner("left", f"10.1.{n}.1/24")
            p.add_inner("right", f"10.2.{n}.1/24")
        p.initiate(name, ike="multi")  # n > 0: CREATE_CHILD_SA in the same IKE SA
        p.ping(3, src=f"10.1.{n}.1", dst=f"10.2.{n}.1")
    print(p.list_sas())
    time.sleep(0.5)
    p.terminate_ike("multi")
    time.sleep(0.5)
    p.to_pcapng(OUT / "capture.pcapng")
for side in ("left", "right"):
    (OUT / f"charon-{side}.log").write_text((OUT / "work" / side / "charon.log").read_text())
print("done")
