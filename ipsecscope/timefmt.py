"""Every time a person reads, in one zone per run, and labelled with it.

Captures store UTC epoch seconds. Text output and the TUI show them in UTC unless ``--tz`` (or
``IPSECSCOPE_TZ``) asks for ``local`` (the machine's zone, so times line up with charon logs,
which are written in local time) or an IANA name (``Europe/Berlin``). Every formatter here says
which zone it used: ``UTC`` or the UTC offset at that moment (``UTC-05:00``; a capture across a DST
change shows both offsets). JSON keeps epoch seconds whatever the zone: machines get one stable
form, the zone is only a matter of display.

The zone is a process-wide display setting: the CLI sets it once from ``--tz`` before it
analyses anything, since finding texts quote times too (``analysis.rules.common.clock``).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, tzinfo

ENV = "IPSECSCOPE_TZ"
DEFAULT = "UTC"
HELP = ("zone for the times in text output and the TUI: UTC (default), local (this machine's zone, as "
        "charon logs use) or an IANA name such as Europe/Berlin; every time is labelled with its zone or "
        f"UTC offset. JSON always has UTC epoch seconds. Default from ${ENV}")

_zone: tzinfo | None = UTC  # None: the machine's local zone (DST rules per timestamp, from TZ / /etc/localtime)
_spec = DEFAULT


def parse_zone(spec: str) -> tzinfo | None:
    """``UTC``, ``local`` or an IANA zone name -> a tzinfo (None for local); ValueError says what is accepted."""
    s = spec.strip()
    if s.upper() in ("UTC", "Z", "GMT"):
        return UTC
    if s.lower() == "local":
        return None
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError  # (imports sysconfig: only for a named zone)

    try:
        return ZoneInfo(s)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"unknown time zone {spec!r}: give UTC, local or an IANA name such as Europe/Berlin") from None


def set_zone(spec: str) -> None:
    """Use ``spec`` (see :func:`parse_zone`) for every time formatted from now on."""
    global _zone, _spec
    _zone, _spec = parse_zone(spec), spec


def zone_spec() -> str:
    """The zone as given (``UTC``, ``local``, ``Europe/Berlin``)."""
    return _spec


def default_spec() -> str:
    return os.environ.get(ENV) or DEFAULT


def _dt(ts: float) -> datetime | None:
    try:
        d = datetime.fromtimestamp(ts, UTC)
        return d if _zone is UTC else d.astimezone(_zone)  # astimezone(None): the local zone at ts
    except (ValueError, OverflowError, OSError):  # a corrupted frame timestamp (year > 9999)
        return None


def _frac(d: datetime, digits: int) -> str:
    return f".{d.microsecond:06d}"[: digits + 1] if digits > 0 else ""


def label(ts: float | None = None) -> str:
    """``UTC``, or the UTC offset at ``ts`` (now if None) in the zone in use: ``UTC-05:00``."""
    if _zone is UTC:
        return "UTC"
    d = _dt(ts) if ts is not None else datetime.now(UTC).astimezone(_zone)
    if d is None:
        return "UTC"
    off = d.strftime("%z")  # -0500
    return f"UTC{off[:3]}:{off[3:]}"


def clock(ts: float | None, digits: int = 0) -> str:
    """``20:09:15`` (``digits`` of a second: ``20:09:15.691``), no zone: for cells under a labelled
    header. ``?`` for no time; the raw number for one that is not a date."""
    if ts is None:
        return "?"
    d = _dt(ts)
    if d is None:
        return f"{ts:.{digits}f}"
    return d.strftime("%H:%M:%S") + _frac(d, digits)


def at(ts: float | None, digits: int = 0) -> str:
    """``20:09:15 UTC`` / ``15:09:15 UTC-05:00``: a time in a sentence."""
    if ts is None:
        return "?"
    if _dt(ts) is None:
        return clock(ts, digits)
    return f"{clock(ts, digits)} {label(ts)}"


def stamp(ts: float | None, digits: int = 0) -> str:
    """``2026-12-05 07:10:03.123 UTC``: date, time and zone."""
    if ts is None:
        return "?"
    d = _dt(ts)
    if d is None:
        return clock(ts, digits)
    return f"{d.strftime('%Y-%m-%d %H:%M:%S')}{_frac(d, digits)} {label(ts)}"
