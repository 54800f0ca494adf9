"""Bounded bookkeeping of messages whose fragments are still being collected.

IKE has two fragmentations, each needing the same care: IKEv1's Fragment payload (132, Cisco,
Microsoft, strongSwan; state/ikev1_frag) and IKEv2's SKF (RFC 7383; crypto/ike_sk). Either way
a receiver holds the pieces of a message until it has all of them, and a sender (or anyone
spoofing one) can send pieces that never complete. Peers bound what they hold (libreswan keeps
one message's pieces per SA, MS-IKEE §3.3.2 discards a Fragment ID's pieces after at most 90 s);
so must a reader of a capture or of a live stream: a flood of bogus fragment IDs must not grow
memory without bound.

:class:`PendingSets` holds the incomplete sets in arrival order, at most ``max_sets`` of them and
(optionally) ``max_bytes`` of fragment data in all; making room gives up the oldest first, and
the caller is told which ones, to mark them (a set given up is never silently gone).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from typing import Generic, TypeVar

__all__ = ["PendingSets"]

T = TypeVar("T")


class PendingSets(Generic[T]):
    """Incomplete fragmented messages by key (oldest first), bounded in count and in bytes.

    ``open(key, value)`` starts a set, ``grow(key, n)`` accounts ``n`` more bytes held for it,
    ``pop(key)`` ends it (complete, or dropped by the caller). Both ``open`` and ``grow`` return
    the sets given up to stay within the bounds, oldest first (never the one being added to)."""

    __slots__ = ("max_sets", "max_bytes", "_sets", "_size", "bytes", "given_up")

    def __init__(self, max_sets: int, max_bytes: int | None = None) -> None:
        self.max_sets = max_sets
        self.max_bytes = max_bytes
        self._sets: dict[Hashable, T] = {}
        self._size: dict[Hashable, int] = {}
        self.bytes = 0  # fragment bytes held in all sets
        self.given_up = 0  # sets dropped to stay within the bounds

    def __len__(self) -> int:
        return len(self._sets)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._sets

    def get(self, key: Hashable) -> T | None:
        return self._sets.get(key)

    def values(self) -> Iterator[T]:
        return iter(list(self._sets.values()))

    def open(self, key: Hashable, value: T) -> list[tuple[Hashable, T]]:
        """Start (or restart, keeping its place) the set ``key``; the oldest others are given up
        while more than ``max_sets`` would be held."""
        if key in self._sets:
            self.bytes -= self._size[key]
            self._size[key] = 0
            self._sets[key] = value
            return []
        out = self._evict(key, lambda: len(self._sets) >= self.max_sets)
        self._sets[key] = value
        self._size[key] = 0
        return out

    def grow(self, key: Hashable, n: int) -> list[tuple[Hashable, T]]:
        """Account ``n`` more bytes held for the set ``key``; the oldest others are given up while
        more than ``max_bytes`` would be held in all."""
        self._size[key] += n
        self.bytes += n
        if self.max_bytes is None:
            return []
        limit = self.max_bytes
        return self._evict(key, lambda: self.bytes > limit)

    def size(self, key: Hashable) -> int:
        """Bytes held for the set ``key``."""
        return self._size.get(key, 0)

    def pop(self, key: Hashable) -> T:
        self.bytes -= self._size.pop(key)
        return self._sets.pop(key)

    def _evict(self, keep: Hashable, over: Callable[[], bool]) -> list[tuple[Hashable, T]]:
        out: list[tuple[Hashable, T]] = []
        while over():
            old = next((k for k in self._sets if k != keep), None)
            if old is None:
                break
            out.append((old, self.pop(old)))
            self.given_up += 1
        return out
