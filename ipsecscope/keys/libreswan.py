"""Libreswan pluto debug logs (``plutodebug=private``): recognised, not parsed yet.

Libreswan keeps keys in NSS and its debug output of them changed across 3.x/4.x/5.x; we have no
real log to test a parser against, so instead of guessing we recognise such a log and tell the
user how to get keys we do read (``ip xfrm state`` on the Libreswan host shows every SA key).
"""

from __future__ import annotations

import re

from ..errors import KeyFileError
from .store import KeyStore

_PLUTO = re.compile(r"^(?:\S+ \S+ \S+ \S+ pluto\[\d+\]: |)\| ", re.MULTILINE)


def looks_like(text: str) -> bool:
    head = text[:200_000]
    return len(_PLUTO.findall(head)) >= 3 and ("pluto" in head or "libreswan" in head.lower())


def parse(text: str, path: str, store: KeyStore | None = None) -> KeyStore:
    raise KeyFileError(
        "this is a Libreswan pluto debug log; ipsecscope cannot read keys from it yet. On the Libreswan "
        "host run 'ip xfrm state > keys.txt' (or 'ip -s xfrm state') and pass that file instead",
        path=path,
    )
