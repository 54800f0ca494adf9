"""charon key format (work in progress)."""

from __future__ import annotations

from .store import KeyStore


def looks_like(text: str) -> bool:
    return False


def parse(text: str, path: str, store: KeyStore | None = None) -> KeyStore:
    return store if store is not None else KeyStore()
