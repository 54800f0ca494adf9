"""Third-party captures, materialised at test time instead of committed.

Captures other projects published (their test suites, fetched as read-only git snapshots) are not
ours to commit: each folder's tests/data/<folder>/PROVENANCE.md names the repository, commit, path
and licence, and MANIFEST below says where the bytes are read from when the tests run:

* the steering repository's shared corpus (``../shared/corpus`` beside the checkout, or
  ``$IPSECSCOPE_SHARED``/corpus), or
* the fetch mirror's git directory (``$IPSECSCOPE_MIRROR``, default /work/.mirror):
  ``git --git-dir=MIRROR/OWNER+NAME/repo show COMMIT:PATH``, or
* a recipe over one of those (``Frames``: some records of an upstream pcap, as ``editcap`` cuts
  them), so that a session cut from a long capture is not committed either.

The bytes are checked against the sha256 the tests were written for and cached under
.pytest_cache/public-data/<folder>/<name> (gitignored). A machine with neither source gets the
same paths, not existing: tests using them skip with the reason (tests/conftest.py's autouse
fixture), they never fail for want of data.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".pytest_cache" / "public-data"
MIRROR = Path(os.environ.get("IPSECSCOPE_MIRROR", "/work/.mirror"))


class Source(NamedTuple):
    repo: str  # OWNER+NAME under the mirror, or "shared" (path inside the shared corpus)
    commit: str
    path: str  # path inside that commit
    sha256: str


class Frames(NamedTuple):
    """Records of the classic pcap MANIFEST[base], 1-based inclusive ranges in order: its file
    header and those records unchanged, the bytes ``editcap -F pcap -r BASE OUT 260-263 268``
    writes. The sha256 is that of the file committed before (the tests were written on it)."""
    base: str
    ranges: tuple[tuple[int, int], ...]
    sha256: str


def _shared_dirs() -> list[Path]:
    env = os.environ.get("IPSECSCOPE_SHARED")
    # .ci/run links shared/ beside its clone; worktrees live one level deeper (/work/wt/NAME)
    return [Path(env)] if env else [ROOT.parent / "shared", ROOT.parent.parent / "shared"]


JOY = ("cisco+joy", "21770513e27ad10cde7c1ab7c1e6f024c8668119")
OPENSWAN = ("xelerance+Openswan", "86dff2b44667566f5cfbdca9de987aab8ef60b36")
SCAPY = ("secdev+scapy", "ac38b273405b038104df096fe941878937da87cd")
ZEEK = ("zeek+zeek", "a13de64fbbdb01f90961c04719b308fbbb6d199e")
ARKIME = ("arkime+arkime", "2d2f3678796bcedc6655a276f476b7ddd457f3f2")
ZSI = ("corelight+zeek-spicy-ipsec", "4a7f0041aa121d5bc1813cf47b8b2a17ed713273")
LIBRESWAN = ("libreswan+libreswan", "0c4e3eccfbb2cdfa1e21c154ee847a141a611a4f")

NDPI = ("ntop+nDPI", "3b1286ab03b0c9223ac208a01868d8c1f6c0ae00")
PACKETGEN = ("sdaubert+packetgen-plugin-ipsec", "a7906cf2a2188c10c9d49037948c7ce32d02079a")
KLIPS = ("xelerance+Openswan", "175df9e207b121bb79f2c92d562f4afbb692b0f3")  # last commit with testing/
TCPDUMP = ("the-tcpdump-group+tcpdump", "39b50f76672bca4af7d7eb52604c5b692c6b6b2c")
SURICATA = ("OISF+suricata-verify", "10a45e4bad6d29d0f1239d93119ea24e1bbdab19")
SHARED = ("shared", "")


def _corpus(folder: str, listing: str) -> dict[str, Source]:
    """``NAME SHA256`` lines: files of the shared corpus's ``folder``, kept under the same name."""
    return {f"{folder}/{name}": Source(*SHARED, f"{folder}/{name}", sha)
            for name, sha in (line.split() for line in listing.strip().splitlines())}


