"""ipsecscope: explain IPsec tunnels from captures.

The public API, flat (imported lazily, so ``ipsecscope summary`` never pays for the TUI or the
correlation engine)::

    from ipsecscope import Session, iter_decrypted, decrypt_capture, load_keys

- :class:`Session` — read a capture (or feed frames) with keys; ``.table`` (IKE SAs, CHILD SAs,
  ESP flows), ``.findings``, ``.rows``, ``.stats``, ``.detail(frame)``.
- :func:`iter_decrypted` / :func:`decrypt_capture` — decrypt-and-export for scripts.
- :func:`load_keys` / :class:`KeyStore` — key material from any supported file format.
- :func:`open_capture` — stream RawFrames from pcap / pcapng / gzip.
- Model types: :class:`Finding`, :class:`Severity`, :class:`SaState`, :class:`IkeSa`,
  :class:`ChildSa`, :class:`EspFlow`, :class:`DecryptedPacket`.
- Errors: :mod:`ipsecscope.errors` (all derive from :class:`IpsecscopeError`).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "Session": "ipsecscope.session",
    "SessionStats": "ipsecscope.session",
    "iter_decrypted": "ipsecscope.api",
    "decrypt_capture": "ipsecscope.api",
    "DecryptedPacket": "ipsecscope.api",
    "load_keys": "ipsecscope.keys",
    "KeyStore": "ipsecscope.keys",
    "open_capture": "ipsecscope.capture",
    "Finding": "ipsecscope.model.sa",
    "Severity": "ipsecscope.model.sa",
    "SaState": "ipsecscope.model.sa",
    "IkeSa": "ipsecscope.model.sa",
    "ChildSa": "ipsecscope.model.sa",
    "EspFlow": "ipsecscope.model.sa",
    "IpsecscopeError": "ipsecscope.errors",
    "CaptureError": "ipsecscope.errors",
    "KeyFileError": "ipsecscope.errors",
    "IntegrityError": "ipsecscope.errors",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ipsecscope' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