# tests/data-relative name -> where it comes from (keep in step with the folders' PROVENANCE.md)
MANIFEST: dict[str, Source | Frames] = {
    "joy/ikev1.pcap": Source(*JOY, "test/pcaps/ikev1.pcap",
                             "9afec10d01cd20e5ccbb02a9461ddf50441e4c2430626c3901b2e8ba7ff3a460"),
    "joy/ikev2.pcap": Source(*JOY, "test/pcaps/ikev2.pcap",
                             "5251e0ed4a73d0aa1b18f043b8c91189a506e5d0ccba10200da35056be411589"),
    "openswan-unit/lp08-parentR1notify.pcap": Source(
        *OPENSWAN, "tests/unit/libpluto/lp08-parentR1/parentR1notify.pcap",
        "8584b186fe83792036f864715ab21e0cc9b94d4295637b81a7c083c652d63ea3"),
    "openswan-unit/lp104-v1rwnatN1.pcap": Source(
        *OPENSWAN, "tests/unit/libpluto/lp104-v1rwnatM2/v1rwnatN1.pcap",
        "b9f52633560a8f85e182c8bc99dab4914e6feb5da6af809bcf3346028b8793db"),
    "openswan-unit/lp108-v1rwnatN3.pcap": Source(
        *OPENSWAN, "tests/unit/libpluto/lp108-v1rwnatQI1/v1rwnatN3.pcap",
        "0edf0bc236ccc3fd53ae7f380839d11fb7c98e1cca1b1a124fdd18fc34d39e1a"),
    "libreswan/weirdike-eastwest.pcap-ike.pcap": Source(
        *LIBRESWAN, "testing/pluto/replay-authip-01/weirdike-eastwest.pcap-ike.pcap",
        "ddffc4c24c4ff2e32bfb41bc8d056d958bed7e755e282577a529187eb8fa45c1"),
    "scapy/ikev2_nat_t.pcapng": Source(*SCAPY, "test/pcaps/ikev2_nat_t.pcapng",
                                       "58c748c33388614a767d90345b38b827098d4d3f9609f7075e3ff58a4f49b6ad"),
    "scapy/ikev2_notify_redirect.pcap": Source(
        *SCAPY, "test/pcaps/ikev2_notify_redirect.pcap",
        "2a18e98df25f9f46306fe019eeec793b6a83f5d77f450b48ea0f05fabb378236"),
    "zeek/ip6_esp.pcap": Source(*ZEEK, "testing/btest/Traces/ip6_esp.pcap",
                                "86a744efb23d141e1b404a2f7c667053d7dfff8db572fef87b379dd84055066b"),
    "zeek/ipv6_zero_len_ah.pcap": Source(*ZEEK, "testing/btest/Traces/ipv6_zero_len_ah.pcap",
                                         "64ab887517f3b8dcc294c3bc86c8bc36fb5925e1339c3054e4e13127534c7bb6"),
    "zeek/baseline/core.ipv6_esp/output": Source(
        *ZEEK, "testing/btest/Baseline/core.ipv6_esp/output",
        "1c12cb0e8290a3269351fae854759ac95613bd7b4b733c7a8456fe4bec45a02f"),
    "arkime/IKEv1.pcap": Source(*ARKIME, "tests/pcap/IKEv1.pcap",
                         "289db7cabf920d9c563b6061d76e0b746cf4009ec395efc83cc804ed63c0dba7"),
    "arkime/IKEv1.test": Source(*ARKIME, "tests/pcap/IKEv1.test",
                         "6e1b78717dac4236f2401823b628bc24b8330ce7482b184bdd652f23c7e2e787"),
    "arkime/IKEv2.pcap": Source(*ARKIME, "tests/pcap/IKEv2.pcap",
                         "b2c006dade28a708ecc8d08e30b9a0247ad1e803a6b7be1b4ce6cdf715d9ea09"),
    "arkime/IKEv2.test": Source(*ARKIME, "tests/pcap/IKEv2.test",
                         "d5df137ebd607cc9c7cefc74f4d1ef8aa235102ff789fab2175f6be3c0550108"),
    "arkime/ike-cert_synthetic.pcap": Source(*ARKIME, "tests/pcap/ike-cert_synthetic.pcap",
                         "e2320e85bfe4f229aa2729525d4605bcf8f19150b0953e00ef29607004317579"),
    "arkime/ike-cert_synthetic.test": Source(*ARKIME, "tests/pcap/ike-cert_synthetic.test",
                         "baa6fc8fa57ff36aabcef90871d2272ae99dd5e45dedb8845e5ece941a3c3ad4"),
    "zeek-spicy-ipsec/IPsec_ESP-AH_tunnel_mode.cap": Source(
        *ZSI, "tests/traces/IPsec_ESP-AH_tunnel_mode.cap",
        "483125a2d52558f4542274072025e2ec9bc0625788c223b9cf175e953430ae8e"),
    "zeek-spicy-ipsec/ipsec-ikev1-isakmp-aggressive-mode.pcap": Source(
        *ZSI, "tests/traces/ipsec-ikev1-isakmp-aggressive-mode.pcap",
        "6014cf732dc2f548c62bf7dcfc09b4e75fcd3cc6ec19996f3e4b708b2556bc7f"),
    "zeek-spicy-ipsec/ipsec-ikev1-payload-bad-length.pcap": Source(
        *ZSI, "tests/traces/ipsec-ikev1-payload-bad-length.pcap",
        "6e166c3b942ef9f3e38d8692f5a11bd925fb6c521dd4f2507e0ee57632ac7198"),
    "zeek-spicy-ipsec/ipsec-ikev1-zero-length.pcap": Source(
        *ZSI, "tests/traces/ipsec-ikev1-zero-length.pcap",
        "81595ab924852dc36c18c4fe431acb75d0e07b6a9d412195d73334d9af4e156d"),
    "zeek-spicy-ipsec/ipsec.cap": Source(
        *ZSI, "tests/traces/ipsec.cap",
        "eb1fe80c930e3b246c6619d88863625a50a49a45c6554296af2b1b663e65819f"),
    "zeek-spicy-ipsec/ipsec_client.pcap": Source(
        *ZSI, "tests/traces/ipsec_client.pcap",
        "7cc91d691998efbf7f40a48370d3c3b42140c17ce9af958ea048775e2eb6ab1a"),
    "zeek-spicy-ipsec/baseline/basic/ipsec.log": Source(
        *ZSI, "tests/baseline/analyzer.basic/ipsec.log",
        "6c36c3ab466c3ba62ad6dbbb05d654f3193c9c18778c39a069dfb77042ca745a"),
    "zeek-spicy-ipsec/baseline/ikev1-a/ipsec.log": Source(
        *ZSI, "tests/baseline/analyzer.ikev1-a/ipsec.log",
        "0ff29f300b185becadc7c316e6227056e6ecda042699574b49cce7af1fd12bfa"),
    "zeek-spicy-ipsec/baseline/ikev1-b/ipsec.log": Source(
        *ZSI, "tests/baseline/analyzer.ikev1-b/ipsec.log",
        "74773fa900c0781479d6babf225ee212cdf07444adc1978ffe19d8b0cfa8dc03"),
    "zeek-spicy-ipsec/baseline/ikev1-c/ipsec.log": Source(
        *ZSI, "tests/baseline/analyzer.ikev1-c/ipsec.log",
        "be00e0a203b09552d99b8c06cdd32ae91deceba5685fea599939662b041d01df"),
    "zeek-spicy-ipsec/baseline/ipsec_esp/ipsec.log": Source(
        *ZSI, "tests/baseline/analyzer.ipsec_esp/ipsec.log",
        "dfe7700f6cb003b61b7057d5af56a8439bfbd0afc1a76d3bb109dd49772bebef"),
    "zeek-spicy-ipsec/baseline/ipsec_ah/stdout": Source(
        *ZSI, "tests/baseline/analyzer.ipsec_ah/.stdout",
        "9666f85258a3bb239f16214c3fb582d62f40df6036377e5f7be6c9b7dc822469"),
    "ndpi/ipsec_isakmp_esp.pcap": Source(*NDPI, "tests/cfgs/default/pcap/ipsec_isakmp_esp.pcap",
                                         "7160b8863845f302a02e480394afb442742cafb9315bd225677ffb3c2e2016d6"),
    "ndpi/esp.pcapng": Source(*NDPI, "tests/cfgs/default/pcap/esp.pcapng",
                              "b487485f59a9b4e6d6604a5e03ae7d1587119083547bc7644feb7a8f9c99641c"),
    "ndpi/esp.pcapng.out": Source(*NDPI, "tests/cfgs/default/result/esp.pcapng.out",
                                  "a0c72f31a2cb396a9a4a10e6d8976d404c3d24bf443b5c646cbedd21a1d75eb5"),
    "ndpi/ah.pcapng": Source(*NDPI, "tests/cfgs/default/pcap/ah.pcapng",
                             "dab67229bb3923c91a826254852b9d7dae33e72454832a007341115e70446eae"),
    "ndpi/ah.pcapng.out": Source(*NDPI, "tests/cfgs/default/result/ah.pcapng.out",
                                 "a824751f00d4641f6cdfea2b30fed5e1e32054cf368602b989a9ed03607e60d2"),
    "ndpi/ipv6_in_gtp.pcap": Source(*NDPI, "tests/cfgs/default/pcap/ipv6_in_gtp.pcap",
                                    "f3599e3a9223df1667126db040a3ca48e9259332035f81bfce35f44dd99231ed"),
    "ndpi/ipv6_in_gtp.pcap.out": Source(*NDPI, "tests/cfgs/default/result/ipv6_in_gtp.pcap.out",
                                        "7af4b209cc7554dfbebdcc954e045dc740038bb8df5194c63845030a75e076df"),
    # sessions cut from nDPI's 834-record NAT-T capture (tests/data/ndpi/PROVENANCE.md says what each holds)
    "ndpi/derived/ipsec_isakmp_esp-1-19.pcap": Frames(
        "ndpi/ipsec_isakmp_esp.pcap", ((1, 19),),
        "6849c1e1007ec44f3b968b13721bd24a1e6efd700daa13aaa2b4afdcd74abb18"),
    "ndpi/derived/ipsec_isakmp_esp-1-160.pcap": Frames(
        "ndpi/ipsec_isakmp_esp.pcap", ((1, 160),),
        "6c50a8ac9d4e94e094c62e9afa9e7291cbe0ec223f893c7774bd8de29e871cf9"),
    "ndpi/derived/ipsec_isakmp_esp-207-225.pcap": Frames(
        "ndpi/ipsec_isakmp_esp.pcap", ((207, 225),),
        "b7f948065003fce20cd7c55d0465c6544bb2e5cd997b8fae31e8fd50c908bfa3"),
    "ndpi/derived/ipsec_isakmp_esp-260-263.pcap": Frames(
        "ndpi/ipsec_isakmp_esp.pcap", ((260, 263),),
        "46df5d9f5d8844241beb5889c9b874e03156bc3c84a6e0276ebf172842351f1d"),
    "ndpi/derived/ipsec_isakmp_esp-260-263+268.pcap": Frames(
        "ndpi/ipsec_isakmp_esp.pcap", ((260, 263), (268, 268)),
        "e4fb2c43ad9ea765b35785a1e5c31b68b5c0a2bbccff19084956b5811a02f548"),
    "ndpi/derived/ipsec_isakmp_esp-287-324.pcap": Frames(
        "ndpi/ipsec_isakmp_esp.pcap", ((287, 324),),
        "bcd3a274c11c9950815c41f56d3661e52cf8e572c6621fef9cc3bd052559fc06"),
    "ndpi/derived/ipsec_isakmp_esp-456-466.pcap": Frames(
        "ndpi/ipsec_isakmp_esp.pcap", ((456, 466),),
        "8dc1ec930698111fe9068378a56cadc128fc42c2798f7f4df4e0d3916ec4b025"),
    "packetgen/esp4-cbc.pcapng": Source(*PACKETGEN, "spec/esp4-cbc.pcapng",
                                        "349aed6a4974bd84d5e6fc8b7ed735f5730c18c63390ea3d022cfbc6d4b888c9"),
    "packetgen/esp4-ctr-hmac.pcapng": Source(*PACKETGEN, "spec/esp4-ctr-hmac.pcapng",
                                             "385ca8247604286595e03317c94b7493bb4aee030361741765c8f29aa76a398b"),
    "packetgen/esp4-gcm.pcapng": Source(*PACKETGEN, "spec/esp4-gcm.pcapng",
                                        "32195b9769d06a76f04aa25e24a6bc23dc4b73b5b9489c1a05fe20c7751af2f1"),
    "packetgen/esp-tfc.pcapng": Source(*PACKETGEN, "spec/esp-tfc.pcapng",
                                       "9c986a84cd15ad4e8818965e34164ce08192fb4dd66000842c0ea3a85f6dd3cb"),
    "packetgen/esp-transport-esn.pcapng": Source(*PACKETGEN, "spec/esp-transport-esn.pcapng",
                                                 "b781308600fdc106a78e36dac491bcf5716bb120f1dd4e33706cfb6b707cd006"),
    "packetgen/ikev2.pcapng": Source(*PACKETGEN, "spec/ikev2.pcapng",
                                     "496d4137f52340680b59f9cd3d1f8b827ea479aa8e79cab3b1000674899497c1"),
    "packetgen/ikev2_cbc_hmac.pcapng": Source(*PACKETGEN, "spec/ikev2_cbc_hmac.pcapng",
                                              "97bf3a45037467b446a1cbb9ee7136ec174a668b48fc7f991002f8fa78058573"),
    "openswan-klips/espfrags1.pcap": Source(
        *KLIPS, "testing/klips/inputs/espfrags1.pcap",
        "b836efd5df18785f3d79ea33271c80ff46f67318998ef980d02b638d13827f64"),
    "openswan-klips/08-east-west-esp-ipcomp.pcap": Source(
        *KLIPS, "testing/klips/inputs/08-east-west-esp-ipcomp.pcap",
        "f29609c84b26538e0de91ebf8fe8e5baffcb346badfb095bfa51ac8d0de95c7b"),
    "openswan-klips/08-sunrise-sunset-esp-sha1.pcap": Source(
        *KLIPS, "testing/klips/inputs/08-sunrise-sunset-esp-sha1.pcap",
        "ffabe8d53c692d6ea39b983df5c9cb27d6235351242dee002a901f7f22899f5e"),
    "openswan-klips/08-sunrise-sunset-aes128.pcap": Source(
        *KLIPS, "testing/klips/inputs/08-sunrise-sunset-aes128.pcap",
        "fa81e8fe3dda24a3a91186092c08c72ce8b61af733af06d51fde893f7451a99f"),
    "openswan-klips/08-sunrise-sunset-udpesp-ping.pcap": Source(
        *KLIPS, "testing/klips/inputs/08-sunrise-sunset-udpesp-ping.pcap",
        "88780205a150ba7d9842c054730321a94afbb37b35f12e15c5a17ae16b0991dd"),
    "openswan-klips/08-sunrise-sunset-esp-noauth.pcap": Source(
        *KLIPS, "testing/klips/inputs/08-sunrise-sunset-esp-noauth.pcap",
        "70fdf2e03eb7cdb9c8060ba1bc12ecfee5b3d59e38363938afe4cc04bbc79cf9"),
    "openswan-klips/west-bigicmp-01.spi1-cleartext.txt": Source(
        *KLIPS, "testing/klips/west-bigicmp-01/spi1-cleartext.txt",
        "5ce2ac4beadd4454f678f5eade6aaac64213df50560a8087766bfa88c0787041"),
    "openswan-klips/west-icmp-03.spi1-cleartext.txt": Source(
        *KLIPS, "testing/klips/west-icmp-03/spi1-cleartext.txt",
        "198ca50917b83ad27b84da37195e3ee40b790e259275c76ea1b9b0a4b7b0e9f0"),
    "openswan-klips/west-icmp-04.spi1-cleartext.txt": Source(
        *KLIPS, "testing/klips/west-icmp-04/spi1-cleartext.txt",
        "198ca50917b83ad27b84da37195e3ee40b790e259275c76ea1b9b0a4b7b0e9f0"),
    "openswan-klips/west-icmp-06.spi1-cleartext.txt": Source(
        *KLIPS, "testing/klips/west-icmp-06/spi1-cleartext.txt",
        "198ca50917b83ad27b84da37195e3ee40b790e259275c76ea1b9b0a4b7b0e9f0"),
    "openswan-klips/west-natt-01.spi1-cleartext.txt": Source(
        *KLIPS, "testing/klips/west-natt-01/spi1-cleartext.txt",
        "198ca50917b83ad27b84da37195e3ee40b790e259275c76ea1b9b0a4b7b0e9f0"),
    "openswan-klips/west-spi-01.spi1-output.txt": Source(
        *KLIPS, "testing/klips/west-spi-01/spi1-output.txt",
        "2b0ba1f5bcc36f124f150f77792a33e0676be508ca60773ea29abc30eed04b43"),
    "suricata-verify/detect-bypass-udp/input.pcap": Source(
        *SURICATA, "tests/detect-bypass-udp/input.pcap",
        "73091ed7cc6694a925d7c4bfe1cde518ef74105b01f2e20deaaf2b8a73bb0855"),
    "suricata-verify/detect-bypass-udp/test.yaml": Source(
        *SURICATA, "tests/detect-bypass-udp/test.yaml",
        "52a844b4db8afdf9401f7c2c039132fa0ee9877fbb0b7b45f3d43b491b357cc9"),
    "suricata-verify/ipv6-dos-with-ext-headers-5/denial6-5.pcap": Source(
        *SURICATA, "tests/ipv6-evasion/ipv6-dos-with-ext-headers-5/denial6-5.pcap",
        "8117aba7f88cec2a953693e036e33be2f8d78e96daa61da12f5f5a53b95664da"),
    # (not in the shared corpus: read from the fetch mirror, same upstream commit)
    "tcpdump/dns-badlabel.pcap": Source(*TCPDUMP, "tests/dns-badlabel.pcap",
                                       "ec69af4c42e13665bbbacff9592cab54f947becad983ed9014d47522a6460b34"),
    "tcpdump/dns_fwdptr.pcap": Source(*TCPDUMP, "tests/dns_fwdptr.pcap",
                                      "42c90915017e3229659855f2fcd4bef8ed4481e703fc013c9bf574b19fe97bbe"),
}
# The shared corpus: Wireshark 4.0.17's, tcpdump's and suricata-verify's files (each folder's
# PROVENANCE.md / MANIFEST.md), under the names they have there.
MANIFEST.update(_corpus("wireshark", """
esp-bug-12671.pcapng.gz 1bb439d07f5e79461a56df825f064eba2f2cb9723bf3374603e6f474bd893d91
esp-bug-12671.pcapng.gz.expected.json 2be8504102b7aeaac127ef8ad31df9f6dd172059d56d4e95160e0d4306045270
esp_sa.tmpl 66f369e5fcf0b9e444116dd896b18612f3c33014adf51968c5a4d756a7a250f2
ikev1-bug-12610.pcapng.gz 153ba99ec83d8abd376e4de5d2b8d89ce6615012bdff38fb2d3bb74d8f78774d
ikev1-bug-12610.pcapng.gz.expected.json 519d7d3b576dd55f623a48c06dd836d57bc8625da78b19be5804421029d0f5f7
ikev1-bug-12620.pcapng.gz fd20ce2fc06fdf528654a039f1b0eaa91428c758965c74c1b5be8ff021a8319d
ikev1-bug-12620.pcapng.gz.expected.json 5cfb42b94241ec4fcfbb43e6ec85579ede382449827477b61b9394600f71e8de
ikev1-certs.pcap 903a9868d58554031c40f7eee921e24e725bd8bd2bb8fc8ba36c49f6436f2edd
ikev1-certs.pcap.expected.json 4efac72fea6256cd518b2d45dccc36f042b2213ede1c1839eee0892c190963e7
ikev1_decryption_table.tmpl 4a0b9bc45ac6d8796138d8d0ecf473e3c6a94b876be95e85727c1a5149b74568
ikev2-decrypt-3des-sha1_160.pcap ba93efc76b1abd2b9a5e633ed21daa16e35743c280e9174396bbc44c1f839a7a
ikev2-decrypt-3des-sha1_160.pcap.expected.json 11283c10005e782ade84ee1f39a3845d831f53eba5265c0a57fc06ef1ae78662
ikev2-decrypt-aes128ccm12-2.pcap 196e840274f9a8d3a108ef689a39e837b82c5fe196b45593126dbc4c722de98a
ikev2-decrypt-aes128ccm12-2.pcap.expected.json 6f1c4f4f5768a1e93ff99d1e084be6e49cb9d7a26e489a259c7fba7ea12f50cc
ikev2-decrypt-aes128ccm12.pcap 46c7284a168ff3238c056f7229b78e28e7bd63e033cee533c17248b0685e2734
ikev2-decrypt-aes128ccm12.pcap.expected.json 5839ef10b00a392ee228a37681422004245ddaf9307d300f54220a1e82dca160
ikev2-decrypt-aes192ctr.pcap 5251e0ed4a73d0aa1b18f043b8c91189a506e5d0ccba10200da35056be411589
ikev2-decrypt-aes192ctr.pcap.expected.json 32cb17553080fe12958667229523431ce95dd8b88cd7220fdf909027f518ca26
ikev2-decrypt-aes256cbc.pcapng 1a033591e44f3570fe99b36af0a0727e01b3076589611d2218f264caac326f40
ikev2-decrypt-aes256cbc.pcapng.expected.json a9bd4ceb4a7776245d7f6b2e820c7d462292235bddbb137b0ecbc20457bd6ef1
ikev2-decrypt-aes256ccm16.pcapng 14c033db37d2d68176b48f2ed3b99e8b30092280244b69623336e16b6a475bff
ikev2-decrypt-aes256ccm16.pcapng.expected.json ce77b3715ec7a21fce4c8a6fa44468ee15798e02fa11c2515d8d902bcec61f46
ikev2-decrypt-aes256gcm16.pcap 86505314cc2cbe68b1c4af270d099cab234e64595277bb572f18dfaab2654179
ikev2-decrypt-aes256gcm16.pcap.expected.json 262e34ac88e7099a7e6ca88cb907bc0d0a91b71cf813c46269b1729fc4336c1e
ikev2-decrypt-aes256gcm8.pcap c2af503229fe6614c308da115987df42241ad934112889536c1bff68edf61e95
ikev2-decrypt-aes256gcm8.pcap.expected.json 2603a3fd0276ef89c8c3527af8147919a6f601582239480676611420afa86526
ikev2_decryption_table.tmpl d1aa452689d47586bb68e553b3bbbc7724560e5ed422438932459c4721dece1f
"""))
MANIFEST.update(_corpus("tcpdump", """
02-sunrise-sunset-esp.pcap a3e5ab4f99e23f5a93ea9ee9f4b08744116dc89e96f7426990efc3e0e08928fa
08-sunrise-sunset-aes.pcap a4ca3cca39e4cbdc5b4978b541e381a3c6f5f1241dc2e8330e5e957f92883421
08-sunrise-sunset-esp2.pcap f9f9ea1a4f579875615d7a31d595da6d338c445f63dffaab9f3cc56cef9c5194
ISAKMP_sa_setup.pcap d2606944ce5c8f9e68e40865b5f1697a89ac60a00c2941e6c6d0b4d72f4e3852
OSPFv3_with_AH.pcap 94ace0952fd7d3af216fb9da19eb79cbd21b6c9414c198c45f776c3f0e3af84b
TESTLIST 7a6e23a3c2b9747fa67e82f38a70191bfab957bd3e2ccb6bb8c3441044f00755
TESTrun a889f53a8e8be19b84602cd8b1d81eb7305cd687cd5b83063e05059b70f7ec1e
derived/ikev2pI2-wsprofile/ikev2_decryption_table 4ad51050b0b9128bbabe78c799017b4625a67d2bc8ca2ca687827edf1b2cf9d6
esp-secrets.txt 25c37ec206709e6989abeea9b8a5230d69956af277136375479d8dc403a1d0aa
esp0.out 0e9b65da6f2d08e4642f3ade8dc047526b5eda9ec55533d26e20203dbc0cea4b
esp1.out 488012fffe69d0e936e7a1351cc0f519f6eb8fb4c3889fa1781d093d3c8820c5
esp2.out 2b3a66bd75696f52346f1fe76cc91da35f7f6acc46ea395bb86cecde6c7edcc0
esp5.out 942ce913fdd05b74faf7c30508015f8ec39a65917d4ca2bf3ace7ab84b688ac2
esp_truncated.out d7ba0d1ba2b21ab5f0e6c165a6ffdd2374a0d43dee78c1a1b07a0167d66f9428
esp_truncated.pcap 224654853e8997fd89e2d75c48f93dd7f2261dfb1bba9764cc6fb1dee251ac1d
espudp1.out c758416ae68daebed70de14bac3cf3e5945142df9bb3034a5a456aee432d2393
espudp1.pcap 9eeef82b456ecbf68e171d18d594dacb68610824e48a1f20341fc88aeab76464
ikev1_id_ipv6_addr_subnet-oobr.out b3e4d02b2742640e4ad4e58d18b27a3bf476f5daeaa41b68b4c0f8ae8bb072c6
ikev1_id_ipv6_addr_subnet-oobr.pcap 48dca2361eed984a4ddd831c712988ac2943053ba51622657eae4f6aeed4a1cb
ikev2-id-normal.out beab4cd70c3b658dd665215dd97da34e1ee5ead5e26e99bc565fe00c9aa22294
ikev2-id-normal.pcap dd1e731960e09a894c8744278d49b1f99e0dd1b277c4a40416a81687a5afc605
ikev2-id-short.out f787466b8d068994e2cca982fa1ec1e63633818277c5416c89bc6d5bd7cd4028
ikev2-id-short.pcap 30c59ab6a7a00edb1573644d9f0b970d65a912e97ae640ed430c596c7d8ce0a8
ikev2four.out 49524468b65f9ae89c62a32f7e265aae489782c9110dd7093b62f240a5ddfbb5
ikev2four.pcap e2b5361eb544e66cf4075ce97de62afb2b5f9ec0b0c1c37e0bd5b957ce401182
ikev2fourv.out 4a9c9829dda134d96f0dcbf1de51b6a5a198326883123182cbbd0e3deabf6f1d
ikev2pI2-secrets.txt 044d36c77bdc144f8d023744f7da930d58c9608d925e846394a3835d89914c47
ikev2pI2-segfault-v.out 6ca7db3c65e9114c329b1fe66f277d8e73b020313fc4a7327c7ed3accccb9527
ikev2pI2-segfault.out 3a28701de3d810c1d6cf3d493f86b9fcfa1b54868ac2fb60bfcc2dd2290b0b65
ikev2pI2-segfault.pcapng 74e299cc5eff91bf3349f6101730888a93f0a68b221214e1f35fb3b27889c343
ikev2pI2.out 51eeb41fd5e2394ec4e6947418b0cbe13c6ff3412ee192230f0fc34f3cf49961
ikev2pI2.pcap b6aa73a5a067dcb1e02b8ef4489ac0006c8d4697c04aeb811008b59d817a3ad5
isakmp-3948-oobr-2.out 22fa0c11325336f86f02582451e773db9642c2f2aec3ef123fa8b0e2d08b7d10
isakmp-3948-oobr-2.pcap f5e18b31293d2c40b4389383b510d7bee4d5b454bf5dd141611998039b751dc1
isakmp-delete-segfault.pcap 7545354ab36c2d668a2d04ca115aa9d0ef4805744776531a80ccfc077e8d19fe
isakmp-identification-segfault.pcap 44eea70a84339f5151e9e733a01d1e2a043c81f72e6af3c1a79f026d9798b056
isakmp-ikev1_n_print-oobr.out 0c2da4f03dc0f7fb55b6e40628713c516081587739280c4704545c0237a7c672
isakmp-ikev1_n_print-oobr.pcap 4be5470c7e138fb15112e994db821ae06c4b48f7f8f416afe65a447dda2f9e5d
isakmp-no-none-np.out c31555a3a7003c95b034518bdc92d403381d3e9121697a22b9035f546de676e3
isakmp-no-none-np.pcapng b92665d714e25dcf939c35c2918870d3a13bace102fb7f95ffa77b6ac75774ec
isakmp-pointer-loop.pcap 07a44cd50c6728bbcc8941ccb0c05b23ed54d278e63163f7d3783da8787d83d0
isakmp-rfc3948-oobr.out 3f3eb30c861626f0305f63e857164b0eb6196733adc5f15b03ba270e6a1a9b3e
isakmp-rfc3948-oobr.pcap e33f00cffe0e36445466abbfa0dae296f85e756463ea3ce95daa6e82d5e94ed3
isakmp-various-oobr.out 9756529dfc927d29af62383001d1b09d469aed7a3d305d994f85e4286a11d058
isakmp-various-oobr.pcap becf96ef34823cb7daea6ff75e8fd7a5faf1b9f2c5a626682b52cf25fdd15c74
isakmp1.out a01d9ab3cce1c95cf7dea8bcb5210531c197456ebc1a4fa1cce34d694eaa0699
isakmp2.out 5e95d3e5aa7135b8908e41596c71895ca13320f58a9c89c5152cae4cc870dec9
isakmp3.out 21e43a03903cb104e7b9195244a0e776c07dcb309edf73c44b365f524412512b
isakmp4.out 0eb77ba3a7c57007b918a838ed8b399d39980d3fedcd1b7acd29e13fc9c8b6e1
isakmp4500.pcap 687c925842c9a61a5ea6d491aad5095a99730bdea149f808aa2b7f21e3412b76
isakmp5-v.out 9cbf2cf329c10c965e32e234663e88b857c18bae78a8f868bcec6c6e61f26417
isakmpv1-attr-oobr.out 1a120114674816509c9020a0d7b7cf7d6514c9514cfc6a4c4c5eb0dc459687b4
isakmpv1-attr-oobr.pcap 1c2e8b8ae3ac68dc5439962c3bba2a97a1f25c2c64915571dbca080edf3ed22d
ospf3_ah-vv.out a1d36a0c80c1fae5fddef4e07b5d61d9c2cecfdefa64ea549ec886381de65d53
"""))
MANIFEST.update(_corpus("suricata-verify", """
eve-flow-esp/input.pcap 004e0eabb919ec2c31723a7319a3a32b3512ff97863a52d479e71b3b629e5968
eve-flow-esp/test.yaml 322d804667e7335e2eacd8d003571cdcd89e452d35c7f5cc5d5ed491b0b1a9fc
ikev1-duplicate-proposals/generated.pcap 04bc65f317423cc0164f086394c7c592c4c34b9d8acf502f2e2bd5e3f656ed8f
ikev1-duplicate-proposals/test.yaml 239e895ab309a494662b8f2b0fc3adbab2578022ac03871300ac6ae38d61bedc
ikev1-rules/ikev1-isakmp-main-mode.pcap d6861b2884bc3abfff427b45e24729972ae593c42075a2204c8cd33fc2a5661f
ikev1-rules/test.yaml 82e1f6b0aaae62d0dcae90bac07f6520671b024303bf3040ed898fea7a32fe9d
ikev1/test.yaml cdbfaa2b2f03fe80a0f3d51af09352d78c1faadd4c8b9a62130526b7406260bf
ikev2-weak-dh/IKEv2_SA_INIT_2-8-weak.pcap 59407d79af762f1bda771d1a243180d11cd06a18a79152d3027e509acd05576e
ikev2-weak-dh/test.yaml 228021fce127614d4bb78a6e67976b65c2ffeed1e6b6b290a65f485092561648
"""))

_missing: dict[Path, str] = {}


def _read(src: Source | Frames) -> bytes | None:
    if isinstance(src, Frames):
        whole = _read(MANIFEST[src.base])
        return None if whole is None else _cut(whole, src.ranges)
    if src.repo == "shared":
        for d in _shared_dirs():
            p = d / "corpus" / src.path
            if p.is_file():
                return p.read_bytes()
        return None
    git_dir = MIRROR / src.repo / "repo"
    if not git_dir.is_dir():
        return None
    r = subprocess.run(["git", f"--git-dir={git_dir}", "show", f"{src.commit}:{src.path}"],
                       capture_output=True, timeout=60)
    return r.stdout if r.returncode == 0 else None


def _cut(pcap: bytes, ranges: tuple[tuple[int, int], ...]) -> bytes | None:
    """The 24-byte file header and the chosen records of a little-endian classic pcap, unchanged
    (each record: 16-byte header whose third word is the captured length, then the bytes)."""
    if pcap[:4] != b"\xd4\xc3\xb2\xa1":
        return None
    records, off = [], 24
    while off + 16 <= len(pcap):
        end = off + 16 + int.from_bytes(pcap[off + 8:off + 12], "little")
        records.append(pcap[off:end])
        off = end
    want = [n for lo, hi in ranges for n in range(lo, hi + 1)]
    if not want or want[-1] > len(records):
        return None
    return pcap[:24] + b"".join(records[n - 1] for n in want)


def _where(src: Source | Frames) -> str:
    if isinstance(src, Frames):
        base = MANIFEST[src.base]
        frames = " ".join(f"{lo}-{hi}" if hi > lo else str(lo) for lo, hi in src.ranges)
        return f"records {frames} of {base.path} from {_where(base)}"
    return "the shared corpus" if src.repo == "shared" else f"{MIRROR / src.repo} at {src.commit[:10]}"


def public(rel: str) -> Path:
    """The path of third-party file ``rel`` (as named in MANIFEST), materialised if a source is
    here. It does not exist when none is: ``missing(path)`` then says why."""
    src = MANIFEST[rel]
    out = CACHE / rel
    if out.is_file() and (hashlib.sha256(out.read_bytes()).hexdigest() == src.sha256):
        return out
    data = _read(src)
    what = f"{src.path} from {_where(src)}" if isinstance(src, Source) else _where(src)
    if data is None:
        _missing[out] = f"third-party {rel} not on this machine (needs {what})"
        return out
    if hashlib.sha256(data).hexdigest() != src.sha256:
        _missing[out] = f"third-party {rel}: {what} is not the file the tests expect"
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, out)  # several xdist workers may materialise the same file
    _missing.pop(out, None)
    return out


def public_files(folder: str) -> list[Path]:
    """Every third-party file MANIFEST lists under ``folder``, materialised where possible; not
    the whole captures only recipes read (a test reads the part cut from it)."""
    inputs = {src.base for src in MANIFEST.values() if isinstance(src, Frames)}
    return [public(rel) for rel in sorted(MANIFEST) if rel.startswith(folder + "/") and rel not in inputs]


def public_dir(folder: str) -> Path:
    """The folder holding every third-party file MANIFEST lists under ``folder``, materialised
    where possible (``missing(dir)`` says why not when one of them is not here)."""
    files = public_files(folder)
    gone = [why for p in files if (why := missing(p))]
    out = CACHE / folder
    if gone:
        _missing[out] = gone[0]
    return out


def is_public(p: object) -> bool:
    return isinstance(p, Path) and CACHE in p.parents


def missing(p: Path) -> str | None:
    """Why third-party file ``p`` is not here, or None when it is."""
    if p in _missing or not p.exists():
        return _missing.get(p, f"third-party {p.relative_to(CACHE)} not materialised")
    return None


def need(*paths: Path) -> None:
    """Inside a test: skip it when one of ``paths`` is a third-party file not on this machine
    (for tests the conftest fixture cannot see through, e.g. a path looked up in a table)."""
    import pytest

    for p in paths:
        if is_public(p) and (why := missing(p)):
            pytest.skip(why)


def data_id(p: Path) -> str:
    """A test id for a capture under tests/data or materialised here: its folder/name either way."""
    return str(p.relative_to(CACHE if CACHE in p.parents else ROOT / "tests" / "data"))
